"""Compressed and encrypted archives: one table, FORMATS, one row per format.

gzip and zstd are read and written as streams; every other format is
recognised by its first bytes and named, with the command to pipe it through,
so that no reader calls it "not a tar archive".  The next format is one row.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from aviarytools.errors import ArchiveError

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_READ_SIZE = 256 * 1024
_PEEK = 64  # the longest magic: age's armor line
_ZSTD_JOB = 2 << 20


@dataclass(frozen=True)
class Format:
    """How one format starts, what it is called, and who reads and writes it:
    our own `reader`/`writer`, or else the commands `decode`/`encode` to pipe through."""

    name: str
    magics: tuple[bytes, ...]
    decode: str  # the command that turns it back into a tar, for messages
    encode: str  # the command that makes it from a tar on stdin
    suffixes: tuple[str, ...] = ()  # file names that say this format (pack -o)
    reader: Callable[[BinaryIO], BinaryIO] | None = None
    writer: Callable[[BinaryIO, int], object] | None = None
    levels: tuple[int, int, int] | None = None  # (lowest, default, highest) with a writer
    kind: str = "compressed"  # or "encrypted"
    also: Callable[[bytes], bool] | None = None  # a test beyond the magic

    def matches(self, head: bytes) -> bool:
        return any(head.startswith(m) for m in self.magics) and (self.also is None or self.also(head))

    @property
    def described(self) -> str:
        return f"{self.name}-{self.kind}"


def _bzip2_block_size(head: bytes) -> bool:
    return head[3:4].isdigit() and head[3:4] != b"0"


# The packet tags that can open an OpenPGP message: a public-key (1) or
# passphrase (3) encrypted session key, or compressed data (8, gpg --sign).
_PGP_FIRST = {1: (3, 6), 3: (4, 5, 6), 8: (0, 1, 2, 3)}  # tag: the versions or algorithms next


def _openpgp_packet(head: bytes) -> bool:
    """An OpenPGP packet header (RFC 4880 4.2) of a tag that starts a message, then a
    plausible first byte: strict, as a tar may start with any byte of a UTF-8 name."""
    if head.startswith(b"-----BEGIN PGP MESSAGE-----"):
        return True
    if len(head) < 3 or not head[0] & 0x80:
        return False
    if head[0] & 0x40:  # new format: one, two or five length bytes
        tag, first = head[0] & 0x3F, head[1]
        body = 2 if first < 192 else 3 if first < 224 else 6 if first == 255 else None
    else:  # old format: one, two, four or no length bytes
        tag = (head[0] >> 2) & 0x0F
        body = (2, 3, 5, 1)[head[0] & 3]
    if tag not in _PGP_FIRST or body is None or len(head) <= body:
        return False
    return head[body] in _PGP_FIRST[tag]


_PGP_HEADER_BYTES = tuple(bytes([b]) for b in range(0x80, 0x100))


def _compressor_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class GunzipReader(io.RawIOBase):
    """Decompresses a gzip stream as it is read, one or more members in a row
    (`cat a.gz b.gz`).  Output comes in pieces of at most the size asked for,
    so a gzip bomb cannot fill memory.  A stream that stops before its trailer
    is an ArchiveError, as is anything but zeros after the last member.
    """

    name = "gzip"
    magic = b"\x1f\x8b"

    def __init__(self, source: BinaryIO):
        self._source = source
        self._decoder = self._new_decoder()
        self._input = b""  # compressed bytes the decoder has not taken yet
        self._source_ended = False
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while size and not self._done:
            data = self._step(size)
            if data:
                return data
        return b""

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _new_decoder(self):
        return zlib.decompressobj(_GZIP_WBITS)

    def _step(self, size: int) -> bytes:
        if not self._input and not self._source_ended:
            self._input = self._read_source()
        try:
            data = self._decoder.decompress(self._input, size)
        except zlib.error as exc:
            raise ArchiveError(f"gzip stream corrupt: {exc}") from None
        if self._decoder.eof:
            self._input = b""
            self._start_next_frame(self._decoder.unused_data)
        else:
            self._input = self._decoder.unconsumed_tail
            if not data and not self._input and self._source_ended:
                raise ArchiveError("gzip stream truncated")
        return data

    def _start_next_frame(self, rest: bytes) -> None:
        while len(rest.lstrip(b"\0")) < len(self.magic) and not self._source_ended:
            # Zero padding after the last member is dropped, as gzip -d does.
            rest = rest.lstrip(b"\0") + self._read_source()
        rest = rest.lstrip(b"\0")
        if not rest:
            self._done = True
        elif self.magic.startswith(rest):
            raise ArchiveError(f"{self.name} stream truncated")
        elif not rest.startswith(self.magic):
            raise ArchiveError(f"data after the end of the {self.name} stream is not {self.name}")
        else:
            self._decoder = self._new_decoder()
            self._input = rest

    def _read_source(self) -> bytes:
        data = self._source.read(_READ_SIZE)
        self._source_ended = not data
        return data


class ZstdReader(GunzipReader):
    """A zstd stream, one or more frames in a row, as GunzipReader reads gzip.
    The decoder keeps the input it has not used: it is fed only when it asks."""

    name = "zstd"
    magic = b"\x28\xb5\x2f\xfd"

    def _new_decoder(self):
        return _zstd().ZstdDecompressor()

    def _step(self, size: int) -> bytes:
        decoder = self._decoder
        if decoder.needs_input and not self._input:
            self._input = self._read_source()
            if self._source_ended:
                raise ArchiveError("zstd stream truncated")
        try:
            data = decoder.decompress(self._input, size)
        except _zstd().ZstdError as exc:
            raise ArchiveError(f"zstd stream corrupt: {exc}") from None
        self._input = b""
        if decoder.eof:
            self._start_next_frame(decoder.unused_data)
        return data


def _zstd():
    """The standard library's compression.zstd (Python 3.14), or its backport."""
    try:
        from compression import zstd
    except ImportError:
        from backports import zstd
    return zstd


class GzipWriter:
    """Compresses what is written to it into `out` as one gzip member."""

    def __init__(self, out: BinaryIO, level: int = 6):
        self._out = out
        self._encoder = self._new_encoder(level)
        self.bytes_written = 0  # compressed bytes, for progress reports

    def _new_encoder(self, level: int):
        return zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)

    def _end(self) -> bytes:
        return self._encoder.flush()

    def write(self, data) -> int:
        self._emit(self._encoder.compress(data))
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        """Writes the trailer.  Not called on errors: a stream without its
        trailer is then seen as truncated, as it should be."""
        if self._encoder is not None:
            self._emit(self._end())
            self._encoder = None
            self._out.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.bytes_written += len(data)


class ZstdWriter(GzipWriter):
    """Compresses into `out` as one zstd frame, on as many threads as this
    process may use cores (zstd's own workers, beside the caller's thread)."""

    def _new_encoder(self, level: int):
        zstd = _zstd()
        options = {zstd.CompressionParameter.compression_level: level,
                   zstd.CompressionParameter.checksum_flag: 1}
        threads = _compressor_threads()
        if threads > 1:
            options[zstd.CompressionParameter.nb_workers] = threads
            # zstd's default job at level 3 is 8 MiB, several in flight: 125 MB peak with 2
            # workers.  2 MiB jobs: 38 MB, at the same speed (300 MB of documents).
            options[zstd.CompressionParameter.job_size] = _ZSTD_JOB
        return zstd.ZstdCompressor(options=options)

    def _end(self) -> bytes:
        return self._encoder.flush(self._encoder.FLUSH_FRAME)


def _beside(writer):
    """`writer` fed from a thread of its own (ThreadedWriter).  Measured under load:
    pack -z of 100 MB 19.7-20.2 s instead of 23.5 s, the same CPU seconds (tar -czf
    25.9-27.9 s); pack --zstd of 300 MB 10.9-13.9 s instead of 12.9-20.1 s (zstd's
    workers then wait less on the thread that reads the documents)."""
    return lambda out, level: ThreadedWriter(writer(out, level))


FORMATS = (
    Format("gzip", (GunzipReader.magic,), "gzip -dc", "gzip", (".gz", ".tgz"),
           GunzipReader, _beside(GzipWriter), (1, 6, 9)),
    Format("zstd", (ZstdReader.magic,), "zstd -dc", "zstd", (".zst", ".tzst", ".zstd"),
           ZstdReader, _beside(ZstdWriter), (1, 3, 19)),
    Format("xz", (b"\xfd7zXZ\x00",), "xz -dc", "xz", (".xz", ".txz")),
    Format("lz4", (b"\x04\x22\x4d\x18",), "lz4 -dc", "lz4", (".lz4",)),
    Format("bzip2", (b"BZh",), "bzip2 -dc", "bzip2", (".bz2", ".tbz", ".tbz2"), also=_bzip2_block_size),
    Format("age", (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----"),
           "age -d -i KEYFILE", "age -r RECIPIENT", (".age",), kind="encrypted"),
    Format("OpenPGP", _PGP_HEADER_BYTES + (b"-----BEGIN PGP MESSAGE-----",),
           "gpg -d", "gpg -e -r RECIPIENT", (".gpg", ".pgp", ".asc"), kind="encrypted", also=_openpgp_packet),
)
BY_NAME = {f.name: f for f in FORMATS}
GZIP, ZSTD = BY_NAME["gzip"], BY_NAME["zstd"]


def recognise(head: bytes) -> Format | None:
    """The format whose first bytes `head` are (None: plain, or unknown)."""
    return next((f for f in FORMATS if f.matches(head)), None)


def by_suffix(path: str) -> Format | None:
    """The format a file name says (`x.tar.gz`: gzip), or None."""
    lower = path.lower()
    return next((f for f in FORMATS if lower.endswith(f.suffixes)), None)


def sniff(stream: BinaryIO) -> tuple[Format | None, BinaryIO]:
    """The format `stream` is in (None: plain, or unknown) and a stream still
    holding the bytes looked at (it works on pipes)."""
    head, stream = _peek(stream, _PEEK)
    return recognise(head), stream


def open_input(stream: BinaryIO) -> BinaryIO:
    """The tar stream inside `stream`: decompressed if gzip or zstd, as it is if plain.
    Any other format we know is an ArchiveError naming the command to pipe it through,
    and so is a compressed stream inside another."""
    found, stream = sniff(stream)
    if found is None:
        return stream
    if found.reader is None:
        raise _pipe_first(found)
    try:
        inner, stream = sniff(found.reader(stream))
    except ArchiveError as e:  # cut or corrupt at once: the tar reader says where
        return _Failed(e)
    if inner is not None:
        nested = "twice" if inner is found else f"inside {found.name}"
        raise ArchiveError(f"input is {inner.described} {nested}: pipe it through '{found.decode}' first")
    return stream


def _pipe_first(found: Format) -> ArchiveError:
    return ArchiveError(f"input is {found.described}: pipe it through '{found.decode}' first")


def compressed_output(out: BinaryIO, format: Format, level: int | None = None):
    """A writable stream that compresses into `out` in `format` (a row with a writer);
    `close()` ends the stream and leaves `out` open."""
    return format.writer(out, format.levels[1] if level is None else level)


def gzip_output(out: BinaryIO, level: int = 6) -> GzipWriter:
    """A writable stream that gzips into `out`; `close()` ends the gzip stream
    (and leaves `out` open)."""
    return GzipWriter(out, level)


class ThreadedWriter:
    """`writer` fed from a thread of its own through a short queue: zlib and zstd let
    go of the interpreter while they compress, so the caller reads and hashes the next
    piece meanwhile.  An error in the thread is raised at the next write or close."""

    _QUEUED = 8  # pieces of up to a few hundred KiB: a few MiB at most in flight

    def __init__(self, writer):
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(self._QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="compress", daemon=True)
        self._thread.start()

    @property
    def bytes_written(self) -> int:
        return self._writer.bytes_written

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write(data)
                except BaseException as e:  # raised in the caller's thread
                    self._error = e

    def write(self, data) -> int:
        self._check()
        self._queue.put(bytes(data))  # the caller may reuse its buffer
        return len(data)

    def flush(self) -> None:
        self._check()

    def close(self) -> None:
        self._stop()
        self._check()
        self._writer.close()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error


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


class _Failed(io.RawIOBase):
    """A stream whose first read raises `error`."""

    def __init__(self, error: ArchiveError):
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise self._error


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
