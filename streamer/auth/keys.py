"""Which keys verify which algorithms: the configured secret, PEM key and JWKS document.

Keys come from the configuration alone, any of the three at once. A verifier pairs a key
with the algorithms it may check: an HMAC algorithm only ever meets the secret, a JWKS
never carries a shared secret, and `none` is no algorithm. A configuration that cannot
verify what it lists is a `ConfigError` at start-up. The JWKS is fetched at start and
again, at most every `REFETCH_INTERVAL_S`, when a token names a kid it does not hold.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from streamer.config import ConfigError, Settings

HMAC = frozenset({"HS256", "HS384", "HS512"})
RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
OKP_BY_CURVE = {"Ed25519": frozenset({"EdDSA", "Ed25519"}), "Ed448": frozenset({"EdDSA", "Ed448"})}
ASYMMETRIC = RSA.union(EC_BY_CURVE.values(), *OKP_BY_CURVE.values())
ALL = HMAC | ASYMMETRIC

REFETCH_INTERVAL_S = 30.0
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20
# RFC 7518 section 3.2: an HMAC key at least as long as the hash. The secret is used as
# its UTF-8 bytes; with no STREAMER_JWT_ALGORITHMS it serves the HS algorithms it is long
# enough for.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
MIN_RSA_BITS = 2048

FETCH_ERRORS = (OSError, ValueError, RecursionError, http.client.HTTPException)
_KEY_CLASSES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]]
_KEY_CLASSES = {"RSA": RSAKey, "EC": ECKey, "OKP": OKPKey}
_NATIVE_TYPES = {
    "RSA": rsa.RSAPublicKey,
    "EC": ec.EllipticCurvePublicKey,
    "OKP": ed25519.Ed25519PublicKey | ed448.Ed448PublicKey,
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verifier:
    """A key and the algorithms it may verify; `kid` names a JWKS key."""

    key: Key
    algorithms: frozenset[str]
    kid: str | None = None


@dataclass(frozen=True)
class KeyConfig:
    """The settled key set-up: the static verifiers and which algorithms are accepted."""

    static: tuple[Verifier, ...]
    algorithms: frozenset[str]  # every algorithm a token may name
    jwks_algorithms: frozenset[str]  # those a JWKS key may verify (none without a JWKS)


def configure(settings: Settings) -> KeyConfig:
    """Load the secret and PEM key; raise `ConfigError` when the key set-up is unusable."""
    if not settings.has_key:
        raise ConfigError(
            "no JWT key configured: set STREAMER_JWT_SECRET,"
            " STREAMER_JWT_PUBLIC_KEY_FILE or STREAMER_JWKS_URL"
        )
    explicit = frozenset(settings.jwt_algorithms or ())
    for alg in sorted(explicit - ALL)[:1]:
        raise ConfigError(f"STREAMER_JWT_ALGORITHMS: unsupported algorithm {alg}")
    static: dict[str, Verifier] = {}
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
        static = {n: Verifier(v.key, v.algorithms & explicit) for n, v in static.items()}
    verifiers = tuple(static.values())
    algorithms = explicit or jwks_algorithms.union(*(v.algorithms for v in verifiers))
    return KeyConfig(verifiers, algorithms, jwks_algorithms)


class JWKS:
    """The keys of a JWKS document; `generation` counts the loads, so a holder sees a change."""

    def __init__(
        self, url: str, algorithms: frozenset[str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.verifiers: list[Verifier] = []
        self.loaded = False
        self.generation = 0
        self._clock = clock
        self._last_refetch: float | None = None
        self._lock = anyio.Lock()

    async def start(self) -> None:
        """The first load; raise `ConfigError` if the document cannot be loaded."""
        try:
            await self._load()
        except FETCH_ERRORS as exc:
            reason = _reason(exc)
            raise ConfigError(f"STREAMER_JWKS_URL: cannot load the JWKS ({reason})") from None

    async def refetch(self) -> None:
        """Load again unless loaded within `REFETCH_INTERVAL_S`; a failure keeps the keys."""
        # The lock makes concurrent requests for a new kid share one fetch: the ones that
        # waited find `_last_refetch` fresh and use what the first one loaded.
        async with self._lock:
            now = self._clock()
            if self._last_refetch is not None and now - self._last_refetch < REFETCH_INTERVAL_S:
                return
            self._last_refetch = now
            try:
                await self._load()
            except FETCH_ERRORS as exc:
                _log.warning("JWKS refetch failed, keeping the cached keys: %s", _reason(exc))

    async def _load(self) -> None:
        body = await anyio.to_thread.run_sync(_read_jwks, self.url)
        self.verifiers = _parse_jwks(body, self.algorithms)
        self.loaded = True
        self.generation += 1


def secret_key(secret: str, algorithms: Iterable[str]) -> OctKey:
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


def _secret_verifier(secret: str, explicit: frozenset[str]) -> Verifier:
    """The secret's verifier: for the listed HS algorithms, or those it is long enough for."""
    if explicit:
        algorithms = explicit & HMAC
    else:
        size = len(secret.encode("utf-8"))
        algorithms = frozenset(alg for alg in HMAC if size >= MIN_SECRET_BYTES[alg])
    # None long enough: HS256 names the shortest length that would do.
    return Verifier(secret_key(secret, algorithms or {"HS256"}), algorithms)


def _pem_verifier(path: str) -> Verifier:
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
) -> Verifier | None:
    key_class = _KEY_CLASSES.get(kty) if isinstance(kty, str) else None
    try:
        key = key_class.import_key(data) if key_class is not None else None
        if isinstance(key, RSAKey):
            return Verifier(key, RSA, kid)
        if isinstance(key, ECKey):
            return Verifier(key, frozenset({EC_BY_CURVE[key.curve_name]}), kid)
        if isinstance(key, OKPKey) and key.curve_name in OKP_BY_CURVE:
            return Verifier(key, OKP_BY_CURVE[key.curve_name], kid)
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


def _parse_jwks(body: bytes, allowed: frozenset[str]) -> list[Verifier]:
    document = json.loads(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    verifiers = [_jwk_verifier(data, allowed) for data in document["keys"]]
    if not any(verifiers):
        raise ValueError("no usable signing key in the JWKS")
    return [v for v in verifiers if v is not None]


def _jwk_verifier(data: object, allowed: frozenset[str]) -> Verifier | None:
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
    return Verifier(verifier.key, algorithms, verifier.kid) if algorithms else None
