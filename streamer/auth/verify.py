"""Verification: a Bearer token's signature and claims become a Principal, then authorize.

The token's `alg` picks the key family and its `kid` the key; `none` is never accepted.
The header may not carry or point to a key (`jku`, `jwk`, `x5u`, `x5c`: keys come from the
configuration alone), name critical extensions (`crit`, `b64`: none is understood here) or
declare its payload another content type (`cty`, a nested JWT among them). Every failure
is an `InvalidToken` with a fixed detail of ours, so no token text or library message
reaches a response.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jws import CompactSignature, JWSRegistry

from streamer import errors
from streamer.config import Settings

from .compact import bearer_credential, parse_compact
from .keys import HMAC, JWKS, Verifier, configure, secret_key

READ_PERMISSIONS = frozenset({"model:read", "organization:viewer"})
# exp, nbf and iat: numbers from 0 to 9999-12-31T23:59:59Z, the last instant RFC 3339 can
# write; 1e300 would be a token that never expires.
MAX_TIME = 253_402_300_799
# Header parameters refused outright: a key or a key's address inside the token itself
# (keys come from the configuration alone), extensions we would have to understand, and
# a payload declared as something other than a claims set (a nested JWT, say).
REFUSED_HEADER_PARAMETERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit", "b64", "cty"})


@dataclass(frozen=True)
class Principal:
    """Who called: the verified token's subject, organization and permissions."""

    subject: str
    organization: str | None
    permissions: frozenset[str]


class _Registry(JWSRegistry):
    max_header_length = 4096  # room for an x5c chain; the whole token is capped anyway

    def get_alg(self, name: str) -> JWSAlgModel:
        # The base class warns on every use of "EdDSA" (deprecated by RFC 9864); an operator
        # who allowed it has chosen it, and the allow-list is the only gate we want.
        if name == "none" or name not in self.algorithms or name not in (self.allowed or ()):
            raise UnsupportedAlgorithmError("algorithm not allowed")
        return self.algorithms[name]


class Authenticator:
    """Verifies Bearer tokens against the keys configured in `Settings`."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Load the secret and PEM key; raise `ConfigError` when the key set-up is unusable."""
        config = configure(settings)
        self._settings = settings
        self._static = config.static
        self._algorithms = config.algorithms
        self._registry = _Registry(algorithms=self._algorithms, strict_check_header=False)
        url = settings.jwks_url
        self._jwks = JWKS(url, config.jwks_algorithms, clock=clock) if url is not None else None

    async def start(self) -> None:
        """Fetch the JWKS if one is configured; raise `ConfigError` if it cannot be loaded."""
        if self._jwks is not None:
            await self._jwks.start()

    @property
    def ready(self) -> bool:
        """True once every configured key source is loaded."""
        return self._jwks is None or self._jwks.loaded

    @property
    def leeway_s(self) -> float:
        """The clock skew allowed on exp, nbf and iat."""
        return self._settings.jwt_leeway_s

    @property
    def key_generation(self) -> int:
        """Changes whenever the key set may have: each load of the JWKS."""
        return 0 if self._jwks is None else self._jwks.generation

    async def authenticate(self, authorization: str | None) -> Principal:
        """Verify the raw `Authorization` header value; raise `MissingToken`/`InvalidToken`."""
        token = bearer_credential(authorization)
        header, claims = parse_compact(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise errors.InvalidToken("The token's signing algorithm is not accepted.")
        if not REFUSED_HEADER_PARAMETERS.isdisjoint(header) or not isinstance(kid, str | None):
            raise errors.InvalidToken("The token is malformed.")
        try:
            obj = jws.extract_compact(token.encode("ascii"), registry=self._registry)
            self._registry.check_header(header)
        except (JoseError, ValueError, TypeError, RecursionError):
            raise errors.InvalidToken("The token is malformed.") from None
        if not await self._verify(obj, alg, kid):
            raise errors.InvalidToken("The token's signature is invalid.")
        return principal_of(claims, self._settings, time.time())

    async def _verify(self, obj: CompactSignature, alg: str, kid: str | None) -> bool:
        keys = self._jwks
        fetched = keys.verifiers if keys is not None else []
        jwks = [v for v in fetched if kid is None or v.kid in (kid, None)]
        if any(self._check(obj, alg, v) for v in (*self._static, *jwks)):
            return True
        if keys is None or kid is None or alg not in keys.algorithms:
            return False
        if any(v.kid == kid for v in fetched):
            return False
        await keys.refetch()
        return any(self._check(obj, alg, v) for v in keys.verifiers if v.kid == kid)

    def _check(self, obj: CompactSignature, alg: str, verifier: Verifier) -> bool:
        if alg not in verifier.algorithms:
            return False
        try:  # joserfc compares HMAC digests with hmac.compare_digest
            return jws.validate_compact(obj, verifier.key, registry=self._registry)
        except (JoseError, ValueError):
            return False


def principal_of(claims: dict[str, Any], s: Settings, now: float) -> Principal:
    """The Principal of a verified token's claims; `InvalidToken` if a claim refuses it."""
    _check_times(claims, now, s.jwt_leeway_s)
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise errors.InvalidToken("The token has no subject.")
    if s.jwt_issuer is not None and claims.get("iss") != s.jwt_issuer:
        raise errors.InvalidToken("The token's issuer is not accepted.")
    if s.jwt_audience is not None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if s.jwt_audience not in [a for a in audiences if isinstance(a, str)]:
            raise errors.InvalidToken("The token's audience is not accepted.")
    organization, listed = claims.get(s.jwt_org_claim), claims.get(s.jwt_permissions_claim)
    scope = claims.get("scope")
    permissions = {p for p in listed if isinstance(p, str)} if isinstance(listed, list) else set()
    permissions.update(scope.split() if isinstance(scope, str) else ())
    return Principal(
        subject=subject,
        organization=organization if isinstance(organization, str) else None,
        permissions=frozenset(permissions),
    )


def authorize(principal: Principal) -> str:
    """The organization whose models the principal may read; `Forbidden` if none."""
    if not principal.permissions & READ_PERMISSIONS:
        raise errors.Forbidden()
    if not principal.organization:
        raise errors.Forbidden("The token has no organization claim.")
    return principal.organization


def issue_token(
    secret: str,
    subject: str,
    organization: str,
    permissions: Sequence[str],
    ttl_s: int = 3600,
    algorithm: str = "HS256",
    now: float | None = None,
    *,
    org_claim: str = "org_id",
    permissions_claim: str = "permissions",
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """Sign an HMAC JWT for `subject`, valid for `ttl_s` seconds from `now` (default: now)."""
    if algorithm not in HMAC:
        raise ValueError(f"algorithm must be one of {', '.join(sorted(HMAC))}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, org_claim: organization, "iat": issued}
    claims |= {permissions_claim: list(permissions), "exp": issued + ttl_s}
    claims |= {"iss": issuer} if issuer is not None else {}
    claims |= {"aud": audience} if audience is not None else {}
    key = secret_key(secret, {algorithm})
    return jwt.encode({"alg": algorithm}, claims, key, algorithms=[algorithm])


def _check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    if "exp" not in claims:
        raise errors.InvalidToken("The token has no expiry time.")
    if not all(_is_time(claims[name]) for name in ("exp", "nbf", "iat") if name in claims):
        raise errors.InvalidToken("The token's claims are malformed.")
    exp, nbf, iat = claims["exp"], claims.get("nbf"), claims.get("iat")
    if now >= exp + leeway:
        raise errors.InvalidToken("The token has expired.")
    if nbf is not None and now + leeway < nbf:
        raise errors.InvalidToken("The token is not valid yet.")
    if iat is not None and iat > now + leeway:
        raise errors.InvalidToken("The token was issued in the future.")


def _is_time(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and 0 <= value <= MAX_TIME
