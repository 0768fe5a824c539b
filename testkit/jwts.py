"""Keys and tokens made by hand, as an identity provider would make them, and a clock the
tests move.

Rules: one private key per kind for the whole process (RSA generation is slow); the claims
are valid for alice of the dataset's organisation unless changed; nothing here checks a
token (streamer.auth does).
"""

from __future__ import annotations

import json
import time
import warnings
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jws, jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from testkit.dataset import ORG

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@cache
def private_key(kind: str) -> PrivateKey:
    """One key per kind for the whole process: RSA generation is slow."""
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind.startswith("p256"):
        return ec.generate_private_key(ec.SECP256R1())
    if kind.startswith("p384"):
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


def signing_key(kind: str) -> Key:
    pem = private_key(kind).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if kind.startswith("rsa"):
        return RSAKey.import_key(pem)
    if kind.startswith(("p256", "p384")):
        return ECKey.import_key(pem)
    return OKPKey.import_key(pem)


def jwk(kind: str, kid: str | None, **params: str) -> dict[str, Any]:
    data: dict[str, Any] = dict(signing_key(kind).as_dict(private=False))
    data.update(params)
    if kid is not None:
        data["kid"] = kid
    return data


def jwks_bytes(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for alice of org-acme; a change to None drops the claim."""
    now = int(time.time())
    base = {"sub": "alice", "org_id": ORG, "permissions": ["model:read"], "iat": now}
    base["exp"] = now + 3600
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def sign(payload: dict[str, Any] | list[Any], key: Key, alg: str, kid: str | None = None) -> str:
    header = {"alg": alg, **({"kid": kid} if kid is not None else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" is deprecated by RFC 9864
        if isinstance(payload, list):
            return jws.serialize_compact(header, json.dumps(payload), key, algorithms=[alg])
        return jwt.encode(header, payload, key, algorithms=[alg])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
