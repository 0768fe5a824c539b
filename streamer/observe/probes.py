"""The answers to the probes and the scrape: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

One answerer, pure but for the store check behind `/readyz`: the HTTP protocol asks it
(`answer_now`) as soon as a request's head is parsed, and answers in the read callback
what needs no waiting; `Observe` asks it (`answer`) for the rest. Only GET and HEAD reach
it; no token is needed. Every answer has `Cache-Control: no-store` and `X-Request-ID`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from .. import metrics
from ..asgi import Scope
from ..errors import Answer
from ..ops import Readiness
from ..plan import request_id

# The API's contract, served as kept in the package: the bytes of the file, unchanged.
OPENAPI_DOCUMENT = resources.files("streamer").joinpath("openapi.json")
# The key of the lifespan state (ASGI's `scope["state"]`, which uvicorn hands to each
# connection's protocol) under which `Observe` leaves its `AnswerNow`.
STATE_KEY = "streamer.answer_now"

AnswerNow = Callable[[Scope], Answer | None]


class Probes:
    """Decides the answer to a GET or HEAD of a probe path."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness
        self.openapi = OPENAPI_DOCUMENT.read_bytes()

    def answer_now(self, scope: Scope) -> Answer | None:
        """`/healthz`, and `/readyz` while its store check is fresh; None for the rest."""
        path, method = scope["path"], scope["method"]
        if path not in ("/healthz", "/readyz") or method not in ("GET", "HEAD"):
            return None
        ready = None
        if path == "/readyz" and (ready := self.readiness.known()) is None:
            return None
        return self._answer(scope, ready)

    async def answer(self, scope: Scope) -> Answer:
        """Any probe path, checking the store first for a stale `/readyz`."""
        ready = await self.readiness.check() if scope["path"] == "/readyz" else None
        return self._answer(scope, ready)

    def _answer(self, scope: Scope, ready: tuple[bool, str] | None) -> Answer:
        path: str = scope["path"]
        status, media_type, body = 200, "text/plain; charset=utf-8", b"ok\n"
        if ready is not None:
            status, body = (200 if ready[0] else 503), ready[1].encode() + b"\n"
        elif path == "/metrics":
            media_type, body = metrics.CONTENT_TYPE, metrics.exposition()
        elif path == "/openapi.json":
            media_type, body = "application/json", self.openapi
        rid = request_id(header(scope, b"x-request-id"))
        headers = [
            (b"content-type", media_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-request-id", rid.encode()),
        ]
        return status, headers, b"" if scope["method"] == "HEAD" else body


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None
