"""The benchmark harness runs end to end on tiny artifacts and reports every figure.

Behaviour only: which figures exist, that the json outputs matched, that nothing failed.
Never a timing: the numbers belong to `make bench`, not to the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bench import servers
from bench.baselines import BARE, BARE_304, ROUTED_ASGI, bare_app
from bench.flame import read_stacks, shares
from bench.load import remote_warning
from bench.logs import generate
from bench.report import METRICS, defaults_text, plot_gaps_and_rss
from bench.revision import BEFORE, REPO, Unavailable, export
from streamer.encoders import reference_encode
from tests.conftest import Running

CASE_FIGURES = [m for m in METRICS if m != "out_mb_per_s"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
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
    if servers.nginx_binary() is None:
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
    for name in ("report.md", "throughput.png", "gaps.png", "rss.png"):
        assert (out / name).stat().st_size > 0


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
    if servers.nginx_binary() is not None:
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


def _swept(chunk_kib: int, buffers: int, txt: float, slow_growth: float) -> dict[str, Any]:
    return {
        "chunk_size": chunk_kib << 10,
        "buffer_chunks": buffers,
        "txt_mb_per_s": {"median": txt},
        "slow_clients": 64,
        "slow_rss_growth_mib": slow_growth,
    }


def test_the_report_says_what_the_fastest_setting_would_cost() -> None:
    run: dict[str, Any] = {
        "settings": {"chunk_size": 1 << 20, "buffer_chunks": 4},
        "tuning": [
            _swept(256, 4, 2000.0, 64.0),
            _swept(1024, 4, 3000.0, 256.0),
            _swept(2048, 4, 3300.0, 512.0),
        ],
    }
    text = defaults_text(run)
    assert "2048 KiB x 4, is +10%" in text
    assert "8.0 MiB per slow client against 4.0" in text
    assert "256 KiB x 4, -33%" in text
    run["settings"]["buffer_chunks"] = 5
    assert defaults_text(run) == "The defaults were not among the settings swept."


def test_plots_are_drawn_for_a_run_without_txt_cases(tmp_path: Path) -> None:
    # `--sizes ''` runs the S3 or json cases alone: there is no txt size to plot gaps for.
    run = {"options": {"sizes": []}, "concurrency": []}
    plot_gaps_and_rss(run, {"s3/streamer/1048576": [0.001, 0.002]}, tmp_path)
    assert (tmp_path / "gaps.png").stat().st_size > 0
    assert (tmp_path / "rss.png").stat().st_size > 0


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


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("http://127.0.0.1:8080/x", False),
        ("http://localhost/x", False),
        ("http://[::1]:8080/x", False),
        ("http://127.0.0.2/x", False),
        ("http://192.0.2.1/x", True),
        ("http://staging.example.com:8080/x", True),
    ],
)
def test_load_mode_warns_when_the_target_is_not_loopback(url: str, remote: bool) -> None:
    warning = remote_warning(url)
    assert (warning is not None) == remote
    if warning is not None:
        assert str(urlsplit(url).hostname) in warning


def test_load_mode_counts_revalidations(server: Running, token: str) -> None:
    url = f"{server.url}/api/v1/models/mdl-alpha/training-metrics/logs/download?run_id=run-a2"
    etag = httpx.get(url, headers={"Authorization": f"Bearer {token}"}).headers["etag"]
    flags = [
        "--concurrency",
        "2",
        "--duration",
        "0.5",
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


def test_generated_logs_are_deterministic_and_have_every_feature() -> None:
    data = generate(10 << 20)
    assert data == generate(10 << 20)
    assert data.endswith(b"\n")
    assert b"Traceback (most recent call last):" in data
    assert b"\\" in data and b'"' in data and b"\r\n" in data
    assert max(map(len, data.split(b"\n"))) > 1 << 20  # a very long line
    with pytest.raises(UnicodeDecodeError):
        data.decode()
    assert "データ".encode() in data
    reference_encode(data[: 1 << 20])


async def _ask(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": headers}, receive, send)
    return sent


@pytest.mark.anyio
async def test_the_bare_ceiling_serves_the_file_and_revalidates(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "log").write_bytes(b"x" * 4096)
    app = bare_app(tmp_path)
    start, body = await _ask(app, "/a/log", [])
    assert (start["status"], body["body"], body.get("more_body", False)) == (
        200,
        b"x" * 4096,
        False,
    )
    etag = dict(start["headers"])[b"etag"]
    start, body = await _ask(app, "/a/log", [(b"if-none-match", etag)])
    assert (start["status"], body["body"]) == (304, b"")
    start, _ = await _ask(app, "/a/log", [(b"if-none-match", b'"other"')])
    assert start["status"] == 200
    for path in ("/a/../a/log", "/missing", "/a"):
        start, _ = await _ask(app, path, [])
        assert start["status"] == 404


def test_profile_shares_count_a_function_once_per_sample(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "main (a.py:1);handle (b.py:5);handle (b.py:9);send (c.py:3) 3\n"
        "main (a.py:1);handle (b.py:7) 1\n"
    )
    total, inclusive, on_top = shares(read_stacks(stacks))
    assert total == 4
    assert inclusive["handle (b.py)"] == 4 and inclusive["send (c.py)"] == 3
    assert on_top == {"send (c.py)": 3, "handle (b.py)": 1}


def test_nginx_can_be_ruled_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_NGINX", "none")
    assert servers.nginx_binary() is None


def _has_revision(revision: str) -> bool:
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", revision + "^{commit}"],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


@pytest.mark.timeout(220)
def test_the_code_before_is_measured_in_the_same_run(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = quick_run
    target = next(t for t in results["targets"] if "the code before" in t["target"])
    if not _has_revision(BEFORE):  # a clone without that history: said, not measured
        assert results["skipped"]["before"].startswith("skipped: ")
        assert target["verdict"] == "n/a"
        return
    before = results["before"]
    assert before["commit"] == BEFORE
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


def test_an_earlier_revision_is_exported_as_it_was(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        export("no-such-revision", tmp_path / "none")
    if not _has_revision(BEFORE):  # a clone without that history
        with pytest.raises(Unavailable):
            export(BEFORE, tmp_path)
        return
    commit = export(BEFORE, tmp_path)
    assert commit == BEFORE
    old = (tmp_path / "streamer" / "pump.py").read_text()
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE}:streamer/pump.py"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert old == shown != (REPO / "streamer" / "pump.py").read_text()
