"""The benchmark run: artifacts, servers, every case in alternation, figures, targets.

    python -m bench [--quick] [--out DIR] [--sizes 1M,100M,1G,10G] [--repeats 3] ...

Every server is started here as a child process on a loopback port and stopped at the
end; artifacts are generated into a scratch folder that is removed afterwards. A case is
one GET read by the raw-socket client (bench.client); the cases of one size run in turn,
`repeats` times, so noise from the other work on the machine falls on all of them alike,
and the report gives medians with min and max.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamer.auth import issue_token
from streamer.config import Settings

from . import remote, servers
from .baselines import ROUTED_ASGI
from .client import Fetch, fetch
from .load import run_load_sync
from .logs import MODEL, ORG, run_id, seed_store
from .rate import SMALL, measure, small_cases
from .revision import BEFORE, Unavailable, export
from .saturation import probes_under_load
from .stats import GIB, MIB, ProcSampler, memory_kib, spread, summary

SECRET = "bench-secret-of-at-least-thirty-two-bytes!"
DOWNLOAD = "/api/v1/models/{model}/training-metrics/logs/download?run_id={run}&format={fmt}"
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
TTFB_ROUNDS = 30


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def size_name(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


@dataclass
class Options:
    out: Path
    sizes: list[int]
    json_sizes: list[int]
    s3_sizes: list[int]
    repeats: int
    concurrency: list[int]
    duration: float
    rate: float
    concurrency_size: int
    tune: bool
    profile: bool
    quick: bool
    remote_size: int = 0
    remote_clients: int = 256
    remote_sweep: tuple[int, ...] = ()
    work: Path | None = None
    small_clients: int = 16
    small_duration: float = 5.0
    probe_clients: int = 256
    probe_duration: float = 15.0
    probe_workers: tuple[int, ...] = (1, 2)
    before: str | None = BEFORE  # the revision served beside this one (None: skip)
    plots: bool = True  # drawn only when matplotlib is installed too (the bench extra)


@dataclass
class Run:
    """Everything measured, as plain data (written as results.json)."""

    options: dict[str, Any]
    started: str
    machine: dict[str, Any]
    settings: dict[str, int]
    cases: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    identical_output: dict[str, bool] = field(default_factory=dict)
    concurrency: list[dict[str, Any]] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # TTFB alone, sizes fetched in turn (headers, then the connection is closed).
    ttfb_probe: dict[str, dict[str, float]] = field(default_factory=dict)
    # Requests per second of a small log, each case `repeats` times in turn.
    small: list[dict[str, Any]] = field(default_factory=list)
    # Probes and a new small download while many clients download at full speed.
    saturation: list[dict[str, Any]] = field(default_factory=list)
    # Many clients at full speed on this streamer and on an earlier revision, in turn.
    before: dict[str, Any] = field(default_factory=dict)
    # S3 and GCS behind the shaping proxy (bench/remote.py).
    remote: dict[str, Any] = field(default_factory=dict)
    # The catalog of a model with many runs on shaped S3 (bench.catalog_s3).
    catalog: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Kept for the plots only, not written: the client's gaps of each case's last run.
    gaps: dict[str, list[float]] = field(default_factory=dict)


def _machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": sys.version.split()[0],
        "load_avg_at_start": os.getloadavg(),
    }


def _record(
    run: Run, group: str, case: str, size: int, repeat: int, got: Fetch, usage: dict[str, Any]
) -> None:
    gaps = summary(got.gaps)
    # The p99 of a long download has far more samples to catch a hiccup of the machine
    # than a short one: also give the median of the p99s of 100 MiB windows.
    per_window = max(1, round(len(got.gaps) * min(1.0, 100 * MIB / size)))
    windows = [got.gaps[i : i + per_window] for i in range(0, len(got.gaps), per_window)]
    windowed = [summary(w)["p99"] for w in windows if len(w) == per_window] or [gaps["p99"]]
    run.cases.append(
        {
            "group": group,
            "case": case,
            "size": size,
            "repeat": repeat,
            "status": got.status,
            "body_bytes": got.body_bytes,
            "seconds": got.seconds,
            # MB/s of the artifact (the log's bytes), so that json cases compare by input.
            "mb_per_s": size / got.seconds / 1e6,
            "out_mb_per_s": got.body_bytes / got.seconds / 1e6,
            "ttfb_s": got.ttfb_s,
            "gap_p50_s": gaps["p50"],
            "gap_p99_s": gaps["p99"],
            "gap_max_s": gaps["max"],
            "gap_p99_100mib_window_s": statistics.median(windowed),
            "cpu_s_per_gib": usage["cpu_s"] / (size / GIB),
            "peak_rss_mib": usage["rss_peak_mib"],
        }
    )
    run.gaps[f"{group}/{case}/{size}"] = list(got.gaps)


def _measure(
    run: Run, group: str, case: str, size: int, repeat: int, pid: int, url: str, token: str | None
) -> None:
    sampler = ProcSampler(pid, sample=False)
    sampler.start()
    try:
        got = fetch(url, token, timeout=300)
    except Exception as exc:
        run.errors.append(f"{group}/{case}/{size_name(size)}: {type(exc).__name__}: {exc}")
        sampler.stop()
        return
    usage = sampler.stop().as_dict(size)
    if got.status != 200:
        run.errors.append(f"{group}/{case}/{size_name(size)}: status {got.status}")
        return
    _record(run, group, case, size, repeat, got, usage)


def _check_identical(run: Run, name: str, urls: list[tuple[str, str | None]]) -> None:
    hashes = set()
    for url, token in urls:
        got = fetch(url, token, hash_body=True, timeout=600)
        hashes.add(got.sha256 if got.status == 200 else f"status {got.status}")
    run.identical_output[name] = len(hashes) == 1


def download_url(base: str, size: int, fmt: str) -> str:
    return base + DOWNLOAD.format(model=MODEL, run=run_id(size), fmt=fmt)


def _alternate(
    run: Run, repeats: int, group: str, size: int, cases: list[tuple[int, str, str, str | None]]
) -> None:
    """Each case once per round, `repeats` rounds: (server pid, case name, url, token)."""
    for repeat in range(repeats):
        for pid, name, url, token in cases:
            _measure(run, group, name, size, repeat, pid, url, token)


def _local_cases(run: Run, opts: Options, root: Path, work: Path, token: str) -> None:
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    with (
        servers.streamer(str(root), SECRET, logs / "streamer.log") as streamer,
        servers.baselines(root, logs / "baselines.log") as baseline,
        servers.baselines(root, logs / "bare.log", bare=True) as bare,
    ):
        binary = servers.nginx_binary()
        nginx: servers.Server | None = None
        if binary is None:
            run.skipped["nginx"] = "skipped: nginx not installed"
        else:
            nginx = servers.nginx(binary, root, work / "nginx", logs / "nginx.log")
        try:
            for size in opts.sizes:
                key = f"models/{MODEL}/runs/{run_id(size)}/training.log"
                txt = [
                    (streamer.pid, "streamer", download_url(streamer.url, size, "txt"), token),
                    (
                        baseline.pid,
                        "starlette FileResponse 1 MiB",
                        f"{baseline.url}/file/{key}",
                        None,
                    ),
                    (baseline.pid, ROUTED_ASGI, f"{baseline.url}/raw/{key}", None),
                ]
                if nginx is not None:
                    txt.insert(1, (nginx.pid, "nginx sendfile", f"{nginx.url}/{key}", None))
                _alternate(run, opts.repeats, "txt", size, txt)
                print(f"txt {size_name(size)} done", file=sys.stderr, flush=True)
            for size in opts.json_sizes:
                key = f"models/{MODEL}/runs/{run_id(size)}/training.log"
                streamer_url = download_url(streamer.url, size, "json")
                baseline_url = f"{baseline.url}/json/{key}"
                _check_identical(
                    run, f"json {size_name(size)}", [(streamer_url, token), (baseline_url, None)]
                )
                json_cases = [
                    (streamer.pid, "streamer", streamer_url, token),
                    (baseline.pid, "regex + orjson.dumps per line", baseline_url, None),
                ]
                _alternate(run, opts.repeats, "json", size, json_cases)
                print(f"json {size_name(size)} done", file=sys.stderr, flush=True)
            _ttfb_probe(run, opts, streamer, token)
            _small_cases(run, opts, streamer, bare, nginx, token)
            if opts.profile:
                for fmt in ("txt", "json"):
                    size = max(s for s in [*opts.sizes, *opts.json_sizes] if s <= GIB)
                    url = download_url(streamer.url, size, fmt)
                    _profile(
                        run, f"streamer {fmt} {size_name(size)}", streamer.pid, url, token, work
                    )
            _concurrency(run, opts, root, work, token)
            _saturation(run, opts, root, work, token)
            _before(run, opts, root, work, token)
        finally:
            if nginx is not None:
                nginx.stop()


def _ttfb_probe(run: Run, opts: Options, streamer: servers.Server, token: str) -> None:
    """TTFB of each size, the sizes in a shuffled order each round, 30 rounds: the same
    catalog cache and page cache state for all, which whole downloads of different
    lengths cannot give, and no size always after the same other. Each probe closes its
    connection after the headers; a pause lets the server finish cancelling that stream
    before the next probe, so no probe pays for another's end."""
    seen: dict[int, list[float]] = defaultdict(list)
    order = random.Random(1)
    for _ in range(TTFB_ROUNDS):
        for size in order.sample(opts.sizes, len(opts.sizes)):
            url = download_url(streamer.url, size, "txt")
            seen[size].append(fetch(url, token, first_bytes_only=True).ttfb_s)
            time.sleep(0.1)
    run.ttfb_probe = {str(size): spread(values) for size, values in seen.items()}


def _small_cases(
    run: Run,
    opts: Options,
    streamer: servers.Server,
    bare: servers.Server,
    nginx: servers.Server | None,
    token: str,
) -> None:
    """Requests per second of a 4 KiB log, `small_clients` clients, a new connection per
    request: streamer and its 304 beside the bare ASGI callable's 200 and 304 on the same
    uvicorn stack, and nginx (bench/rate.py)."""
    url = download_url(streamer.url, SMALL, "txt")
    cases = small_cases(url, bare.url, token, nginx.url if nginx else None)
    run.small += measure(cases, opts.small_clients, opts.small_duration, opts.repeats)
    print("small logs done", file=sys.stderr, flush=True)


def _saturation(run: Run, opts: Options, root: Path, work: Path, token: str) -> None:
    """Probes under load, on a fresh streamer per worker count: `probe_clients` clients
    download the concurrency-size log at full speed while a separate client times
    /healthz, /readyz and the first byte of a new small download."""
    for workers in opts.probe_workers:
        log = work / "logs" / f"streamer-saturation-{workers}.log"
        env = {"STREAMER_WORKERS": str(workers)}
        with servers.streamer(str(root), SECRET, log, env=env) as streamer:
            big = download_url(streamer.url, opts.concurrency_size, "txt")
            small = download_url(streamer.url, SMALL, "txt")
            fetch(big, token, timeout=300)
            try:
                result = probes_under_load(
                    streamer.url, big, small, token, opts.probe_clients, opts.probe_duration
                )
            except Exception as exc:
                run.errors.append(f"saturation workers={workers}: {type(exc).__name__}: {exc}")
                continue
        run.saturation.append({"workers": workers, "size": opts.concurrency_size, **result})
        print(
            f"saturation, {workers} worker(s): {result['load_mb_per_s']:.0f} MB/s, /healthz p99"
            f" {result['probes']['healthz']['p99'] * 1e3:.1f} ms",
            file=sys.stderr,
            flush=True,
        )


def _before(run: Run, opts: Options, root: Path, work: Path, token: str) -> None:
    """Aggregate throughput of `probe_clients` clients at full speed on the concurrency-size
    log, this streamer and the `before` revision's in turn, `repeats` rounds, each load on
    a fresh server: the same machine and load for both (bench/revision.py)."""
    if opts.before is None:
        return
    source = work / "before"
    try:
        commit = export(opts.before, source)
    except Unavailable as exc:
        run.skipped["before"] = f"skipped: {exc}"
        return
    run.before = {"revision": opts.before, "commit": commit, "rounds": []}
    cases: list[tuple[str, Path | None]] = [("streamer", None), ("before", source)]
    for repeat in range(opts.repeats):
        for case, tree in cases:
            log = work / "logs" / f"streamer-{case}-{repeat}.log"
            with servers.streamer(str(root), SECRET, log, source=tree) as streamer:
                url = download_url(streamer.url, opts.concurrency_size, "txt")
                fetch(url, token, timeout=300)
                try:
                    result = run_load_sync(
                        url, token, opts.probe_clients, opts.duration, None, streamer.pid
                    )
                except Exception as exc:
                    run.errors.append(f"before, {case}: {type(exc).__name__}: {exc}")
                    continue
            run.before["rounds"].append(
                {
                    "case": case,
                    "repeat": repeat,
                    "clients": opts.probe_clients,
                    "mb_per_s": result["mb_per_s"],
                    "errors": result["errors"],
                    "cpu_s_per_gib": result["server"]["cpu_s_per_gib"],
                }
            )
            print(
                f"{case} ({commit[:7] if tree else 'this'}): {result['mb_per_s']:.0f} MB/s",
                file=sys.stderr,
                flush=True,
            )


def _concurrency(run: Run, opts: Options, root: Path, work: Path, token: str) -> None:
    """Each load on a fresh streamer, so that its idle RSS is not a previous run's peak."""
    for clients in opts.concurrency:
        for rate in (None, opts.rate):
            log = work / "logs" / f"streamer-load-{clients}-{rate}.log"
            with servers.streamer(str(root), SECRET, log) as streamer:
                url = download_url(streamer.url, opts.concurrency_size, "txt")
                fetch(url, token, timeout=300)  # warmed up: imports, catalog, one stream
                time.sleep(0.3)
                idle_rss = memory_kib(streamer.pid, "VmRSS") / 1024
                try:
                    result = run_load_sync(url, token, clients, opts.duration, rate, streamer.pid)
                except Exception as exc:
                    run.errors.append(f"load {clients} rate={rate}: {type(exc).__name__}: {exc}")
                    continue
            result["idle_rss_mib"] = idle_rss
            result["size"] = opts.concurrency_size
            run.concurrency.append(result)
            print(
                f"load {clients} clients rate={rate}: {result['mb_per_s']:.0f} MB/s,"
                f" {result['errors']} errors",
                file=sys.stderr,
                flush=True,
            )


def _s3_cases(run: Run, opts: Options, work: Path, root: Path, token: str) -> None:
    if not opts.s3_sizes:
        return
    import boto3

    logs = work / "logs"
    credentials = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(credentials)
    with servers.moto(logs / "moto.log") as moto:
        client = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        for path in sorted((root / "models").rglob("*.json")):
            client.upload_file(str(path), "bench", f"store/{path.relative_to(root)}")
        for size in opts.s3_sizes:
            key = f"models/{MODEL}/runs/{run_id(size)}/training.log"
            client.upload_file(str(root / key), "bench", f"store/{key}")
        env = {**credentials, "FSSPEC_S3_ENDPOINT_URL": moto.url}
        with servers.streamer("s3://bench/store", SECRET, logs / "streamer-s3.log", env=env) as s3:
            for size in opts.s3_sizes:
                key = f"store/models/{MODEL}/runs/{run_id(size)}/training.log"

                def direct(repeat: int, size: int = size, key: str = key) -> None:
                    sampler = ProcSampler(moto.pid, sample=False)
                    sampler.start()
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "bench.direct_s3",
                            "--endpoint",
                            moto.url,
                            "--bucket",
                            "bench",
                            "--key",
                            key,
                        ],
                        capture_output=True,
                        check=False,
                        timeout=600,
                        env={**os.environ, **credentials},
                    )
                    moto_usage = sampler.stop().as_dict(size)
                    if out.returncode:
                        run.errors.append(f"s3/boto3 {size_name(size)}: {out.stderr[-300:]!r}")
                        return
                    got = orjson.loads(out.stdout)
                    run.cases.append(
                        {
                            "group": "s3",
                            "case": "boto3 get_object, streamed",
                            "size": size,
                            "repeat": repeat,
                            "status": 200,
                            "body_bytes": got["body_bytes"],
                            "seconds": got["seconds"],
                            "mb_per_s": size / got["seconds"] / 1e6,
                            "out_mb_per_s": got["body_bytes"] / got["seconds"] / 1e6,
                            "ttfb_s": got["ttfb_s"],
                            "gap_p50_s": got["gap_s"]["p50"],
                            "gap_p99_s": got["gap_s"]["p99"],
                            "gap_max_s": got["gap_s"]["max"],
                            # The reader's own CPU: it does what streamer does, minus HTTP.
                            "cpu_s_per_gib": got["client_cpu_s"] / (size / GIB),
                            "peak_rss_mib": got["client_peak_rss_mib"],
                            "moto_cpu_s_per_gib": moto_usage["cpu_s_per_gib"],
                        }
                    )

                def via_streamer(repeat: int, size: int = size) -> None:
                    moto_sampler = ProcSampler(moto.pid, sample=False)
                    moto_sampler.start()
                    _measure(
                        run,
                        "s3",
                        "streamer",
                        size,
                        repeat,
                        s3.pid,
                        download_url(s3.url, size, "txt"),
                        token,
                    )
                    moto_usage = moto_sampler.stop().as_dict(size)
                    if run.cases and run.cases[-1]["group"] == "s3":
                        run.cases[-1]["moto_cpu_s_per_gib"] = moto_usage["cpu_s_per_gib"]

                for repeat in range(opts.repeats):
                    via_streamer(repeat)
                    direct(repeat)
                if opts.profile and size == max(opts.s3_sizes):
                    url = download_url(s3.url, size, "txt")
                    _profile(run, f"streamer s3 {size_name(size)}", s3.pid, url, token, work)
                print(f"s3 {size_name(size)} done", file=sys.stderr, flush=True)


def _remote_cases(run: Run, opts: Options, work: Path, root: Path) -> None:
    shaped = argparse.Namespace(
        repeats=opts.repeats,
        clients=opts.remote_clients,
        rate=opts.rate,
        duration=opts.duration,
        sweep=list(opts.remote_sweep),
        sweep_clients=4,
    )
    try:
        run.remote = remote.measure(root, opts.remote_size, shaped, work)
    except Exception as exc:
        run.errors.append(f"remote: {type(exc).__name__}: {exc}")
        return
    run.remote["medians"] = remote.medians(run.remote["cases"])


def _catalog(run: Run, opts: Options) -> None:
    """bench.catalog_s3 in its own process (its own moto and shaping proxy)."""
    quick = "--runs 50 --ttl 0.5 --duration 3 --rate 10 --change-every 1"
    args = quick.split() if opts.quick else []
    out = subprocess.run(
        [sys.executable, "-m", "bench.catalog_s3", "--json", *args],
        capture_output=True,
        check=False,
        timeout=1800,
    )
    if out.returncode:
        run.errors.append(f"catalog: {out.stderr[-300:]!r}")
        return
    run.catalog = orjson.loads(out.stdout.splitlines()[-1])
    print("catalog done", file=sys.stderr, flush=True)


TUNING_GRID = [
    (chunk, depth) for chunk in (256 << 10, 1 << 20, 2 << 20, 4 << 20) for depth in (3, 4, 6)
]


def _tuning(run: Run, opts: Options, root: Path, work: Path, token: str) -> None:
    """txt and json throughput, and memory under slow clients, for chunk sizes and depths.

    All the servers run at once and are fetched from in turn, `repeats` rounds, so that
    the noise of the machine falls on every setting alike.
    """
    size = max((s for s in opts.sizes if s <= GIB), default=opts.sizes[0])
    json_size = max((s for s in opts.json_sizes if s <= 100 * MIB), default=opts.json_sizes[0])
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                servers.streamer(
                    str(root),
                    SECRET,
                    work / "logs" / f"streamer-{chunk}-{depth}.log",
                    chunk_size=chunk,
                    buffer_chunks=depth,
                )
            )
            for chunk, depth in TUNING_GRID
        ]
        speeds: dict[tuple[int, str], list[float]] = defaultdict(list)
        for _ in range(opts.repeats):
            for index, streamer in enumerate(started):
                for fmt, s in (("txt", size), ("json", json_size)):
                    got = fetch(download_url(streamer.url, s, fmt), token, timeout=300)
                    speeds[(index, fmt)].append(s / got.seconds / 1e6)
        slow = min(64, max(opts.concurrency, default=8))
        for index, streamer in enumerate(started):
            # Memory under slow clients: what the read-ahead really costs.
            idle = ProcSampler(streamer.pid, sample=False)
            idle.start()
            idle_rss = idle.stop().rss_start_kib / 1024
            load = run_load_sync(
                download_url(streamer.url, opts.concurrency_size, "txt"),
                token,
                slow,
                min(opts.duration, 4.0),
                opts.rate,
                streamer.pid,
            )
            chunk, depth = TUNING_GRID[index]
            run.tuning.append(
                {
                    "chunk_size": chunk,
                    "buffer_chunks": depth,
                    "txt_size": size,
                    "json_size": json_size,
                    "txt_mb_per_s": spread(speeds[(index, "txt")]),
                    "json_mb_per_s": spread(speeds[(index, "json")]),
                    "slow_clients": slow,
                    "slow_rss_growth_mib": load["server"]["rss_peak_mib"] - idle_rss,
                    "slow_errors": load["errors"],
                }
            )
    print("tuning done", file=sys.stderr, flush=True)


def _profile(run: Run, label: str, pid: int, url: str, token: str, work: Path) -> None:
    """py-spy samples of a server while it serves `url` over and over for a few seconds."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        run.skipped[f"profile {label}"] = "skipped: py-spy not installed"
        return
    raw = work / f"profile-{label}.txt"
    flags = ["-d", "8", "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking"]
    spy = subprocess.Popen(
        [pyspy, "record", "-p", str(pid), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        fetch(url, token, timeout=300)
    spy.wait(60)
    if raw.exists():
        run.profiles[label] = _top_frames(raw.read_text())
    else:
        run.skipped[f"profile {label}"] = "skipped: py-spy could not attach"


def _top_frames(collapsed: str, count: int = 12) -> list[tuple[str, float]]:
    """The functions that were on top of the stack most often, with their share."""
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(samples)
        total += int(samples)
    top = sorted(own.items(), key=lambda item: -item[1])[:count]
    return [(name, n / total) for name, n in top] if total else []


def execute(opts: Options) -> Path:
    """Run everything; write results.json, report.md and the plots; return the folder."""
    from .report import write_report

    settings = Settings()
    run = Run(
        options={
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(opts).items()
        },
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=_machine(),
        settings={"chunk_size": settings.chunk_size, "buffer_chunks": settings.buffer_chunks},
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="streamer-bench-", dir=opts.work)).resolve()
    work.chmod(0o755)  # nginx's workers run as an unprivileged user and must read it
    try:
        root = work / "store"
        every = {*opts.sizes, *opts.json_sizes, *opts.s3_sizes, opts.concurrency_size, SMALL}
        sizes = sorted(every | ({opts.remote_size} if opts.remote_size else set()))
        print(f"writing artifacts {[size_name(s) for s in sizes]}", file=sys.stderr, flush=True)
        seed_store(root, sizes)
        token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=24 * 3600)
        _local_cases(run, opts, root, work, token)
        _s3_cases(run, opts, work, root, token)
        if opts.remote_size:
            _remote_cases(run, opts, work, root)
        _catalog(run, opts)
        if opts.tune:
            _tuning(run, opts, root, work, token)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(run, opts.out)
    return opts.out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    today = datetime.now(UTC).date().isoformat()
    parser.add_argument("--out", type=Path, default=Path("bench/results") / today)
    parser.add_argument("--quick", action="store_true", help="tiny artifacts, one pass")
    parser.add_argument("--sizes", default="1M,100M,1G,10G", help="txt artifact sizes")
    parser.add_argument("--json-sizes", default="1M,100M,1G")
    parser.add_argument("--s3-sizes", default="1M,100M,1G")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,64,256")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--rate", type=float, default=1e6, help="bytes/s of a slow client")
    parser.add_argument("--concurrency-size", default="100M")
    parser.add_argument(
        "--remote-size", default="1G", help="object on the shaped S3 and GCS (0: skip them)"
    )
    parser.add_argument("--remote-clients", type=int, default=256, help="slow clients on S3")
    parser.add_argument(
        "--remote-sweep",
        default=remote.SWEEP_CEILINGS,
        help="STREAMER_READAHEAD_BYTES values swept on the shaped S3 (empty: none)",
    )
    parser.add_argument("--no-tune", action="store_true", help="skip the chunk/buffer sweep")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--no-plots", action="store_true", help="write no PNGs")
    parser.add_argument("--work", type=Path, help="scratch folder for the artifacts")
    parser.add_argument("--small-clients", type=int, default=16, help="clients of the 4 KiB case")
    parser.add_argument("--small-duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--probe-clients", type=int, default=256, help="load under the probes")
    parser.add_argument("--probe-duration", type=float, default=15.0)
    parser.add_argument("--probe-workers", default="1,2", help="STREAMER_WORKERS values")
    parser.add_argument(
        "--before",
        default=BEFORE,
        help="git revision served beside this one at full speed ('none': skip)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.json_sizes = args.s3_sizes = args.concurrency_size = "1M"
        args.repeats, args.concurrency, args.duration = 2, "1,8", 1.0
        args.remote_size, args.remote_clients, args.remote_sweep = "32M", 8, "64M"
        args.no_tune = args.no_profile = True
        args.small_duration, args.probe_clients, args.probe_duration = 0.5, 8, 3.0
        args.probe_workers = "1"

    def sizes(text: str) -> list[int]:
        return [parse_size(part) for part in text.split(",") if part.strip()]

    opts = Options(
        out=args.out,
        sizes=sizes(args.sizes),
        json_sizes=sizes(args.json_sizes),
        s3_sizes=sizes(args.s3_sizes),
        repeats=max(1, args.repeats),
        concurrency=[int(n) for n in args.concurrency.split(",") if n.strip()],
        duration=args.duration,
        rate=args.rate,
        concurrency_size=parse_size(args.concurrency_size),
        tune=not args.no_tune,
        profile=not args.no_profile,
        quick=args.quick,
        remote_size=parse_size(args.remote_size),
        remote_clients=args.remote_clients,
        remote_sweep=tuple(sizes(args.remote_sweep)),
        work=args.work,
        small_clients=args.small_clients,
        small_duration=args.small_duration,
        probe_clients=args.probe_clients,
        probe_duration=args.probe_duration,
        probe_workers=tuple(int(n) for n in args.probe_workers.split(",") if n.strip()),
        before=None if args.before == "none" else args.before,
        plots=not args.no_plots,
    )
    out = execute(opts)
    print(json.dumps({"report": str(out / "report.md")}))
    return 0
