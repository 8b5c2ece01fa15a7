"""Every change nerflow makes to BentoML's and uvicorn's internals, fenced in one module.

BentoML 1.4 has no setting for any of these, so each patches a private name; each is applied
only where the installed version is one it was tested with (``TESTED``) and the name it
patches is there. Otherwise it steps aside with one warning line, and the service runs as
BentoML and uvicorn do on their own (no drain, no balance, BentoML's batching poll).

- ``install_drain``: on SIGTERM the worker stops accepting, answers every request still coming
  on its open keep-alive connections with ``Connection: close`` (the client moves to a new
  connection, served by another worker or replica) until they are gone or
  ``NERFLOW_DRAIN_SECONDS`` (default 3) pass, and only then lets uvicorn close what is left.
  Plain uvicorn closes idle keep-alive connections at once, and a request already on its way on
  one is lost (3 of 2,038 in the load test of a worker's SIGTERM before this). Patches
  ``uvicorn.Server.shutdown``.
- ``install_balance``: the worker processes of one server keep its keep-alive connections
  evenly spread. They share one listening socket, and whichever accepts a connection keeps it
  for its life: in the load test 14 of 16 clients' connections landed on one of two workers
  (p99 195 ms against 116 ms for an 8/8 split). Each worker publishes its number of open
  connections every 0.1 s in a small shared-memory file; a worker holding more than its share
  (total / workers, rounded up) answers at most one request per 0.1 s with ``Connection:
  close``, until the split is even. Patches ``uvicorn.Server.on_tick``; reads
  ``bentoml._internal.context.server_context.worker_index``.
- ``install_batch_poll``: BentoML's adaptive batching looks at its queue every millisecond while
  requests wait for a busy model: on 2 cores each of those wake-ups took the core from the
  thread running the model (900-950 involuntary context switches a second under load, counted
  in /proc). ``NERFLOW_BATCH_POLL_MS`` sets the interval (default ``DEFAULT_BATCH_POLL_MS``).
  Sets ``bentoml._internal.marshal.dispatcher.CorkDispatcher.TICKET_INTERVAL``.
- ``install_client_error_filter``: a client error is logged as one warning line instead of an
  ERROR with a traceback, on the logger of ``bentoml._internal.server.http_app``.
- ``publish_served_model``: ``nerflow_model_info{model_tag=...}`` on /metrics (reads
  prometheus-client's registry of names when the service module is imported twice).

``should_close()`` tells the request guard (nerflow.release.guard) whether this worker closes
the connection of the request at hand (draining, or over its share).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import logging
import mmap
import os
import re
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nerflow import NerflowError

# Heavy libraries (bentoml) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.

# the versions these patches were tested with: [first, past the last) as release numbers
TESTED = {"bentoml": ((1, 4), (1, 5)), "uvicorn": ((0, 30), (0, 60))}
_warned: set[str] = set()


def _release(text: str) -> tuple[int, ...]:
    """The release numbers of a version: "1.5.0rc1" -> (1, 5, 0)."""
    parts = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d*", piece).group()
        parts.append(int(digits or 0))
        if digits != piece:
            break
    return tuple(parts)


def _tested(dist: str, module: str, name: str, attribute: str | None = None, warn: bool = True) -> Any:
    """``module.name`` when ``dist``'s installed version is within ``TESTED`` and the object has
    ``attribute``; else None, after one warning line per distribution (the patch steps aside)."""
    low, high = TESTED[dist]
    try:
        installed = version(dist)
    except PackageNotFoundError:
        installed = None
    problem = None
    if installed is None or not low <= _release(installed) < high:
        problem = (f"{dist} {installed} is not a version nerflow's patches were tested with "
                   f"({'.'.join(map(str, low))} up to {'.'.join(map(str, high))})")
    else:
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            found = None
        if found is None or (attribute is not None and not hasattr(found, attribute)):
            problem = f"{dist} {installed} has no {module}.{name}{'.' + attribute if attribute else ''}"
        else:
            return found
    if warn and dist not in _warned:
        _warned.add(dist)
        # on stderr, not a logger: BentoML's logging set-up disables the loggers that exist before it
        print(f"nerflow: warning: {problem}: its patches step aside (the service runs as {dist} does on its own)",
              file=sys.stderr)
    return None


# ms between two looks of BentoML's batching at its queue (BentoML's own: 1). 2-core AVX2 EPYC, 2 workers,
# 16 clients, 8 texts a request, per thread from /proc: the inference thread preempted 920 times a second
# at 1 ms, 140 at 4, 60 at 8; the event loops 6.5% -> 4% of a core. Servers alternated, 12 s levels, texts/s
# against 1 ms in the same run: 4 ms +7%/+8%/+7% with one text a request, +6%/+3%/+6% with 8; 5 ms +4%/-2%,
# +3%/+1%; 8 ms -1% to +17% over 4 pairs; 4 ms vs 8 ms within 2% (p99 at one text 88-100 vs 99 ms); 16 ms
# no better, and a lone client's wait grows with the interval: ~4 ms, a small gain, not a large one
DEFAULT_BATCH_POLL_MS = 4.0


_draining = False  # this worker got SIGTERM: every response closes its connection


_balance: ConnectionBalance | None = None  # this worker's share of the server's connections (install_balance)


def install_batch_poll(ms: float | None = None) -> float:
    """Set how often BentoML's adaptive batching (its ``CorkDispatcher``) polls its queue while
    requests wait: ``ms``, else ``NERFLOW_BATCH_POLL_MS``, else ``DEFAULT_BATCH_POLL_MS``. A batch
    is still sent at once when the model is free and the queue has waited long enough (BentoML's
    rule); what changes is how often a waiting dispatcher wakes up (see above). The interval set."""
    if ms is None:
        raw = os.environ.get("NERFLOW_BATCH_POLL_MS") or str(DEFAULT_BATCH_POLL_MS)
        try:
            ms = float(raw)
        except ValueError:
            raise NerflowError(f"NERFLOW_BATCH_POLL_MS={raw!r}: not a number of milliseconds") from None
    if not 0 < ms <= 100:
        raise NerflowError(f"NERFLOW_BATCH_POLL_MS={ms:g}: must be over 0 and at most 100 milliseconds "
                           "(a request can wait that long for a free model)")
    dispatcher = _tested("bentoml", "bentoml._internal.marshal.dispatcher", "CorkDispatcher", "TICKET_INTERVAL")
    if dispatcher is not None:
        dispatcher.TICKET_INTERVAL = ms / 1000  # read by the dispatcher at every poll
    return ms


def batch_poll_ms() -> float:
    """The interval BentoML's batching polls at in this process, read from BentoML itself (0 where
    this BentoML has no such setting)."""
    dispatcher = _tested("bentoml", "bentoml._internal.marshal.dispatcher", "CorkDispatcher", "TICKET_INTERVAL", warn=False)
    return round(dispatcher.TICKET_INTERVAL * 1000, 3) if dispatcher is not None else 0.0


def install_drain(seconds: float | None = None) -> None:
    """Make this process's uvicorn server drain on SIGTERM before it shuts down (see above)."""
    server = _tested("uvicorn", "uvicorn", "Server", "shutdown")
    if server is None or getattr(server.shutdown, "nerflow_drain", False):
        return
    seconds = float(os.environ.get("NERFLOW_DRAIN_SECONDS", "3") if seconds is None else seconds)
    shutdown = server.shutdown

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
    server.shutdown = drain_then_shutdown


class ConnectionBalance:
    """The open connections of every worker of one server (``workers`` int32 counts in the
    memory-mapped file ``path``, one per worker, ``index`` being this one's), and this worker's
    decision to close one of its own after its next answer."""

    def __init__(self, path: Path, workers: int, index: int):

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
    server = _tested("uvicorn", "uvicorn", "Server", "on_tick")
    context = _tested("bentoml", "bentoml._internal.context", "server_context", "worker_index")
    if workers < 2 or server is None or context is None or getattr(server.on_tick, "nerflow_balance", False):
        return
    index = context.worker_index  # 1..workers in a worker; None in the server's own process
    if index is None:
        atexit.register(lambda path=_balance_file(os.getpid()): path.unlink(missing_ok=True))
        return
    if not 1 <= index <= workers:
        return
    on_tick = server.on_tick

    async def publishing_on_tick(self, counter: int) -> bool:
        global _balance
        if _balance is None:
            _balance = ConnectionBalance(_balance_file(os.getppid()), workers, index - 1)
        _balance.tick(self)
        return await on_tick(self, counter)

    publishing_on_tick.nerflow_balance = True
    server.on_tick = publishing_on_tick


class ClientErrorFilter(logging.Filter):
    """BentoML logs every failed request at ERROR with a traceback. A client error (a request
    that fails validation: 400; a BentoML error with a 4xx code) becomes one WARNING line that
    says what was wrong; server errors keep their ERROR and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from bentoml.exceptions import (
            BentoMLException,  # deferred: the service's process has it loaded already
        )

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
    if _tested("bentoml", "bentoml._internal.server.http_app", "log_exception") is not None:
        logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorFilter())


def publish_served_model(tag: str) -> None:
    """``nerflow_model_info{model_tag="..."} 1`` on the service's /metrics: which model answers
    (one series across worker processes)."""
    from prometheus_client import (  # deferred: the service's process has it loaded already
        REGISTRY,
        Gauge,
    )

    try:
        gauge = Gauge("nerflow_model_info", "the model this service serves (value 1), by tag", ["model_tag"],
                      multiprocess_mode="livemax")
    except ValueError:  # registered already: the service module imported twice in one process
        gauge = REGISTRY._names_to_collectors["nerflow_model_info"]
    gauge.labels(model_tag=tag).set(1)


def should_close() -> bool:
    """This worker closes the current request's connection after its answer: it is draining
    (SIGTERM) or holds more than its share of the server's connections."""
    return _draining or (_balance is not None and _balance.over_share())
