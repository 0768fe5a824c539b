"""The event loop and memory under expensive Get Logs pages (SPEC section 8), pass/fail.

    python -m bench.loop [--seconds 20] [--json FILE] [--case gzip|scans ...]

One `streamer serve` child (testkit/servers.py) at its defaults on a local store with a
gzip log that inflates to 256 MiB (bench/gzip_pages.py's repeated line), a 64 MiB log
(bench/logs.py's generator) and another model's small log. Two cases, each `--seconds`
of load and the pages in flight then:
- gzip: 4 clients page the gzip log at once, each a first page (the 4 share one
  inflation), then later pages by `next_cursor`, a new first page at the log's start;
- scans: 32 clients ask `level=NOPE&limit=1000` of the 64 MiB log at once (nothing
  matches: each page scans the whole log), again and again; a 503 waits its Retry-After.
During each, on connections of their own: `/healthz` every 10 ms, and another model's
last page (`limit=100`) every 50 ms; the server's peak RSS (VmHWM, reset at the start).
Pass: `/healthz` p99 < 50 ms, the other page's p99 < 500 ms, peak RSS <= idle + 256 MiB,
and every answer a 200 or a 503 `overloaded` (counted). The machine is shared and noisy:
a probe's latency is partly its neighbours'.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from testkit.dataset import put, put_run
from testkit.servers import SECRET, ServerProcess, make_token

from .gzip_pages import LINE
from .logs import generate
from .stats import MIB, memory_kib, percentile, reset_peak

LOGS = "/api/v1/models/{}/training-metrics/logs"
HEALTH_EVERY_S = 0.010
OTHER_EVERY_S = 0.050
HEALTH_P99_MS = 50.0
OTHER_P99_MS = 500.0
RSS_HEADROOM_MIB = 256

# A case: its name, the model paged, the query, the clients at once.
CASES: dict[str, tuple[str, str, dict[str, str], int]] = {
    "gzip": ("gzip 256 MiB, 4 pagers", "mdl-gz", {"limit": "100"}, 4),
    "scans": ("scans of 64 MiB, 32 clients", "mdl-scan", {"level": "NOPE", "limit": "1000"}, 32),
}

Worker = Callable[[float], None]  # a client's loop, run until its deadline (monotonic)


class Client:
    """One keep-alive connection; a broken one is opened again for the next request."""

    def __init__(self, url: str, token: str) -> None:
        self.netloc, self.token = urlsplit(url).netloc, token
        self._conn: http.client.HTTPConnection | None = None

    def get(self, target: str) -> tuple[int, bytes, str | None, float]:
        """(status, body, Retry-After, seconds); status 0 when the connection failed."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.netloc, timeout=120)
        started = time.perf_counter()
        try:
            self._conn.request("GET", target, headers={"Authorization": f"Bearer {self.token}"})
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            return 0, b"", None, time.perf_counter() - started
        return (
            response.status,
            body,
            response.getheader("retry-after"),
            (time.perf_counter() - started),
        )


@dataclass
class Tally:
    """What one case's clients got: answers by kind, page times by kind."""

    answers: Counter[str] = field(default_factory=Counter)
    times: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, body: bytes, retry: str | None, kind: str, seconds: float) -> None:
        if status == 503:
            code = orjson.loads(body).get("code") if body.startswith(b"{") else None
            answer = f"503 {code}" + ("" if retry else " without Retry-After")
        else:
            answer = str(status)
        with self.lock:
            self.answers[answer] += 1
            if status == 200:
                self.times.setdefault(kind, []).append(seconds)


def _probe(client: Client, target: str, every_s: float, stop: threading.Event) -> list[float]:
    """`target` asked every `every_s` until `stop`; each answer's seconds (a failure or a
    non-200 counts as infinitely slow)."""
    times: list[float] = []
    while not stop.is_set():
        status, _, _, took = client.get(target)
        times.append(took if status == 200 else float("inf"))
        stop.wait(max(0.0, every_s - took))
    return times


def _pager(client: Client, model: str, params: dict[str, str], tally: Tally) -> Worker:
    """A client that pages `model` backward with `params` until its deadline."""

    def run(deadline: float) -> None:
        cursor: str | None = None
        while time.monotonic() < deadline:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            status, body, retry, took = client.get(f"{LOGS.format(model)}?{urlencode(query)}")
            tally.add(status, body, retry, "later" if cursor else "first", took)
            if status == 200:
                cursor = orjson.loads(body)["next_cursor"]
            elif status == 503:
                time.sleep(min(float(retry or 1), max(0.0, deadline - time.monotonic())))

    return run


@dataclass
class Case:
    name: str
    tally: Tally
    health: list[float]
    other: list[float]
    peak_mib: float
    after_mib: float  # RSS once the case's pages ended
    seconds: float


def run_case(
    server: ServerProcess,
    name: str,
    workers: list[Worker],
    tally: Tally,
    seconds: float,
    token: str,
) -> Case:
    """`workers` at once for `seconds`, with the probes and the peak RSS beside them."""
    stop = threading.Event()
    probes: dict[str, list[float]] = {}
    other = LOGS.format("mdl-other") + "?limit=100"
    targets = {"health": ("/healthz", HEALTH_EVERY_S), "other": (other, OTHER_EVERY_S)}

    def probe(kind: str) -> None:
        target, every_s = targets[kind]
        probes[kind] = _probe(Client(server.url, token), target, every_s, stop)

    probing = [threading.Thread(target=probe, args=(kind,)) for kind in targets]
    reset_peak(server.pid)
    started = time.monotonic()
    for thread in probing:
        thread.start()
    deadline = started + seconds
    loads = [threading.Thread(target=worker, args=(deadline,)) for worker in workers]
    for thread in loads:
        thread.start()
    for thread in loads:
        thread.join()
    stop.set()
    for thread in probing:
        thread.join()
    peak, after = (memory_kib(server.pid, item) / 1024 for item in ("VmHWM", "VmRSS"))
    took = time.monotonic() - started
    return Case(name, tally, probes["health"], probes["other"], peak, after, took)


def seed(root: Path) -> None:
    put_run(str(root), "mdl-other", "run-1", generate(4 * MIB, seed=2))
    put_run(str(root), "mdl-scan", "run-1", generate(64 * MIB))
    put_run(str(root), "mdl-gz", "run-1", b"")
    folder = root / "models/mdl-gz/runs/run-1"
    (folder / "training.log").unlink()
    inflated = LINE * ((256 * MIB) // len(LINE))
    put(str(root), "models/mdl-gz/runs/run-1/training.log.gz", gzip.compress(inflated, 6))


def _p99_ms(values: list[float]) -> float:
    return percentile(sorted(values), 0.99) * 1000


def verdict(case: Case, idle_mib: float) -> dict[str, Any]:
    """The figures of a case, and whether each held."""
    answers = dict(case.tally.answers)
    bad = sum(n for answer, n in answers.items() if answer not in ("200", "503 overloaded"))
    pages = {kind: _p99_ms(times) for kind, times in case.tally.times.items()}
    health, other = _p99_ms(case.health), _p99_ms(case.other)
    figures = {
        "case": case.name,
        "seconds": round(case.seconds, 1),
        "answers": answers,
        "page_p99_ms": {kind: round(ms) for kind, ms in pages.items()},
        "page_n": {kind: len(times) for kind, times in case.tally.times.items()},
        "healthz_p99_ms": round(health, 1),
        "healthz_n": len(case.health),
        "other_p99_ms": round(other, 1),
        "other_n": len(case.other),
        "peak_rss_mib": round(case.peak_mib),
        "after_rss_mib": round(case.after_mib),
        "idle_rss_mib": round(idle_mib),
    }
    figures["pass"] = {
        "healthz": health < HEALTH_P99_MS,
        "other": other < OTHER_P99_MS,
        "rss": case.peak_mib <= idle_mib + RSS_HEADROOM_MIB,
        "answers": bad == 0,
    }
    return figures


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| case | answers | page p99 (ms) | /healthz p99 (ms) | other page p99 (ms) "
        "| peak RSS (MiB) | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        answers = ", ".join(f"{n} x {a}" for a, n in sorted(r["answers"].items()))
        pages = ", ".join(
            f"{k} {v} (n={r['page_n'][k]})" for k, v in sorted(r["page_p99_ms"].items())
        )
        ok = r["pass"]
        verdicts = " ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in ok.items())
        rows.append(
            f"| {r['case']} ({r['seconds']} s) | {answers} | {pages} "
            f"| {r['healthz_p99_ms']} (n={r['healthz_n']}) | {r['other_p99_ms']} "
            f"(n={r['other_n']}) | {r['peak_rss_mib']} (idle {r['idle_rss_mib']}, "
            f"after {r['after_rss_mib']}) "
            f"| {verdicts} |"
        )
    return "\n".join(rows)


def measure(root: Path, seconds: float, only: list[str]) -> list[dict[str, Any]]:
    token = make_token()
    env = {"STREAMER_STORAGE_URL": str(root), "STREAMER_JWT_SECRET": SECRET}
    server = ServerProcess([], env)
    try:
        warm = Client(server.url, token)
        for _ in range(3):
            assert warm.get(LOGS.format("mdl-other") + "?limit=100")[0] == 200
        time.sleep(1.0)  # a benchmark, not a test: let the first pages' buffers go
        idle = memory_kib(server.pid, "VmRSS") / 1024
        results = []
        for key in only:
            name, model, params, clients = CASES[key]
            tally = Tally()
            workers = [
                _pager(Client(server.url, token), model, params, tally) for _ in range(clients)
            ]
            print(f"{name}: running", file=sys.stderr, flush=True)
            case = run_case(server, name, workers, tally, seconds, token)
            results.append(verdict(case, idle))
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per case")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--case", choices=list(CASES), action="append", help="only this case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        seed(Path(folder))
        results = measure(Path(folder), args.seconds, args.case or list(CASES))
    print(table(results))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    failed = [r["case"] for r in results if not all(r["pass"].values())]
    if failed:
        print(f"FAIL: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
