"""CORS for the API: a log panel served from another origin may call it from a browser.

Rules:
- Only the origins of `STREAMER_CORS_ORIGINS`, only on API paths (`/api/`). Any other
  request passes through untouched and gets no CORS header; without the setting this
  middleware does nothing (an `OPTIONS` stays 405).
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
  origin is answered 204 here, before routing and before the token check: browsers send
  it without the `Authorization` header. It allows GET and HEAD, `Authorization`, and of
  the other headers asked for only those in `SAFE_HEADERS`, never an arbitrary one.
- Every other answer to an allowed origin, success or problem alike, carries
  `Access-Control-Allow-Origin` (that origin, with `Vary: Origin`) and exposes the
  headers a panel reads (`EXPOSED`).
- No credentials mode: the token travels in `Authorization`, never in a cookie.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import routes
from .asgi import Message, Receive, Scope, Send
from .auth import Authenticator
from .catalog import Catalog
from .config import Settings
from .follow import Watches
from .observe import Service, annotate
from .plan import request_id, target
from .storage import Store

METHODS = b"GET, HEAD"
# Request headers a panel may send besides Authorization (lowercase, as browsers ask).
SAFE_HEADERS = {
    "accept": "Accept",
    "range": "Range",
    "if-none-match": "If-None-Match",
    "if-modified-since": "If-Modified-Since",
    "if-range": "If-Range",
    "last-event-id": "Last-Event-ID",
    "x-request-id": "X-Request-ID",
}
EXPOSED = (
    b"Content-Disposition, Content-Range, Content-Length, Accept-Ranges, ETag, "
    b"X-Request-ID, Retry-After"
)
MAX_AGE_S = 600


class Cors:
    """Wraps the service inside the observing middleware (so a preflight is counted and
    logged like any request), and stands for it there: settings, keys, store, catalog."""

    def __init__(self, app: Service) -> None:
        self.app = app
        self.origins = frozenset(origin.lower() for origin in app.settings.cors_origins)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def auth(self) -> Authenticator:
        return self.app.auth

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def catalog(self) -> Catalog:
        return self.app.catalog

    @property
    def watches(self) -> Watches:
        return self.app.watches

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = self._allowed_origin(scope)
        if origin is None:
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            return await _preflight(scope, origin, send)

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                message = {**message, "headers": allow(headers, origin, EXPOSED)}
            await send(message)

        await self.app(scope, receive, cors_send)

    def _allowed_origin(self, scope: Scope) -> str | None:
        """The request's Origin when CORS applies to it, else None."""
        if not self.origins or scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return None
        origin = _header(scope, b"origin")
        return origin if origin is not None and origin.lower() in self.origins else None


def allow(
    headers: list[tuple[bytes, bytes]], origin: str, expose: bytes
) -> list[tuple[bytes, bytes]]:
    """`headers` with the CORS answer for `origin` added, `Origin` joined to any `Vary`."""
    vary = [value for name, value in headers if name == b"vary"]
    headers = [(name, value) for name, value in headers if name != b"vary"]
    headers += [
        (b"vary", b", ".join([*vary, b"Origin"])),
        (b"access-control-allow-origin", origin.encode("latin-1")),
    ]
    if expose:
        headers.append((b"access-control-expose-headers", expose))
    return headers


def allowed_headers(requested: str | None) -> bytes:
    """Authorization, and the safe ones of the headers a preflight asks for."""
    names = ["Authorization"]
    for name in (requested or "").split(","):
        canonical = SAFE_HEADERS.get(name.strip().lower())
        if canonical is not None and canonical not in names:
            names.append(canonical)
    return ", ".join(names).encode()


async def _preflight(scope: Scope, origin: str, send: Send) -> None:
    rid = request_id(_header(scope, b"x-request-id"))
    found = routes.match(target(scope))  # the route the metrics and access log name
    if found is not None:
        annotate(scope, route=found[2], endpoint=found[0].name)
    headers = allow([(b"x-request-id", rid.encode())], origin, b"")
    headers += [
        (b"access-control-allow-methods", METHODS),
        (b"access-control-allow-headers", allowed_headers(_requested(scope))),
        (b"access-control-max-age", str(MAX_AGE_S).encode()),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _requested(scope: Scope) -> str | None:
    values = _values(scope, b"access-control-request-headers")
    return ",".join(values) if values else None


def _header(scope: Scope, name: bytes) -> str | None:
    values = _values(scope, name)
    return values[0] if len(values) == 1 else None


def _values(scope: Scope, name: bytes) -> list[str]:
    pairs: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    return [value.decode("latin-1") for key, value in pairs if key == name]
