"""moto's S3 server with ranged GetObject served from the stored bytes.

`python -m testkit.moto_ranged -H 127.0.0.1 -p PORT` takes moto.server's arguments.

Stock moto 5.x builds every GetObject body from `FakeKey.value`, a full copy of the object
read from its spooled file, and slices a `Range` out of that copy afterwards: a 16 KiB range
of a 1 GiB object costs a 1 GiB read and allocation. Real stores read only the range, so
ranged reads measured on stock moto look far slower than they are. Here, while
`S3Response.get_object` runs for a request with a `Range` header, `FakeKey.value` is a view
(`StoredBytes`) that moto's own range handling slices by seeking in the spooled file; a
response that is not sliced after all (no satisfiable single range, `partNumber`) is read
whole, as stock moto would. Nothing else changes.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any

from moto.s3.models import FakeKey
from moto.s3.responses import S3Response

_lazy_value: ContextVar[bool] = ContextVar("lazy_value", default=False)


class StoredBytes:
    """A key's stored bytes, read on demand: the length and slices moto's range code takes."""

    def __init__(self, key: Any) -> None:
        self._key = key

    def __len__(self) -> int:
        size: int = self._key.size
        return size

    def __getitem__(self, span: slice) -> bytes:
        start, stop, step = span.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous slices of stored bytes")
        with self._key.lock:
            self._key._value_buffer.seek(start)
            data: bytes = self._key._value_buffer.read(max(0, stop - start))
        return data


_stored_value: Any = vars(FakeKey)["value"]  # the property object itself
_get_object = S3Response.get_object
_key_response = S3Response.key_response


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


def _key_response_whole(self: Any, *args: Any, **kwargs: Any) -> Any:
    status, headers, body = _key_response(self, *args, **kwargs)
    if isinstance(body, StoredBytes):
        body = body[:]
    return status, headers, body


def patch() -> None:
    FakeKey.value = property(_value, _stored_value.fset)  # type: ignore[method-assign,assignment]
    S3Response.get_object = _ranged_get_object  # type: ignore[method-assign]
    S3Response.key_response = _key_response_whole  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    patch()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
