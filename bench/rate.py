"""Requests per second of a small log: streamer against the least an ASGI app can do.

    python -m bench.rate [--duration 10] [--repeats 3] [--clients 16] [--json]

- The ceiling is the bare ASGI callable (bench/baselines.py `bare_app`) on the same
  uvicorn stack as streamer (httptools, uvloop, no access log, no server header): one
  read and one body per 200, one stat per 304. A router, a framework or a second read
  in the ceiling would flatter streamer.
- Every case is measured in the same run and the cases take turns, `repeats` rounds, so
  the machine's noise falls on all alike; the figures are medians with min and max.
- A case is `clients` raw-socket clients (bench.load), a new connection per request, on
  a 4 KiB log: streamer as served (auth, metrics and the access log on), streamer's 304
  to `If-None-Match`, the bare callable's 200 and 304, and nginx when one is given.
- Targets (RATIOS): streamer's 200 >= 0.5x the bare 200, streamer's 304 >= 0.6x the bare
  304. The harness (`python -m bench`) runs the same cases and reports the same targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .baselines import BARE, BARE_304
from .client import fetch
from .load import run_load_sync
from .logs import MODEL, run_id, seed_store
from .stats import spread

SMALL = 4096  # the small log of the request-rate and probe cases
STREAMER = "streamer"
STREAMER_304 = "streamer, If-None-Match (304)"
NGINX = "nginx"
# (target, case, ceiling, goal): the case's median over the ceiling's must reach goal.
RATIOS = (
    ("4 KiB log, 16 clients: requests/s >= 0.5x the bare ASGI callable", STREAMER, BARE, 0.5),
    (
        "If-None-Match revalidations (304): requests/s >= 0.6x the bare ASGI callable's 304",
        STREAMER_304,
        BARE_304,
        0.6,
    ),
)

Case = tuple[str, str, str | None, dict[str, str]]  # name, url, token, request headers


def small_key() -> str:
    return f"models/{MODEL}/runs/{run_id(SMALL)}/training.log"


def _etag(url: str, token: str | None) -> str:
    return fetch(url, token, first_bytes_only=True).headers.get("etag", "")


def small_cases(streamer_url: str, bare_url: str, token: str, nginx_url: str | None) -> list[Case]:
    """The cases of one run; each 304 case sends the ETag its own server gave."""
    bare = f"{bare_url}/{small_key()}"
    cases: list[Case] = [
        (STREAMER, streamer_url, token, {}),
        (STREAMER_304, streamer_url, token, {"If-None-Match": _etag(streamer_url, token)}),
        (BARE, bare, None, {}),
        (BARE_304, bare, None, {"If-None-Match": _etag(bare, None)}),
    ]
    if nginx_url is not None:
        cases.append((NGINX, f"{nginx_url}/{small_key()}", None, {}))
    return cases


def measure(cases: list[Case], clients: int, duration: float, repeats: int) -> list[dict[str, Any]]:
    """One row per case and round, the cases in turn after a short warm-up of each
    (imports, caches, the page cache)."""
    for _, url, token, headers in cases:
        run_load_sync(url, token, clients, 0.3, headers=headers)
    rows = []
    for repeat in range(repeats):
        for name, url, token, headers in cases:
            result = run_load_sync(url, token, clients, duration, headers=headers)
            rows.append(
                {
                    "case": name,
                    "repeat": repeat,
                    "clients": clients,
                    "requests_per_s": result["requests_per_s"],
                    "ttfb_p50_s": result["ttfb_s"]["p50"],
                    "ttfb_p99_s": result["ttfb_s"]["p99"],
                    "errors": result["errors"],
                }
            )
    return rows


def rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Requests per second of each case: median, min and max over the rounds."""
    grouped: dict[str, list[float]] = {}
    for row in rows:
        grouped.setdefault(row["case"], []).append(row["requests_per_s"])
    return {case: spread(values) for case, values in grouped.items()}


def ratios(rows: list[dict[str, Any]]) -> list[tuple[str, float, float, str]]:
    """(target, ratio, goal, note) of each of RATIOS; nan when a case was not measured."""
    medians = {case: s["median"] for case, s in rates(rows).items()}
    nan = float("nan")
    out = []
    for target, case, ceiling, goal in RATIOS:
        mine, theirs = medians.get(case, nan), medians.get(ceiling, nan)
        note = f"{case} {mine:.0f}/s; {ceiling} {theirs:.0f}/s"
        if NGINX in medians:
            note += f"; nginx {medians[NGINX]:.0f}/s"
        out.append((target, mine / theirs, goal, note))
    return out


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| case | requests/s median (min-max) | TTFB p50 ms (last round) | errors |"]
    lines.append("|---|---|---|---|")
    last = {row["case"]: row for row in rows}
    for case, s in rates(rows).items():
        errors = sum(row["errors"] for row in rows if row["case"] == case)
        lines.append(
            f"| {case} | {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}) |"
            f" {last[case]['ttfb_p50_s'] * 1e3:.2f} | {errors} |"
        )
    lines.append("")
    for target, ratio, goal, note in ratios(rows):
        verdict = "n/a" if ratio != ratio else ("pass" if ratio >= goal else "fail")
        lines.append(f"- {target}: {ratio:.2f}x, {verdict} ({note})")
    return lines


def main(argv: list[str] | None = None) -> int:
    from streamer.auth import issue_token

    from . import servers
    from .harness import SECRET, download_url
    from .logs import ORG

    parser = argparse.ArgumentParser(prog="python -m bench.rate")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per case and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every case")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--nginx", action="store_true", help="nginx beside, when installed")
    parser.add_argument("--json", action="store_true", help="the rows as JSON, not a table")
    args = parser.parse_args(argv)
    token = issue_token(SECRET, "bench", ORG, ["model:read"], ttl_s=24 * 3600)
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as scratch:
        root, logs = Path(scratch) / "store", Path(scratch)
        seed_store(root, [SMALL])
        binary = servers.nginx_binary() if args.nginx else None
        with (
            servers.streamer(str(root), SECRET, logs / "streamer.log") as streamer,
            servers.baselines(root, logs / "bare.log", bare=True) as bare,
        ):
            nginx = (
                servers.nginx(binary, root, logs / "nginx", logs / "nginx.log") if binary else None
            )
            try:
                url = download_url(streamer.url, SMALL, "txt")
                cases = small_cases(url, bare.url, token, nginx.url if nginx else None)
                rows = measure(cases, args.clients, args.duration, args.repeats)
            finally:
                if nginx is not None:
                    nginx.stop()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print("\n".join(table(rows)))
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
