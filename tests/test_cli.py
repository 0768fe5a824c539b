"""The `streamer` command as a child process: exit codes, tokens, a real serve, big files."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import socket
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest

from streamer import demo
from streamer.auth import Authenticator
from streamer.cli import demo_secret
from streamer.config import Settings
from streamer.demo import training_log
from testkit.dataset import put
from testkit.emulators import BUCKET, ENDPOINTS, azure_options, free_port, gcs_options, s3_options
from testkit.servers import SECRET, ServerProcess, TokenFactory, run_cli

PATH = "/api/v1/models/{}/training-metrics/logs/download"

OPTIONS = {"s3": s3_options, "gs": gcs_options, "az": azure_options}
# What serve says of a missing bucket (container) and of a store that is not there.
WORDS = {"no bucket": ("bucket", "container"), "no server": ("connect", "connection")}


@pytest.mark.parametrize(
    ("args", "env", "reason"),
    [
        ([], {"STREAMER_STORAGE_URL": "{store}"}, "key"),
        ([], {"STREAMER_STORAGE_URL": "{store}/missing", "STREAMER_JWT_SECRET": SECRET}, "store"),
        (
            ["--port", "http"],
            {"STREAMER_STORAGE_URL": "{store}", "STREAMER_JWT_SECRET": SECRET},
            "--port",
        ),
        (
            [],
            {
                "STREAMER_STORAGE_URL": "{store}",
                "STREAMER_JWT_SECRET": SECRET,
                "STREAMER_CHUNK_SIZE": "0",
            },
            "STREAMER_CHUNK_SIZE",
        ),
        (
            [],
            {"STREAMER_STORAGE_URL": "{store}", "STREAMER_JWT_PUBLIC_KEY_FILE": "{store}/none.pem"},
            "key",
        ),
        (
            [],
            {
                "STREAMER_STORAGE_URL": "{store}",
                "STREAMER_JWT_SECRET": SECRET,
                "STREAMER_JWT_ALGORITHMS": "none",
            },
            "none",
        ),
        ([], {"STREAMER_STORAGE_URL": "foo://bucket", "STREAMER_JWT_SECRET": SECRET}, "foo"),
        (
            [],
            {"STREAMER_STORAGE_URL": "{store}", "STREAMER_JWT_SECRET": "fourteen-bytes"},
            "STREAMER_JWT_SECRET: 14 bytes is too short for HS256, which needs at least 32",
        ),
        (
            ["--jwt-algorithms", "HS256,HS512"],
            {"STREAMER_STORAGE_URL": "{store}", "STREAMER_JWT_SECRET": "s" * 40},
            "STREAMER_JWT_SECRET: 40 bytes is too short for HS512, which needs at least 64",
        ),
        (
            ["--host", "not a host!"],
            {"STREAMER_STORAGE_URL": "{store}", "STREAMER_JWT_SECRET": SECRET},
            "STREAMER_HOST",
        ),
    ],
)
def test_serve_refuses_to_start(
    local_store: str, args: list[str], env: dict[str, str], reason: str
) -> None:
    result = run_cli("serve", *args, env={k: v.format(store=local_store) for k, v in env.items()})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert reason.lower() in lines[0].lower()
    assert SECRET not in result.stderr


def test_serve_refuses_a_port_already_in_use(local_store: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {"STREAMER_STORAGE_URL": local_store, "STREAMER_JWT_SECRET": SECRET}
        result = run_cli("serve", "--port", port, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"streamer: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_serve_reports_a_bad_key_before_a_busy_port(local_store: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_cli("serve", "--port", port, env={"STREAMER_STORAGE_URL": local_store})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "key" in lines[0].lower(), result.stderr


def test_version_is_the_installed_distribution() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"streamer {importlib.metadata.version('streamer')}"


def test_every_line_serve_writes_to_stderr_is_json(local_store: str, token: str) -> None:
    server = ServerProcess([], {"STREAMER_STORAGE_URL": local_store, "STREAMER_JWT_SECRET": SECRET})
    try:
        response = httpx.get(
            server.url + PATH.format("mdl-alpha"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200
    finally:
        assert server.stop() in (0, -15)
    records = [orjson.loads(line) for line in server.lines]
    access = [record for record in records if "route" in record]
    uvicorn = [record for record in records if record.get("logger", "").startswith("uvicorn")]
    assert [record["status"] for record in access] == [200]
    assert any("Uvicorn running on" in record["message"] for record in uvicorn)
    assert any("Shutting down" in record["message"] for record in uvicorn)
    assert {record["worker"] for record in records} == {server.pid}


def test_the_demo_commands_run_as_printed(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    demo.seed(root, big_log_bytes=256 * 1024)
    server = ServerProcess([], {"STREAMER_STORAGE_URL": str(root), "STREAMER_JWT_SECRET": SECRET})
    try:
        token = run_cli("token", "--sub", "alice", "--org", demo.ORG, "--secret", SECRET)
        printed = demo.instructions(root, token.stdout.strip(), server.url)
        assert printed.count(token.stdout.strip()) == 1  # in the export line alone
        exports = [line.strip() for line in printed.splitlines() if "export " in line]
        commands = [line.strip() for line in printed.splitlines() if "curl " in line]
        assert all("$TOKEN" in command for command in commands)
        outputs = [
            subprocess.run(
                ["bash", "-euo", "pipefail", "-c", "\n".join([*exports, command])],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            for command in commands
        ]
    finally:
        assert server.stop() in (0, -15)
    saved = tmp_path / f"training-log-{demo.LATEST_RUN}.txt"
    assert (
        saved.read_bytes()
        == (root / "models" / demo.MODEL / "runs" / demo.LATEST_RUN / "training.log").read_bytes()
    )
    page = orjson.loads(outputs[2])
    assert page["run_id"] == demo.LATEST_RUN and len(page["data"]) == 20
    assert orjson.loads(outputs[4])["code"] == "logs_expired"
    assert orjson.loads(outputs[5])["code"] == "logs_purged"


def test_flag_wins_over_variable(local_store: str) -> None:
    result = run_cli(
        "serve",
        "--storage-url",
        local_store + "/missing",
        env={"STREAMER_STORAGE_URL": local_store, "STREAMER_JWT_SECRET": SECRET},
    )
    assert result.returncode == 2
    assert "missing" in result.stderr


@pytest.mark.anyio
async def test_token_command_prints_a_verifiable_token() -> None:
    result = run_cli(
        "token",
        "--sub",
        "bob",
        "--org",
        "org-x",
        "--permission",
        "model:read",
        "--ttl",
        "60",
        env={"STREAMER_JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    principal = await Authenticator(Settings(jwt_secret=SECRET)).authenticate(
        "Bearer " + result.stdout.strip()
    )
    assert (principal.subject, principal.organization) == ("bob", "org-x")
    assert "model:read" in principal.permissions


def test_token_command_refuses_a_secret_too_short_for_its_algorithm() -> None:
    result = run_cli("token", "--sub", "b", "--org", "o", "--alg", "HS512", "--secret", SECRET)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"streamer: STREAMER_JWT_SECRET: {len(SECRET)} bytes is too short for HS512,"
        " which needs at least 64 (RFC 7518 section 3.2)"
    ]


def test_demo_secret_is_long_enough_for_every_hmac_algorithm(tmp_path: Path) -> None:
    path = tmp_path / ".jwt-secret"
    made = demo_secret(path)
    assert len(made.encode()) >= 64
    assert path.stat().st_mode & 0o777 == 0o600
    assert demo_secret(path) == made  # kept
    Authenticator(Settings(jwt_secret=made, jwt_algorithms=("HS256", "HS384", "HS512")))
    path.write_text("a-short-secret-of-an-earlier-version-43-chars")
    remade = demo_secret(path)
    assert len(remade.encode()) >= 64
    assert path.read_text() == remade


def test_token_without_secret_fails() -> None:
    result = run_cli("token", "--sub", "bob", "--org", "org-x")
    assert result.returncode == 2


@pytest.mark.slow
def test_300_mb_log_byte_identical_with_bounded_memory(
    tmp_path: Path, make_token: TokenFactory
) -> None:
    root = str(tmp_path)
    put(root, "models/mdl-big/model.json", orjson.dumps({"organization_id": "org-acme"}))
    put(
        root,
        "models/mdl-big/runs/run-big/run.json",
        orjson.dumps(
            {"run_id": "run-big", "status": "completed", "completed_at": "2026-03-13T11:00:00Z"}
        ),
    )
    block = training_log(1024 * 1024)
    log = tmp_path / "models/mdl-big/runs/run-big/training.log"
    expected = hashlib.sha256()
    with log.open("wb") as file:
        for _ in range(300):
            file.write(block)
            expected.update(block)
    server = ServerProcess([], {"STREAMER_STORAGE_URL": root, "STREAMER_JWT_SECRET": SECRET})
    try:
        idle = server.rss_kib()
        digest = hashlib.sha256()
        headers = {"Authorization": f"Bearer {make_token()}"}
        with httpx.stream(
            "GET", server.url + PATH.format("mdl-big"), headers=headers, timeout=60
        ) as response:
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == 300 * len(block)
            for chunk in response.iter_raw():
                digest.update(chunk)
        assert digest.hexdigest() == expected.hexdigest()
        peak = server.rss_kib("VmHWM")
        # The stated bound: idle RSS + 64 MiB, for a 300 MB artifact and 4 x 1 MiB buffers.
        print(f"server RSS idle {idle} KiB, peak {peak} KiB")
        assert peak - idle < 64 * 1024, (idle, peak)
    finally:
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
        assert server.stop() in (0, -15)


@pytest.mark.parametrize("kind", ["s3", "gs", "az"])
@pytest.mark.parametrize("fault", ["no bucket", "no server"])
def test_serve_refuses_an_object_store_that_does_not_answer(
    request: pytest.FixtureRequest, kind: str, fault: str
) -> None:
    endpoint: str = request.getfixturevalue(ENDPOINTS[kind])
    if fault == "no server":
        endpoint = f"http://127.0.0.1:{free_port()}"
    bucket = "no-such-bucket" if fault == "no bucket" else BUCKET
    options = OPTIONS[kind](endpoint)
    # One attempt: botocore would otherwise back off for about 10 s before giving up.
    config = {"config_kwargs": {"retries": {"max_attempts": 1}}} if kind == "s3" else {}
    env = {
        "STREAMER_STORAGE_URL": f"{kind}://{bucket}/prefix",
        "STREAMER_JWT_SECRET": SECRET,
        f"FSSPEC_{kind.upper()}": json.dumps({**options, **config}),
    }
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{kind}://{bucket}/prefix" in lines[0]
    said = lines[0].lower()
    assert any(word in said for word in WORDS[fault]), lines[0]


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_serve_reads_the_store_endpoint_from_fsspec_variables(
    request: pytest.FixtureRequest, kind: str, make_token: TokenFactory
) -> None:
    endpoint: str = request.getfixturevalue("s3_endpoint" if kind == "s3" else "gcs_endpoint")
    root = f"{kind}://{BUCKET}/cli"
    put(root, "models/mdl-cli/model.json", orjson.dumps({"organization_id": "org-acme"}))
    run = {"run_id": "run-c1", "status": "completed", "completed_at": "2026-03-13T11:00:00Z"}
    put(root, "models/mdl-cli/runs/run-c1/run.json", orjson.dumps(run))
    put(root, "models/mdl-cli/runs/run-c1/training.log", b"hello from the bucket\n")
    options = s3_options(endpoint) if kind == "s3" else gcs_options(endpoint)
    # The two forms fsspec reads at import: FSSPEC_<PROTOCOL> (JSON) and FSSPEC_<PROTOCOL>_<KWARG>.
    env = {
        "STREAMER_STORAGE_URL": root,
        "STREAMER_JWT_SECRET": SECRET,
        f"FSSPEC_{kind.upper()}": json.dumps(
            {k: v for k, v in options.items() if k != "endpoint_url"}
        ),
        f"FSSPEC_{kind.upper()}_ENDPOINT_URL": endpoint,
    }
    server = ServerProcess([], env)
    try:
        response = httpx.get(
            server.url + PATH.format("mdl-cli"),
            headers={"Authorization": f"Bearer {make_token()}"},
            timeout=30,
        )
        assert response.status_code == 200
        assert response.content == b"hello from the bucket\n"
    finally:
        assert server.stop() in (0, -15)
