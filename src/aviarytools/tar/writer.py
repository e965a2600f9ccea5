"""Writing a tar stream member by member, straight to an output stream.

Headers are POSIX ustar, which GNU tar, Python's tarfile and Go's archive/tar
(Aviary's restore) all read.  Where ustar falls short (a name that cannot be
split into prefix and name, a non-ASCII name, a size of 8 GiB or more, an
mtime before 1970 or after 2242) a pax extended header ('x') carries the exact
value.  Owner is uid/gid 0 "root": GNU tar lists it as root/root, and when it
extracts as root the files belong to root, as a restore should.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from typing import BinaryIO

import xxhash

from aviarytools.errors import ArchiveError
from aviarytools.tar.checksums import CHECKSUMS_NAME, format_line
from aviarytools.tar.reader import byte_sum, name_problem

BLOCK = 512
# GNU tar writes in records of 20 blocks and pads the last one with zeros.
RECORD = 20 * BLOCK
# An 11-digit octal field holds values below 8 GiB (and mtimes up to 2242).
OCTAL_LIMIT = 8**11
PAX_HEADER_NAME = b"././@PaxHeader"
_COPY_SIZE = 256 * 1024
_SPOOL_SIZE = 4 << 20  # checksum lines held in memory before they go to a temporary file
_ZEROS = bytes(RECORD)
# name, mode, uid, gid, size, mtime, checksum, typeflag, linkname, magic+version,
# uname, gname, devmajor, devminor, prefix, padding
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


class TarWriter:
    """Writes members to `out` (a buffered binary stream) as they come.

    `add_file` and `add_bytes` return the XXH128 hex digest of the content and
    remember it for `write_checksums`.  After an ArchiveError the stream is
    unusable: the caller aborts.  `close` ends the archive but leaves `out`
    open.
    """

    def __init__(self, out: BinaryIO):
        self._out = out
        self.bytes_written = 0
        # Checksum lines wait for the end of the archive; spill them to disk
        # beyond a few MiB so that memory stays flat however many files.
        self._sums: BinaryIO = io.BytesIO()
        self._spilled = False

    def add_dir(self, name: str, mtime: float, mode: int = 0o755) -> None:
        """A directory entry, written without a trailing slash as Aviary does."""
        self._write_header(name.rstrip("/") or name, b"5", 0, mtime, mode)

    def add_file(
        self,
        name: str,
        size: int,
        chunks: Iterable[bytes],
        mtime: float,
        mode: int = 0o644,
        hasher=None,
    ) -> str:
        """A regular file whose content is `chunks`, exactly `size` bytes in all.

        `hasher`: an xxh3_128 that the producer of `chunks` updates with each
        chunk before handing it over (so that hashing can run in the
        producer's thread); by default the writer hashes what it writes.
        """
        self._write_header(name, b"0", size, mtime, mode)
        digest = self._write_content(name, size, chunks, hasher)
        self._sums.write(format_line(digest, name).encode("utf-8"))
        if not self._spilled and self._sums.tell() > _SPOOL_SIZE:
            # Imported only now: most archives never need it, and it takes a while.
            import tempfile

            spill = tempfile.TemporaryFile()
            spill.write(self._sums.getbuffer())
            self._sums, self._spilled = spill, True
        return digest

    def add_bytes(self, name: str, data: bytes, mtime: float, mode: int = 0o644) -> str:
        return self.add_file(name, len(data), [data], mtime, mode)

    def write_checksums(self, name: str = CHECKSUMS_NAME, *, mtime: float) -> str:
        """The digests of every regular member so far, as `xxhsum -H2` prints them.

        Call it last, just before `close`: it is not listed in itself.
        """
        size = self._sums.tell()
        self._sums.seek(0)
        chunks = iter(lambda: self._sums.read(_COPY_SIZE), b"")
        self._write_header(name, b"0", size, mtime, 0o644)
        return self._write_content(name, size, chunks)

    def close(self) -> None:
        """Two zero blocks end the archive; zeros fill up the last record."""
        end = 2 * BLOCK
        end += -(self.bytes_written + end) % RECORD
        self._write(_ZEROS[:end])
        self._sums.close()
        self._out.flush()

    def _write_header(self, name: str, typeflag: bytes, size: int, mtime: float, mode: int):
        problem = name_problem(name) or (f"negative size {size}" if size < 0 else None)
        if problem:
            raise ArchiveError(f"cannot archive {name!r}: {problem}")
        encoded = name.encode("utf-8")
        mtime = int(mtime)
        pax = {}
        split = _ustar_split(encoded)
        if split is None:
            pax["path"] = name
            split = b"", _truncate_utf8(encoded, 100)
        if size >= OCTAL_LIMIT:
            pax["size"] = str(size)
        if not 0 <= mtime < OCTAL_LIMIT:
            pax["mtime"] = str(mtime)
        if pax:
            records = _pax_records(pax)
            self._write(_header(PAX_HEADER_NAME, b"", b"x", len(records), mtime, 0o644))
            self._write(records + _padding(len(records)))
        prefix, short_name = split
        self._write(_header(short_name, prefix, typeflag, size, mtime, mode))

    def _write_content(self, name: str, size: int, chunks: Iterable[bytes], hasher=None) -> str:
        hashing = hasher is None
        hasher = xxhash.xxh3_128() if hashing else hasher
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                raise ArchiveError(f"{name}: content is longer than the {size} bytes announced")
            if hashing:
                hasher.update(chunk)
            self._write(chunk)
        if written != size:
            raise ArchiveError(f"{name}: content ended after {written} of {size} bytes announced")
        self._write(_padding(size))
        return hasher.hexdigest()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_written += len(data)


def _ustar_split(encoded: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) holding `encoded` in ustar fields, or None if it does not fit."""
    if not encoded.isascii():
        return None
    if len(encoded) <= 100:
        return b"", encoded
    cut = encoded.rfind(b"/", 0, 156)
    if cut <= 0 or not 0 < len(encoded) - cut - 1 <= 100:
        return None
    return encoded[:cut], encoded[cut + 1 :]


def _truncate_utf8(encoded: bytes, limit: int) -> bytes:
    return encoded[:limit].decode("utf-8", "ignore").encode("utf-8")


def _pax_records(fields: dict[str, str]) -> bytes:
    """'<length> <key>=<value>\\n' records; the length counts its own digits."""
    records = []
    for key, value in fields.items():
        body = b" %s=%s\n" % (key.encode("ascii"), value.encode("utf-8"))
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        records.append(b"%d%s" % (length, body))
    return b"".join(records)


def _header(name: bytes, prefix: bytes, typeflag: bytes, size: int, mtime: int, mode: int):
    # Fields shorter than their width are padded with NULs by the struct.
    block = bytearray(
        _USTAR.pack(
            name,
            b"%07o\0" % (mode & 0o7777),
            b"0000000\0",  # uid
            b"0000000\0",  # gid
            _size_field(size),
            b"%011o\0" % (mtime if 0 <= mtime < OCTAL_LIMIT else 0),
            b" " * 8,  # checksum, counted as spaces
            typeflag,
            b"",  # linkname
            b"ustar\x0000",
            b"root",
            b"root",
            b"0000000\0",  # devmajor
            b"0000000\0",  # devminor
            prefix,
        )
    )
    block[148:156] = b"%06o\0 " % byte_sum(block)
    return block


def _size_field(size: int) -> bytes:
    if size < OCTAL_LIMIT:
        return b"%011o\0" % size
    # The pax header has the size too; GNU base-256 also serves readers without pax.
    return b"\x80" + size.to_bytes(11, "big")


def _padding(size: int) -> bytes:
    return _ZEROS[: -size % BLOCK]
