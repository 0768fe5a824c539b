"""Pure request parsing: route, query, request id, and the plan of the download's response.

`plan_response` decides everything about a download that does not need I/O: status (200,
206, 304; 416 is raised), headers, the byte span to read from the store and the
transforms on the way out. `app` only executes the plan. No I/O here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from itertools import count
from typing import Any, Literal

from starlette.datastructures import Headers, QueryParams

from . import routes
from .catalog import LogObject
from .coding import accepts_gzip
from .conditions import http_date, if_range_holds, make_etag, not_modified
from .encoders import FIELD_NAMES, Fields
from .errors import InvalidFields, InvalidFormat, InvalidQuery
from .ranges import ByteRange, parse_range, resolve

Format = Literal["txt", "json", "ndjson"]
FORMATS: dict[str, Format] = {"txt": "txt", "json": "json", "ndjson": "ndjson"}
FIELDS: dict[str, Fields] = {name: name for name in FIELD_NAMES}
MEDIA_TYPES: dict[Format, str] = {
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
}
# Part of the entity tag of json and ndjson bodies: bump it when a change to the encoders
# changes their bytes, so that no client keeps a body under the tag of another.
ENCODING_VERSION = "1"
SECURITY_HEADERS = [
    (b"cache-control", b"private, no-store"),
    (b"x-content-type-options", b"nosniff"),
]

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Query:
    format: Format
    run_id: str | None
    fields: Fields = "default"
    # Live follow (streamer.follow): where a resumed follow starts, as a byte offset into
    # the stored log (txt) or the number of the first line to send (json, ndjson).
    follow: bool = False
    offset: int = 0
    from_line: int = 1


def target(scope: Mapping[str, Any]) -> str:
    """The path as the client sent it, still percent-encoded (ASGI's `raw_path`).

    Routing on it keeps an encoded "/" inside the model_id segment: `mdl-a%2Fb` is a
    malformed model id (404 after auth), not another path.
    """
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope["path"])


route_name = routes.route_name


def match_download(path: str) -> str | None:
    """The model_id of a download path as sent (the route or its alias), else None."""
    found = routes.match(path)
    return found[1] if found is not None and found[0].name == "download" else None


# Clients repeat a few query strings: each is parsed once (a refused one every time).
@lru_cache(maxsize=256)
def parse_query(query_string: bytes) -> Query:
    """The download's query; InvalidFormat / InvalidFields / InvalidQuery, in that order.

    `fields` is checked whatever the format; with `txt` a valid value has no effect.
    """
    params = QueryParams(query_string)
    formats = params.getlist("format")
    if len(formats) > 1 or (formats and formats[0] not in FORMATS):
        raise InvalidFormat()
    fields = params.getlist("fields")
    if len(fields) > 1 or (fields and fields[0] not in FIELDS):
        raise InvalidFields()
    run_ids = params.getlist("run_id")
    if len(run_ids) > 1:
        raise InvalidQuery("The run_id query parameter may be given only once.")
    query = Query(
        format=FORMATS[formats[0]] if formats else "txt",
        run_id=run_ids[0] if run_ids else None,
        fields=FIELDS[fields[0]] if fields else "default",
    )
    return _follow_query(query, params)


_FOLLOW = {"true": True, "1": True, "false": False, "0": False}
_COUNT = re.compile(r"[0-9]{1,18}")


def _follow_query(query: Query, params: QueryParams) -> Query:
    """`follow`, and where a resumed follow starts: `offset` (txt) or `from_line` (json,
    ndjson). Each applies only with `follow=true` and its formats, and is ignored
    elsewhere, as an unknown parameter is; a malformed or repeated one is InvalidQuery."""

    def one(name: str) -> str | None:
        values = params.getlist(name)
        if len(values) > 1:
            raise InvalidQuery(f"The {name} query parameter may be given only once.")
        return values[0] if values else None

    follow = one("follow")
    if follow is not None and follow not in _FOLLOW:
        raise InvalidQuery("The follow query parameter must be true, false, 1 or 0.")
    offset, from_line = one("offset"), one("from_line")
    if offset is not None and not _COUNT.fullmatch(offset):
        raise InvalidQuery("The offset query parameter must be a byte count.")
    if from_line is not None and not (_COUNT.fullmatch(from_line) and int(from_line) >= 1):
        raise InvalidQuery("The from_line query parameter must be a line number from 1.")
    if follow is None or not _FOLLOW[follow]:
        return query
    txt = query.format == "txt"
    return replace(
        query,
        follow=True,
        offset=int(offset) if offset is not None and txt else 0,
        from_line=int(from_line) if from_line is not None and not txt else 1,
    )


class _Ids:
    """New request ids: a random prefix per process and a counter, 32 hex digits as a
    uuid4's are, without a system call per request. A forked child draws its own prefix."""

    def __init__(self) -> None:
        self.pid = 0
        self.prefix = ""
        self.counter = count()

    def next(self) -> str:
        if os.getpid() != self.pid:
            self.pid, self.prefix, self.counter = os.getpid(), os.urandom(8).hex(), count()
        return f"{self.prefix}{next(self.counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


_ids = _Ids()


def request_id(header: str | None) -> str:
    """The caller's X-Request-ID when it is safe to echo, else a new one."""
    if header is not None and REQUEST_ID.fullmatch(header):
        return header
    return _ids.next()


@lru_cache(maxsize=1024)
def content_disposition(run_id: str, extension: str) -> str:
    """`attachment` with a quoted filename and its RFC 6266 `filename*` twin.

    run_id has passed the RUN_ID pattern, so the name holds no quote, CR, LF or `%`.
    """
    name = f"training-log-{run_id}.{extension}"
    return f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"


@dataclass(frozen=True)
class ResponsePlan:
    """What to answer: status, headers, and for a body what to read and how to send it.

    The store is read over [start, end) (`end` None: to the object's end); `length` is the
    exact number of bytes the reader (after gzip decoding, if any) must yield, None when
    unknown. `encode` renders lines as json or ndjson; `gzip` compresses the output.
    """

    status: Literal[200, 206, 304]
    headers: list[tuple[bytes, bytes]]
    start: int = 0
    end: int | None = None
    length: int | None = None
    decode_gzip: bool = False
    encode: Literal["json", "ndjson"] | None = None
    fields: Fields = "default"
    gzip: bool = False

    @property
    def has_body(self) -> bool:
        return self.status != 304


def plan_response(
    log: LogObject,
    query: Query,
    method: str,
    headers: Mapping[str, str],
    *,
    gzip: bool,
    now: datetime,
) -> ResponsePlan:
    """The response to a GET or HEAD of `log`; raises RangeNotSatisfiable (416).

    `headers` are the request's, looked up by lower-case name. `gzip` is the
    STREAMER_GZIP setting. The order is RFC 9110 section 13.2.2: If-None-Match, then
    If-Modified-Since (304), then Range with If-Range (206 or 416).
    """
    size = log.info.size
    client_gzip = accepts_gzip(headers.get("accept-encoding"))
    passthrough = log.gzip and client_gzip and query.format == "txt"
    decode = log.gzip and not passthrough
    # Ranges are served on the bytes as stored: a plain object, or a gzip one sent as is.
    rangeable = query.format == "txt" and not decode and size is not None
    spec = None
    if rangeable and method == "GET" and (value := headers.get("range")) is not None:
        spec = parse_range(value)
    on_the_fly = gzip and client_gzip and not passthrough and spec is None
    coding = "gzip" if passthrough or on_the_fly else "identity"

    info = log.info
    fields = query.fields if query.format != "txt" else None
    etag, validators = _validators(
        log.key, info.etag, info.modified, info.size, query.format, coding, fields, on_the_fly
    )
    modified = info.modified

    if not_modified(headers.get("if-none-match"), headers.get("if-modified-since"), etag, modified):
        return ResponsePlan(304, [*validators, *SECURITY_HEADERS])

    span: ByteRange | None = None
    if spec is not None and size is not None:
        if_range = headers.get("if-range")
        if if_range is None or if_range_holds(if_range, etag, modified, now):
            span = resolve(spec, size)

    whole = query.format == "txt" and not decode and not on_the_fly
    out = _body_headers(log, query, coding, span, size if whole else None, rangeable)
    out += [*validators, *SECURITY_HEADERS]
    return ResponsePlan(
        status=206 if span is not None else 200,
        headers=out,
        start=span.start if span is not None else 0,
        end=span.end if span is not None else size,
        length=span.length if span is not None else (None if decode else size),
        decode_gzip=decode,
        encode=None if query.format == "txt" else query.format,
        fields=query.fields,
        gzip=on_the_fly,
    )


def _body_headers(
    log: LogObject,
    query: Query,
    coding: str,
    span: ByteRange | None,
    length: int | None,
    rangeable: bool,
) -> list[tuple[bytes, bytes]]:
    """The headers that describe a 200 or 206 body: its type, name, coding and length
    (`length`: the whole object's, when it is sent as stored)."""
    out = [
        (b"content-type", MEDIA_TYPES[query.format].encode()),
        (b"content-disposition", content_disposition(log.run.run_id, query.format).encode()),
    ]
    if coding == "gzip":
        out.append((b"content-encoding", b"gzip"))
    if span is not None:
        out.append((b"content-length", str(span.length).encode()))
        out.append((b"content-range", span.content_range().encode()))
    elif length is not None:
        out.append((b"content-length", str(length).encode()))
    if rangeable:
        out.append((b"accept-ranges", b"bytes"))
    return out


# They change only with the object's version: computed once per version and representation.
@lru_cache(maxsize=1024)
def _validators(
    key: str,
    version: str | None,
    modified: datetime | None,
    size: int | None,
    fmt: Format,
    coding: str,
    fields: Fields | None,
    weak: bool,
) -> tuple[str | None, tuple[tuple[bytes, bytes], ...]]:
    """Our entity tag of one representation of an object (None when the store gives no
    version), and the Vary, ETag and Last-Modified headers of its answers."""
    etag = None
    if version is not None or modified is not None:
        parts = [key, version or "", modified.isoformat() if modified else "", str(size)]
        parts += [fmt, coding]
        if fields is not None:
            parts += [fields, ENCODING_VERSION]
        # On-the-fly gzip bytes depend on zlib and the chunking: equivalent, not identical.
        etag = make_etag(parts, weak=weak)
    headers = [(b"vary", b"Accept-Encoding")]
    if etag is not None:
        headers.append((b"etag", etag.encode()))
    if modified is not None:
        headers.append((b"last-modified", http_date(modified).encode()))
    return etag, tuple(headers)


NEGOTIATION_HEADERS = (
    "accept-encoding",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
)


def negotiation_headers(headers: Headers) -> dict[str, str]:
    """The request headers `plan_response` reads, a header sent on several lines joined.

    Joined, two `Range` lines read as two ranges (ignored) and two `If-None-Match` lines
    as one list, as RFC 9110 section 5.3 says they combine.
    """
    return {
        name: ", ".join(values) for name in NEGOTIATION_HEADERS if (values := headers.getlist(name))
    }
