"""Memory: idle RSS per store, slow clients on shaped S3, and a mix under a memory limit.

    python -m bench.memory [--size 256M] [--duration 20] [--slow 64] [--limit-mib 320]
                           [--fast-mix 24] [--slow-mix 40] [--rate 1e6] [--out FILE]

moto and fake-gcs-server each behind the shaping proxy at its defaults (20 ms, 80 MB/s per
connection, bench/proxy.py), one log of `--size` written to each and to a local folder.
Measured, each on a fresh `streamer serve` warmed by one download's first bytes:
- idle RSS on the local store, S3 and GCS;
- `--slow` clients at `--rate` bytes/s at once on the S3 log, streamer at its defaults,
  for `--duration` s: peak RSS against idle + clients x per-stream bound (4 MiB) + 32 MiB
  (pass/fail);
- with STREAMER_MEMORY_LIMIT=`--limit-mib`, `--fast-mix` ndjson clients at full speed and
  `--slow-mix` txt clients at `--rate` at once: peak RSS within the limit, and every
  answer a 200 or a 503 `overloaded` with Retry-After (pass/fail; probes made during the
  run check the 503s' headers and body).
The log need not be large: slow clients read `rate x duration` bytes of it, and parts are
16 MiB whatever its size. Prints a table; `--out` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from streamer.auth import issue_token

from . import servers
from .client import fetch
from .harness import parse_size
from .load import run_load_sync
from .logs import MODEL, ORG, run_id, seed_store
from .proxy import ProxyProcess
from .remote import CREDENTIALS, DOWNLOAD, SECRET, _seed_gcs, _seed_s3, _streamer
from .stats import MIB, ProcSampler, memory_kib

STREAM = 4 * MIB  # STREAMER_BUFFER_CHUNKS x STREAMER_CHUNK_SIZE at their defaults
MARGIN_MIB = 32


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _idle(server: servers.Server, url: str, token: str) -> float:
    """RSS (MiB) once one download's first bytes went out: store open, catalog warm."""
    fetch(url, token, first_bytes_only=True)
    time.sleep(1.0)  # a benchmark, not a test: let the first download's buffers go
    return memory_kib(server.pid, "VmRSS") / 1024


class _Probes(threading.Thread):
    """Downloads made one after another during a run: each answer's status, and whether a
    503 carried Retry-After and the `overloaded` code."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = urlsplit(url), token
        self.statuses: dict[int, int] = {}
        self.bad_503 = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            conn = http.client.HTTPConnection(self.url.netloc, timeout=30)
            try:
                target = f"{self.url.path}?{self.url.query}"
                conn.request("GET", target, headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                if response.status == 503:
                    body = orjson.loads(response.read())
                    if not response.getheader("retry-after") or body.get("code") != "overloaded":
                        self.bad_503 += 1
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            except (OSError, http.client.HTTPException):
                self.statuses[0] = self.statuses.get(0, 0) + 1
            finally:
                conn.close()  # a 200 is cut: its first bytes are enough

    def stop(self) -> None:
        self._done.set()
        self.join()


def _statuses(result: dict[str, Any]) -> dict[str, int]:
    """A load's answers other than complete 200s ("cut at the deadline" is none)."""
    kinds: dict[str, int] = result["error_kinds"]
    return dict(kinds)


def _slow_herd(
    proxy: ProxyProcess, url_path: str, token: str, opts: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    with _streamer("s3", proxy.url, logs / "slow.log") as server:
        url = server.url + url_path
        idle = _idle(server, url, token)
        result = run_load_sync(url, token, opts.slow, opts.duration, opts.rate, server.pid)
    peak = result["server"]["rss_peak_mib"]
    allowed = idle + opts.slow * STREAM / MIB + MARGIN_MIB
    return {
        "idle_mib": idle,
        "peak_mib": peak,
        "allowed_mib": allowed,
        "errors": _statuses(result),
        "pass": peak <= allowed,
    }


def _mix(
    proxy: ProxyProcess, url_path: str, token: str, opts: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    limit = opts.limit_mib * MIB
    env = {
        **CREDENTIALS,
        "FSSPEC_S3_ENDPOINT_URL": proxy.url,
        "STREAMER_MEMORY_LIMIT": f"{opts.limit_mib}Mi",
    }
    with servers.streamer(
        "s3://bench/store", SECRET, logs / "mix.log", env=env, max_streams=None
    ) as server:
        url = server.url + url_path
        idle = _idle(server, url, token)
        sampler = ProcSampler(server.pid)
        sampler.start()
        probes = _Probes(url, token)
        probes.start()
        outcome: dict[str, dict[str, Any]] = {}

        def fast() -> None:
            outcome["fast"] = run_load_sync(
                url + "&format=ndjson", token, opts.fast_mix, opts.duration
            )

        runner = threading.Thread(target=fast)
        runner.start()
        outcome["slow"] = run_load_sync(url, token, opts.slow_mix, opts.duration, opts.rate)
        runner.join()
        probes.stop()
        usage = sampler.stop()
    peak = usage.rss_peak_kib / 1024
    answers = {**_statuses(outcome["fast"])}
    for kind, count in _statuses(outcome["slow"]).items():
        answers[kind] = answers.get(kind, 0) + count
    only_503 = all(kind == "status 503" for kind in answers)
    probe_ok = set(probes.statuses) <= {200, 503} and probes.bad_503 == 0
    return {
        "limit_mib": limit / MIB,
        "idle_mib": idle,
        "peak_mib": peak,
        "completed": outcome["fast"]["completed"] + outcome["slow"]["completed"],
        "not_200": answers,
        "probes": probes.statuses,
        "probes_bad_503": probes.bad_503,
        "fast_mb_per_s": outcome["fast"]["mb_per_s"],
        "slow_mb_per_s": outcome["slow"]["mb_per_s"],
        "pass": peak <= limit / MIB and only_503 and probe_ok,
    }


def measure(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    from testkit.emulators import fake_gcs, moto_server

    root, logs = work / "store", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    seed_store(root, [opts.size])
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=24 * 3600)
    path = DOWNLOAD.format(model=MODEL, run=run_id(opts.size))
    saved = os.environ.copy()
    os.environ.update(CREDENTIALS)
    result: dict[str, Any] = {"size": opts.size, "idle_mib": {}}
    try:
        with servers.streamer(str(root), SECRET, logs / "local.log") as local:
            result["idle_mib"]["local"] = _idle(local, local.url + path, token)
        with moto_server() as moto, fake_gcs() as gcs:
            _say(f"memory: writing {opts.size / MIB:.0f} MiB to moto and fake-gcs-server")
            _seed_s3(moto, root, opts.size)
            _seed_gcs(gcs, root, opts.size)
            with ProxyProcess(moto) as s3_proxy, ProxyProcess(gcs) as gcs_proxy:
                for kind, proxy in (("s3", s3_proxy), ("gcs", gcs_proxy)):
                    name = "s3" if kind == "s3" else "gs"
                    with _streamer(name, proxy.url, logs / f"idle-{kind}.log") as server:
                        result["idle_mib"][kind] = _idle(server, server.url + path, token)
                _say(f"memory: {opts.slow} clients at {opts.rate / 1e6:g} MB/s on shaped S3")
                result["slow"] = _slow_herd(s3_proxy, path, token, opts, logs)
                mix = f"{opts.fast_mix} fast + {opts.slow_mix} slow clients"
                _say(f"memory: {mix} under {opts.limit_mib} MiB")
                result["mix"] = _mix(s3_proxy, path, token, opts, logs)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result


def report(result: dict[str, Any]) -> str:
    idle, slow, mix = result["idle_mib"], result["slow"], result["mix"]
    verdict = {True: "pass", False: "FAIL"}
    lines = [
        f"log: {result['size'] / MIB:.0f} MiB",
        "idle RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in idle.items()),
        f"slow herd on shaped S3: peak {slow['peak_mib']:.0f} MiB, allowed"
        f" {slow['allowed_mib']:.0f} (idle {slow['idle_mib']:.0f}); not 200: {slow['errors']}"
        f" -> {verdict[slow['pass']]}",
        f"mix under {mix['limit_mib']:.0f} MiB: peak {mix['peak_mib']:.0f} MiB (idle"
        f" {mix['idle_mib']:.0f}); completed {mix['completed']}, not 200: {mix['not_200']};"
        f" probes {mix['probes']} ({mix['probes_bad_503']} bad 503s); fast"
        f" {mix['fast_mb_per_s']:.0f} MB/s, slow {mix['slow_mb_per_s']:.0f} MB/s"
        f" -> {verdict[mix['pass']]}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--slow", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1e6)
    parser.add_argument("--limit-mib", type=int, default=320)
    parser.add_argument("--fast-mix", type=int, default=24)
    parser.add_argument("--slow-mix", type=int, default=40)
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        result = measure(opts, Path(work))
    print(report(result))
    if opts.out:
        options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS  # statuses are ints
        opts.out.write_bytes(orjson.dumps(result, option=options))
    return 0 if result["slow"]["pass"] and result["mix"]["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
