def encode_lines(
    head: bytes,
    block: bytes,
    start: int,
    stop: int,
    first: int,
    ends_in_newline: bool,
    templates: tuple[bytes, ...],
    /,
) -> tuple[bytes, int]: ...
