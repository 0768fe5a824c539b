"""Log filters: an abort that is expected is said in one line, without a traceback."""

from __future__ import annotations

import asyncio
import logging

from ..pump import StreamAborted


class _OneLineAborts(logging.Filter):
    """uvicorn logs a traceback for an app that raises: a download aborted because the
    store failed mid-stream, or cancelled when the shutdown grace ran out, is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, StreamAborted):
            record.msg, record.args = "download aborted: %s", (error,)
            record.exc_info = None
        elif isinstance(error, asyncio.CancelledError):
            record.msg, record.args = "download aborted: the shutdown grace ran out", ()
            record.exc_info = None
        return True


ONE_LINE_ABORTS = _OneLineAborts()


def install() -> None:
    """Filter uvicorn's error log (once, however often it is called)."""
    logging.getLogger("uvicorn.error").addFilter(ONE_LINE_ABORTS)
