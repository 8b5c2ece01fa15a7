"""What stands in front of the service's endpoints, for operators: a request size limit (413
before the body is read past it), optional bearer-token auth (401; health, readiness and
metrics stay open), as one ASGI middleware (``Service.add_asgi_middleware``; BentoML 1.4 has no setting for
either).

Draining on SIGTERM, the connection balance between workers, the batching poll and the
client-error filter patch BentoML's and uvicorn's internals: they live in nerflow.release.patches.

Settings (environment): ``NERFLOW_MAX_REQUEST_BYTES`` (default 4 MiB: 32 texts of 20,000
characters fit even JSON-escaped), ``NERFLOW_API_TOKEN`` or ``NERFLOW_API_TOKEN_FILE`` (a
mounted secret; unset: no auth), ``NERFLOW_DRAIN_SECONDS``, ``NERFLOW_BATCH_POLL_MS``.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from nerflow import NerflowError
from nerflow.release import patches

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")  # probes and scrapers carry no token
OPEN_PREFIXES = ("/ui",)  # the page's own files (it asks for the token before calling the API)
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024


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
        if scope["type"] == "http" and patches.should_close():
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


