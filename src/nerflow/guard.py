"""What stands in front of the service's endpoints, for operators: a request size limit (413
before the body is read past it), optional bearer-token auth (401; health, readiness and
metrics stay open), and client errors logged as one warning line instead of an ERROR with a
traceback. BentoML 1.4 has no setting for any of these: the first two are one ASGI middleware
(``Service.add_asgi_middleware``), the third a filter on the logger BentoML reports failed
requests with.

A SIGTERM drains instead of dropping (``install_drain``): the worker stops accepting, answers
every request still coming on its open keep-alive connections with ``Connection: close`` (the
client moves to a new connection, served by another worker or replica) until they are gone or
``NERFLOW_DRAIN_SECONDS`` (default 3) pass, and only then lets uvicorn close what is left. Plain
uvicorn closes idle keep-alive connections at once, and a request already on its way on one is
lost (3 of 2,038 in the load test of a worker's SIGTERM before this).

The worker processes of one server keep its keep-alive connections evenly spread
(``install_balance``). They share one listening socket, and whichever accepts a connection keeps
it for its life: in the load test 14 of 16 clients' connections landed on one of two workers (p99
195 ms against 116 ms for an 8/8 split), and a caller with a pool of a few connections can leave
a worker idle. Each worker publishes its number of open connections every 0.1 s in a small
shared-memory file; a worker holding more than its share (total / workers, rounded up) answers at
most one request per 0.1 s with ``Connection: close``, and the client's new connection is accepted
by either worker, until the split is even.

BentoML's adaptive batching looks at its queue every millisecond while requests wait for a busy
model (``install_batch_poll``): on 2 cores each of those wake-ups took the core from the other
thread of the same worker, the one running the model (900-950 involuntary context switches a
second of the inference thread under load, counted in /proc). ``NERFLOW_BATCH_POLL_MS`` sets the
interval (default ``DEFAULT_BATCH_POLL_MS``).

Settings (environment): ``NERFLOW_MAX_REQUEST_BYTES`` (default 4 MiB: 32 texts of 20,000
characters fit even JSON-escaped), ``NERFLOW_API_TOKEN`` or ``NERFLOW_API_TOKEN_FILE`` (a
mounted secret; unset: no auth), ``NERFLOW_DRAIN_SECONDS``, ``NERFLOW_BATCH_POLL_MS``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import tempfile
from pathlib import Path

from nerflow import NerflowError

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")  # probes and scrapers carry no token
OPEN_PREFIXES = ("/ui",)  # the page's own files (it asks for the token before calling the API)
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
# ms between two looks of BentoML's batching at its queue (BentoML's own: 1). 2-core AVX2 EPYC, 2 workers,
# 16 clients, 8 texts a request, per thread from /proc: the inference thread preempted 920 times a second
# at 1 ms, 140 at 4, 60 at 8; the event loops 6.5% -> 4% of a core. Servers alternated, 12 s levels, texts/s
# against 1 ms in the same run: 4 ms +7%/+8%/+7% with one text a request, +6%/+3%/+6% with 8; 5 ms +4%/-2%,
# +3%/+1%; 8 ms -1% to +17% over 4 pairs; 4 ms vs 8 ms within 2% (p99 at one text 88-100 vs 99 ms); 16 ms
# no better, and a lone client's wait grows with the interval: ~4 ms, a small gain, not a large one
DEFAULT_BATCH_POLL_MS = 4.0
_draining = False  # this worker got SIGTERM: every response closes its connection
_balance: "ConnectionBalance | None" = None  # this worker's share of the server's connections (install_balance)


def max_request_bytes() -> int:
    return int(os.environ.get("NERFLOW_MAX_REQUEST_BYTES") or DEFAULT_MAX_REQUEST_BYTES)


def api_token() -> bytes | None:
    """The bearer token the service requires: ``NERFLOW_API_TOKEN``, or the content of the file
    ``NERFLOW_API_TOKEN_FILE`` names (a Kubernetes Secret mounted as a file); None: no auth."""
    token = os.environ.get("NERFLOW_API_TOKEN", "")
    path = os.environ.get("NERFLOW_API_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise NerflowError(f"{path}: NERFLOW_API_TOKEN_FILE cannot be read: {exc.strerror}") from None
    token = token.strip()
    return token.encode() if token else None


async def _answer(send, status: int, payload: dict, headers: tuple = ()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: bearer auth (unless ``token`` is None) and the body limit. The body is
    checked against Content-Length before a byte is read, and counted while read (chunked
    bodies, a lying header): past the limit the answer is 413 and the rest is never read (the
    server stops reading a connection whose app does not consume it)."""

    def __init__(self, app, token: bytes | None, max_bytes: int):
        self.app, self.token, self.max_bytes = app, token, max_bytes

    def _open(self, path: str) -> bool:
        return path in OPEN_PATHS or any(path == p or path.startswith(p + "/") for p in OPEN_PREFIXES)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (_draining or (_balance is not None and _balance.over_share())):
            send = _closing(send)
        if scope["type"] != "http" or self._open(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])  # ASGI: lower-case byte names
        if self.token is not None:
            auth = headers.get(b"authorization", b"")
            if not (auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), self.token)):
                return await _answer(send, 401, {"error": "missing or wrong bearer token (Authorization: Bearer ...)"},
                                     ((b"www-authenticate", b'Bearer realm="nerflow"'),))
        too_large = {"error": f"request body over the limit of {self.max_bytes} bytes (NERFLOW_MAX_REQUEST_BYTES)"}
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _answer(send, 400, {"error": "Content-Length is not a number"})
            if int(length) > self.max_bytes:
                return await _answer(send, 413, too_large)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _answer(send, 413, too_large)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then: the disconnect, as usual

        return await self.app(scope, replay, send)


def _closing(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)
    return wrapped


def install_batch_poll(ms: float | None = None) -> float:
    """Set how often BentoML's adaptive batching (its ``CorkDispatcher``) polls its queue while
    requests wait: ``ms``, else ``NERFLOW_BATCH_POLL_MS``, else ``DEFAULT_BATCH_POLL_MS``. A batch
    is still sent at once when the model is free and the queue has waited long enough (BentoML's
    rule); what changes is how often a waiting dispatcher wakes up (see above). The interval set."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    if ms is None:
        raw = os.environ.get("NERFLOW_BATCH_POLL_MS") or str(DEFAULT_BATCH_POLL_MS)
        try:
            ms = float(raw)
        except ValueError:
            raise NerflowError(f"NERFLOW_BATCH_POLL_MS={raw!r}: not a number of milliseconds") from None
    if not 0 < ms <= 100:
        raise NerflowError(f"NERFLOW_BATCH_POLL_MS={ms:g}: must be over 0 and at most 100 milliseconds "
                           "(a request can wait that long for a free model)")
    CorkDispatcher.TICKET_INTERVAL = ms / 1000  # read by the dispatcher at every poll
    return ms


def batch_poll_ms() -> float:
    """The interval BentoML's batching polls at in this process, read from BentoML itself."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    return round(CorkDispatcher.TICKET_INTERVAL * 1000, 3)


def install_drain(seconds: float | None = None) -> None:
    """Make this process's uvicorn server drain on SIGTERM before it shuts down (see above)."""
    import asyncio
    import time

    import uvicorn

    if getattr(uvicorn.Server.shutdown, "nerflow_drain", False):
        return
    seconds = float(os.environ.get("NERFLOW_DRAIN_SECONDS", "3") if seconds is None else seconds)
    shutdown = uvicorn.Server.shutdown

    async def drain_then_shutdown(self, sockets=None):
        global _draining
        _draining = True
        for server in self.servers:  # no new connections here; the other workers keep accepting
            server.close()
        deadline = time.monotonic() + seconds
        while self.server_state.connections and time.monotonic() < deadline and not self.force_exit:
            await asyncio.sleep(0.05)
        await shutdown(self, sockets)

    drain_then_shutdown.nerflow_drain = True
    uvicorn.Server.shutdown = drain_then_shutdown


class ConnectionBalance:
    """The open connections of every worker of one server (``workers`` int32 counts in the
    memory-mapped file ``path``, one per worker, ``index`` being this one's), and this worker's
    decision to close one of its own after its next answer."""

    def __init__(self, path: Path, workers: int, index: int):
        import mmap

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 4 * workers:
                os.ftruncate(fd, 4 * workers)
            self._map = mmap.mmap(fd, 4 * workers)
        finally:
            os.close(fd)
        self.counts = memoryview(self._map).cast("i")
        self.workers, self.index = workers, index
        self.server = None  # this worker's uvicorn.Server, set on its first tick
        self.shed = False  # closed one connection since the last tick

    def tick(self, server) -> None:
        """Every 0.1 s (uvicorn's tick): publish this worker's open connections."""
        self.server, self.shed = server, False
        self.counts[self.index] = len(server.server_state.connections)

    def over_share(self) -> bool:
        """True (at most once a tick) when this worker holds more than its share of the open
        connections: the caller then closes the current one after its answer."""
        if self.shed or self.server is None:
            return False
        own = len(self.server.server_state.connections)
        total = own + sum(self.counts[i] for i in range(self.workers) if i != self.index)
        self.shed = own > -(-total // self.workers)
        return self.shed


def _balance_file(server_pid: int) -> Path:
    shm = Path("/dev/shm")
    return (shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())) / \
        f"nerflow-connections-{server_pid}"


def install_balance(workers: int) -> None:
    """Spread the server's keep-alive connections evenly over its ``workers`` processes (see
    above). In a worker (BentoML's worker index is set) it publishes and balances; in the
    server's own process it removes the shared file when the server exits. Nothing for one worker."""
    import atexit

    import uvicorn
    from bentoml._internal.context import server_context

    if workers < 2 or getattr(uvicorn.Server.on_tick, "nerflow_balance", False):
        return
    index = server_context.worker_index  # 1..workers in a worker; None in the server's own process
    if index is None:
        atexit.register(lambda path=_balance_file(os.getpid()): path.unlink(missing_ok=True))
        return
    if not 1 <= index <= workers:
        return
    on_tick = uvicorn.Server.on_tick

    async def publishing_on_tick(self, counter: int) -> bool:
        global _balance
        if _balance is None:
            _balance = ConnectionBalance(_balance_file(os.getppid()), workers, index - 1)
        _balance.tick(self)
        return await on_tick(self, counter)

    publishing_on_tick.nerflow_balance = True
    uvicorn.Server.on_tick = publishing_on_tick


class ClientErrorFilter(logging.Filter):
    """BentoML logs every failed request at ERROR with a traceback. A client error (a request
    that fails validation: 400; a BentoML error with a 4xx code) becomes one WARNING line that
    says what was wrong; server errors keep their ERROR and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from bentoml.exceptions import BentoMLException
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            first = exc.errors(include_url=False, include_input=False)[0]
            detail = (f"400: {exc.error_count()} validation error(s), first: "
                      f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
        elif isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
            detail = f"{int(exc.error_code)}: {type(exc).__name__}: {exc}"
        else:
            return True
        record.msg, record.args = f"client error on {record.getMessage().removeprefix('Exception on ')}: {detail}", ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


def install_client_error_filter() -> None:
    """On the logger BentoML's request handler reports failures with (bentoml 1.4:
    ``bentoml._internal.server.http_app.log_exception``)."""
    logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorFilter())


def publish_served_model(tag: str) -> None:
    """``nerflow_model_info{model_tag="..."} 1`` on the service's /metrics: which model answers
    (one series across worker processes)."""
    from prometheus_client import REGISTRY, Gauge

    try:
        gauge = Gauge("nerflow_model_info", "the model this service serves (value 1), by tag", ["model_tag"],
                      multiprocess_mode="livemax")
    except ValueError:  # registered already: the service module imported twice in one process
        gauge = REGISTRY._names_to_collectors["nerflow_model_info"]
    gauge.labels(model_tag=tag).set(1)
