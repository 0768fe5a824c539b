"""streamer.auth.TokenCache: a verified token is remembered until its exp (plus leeway)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from streamer import errors
from streamer.auth import Authenticator, Principal, TokenCache, issue_token
from streamer.config import Settings
from testkit.jwts import FakeClock, claims, jwk, jwks_bytes, sign, signing_key
from testkit.servers import JWKSServer

pytestmark = pytest.mark.anyio

SECRET = "a-test-secret-that-is-32-bytes!!"


class Counting(Authenticator):
    """An Authenticator that counts the verifications it runs."""

    verified = 0

    async def authenticate(self, authorization: str | None) -> Principal:
        self.verified += 1
        return await super().authenticate(authorization)


def token(ttl_s: int = 60, now: float | None = None, **extra: Any) -> tuple[str, int]:
    issued = int(time.time() if now is None else now)
    return issue_token(
        SECRET, "alice", "org-acme", ["model:read"], ttl_s, now=issued
    ), issued + ttl_s


async def test_a_cached_token_is_refused_once_exp_plus_leeway_has_passed() -> None:
    for leeway in (30, 0):
        auth = Counting(Settings(jwt_secret=SECRET, jwt_leeway_s=leeway))
        clock = FakeClock()
        cache = TokenCache(auth, clock=clock)
        credential, exp = token()
        clock.now = time.time()
        first = await cache.authenticate(f"Bearer {credential}")
        clock.now = exp + leeway - 0.001
        assert await cache.authenticate(f"Bearer {credential}") == first
        assert auth.verified == 1  # the second answer came from the cache
        clock.now = exp + leeway
        with pytest.raises(errors.InvalidToken) as caught:
            await cache.authenticate(f"Bearer {credential}")
        assert caught.value.detail == "The token has expired."
        clock.now = exp + leeway + 3600
        with pytest.raises(errors.InvalidToken):
            await cache.authenticate(f"Bearer {credential}")


async def test_an_expired_token_is_never_cached() -> None:
    auth = Counting(Settings(jwt_secret=SECRET, jwt_leeway_s=0))
    cache = TokenCache(auth)
    credential, _ = token(ttl_s=60, now=time.time() - 120)
    for _ in range(2):
        with pytest.raises(errors.InvalidToken) as caught:
            await cache.authenticate(f"Bearer {credential}")
        assert caught.value.detail == "The token has expired."
    assert auth.verified == 2


async def test_failures_are_verified_again_every_time() -> None:
    auth = Counting(Settings(jwt_secret=SECRET))
    cache = TokenCache(auth)
    credential, _ = token()
    forged = credential[:-4] + ("AAAA" if not credential.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(errors.InvalidToken):
            await cache.authenticate(f"Bearer {forged}")
    with pytest.raises(errors.MissingToken):
        await cache.authenticate(None)
    assert auth.verified == 2
    # The genuine token is not spoiled by its forgery having been refused.
    assert (await cache.authenticate(f"Bearer {credential}")).subject == "alice"


async def test_the_cache_is_keyed_by_the_token_and_bounded() -> None:
    auth = Counting(Settings(jwt_secret=SECRET))
    cache = TokenCache(auth, size=2)
    a, b, c = (token(ttl_s=60 + n)[0] for n in range(3))
    await cache.authenticate(f"Bearer {a}")
    await cache.authenticate(f"bearer  {a} ")  # the same token, written otherwise
    assert auth.verified == 1
    await cache.authenticate(f"Bearer {b}")
    await cache.authenticate(f"Bearer {c}")  # a, the oldest, makes room
    assert auth.verified == 3
    await cache.authenticate(f"Bearer {c}")
    assert auth.verified == 3
    await cache.authenticate(f"Bearer {a}")
    assert auth.verified == 4


async def test_a_key_taken_out_of_the_jwks_refuses_its_cached_tokens(
    jwks_server: JWKSServer, tmp_path: Path
) -> None:
    jwks_server.document = jwks_bytes(jwk("rsa", "k1"))
    clock = FakeClock()
    auth = Counting(Settings(jwks_url=jwks_server.url), clock=clock)
    await auth.start()
    cache = TokenCache(auth)
    old = sign(claims(), signing_key("rsa"), "RS256", kid="k1")
    await cache.authenticate(f"Bearer {old}")
    await cache.authenticate(f"Bearer {old}")
    assert auth.verified == 1
    # The issuer rotates: k1 is withdrawn, k2 published; a k2 token makes streamer refetch.
    jwks_server.document = jwks_bytes(jwk("rsa-other", "k2"))
    clock.now += 31
    new = sign(claims(), signing_key("rsa-other"), "RS256", kid="k2")
    assert (await cache.authenticate(f"Bearer {new}")).subject == "alice"
    with pytest.raises(errors.InvalidToken):
        await cache.authenticate(f"Bearer {old}")
