"""Reading what streamer reports about itself: Prometheus samples and access-log lines.

Rules: a metric is the sum of the matching samples (labels given are a subset); an access-log
wait is bounded (30 s) and wakes on each line, no polling.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def scrape(url: str) -> str:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


class AccessLog(logging.Handler):
    """Collects the access-log lines of this process; `wait` blocks for a matching one."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.raw.append(record.getMessage())
            self.lines.append(orjson.loads(record.getMessage()))
            self.changed.notify_all()

    def wait(self, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((line for line in self.lines if fields.items() <= line.items()), None)

        with self.changed:
            assert self.changed.wait_for(lambda: found() is not None, timeout=30), self.lines
            line = found()
            assert line is not None
            return line


ROUTE = "/api/v1/models/{model_id}/training-metrics/logs/download"
