"""The endpoint over real sockets: every case of SPEC section 3, with httpx and curl."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from streamer.config import Settings
from streamer.encoders import reference_encode
from testkit.dataset import LOG_A1, LOG_A2, LOG_GZ, LOG_RUNNING, OTHER_ORG
from testkit.jwts import claims, jwk, jwks_bytes, sign, signing_key
from testkit.servers import SECRET, JWKSServer, Running, TokenFactory
from testkit.wire import assert_problem

PATH = "/api/v1/models/{}/training-metrics/logs/download"
ALIAS = "/api/v1/models/{}/training/metrics/logs/download"
REALM = 'Bearer realm="streamer"'


def get(
    server: Running,
    model: str = "mdl-alpha",
    token: str | None = None,
    method: str = "GET",
    path: str = PATH,
    **params: str,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(
        method, server.url + path.format(model), params=params, headers=headers, timeout=30
    )


def claims_token(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"alg": alg}, claims, OctKey.import_key(key))


# Routing comes before auth.


def test_unknown_path_is_404_without_auth(server: Running) -> None:
    response = httpx.get(server.url + "/api/v1/models/mdl-alpha/other", timeout=10)
    assert_problem(response, 404, "not_found")
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_before_auth(server: Running, method: str) -> None:
    response = get(server, method=method)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"


# 401


@pytest.mark.parametrize("authorization", [None, "Basic YWxpY2U6cHc=", "Bearer", "Token abc"])
def test_missing_token(server: Running, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.get(server.url + PATH.format("mdl-alpha"), headers=headers, timeout=10)
    assert_problem(response, 401, "missing_token")
    assert response.headers["www-authenticate"] == REALM


def test_invalid_tokens(server: Running, make_token: TokenFactory) -> None:
    now = int(time.time())
    cases = {
        "garbage": "abc.def.ghi",
        "expired": make_token(ttl_s=-3600),
        "wrong key": claims_token(
            {"sub": "a", "exp": now + 60, "org_id": "org-acme"}, "another-secret-32-bytes-long!!!!"
        ),
        "no sub": claims_token({"exp": now + 60, "org_id": "org-acme", "permissions": []}),
        "no exp": claims_token({"sub": "a", "org_id": "org-acme"}),
        "not yet valid": claims_token({"sub": "a", "exp": now + 7200, "nbf": now + 3600}),
    }
    for name, bad in cases.items():
        response = get(server, token=bad)
        assert_problem(response, 401, "invalid_token")
        assert response.headers["www-authenticate"] == f'{REALM}, error="invalid_token"', name
        assert bad not in response.text


def test_401_comes_before_400(server: Running) -> None:
    assert_problem(get(server, format="xml"), 401, "missing_token")


# 400


@pytest.mark.parametrize(
    "query", ["format=xml", "format=", "format", "format=txt&format=json", "format=TXT"]
)
def test_invalid_format(server: Running, token: str, query: str) -> None:
    url = server.url + PATH.format("mdl-alpha") + "?" + query
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert_problem(response, 400, "invalid_format")


def test_repeated_run_id(server: Running, token: str) -> None:
    url = server.url + PATH.format("mdl-alpha") + "?run_id=run-a1&run_id=run-a2"
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert_problem(response, 400, "invalid_query")


def test_400_comes_before_403(server: Running, make_token: TokenFactory) -> None:
    weak = make_token(permissions=("model:write",))
    assert_problem(get(server, token=weak, format="xml"), 400, "invalid_format")


# 403


@pytest.mark.parametrize("permissions", [(), ("model:write",), ("Model:Read",)])
def test_insufficient_scope(
    server: Running, make_token: TokenFactory, permissions: tuple[str, ...]
) -> None:
    response = get(server, token=make_token(permissions=permissions))
    assert_problem(response, 403, "insufficient_scope")
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'


def test_no_organization_claim_is_403(server: Running) -> None:
    bare = claims_token({"sub": "a", "exp": int(time.time()) + 60, "permissions": ["model:read"]})
    assert_problem(get(server, token=bare), 403, "insufficient_scope")


def test_scope_claim_and_viewer_permission_grant_access(server: Running) -> None:
    now = int(time.time()) + 60
    viewer = claims_token(
        {"sub": "a", "exp": now, "org_id": "org-acme", "scope": "openid organization:viewer"}
    )
    assert get(server, token=viewer).status_code == 200
    listed = claims_token(
        {"sub": "a", "exp": now, "org_id": "org-acme", "permissions": ["organization:viewer"]}
    )
    assert get(server, token=listed).status_code == 200


# 404


def test_model_of_another_organization_looks_unknown(server: Running, token: str) -> None:
    other = assert_problem(get(server, "mdl-beta", token), 404, "model_not_found")
    unknown = assert_problem(get(server, "mdl-nope", token), 404, "model_not_found")
    assert other["detail"] == unknown["detail"]


def test_other_organization_reads_its_own_model(server: Running, make_token: TokenFactory) -> None:
    response = get(server, "mdl-beta", make_token(org=OTHER_ORG))
    assert response.status_code == 200
    assert response.content == LOG_A1


@pytest.mark.parametrize(
    "model", ["mdl-", "model-alpha", "mdl-alpha%0d%0aX-Evil:1", "mdl-a..b", "mdl-" + "a" * 129]
)
def test_malformed_model_id(server: Running, token: str, model: str) -> None:
    assert_problem(get(server, model, token), 404, "model_not_found")


@pytest.mark.parametrize(
    "run_id", ["run-nope", "", "run-", "../run-a1", "run-a1\r\nX: y", "RUN-a1"]
)
def test_unknown_or_malformed_run(server: Running, token: str, run_id: str) -> None:
    assert_problem(get(server, token=token, run_id=run_id), 404, "run_not_found")


def test_no_completed_run(server: Running, token: str) -> None:
    assert_problem(get(server, "mdl-pending", token), 404, "no_completed_run")


def test_expired_and_purged(server: Running, token: str) -> None:
    assert_problem(get(server, token=token, run_id="run-expired"), 404, "logs_expired")
    assert_problem(get(server, token=token, run_id="run-purged"), 404, "logs_purged")
    # The default run is not skipped when its logs are gone: the caller learns why.
    assert_problem(get(server, "mdl-defexp", token), 404, "logs_expired")
    assert_problem(get(server, "mdl-defpurged", token), 404, "logs_purged")


def test_head_errors_have_no_body(server: Running, token: str) -> None:
    response = get(server, token=token, method="HEAD", run_id="run-purged")
    assert response.status_code == 404
    assert response.content == b""
    assert response.headers["content-type"] == "application/problem+json"


# 200


@pytest.mark.parametrize("path", [PATH, ALIAS])
def test_default_run_txt(server: Running, token: str, path: str) -> None:
    response = get(server, token=token, path=path, unknown="ignored")
    assert response.status_code == 200
    assert response.content == LOG_A2
    headers = response.headers
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(LOG_A2))
    assert headers["content-disposition"].startswith(
        'attachment; filename="training-log-run-a2.txt"'
    )
    assert headers["cache-control"] == "private, no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-request-id"]


def test_head_matches_get(server: Running, token: str) -> None:
    for params in (
        {},
        {"format": "json"},
        {"format": "ndjson", "fields": "ecs"},
        {"run_id": "run-gz"},
    ):
        got = get(server, token=token, **params)
        head = get(server, token=token, method="HEAD", **params)
        assert head.status_code == got.status_code == 200
        assert head.content == b""
        ignore = {"x-request-id", "date", "transfer-encoding"}
        assert {k: v for k, v in head.headers.items() if k not in ignore} == {
            k: v for k, v in got.headers.items() if k not in ignore
        }


def test_json_format(server: Running, token: str) -> None:
    response = get(server, token=token, format="json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert 'filename="training-log-run-a2.json"' in response.headers["content-disposition"]
    document = json.loads(response.content)
    assert document == json.loads(reference_encode(LOG_A2))
    assert document[0] == {
        "line": 1,
        "timestamp": "2026-03-13T10:00:00.123Z",
        "level": "INFO",
        "message": "Initializing distributed training cluster.",
    }
    assert document[4] == {"line": 5, "timestamp": None, "level": None, "message": ""}
    assert document[-1] == {
        "line": 8,
        "timestamp": "2026-03-13T10:03:00+02:00",
        "level": "ERROR",
        "message": "",
    }
    assert "\ufffd" in document[6]["message"]


def test_explicit_run_that_is_not_completed(server: Running, token: str) -> None:
    response = get(server, token=token, run_id="run-live")
    assert response.status_code == 200
    assert response.content == LOG_RUNNING
    assert_problem(get(server, token=token, run_id="run-queued"), 404, "logs_not_ready")


def test_gzip_object_is_decompressed(server: Running, token: str) -> None:
    url = server.url + PATH.format("mdl-alpha") + "?run_id=run-gz"
    auth = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    response = httpx.get(url, headers=auth, timeout=30)
    assert response.status_code == 200
    assert response.content == LOG_GZ
    assert "content-length" not in response.headers
    assert "content-encoding" not in response.headers
    assert "accept-ranges" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"
    as_json = httpx.get(url + "&format=json", headers=auth, timeout=30)
    assert len(orjson.loads(as_json.content)) == LOG_GZ.count(b"\n")


def test_empty_log(server: Running, token: str) -> None:
    response = get(server, token=token, run_id="run-empty")
    assert (response.status_code, response.content) == (200, b"")
    assert response.headers["content-length"] == "0"
    assert get(server, token=token, run_id="run-empty", format="json").content == b"[]"


def test_request_id(server: Running, token: str) -> None:
    url = server.url + PATH.format("mdl-alpha")
    mine = httpx.get(url, headers={"X-Request-ID": "abc-123:x.y_z"}, timeout=10)
    assert mine.headers["x-request-id"] == "abc-123:x.y_z"
    assert mine.json()["request_id"] == "abc-123:x.y_z"
    bad = httpx.get(url, headers={"X-Request-ID": "no spaces<>"}, timeout=10)
    assert bad.headers["x-request-id"] not in ("", "no spaces<>")
    assert httpx.get(server.url + "/nope", timeout=10).headers["x-request-id"]


def test_curl_saves_the_named_file(server: Running, token: str, tmp_path: Path) -> None:
    for query, name, expected in [
        ("", "training-log-run-a2.txt", LOG_A2),
        ("?format=json&run_id=run-a1", "training-log-run-a1.json", reference_encode(LOG_A1)),
    ]:
        subprocess.run(
            [
                "curl",
                "-sSfOJ",
                "-H",
                f"Authorization: Bearer {token}",
                server.url + PATH.format("mdl-alpha") + query,
            ],
            cwd=tmp_path,
            check=True,
            timeout=60,
        )
        assert (tmp_path / name).read_bytes() == expected


def test_rs256_token_verified_through_a_jwks_on_loopback(
    base_settings: Settings, settings_server: Callable[..., Running], jwks_server: JWKSServer
) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    running = settings_server(base_settings, jwt_secret=None, jwks_url=jwks_server.url)
    signed = sign(claims(), signing_key("rsa"), "RS256", kid="k1")
    response = get(running, token=signed)
    assert response.status_code == 200
    assert response.content == LOG_A2
    # An HS256 token is refused outright: no secret is configured, only public keys.
    assert_problem(get(running, token=claims_token(claims())), 401, "invalid_token")
    # A kid the JWKS does not have is refused after one refetch.
    stranger = sign(claims(), signing_key("rsa-2"), "RS256", kid="k2")
    assert_problem(get(running, token=stranger), 401, "invalid_token")
    assert jwks_server.hits == 2


def test_an_encoded_slash_stays_inside_the_model_id(server: Running, token: str) -> None:
    url = server.url + "/api/v1/models/mdl-alpha%2F..%2Fmdl-beta/training-metrics/logs/download"
    # The route matches as sent, so auth comes first, then the id is malformed.
    assert_problem(httpx.get(url, timeout=10), 401, "missing_token")
    headers = {"Authorization": f"Bearer {token}"}
    assert_problem(httpx.get(url, headers=headers, timeout=10), 404, "model_not_found")
    encoded = server.url + "/api/v1/models/mdl%2Dalpha/training-metrics/logs/download"
    assert httpx.get(encoded, headers=headers, timeout=10).content == LOG_A2


@pytest.mark.parametrize(
    ("spec", "status", "body"),
    [
        (f"0-{'9' * 5000}", 206, LOG_A1),
        (f"{'0' * 5000}5-", 206, LOG_A1[5:]),
        (f"-{'9' * 5000}", 206, LOG_A1),
        (f"{'1' * 5000}-", 416, None),
    ],
)
def test_range_positions_of_any_length(
    server: Running, token: str, spec: str, status: int, body: bytes | None
) -> None:
    # Python will not convert over 4300 digits to an int: still a range, never a 500.
    response = httpx.get(
        server.url + PATH.format("mdl-alpha") + "?run_id=run-a1",
        headers={"Authorization": f"Bearer {token}", "Range": f"bytes={spec}"},
        timeout=30,
    )
    assert response.status_code == status
    if body is not None:
        assert response.content == body
    else:
        assert response.headers["content-range"] == f"bytes */{len(LOG_A1)}"
