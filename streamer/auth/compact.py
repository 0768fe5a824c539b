"""The Bearer credential and the strict reading of a compact JWS, before any signature check.

`parse_compact` reads the token strictly (RFC 7515, 7519, 8725): at most 8 KiB, three parts
of canonical base64url, header and claims each one JSON object of UTF-8 text with no
repeated member name, no NaN or Infinity, no lone surrogate. Every failure is an
`InvalidToken` with a fixed detail of ours, so no token text reaches a response.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from streamer import errors

# Checked before any decoding: a longer credential costs nothing but a length check.
MAX_TOKEN_CHARS = 8 * 1024

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def bearer_credential(authorization: str | None) -> str:
    """The credential of a `Bearer` Authorization header; `MissingToken` for anything else."""
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    # RFC 7235: the scheme is case-insensitive; another scheme counts as no credential.
    if scheme.lower() != "bearer" or not credential:
        raise errors.MissingToken()
    return credential


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


def expiry(token: str) -> float:
    """The `exp` of a token already verified (so it is there, and a finite number)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    exp: float = claims["exp"]
    return exp


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
