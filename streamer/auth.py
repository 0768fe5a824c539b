"""Bearer-JWT authentication: verify the token, turn its claims into a Principal, authorize.

Keys come from a shared secret, a PEM public key file and a JWKS document, any of them
at once. The token's `alg` picks the key family and its `kid` the key: an HMAC token only
ever meets the secret, and `none` is never accepted. Every failure is an `InvalidToken`
with a fixed detail of ours, so no token text or library message reaches a response.

Before any signature check, `parse_compact` reads the token strictly (RFC 7515, 7519,
8725): at most 8 KiB, three parts of canonical base64url, header and claims each one JSON
object of UTF-8 text with no repeated member name, no NaN or Infinity, no lone surrogate.
The header may not carry or point to a key (`jku`, `jwk`, `x5u`, `x5c`: keys come from the
configuration alone), name critical extensions (`crit`, `b64`: none is understood here) or
declare its payload another content type (`cty`, a nested JWT among them).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc import jws, jwt
from joserfc.errors import JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from joserfc.jws import CompactSignature, JWSRegistry

from streamer import errors
from streamer.config import ConfigError, Settings

HMAC = frozenset({"HS256", "HS384", "HS512"})
RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
OKP_BY_CURVE = {"Ed25519": frozenset({"EdDSA", "Ed25519"}), "Ed448": frozenset({"EdDSA", "Ed448"})}
ASYMMETRIC = RSA.union(EC_BY_CURVE.values(), *OKP_BY_CURVE.values())
ALL = HMAC | ASYMMETRIC
READ_PERMISSIONS = frozenset({"model:read", "organization:viewer"})

REFETCH_INTERVAL_S = 30.0
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20
# Checked before any decoding: a longer credential costs nothing but a length check.
MAX_TOKEN_CHARS = 8 * 1024
# RFC 7518 section 3.2: an HMAC key at least as long as the hash. The secret is used as
# its UTF-8 bytes; with no STREAMER_JWT_ALGORITHMS it serves the HS algorithms it is long
# enough for.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048
# exp, nbf and iat: numbers from 0 to 9999-12-31T23:59:59Z, the last instant RFC 3339 can
# write; 1e300 would be a token that never expires.
MAX_TIME = 253_402_300_799
# Header parameters refused outright: a key or a key's address inside the token itself
# (keys come from the configuration alone), extensions we would have to understand, and
# a payload declared as something other than a claims set (a nested JWT, say).
REFUSED_HEADER_PARAMETERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit", "b64", "cty"})

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_FETCH_ERRORS = (OSError, ValueError, RecursionError, http.client.HTTPException)
_KEY_CLASSES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]]
_KEY_CLASSES = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
_NATIVE_TYPES = {
    "RSA": rsa.RSAPublicKey,
    "EC": ec.EllipticCurvePublicKey,
    "OKP": ed25519.Ed25519PublicKey | ed448.Ed448PublicKey,
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """Who called: the verified token's subject, organization and permissions."""

    subject: str
    organization: str | None
    permissions: frozenset[str]


@dataclass(frozen=True)
class _Verifier:
    key: Key
    algorithms: frozenset[str]
    kid: str | None = None


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
        if not settings.has_key:
            raise ConfigError(
                "no JWT key configured: set STREAMER_JWT_SECRET,"
                " STREAMER_JWT_PUBLIC_KEY_FILE or STREAMER_JWKS_URL"
            )
        explicit = frozenset(settings.jwt_algorithms or ())
        for alg in sorted(explicit - ALL)[:1]:
            raise ConfigError(f"STREAMER_JWT_ALGORITHMS: unsupported algorithm {alg}")
        static: dict[str, _Verifier] = {}
        if settings.jwt_secret is not None:
            static["STREAMER_JWT_SECRET"] = _secret_verifier(settings.jwt_secret, explicit)
        if settings.jwt_public_key_file is not None:
            static["STREAMER_JWT_PUBLIC_KEY_FILE"] = _pem_verifier(settings.jwt_public_key_file)
        jwks_algorithms = ASYMMETRIC if settings.jwks_url else frozenset()
        if explicit:
            for name, verifier in static.items():
                if not verifier.algorithms & explicit:
                    raise ConfigError(f"STREAMER_JWT_ALGORITHMS: no listed algorithm fits {name}")
            jwks_algorithms &= explicit
            served = jwks_algorithms.union(*(v.algorithms for v in static.values()))
            for alg in sorted(explicit - served)[:1]:
                raise ConfigError(f"STREAMER_JWT_ALGORITHMS: no configured key verifies {alg}")
            static = {n: _Verifier(v.key, v.algorithms & explicit) for n, v in static.items()}
        self._settings = settings
        self._clock = clock
        self._static = list(static.values())
        self._algorithms = explicit or jwks_algorithms.union(*(v.algorithms for v in self._static))
        self._registry = _Registry(algorithms=self._algorithms, strict_check_header=False)
        self._jwks_url = settings.jwks_url
        self._jwks_algorithms = jwks_algorithms
        self._jwks: list[_Verifier] = []
        self._jwks_loaded = False
        self._last_refetch: float | None = None
        self._lock = anyio.Lock()

    async def start(self) -> None:
        """Fetch the JWKS if one is configured; raise `ConfigError` if it cannot be loaded."""
        if self._jwks_url is not None:
            try:
                await self._load_jwks(self._jwks_url)
            except _FETCH_ERRORS as exc:
                reason = _reason(exc)
                raise ConfigError(f"STREAMER_JWKS_URL: cannot load the JWKS ({reason})") from None

    @property
    def ready(self) -> bool:
        """True once every configured key source is loaded."""
        return self._jwks_url is None or self._jwks_loaded

    async def authenticate(self, authorization: str | None) -> Principal:
        """Verify the raw `Authorization` header value; raise `MissingToken`/`InvalidToken`."""
        token = _bearer_credential(authorization)
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
        return self._principal(claims, time.time())

    async def _verify(self, obj: CompactSignature, alg: str, kid: str | None) -> bool:
        jwks = [v for v in self._jwks if kid is None or v.kid in (kid, None)]
        if any(self._check(obj, alg, v) for v in (*self._static, *jwks)):
            return True
        known = any(v.kid == kid for v in self._jwks)
        if kid is None or known or self._jwks_url is None or alg not in self._jwks_algorithms:
            return False
        await self._refetch(self._jwks_url)
        return any(self._check(obj, alg, v) for v in self._jwks if v.kid == kid)

    def _check(self, obj: CompactSignature, alg: str, verifier: _Verifier) -> bool:
        if alg not in verifier.algorithms:
            return False
        try:  # joserfc compares HMAC digests with hmac.compare_digest
            return jws.validate_compact(obj, verifier.key, registry=self._registry)
        except (JoseError, ValueError):
            return False

    async def _refetch(self, url: str) -> None:
        # The lock makes concurrent requests for a new kid share one fetch: the ones that
        # waited find `_last_refetch` fresh and use what the first one loaded.
        async with self._lock:
            now = self._clock()
            if self._last_refetch is not None and now - self._last_refetch < REFETCH_INTERVAL_S:
                return
            self._last_refetch = now
            try:
                await self._load_jwks(url)
            except _FETCH_ERRORS as exc:
                _log.warning("JWKS refetch failed, keeping the cached keys: %s", _reason(exc))

    async def _load_jwks(self, url: str) -> None:
        body = await anyio.to_thread.run_sync(_read_jwks, url)
        self._jwks = _parse_jwks(body, self._jwks_algorithms)
        self._jwks_loaded = True

    def _principal(self, claims: dict[str, Any], now: float) -> Principal:
        s = self._settings
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
        permissions = (
            {p for p in listed if isinstance(p, str)} if isinstance(listed, list) else set()
        )
        permissions.update(scope.split() if isinstance(scope, str) else ())
        return Principal(
            subject=subject,
            organization=organization if isinstance(organization, str) else None,
            permissions=frozenset(permissions),
        )


class TokenCache:
    """Remembers the tokens `Authenticator` verified, keyed by their exact text, until expiry.

    A hit skips the signature check and the claims' parsing and checks the one thing that
    changes with time: a token is refused once `now >= exp + leeway`, as it is uncached
    (`nbf` and `iat` only become easier to meet). Failures are never cached: a refused
    token is verified again each time. A key set changed by a JWKS refetch empties the
    cache, so a token of a key taken out of the set is refused at once. At most `size`
    tokens are held; the oldest goes first.
    """

    def __init__(
        self, auth: Authenticator, *, size: int = 4096, clock: Callable[[], float] = time.time
    ) -> None:
        self.auth = auth
        self.size = size
        self._clock = clock
        self._leeway = auth._settings.jwt_leeway_s
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._keys: object = auth._jwks

    async def authenticate(self, authorization: str | None) -> Principal:
        """As `Authenticator.authenticate`, with the answer for a known token kept."""
        token = _bearer_credential(authorization)
        if self._keys is not self.auth._jwks:
            self._entries.clear()
            self._keys = self.auth._jwks
        entry = self._entries.get(token)
        if entry is None:
            principal = await self.auth.authenticate(authorization)
            entry = (_expiry(token) + self._leeway, principal)
            if self._keys is self.auth._jwks:
                if len(self._entries) >= self.size:
                    del self._entries[next(iter(self._entries))]
                self._entries[token] = entry
        if self._clock() >= entry[0]:
            self._entries.pop(token, None)
            raise errors.InvalidToken("The token has expired.")
        return entry[1]


def _expiry(token: str) -> float:
    """The `exp` of a token `Authenticator` accepted (so it is there, and a finite number)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    exp: float = claims["exp"]
    return exp


def authorize(principal: Principal) -> None:
    """Raise `Forbidden` unless the principal may read the models of its organization."""
    if not principal.permissions & READ_PERMISSIONS:
        raise errors.Forbidden()
    if not principal.organization:
        raise errors.Forbidden("The token has no organization claim.")


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
    key = _secret_key(secret, {algorithm})
    return jwt.encode({"alg": algorithm}, claims, key, algorithms=[algorithm])


def parse_compact(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a compact JWS, read strictly; the signature is not checked.

    Raises `InvalidToken` for a token longer than `MAX_TOKEN_CHARS` (before any decoding),
    not three parts of canonical unpadded base64url, or whose header or claims are not a
    JSON object of UTF-8 text without repeated member names, NaN, Infinity or lone
    surrogates (RFC 7519 sections 4 and 7.2, RFC 8725 section 3.7).
    """
    malformed = errors.InvalidToken("The token is malformed.")
    if len(token) > MAX_TOKEN_CHARS:
        raise malformed
    parts = token.split(".")
    if len(parts) != 3 or not all(_BASE64URL.fullmatch(part) for part in parts):
        raise malformed
    encoded_header, encoded_claims, signature = parts
    header = _json_object(_base64url(encoded_header))
    if header is None or _base64url(signature) is None:
        raise malformed
    claims = _json_object(_base64url(encoded_claims))
    if claims is None:
        raise errors.InvalidToken("The token's claims are malformed.")
    return header, claims


def _base64url(text: str) -> bytes | None:
    """Decode unpadded base64url, refusing the non-canonical (stray bits in the last char)."""
    if len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if base64.urlsafe_b64encode(data).rstrip(b"=") == text.encode() else None


def _json_object(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        # Text first: json.loads would take UTF-16 or UTF-32 bytes, guessing the encoding.
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_names, parse_constant=_no_constant
        )
        # A lone surrogate escape ("\ud800") parses, but is no text (RFC 8259 section 8.2):
        # no UTF-8 writer takes it, the access log's among them.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError among them
        return None
    return value if isinstance(value, dict) else None


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7519 section 4 lets a parser keep the last of repeated names; one that kept the
    # first would read another token. Refuse them at every depth.
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("repeated member name")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _bearer_credential(authorization: str | None) -> str:
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    # RFC 7235: the scheme is case-insensitive; another scheme counts as no credential.
    if scheme.lower() != "bearer" or not credential:
        raise errors.MissingToken()
    return credential


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


def _secret_verifier(secret: str, explicit: frozenset[str]) -> _Verifier:
    """The secret's verifier: for the listed HS algorithms, or those it is long enough for."""
    if explicit:
        algorithms = explicit & HMAC
    else:
        size = len(secret.encode("utf-8"))
        algorithms = frozenset(alg for alg in HMAC if size >= MIN_SECRET_BYTES[alg])
    # None long enough: HS256 names the shortest length that would do.
    return _Verifier(_secret_key(secret, algorithms or {"HS256"}), algorithms)


def _secret_key(secret: str, algorithms: Iterable[str]) -> OctKey:
    """The secret as a key; `ConfigError` if it is too short for one of `algorithms`."""
    raw = secret.encode("utf-8")
    for alg in sorted(algorithms, key=MIN_SECRET_BYTES.__getitem__, reverse=True):
        if len(raw) < MIN_SECRET_BYTES[alg]:
            raise ConfigError(
                f"STREAMER_JWT_SECRET: {len(raw)} bytes is too short for {alg}, which needs"
                f" at least {MIN_SECRET_BYTES[alg]} (RFC 7518 section 3.2)"
            )
    try:
        return OctKey.import_key(raw)
    except ValueError:
        raise ConfigError("STREAMER_JWT_SECRET: must be a secret, not a public key") from None


def _pem_verifier(path: str) -> _Verifier:
    name = "STREAMER_JWT_PUBLIC_KEY_FILE"
    try:
        with open(path, "rb") as file:
            pem = file.read(MAX_JWKS_BYTES)
        public = load_pem_public_key(pem)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc.strerror or exc})") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{name}: {path} holds no PEM public key") from None
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        raise ConfigError(f"{name}: an RSA key needs at least {MIN_RSA_BITS} bits")
    kty = next((kty for kty, native in _NATIVE_TYPES.items() if isinstance(public, native)), "")
    verifier = _asymmetric_verifier(kty, pem)
    if verifier is None:
        raise ConfigError(f"{name}: unsupported key (use RSA, EC P-256/384/521 or Ed25519/Ed448)")
    return verifier


def _asymmetric_verifier(
    kty: object, data: bytes | dict[str, Any], kid: str | None = None
) -> _Verifier | None:
    key_class = _KEY_CLASSES.get(kty) if isinstance(kty, str) else None
    try:
        key = key_class.import_key(data) if key_class is not None else None
        if isinstance(key, RSAKey):
            return _Verifier(key, RSA, kid)
        if isinstance(key, ECKey):
            return _Verifier(key, frozenset({EC_BY_CURVE[key.curve_name]}), kid)
        if isinstance(key, OKPKey) and key.curve_name in OKP_BY_CURVE:
            return _Verifier(key, OKP_BY_CURVE[key.curve_name], kid)
    except (JoseError, ValueError, TypeError, KeyError):  # KeyError: a curve without a JWS alg
        pass
    return None


def _reason(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _read_jwks(url: str) -> bytes:
    """Blocking read of the JWKS document; run in a worker thread."""
    if url.startswith(("http://", "https://")):
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            # bandit B310 (file:/ and custom schemes): only http(s) URLs reach here.
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # nosec B310
                body: bytes = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection open
            raise
    else:
        path = urllib.parse.urlsplit(url).path if url.startswith("file://") else url
        with open(path, "rb") as file:
            body = file.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("the JWKS document is larger than 1 MiB")
    return body


def _parse_jwks(body: bytes, allowed: frozenset[str]) -> list[_Verifier]:
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    verifiers = [_jwk_verifier(data, allowed) for data in document["keys"]]
    if not any(verifiers):
        raise ValueError("no usable signing key in the JWKS")
    return [v for v in verifiers if v is not None]


def _jwk_verifier(data: object, allowed: frozenset[str]) -> _Verifier | None:
    # "oct" keys are skipped: a published JWKS must never carry a shared secret.
    if not isinstance(data, dict) or data.get("use", "sig") != "sig":
        return None
    n, declared, kid = data.get("n"), data.get("alg"), data.get("kid")
    if data.get("kty") == "RSA" and not (isinstance(n, str) and len(n) * 6 >= MIN_RSA_BITS):
        return None  # joserfc would only warn
    verifier = _asymmetric_verifier(data.get("kty"), data, kid if isinstance(kid, str) else None)
    if verifier is None:
        return None
    algorithms = verifier.algorithms & allowed & ({declared} if declared is not None else ALL)
    return _Verifier(verifier.key, algorithms, verifier.kid) if algorithms else None
