"""The errors streamer answers with, and their one mapping to an HTTP response.

    StreamerError                      500 internal
    ├── BadRequest                     400
    │   ├── InvalidFormat              400 invalid_format
    │   ├── InvalidFields              400 invalid_fields
    │   ├── InvalidQuery               400 invalid_query
    │   ├── InvalidCursor              400 invalid_cursor
    │   └── MalformedRequest           400 malformed_request (not HTTP/1.1; protocol.py)
    ├── Unauthorized                   401
    │   ├── MissingToken               401 missing_token
    │   └── InvalidToken               401 invalid_token
    ├── Forbidden                      403 insufficient_scope
    ├── NotFound                       404 not_found
    │   ├── ModelNotFound              404 model_not_found
    │   ├── RunNotFound                404 run_not_found
    │   ├── NoCompletedRun             404 no_completed_run
    │   ├── LogsExpired                404 logs_expired
    │   ├── LogsPurged                 404 logs_purged
    │   └── LogsNotReady               404 logs_not_ready
    ├── MethodNotAllowed               405 method_not_allowed
    ├── RequestTimeout                 408 request_timeout (protocol.py)
    ├── RangeNotSatisfiable            416 range_not_satisfiable
    ├── HeadersTooLarge                431 headers_too_large (protocol.py)
    ├── UpstreamError                  502 upstream_error
    ├── Overloaded                     503 overloaded
    ├── StoreUnavailable               503 store_unavailable
    └── VersionNotSupported            505 http_version_not_supported (protocol layer)

Every error carries its status, its problem `code` and the headers it needs; `problem()`
turns one into an RFC 9457 body and `answer()` into the whole response (status, headers,
body), which the application and the HTTP protocol layer both send. The detail is ours,
never an exception's text, so no token or stack trace can leak through it.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

PROBLEM_TYPE_BASE = "urn:streamer:problem:"


class StreamerError(Exception):
    status: int = 500
    code: str = "internal"
    title: str = "Internal Server Error"
    default_detail: str = "The server could not complete the request."

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None):
        self.detail = detail or self.default_detail
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.detail)


class BadRequest(StreamerError):
    status, code, title = 400, "bad_request", "Bad Request"


class InvalidFormat(BadRequest):
    code = "invalid_format"
    default_detail = "The format query parameter must be one of: txt, json, ndjson."


class InvalidFields(BadRequest):
    code = "invalid_fields"
    default_detail = "The fields query parameter must be one of: default, ecs, datadog, otel."


class InvalidQuery(BadRequest):
    code = "invalid_query"
    default_detail = "The query string is malformed."


class InvalidCursor(BadRequest):
    code = "invalid_cursor"
    default_detail = (
        "The cursor is malformed, altered, made for another log or query, or made on a"
        " version of the log that was replaced."
    )


REALM = 'Bearer realm="streamer"'


class Unauthorized(StreamerError):
    status, code, title = 401, "invalid_token", "Unauthorized"

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None):
        challenge = REALM if self.code == "missing_token" else f'{REALM}, error="invalid_token"'
        super().__init__(detail, {"WWW-Authenticate": challenge, **(headers or {})})


class MissingToken(Unauthorized):
    code = "missing_token"
    default_detail = "A Bearer token is required in the Authorization header."


class InvalidToken(Unauthorized):
    code = "invalid_token"
    default_detail = "The Bearer token is invalid."


class Forbidden(StreamerError):
    status, code, title = 403, "insufficient_scope", "Forbidden"
    default_detail = "The token lacks the model:read or organization:viewer permission."

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None):
        challenge = 'Bearer error="insufficient_scope"'  # SPEC's words, without a realm
        super().__init__(detail, {"WWW-Authenticate": challenge, **(headers or {})})


class NotFound(StreamerError):
    status, code, title = 404, "not_found", "Not Found"
    default_detail = "No resource exists at this path."


class ModelNotFound(NotFound):
    code = "model_not_found"
    default_detail = "The model does not exist or is not visible to this organization."


class RunNotFound(NotFound):
    code = "run_not_found"
    default_detail = "The training run does not exist for this model."


class NoCompletedRun(NotFound):
    code = "no_completed_run"
    default_detail = "The model has no completed training run."


class LogsExpired(NotFound):
    code = "logs_expired"
    default_detail = "The logs of this run have expired under the retention policy."


class LogsPurged(NotFound):
    code = "logs_purged"
    default_detail = "The logs of this run have been purged."


class LogsNotReady(NotFound):
    code = "logs_not_ready"
    default_detail = "The run has not written its log yet; retry later, or follow it."


class MethodNotAllowed(StreamerError):
    status, code, title = 405, "method_not_allowed", "Method Not Allowed"
    default_detail = "Only GET and HEAD are allowed on this path."

    def __init__(self, allow: str = "GET, HEAD"):
        super().__init__(None, {"Allow": allow})


class RangeNotSatisfiable(StreamerError):
    status, code, title = 416, "range_not_satisfiable", "Range Not Satisfiable"
    default_detail = "The requested range lies outside the log."

    def __init__(self, size: int):
        super().__init__(None, {"Content-Range": f"bytes */{size}"})


class MalformedRequest(BadRequest):
    code = "malformed_request"
    default_detail = "The request is not valid HTTP/1.1."


class RequestTimeout(StreamerError):
    status, code, title = 408, "request_timeout", "Request Timeout"
    default_detail = "The request's headers did not arrive in time."


class HeadersTooLarge(StreamerError):
    status, code, title = 431, "headers_too_large", "Request Header Fields Too Large"
    default_detail = "The request line and headers are too large."


class UpstreamError(StreamerError):
    status, code, title = 502, "upstream_error", "Bad Gateway"
    default_detail = "The object store failed to answer."


class Overloaded(StreamerError):
    status, code, title = 503, "overloaded", "Service Unavailable"
    default_detail = "Too many downloads are running; retry shortly."

    def __init__(self, retry_after: int = 1):
        super().__init__(None, {"Retry-After": str(retry_after)})


class StoreUnavailable(StreamerError):
    """The store cannot be reached, its root (bucket, container) is missing, or it refused
    our credentials: never a purge, so a caller asks again."""

    status, code, title = 503, "store_unavailable", "Service Unavailable"
    default_detail = "The object store is unavailable; retry shortly."

    def __init__(self, retry_after: int = 5):
        super().__init__(None, {"Retry-After": str(retry_after)})


class VersionNotSupported(StreamerError):
    status, code, title = 505, "http_version_not_supported", "HTTP Version Not Supported"
    default_detail = "Only HTTP/1.0 and HTTP/1.1 are served."


def problem(error: StreamerError, request_id: str) -> bytes:
    """The RFC 9457 body of `error`."""
    return orjson.dumps(
        {
            "type": PROBLEM_TYPE_BASE + error.code,
            "title": error.title,
            "status": error.status,
            "detail": error.detail,
            "code": error.code,
            "request_id": request_id,
        }
    )


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def answer(error: StreamerError, request_id: str) -> Answer:
    """The whole answer to `error`: its status, the headers of every problem, its body."""
    body = problem(error, request_id)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-request-id", request_id.encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    return error.status, headers, body
