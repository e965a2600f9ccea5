"""Compressed archives: gzip is read and written as a stream; zstd, xz, bzip2
and lz4 input gets a message saying which tool to pipe it through."""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from aviarytools.errors import ArchiveError

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_READ_SIZE = 256 * 1024
_OTHER_FORMATS = [
    (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"),
    (b"\xfd7zXZ\x00", "xz", "xz -dc"),
    (b"\x04\x22\x4d\x18", "lz4", "lz4 -dc"),
    (b"BZh", "bzip2", "bzip2 -dc"),
]
_PEEK = 6


def open_input(stream: BinaryIO) -> BinaryIO:
    """The tar stream inside `stream`: decompressed if gzip, as it is if plain.

    Works on pipes: the bytes looked at are not lost.
    """
    head, stream = _peek(stream, _PEEK)
    if head.startswith(GZIP_MAGIC):
        return GunzipReader(stream)
    for magic, name, tool in _OTHER_FORMATS:
        if head.startswith(magic) and (name != "bzip2" or head[3:4].isdigit()):
            raise ArchiveError(f"input is {name}-compressed: pipe it through '{tool}' first")
    return stream


def gzip_output(out: BinaryIO, level: int = 6) -> GzipWriter:
    """A writable stream that gzips into `out`; `close()` ends the gzip stream
    (and leaves `out` open)."""
    return GzipWriter(out, level)


class GunzipReader(io.RawIOBase):
    """Decompresses a gzip stream as it is read, one or more members in a row
    (`cat a.gz b.gz`).  Output comes in pieces of at most the size asked for,
    so a gzip bomb cannot fill memory.  A stream that stops before its trailer
    is an ArchiveError, as is anything but zeros after the last member.
    """

    def __init__(self, source: BinaryIO):
        self._source = source
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._input = b""  # compressed bytes zlib has not taken yet
        self._source_ended = False
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while size and not self._done:
            data = self._inflate(size)
            if data:
                return data
        return b""

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _inflate(self, size: int) -> bytes:
        if not self._input and not self._source_ended:
            self._input = self._read_source()
        try:
            data = self._inflater.decompress(self._input, size)
        except zlib.error as exc:
            raise ArchiveError(f"gzip stream corrupt: {exc}") from None
        if self._inflater.eof:
            self._input = b""
            self._start_next_member(self._inflater.unused_data)
        else:
            self._input = self._inflater.unconsumed_tail
            if not data and not self._input and self._source_ended:
                raise ArchiveError("gzip stream truncated")
        return data

    def _start_next_member(self, rest: bytes) -> None:
        while len(rest.lstrip(b"\0")) < len(GZIP_MAGIC) and not self._source_ended:
            # Zero padding after the last member is dropped, as gzip -d does.
            rest = rest.lstrip(b"\0") + self._read_source()
        rest = rest.lstrip(b"\0")
        if not rest:
            self._done = True
        elif rest == GZIP_MAGIC[:1]:
            raise ArchiveError("gzip stream truncated")
        elif not rest.startswith(GZIP_MAGIC):
            raise ArchiveError("data after the end of the gzip stream is not gzip")
        else:
            self._inflater = zlib.decompressobj(_GZIP_WBITS)
            self._input = rest

    def _read_source(self) -> bytes:
        data = self._source.read(_READ_SIZE)
        self._source_ended = not data
        return data


class GzipWriter:
    """Compresses what is written to it into `out` as one gzip member."""

    def __init__(self, out: BinaryIO, level: int = 6):
        self._out = out
        self._deflater = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self.bytes_written = 0  # compressed bytes, for progress reports

    def write(self, data: bytes) -> int:
        self._emit(self._deflater.compress(data))
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        """Writes the gzip trailer.  Not called on errors: a stream without
        its trailer is then seen as truncated, as it should be."""
        if self._deflater is not None:
            self._emit(self._deflater.flush())
            self._deflater = None
            self._out.flush()

    def __enter__(self) -> GzipWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.bytes_written += len(data)


def _peek(stream: BinaryIO, size: int) -> tuple[bytes, BinaryIO]:
    """The first `size` bytes (fewer at end of input) and a stream still holding them."""
    if hasattr(stream, "peek"):
        head = stream.peek(size)[:size]
        if len(head) == size:
            return head, stream
    parts = []
    missing = size
    while missing:
        data = stream.read(missing)
        if not data:
            break
        parts.append(data)
        missing -= len(data)
    head = b"".join(parts)
    return head, _Prefixed(head, stream)


class _Prefixed(io.RawIOBase):
    """`stream` with `head` put back in front of it."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)

    def readinto(self, buffer) -> int:
        if not self._head and hasattr(self._stream, "readinto"):
            return self._stream.readinto(buffer)  # straight in, no copy
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)
