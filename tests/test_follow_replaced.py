"""A followed log whose sent bytes change ends without a clean end: SPEC section 9.

What was sent must stay a prefix of the log: each case below changes bytes already sent
while keeping, or growing past, the size the follow reached, then ends the run. The
follow must drop the connection (`replaced`), never end cleanly with another log's bytes;
a log deleted ends `gone`. The log is longer than twice the 4 KiB checked at each end, so
a change at its start is caught by the first bytes, one near its end by the last.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from testkit.following import LINES, Writer, following, settings, store_root
from testkit.observing import AccessLog
from testkit.servers import Running, serve_in_thread

pytestmark = pytest.mark.anyio

LOG = b"".join(LINES) * 4  # about 11 KiB


def log_path(writer: Writer) -> Path:
    return Path(writer.root, writer.folder, "training.log")


def rewrite_near_the_end(writer: Writer) -> None:
    """Bytes overwritten in place, the size kept (`dd conv=notrunc`)."""
    with open(log_path(writer), "r+b") as file:
        file.seek(len(writer.log) - 50)
        file.write(b"ZZZZ")


def swap_same_length(writer: Writer) -> None:
    """A new file of the same length moved over the log (a new inode)."""
    path = log_path(writer)
    path.with_name("t").write_bytes(writer.log.replace(b"INFO", b"IXFO"))
    os.replace(path.with_name("t"), path)


def rewrite_the_start_then_append(writer: Writer) -> None:
    """The first 4 bytes overwritten in place, then a line appended."""
    with open(log_path(writer), "r+b") as file:
        file.write(b"ZZZZ")
    writer.append(LINES[0])


async def follow_then_change(
    running: Running,
    writer: Writer,
    token: str,
    change: Callable[[Writer], None],
    access_log: AccessLog,
    *,
    end_run: bool = True,
) -> str:
    """Follow the log until all of it arrived, change it, end the run: the follow's end."""
    async with following(running, writer, token) as got:
        await got.until(LOG)
        change(writer)
        if end_run:
            writer.status("completed")
        with pytest.raises(httpx.RemoteProtocolError):
            await got.rest()
    assert got.body.startswith(LOG)
    line = access_log.wait(request_id=got.request_id)
    assert line["outcome"] == "aborted"
    end: str = line["end"]
    return end


@pytest.mark.parametrize(
    "change",
    [rewrite_near_the_end, swap_same_length, rewrite_the_start_then_append],
)
async def test_a_local_log_whose_sent_bytes_changed_is_cut(
    tmp_path: Path, token: str, change: Callable[[Writer], None], access_log: AccessLog
) -> None:
    writer = Writer(str(tmp_path)).start(LOG)
    for running in serve_in_thread(settings(str(tmp_path))):
        assert await follow_then_change(running, writer, token, change, access_log) == "replaced"


async def test_a_log_deleted_while_the_run_is_on_ends_gone(
    tmp_path: Path, token: str, access_log: AccessLog
) -> None:
    writer = Writer(str(tmp_path)).start(LOG)
    for running in serve_in_thread(settings(str(tmp_path))):
        end = await follow_then_change(
            running, writer, token, lambda w: log_path(w).unlink(), access_log, end_run=False
        )
        assert end == "gone"


@pytest.fixture(params=["s3"])
def s3_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_root(request, tmp_path)


async def test_an_object_replaced_at_the_same_length_is_cut(
    s3_root: str, token: str, access_log: AccessLog
) -> None:
    writer = Writer(s3_root).start(LOG)

    def swap(writer: Writer) -> None:
        writer.replace(writer.log.replace(b"INFO", b"IXFO"))

    for running in serve_in_thread(settings(s3_root)):
        assert await follow_then_change(running, writer, token, swap, access_log) == "replaced"
