"""streamer.auth: Bearer parsing, signature and claim checks, key sources, authorize()."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OctKey

from streamer import errors
from streamer.auth import (
    MAX_TIME,
    MAX_TOKEN_CHARS,
    Authenticator,
    Principal,
    authorize,
    issue_token,
    parse_compact,
)
from streamer.config import ConfigError, Settings
from testkit.dataset import LOG_A2, seed
from testkit.fakes import SpyBackend
from testkit.jwts import FakeClock, claims, jwk, jwks_bytes, private_key, sign, signing_key
from testkit.servers import JWKSServer, Running, serve_in_thread

SECRET = "a-test-secret-that-is-32-bytes!!"
LONG_SECRET = SECRET * 2  # 64 bytes: long enough for HS512
ORG = "org-acme"

# Keys and tokens


def public_pem(kind: str) -> bytes:
    return (
        private_key(kind)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, e.g. one no library would sign."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def forge(header: bytes, payload: bytes, key: bytes = SECRET.encode()) -> str:
    """Header and claims given as the exact bytes to sign with HMAC-SHA256 (the real secret
    by default), as an attacker who holds a signing key, or guesses one, would send them."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def claims_json(**changes: Any) -> bytes:
    return json.dumps(claims(**changes)).encode()


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return sign(payload, OctKey.import_key(secret.encode()), "HS256")


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


async def authenticate(auth: Authenticator, token: str) -> Principal:
    return await auth.authenticate(f"Bearer {token}")


async def reject(auth: Authenticator, header: str | None, detail: str | None = None) -> None:
    """The header is refused with invalid_token, and the error never echoes the token."""
    with pytest.raises(errors.InvalidToken) as caught:
        await auth.authenticate(header)
    error = caught.value
    assert (error.status, error.code) == (401, "invalid_token")
    assert error.headers["WWW-Authenticate"] == 'Bearer realm="streamer", error="invalid_token"'
    credential = (header or "").partition(" ")[2]
    for part in [credential, *credential.split(".")]:
        if len(part) > 3:
            assert part not in str(error)
            assert part not in error.detail
    if detail is not None:
        assert error.detail == detail


def hmac_auth(**changes: Any) -> Authenticator:
    return Authenticator(Settings(jwt_secret=SECRET, **changes))


# The Authorization header


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header", [None, "", "Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "Token abc", "bearer"]
)
async def test_no_bearer_credential_is_missing_token(header: str | None) -> None:
    with pytest.raises(errors.MissingToken) as caught:
        await hmac_auth().authenticate(header)
    assert (caught.value.status, caught.value.code) == (401, "missing_token")
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="streamer"'


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_scheme_is_case_insensitive(scheme: str) -> None:
    token = issue_token(SECRET, "alice", ORG, ["model:read"])
    principal = await hmac_auth().authenticate(f"{scheme} {token}")
    assert principal == Principal("alice", ORG, frozenset({"model:read"}))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "credential",
    [
        "abc",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "eyJhbGciOiJIUzI1NiJ9.e30=.abc",
        "x" * 100_000 + ".y.z",
        b64(b"not json") + "." + b64(b"{}") + ".sig",
        b64(b"[1, 2]") + "." + b64(b"{}") + ".sig",
        b64(b'"alg"') + "." + b64(b"{}") + ".sig",
        b64(b"[" * 1500 + b"]" * 1500) + "." + b64(b"{}") + ".sig",
        b64(b'{"typ": "JWT"}') + "." + b64(b"{}") + ".sig",
        "tok en.a.b",
    ],
)
async def test_garbage_is_invalid_token(credential: str) -> None:
    await reject(hmac_auth(), f"Bearer {credential}")


@pytest.mark.anyio
async def test_signed_payload_that_is_not_a_claims_object() -> None:
    token = sign([1, 2, 3], OctKey.import_key(SECRET.encode()), "HS256")
    await reject(hmac_auth(), f"Bearer {token}", "The token's claims are malformed.")


# HMAC


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
async def test_hmac_tokens(alg: str) -> None:
    token = issue_token(LONG_SECRET, "alice", ORG, ["model:read", "x"], algorithm=alg)
    principal = await authenticate(Authenticator(Settings(jwt_secret=LONG_SECRET)), token)
    assert principal == Principal("alice", ORG, frozenset({"model:read", "x"}))


@pytest.mark.anyio
async def test_wrong_secret_is_a_bad_signature() -> None:
    token = issue_token("another-secret-of-32-bytes-long!", "alice", ORG, ["model:read"])
    await reject(hmac_auth(), f"Bearer {token}", "The token's signature is invalid.")


@pytest.mark.anyio
async def test_tampered_payload_is_a_bad_signature() -> None:
    header, _, signature = issue_token(SECRET, "alice", ORG, ["model:read"]).split(".")
    forged = b64(json.dumps(claims(sub="mallory")).encode())
    await reject(hmac_auth(), f"Bearer {header}.{forged}.{signature}")


@pytest.mark.anyio
async def test_alg_none_is_rejected() -> None:
    token = raw_token({"alg": "none", "typ": "JWT"}, claims(), None)
    await reject(hmac_auth(), f"Bearer {token}")
    for alg in ["None", "NONE"]:
        await reject(hmac_auth(), f"Bearer {raw_token({'alg': alg}, claims(), None)}")


@pytest.mark.anyio
async def test_algorithm_outside_the_allow_list() -> None:
    auth = Authenticator(Settings(jwt_secret=LONG_SECRET, jwt_algorithms=("HS512",)))
    await reject(
        auth,
        f"Bearer {issue_token(LONG_SECRET, 'alice', ORG, ['model:read'])}",
        "The token's signing algorithm is not accepted.",
    )
    assert await authenticate(auth, issue_token(LONG_SECRET, "a", ORG, [], algorithm="HS512"))


@pytest.mark.anyio
async def test_unknown_header_parameters_are_tolerated_but_b64_is_not() -> None:
    with_nonce = raw_token({"alg": "HS256", "nonce": "n"}, claims(), SECRET.encode())
    assert await authenticate(hmac_auth(), with_nonce)
    unencoded = raw_token({"alg": "HS256", "b64": True, "crit": ["b64"]}, claims(), SECRET.encode())
    await reject(hmac_auth(), f"Bearer {unencoded}", "The token is malformed.")


# Public keys from a PEM file


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "alg"),
    [
        ("rsa", "RS256"),
        ("rsa", "RS512"),
        ("rsa", "PS256"),
        ("p256", "ES256"),
        ("p384", "ES384"),
        ("ed25519", "EdDSA"),
        ("ed25519", "Ed25519"),
    ],
)
async def test_public_key_file(tmp_path: Path, kind: str, alg: str) -> None:
    path = write(tmp_path, "key.pem", public_pem(kind))
    auth = Authenticator(Settings(jwt_public_key_file=path))
    await auth.start()
    assert auth.ready
    principal = await authenticate(auth, sign(claims(), signing_key(kind), alg, kid="any"))
    assert principal == Principal("alice", ORG, frozenset({"model:read"}))
    forged = sign(claims(), signing_key(kind + "-other"), alg)
    await reject(auth, f"Bearer {forged}", "The token's signature is invalid.")


@pytest.mark.anyio
async def test_ec_key_accepts_only_its_curve_algorithm(tmp_path: Path) -> None:
    auth = Authenticator(Settings(jwt_public_key_file=write(tmp_path, "k", public_pem("p256"))))
    await reject(auth, f"Bearer {sign(claims(), signing_key('p384'), 'ES384')}")
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa'), 'RS256')}")


@pytest.mark.anyio
async def test_hmac_signed_with_the_public_key_is_rejected(tmp_path: Path) -> None:
    """The classic confusion attack: the public PEM bytes used as an HMAC secret."""
    pem = public_pem("rsa")
    path = write(tmp_path, "key.pem", pem)
    forged = raw_token({"alg": "HS256", "typ": "JWT"}, claims(), pem)
    await reject(Authenticator(Settings(jwt_public_key_file=path)), f"Bearer {forged}")
    both = Authenticator(Settings(jwt_public_key_file=path, jwt_secret=SECRET))
    await reject(both, f"Bearer {forged}", "The token's signature is invalid.")
    with pytest.raises(ConfigError):
        Authenticator(Settings(jwt_public_key_file=path, jwt_algorithms=("HS256", "RS256")))


@pytest.mark.anyio
async def test_secret_and_public_key_together(tmp_path: Path) -> None:
    path = write(tmp_path, "key.pem", public_pem("rsa"))
    auth = Authenticator(Settings(jwt_public_key_file=path, jwt_secret=SECRET))
    assert await authenticate(auth, issue_token(SECRET, "alice", ORG, []))
    assert await authenticate(auth, sign(claims(), signing_key("rsa"), "RS256"))


# JWKS


@pytest.mark.anyio
async def test_jwks_from_a_file(tmp_path: Path) -> None:
    document = jwks_bytes(jwk("rsa", "r1"), jwk("ed25519", "e1"), jwk("p256", None))
    path = write(tmp_path, "jwks.json", document)
    auth = Authenticator(Settings(jwks_url=path))
    assert not auth.ready
    await auth.start()
    assert auth.ready
    assert await authenticate(auth, sign(claims(), signing_key("rsa"), "RS256", kid="r1"))
    assert await authenticate(auth, sign(claims(), signing_key("ed25519"), "EdDSA", kid="e1"))
    assert await authenticate(auth, sign(claims(), signing_key("rsa"), "PS256"))
    assert await authenticate(auth, sign(claims(), signing_key("p256"), "ES256"))
    # A kid names one key: the RSA key does not verify a token that names the Ed25519 one.
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa'), 'RS256', kid='e1')}")
    file_url = Authenticator(Settings(jwks_url=Path(path).as_uri()))
    await file_url.start()
    assert await authenticate(file_url, sign(claims(), signing_key("rsa"), "RS256", kid="r1"))


@pytest.mark.anyio
async def test_jwks_key_alg_and_use_are_respected(tmp_path: Path) -> None:
    document = jwks_bytes(jwk("rsa", "r1", alg="RS256"), jwk("p256", "enc", use="enc"))
    auth = Authenticator(Settings(jwks_url=write(tmp_path, "jwks.json", document)))
    await auth.start()
    assert await authenticate(auth, sign(claims(), signing_key("rsa"), "RS256", kid="r1"))
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa'), 'PS256', kid='r1')}")
    await reject(auth, f"Bearer {sign(claims(), signing_key('p256'), 'ES256', kid='enc')}")


@pytest.mark.anyio
async def test_jwks_never_verifies_hmac_tokens(tmp_path: Path) -> None:
    secret_jwk = {"kty": "oct", "k": b64(SECRET.encode()), "kid": "s1"}
    document = jwks_bytes(jwk("rsa", "r1"), secret_jwk)
    auth = Authenticator(Settings(jwks_url=write(tmp_path, "jwks.json", document)))
    await auth.start()
    token = sign(claims(), OctKey.import_key(SECRET.encode()), "HS256", kid="s1")
    await reject(auth, f"Bearer {token}", "The token's signing algorithm is not accepted.")
    pem_forgery = raw_token({"alg": "HS256", "kid": "r1"}, claims(), public_pem("rsa"))
    await reject(auth, f"Bearer {pem_forgery}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}',
        b'{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
    ],
)
async def test_jwks_unusable_at_start_is_a_config_error(tmp_path: Path, document: bytes) -> None:
    auth = Authenticator(Settings(jwks_url=write(tmp_path, "jwks.json", document)))
    with pytest.raises(ConfigError, match="STREAMER_JWKS_URL"):
        await auth.start()
    assert not auth.ready


@pytest.mark.anyio
async def test_jwks_unreachable_at_start_is_a_config_error(tmp_path: Path) -> None:
    for url in [str(tmp_path / "missing.json"), "http://127.0.0.1:9/jwks.json"]:
        with pytest.raises(ConfigError, match="STREAMER_JWKS_URL") as caught:
            await Authenticator(Settings(jwks_url=url)).start()
        assert "\n" not in str(caught.value)


@pytest.mark.anyio
async def test_jwks_over_http_refetches_at_most_once_per_30_s(jwks_server: JWKSServer) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    clock = FakeClock()
    auth = Authenticator(Settings(jwks_url=jwks_server.url), clock=clock)
    await auth.start()
    assert jwks_server.hits == 1
    assert await authenticate(auth, sign(claims(), signing_key("rsa"), "RS256", kid="k1"))
    assert jwks_server.hits == 1

    new_key = signing_key("rsa-other")
    await reject(auth, f"Bearer {sign(claims(), new_key, 'RS256', kid='k2')}")
    assert jwks_server.hits == 2  # unknown kid: one refetch
    await reject(auth, f"Bearer {sign(claims(), new_key, 'RS256', kid='k3')}")
    clock.now += 29.9
    await reject(auth, f"Bearer {sign(claims(), new_key, 'RS256', kid='k2')}")
    assert jwks_server.hits == 2  # within 30 s: none

    jwks_server.document = jwks_bytes(jwk("rsa", "k1"), jwk("rsa-other", "k2"))
    clock.now += 0.2
    assert await authenticate(auth, sign(claims(), new_key, "RS256", kid="k2"))
    assert jwks_server.hits == 3  # after 30 s: the rotated key is fetched and verifies
    assert await authenticate(auth, sign(claims(), new_key, "RS256", kid="k2"))
    assert await authenticate(auth, sign(claims(), signing_key("rsa"), "RS256", kid="k1"))
    assert jwks_server.hits == 3


@pytest.mark.anyio
async def test_jwks_known_kid_with_bad_signature_does_not_refetch(
    jwks_server: JWKSServer,
) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    auth = Authenticator(Settings(jwks_url=jwks_server.url), clock=FakeClock())
    await auth.start()
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa-other'), 'RS256', kid='k1')}")
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa'), 'RS256')[:-4]}AAAA")
    assert jwks_server.hits == 1


@pytest.mark.anyio
async def test_jwks_concurrent_unknown_kids_share_one_fetch(jwks_server: JWKSServer) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    auth = Authenticator(Settings(jwks_url=jwks_server.url), clock=FakeClock())
    await auth.start()
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"), jwk("ed25519", "k2"))
    jwks_server.gate = threading.Event()
    jwks_server.arrived.clear()
    token = sign(claims(), signing_key("ed25519"), "EdDSA", kid="k2")
    results: list[Principal] = []

    async def one() -> None:
        results.append(await authenticate(auth, token))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            for _ in range(10):
                tasks.start_soon(one)
            # The refetch is held open in the JWKS server; this loop still turns (a fetch
            # that blocked it would hang here), and no second refetch starts meanwhile.
            assert await anyio.to_thread.run_sync(jwks_server.arrived.wait, 10)
            await anyio.wait_all_tasks_blocked()
            assert results == []
            jwks_server.gate.set()
    assert len(results) == 10
    assert jwks_server.hits == 2


@pytest.mark.anyio
async def test_jwks_failed_refetch_keeps_the_old_keys(jwks_server: JWKSServer) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    clock = FakeClock()
    auth = Authenticator(Settings(jwks_url=jwks_server.url), clock=clock)
    await auth.start()
    for status, document in [(500, b"oops"), (200, b"{not json"), (200, b'{"keys": []}')]:
        jwks_server.status, jwks_server.document = status, document
        clock.now += 31
        await reject(auth, f"Bearer {sign(claims(), signing_key('rsa'), 'RS256', kid='new')}")
        assert await authenticate(auth, sign(claims(), signing_key("rsa"), "RS256", kid="k1"))
    assert jwks_server.hits == 4
    assert auth.ready


@pytest.mark.anyio
async def test_jwks_with_a_secret_and_an_allow_list(jwks_server: JWKSServer) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"), jwk("p256", "k2"))
    settings = Settings(
        jwks_url=jwks_server.url, jwt_secret=SECRET, jwt_algorithms=("HS256", "ES256")
    )
    auth = Authenticator(settings, clock=FakeClock())
    await auth.start()
    assert await authenticate(auth, issue_token(SECRET, "alice", ORG, []))
    assert await authenticate(auth, sign(claims(), signing_key("p256"), "ES256", kid="k2"))
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa'), 'RS256', kid='k1')}")
    # An HS256 token naming an unknown kid is checked against the secret, with no refetch.
    assert await authenticate(
        auth, sign(claims(), OctKey.import_key(SECRET.encode()), "HS256", "x")
    )
    assert jwks_server.hits == 1


# Claims


TIME_ERRORS = {
    "exp": "The token has expired.",
    "nbf": "The token is not valid yet.",
    "iat": "The token was issued in the future.",
}


@pytest.mark.anyio
@pytest.mark.parametrize(("claim", "offset_s"), [("exp", -35), ("nbf", 35), ("iat", 35)])
async def test_times_beyond_the_leeway(claim: str, offset_s: int) -> None:
    token = hs256(claims(**{claim: int(time.time()) + offset_s}))
    await reject(hmac_auth(), f"Bearer {token}", TIME_ERRORS[claim])


@pytest.mark.anyio
@pytest.mark.parametrize(("claim", "offset_s"), [("exp", -20), ("nbf", 20), ("iat", 20)])
async def test_times_within_the_leeway(claim: str, offset_s: int) -> None:
    token = hs256(claims(**{claim: int(time.time()) + offset_s}))
    assert await authenticate(hmac_auth(), token)
    await reject(hmac_auth(jwt_leeway_s=0), f"Bearer {token}", TIME_ERRORS[claim])


@pytest.mark.anyio
async def test_expiry_is_exclusive() -> None:
    token = hs256(claims(exp=int(time.time())))
    await reject(hmac_auth(jwt_leeway_s=0), f"Bearer {token}", TIME_ERRORS["exp"])


@pytest.mark.anyio
async def test_issue_token_now_and_ttl() -> None:
    now = time.time()
    auth = hmac_auth()
    expired = issue_token(SECRET, "alice", ORG, ["model:read"], ttl_s=60, now=now - 60 - 31)
    await reject(auth, f"Bearer {expired}", "The token has expired.")
    assert await authenticate(auth, issue_token(SECRET, "a", ORG, [], ttl_s=60, now=now - 70))
    future = issue_token(SECRET, "alice", ORG, ["model:read"], now=now + 60)
    await reject(auth, f"Bearer {future}", "The token was issued in the future.")
    assert await authenticate(auth, issue_token(SECRET, "a", ORG, [], now=now + 20))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"sub": None}, "The token has no subject."),
        ({"sub": ""}, "The token has no subject."),
        ({"sub": 42}, "The token has no subject."),
        ({"exp": None}, "The token has no expiry time."),
        ({"exp": "9999999999"}, "The token's claims are malformed."),
        ({"exp": True}, "The token's claims are malformed."),
        ({"exp": 1e400}, "The token's claims are malformed."),
        ({"nbf": "0"}, "The token's claims are malformed."),
        ({"iat": [0]}, "The token's claims are malformed."),
    ],
)
async def test_required_claims_and_types(changes: dict[str, Any], detail: str) -> None:
    await reject(hmac_auth(), f"Bearer {hs256(claims(**changes))}", detail)


@pytest.mark.anyio
async def test_issuer_and_audience() -> None:
    auth = hmac_auth(jwt_issuer="https://idp.example", jwt_audience="streamer")
    good = {"iss": "https://idp.example", "aud": "streamer"}
    assert await authenticate(auth, hs256(claims(**good)))
    assert await authenticate(auth, hs256(claims(**(good | {"aud": ["other", "streamer"]}))))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"iss": None}, "The token's issuer is not accepted."),
        ({"iss": "https://evil.example"}, "The token's issuer is not accepted."),
        ({"iss": ["https://idp.example"]}, "The token's issuer is not accepted."),
        ({"aud": None}, "The token's audience is not accepted."),
        ({"aud": "other"}, "The token's audience is not accepted."),
        ({"aud": ["other"]}, "The token's audience is not accepted."),
        ({"aud": {"streamer": 1}}, "The token's audience is not accepted."),
    ]
    for bad, detail in cases:
        await reject(auth, f"Bearer {hs256(claims(**(good | bad)))}", detail)
    issued = issue_token(SECRET, "a", ORG, [], issuer="https://idp.example", audience="streamer")
    assert await authenticate(auth, issued)
    # Unconfigured, iss and aud are not checked.
    assert await authenticate(hmac_auth(), hs256(claims(iss="x", aud="y")))


@pytest.mark.anyio
async def test_permissions_scope_and_organization_claims() -> None:
    async def principal(auth: Authenticator, **changes: Any) -> Principal:
        return await authenticate(auth, hs256(claims(**changes)))

    auth = hmac_auth()
    mixed = await principal(auth, permissions=["a", 1, None, "b"], scope="c  d organization:viewer")
    assert mixed.permissions == frozenset({"a", "b", "c", "d", "organization:viewer"})
    assert (await principal(auth, permissions="model:read")).permissions == frozenset()
    assert (await principal(auth, scope=["x"])).permissions == frozenset({"model:read"})
    assert (await principal(auth, org_id=7)).organization is None
    custom = hmac_auth(jwt_org_claim="tenant", jwt_permissions_claim="roles")
    renamed = await principal(custom, tenant="org-x", roles=["model:read"])
    assert renamed == Principal("alice", "org-x", frozenset({"model:read"}))
    issued = issue_token(SECRET, "a", "org-y", ["r"], org_claim="tenant", permissions_claim="roles")
    assert await authenticate(custom, issued) == Principal("a", "org-y", frozenset({"r"}))


# authorize()


@pytest.mark.parametrize(
    "principal",
    [
        Principal("alice", ORG, frozenset({"model:read"})),
        Principal("alice", ORG, frozenset({"organization:viewer", "x"})),
    ],
)
def test_authorize_allows(principal: Principal) -> None:
    assert authorize(principal) == ORG


@pytest.mark.parametrize(
    "principal",
    [
        Principal("alice", ORG, frozenset()),
        Principal("alice", ORG, frozenset({"model:write", "Model:Read", "model:read:all"})),
        Principal("alice", None, frozenset({"model:read"})),
        Principal("alice", "", frozenset({"model:read"})),
    ],
)
def test_authorize_forbids(principal: Principal) -> None:
    with pytest.raises(errors.Forbidden) as caught:
        authorize(principal)
    assert (caught.value.status, caught.value.code) == (403, "insufficient_scope")


@pytest.mark.anyio
async def test_authorize_from_tokens() -> None:
    auth = hmac_auth()
    viewer = hs256(claims(permissions=None, scope="organization:viewer"))
    assert authorize(await authenticate(auth, viewer)) == ORG
    cases: list[dict[str, Any]] = [{"org_id": None}, {"org_id": 42}, {"permissions": ["x"]}]
    for changes in cases:
        with pytest.raises(errors.Forbidden):
            authorize(await authenticate(auth, hs256(claims(**changes))))


# Configuration


def test_no_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no JWT key"):
        Authenticator(Settings())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jwt_secret": "short"}, "STREAMER_JWT_SECRET"),
        ({"jwt_secret": SECRET, "jwt_algorithms": ("RS256",)}, "STREAMER_JWT_ALGORITHMS"),
        ({"jwt_secret": SECRET, "jwt_algorithms": ("HS256", "XS1")}, "unsupported algorithm"),
        ({"jwt_secret": SECRET, "jwt_algorithms": ("HS256", "ES256")}, "verifies ES256"),
        ({"jwks_url": "x.json", "jwt_algorithms": ("HS256",)}, "verifies HS256"),
        ({"jwt_public_key_file": "/nonexistent/key.pem"}, "cannot read"),
    ],
)
def test_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Authenticator(Settings(**settings))
    assert "\n" not in str(caught.value)


def test_unusable_key_files(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    private = private_key("p256").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secp192 = ec.generate_private_key(ec.SECP192R1()).public_key()
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = {
        b"not a key": "no PEM public key",
        private: "no PEM public key",
        weak.public_bytes(*spki): "at least 2048 bits",
        secp192.public_bytes(*spki): "unsupported key",
    }
    for data, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            Authenticator(Settings(jwt_public_key_file=write(tmp_path, "key.pem", data)))
    with pytest.raises(ConfigError, match="not a public key"):
        Authenticator(Settings(jwt_secret=public_pem("rsa").decode()))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("size", "served"),
    [(32, {"HS256"}), (47, {"HS256"}), (48, {"HS256", "HS384"}), (64, {"HS256", "HS384", "HS512"})],
)
async def test_secret_serves_the_hmac_algorithms_it_is_long_enough_for(
    size: int, served: set[str]
) -> None:
    """RFC 7518 section 3.2: a key at least as long as the hash (32, 48, 64 bytes)."""
    secret = "s" * size
    auth = Authenticator(Settings(jwt_secret=secret))
    for alg in ["HS256", "HS384", "HS512"]:
        token = forge(json.dumps({"alg": alg}).encode(), claims_json(), secret.encode())
        if alg == "HS256":
            assert await authenticate(auth, token)
        else:  # forge signs with SHA-256 whatever the header says: only acceptance matters
            detail = BAD_SIGNATURE if alg in served else ALG_REFUSED
            await reject(auth, f"Bearer {token}", detail)


@pytest.mark.parametrize(
    ("secret", "algorithms", "message"),
    [
        ("s" * 14, None, "14 bytes is too short for HS256, which needs at least 32"),
        ("s" * 31, None, "31 bytes is too short for HS256"),
        ("é" * 15, None, "30 bytes is too short for HS256"),  # bytes, not characters
        ("s" * 40, ("HS512",), "40 bytes is too short for HS512, which needs at least 64"),
        ("s" * 40, ("HS256", "HS512"), "too short for HS512"),
        ("s" * 50, ("HS384", "HS512"), "too short for HS512"),
        ("s" * 47, ("HS384",), "too short for HS384, which needs at least 48"),
    ],
)
def test_secret_too_short_for_its_algorithms(
    secret: str, algorithms: tuple[str, ...] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Authenticator(Settings(jwt_secret=secret, jwt_algorithms=algorithms))
    assert str(caught.value).startswith("STREAMER_JWT_SECRET: ")
    assert "\n" not in str(caught.value)
    assert secret not in str(caught.value)


def test_issue_token_refuses_a_secret_too_short_for_its_algorithm() -> None:
    assert issue_token("s" * 48, "alice", ORG, [], algorithm="HS384")
    with pytest.raises(ConfigError, match="too short for HS512"):
        issue_token("s" * 63, "alice", ORG, [], algorithm="HS512")


def test_issue_token_is_hmac_only() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        issue_token(SECRET, "alice", ORG, [], algorithm="RS256")
    with pytest.raises(ConfigError):
        issue_token("short", "alice", ORG, [])


# Attacks: each token below is signed with the server's real secret unless said otherwise,
# and each is refused with 401 invalid_token.

HS256_HEADER = b'{"alg":"HS256","typ":"JWT"}'
MALFORMED = "The token is malformed."
CLAIMS_MALFORMED = "The token's claims are malformed."
ALG_REFUSED = "The token's signing algorithm is not accepted."
BAD_SIGNATURE = "The token's signature is invalid."


@pytest.mark.anyio
async def test_forge_makes_tokens_the_server_accepts() -> None:
    """The attacks below would pass but for the one thing each of them changes."""
    assert await authenticate(hmac_auth(), forge(HS256_HEADER, claims_json()))


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
async def test_claims_not_in_utf8(encoding: str) -> None:
    """json.loads takes bytes in any UTF and guesses; RFC 8725 section 3.7 admits UTF-8 only."""
    payload = json.dumps(claims()).encode(encoding)
    assert json.loads(payload) == claims() | {"iat": json.loads(payload)["iat"]}
    await reject(hmac_auth(), f"Bearer {forge(HS256_HEADER, payload)}", CLAIMS_MALFORMED)


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be"])
async def test_header_not_in_utf8(encoding: str) -> None:
    header = HS256_HEADER.decode().encode(encoding)
    await reject(hmac_auth(), f"Bearer {forge(header, claims_json())}", MALFORMED)


@pytest.mark.anyio
async def test_utf8_byte_order_mark_is_refused() -> None:
    bom = b"\xef\xbb\xbf"
    await reject(hmac_auth(), f"Bearer {forge(HS256_HEADER, bom + claims_json())}")
    await reject(hmac_auth(), f"Bearer {forge(bom + HS256_HEADER, claims_json())}")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "payload",
    [
        # The expired exp first: a parser that keeps the last name reads a valid token.
        b'{"sub":"alice","org_id":"org-acme","permissions":["model:read"],"exp":1000,"exp":%d}',
        # Another tenant's org_id first, the caller's last.
        b'{"sub":"alice","org_id":"org-other","permissions":["model:read"],"exp":%d,'
        b'"org_id":"org-acme"}',
        b'{"sub":"mallory","sub":"alice","org_id":"org-acme","permissions":["model:read"],'
        b'"exp":%d}',
        # A repeated name anywhere, however deep, and whatever the values.
        b'{"sub":"alice","org_id":"org-acme","permissions":["model:read"],"exp":%d,'
        b'"x":[{"a":1,"a":1}]}',
    ],
)
async def test_repeated_claim_names(payload: bytes) -> None:
    forged = forge(HS256_HEADER, payload % (int(time.time()) + 3600))
    await reject(hmac_auth(), f"Bearer {forged}", CLAIMS_MALFORMED)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"none","alg":"HS256"}',
        b'{"alg":"HS256","alg":"HS256"}',
        b'{"alg":"HS256","kid":"a","kid":"b"}',
    ],
)
async def test_repeated_header_names(header: bytes) -> None:
    await reject(hmac_auth(), f"Bearer {forge(header, claims_json())}", MALFORMED)


@pytest.mark.anyio
@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/jwt", "json"])
async def test_a_payload_declared_as_another_content_type(cty: str) -> None:
    """A nested token (cty JWT) must never be taken as the claims it wraps, or its own."""
    header = json.dumps({"alg": "HS256", "cty": cty}).encode()
    await reject(hmac_auth(), f"Bearer {forge(header, claims_json())}", MALFORMED)


@pytest.mark.anyio
async def test_nested_jwt() -> None:
    inner = issue_token(SECRET, "alice", ORG, ["model:read"])
    outer = forge(b'{"alg":"HS256","cty":"JWT"}', inner.encode())
    await reject(hmac_auth(), f"Bearer {outer}")
    # Without cty, the payload is a token's text, not a claims object.
    await reject(hmac_auth(), f"Bearer {forge(HS256_HEADER, inner.encode())}", CLAIMS_MALFORMED)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    [
        b"1e300",
        b"1e400",  # json.loads makes it float("inf")
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b'"9999999999"',
        b'"1e300"',
        b"true",
        b"null",
        b"[9999999999]",
        b"-1",
        str(MAX_TIME + 1).encode(),
        b"9" * 5000,  # beyond Python's int-from-text limit
    ],
)
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_times_that_are_not_sane_numbers(claim: str, value: bytes) -> None:
    base = {name: v for name, v in claims().items() if name != claim}
    payload = json.dumps(base).encode()[:-1] + b', "' + claim.encode() + b'": ' + value + b"}"
    await reject(hmac_auth(), f"Bearer {forge(HS256_HEADER, payload)}")


@pytest.mark.anyio
async def test_times_at_the_bounds() -> None:
    assert await authenticate(hmac_auth(), forge(HS256_HEADER, claims_json(exp=MAX_TIME)))
    assert await authenticate(hmac_auth(), forge(HS256_HEADER, claims_json(nbf=0, iat=0.5)))
    assert await authenticate(hmac_auth(), forge(HS256_HEADER, claims_json(exp=1e10 + 0.25)))


@pytest.mark.anyio
async def test_a_lone_surrogate_in_the_claims() -> None:
    payload = claims_json().replace(b'"alice"', b'"al\\ud800ice"')
    await reject(hmac_auth(), f"Bearer {forge(HS256_HEADER, payload)}", CLAIMS_MALFORMED)
    paired = claims_json().replace(b'"alice"', b'"al\\ud83d\\ude00ice"')
    assert (await authenticate(hmac_auth(), forge(HS256_HEADER, paired))).subject == "al😀ice"


@pytest.mark.anyio
@pytest.mark.parametrize("alg", ["hs256", "Hs256", "HS256 ", " HS256", "HS256\x00", "None", "nOnE"])
async def test_alg_is_matched_exactly(alg: str) -> None:
    header = json.dumps({"alg": alg}).encode()
    await reject(hmac_auth(), f"Bearer {forge(header, claims_json())}", ALG_REFUSED)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kid", "key"),
    [
        ("../../../../../../dev/null", b""),  # the key a server that opened kid would read
        ("/proc/self/environ", b""),
        ("..\\..\\windows\\win.ini", b""),
        ("x' UNION SELECT 'attacker-key' --", b"attacker-key"),
        ("1; DROP TABLE keys; --", b""),
        ("k1\x00", b""),
    ],
)
async def test_kid_is_only_a_lookup_key(jwks_server: JWKSServer, kid: str, key: bytes) -> None:
    """kid never names a file or a query: a token signed with what such a lookup would
    find is a bad signature, and an unknown kid only refetches the configured JWKS."""
    forged = forge(json.dumps({"alg": "HS256", "kid": kid}).encode(), claims_json(), key)
    await reject(hmac_auth(), f"Bearer {forged}", BAD_SIGNATURE)
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    auth = Authenticator(Settings(jwks_url=jwks_server.url), clock=FakeClock())
    await auth.start()
    await reject(auth, f"Bearer {sign(claims(), signing_key('rsa-other'), 'RS256', kid=kid)}")
    assert jwks_server.hits == 2  # the one refetch, of the configured URL
    assert jwks_server.paths == ["/jwks.json", "/jwks.json"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "parameter",
    [
        {"jku": "http://127.0.0.1:9/jwks.json"},
        {"x5u": "http://127.0.0.1:9/cert.pem"},
        {"jwk": {"kty": "oct", "k": b64(SECRET.encode())}},
        {"x5c": ["MIIB"]},
        {"crit": ["exp2"], "exp2": 1},
        {"crit": []},
        {"crit": ["b64"], "b64": False},
    ],
)
async def test_header_parameters_that_are_never_trusted(parameter: dict[str, Any]) -> None:
    """Keys come from the configuration only, and no extension is understood (RFC 7515
    section 4.1.11): such tokens are refused even when the signature holds."""
    header = json.dumps({"alg": "HS256", **parameter}).encode()
    await reject(hmac_auth(), f"Bearer {forge(header, claims_json())}", MALFORMED)


@pytest.mark.anyio
async def test_a_key_carried_in_the_token_is_not_used(tmp_path: Path) -> None:
    """An RS256 token signed by the attacker's key and carrying that key as `jwk`."""
    auth = Authenticator(Settings(jwt_public_key_file=write(tmp_path, "k", public_pem("rsa"))))
    attacker = signing_key("rsa-other")
    header = {"alg": "RS256", "jwk": dict(attacker.as_dict(private=False))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        forged = jwt.encode(header, claims(), attacker, algorithms=["RS256"])
    await reject(auth, f"Bearer {forged}", MALFORMED)


@pytest.mark.anyio
async def test_rsa_public_key_as_the_hmac_secret_with_both_configured(tmp_path: Path) -> None:
    """Algorithm confusion: the PEM (and its DER) used as an HS256 key, with the server
    holding a secret too, so HS256 is an accepted algorithm."""
    pem = public_pem("rsa")
    der = serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    auth = Authenticator(Settings(jwt_public_key_file=write(tmp_path, "k", pem), jwt_secret=SECRET))
    for key in (pem, pem.strip(), der):
        forged = forge(HS256_HEADER, claims_json(), key)
        await reject(auth, f"Bearer {forged}", BAD_SIGNATURE)


@pytest.mark.anyio
async def test_token_length_is_capped_before_decoding() -> None:
    def padded(size: int) -> str:
        return forge(HS256_HEADER, claims_json(pad="p" * size))

    size = (MAX_TOKEN_CHARS - len(padded(0))) * 3 // 4
    fits = padded(size)
    assert MAX_TOKEN_CHARS - 4 < len(fits) <= MAX_TOKEN_CHARS  # base64 grows 4 chars at a time
    assert await authenticate(hmac_auth(), fits)
    over = padded(size + 3)
    assert len(over) == len(fits) + 4
    await reject(hmac_auth(), f"Bearer {over}", MALFORMED)
    megabyte = forge(HS256_HEADER, claims_json(pad="p" * (1 << 20)))
    await reject(hmac_auth(), f"Bearer {megabyte}", MALFORMED)
    # Not even split: a megabyte of dots is refused by its length alone.
    with pytest.raises(errors.InvalidToken):
        parse_compact("." * (1 << 20))


@pytest.mark.parametrize(
    "token",
    [
        "e30.e30.",  # "{}" and "{}": a header without alg is refused later, not here
    ],
)
def test_parse_compact_reads_objects(token: str) -> None:
    assert parse_compact(token) == ({}, {})


@pytest.mark.parametrize(
    "token",
    [
        "e30=.e30.",  # padding
        "e30.e30=.",
        "e30.e30.A",  # a length no base64 has
        "e31.e30.",  # stray bits in the last character: "e30" is the canonical "{}"
        "e30.e30.AB",  # likewise in the signature
        "e30 .e30.",
        "e30.e30",
        "e30.e30.e30.e30",
        ".e30.",
        "e30..",
        "e3+.e30.",
        "e3/.e30.",
    ],
)
def test_parse_compact_refuses_loose_base64url(token: str) -> None:
    with pytest.raises(errors.InvalidToken):
        parse_compact(token)


def test_attacks_over_a_real_socket_never_reach_the_store(tmp_path: Path) -> None:
    """The server holds a secret and an RSA public key; every attack is a 401 problem (or
    the protocol's 431 for a head over 64 KiB), and the store is never asked anything."""
    url = f"memory://attacks-{uuid.uuid4().hex}"
    seed(url)
    spy = SpyBackend(url)
    pem = public_pem("rsa")
    settings = Settings(
        storage_url=url, jwt_secret=SECRET, jwt_public_key_file=write(tmp_path, "k", pem)
    )
    future = int(time.time()) + 3600
    valid = b'{"sub":"alice","org_id":"org-acme","permissions":["model:read"],"exp":%d'
    attacks = {
        "claims in UTF-16": forge(HS256_HEADER, claims_json().decode().encode("utf-16")),
        "claims in UTF-32": forge(HS256_HEADER, claims_json().decode().encode("utf-32")),
        "header in UTF-16": forge(HS256_HEADER.decode().encode("utf-16"), claims_json()),
        "cty JWT": forge(b'{"alg":"HS256","cty":"JWT"}', claims_json()),
        "exp twice": forge(HS256_HEADER, valid % 1000 + b',"exp":%d}' % future),
        "org_id twice": forge(
            HS256_HEADER, b'{"org_id":"org-other",' + (valid % future)[1:] + b"}"
        ),
        "exp 1e300": forge(HS256_HEADER, claims_json(exp=1e300)),
        "exp a string": forge(HS256_HEADER, claims_json(exp=str(future))),
        "nbf NaN": forge(HS256_HEADER, claims_json()[:-1] + b', "nbf": NaN}'),
        "alg hs256": forge(b'{"alg":"hs256"}', claims_json()),
        "alg nOnE": raw_token({"alg": "nOnE"}, claims(), None),
        "jku": forge(b'{"alg":"HS256","jku":"http://127.0.0.1:9/k"}', claims_json()),
        "x5u": forge(b'{"alg":"HS256","x5u":"http://127.0.0.1:9/c"}', claims_json()),
        "jwk": forge(b'{"alg":"HS256","jwk":{"kty":"oct","k":"AA"}}', claims_json()),
        "x5c": forge(b'{"alg":"HS256","x5c":["MIIB"]}', claims_json()),
        "crit": forge(b'{"alg":"HS256","crit":["exp2"],"exp2":1}', claims_json()),
        "kid traversal": forge(b'{"alg":"HS256","kid":"../../../dev/null"}', claims_json(), b""),
        "kid SQL": forge(b'{"alg":"HS256","kid":"\' OR \'1\'=\'1"}', claims_json(), b"1"),
        "RS256 key as HS256": forge(HS256_HEADER, claims_json(), pem),
        "60 KiB": forge(HS256_HEADER, claims_json(pad="p" * 45_000)),
    }
    try:
        check_attacks(serve_in_thread(settings, store=spy.store), spy, attacks)
    finally:
        spy.remove_all()


def check_attacks(server: Iterator[Running], spy: SpyBackend, attacks: dict[str, str]) -> None:
    for running in server:
        download = running.url + "/api/v1/models/mdl-alpha/training-metrics/logs/download"
        spy.calls.clear()  # start-up's own check that the store answers
        with httpx.Client(timeout=30) as client:
            for name, token in attacks.items():
                response = client.get(download, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 401, name
                assert response.headers["content-type"] == "application/problem+json", name
                assert response.json()["code"] == "invalid_token", name
                assert response.headers["www-authenticate"].endswith('error="invalid_token"')
                assert token.split(".")[1][:20] not in response.text, name
            megabyte = forge(HS256_HEADER, claims_json(pad="p" * (1 << 20)))
            response = client.get(download, headers={"Authorization": f"Bearer {megabyte}"})
            assert response.status_code == 431
            assert response.headers["content-type"] == "application/problem+json"
            assert spy.calls == []
            good = forge(HS256_HEADER, claims_json())
            response = client.get(download, headers={"Authorization": f"Bearer {good}"})
            assert response.status_code == 200
            assert response.content == LOG_A2
            assert spy.calls != []
