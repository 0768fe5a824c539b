"""The benchmark's own parts: the report's texts and plots, the load tool's warning, the
generated logs, the export of an earlier revision.

The suite collects this file beside tests/ (pyproject's testpaths); it needs no server. The
harness end to end is tests/test_bench.py, which runs it as a child process.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench import servers
from bench.baselines import bare_app
from bench.flame import read_stacks, shares
from bench.load import remote_warning
from bench.logs import generate
from bench.loop import Case, Tally, table, verdict
from bench.report import defaults_text, plot_gaps_and_rss, plots_skipped
from bench.revision import BEFORE, REPO, Unavailable, export
from streamer.encoders import reference_encode


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
    assert plots_skipped(wanted=False) == "skipped: --no-plots"
    if importlib.util.find_spec("matplotlib") is None:  # `pip install -e '.[bench]'` adds it
        assert plots_skipped(wanted=True) == "skipped: matplotlib not installed (the bench extra)"
        return
    assert plots_skipped(wanted=True) is None
    run = {"options": {"sizes": []}, "concurrency": []}
    plot_gaps_and_rss(run, {"s3/streamer/1048576": [0.001, 0.002]}, tmp_path)
    assert (tmp_path / "gaps.png").stat().st_size > 0
    assert (tmp_path / "rss.png").stat().st_size > 0


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


def test_nginx_can_be_ruled_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_NGINX", "none")
    assert servers.nginx_binary() is None


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


def _has_revision(revision: str) -> bool:
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", revision + "^{commit}"],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


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


def test_the_loop_benchmark_fails_a_case_on_any_other_answer_or_too_much_memory() -> None:
    tally = Tally()
    tally.add(200, b"{}", None, "first", 0.2)
    tally.add(503, b'{"code": "overloaded"}', "1", "first", 0.001)
    case = Case("scans", tally, [0.001] * 100, [0.01] * 10, 100.0, 60.0, 20.0)
    figures = verdict(case, idle_mib=50)
    assert figures["answers"] == {"200": 1, "503 overloaded": 1}
    assert all(figures["pass"].values())
    tally.add(503, b'{"code": "overloaded"}', None, "first", 0.001)  # no Retry-After
    tally.add(0, b"", None, "later", 1.0)  # the connection failed
    slow = Case("scans", tally, [0.001] * 98 + [0.06] * 2, [0.01], 400.0, 60.0, 20.0)
    assert verdict(slow, idle_mib=50)["pass"] == {
        "healthz": False,
        "other": True,
        "rss": False,
        "answers": False,
    }
    assert "FAIL" in table([verdict(slow, idle_mib=50)])
