"""The routes of the API, in one table: the app dispatches on it, metrics label by it.

Paths are matched as sent (still percent-encoded): an encoded "/" stays inside the
model_id segment. Each route has an alias, `training/metrics` for `training-metrics`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple
from urllib.parse import unquote

RouteName = Literal["download", "logs"]


@dataclass(frozen=True)
class Route:
    name: RouteName
    pattern: re.Pattern[str]
    suffix: str


def _route(name: RouteName, suffix: str) -> Route:
    prefix = r"/api/v1/models/(?P<model_id>[^/]*)/training(?P<alias>-metrics|/metrics)/logs"
    return Route(name, re.compile(prefix + re.escape(suffix)), suffix)


class Found(NamedTuple):
    """A matched route: the route, its model_id (decoded), its template (the metric label)."""

    route: Route
    model_id: str
    template: str


ROUTES = (_route("download", "/download"), _route("logs", ""))
# Answered before the app (streamer.observe.probes), without a token.
PROBES = ("/healthz", "/readyz", "/metrics", "/openapi.json")


def templates() -> tuple[str, ...]:
    """Every path served, as templates: the paths of the OpenAPI document."""
    api = "/api/v1/models/{model_id}/training%s/logs"
    return (
        *(api % alias + route.suffix for route in ROUTES for alias in ("-metrics", "/metrics")),
        *PROBES,
    )


def match(path: str) -> Found | None:
    """The route of a path as sent, its model_id and its template, else None."""
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found:
            template = f"/api/v1/models/{{model_id}}/training{found['alias']}/logs{route.suffix}"
            return Found(route, unquote(found["model_id"], errors="replace"), template)
    return None


def route_name(path: str) -> str:
    """A label for metrics and the access log: the route template, never the raw path."""
    found = match(path)
    if found is not None:
        return found.template
    return path if path in PROBES else "unmatched"
