"""Pure request parsing: route, query, request id and the download's headers. No I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import QueryParams

from .errors import InvalidFormat, InvalidQuery

Format = Literal["txt", "json"]
FORMATS: dict[str, Format] = {"txt": "txt", "json": "json"}
MEDIA_TYPES: dict[Format, str] = {
    "txt": "text/plain; charset=utf-8",
    "json": "application/json",
}

DOWNLOAD_ROUTE = re.compile(
    r"/api/v1/models/(?P<model_id>[^/]*)/training(?P<alias>-metrics|/metrics)/logs/download"
)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True)
class Query:
    format: Format
    run_id: str | None


def match_download(path: str) -> str | None:
    """The model_id of a download path (the route or its alias), else None."""
    match = DOWNLOAD_ROUTE.fullmatch(path)
    return match["model_id"] if match else None


def route_name(path: str) -> str:
    """A label for metrics: the route template, never the raw path."""
    match = DOWNLOAD_ROUTE.fullmatch(path)
    if match:
        return f"/api/v1/models/{{model_id}}/training{match['alias']}/logs/download"
    return path if path in ("/healthz", "/readyz", "/metrics") else "unmatched"


def parse_query(query_string: bytes) -> Query:
    """The download's query; InvalidFormat / InvalidQuery as SPEC section 3 says."""
    params = QueryParams(query_string)
    formats = params.getlist("format")
    if len(formats) > 1 or (formats and formats[0] not in FORMATS):
        raise InvalidFormat()
    run_ids = params.getlist("run_id")
    if len(run_ids) > 1:
        raise InvalidQuery("The run_id query parameter may be given only once.")
    return Query(
        format=FORMATS[formats[0]] if formats else "txt",
        run_id=run_ids[0] if run_ids else None,
    )


def request_id(header: str | None) -> str:
    """The caller's X-Request-ID when it is safe to echo, else a new one."""
    if header is not None and REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def content_disposition(run_id: str, extension: str) -> str:
    """`attachment` with a quoted filename and its RFC 6266 `filename*` twin.

    run_id has passed the RUN_ID pattern, so the name holds no quote, CR, LF or `%`.
    """
    name = f"training-log-{run_id}.{extension}"
    return f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
