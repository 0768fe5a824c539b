"""Resume: cut a follow anywhere, resume it, and the joined bodies are the log exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamer.encoders import reference_encode
from testkit.following import (
    GUARD_S,
    LINES,
    Writer,
    settings,
    url,
)
from testkit.servers import Running, serve_in_thread


@pytest.fixture(scope="module")
def resume_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Running]]:
    root = str(tmp_path_factory.mktemp("resume"))
    generator = serve_in_thread(settings(root))
    yield root, next(generator)
    generator.close()


def receive_until(response: httpx.Response, enough: Callable[[bytes], bool]) -> bytes:
    got = b""
    for chunk in response.iter_raw():
        got += chunk
        if enough(got):
            break
    return got


def resume(
    client: httpx.Client, target: str, writer: Writer, remaining: int, ended: bool, token: str
) -> bytes:
    """The resumed body: of a run that has ended, or of one that ends once the resumed
    follow has received the `remaining` bytes the log holds."""
    headers = {"Authorization": f"Bearer {token}"}
    if ended:
        writer.status("completed")
        return client.get(target, headers=headers).content
    with client.stream("GET", target, headers=headers) as response:
        body = b""
        if not remaining:
            writer.status("completed")
        for chunk in response.iter_raw():
            body += chunk
            if len(body) >= remaining and not ended:
                ended = True
                writer.status("completed")
        return body


@given(
    first=st.integers(1, 12),
    more=st.integers(0, 12),
    ended=st.booleans(),
    data=st.data(),
)
@hsettings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_cut_txt_follow_resumes_at_the_bytes_received(
    resume_server: tuple[str, Running],
    token: str,
    first: int,
    more: int,
    ended: bool,
    data: st.DataObject,
) -> None:
    root, running = resume_server
    writer = Writer(root).start(b"".join(LINES[:first]))
    cut = data.draw(st.integers(0, len(writer.log)), label="cut")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=GUARD_S) as client:
        with client.stream("GET", url(running, writer), headers=headers) as response:
            received = receive_until(response, lambda got: len(got) >= cut)[:cut]
        writer.append(b"".join(LINES[first : first + more]))
        target = url(running, writer, offset=str(len(received)))
        rest = resume(client, target, writer, len(writer.log) - len(received), ended, token)
    assert received + rest == writer.log


@given(
    first=st.integers(1, 12),
    more=st.integers(0, 12),
    ended=st.booleans(),
    data=st.data(),
)
@hsettings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_cut_ndjson_follow_resumes_at_the_next_line(
    resume_server: tuple[str, Running],
    token: str,
    first: int,
    more: int,
    ended: bool,
    data: st.DataObject,
) -> None:
    root, running = resume_server
    writer = Writer(root).start(b"".join(LINES[:first]))
    lines = data.draw(st.integers(0, first), label="lines received")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=GUARD_S) as client:
        ndjson = url(running, writer, format="ndjson")
        with client.stream("GET", ndjson, headers=headers) as response:
            got = receive_until(response, lambda got: got.count(b"\n") >= lines)
        kept = b"".join(got.splitlines(keepends=True)[:lines])
        last = orjson.loads(kept.splitlines()[-1])["line"] if kept else 0
        writer.append(b"".join(LINES[first : first + more]))
        expected = reference_encode(writer.log, "ndjson")
        target = url(running, writer, format="ndjson", from_line=str(last + 1))
        rest = resume(client, target, writer, len(expected) - len(kept), ended, token)
    assert kept + rest == expected
