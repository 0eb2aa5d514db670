"""The framing between a trial's worker and the parent: a JSON header and raw array bytes, never pickle.

A frame is MAGIC, a 4-byte little-endian header length, the UTF-8 JSON header, then `nbytes` raw bytes
of payload when the header says so. The parent bounds every length before it reads, so a worker that
writes garbage gets a protocol error, not a crash or an unbounded allocation.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

MAGIC = b"LB01"
MAX_HEADER = 1 << 20


class WireError(Exception):
    """The byte stream is not a valid frame."""


def write_frame(fd: int, header: dict[str, Any], payload: bytes | memoryview | None = None) -> None:
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    write_all(fd, MAGIC + struct.pack("<I", len(body)) + body)
    if payload is not None:
        write_all(fd, payload)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """All of `data` to fd, however many writes it takes."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, n: int) -> bytearray:
    """Exactly n bytes from fd, read straight into one buffer (a checkpoint's payload is megabytes)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError
        got += k
    return buf


def read_header(fd: int) -> dict[str, Any]:
    """One frame's header; raises EOFError at a clean end of stream, WireError on garbage."""
    prefix = read_exact(fd, 8)
    if prefix[:4] != MAGIC:
        raise WireError("the worker's stream holds bytes that are not a message")
    (length,) = struct.unpack("<I", prefix[4:])
    if length > MAX_HEADER:
        raise WireError(f"a message header of {length} bytes is over the limit of {MAX_HEADER}")
    try:
        header = json.loads(read_exact(fd, length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise WireError(f"a message header is not readable JSON ({type(err).__name__})") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise WireError("a message header has no type")
    return header
