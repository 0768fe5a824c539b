"""moto's S3 server, with ranged and per-part reads served from the stored bytes.

`python -m testkit.moto_ranged -H 127.0.0.1 -p PORT` takes moto.server's arguments.

Stock moto 5.x builds every GetObject body from `FakeKey.value`, a full copy of the object
read from its spooled file, and slices a `Range` out of that copy afterwards: a 16 KiB range
of a 1 GiB object costs a 1 GiB read and allocation. HeadObject and GetObject with
`PartNumber` slice the part out of the same copy (`_set_multipart_part_headers`), so even
a HEAD reads the whole object. Real stores read only the range or part, and a HEAD reads
nothing, so these calls measured on stock moto look far slower than they are. Here:

- while `S3Response.get_object` runs for a request with a `Range` header, `FakeKey.value`
  is a view (`StoredBytes`) that moto's own range handling slices into a `StoredSpan`;
- a part's value is a `StoredSpan` of the part alone, read only for a composite checksum
  or when it is sent: a HeadObject with `PartNumber` reads no object bytes;
- a span is read (a seek in the spooled file) when the response leaves `key_response`;
  a response that is not sliced after all (no satisfiable single range) is read whole,
  as stock moto would. Nothing else changes.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any

from moto.s3.models import FakeKey
from moto.s3.responses import S3Response
from moto.s3.utils import compute_checksum

_lazy_value: ContextVar[bool] = ContextVar("lazy_value", default=False)


class StoredSpan:
    """Bytes `start` to `stop` of a key's stored bytes, read by `read()` alone."""

    def __init__(self, key: Any, start: int, stop: int) -> None:
        self._key, self._start, self._stop = key, start, max(start, stop)

    def __len__(self) -> int:
        return self._stop - self._start

    def read(self) -> bytes:
        with self._key.lock:
            self._key._value_buffer.seek(self._start)
            data: bytes = self._key._value_buffer.read(len(self))
        return data


class StoredBytes:
    """A key's stored bytes, unread: the length and slices that moto's range code takes."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def __len__(self) -> int:
        size: int = self._key.size
        return size

    def __getitem__(self, span: slice) -> StoredSpan:
        start, stop, step = span.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous slices of stored bytes")
        return StoredSpan(self._key, start, stop)


_stored_value: Any = vars(FakeKey)["value"]  # the property object itself
_get_object = S3Response.get_object
_key_response = S3Response.key_response
_set_part_headers: Any = S3Response._set_multipart_part_headers  # a staticmethod


def _value(key: Any) -> Any:
    return StoredBytes(key) if _lazy_value.get() else _stored_value.fget(key)


def _ranged_get_object(self: Any) -> Any:
    if not self.headers.get("range"):
        return _get_object(self)
    token = _lazy_value.set(True)
    try:
        return _get_object(self)
    finally:
        _lazy_value.reset(token)


def _lazy_part_headers(
    key: Any, part_number: int, response_headers: dict[str, Any], checksum_mode: bool
) -> Any:
    token = _lazy_value.set(True)
    try:
        part = _set_part_headers(key, part_number, response_headers, False)
    finally:
        _lazy_value.reset(token)
    if checksum_mode and key.checksum_algorithm and key.checksum_type == "COMPOSITE":
        # As stock moto does, from the part's bytes alone.
        algorithm = key.checksum_algorithm
        checksum = compute_checksum(part.read(), algorithm).decode()
        response_headers[f"x-amz-checksum-{algorithm.lower()}"] = checksum
        response_headers["x-amz-checksum-type"] = key.checksum_type
    return part


def _key_response_whole(self: Any, *args: Any, **kwargs: Any) -> Any:
    status, headers, body = _key_response(self, *args, **kwargs)
    if isinstance(body, StoredBytes):
        body = body[:]
    if isinstance(body, StoredSpan):
        body = body.read()
    return status, headers, body


def patch() -> None:
    FakeKey.value = property(_value, _stored_value.fset)  # type: ignore[method-assign,assignment]
    S3Response.get_object = _ranged_get_object  # type: ignore[method-assign]
    S3Response._set_multipart_part_headers = staticmethod(_lazy_part_headers)  # type: ignore[method-assign]
    S3Response.key_response = _key_response_whole  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
