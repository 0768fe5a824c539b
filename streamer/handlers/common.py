"""What both routes need of the service, and what both do with the catalog and the store."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from .. import errors
from ..catalog import Catalog, LogObject
from ..config import Settings
from ..cursors import CursorCodec
from ..errors import StreamerError
from ..logs.source import LogSources
from ..ops import StreamSlots
from ..pump import StreamAborted
from ..storage import Store, StoreUnreachable
from ..turns import Turns

if TYPE_CHECKING:
    from ..follow import Watches

logger = logging.getLogger("streamer")


class Service(Protocol):
    """The parts of the running service a route handler uses."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> Store: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def slots(self) -> StreamSlots: ...
    @property
    def turns(self) -> Turns: ...
    @property
    def cursors(self) -> CursorCodec: ...
    @property
    def watches(self) -> Watches: ...
    @property
    def logs(self) -> LogSources: ...


async def resolve(
    catalog: Catalog, model_id: str, organization: str, run_id: str | None
) -> LogObject:
    """The catalog's answer; a store that does not work is a 503, any other failure of it
    (not a missing key) a 502."""
    try:
        return await catalog.resolve(model_id, organization, run_id)
    except StreamerError:
        raise
    except StoreUnreachable as exc:
        logger.warning("store unavailable while resolving model %s: %s", model_id, exc)
        raise errors.StoreUnavailable() from None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        logger.warning("store failed while resolving model %s: %s", model_id, reason)
        raise errors.UpstreamError() from None


@contextmanager
def store_failures(key: str) -> Iterator[None]:
    """Reading a log: a missing object (the store confirmed its root) is a purge, a store
    that does not work a 503, any other store failure a 502 (or, once the response has
    started, the abort the pump raised)."""
    try:
        yield
    except FileNotFoundError:
        raise errors.LogsPurged() from None
    except (StreamerError, StreamAborted):
        raise
    except StoreUnreachable as exc:
        logger.warning("store unavailable while reading %s: %s", key, exc)
        raise errors.StoreUnavailable() from None
    except Exception as exc:
        logger.warning("store read failed for %s: %s", key, type(exc).__name__)
        raise errors.UpstreamError() from None
