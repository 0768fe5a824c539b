"""Production-shaped S3 and GCS: the emulators behind the shaping proxy (testkit/shaping.py).

    python -m bench.remote [--size 1G] [--repeats 3] [--clients 256] [--rate 1e6]
                           [--duration 10] [--sweep 64M,128M,256M,512M]
                           [--sweep-clients 4] [--out DIR]

moto (its ranged GetObject served from the stored bytes, testkit/moto_ranged.py) and
fake-gcs-server each sit behind a shaping proxy at its defaults (a first-byte latency and
a bandwidth cap per connection, modelling S3 in-region), run in a process of its own
(bench/proxy.py). One object of `--size` is written straight to each emulator. Measured,
the cases of a store in turn, `--repeats` rounds:
- S3: `streamer serve` at its defaults over HTTP (bench/client.py), boto3
  `download_fileobj` into a null sink (s3transfer: 10 threads, 8 MiB ranges) and one
  streamed boto3 GET, all through the proxy (the two boto3 cases in their own process);
- GCS: streamer, and one streamed GET of the object's media through the proxy;
- the proxy's own ceiling, unshaped: streamer and download_fileobj through it, and
  download_fileobj straight from moto (the emulator's own ceiling);
- the read-ahead ceiling (STREAMER_READAHEAD_BYTES) swept over `--sweep` on shaped S3:
  a fresh streamer per value, one client, then `--sweep-clients` clients at once, each
  the whole object at full speed (the aggregate MB/s and streamer's CPU per GiB);
- `--clients` clients at `--rate` bytes/s on the S3 log (bench/load.py), all started at
  once on a fresh streamer at its defaults: peak RSS, errors, the slowest client, TTFB,
  the store requests per download and the store connections open at once (at the proxy);
  the same on GCS. Beside them, the herd's ceilings: the same clients on a streamer of a
  local store holding the same log (no store requests), and the store alone, the same
  number of first requests made at once straight through the proxy (bench/herd.py);
- a 16 KiB range of the object: bytes and requests that reached the store (the proxy's
  counters), after a first request warmed the catalog.
`python -m bench` runs this too and reports its targets (bench/report.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from streamer.auth import issue_token

from . import servers
from .client import fetch
from .load import run_load_sync
from .logs import MODEL, ORG, run_id, seed_store
from .proxy import ProxyProcess
from .saturation import probe_once
from .stats import GIB, MIB, ProcSampler, memory_kib, summary

SECRET = "bench-secret-of-at-least-thirty-two-bytes!"
BUCKET = "bench"
PREFIX = "store"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
RANGE = 16 * 1024
FILL = 8 * MIB  # what a new download puts into its client's socket buffers at the start
ONE_GET = "one streamed GET (boto3)"
TRANSFER = "boto3 download_fileobj"
SWEEP = "s3 read-ahead"
SWEEP_CEILINGS = "64M,128M,256M,512M"
DOWNLOAD = "/api/v1/models/{model}/training-metrics/logs/download?run_id={run}"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _seed_s3(endpoint: str, root: Path, size: int) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for path in sorted((root / "models").rglob("*.json")):
        client.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(root)}")
    key = f"models/{MODEL}/runs/{run_id(size)}/training.log"
    client.upload_file(str(root / key), BUCKET, f"{PREFIX}/{key}")


def _seed_gcs(endpoint: str, root: Path, size: int) -> None:
    import fsspec

    fs = fsspec.filesystem(
        "gs", endpoint_url=endpoint, token="anon", project="bench", skip_instance_cache=True
    )
    fs.mkdir(BUCKET)
    paths = [*sorted((root / "models").rglob("*.json"))]
    paths.append(root / f"models/{MODEL}/runs/{run_id(size)}/training.log")
    for path in paths:
        fs.put_file(str(path), f"{BUCKET}/{PREFIX}/{path.relative_to(root)}")


def _moto_rate(endpoint: str, size: int, count: int = 40) -> float:
    """HeadObject requests per second moto answers, one at a time, straight (no proxy)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    key = f"{PREFIX}/models/{MODEL}/runs/{run_id(size)}/training.log"
    client.head_object(Bucket=BUCKET, Key=key)
    started = time.perf_counter()
    for _ in range(count):
        client.head_object(Bucket=BUCKET, Key=key)
    return count / (time.perf_counter() - started)


def _streamer(kind: str, proxy: str, log: Path, *, read_ahead: int | None = None) -> servers.Server:
    """`streamer serve` at its defaults (STREAMER_MAX_STREAMS included) on the proxied store;
    `read_ahead` sets STREAMER_READAHEAD_BYTES."""
    if kind == "s3":
        env = {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": proxy}
    else:
        options = {"endpoint_url": proxy, "token": "anon", "project": "bench"}
        env = {"FSSPEC_GS": json.dumps(options), "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    if read_ahead is not None:
        env["STREAMER_READAHEAD_BYTES"] = str(read_ahead)
    return servers.streamer(f"{kind}://{BUCKET}/{PREFIX}", SECRET, log, env=env, max_streams=None)


def _case(
    group: str, case: str, size: int, repeat: int, seconds: float, **more: Any
) -> dict[str, Any]:
    return {
        "group": group,
        "case": case,
        "size": size,
        "repeat": repeat,
        "seconds": seconds,
        "mb_per_s": size / seconds / 1e6,
        **more,
    }


def _via_streamer(
    server: servers.Server, group: str, case: str, size: int, *, repeat: int, token: str
) -> dict[str, Any]:
    url = server.url + DOWNLOAD.format(model=MODEL, run=run_id(size))
    sampler = ProcSampler(server.pid, sample=False)
    sampler.start()
    got = fetch(url, token, timeout=900)
    usage = sampler.stop().as_dict(size)
    if got.status != 200 or got.body_bytes != size:
        raise RuntimeError(f"{group}/{case}: status {got.status}, {got.body_bytes} bytes")
    return _case(
        group,
        case,
        size,
        repeat,
        got.seconds,
        ttfb_s=got.ttfb_s,
        cpu_s_per_gib=usage["cpu_s_per_gib"],
        peak_rss_mib=usage["rss_peak_mib"],
    )


def _at_once(
    server: servers.Server,
    group: str,
    case: str,
    size: int,
    clients: int,
    *,
    repeat: int,
    token: str,
) -> dict[str, Any]:
    """`clients` downloads of the whole object at once, at full speed: the aggregate MB/s
    (all bytes over the time to the last end) and streamer's CPU per GiB sent."""
    url = server.url + DOWNLOAD.format(model=MODEL, run=run_id(size))
    sampler = ProcSampler(server.pid, sample=False)
    sampler.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        got = list(pool.map(lambda _: fetch(url, token, timeout=900), range(clients)))
    seconds = time.perf_counter() - started
    usage = sampler.stop().as_dict(size * clients)
    for one in got:
        if one.status != 200 or one.body_bytes != size:
            raise RuntimeError(f"{group}/{case}: status {one.status}, {one.body_bytes} bytes")
    return _case(
        group,
        case,
        size * clients,
        repeat,
        seconds,
        clients=clients,
        cpu_s_per_gib=usage["cpu_s_per_gib"],
        peak_rss_mib=usage["rss_peak_mib"],
    )


def _sweep(
    proxy: ProxyProcess, size: int, token: str, opts: argparse.Namespace, logs: Path
) -> list[dict[str, Any]]:
    """The read-ahead ceiling swept on shaped S3, a fresh streamer per value and round (the
    rounds interleave the values, so the machine's noise falls on all alike)."""
    cases: list[dict[str, Any]] = []
    clients = opts.sweep_clients
    for repeat in range(opts.repeats):
        for ceiling in opts.sweep:
            name = f"read-ahead {ceiling // MIB} MiB"
            log = logs / f"sweep-{ceiling // MIB}.log"
            with _streamer("s3", proxy.url, log, read_ahead=ceiling) as server:
                one = partial(_via_streamer, server, SWEEP, f"{name}, 1 client", size)
                cases.append(one(repeat=repeat, token=token))
                many = f"{name}, {clients} clients"
                cases.append(
                    _at_once(server, SWEEP, many, size, clients, repeat=repeat, token=token)
                )
        _say(f"remote: read-ahead sweep, round {repeat + 1} of {opts.repeats} done")
    return cases


def _boto3(
    proxy: str, group: str, case: str, size: int, *, repeat: int, transfer: bool = True
) -> dict[str, Any]:
    key = f"{PREFIX}/models/{MODEL}/runs/{run_id(size)}/training.log"
    args = [sys.executable, "-m", "bench.direct_s3", "--endpoint", proxy]
    args += ["--bucket", BUCKET, "--key", key] + (["--transfer"] if transfer else [])
    out = subprocess.run(
        args, capture_output=True, check=False, timeout=900, env={**os.environ, **CREDENTIALS}
    )
    if out.returncode:
        raise RuntimeError(f"{group}/{case}: {out.stderr[-300:]!r}")
    got = orjson.loads(out.stdout)
    if got["body_bytes"] != size:
        raise RuntimeError(f"{group}/{case}: {got['body_bytes']} bytes")
    return _case(group, case, size, repeat, got["seconds"], ttfb_s=got.get("ttfb_s"))


def _gcs_get(proxy: str, size: int, *, repeat: int) -> dict[str, Any]:
    """One streamed GET of the object's media through the proxy (fetch: a raw socket)."""
    key = quote(f"{PREFIX}/models/{MODEL}/runs/{run_id(size)}/training.log", safe="")
    got = fetch(f"{proxy}/storage/v1/b/{BUCKET}/o/{key}?alt=media", None, timeout=900)
    if got.status != 200 or got.body_bytes != size:
        raise RuntimeError(f"gcs one GET: status {got.status}, {got.body_bytes} bytes")
    return _case("gcs", "one streamed GET", size, repeat, got.seconds, ttfb_s=got.ttfb_s)


def _range(server: servers.Server, proxy: ProxyProcess, size: int, token: str) -> dict[str, Any]:
    """A 16 KiB range from the middle of the object: what reached the store for it."""
    first = size // 2
    path = DOWNLOAD.format(model=MODEL, run=run_id(size))
    headers = {"Authorization": f"Bearer {token}", "Range": f"bytes={first}-{first + RANGE - 1}"}

    def get() -> tuple[int, int]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, len(response.read())
        finally:
            connection.close()

    get()  # the catalog (model, run, the log's size) is warm for the one measured
    proxy.reset()
    status, body = get()
    counters = proxy.counters()
    return {
        "status": status,
        "body_bytes": body,
        "store_bytes": counters["bytes_down"],
        "store_requests": counters["requests"],
    }


def _load(
    kind: str, proxy: ProxyProcess, size: int, token: str, opts: argparse.Namespace, log: Path
) -> dict[str, Any]:
    with _streamer(kind, proxy.url, log) as server:
        result = _herd(server, size, token, opts, proxy)
    result["herd_direct"] = _herd_direct(kind, proxy, size, opts.clients)
    result["herd_direct_fill"] = _herd_direct(kind, proxy, size, opts.clients, fill=FILL)
    return result


def _herd(
    server: servers.Server,
    size: int,
    token: str,
    opts: argparse.Namespace,
    proxy: ProxyProcess | None = None,
) -> dict[str, Any]:
    """`--clients` slow clients started at once on a warm streamer (catalog, imports, the
    object's part size): TTFB, RSS, and what reached the store per download (`proxy`)."""
    url = server.url + DOWNLOAD.format(model=MODEL, run=run_id(size))
    fetch(url, token, first_bytes_only=True)  # warmed up: imports, catalog, the pool
    time.sleep(0.5)
    idle = memory_kib(server.pid, "VmRSS") / 1024
    if proxy is not None:
        proxy.reset()
    probes = _HealthProbe(server.url + "/healthz")
    probes.start()
    try:
        result = run_load_sync(url, token, opts.clients, opts.duration, opts.rate, server.pid)
    finally:
        result_probes = probes.stop()
    result["healthz_s"] = result_probes
    if proxy is not None:
        counters = proxy.counters()
        result["store_connections"] = counters["connections"]
        result["store_peak_connections"] = counters["peak_connections"]
        # Every client starts one download; none finishes its log within the run.
        result["store_requests_per_download"] = counters["requests"] / max(1, result["requests"])
    result["idle_rss_mib"] = idle
    result["size"] = size
    return result


class _HealthProbe(threading.Thread):
    """`/healthz` on a new connection every 50 ms while a load runs: how long streamer's
    event loop keeps a request waiting (its lag, plus one tiny request)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.times, self.failures = url, array("d"), 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            status, seconds = probe_once(self.url, whole=True)
            self.times.append(seconds)
            self.failures += status != 200

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join(60)
        return {**summary(self.times), "failures": self.failures}


def _herd_local(root: Path, size: int, token: str, opts: argparse.Namespace, log: Path) -> Any:
    """The same herd on a local store holding the same log: streamer's and this machine's
    own ceiling, with no store request at all."""
    with servers.streamer(str(root), SECRET, log, max_streams=None) as server:
        return _herd(server, size, token, opts)


def _herd_direct(
    kind: str, proxy: ProxyProcess, size: int, clients: int, fill: int = 0
) -> dict[str, Any]:
    """The store's own ceiling through the same proxy: `clients` downloads' first requests
    (metadata, then the first part's ranged GET) made at once by one client (bench.herd);
    with `fill`, each then reads that much of its part at once, as streamer does to fill
    its slow clients' socket buffers."""
    key = f"{PREFIX}/models/{MODEL}/runs/{run_id(size)}/training.log"
    args = [sys.executable, "-m", "bench.herd", "--kind", kind, "--endpoint", proxy.url]
    args += ["--bucket", BUCKET, "--key", key, "--clients", str(clients), "--fill", str(fill)]
    proxy.reset()
    out = subprocess.run(
        args, capture_output=True, check=False, timeout=300, env={**os.environ, **CREDENTIALS}
    )
    if out.returncode:
        raise RuntimeError(f"{kind} direct herd: {out.stderr[-300:]!r}")
    result: dict[str, Any] = orjson.loads(out.stdout)
    result["store_requests"] = proxy.counters()["requests"] - result["warm_up_requests"]
    return result


def measure(root: Path, size: int, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Everything this module measures, as plain data (`root` holds the seeded log)."""
    from testkit.emulators import fake_gcs, moto_server

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=24 * 3600)
    saved = os.environ.copy()
    os.environ.update(CREDENTIALS)
    cases: list[dict[str, Any]] = []
    result: dict[str, Any] = {"size": size, "cases": cases, "range": {}, "errors": []}
    try:
        with moto_server() as moto, fake_gcs() as gcs:
            _say(f"remote: writing {size / MIB:.0f} MiB to moto and fake-gcs-server")
            _seed_s3(moto, root, size)
            _seed_gcs(gcs, root, size)
            result["moto_requests_per_s"] = _moto_rate(moto, size)
            with ProxyProcess(moto) as s3_proxy, ProxyProcess(gcs) as gcs_proxy:
                result["shaping"] = {k: s3_proxy.counters()[k] for k in ("latency_s", "bandwidth")}
                with (
                    _streamer("s3", s3_proxy.url, logs / "streamer-s3.log") as s3,
                    _streamer("gs", gcs_proxy.url, logs / "streamer-gcs.log") as gs,
                ):
                    shaped = [
                        partial(_via_streamer, s3, "s3", "streamer", size, token=token),
                        partial(_boto3, s3_proxy.url, "s3", TRANSFER, size),
                        partial(_boto3, s3_proxy.url, "s3", ONE_GET, size, transfer=False),
                        partial(_via_streamer, gs, "gcs", "streamer", size, token=token),
                        partial(_gcs_get, gcs_proxy.url, size),
                    ]
                    _rounds(shaped, opts.repeats, result)
                    result["range"]["s3"] = _range(s3, s3_proxy, size, token)
                    result["range"]["gcs"] = _range(gs, gcs_proxy, size, token)
                    # The proxy's own ceiling: the same reads, unshaped.
                    s3_proxy.shape(0.0, float("inf"))
                    unshaped = [
                        partial(_via_streamer, s3, "s3 unshaped", "streamer", size, token=token),
                        partial(
                            _boto3, s3_proxy.url, "s3 unshaped", "boto3 download_fileobj", size
                        ),
                        partial(_boto3, moto, "moto direct", "boto3 download_fileobj", size),
                    ]
                    _rounds(unshaped, opts.repeats, result)
                s3_proxy.shape(*_defaults())
                if opts.sweep:
                    try:
                        cases += _sweep(s3_proxy, size, token, opts, logs)
                    except Exception as exc:
                        result["errors"].append(f"sweep: {type(exc).__name__}: {exc}")
                _say(f"remote: {opts.clients} clients at {opts.rate / 1e6:g} MB/s")
                # The herd's ceilings beside it: no store at all, then the store alone.
                result["herd_local"] = _herd_local(root, size, token, opts, logs / "herd.log")
                result["load"] = _load("s3", s3_proxy, size, token, opts, logs / "load-s3.log")
                # The same on GCS, whose emulator answers a request far faster than moto.
                result["load_gcs"] = _load(
                    "gs", gcs_proxy, size, token, opts, logs / "load-gcs.log"
                )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result


def _rounds(
    jobs: Sequence[Callable[..., dict[str, Any]]], repeats: int, result: dict[str, Any]
) -> None:
    """Each job once per round, `repeats` rounds: the machine's noise falls on all alike."""
    for repeat in range(repeats):
        for job in jobs:
            try:
                result["cases"].append(job(repeat=repeat))
            except Exception as exc:
                result["errors"].append(f"{type(exc).__name__}: {exc}")
        _say(f"remote: round {repeat + 1} of {repeats} done")


def _defaults() -> tuple[float, float]:
    from testkit.shaping import BANDWIDTH, LATENCY_S

    return LATENCY_S, BANDWIDTH


def medians(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (group, case): the median MB/s and seconds, with the runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for case in cases:
        groups.setdefault((case["group"], case["case"]), []).append(case)
    return [
        {
            "group": group,
            "case": name,
            "size": runs[0]["size"],
            "runs": len(runs),
            "mb_per_s": statistics.median(r["mb_per_s"] for r in runs),
            "mb_per_s_runs": [round(r["mb_per_s"], 1) for r in runs],
            "seconds": statistics.median(r["seconds"] for r in runs),
            "cpu_s_per_gib": statistics.median(cpu) if (cpu := _cpu(runs)) else None,
        }
        for (group, name), runs in groups.items()
    ]


def _cpu(runs: list[dict[str, Any]]) -> list[float]:
    """streamer's CPU seconds per GiB (the boto3 cases run in their own process: none)."""
    return [r["cpu_s_per_gib"] for r in runs if "cpu_s_per_gib" in r]


def _sizes(text: str) -> list[int]:
    from .harness import parse_size

    return [parse_size(one) for one in text.split(",") if one.strip()]


def main(argv: list[str] | None = None) -> int:
    from .harness import parse_size

    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__)
    parser.add_argument("--size", type=parse_size, default=GIB)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--rate", type=float, default=1e6)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--sweep",
        type=_sizes,
        default=_sizes(SWEEP_CEILINGS),
        help="read-ahead ceilings to sweep on S3 (comma-separated; empty: none)",
    )
    parser.add_argument("--sweep-clients", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, help="scratch folder for the artifact")
    args = parser.parse_args(argv)
    from .report import remote_markdown, remote_targets

    work = Path(tempfile.mkdtemp(prefix="streamer-remote-", dir=args.work))
    try:
        root = work / "store"
        seed_store(root, [args.size])
        result = measure(root, args.size, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["medians"] = medians(result["cases"])
    result["targets"] = remote_targets(result)
    text = remote_markdown(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "remote.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        (args.out / "remote.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
