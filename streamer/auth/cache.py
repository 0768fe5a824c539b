"""The token cache: a verified token's Principal, kept until the token's expiry.

A hit skips the signature check and the claims' parsing and checks the one thing that
changes with time: a token is refused once `now >= exp + leeway`, as it is uncached
(`nbf` and `iat` only become easier to meet). Failures are never cached: a refused token
is verified again each time. A key set changed by a JWKS refetch empties the cache, so a
token of a key taken out of the set is refused at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamer import errors

from .compact import bearer_credential, expiry
from .verify import Authenticator, Principal


class TokenCache:
    """Remembers the tokens `Authenticator` verified, keyed by their exact text, until expiry.

    At most `size` tokens are held; the oldest goes first.
    """

    def __init__(
        self, auth: Authenticator, *, size: int = 4096, clock: Callable[[], float] = time.time
    ) -> None:
        self.auth = auth
        self.size = size
        self._clock = clock
        self._leeway = auth.leeway_s
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._generation = auth.key_generation

    async def authenticate(self, authorization: str | None) -> Principal:
        """As `Authenticator.authenticate`, with the answer for a known token kept."""
        token = bearer_credential(authorization)
        if self._generation != self.auth.key_generation:
            self._entries.clear()
            self._generation = self.auth.key_generation
        entry = self._entries.get(token)
        if entry is None:
            principal = await self.auth.authenticate(authorization)
            entry = (expiry(token) + self._leeway, principal)
            # A refetch while this token was verified: its keys may already be gone.
            if self._generation == self.auth.key_generation:
                if len(self._entries) >= self.size:
                    del self._entries[next(iter(self._entries))]
                self._entries[token] = entry
        if self._clock() >= entry[0]:
            self._entries.pop(token, None)
            raise errors.InvalidToken("The token has expired.")
        return entry[1]
