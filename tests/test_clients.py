"""Real download clients against streamer on a loopback socket: curl, wget, aria2c, httpx, jq.

Resumed and segmented downloads must end byte-identical to the object; validators and
conditional requests behave as RFC 9110 says; json and ndjson feed jq, and the jq lines
of the recipes in docs/api.md are run here as written.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from streamer.app import Scope
from streamer.config import Settings
from streamer.encoders import reference_encode
from streamer.observe import Observe
from streamer.pump import Message, Receive, Send
from testkit.dataset import LOG_A2, big_log, put, put_run, seed
from testkit.servers import SECRET, Running, ServerProcess, serve_in_thread

PATH = "/api/v1/models/{}/training-metrics/logs/download"
BIG = big_log(150_000)  # about 6.6 MB: several chunks, four aria2c segments of 1 MiB or more
README = Path(__file__).resolve().parent.parent / "docs" / "api.md"

# The jq programs of docs/api.md's recipes, run below on real output.
SPLUNK_HEC_JQ = (
    '{time: (.timestamp | try (sub("\\\\.[0-9]+"; "") | fromdateiso8601) catch null), event: .}'
)
ELASTIC_BULK_JQ = '{index: {_index: "training-logs"}}, .'
DATADOG_JQ = '. + {ddsource: "streamer", service: "training"}'


def tool(name: str) -> str:
    """The path of a client the tests need; a clear failure, never a skip, when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (apt-get install {name})")
    return path


@dataclass
class Seen:
    method: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Recorder:
    """ASGI middleware that records each request's headers and the status answered."""

    app: Observe
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = Seen(scope["method"], {k.decode(): v.decode() for k, v in scope["headers"]})
        self.seen.append(entry)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        await self.app(scope, receive, recording_send)

    @property
    def ranges(self) -> list[tuple[str | None, int]]:
        return [(seen.headers.get("range"), seen.status) for seen in self.seen]


@dataclass
class Served:
    running: Running
    recorder: Recorder
    root: Path
    token: str

    def url(self, query: str = "", model: str = "mdl-big") -> str:
        return self.running.url + PATH.format(model) + (f"?{query}" if query else "")

    @property
    def auth(self) -> str:
        return f"Authorization: Bearer {self.token}"


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clients-store")
    seed(str(root))
    put_run(str(root), "mdl-big", "run-big", BIG)
    put(str(root), "models/mdl-big/runs/run-bigz/run.json", b'{"status": "completed"}')
    put(str(root), "models/mdl-big/runs/run-bigz/training.log.gz", gzip.compress(BIG))
    return root


@pytest.fixture(scope="module")
def module_server(store_root: Path) -> Iterator[tuple[Running, Recorder]]:
    settings = Settings(
        storage_url=str(store_root), jwt_secret=SECRET, catalog_ttl_s=0, chunk_size=256 * 1024
    )
    recorders: list[Recorder] = []

    def wrap(app: Observe) -> Recorder:
        recorders.append(Recorder(app))
        return recorders[0]

    for running in serve_in_thread(settings, wrap):
        yield running, recorders[0]


@pytest.fixture
def served(module_server: tuple[Running, Recorder], store_root: Path, token: str) -> Served:
    running, recorder = module_server
    recorder.seen.clear()
    return Served(running, recorder, store_root, token)


def run(*args: str, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    result = subprocess.run(args, cwd=cwd, input=input, capture_output=True, timeout=60)
    assert result.returncode == 0, (args[0], result.returncode, result.stderr.decode()[-2000:])
    return result.stdout


# curl


def test_curl_saves_the_named_file(served: Served, tmp_path: Path) -> None:
    curl = tool("curl")
    for query, name, expected in [
        ("", "training-log-run-big.txt", BIG),
        ("format=ndjson&run_id=run-a2", "training-log-run-a2.ndjson", None),
        (
            "format=json&fields=ecs",
            "training-log-run-big.json",
            reference_encode(BIG, "json", "ecs"),
        ),
    ]:
        model = "mdl-alpha" if "run-a2" in query else "mdl-big"
        run(curl, "-sSfOJ", "-H", served.auth, served.url(query, model), cwd=tmp_path)
        saved = (tmp_path / name).read_bytes()
        assert saved == (expected or reference_encode(LOG_A2, "ndjson")), name


def test_curl_resumes_a_cut_download(served: Served, tmp_path: Path) -> None:
    curl, target, cut = tool("curl"), tmp_path / "log.txt", 1_234_567
    # Cut deterministically: the first `cut` bytes, fetched as a range.
    run(curl, "-sSf", "-r", f"0-{cut - 1}", "-H", served.auth, "-o", str(target), served.url())
    assert target.read_bytes() == BIG[:cut]
    run(curl, "-sSf", "-C", "-", "-H", served.auth, "-o", str(target), served.url())
    assert target.read_bytes() == BIG
    assert served.recorder.ranges == [(f"bytes=0-{cut - 1}", 206), (f"bytes={cut}-", 206)]


def test_curl_will_not_resume_a_log_it_gets_decompressed(served: Served, tmp_path: Path) -> None:
    # Decoded on the fly, the body has no byte positions to resume from: streamer ignores
    # the range and curl, seeing a 200 and no Accept-Ranges, refuses instead of corrupting.
    curl, target = tool("curl"), tmp_path / "log.txt"
    target.write_bytes(BIG[:1000])
    result = subprocess.run(
        [
            curl,
            "-sS",
            "-C",
            "-",
            "-H",
            served.auth,
            "-o",
            str(target),
            served.url("run_id=run-bigz"),
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 33, result.stderr  # CURLE_RANGE_ERROR
    assert target.read_bytes() == BIG[:1000]


def test_wget_resumes_a_cut_download(served: Served, tmp_path: Path) -> None:
    wget, target, cut = tool("wget"), tmp_path / "log.txt", 2_000_003
    target.write_bytes(BIG[:cut])
    run(wget, "-q", "-c", f"--header={served.auth}", "-O", str(target), served.url())
    assert target.read_bytes() == BIG
    assert served.recorder.ranges == [(f"bytes={cut}-", 206)]


def test_aria2c_segmented_download(served: Served, tmp_path: Path) -> None:
    aria2c = tool("aria2c")
    run(
        aria2c,
        "-q",
        "-x4",
        "-s4",
        "-k1M",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        f"--header={served.auth}",
        "-d",
        str(tmp_path),
        "-o",
        "log.txt",
        served.url(),
    )
    assert (tmp_path / "log.txt").read_bytes() == BIG
    partial = [r for r, status in served.recorder.ranges if r is not None and status == 206]
    assert len(partial) >= 2, served.recorder.ranges  # several connections, each a range


def test_curl_compressed_gets_a_gzip_object_as_stored(served: Served, tmp_path: Path) -> None:
    curl = tool("curl")
    body = run(curl, "-sSf", "--compressed", "-H", served.auth, served.url("run_id=run-bigz"))
    assert body == BIG
    raw = run(
        curl,
        "-sSf",
        "-H",
        "Accept-Encoding: gzip",
        "-H",
        served.auth,
        served.url("run_id=run-bigz"),
    )
    assert raw == (served.root / "models/mdl-big/runs/run-bigz/training.log.gz").read_bytes()


# httpx


def test_httpx_streams_ndjson_line_by_line(served: Served) -> None:
    headers = {"Authorization": f"Bearer {served.token}"}
    count = 0
    with httpx.stream(
        "GET", served.url("format=ndjson&fields=otel"), headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in response.headers
        assert "accept-ranges" not in response.headers
        assert response.headers["content-disposition"].startswith(
            'attachment; filename="training-log-run-big.ndjson"'
        )
        for line in response.iter_lines():
            count += 1
            record = json.loads(line)
            assert set(record) == {"line", "Timestamp", "SeverityText", "Body"}
            assert record["line"] == count
    assert count == BIG.count(b"\n")


def test_ranges_over_the_wire(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}", "Accept-Encoding": "identity"}

    def get(**headers: str) -> httpx.Response:
        return httpx.get(served.url(), headers={**auth, **headers}, timeout=30)

    size = len(BIG)
    part = get(Range="bytes=100-16483")
    assert (part.status_code, part.content) == (206, BIG[100:16484])
    assert part.headers["content-range"] == f"bytes 100-16483/{size}"
    assert part.headers["content-length"] == "16384"
    assert part.headers["accept-ranges"] == "bytes"
    assert get(Range="bytes=-500").content == BIG[-500:]
    assert get(Range=f"bytes={size - 10}-").content == BIG[-10:]
    unsatisfiable = get(Range=f"bytes={size}-")
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    assert unsatisfiable.json()["code"] == "range_not_satisfiable"
    for ignored in ("bytes=0-1,5-6", "bytes=5-1", "bytes=abc", "pages=1-2"):
        whole = get(Range=ignored)
        assert (whole.status_code, len(whole.content)) == (200, size), ignored
    json_range = httpx.get(served.url("format=json"), headers={**auth, "Range": "bytes=0-9"})
    assert json_range.status_code == 200


def test_validators_and_conditional_requests(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}", "Accept-Encoding": "identity"}

    def request(method: str = "GET", query: str = "", **headers: str) -> httpx.Response:
        return httpx.request(method, served.url(query), headers={**auth, **headers}, timeout=30)

    head = request("HEAD")
    etag, modified = head.headers["etag"], head.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith(" GMT")
    assert head.headers["vary"] == "Accept-Encoding"
    got = request()
    assert (got.headers["etag"], got.headers["last-modified"]) == (etag, modified)
    assert request(query="fields=ecs").headers["etag"] == etag  # fields do not apply to txt
    tags = {etag} | {
        request("HEAD", q).headers["etag"]
        for q in ("format=json", "format=ndjson", "format=ndjson&fields=datadog")
    }
    assert len(tags) == 4

    not_modified = request(**{"If-None-Match": etag})
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert not_modified.headers["etag"] == etag
    assert request("HEAD", **{"If-None-Match": etag}).status_code == 304
    assert request(**{"If-Modified-Since": modified}).status_code == 304
    assert request(**{"If-None-Match": '"old"', "If-Modified-Since": modified}).status_code == 200
    assert request(query="format=json", **{"If-None-Match": etag}).status_code == 200

    fresh = request(Range="bytes=0-99", **{"If-Range": etag})
    assert (fresh.status_code, fresh.content) == (206, BIG[:100])
    stale = request(Range="bytes=0-99", **{"If-Range": '"old"'})
    assert (stale.status_code, stale.content) == (200, BIG)
    assert request(Range="bytes=0-99", **{"If-Range": modified}).status_code == 206


def test_conditions_come_after_the_other_checks(served: Served, make_token: object) -> None:
    etag = httpx.head(
        served.url(), headers={"Authorization": f"Bearer {served.token}"}, timeout=30
    ).headers["etag"]
    conditional = {"If-None-Match": etag, "Range": "bytes=999999999-"}
    assert httpx.get(served.url(), headers=conditional, timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {served.token}", **conditional}
    bad = httpx.get(served.url("fields=nope"), headers=auth, timeout=30)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_fields")
    gone = httpx.get(served.url("run_id=run-nope"), headers=auth, timeout=30)
    assert gone.status_code == 404


# jq


def test_jq_parses_json_and_reads_ndjson_line_by_line(served: Served) -> None:
    curl, jq = tool("curl"), tool("jq")
    document = run(
        curl, "-sSf", "-H", served.auth, served.url("format=json&run_id=run-a2", "mdl-alpha")
    )
    assert run(jq, "length", input=document) == b"8\n"
    stream = run(
        curl, "-sSf", "-H", served.auth, served.url("format=ndjson&run_id=run-a2", "mdl-alpha")
    )
    messages = run(jq, "-c", "[.line, .level]", input=stream).splitlines()
    assert messages[0] == b'[1,"INFO"]' and messages[-1] == b'[8,"ERROR"]'
    assert len(messages) == 8


def test_recipe_jq_lines_are_in_the_readme_and_work(served: Served) -> None:
    readme = README.read_text()
    for program in (SPLUNK_HEC_JQ, ELASTIC_BULK_JQ, DATADOG_JQ):
        assert program in readme, program
    curl, jq = tool("curl"), tool("jq")
    url = served.url("format=ndjson&run_id=run-a2", "mdl-alpha")

    hec = run(jq, "-c", SPLUNK_HEC_JQ, input=run(curl, "-sSf", "-H", served.auth, url))
    events = [orjson.loads(line) for line in hec.splitlines()]
    assert len(events) == 8
    assert events[0] == {
        "time": 1773396000,
        "event": {
            "line": 1,
            "timestamp": "2026-03-13T10:00:00.123Z",
            "level": "INFO",
            "message": "Initializing distributed training cluster.",
        },
    }
    # No timestamp, or one with an offset jq cannot read: Splunk uses the time of receipt.
    assert events[4]["time"] is None and events[7]["time"] is None

    ecs = run(curl, "-sSf", "-H", served.auth, url + "&fields=ecs")
    bulk = run(jq, "-c", ELASTIC_BULK_JQ, input=ecs).splitlines()
    assert len(bulk) == 16
    assert all(
        orjson.loads(action) == {"index": {"_index": "training-logs"}} for action in bulk[::2]
    )
    assert orjson.loads(bulk[1])["@timestamp"] == "2026-03-13T10:00:00.123Z"
    assert orjson.loads(bulk[1])["log.level"] == "INFO"

    datadog = run(curl, "-sSf", "-H", served.auth, url + "&fields=datadog")
    shipped = [orjson.loads(line) for line in run(jq, "-c", DATADOG_JQ, input=datadog).splitlines()]
    assert shipped[0]["status"] == "INFO" and shipped[0]["ddsource"] == "streamer"


# On-the-fly gzip, through the real command line flag.


def test_serve_gzip_flag_compresses_on_the_fly(store_root: Path, token: str) -> None:
    curl = tool("curl")
    server = ServerProcess(
        ["--gzip"], {"STREAMER_STORAGE_URL": str(store_root), "STREAMER_JWT_SECRET": SECRET}
    )
    try:
        url = server.url + PATH.format("mdl-big")
        auth = f"Authorization: Bearer {token}"
        headers = run(curl, "-sSf", "-D", "-", "-o", "/dev/null", "--compressed", "-H", auth, url)
        assert b"content-encoding: gzip" in headers.lower()
        assert b"content-length" not in headers.lower()
        assert run(curl, "-sSf", "--compressed", "-H", auth, url) == BIG
        # Without --compressed curl sends no Accept-Encoding: plain bytes, with a length.
        plain = run(curl, "-sSf", "-D", "-", "-H", auth, url)
        assert plain.endswith(BIG) and f"content-length: {len(BIG)}".encode() in plain.lower()
        # A range is never compressed.
        part = run(curl, "-sSf", "--compressed", "-r", "0-99", "-H", auth, url)
        assert part == BIG[:100]
    finally:
        server.stop()
