"""The benchmark harness runs end to end on tiny artifacts and reports every figure.

Behaviour only: which figures exist, that the json outputs matched, that nothing failed.
Never a timing: the numbers belong to `make bench`, not to the test suite. The harness runs
as a child process (`python -m bench`, `python -m bench.load`), never imported: the test
suite needs none of the benchmark's extras (its plots, its profiler), and bench's own parts
are checked by bench/test_harness.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.servers import Running

# The figures of every case, as bench/report.py names them (out_mb_per_s: json cases only).
CASE_FIGURES = (
    "mb_per_s",
    "ttfb_s",
    "gap_p50_s",
    "gap_p99_s",
    "gap_max_s",
    "cpu_s_per_gib",
    "peak_rss_mib",
)
ROUTED_ASGI = "ASGI behind starlette's router, 1 MiB reads on the loop"
BARE = "bare ASGI callable: one read, one body"
BARE_304 = "bare ASGI callable, If-None-Match (304)"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-plots", "--out", str(out)],
        check=True,
        timeout=200,
        capture_output=True,
    )
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.timeout(220)
def test_every_case_reports_every_figure(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    rows = {(row["group"], row["case"]): row for row in results["medians"]}
    expected = [
        ("txt", "streamer"),
        ("txt", "starlette FileResponse 1 MiB"),
        ("txt", ROUTED_ASGI),
        ("json", "streamer"),
        ("json", "regex + orjson.dumps per line"),
        ("s3", "streamer"),
        ("s3", "boto3 get_object, streamed"),
    ]
    if "nginx" in results["skipped"]:
        assert results["skipped"]["nginx"] == "skipped: nginx not installed"
    else:
        expected.append(("txt", "nginx sendfile"))
    for key in expected:
        row = rows[key]
        assert row["runs"] == 2, key  # every case ran twice, in alternation
        for figure in CASE_FIGURES:
            assert set(row[figure]) == {"median", "min", "max"}, (key, figure)
    assert results["errors"] == []
    assert results["identical_output"] == {"json 1 MiB": True}
    assert (out / "report.md").stat().st_size > 0
    assert results["skipped"]["plots"] == "skipped: --no-plots"
    assert not list(out.glob("*.png"))


def test_concurrency_and_targets_are_reported(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    runs = {(c["concurrency"], c["rate_bytes_per_s"]) for c in results["concurrency"]}
    assert runs == {(1, None), (1, 1e6), (8, None), (8, 1e6)}
    for c in results["concurrency"]:
        assert c["errors"] == 0
        assert 0 < c["fairness"] <= 1
        assert c["server"]["rss_over_time"], "RSS sampled over time"
        assert c["server"]["rss_peak_mib"] > 0
    verdicts = {t["target"]: t["verdict"] for t in results["targets"]}
    assert len(verdicts) >= 9
    assert set(verdicts.values()) <= {"pass", "fail", "n/a"}
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "## Concurrency" in report
    catalog = results["catalog"]
    assert catalog["cold"]["requests"] <= catalog["cold"]["budget"]
    assert catalog["steady"]["count"] == 30 and catalog["baseline"]["count"] == 10
    assert "## Catalog" in report


def test_small_logs_and_probes_under_load_are_reported(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = quick_run
    cases = {row["case"] for row in results["small"]}
    expected = {"streamer", "streamer, If-None-Match (304)", BARE, BARE_304}
    if "nginx" not in results["skipped"]:
        expected.add("nginx")
    assert cases == expected
    assert all(row["errors"] == 0 and row["requests_per_s"] > 0 for row in results["small"])
    (saturation,) = results["saturation"]
    assert saturation["workers"] == 1 and saturation["load_errors"] == 0
    for kind in ("healthz", "readyz", "download_first_byte"):
        assert saturation["probes"][kind]["n"] > 0
        assert saturation["probe_failures"][kind] == 0
    targets = [t["target"] for t in results["targets"]]
    assert any("0.5x the bare ASGI callable" in t for t in targets)
    assert any("0.6x the bare ASGI callable's 304" in t for t in targets)
    assert any("/healthz p99" in t for t in targets)
    report = (out / "report.md").read_text()
    assert "## Small logs" in report and "## Probes under load" in report


def test_the_shaped_stores_are_reported(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    remote = results["remote"]
    cases = {(row["group"], row["case"]) for row in remote["medians"]}
    assert cases == {
        ("s3", "streamer"),
        ("s3", "boto3 download_fileobj"),
        ("s3", "one streamed GET (boto3)"),
        ("gcs", "streamer"),
        ("gcs", "one streamed GET"),
        ("s3 unshaped", "streamer"),
        ("s3 unshaped", "boto3 download_fileobj"),
        ("moto direct", "boto3 download_fileobj"),
        ("s3 read-ahead", "read-ahead 64 MiB, 1 client"),
        ("s3 read-ahead", "read-ahead 64 MiB, 4 clients"),
    }
    assert all(row["runs"] == 2 for row in remote["medians"])
    assert remote["errors"] == [] and remote["load"]["errors"] == 0
    for kind in ("s3", "gcs"):
        assert remote["range"][kind]["status"] == 206
        assert remote["range"][kind]["body_bytes"] == 16 * 1024
        assert 16 * 1024 <= remote["range"][kind]["store_bytes"]
    assert (
        remote["herd_local"]["errors"] == 0
        and "store_requests_per_download" not in (remote["herd_local"])
    )
    for name in ("load", "load_gcs"):
        load = remote[name]
        clients = load["concurrency"]
        assert load["store_requests_per_download"] > 0
        assert 1 <= load["store_peak_connections"] <= load["store_connections"]
        for ceiling in ("herd_direct", "herd_direct_fill"):
            assert load[ceiling]["ttfb_s"]["n"] == clients and load[ceiling]["errors"] == 0
            assert load[ceiling]["store_requests"] == 2 * clients  # metadata and one GET each
    shaped = [t for t in results["targets"] if "shaped" in t["target"] or "S3" in t["target"]]
    assert len(shaped) >= 7
    assert all(t["verdict"] in ("pass", "fail") for t in shaped)  # every one measured
    report = (out / "report.md").read_text()
    assert "## Production-shaped stores" in report and "### Read-ahead ceiling" in report


def test_the_report_is_written_again_from_its_json(
    quick_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, _ = quick_run
    (tmp_path / "results.json").write_bytes((out / "results.json").read_bytes())
    subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path)], check=True, timeout=60)
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()


def test_load_mode_prints_the_figures(server: Running, token: str) -> None:
    url = f"{server.url}/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a2"
    flags = ["--concurrency", "3", "--duration", "1", "--pid", str(os.getpid()), "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--url", url, "--token", token, *flags],
        check=True,
        timeout=60,
        capture_output=True,
    )
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and result["completed"] > 0, (result["requests"], done.stderr)
    for name in ("mb_per_s", "fairness", "ttfb_s", "gap_s", "server"):
        assert name in result


def test_load_mode_counts_revalidations(server: Running, token: str) -> None:
    url = f"{server.url}/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a2"
    etag = httpx.get(url, headers={"Authorization": f"Bearer {token}"}).headers["etag"]
    flags = [
        "--concurrency",
        "2",
        "--duration",
        "2",
        "--json",
        "--header",
        f"If-None-Match: {etag}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", "--url", url, "--token", token, *flags],
        check=True,
        timeout=60,
        capture_output=True,
    )
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and result["completed"] > 0, (result, done.stderr)
    assert result["bytes"] == 0 and result["requests_per_s"] > 0


@pytest.mark.timeout(220)
def test_the_code_before_is_measured_in_the_same_run(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = quick_run
    target = next(t for t in results["targets"] if "the code before" in t["target"])
    if "before" in results["skipped"]:  # a clone without that history: said, not measured
        assert results["skipped"]["before"].startswith("skipped: ")
        assert target["verdict"] == "n/a"
        return
    before = results["before"]
    assert before["commit"] == results["options"]["before"]
    turns = [(row["case"], row["repeat"]) for row in before["rounds"]]
    assert turns == [("streamer", 0), ("before", 0), ("streamer", 1), ("before", 1)]
    assert all(row["errors"] == 0 and row["mb_per_s"] > 0 for row in before["rounds"])
    assert target["verdict"] in ("pass", "fail")
    assert "## Full speed against the code before" in (out / "report.md").read_text()


@pytest.mark.timeout(220)
def test_the_txt_guard_is_judged_at_1_gib_only(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    (guard,) = [t for t in results["targets"] if t["target"].startswith("txt >= 0.9x nginx")]
    assert guard["target"] == "txt >= 0.9x nginx sendfile (1 GiB)"
    assert guard["verdict"] == "n/a"  # the quick run's txt is 1 MiB
    assert "defined at 1 GiB" in guard["note"]
