"""results.json, report.md and the plots of one benchmark run."""

from __future__ import annotations

import importlib.util
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from .baselines import BARE
from .rate import rates, ratios
from .stats import GIB, MIB, spread

METRICS = (
    "mb_per_s",
    "out_mb_per_s",
    "ttfb_s",
    "gap_p50_s",
    "gap_p99_s",
    "gap_max_s",
    "cpu_s_per_gib",
    "peak_rss_mib",
)


def size_name(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def medians(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (group, case, size): every metric as median, min and max."""
    grouped: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        grouped[(case["group"], case["case"], case["size"])].append(case)
    rows = []
    for (group, name, size), runs in grouped.items():
        row: dict[str, Any] = {"group": group, "case": name, "size": size, "runs": len(runs)}
        for metric in (*METRICS, "moto_cpu_s_per_gib", "gap_p99_100mib_window_s"):
            values = [r[metric] for r in runs if metric in r]
            if values:
                row[metric] = spread(values)
        rows.append(row)
    return rows


def _median(rows: list[dict[str, Any]], group: str, case: str, size: int, metric: str) -> float:
    for row in rows:
        if (row["group"], row["case"], row["size"]) == (group, case, size) and metric in row:
            value: float = row[metric]["median"]
            return value
    return float("nan")


def _target(name: str, value: float, goal: float, higher: bool, note: str = "") -> dict[str, Any]:
    if value != value:  # nan: not measured in this run
        verdict = "n/a"
    else:
        verdict = "pass" if (value >= goal if higher else value <= goal) else "fail"
    return {
        "target": name,
        "value": value,
        "goal": goal,
        "higher_is_better": higher,
        "verdict": verdict,
        "note": note,
    }


TXT_GUARD_SIZE = GIB


def targets(run: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    opts = run["options"]
    out = []
    # The guard is defined at 1 GiB (a long single download); another size is no verdict.
    txt = TXT_GUARD_SIZE
    streamer_txt = _median(rows, "txt", "streamer", txt, "mb_per_s")
    nginx = _median(rows, "txt", "nginx sendfile", txt, "mb_per_s")
    note = run["skipped"].get("nginx", "")
    if txt in opts["sizes"]:
        note = note or f"streamer {streamer_txt:.0f} MB/s, nginx {nginx:.0f} MB/s"
    else:
        sizes = ", ".join(size_name(s) for s in opts["sizes"])
        note = f"not measured: the guard is defined at {size_name(txt)}; this run's txt: {sizes}"
    out.append(
        _target(
            f"txt >= 0.9x nginx sendfile ({size_name(txt)})",
            streamer_txt / nginx if txt in opts["sizes"] else float("nan"),
            0.9,
            True,
            note,
        )
    )
    js = max(opts["json_sizes"], default=0)
    ratio = _median(rows, "json", "streamer", js, "mb_per_s") / _median(
        rows, "json", "regex + orjson.dumps per line", js, "mb_per_s"
    )
    identical = all(run["identical_output"].values()) if run["identical_output"] else False
    out.append(
        _target(
            f"json >= 3x regex + orjson.dumps per line ({size_name(js)})",
            ratio,
            3.0,
            True,
            "byte-identical output: " + ("yes" if identical else "NO"),
        )
    )
    out.append(_target("json output byte-identical to the baseline", float(identical), 1.0, True))
    big, mid = 10 * GIB, 100 * MIB
    probe = run.get("ttfb_probe", {})
    if str(big) in probe and str(mid) in probe:
        whole = _median(rows, "txt", "streamer", big, "ttfb_s") / _median(
            rows, "txt", "streamer", mid, "ttfb_s"
        )
        out.append(
            _target(
                "TTFB of 10 GiB <= 1.2x that of 100 MiB (txt, sizes in shuffled turn)",
                probe[str(big)]["median"] / probe[str(mid)]["median"],
                1.2,
                False,
                f"{probe[str(big)]['median'] * 1e3:.2f} vs {probe[str(mid)]['median'] * 1e3:.2f}"
                f" ms; from the whole downloads above: {whole:.2f}x",
            )
        )
    else:
        out.append(
            _target("TTFB of 10 GiB <= 1.2x that of 100 MiB (txt)", float("nan"), 1.2, False)
        )
    for metric, label in (("gap_p99_s", "p99 chunk gap"),):
        note = ""
        if metric == "gap_p99_s":
            windowed = _median(rows, "txt", "streamer", big, "gap_p99_100mib_window_s") / (
                _median(rows, "txt", "streamer", mid, "gap_p99_100mib_window_s")
            )
            nginx_ratio = _median(rows, "txt", "nginx sendfile", big, metric) / _median(
                rows, "txt", "nginx sendfile", mid, metric
            )
            note = f"per 100 MiB window: {windowed:.2f}x; nginx's own ratio: {nginx_ratio:.2f}x"
        out.append(
            _target(
                f"{label} of 10 GiB <= 1.2x that of 100 MiB (txt)",
                _median(rows, "txt", "streamer", big, metric)
                / _median(rows, "txt", "streamer", mid, metric),
                1.2,
                False,
                note,
            )
        )
    slow = [
        c
        for c in run["concurrency"]
        if c["rate_bytes_per_s"] and c["concurrency"] == max(opts["concurrency"])
    ]
    settings = run["settings"]
    per_stream = settings["chunk_size"] * settings["buffer_chunks"] / MIB
    if slow:
        c = slow[-1]
        n = c["concurrency"]
        bound = c["idle_rss_mib"] + n * per_stream + 32
        peak = c["server"]["rss_peak_mib"]
        out.append(
            _target(
                f"{n} rate-limited clients: peak RSS (MiB) < idle + {n} x {per_stream:g} MiB + 32",
                peak,
                bound,
                False,
                f"idle {c['idle_rss_mib']:.0f} MiB",
            )
        )
        samples = [mib for _, mib in c["server"]["rss_over_time"]]
        half = len(samples) // 2
        growth = max(samples[half:]) / max(samples[:half]) if half else float("nan")
        out.append(
            _target(
                "RSS flat over time (max of 2nd half / max of 1st half)",
                growth,
                1.05,
                False,
            )
        )
    else:
        out.append(_target("rate-limited clients: peak RSS bound", float("nan"), 0, False))
    out += _responsiveness_targets(run)
    out += catalog_targets(run.get("catalog") or {})
    errors = sum(c["errors"] for c in run["concurrency"]) + len(run["errors"])
    errors += sum(c["errors"] for c in run.get("small", []))
    errors += sum(c["load_errors"] for c in run.get("saturation", []))
    errors += sum(r["errors"] for r in (run.get("before") or {}).get("rounds", []))
    out.append(_target("zero errors", float(errors), 0.0, False))
    if run.get("remote"):
        out += remote_targets(run["remote"])
    return out


def before_rates(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Aggregate MB/s at full speed of this streamer and of the earlier revision, each the
    median, min and max of its rounds (harness `_before`)."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for row in (run.get("before") or {}).get("rounds", []):
        grouped[row["case"]].append(row["mb_per_s"])
    return {case: spread(values) for case, values in grouped.items()}


def before_target(run: dict[str, Any]) -> dict[str, Any]:
    before = run.get("before") or {}
    rates = before_rates(run)
    rounds = before.get("rounds", [])
    clients = rounds[0]["clients"] if rounds else 256
    name = f"{clients} clients at full speed: aggregate MB/s >= 0.9x the code before (same run)"
    if "streamer" not in rates or "before" not in rates:
        reason = run.get("skipped", {}).get("before", "not measured")
        return _target(name, float("nan"), 0.9, True, reason)
    now, then = rates["streamer"], rates["before"]
    note = (
        f"streamer {now['median']:.0f} MB/s ({now['min']:.0f}-{now['max']:.0f}), revision"
        f" {before['commit'][:7]} {then['median']:.0f} MB/s ({then['min']:.0f}-{then['max']:.0f}),"
        f" {len(rounds) // 2} rounds in turn"
    )
    return _target(name, now["median"] / then["median"], 0.9, True, note)


def small_rates(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Requests per second of each small-log case: median, min and max over the repeats."""
    return rates(run.get("small", []))


def _responsiveness_targets(run: dict[str, Any]) -> list[dict[str, Any]]:
    out = [
        _target(name, value, goal, True, note)
        for name, value, goal, note in ratios(run.get("small", []))
    ]
    nan = float("nan")
    one = next((s for s in run.get("saturation", []) if s["workers"] == 1), None)
    limits = (
        ("healthz", "/healthz p99", 0.020),
        ("readyz", "/readyz p99", 0.050),
        ("download_first_byte", "first byte of a new 4 KiB download p99", 0.100),
    )
    clients = one["clients"] if one else 256
    for kind, label, goal in limits:
        value = one["probes"][kind]["p99"] if one else nan
        note = ""
        if one:
            p = one["probes"][kind]
            note = f"p50 {p['p50'] * 1e3:.1f} ms, max {p['max'] * 1e3:.1f} ms, n={p['n']:.0f}"
        out.append(
            _target(f"{clients} clients at full speed: {label} (s)", value, goal, False, note)
        )
    out.append(before_target(run))
    return out


def _remote_median(remote: dict[str, Any], group: str, case: str) -> float:
    for row in remote.get("medians", []):
        if (row["group"], row["case"]) == (group, case):
            value: float = row["mb_per_s"]
            return value
    return float("nan")


def _remote_cpu(remote: dict[str, Any], group: str, case: str) -> float:
    for row in remote.get("medians", []):
        if (row["group"], row["case"]) == (group, case) and row["cpu_s_per_gib"] is not None:
            value: float = row["cpu_s_per_gib"]
            return value
    return float("nan")


def _short(ratio: float, goal: float) -> str:
    """For a missed ratio: by how much, as the start of its note."""
    if ratio != ratio or ratio >= goal:
        return ""
    return f"short by {(1 - ratio / goal) * 100:.0f}%; "


def sweep_markdown(remote: dict[str, Any]) -> list[str]:
    """The read-ahead ceiling's sweep (bench/remote.py `_sweep`): one row per ceiling."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for row in remote.get("medians", []):
        if row["group"] == "s3 read-ahead":
            ceiling, _, clients = row["case"].partition(", ")
            rows.setdefault(ceiling, {})[clients] = row
    if not rows:
        return []
    columns = sorted({c for by in rows.values() for c in by}, key=lambda c: int(c.split()[0]))
    lines = [
        "",
        "### Read-ahead ceiling (STREAMER_READAHEAD_BYTES), shaped S3",
        "",
        "A fresh streamer per ceiling; clients download the whole object at full speed at"
        " once. Cells: aggregate MB/s, median (CPU s/GiB).",
        "",
        "| ceiling | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for ceiling, by in sorted(rows.items(), key=lambda item: int(item[0].split()[1])):
        cells = []
        for column in columns:
            row = by.get(column)
            cells.append(
                "-" if row is None else f"{row['mb_per_s']:.0f} ({row['cpu_s_per_gib'] or 0:.2f})"
            )
        lines.append(f"| {ceiling.removeprefix('read-ahead ')} | " + " | ".join(cells) + " |")
    return lines


def remote_targets(remote: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets on the shaped stores (bench/remote.py), ratios within the run."""
    out = []
    at = f" ({size_name(remote['size'])}, shaped)"
    streamer = _remote_median(remote, "s3", "streamer")
    transfer = _remote_median(remote, "s3", "boto3 download_fileobj")
    one = _remote_median(remote, "s3", "one streamed GET (boto3)")
    raw_streamer = _remote_median(remote, "s3 unshaped", "streamer")
    raw_transfer = _remote_median(remote, "s3 unshaped", "boto3 download_fileobj")
    moto = _remote_median(remote, "moto direct", "boto3 download_fileobj")
    cpu = _remote_cpu(remote, "s3", "streamer")
    gcs_cpu = _remote_cpu(remote, "gcs", "streamer")
    # What limits a miss, measured in the same run: the proxy and the emulator unshaped,
    # and streamer's CPU per GiB (the machine's cores are shared with moto and the proxy).
    ceiling = (
        f"shaped: streamer {streamer:.0f} MB/s, download_fileobj {transfer:.0f}, one GET"
        f" {one:.0f}; ceilings: proxy unshaped streamer {raw_streamer:.0f}, download_fileobj"
        f" {raw_transfer:.0f}, moto direct download_fileobj {moto:.0f} MB/s; streamer CPU"
        f" {cpu:.2f} s/GiB on S3, {gcs_cpu:.2f} on GCS"
    )
    ratio = streamer / transfer
    out.append(
        _target(
            "S3: streamer >= 0.8x boto3 download_fileobj" + at,
            ratio,
            0.8,
            True,
            _short(ratio, 0.8) + ceiling,
        )
    )
    ratio = streamer / one
    out.append(
        _target(
            "S3: streamer >= 4x one streamed GET" + at,
            ratio,
            4.0,
            True,
            _short(ratio, 4.0) + f"streamer {streamer:.0f} MB/s, one GET {one:.0f} MB/s",
        )
    )
    gcs = _remote_median(remote, "gcs", "streamer")
    gcs_one = _remote_median(remote, "gcs", "one streamed GET")
    ratio = gcs / gcs_one
    out.append(
        _target(
            "GCS: streamer >= 4x one streamed GET" + at,
            ratio,
            4.0,
            True,
            _short(ratio, 4.0)
            + f"streamer {gcs:.0f} MB/s, one GET {gcs_one:.0f} MB/s; streamer CPU"
            f" {gcs_cpu:.2f} s/GiB",
        )
    )
    for name, store in (("load", "S3"), ("load_gcs", "GCS")):
        load = remote.get(name)
        if load:
            out += _load_targets(store, load, remote)
    for kind, got in remote.get("range", {}).items():
        out.append(
            _target(
                f"{kind.upper()}: bytes from the store for a 16 KiB range (MiB, at the proxy)",
                got["store_bytes"] / MIB,
                1.0,
                False,
                f"{got['store_requests']} requests; status {got['status']},"
                f" {got['body_bytes']} bytes sent",
            )
        )
    out.append(_target("shaped runs: zero errors", float(len(remote["errors"])), 0.0, False))
    return out


def _load_targets(store: str, load: dict[str, Any], remote: dict[str, Any]) -> list[dict[str, Any]]:
    """Slow clients on one store: memory, a first byte for every client, errors."""
    out = []
    n, rate = load["concurrency"], load["rate_bytes_per_s"]
    per_stream = 4  # MiB: STREAMER_BUFFER_CHUNKS x STREAMER_CHUNK_SIZE at their defaults
    bound = load["idle_rss_mib"] + n * per_stream + 32
    out.append(
        _target(
            f"{store}, {n} clients at {rate / 1e6:g} MB/s: peak RSS (MiB) <= idle + {n} x"
            f" {per_stream} MiB + 32",
            load["server"]["rss_peak_mib"],
            bound,
            False,
            f"idle {load['idle_rss_mib']:.0f} MiB; {load['store_connections']} store connections",
        )
    )
    ttfb = load["ttfb_s"]
    served = int(ttfb["n"])  # first bytes: no client finishes its log in the run
    out.append(
        _target(
            f"{store}, {n} clients: every one served from the start (max TTFB, s)",
            ttfb["max"] if served >= n else load["duration_s"],  # some never started
            1.0,
            False,
            f"{served} of {n} clients got a first byte in {load['duration_s']:.0f} s"
            f" (TTFB p50 {_ms(ttfb['p50'])}, max {_ms(ttfb['max'])}); "
            + _herd_ceilings(load, remote),
        )
    )
    out.append(_target(f"{store}, {n} clients: zero errors", float(load["errors"]), 0.0, False))
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def _herd_ceilings(load: dict[str, Any], remote: dict[str, Any]) -> str:
    """The herd's ceilings measured in the same run, and the store requests per download."""
    parts = []
    local = remote.get("herd_local")
    if local:
        t = local["ttfb_s"]
        parts.append(
            f"ceilings in this run: the same herd on a local store, no store requests, p50"
            f" {_ms(t['p50'])}, max {_ms(t['max'])}"
        )
    direct = load.get("herd_direct")
    if direct:
        t = direct["ttfb_s"]
        parts.append(
            f"the store alone, {direct['clients']} downloads' first requests (metadata, then"
            f" the first part's GET) made at once through the proxy: first byte p50"
            f" {_ms(t['p50'])}, max {_ms(t['max'])}"
            f" ({direct['store_requests'] / max(1, direct['clients']):.2f} requests each)"
        )
    filled = load.get("herd_direct_fill")
    if filled:
        t = filled["ttfb_s"]
        parts.append(
            f"the same with each part's first 8 MiB read at once (what the clients' socket"
            f" buffers take at the start): p50 {_ms(t['p50'])}, max {_ms(t['max'])}"
        )
    if "healthz_s" in load:
        t = load["healthz_s"]
        parts.append(
            f"streamer's event loop: /healthz answered in p50 {_ms(t['p50'])}, max"
            f" {_ms(t['max'])} during the herd"
        )
    if "client_cpu_s" in load:
        parts.append(
            f"the clients' process used {load['client_cpu_s']:.1f} CPU s in"
            f" {load['duration_s']:.0f} s"
        )
    if "store_peak_connections" in load:
        parts.append(
            f"store connections: {load['store_peak_connections']} open at once at most,"
            f" {load['store_connections']} opened (the pool is sized from STREAMER_MAX_STREAMS;"
            " moto closes a connection after each response, so a download between two"
            " requests holds none for a moment)"
        )
    if "store_requests_per_download" in load:
        parts.append(
            f"streamer: {load['store_requests_per_download']:.2f} store requests per download"
            " in the run (concurrent lookups of the log share one request, each part one GET)"
        )
    if direct and load["ttfb_s"]["max"] > 1.0 and direct["ttfb_s"]["max"] > 1.0:
        parts.append(
            "the 1 s goal is beyond the store alone here: the emulator behind the proxy on"
            " this 2-core machine answers these first requests no faster"
        )
    if "moto_requests_per_s" in remote and load is remote.get("load"):
        parts.append(f"moto answers {remote['moto_requests_per_s']:.0f} requests/s one at a time")
    return "; ".join(parts)


def remote_markdown(remote: dict[str, Any]) -> str:
    """The shaped-store section: the targets, then every case's median."""
    shaping = remote.get("shaping", {})
    lines = [
        f"## Production-shaped stores ({size_name(remote['size'])})",
        "",
        f"The shaping proxy at its defaults: {shaping.get('latency_s', 0) * 1e3:g} ms to the"
        f" first byte of each request, {shaping.get('bandwidth', 0) / 1e6:g} MB/s per"
        " connection; streamer at its defaults. Cells: median MB/s (runs).",
        "",
        "| target | measured | goal | verdict | note |",
        "|---|---|---|---|---|",
    ]
    for goal in remote_targets(remote):
        lines.append(
            f"| {goal['target']} | {goal['value']:.3g} |"
            f" {'>=' if goal['higher_is_better'] else '<='} {goal['goal']:.3g} |"
            f" **{goal['verdict']}** | {goal['note']} |"
        )
    lines += ["", "| group | case | MB/s | runs | CPU s/GiB |", "|---|---|---|---|---|"]
    for row in remote.get("medians", []):
        lines.append(
            f"| {row['group']} | {row['case']} | {row['mb_per_s']:.0f} |"
            f" {', '.join(f'{v:.0f}' for v in row['mb_per_s_runs'])} |"
            f" {'-' if row['cpu_s_per_gib'] is None else format(row['cpu_s_per_gib'], '.2f')} |"
        )
    lines += sweep_markdown(remote)
    if remote["errors"]:
        lines += ["", "Errors:", *(f"- {error}" for error in remote["errors"])]
    return "\n".join(lines) + "\n"


def catalog_targets(catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """The catalog's targets (bench.catalog_s3): not measured gives n/a rows."""
    nan = float("nan")
    runs = catalog.get("runs", 2000)
    steady, before, cold = (catalog.get(k, {}) for k in ("steady", "baseline", "cold"))
    ttl = catalog.get("ttl_s", nan)
    seen = steady.get("change_seen_s", [])
    unseen = steady.get("changes_unseen", 0)
    note = ""
    store = catalog.get("store", {})
    limits = (
        f"; the store alone (boto3 through the proxy): a HEAD {store['head_alone_s'] * 1e3:.0f} ms,"
        f" {store['head_during_listing_s'] * 1e3:.0f} ms (max"
        f" {store['head_during_listing_max_s'] * 1e3:.0f} ms) while the runs are listed, the"
        f" listing {store['listing_s']:.2f} s"
        if store
        else ""
    )
    listing = steady.get("alone", {}).get("listing_loop_lag")
    if listing:
        limits += (
            f"; the loop's longest stall while listing: {listing['off the loop']['max_ms']:.0f} ms"
            f" off the loop, {listing['on the loop']['max_ms']:.0f} ms on it"
        )
    lag = steady.get("loop_lag", {})
    if lag:
        limits += f"; the event loop blocked at most {lag['max_ms']:.0f} ms" + (
            f" (the garbage collector's longest pause {lag['gc_max_ms']:.0f} ms)"
            if "gc_max_ms" in lag
            else ""
        )
    if steady and before:
        note = (
            f"{steady['count']} resolutions, TTL {ttl:g} s, p50 {steady['p50_s'] * 1e3:.1f} ms;"
            f" re-reading every run.json on expiry (before): p99 {before['p99_s'] * 1e3:.0f} ms,"
            f" {before['p99_s'] / steady['p99_s']:.0f}x" + limits
        )
    note_cold = ""
    if cold:
        note_cold = f"cold resolution {cold['seconds']:.2f} s (median of {cold['repeat']})"
    return [
        _target(
            f"catalog, {runs} runs on shaped S3, TTL {ttl:g} s: default run p99 across TTL"
            " expiries (ms)",
            steady.get("p99_s", nan) * 1e3,
            100.0,
            False,
            note,
        ),
        _target(
            "catalog: a changed run.json seen within 2 TTLs (worst, in TTLs)",
            # A change never seen counts as infinitely late.
            float("inf") if unseen else max(seen) / ttl if seen else nan,
            2.0,
            False,
            f"{len(seen)} changes, seen after {', '.join(f'{x:.2f}' for x in seen)} s"
            + (f"; {unseen} never seen" if unseen else "")
            + limits
            if steady
            else "",
        ),
        _target(
            "catalog: cold resolution requests <= 1 listing page per 1,000 keys + 1 per"
            " run.json + model.json + HEAD",
            cold.get("requests", nan),
            cold.get("budget", nan),
            False,
            note_cold,
        ),
    ]


def _fmt_ms(value: float) -> str:
    return f"{value * 1e3:.2f}"


def _cell(row: dict[str, Any], metric: str, scale: float = 1.0, digits: int = 0) -> str:
    if metric not in row:
        return "-"
    s = row[metric]
    return (
        f"{s['median'] * scale:.{digits}f} ({s['min'] * scale:.{digits}f}-"
        f"{s['max'] * scale:.{digits}f})"
    )


def defaults_text(run: dict[str, Any]) -> str:
    """Why the defaults, from the sweep: what the fastest setting would buy and cost."""
    settings = run["settings"]
    chosen = next(
        (
            t
            for t in run["tuning"]
            if (t["chunk_size"], t["buffer_chunks"])
            == (settings["chunk_size"], settings["buffer_chunks"])
        ),
        None,
    )
    if chosen is None:
        return "The defaults were not among the settings swept."

    def per_client(t: dict[str, Any]) -> float:
        growth: float = t["slow_rss_growth_mib"] / t["slow_clients"]
        return growth

    def txt(t: dict[str, Any]) -> float:
        value: float = t["txt_mb_per_s"]["median"]
        return value

    fastest = max(run["tuning"], key=txt)
    name = f"{fastest['chunk_size'] >> 10} KiB x {fastest['buffer_chunks']}"
    text = (
        f"Defaults: {settings['chunk_size'] >> 10} KiB x {settings['buffer_chunks']}. The"
        f" fastest txt setting of this sweep, {name}, is {txt(fastest) / txt(chosen) - 1:+.0%}"
        f" on one client and costs {per_client(fastest):.1f} MiB per slow client against"
        f" {per_client(chosen):.1f}: the memory bound under many slow clients (the 256-client"
        " target) decides."
    )
    smaller = [t for t in run["tuning"] if t["chunk_size"] < chosen["chunk_size"]]
    if smaller:
        best = max(smaller, key=txt)
        text += (
            f" Smaller chunks save memory but lose txt speed: at best {best['chunk_size'] >> 10}"
            f" KiB x {best['buffer_chunks']}, {txt(best) / txt(chosen) - 1:+.0%}."
        )
    return text


def markdown(run: dict[str, Any], rows: list[dict[str, Any]], goals: list[dict[str, Any]]) -> str:
    lines = [
        f"# streamer benchmark, {run['started']}",
        "",
        f"Machine: {run['machine']['cpus']} CPUs ({run['machine']['cpu']}), Python"
        f" {run['machine']['python']}, load average at start"
        f" {', '.join(f'{x:.2f}' for x in run['machine']['load_avg_at_start'])} (shared machine:"
        " compare ratios within this run, not absolutes).",
        f"streamer settings: STREAMER_CHUNK_SIZE={run['settings']['chunk_size']},"
        f" STREAMER_BUFFER_CHUNKS={run['settings']['buffer_chunks']}."
        f" Each case ran {run['options']['repeats']} times in alternation with the others of"
        " its size; cells are median (min-max). Client: bench/client.py (raw socket).",
        "",
        "## Targets",
        "",
        "| target | measured | goal | verdict | note |",
        "|---|---|---|---|---|",
    ]
    for goal in goals:
        lines.append(
            f"| {goal['target']} | {goal['value']:.3g} |"
            f" {'>=' if goal['higher_is_better'] else '<='} {goal['goal']:.3g} |"
            f" **{goal['verdict']}** | {goal['note']} |"
        )
    missed = [goal for goal in goals if goal["verdict"] == "fail"]
    if missed:
        lines += ["", "Missed, by how much (what limits each: the note above, the profiles below,"]
        lines += ["and README.md, 'What limits what'):", ""]
        for goal in missed:
            short = abs(goal["value"] - goal["goal"]) / goal["goal"] if goal["goal"] else 1.0
            lines.append(
                f"- {goal['target']}: {goal['value']:.3g} against {goal['goal']:.3g},"
                f" short by {short:.0%}"
            )
    lines += [
        "",
        "## Single downloads",
        "",
        "MB/s is of the log's bytes (json: input, so both json rows compare like for like);"
        " out MB/s is what went over the wire.",
        "",
        "| group | case | size | MB/s | out MB/s | TTFB ms | gap p50 ms | gap p99 ms |"
        " gap max ms | CPU s/GiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"txt": 0, "json": 1, "s3": 2}
    for row in sorted(rows, key=lambda r: (order.get(r["group"], 9), r["size"])):
        lines.append(
            f"| {row['group']} | {row['case']} | {size_name(row['size'])} |"
            f" {_cell(row, 'mb_per_s')} | {_cell(row, 'out_mb_per_s')} |"
            f" {_cell(row, 'ttfb_s', 1e3, 2)} | {_cell(row, 'gap_p50_s', 1e3, 3)} |"
            f" {_cell(row, 'gap_p99_s', 1e3, 2)} | {_cell(row, 'gap_max_s', 1e3, 1)} |"
            f" {_cell(row, 'cpu_s_per_gib', 1, 2)} | {_cell(row, 'peak_rss_mib', 1, 0)} |"
        )
    for name, reason in run["skipped"].items():
        lines.append(f"| - | {name} | - | {reason} | | | | | | | |")
    if run.get("ttfb_probe"):
        lines += [
            "",
            "TTFB alone (streamer txt, headers then close; 30 rounds, the sizes shuffled), ms:",
            "",
            "| size | median | min | max |",
            "|---|---|---|---|",
        ]
        for size, s in sorted(run["ttfb_probe"].items(), key=lambda item: int(item[0])):
            lines.append(
                f"| {size_name(int(size))} | {s['median'] * 1e3:.2f} | {s['min'] * 1e3:.2f}"
                f" | {s['max'] * 1e3:.2f} |"
            )
    if run["identical_output"]:
        lines += ["", "json output identical (sha256 of both bodies):"]
        lines += [
            f"- {name}: {'yes' if ok else 'NO'}" for name, ok in run["identical_output"].items()
        ]
    lines += [
        "",
        "## Concurrency (streamer, txt)",
        "",
        "| clients | per-client rate | aggregate MB/s | fairness slowest/fastest | downloads |"
        " errors | TTFB p50/p99 ms | gap p99 ms | CPU s/GiB | idle RSS MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in run["concurrency"]:
        rate = f"{c['rate_bytes_per_s'] / 1e6:g} MB/s" if c["rate_bytes_per_s"] else "full"
        lines.append(
            f"| {c['concurrency']} | {rate} | {c['mb_per_s']:.0f} | {c['fairness']:.2f} |"
            f" {c['completed']} | {c['errors']} | {_fmt_ms(c['ttfb_s']['p50'])}/"
            f"{_fmt_ms(c['ttfb_s']['p99'])} | {_fmt_ms(c['gap_s']['p99'])} |"
            f" {c['server']['cpu_s_per_gib']:.2f} | {c['idle_rss_mib']:.0f} |"
            f" {c['server']['rss_peak_mib']:.0f} |"
        )
    lines += _responsiveness_lines(run)
    if run["tuning"]:
        lines += [
            "",
            "## Chunk size and read-ahead sweep (streamer, one client)",
            "",
            "| STREAMER_CHUNK_SIZE | STREAMER_BUFFER_CHUNKS | txt MB/s | json MB/s (input) |"
            " bound per stream MiB | RSS growth MiB, slow clients | per slow client MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in run["tuning"]:
            lines.append(
                f"| {t['chunk_size'] >> 10} KiB | {t['buffer_chunks']} |"
                f" {_cell(t, 'txt_mb_per_s')} | {_cell(t, 'json_mb_per_s')} |"
                f" {t['chunk_size'] * t['buffer_chunks'] / MIB:g} |"
                f" {t['slow_rss_growth_mib']:.0f} ({t['slow_clients']} at 1 MB/s) |"
                f" {t['slow_rss_growth_mib'] / t['slow_clients']:.2f} |"
            )
        lines += ["", defaults_text(run)]
    if run.get("remote"):
        lines += ["", remote_markdown(run["remote"])]
    if run["profiles"]:
        lines += ["", "## Where the server's time goes (py-spy, share of samples on top)", ""]
        for fmt, frames in run["profiles"].items():
            lines += [f"{fmt}:", ""]
            lines += [f"- {share:.1%} {name}" for name, share in frames]
            lines.append("")
    lines += catalog_lines(run.get("catalog") or {})
    if run["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in run["errors"]]
    plotted = "plots" not in run["skipped"]
    lines += ["", "Plots: throughput.png, gaps.png, rss.png." if plotted else "No plots.", ""]
    return "\n".join(lines)


def _responsiveness_lines(run: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    rates = small_rates(run)
    if rates:
        clients = run["small"][0]["clients"]
        lines += [
            "",
            f"## Small logs: requests per second (4 KiB, {clients} clients, a connection each)",
            "",
            "streamer with auth, metrics and the access log on, as served; the bare ASGI"
            " callable on the same uvicorn stack (one read, one body) is the ceiling.",
            "",
            "| case | requests/s | x bare ASGI 200 | TTFB p50 ms (last run) |",
            "|---|---|---|---|",
        ]
        ceiling = rates.get(BARE, {}).get("median", float("nan"))
        last = {row["case"]: row for row in run["small"]}
        for case, s in rates.items():
            lines.append(
                f"| {case} | {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}) |"
                f" {s['median'] / ceiling:.2f} | {last[case]['ttfb_p50_s'] * 1e3:.2f} |"
            )
    if run.get("saturation"):
        lines += [
            "",
            "## Probes under load (streamer, txt, every client at full speed)",
            "",
            "| workers | clients | aggregate MB/s | /healthz p50/p99/max ms |"
            " /readyz p50/p99/max ms | new 4 KiB first byte p50/p99/max ms | probes |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in run["saturation"]:
            cells = [
                "/".join(f"{s['probes'][kind][q] * 1e3:.1f}" for q in ("p50", "p99", "max"))
                for kind in ("healthz", "readyz", "download_first_byte")
            ]
            lines.append(
                f"| {s['workers']} | {s['clients']} | {s['load_mb_per_s']:.0f} |"
                f" {' | '.join(cells)} | {s['probes']['healthz']['n']:.0f} each |"
            )
    before = run.get("before") or {}
    if before.get("rounds"):
        clients = before["rounds"][0]["clients"]
        lines += [
            "",
            f"## Full speed against the code before ({clients} clients, same run)",
            "",
            f"This streamer and revision {before['commit'][:7]} (`{before['revision']}`: before"
            " the per-request and saturation work), served with the same interpreter and"
            " settings, a fresh server per load, in turn. Aggregate MB/s:",
            "",
            "| case | median | min | max | CPU s/GiB (median) |",
            "|---|---|---|---|---|",
        ]
        for case, s in before_rates(run).items():
            cpu = statistics.median(
                r["cpu_s_per_gib"] for r in before["rounds"] if r["case"] == case
            )
            label = "this streamer" if case == "streamer" else f"revision {before['commit'][:7]}"
            lines.append(
                f"| {label} | {s['median']:.0f} | {s['min']:.0f} | {s['max']:.0f} | {cpu:.2f} |"
            )
    return lines


def catalog_lines(catalog: dict[str, Any]) -> list[str]:
    if not catalog:
        return []
    nan = float("nan")
    proxy, cold = catalog["proxy"], catalog["cold"]
    lines = [
        "",
        f"## Catalog: a model with {catalog['runs']} runs on S3 (bench.catalog_s3)",
        "",
        f"moto behind the shaping proxy ({proxy['latency_s'] * 1e3:g} ms per request,"
        f" {proxy['bandwidth'] / 1e6:g} MB/s per connection); {catalog['keys_below_runs']}"
        f" keys below runs/. Cold resolution: {cold['seconds']:.2f} s,"
        f" {cold['requests']:.0f} requests at the proxy (budget {cold['budget']}). Default-run"
        f" resolutions at {catalog['rate_per_s']:g}/s with TTL {catalog['ttl_s']:g} s:",
        "",
        "| catalog | resolutions | p50 ms | p99 ms | max ms | loop lag p99 ms | loop lag max ms"
        " | longest GC pause ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key in (
        ("stale-while-revalidate, versioned listing off the loop", "steady"),
        ("re-read every run.json on expiry (before)", "baseline"),
    ):
        r = catalog[key]
        lag = r.get("loop_lag", {})
        lines.append(
            f"| {name} | {r['count']} | {r['p50_s'] * 1e3:.1f} | {r['p99_s'] * 1e3:.1f} |"
            f" {r['max_s'] * 1e3:.1f} | {lag.get('p99_ms', nan):.1f} |"
            f" {lag.get('max_ms', nan):.1f} | {lag.get('gc_max_ms', nan):.1f} |"
        )
    seen = catalog["steady"]["change_seen_s"]
    lines += [
        "",
        f"A run.json changed every {catalog.get('change_every_s', nan):g} s: seen after"
        f" {', '.join(f'{x:.2f}' for x in seen) or 'never'} s"
        f" ({catalog['steady']['changes_unseen']} never seen).",
    ]
    listing = catalog["steady"].get("alone", {}).get("listing_loop_lag")
    if listing:
        off, on = listing["off the loop"], listing["on the loop"]
        lines += [
            "",
            "The event loop's lag while the runs are listed alone (worse of two listings each):"
            f" off the loop, as the catalog lists, p99 {off['p99_ms']:.1f} ms, max"
            f" {off['max_ms']:.1f} ms; on the loop through the store's own client, as it listed"
            f" before, p99 {on['p99_ms']:.1f} ms, max {on['max_ms']:.1f} ms (the garbage"
            f" collector's longest pause {off['gc_max_ms']:.1f} and {on['gc_max_ms']:.1f} ms).",
        ]
    store = catalog.get("store")
    if store:
        lines += [
            "",
            "The store alone (boto3 straight through the proxy, no streamer): a HEAD"
            f" {store['head_alone_s'] * 1e3:.1f} ms; while the runs are listed"
            f" {store['head_during_listing_s'] * 1e3:.1f} ms (max"
            f" {store['head_during_listing_max_s'] * 1e3:.1f} ms); the listing of"
            f" {catalog['keys_below_runs']} keys {store['listing_s']:.2f} s. Each resolution"
            " makes one HEAD (the log's), so these bound its latency from below.",
        ]
        parse = store.get("page_parse")
        if parse:
            lines[-1] += (
                " botocore parses a page of 1,000 keys in"
                f" {parse['timestamps_parsed_s'] * 1e3:.0f} ms of CPU,"
                f" {parse['timestamps_unparsed_s'] * 1e3:.0f} ms with timestamps left unparsed"
                " (as the catalog's listing does, off the loop)."
            )
    return lines


def plots_skipped(wanted: bool) -> str | None:
    """Why no plots are drawn (the report says it), or None when they are."""
    if not wanted:
        return "skipped: --no-plots"
    if importlib.util.find_spec("matplotlib") is None:
        return "skipped: matplotlib not installed (the bench extra)"
    return None


def plots(
    run: dict[str, Any], rows: list[dict[str, Any]], gaps: dict[str, list[float]], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    plot_throughput(rows, out)
    plot_gaps_and_rss(run, gaps, out)


def plot_throughput(rows: list[dict[str, Any]], out: Path) -> None:
    """Throughput vs the baselines, per group and size."""
    import matplotlib.pyplot as plt

    bars = [r for r in rows if "mb_per_s" in r]
    bars.sort(key=lambda r: ({"txt": 0, "json": 1, "s3": 2}.get(r["group"], 9), r["size"]))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.22 * len(bars)), dpi=80)
    labels = [f"{r['group']} {size_name(r['size'])}: {r['case'][:26]}" for r in bars]
    values = [r["mb_per_s"]["median"] for r in bars]
    lows = [r["mb_per_s"]["median"] - r["mb_per_s"]["min"] for r in bars]
    highs = [r["mb_per_s"]["max"] - r["mb_per_s"]["median"] for r in bars]
    colors = ["tab:blue" if r["case"] == "streamer" else "tab:gray" for r in bars]
    ax.barh(range(len(bars)), values, xerr=[lows, highs], color=colors)
    ax.set_yticks(range(len(bars)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("MB/s of log bytes (median, min-max); blue: streamer")
    ax.set_title("streamer vs baselines")
    fig.tight_layout()
    fig.savefig(out / "throughput.png")
    plt.close(fig)


def plot_gaps_and_rss(run: dict[str, Any], gaps: dict[str, list[float]], out: Path) -> None:
    import matplotlib.pyplot as plt

    # Chunk-gap distribution at the client, largest txt size (none when no txt case ran).
    largest = max(run["options"]["sizes"], default=0)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=80)
    for key, values_ in sorted(gaps.items()):
        group, case, size = key.split("/")
        if group != "txt" or int(size) != largest or not values_:
            continue
        ordered = sorted(values_)
        step = max(1, len(ordered) // 2000)
        xs = [v * 1e3 for v in ordered[::step]]
        ys = [i * step / len(ordered) for i in range(len(xs))]
        ax.plot(xs, ys, label=case)
    ax.set_xscale("log")
    ax.set_xlabel("gap between reads at the client, ms (log)")
    ax.set_ylabel("fraction of reads")
    ax.set_title(f"chunk gaps, txt {size_name(largest)}" if largest else "no txt case ran")
    if ax.get_lines():
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gaps.png")
    plt.close(fig)

    # Server RSS over time under load.
    fig, ax = plt.subplots(figsize=(7, 4), dpi=80)
    for c in run["concurrency"]:
        samples = c["server"]["rss_over_time"]
        if not samples:
            continue
        rate = "1 MB/s" if c["rate_bytes_per_s"] else "full"
        ax.plot(
            [t for t, _ in samples], [m for _, m in samples], label=f"{c['concurrency']} {rate}"
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("streamer RSS, MiB")
    ax.set_title("server RSS under load")
    if ax.get_lines():
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "rss.png")
    plt.close(fig)


def write_report(run_obj: Any, out: Path) -> None:
    """Write results.json, report.md and the PNGs of `run_obj` (a harness.Run) into `out`."""
    gaps: dict[str, list[float]] = run_obj.gaps
    run = {k: v for k, v in vars(run_obj).items() if k != "gaps"}
    run = orjson.loads(orjson.dumps(run))
    unplotted = plots_skipped(run["options"].get("plots", True))
    if unplotted:
        run["skipped"]["plots"] = unplotted
    rows = medians(run["cases"])
    goals = targets(run, rows)
    document = {**run, "medians": rows, "targets": goals}
    (out / "results.json").write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    (out / "report.md").write_text(markdown(run, rows, goals))
    if not unplotted:
        plots(run, rows, gaps, out)


def main() -> None:
    """`python -m bench.report DIR`: the targets in DIR/results.json and DIR/report.md
    again from the figures (after a change to the report itself; the plots need the raw
    gaps of a new run)."""
    import sys

    out = Path(sys.argv[1])
    document = orjson.loads((out / "results.json").read_bytes())
    rows = document["medians"]
    document["targets"] = targets(document, rows)
    (out / "results.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    (out / "report.md").write_text(markdown(document, rows, document["targets"]))


if __name__ == "__main__":
    main()
