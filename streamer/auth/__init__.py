"""Bearer-JWT authentication: verify the token, turn its claims into a Principal, authorize.

Four parts, one concern each: `compact` reads the Bearer credential and the token's
header and claims strictly, before any signature check; `keys` turns the configuration
(secret, PEM key, JWKS URL) into verifiers and refetches the JWKS; `verify` checks the
signature and claims and authorizes; `cache` remembers verified tokens until they expire.
"""

from .cache import TokenCache
from .compact import MAX_TOKEN_CHARS, parse_compact
from .keys import MIN_SECRET_BYTES
from .verify import MAX_TIME, Authenticator, Principal, authorize, issue_token

__all__ = [
    "MAX_TIME",
    "MAX_TOKEN_CHARS",
    "MIN_SECRET_BYTES",
    "Authenticator",
    "Principal",
    "TokenCache",
    "authorize",
    "issue_token",
    "parse_compact",
]
