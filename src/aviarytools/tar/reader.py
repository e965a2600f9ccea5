"""Reading a tar stream strictly in sequence, checking everything on the way.

Python's tarfile in stream mode takes a corrupt header for the end of the
archive; this reader reports it, and any truncation, as an ArchiveError naming
the member and the byte offset in the (uncompressed) stream.  It reads ustar,
pax ('x' headers; 'g' global headers are skipped) and GNU long names ('L', 'K')
and base-256 numbers.  Content is streamed, never held: a member may claim any
size.

Content follows every header except char, block and fifo, as POSIX says.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple
from zlib import adler32

from aviarytools.errors import ArchiveError
from aviarytools.spill import HashSet

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
# Extended headers and long names are held in memory: bound them.
MAX_META_SIZE = 1 << 20
# Measured: 256 KiB pieces stay in the CPU cache between read and hash, and
# read+hash 1 GiB faster than 1 MiB pieces do.
CHUNK_SIZE = 256 * 1024
MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255

_TYPES = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",  # contiguous file: a regular file to everyone but old Masscomp
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char",
    b"4": "block",
    b"5": "dir",
    b"6": "fifo",
}
_NO_CONTENT = {b"3", b"4", b"6"}
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")


class _Header(NamedTuple):
    name: bytes
    typeflag: bytes
    size: int
    mtime: int
    mode: int
    linkname: bytes

_PAX_MTIME = re.compile(rb"-?[0-9]+(\.[0-9]*)?")


class Member:
    """One archive member.  `offset` is where its first header block starts
    (its pax or long-name header if it has one)."""

    __slots__ = ("name", "type", "size", "mtime", "mode", "linkname", "offset", "_archive")

    def __init__(self, name, type, size, mtime, mode, linkname, offset, archive=None):
        self.name: str = name
        self.type: str = type
        self.size: int = size
        self.mtime: int = mtime
        self.mode: int = mode
        self.linkname: str = linkname
        self.offset: int = offset
        self._archive = archive

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Exactly `size` bytes of content, in pieces of at most `chunk_size`.

        Only while this is the current member, and only once: the stream is
        not seekable.
        """
        return self._archive.content(self, chunk_size)

    def views(self, buffer: bytearray | None = None) -> Iterator[memoryview]:
        """Like `chunks`, but read into a reused buffer (`buffer`, else one the
        reader keeps): each piece is a view of it, valid only until the next one
        is asked for.  No memory is allocated per piece, for callers that hash
        or write each piece at once."""
        return self._archive.content_into(self, buffer)

    def __repr__(self) -> str:
        return f"Member({self.name!r}, {self.type}, size={self.size}, offset={self.offset})"


def read_members(stream: BinaryIO, *, source: str = "-") -> Iterator[Member]:
    """The members of the tar stream, one by one, checked as they are read.

    Content the caller does not read is skipped on the next step.  After the
    end-of-archive marker the rest of the input is read and discarded, so that
    a compressed input's own trailer is checked too.  `source` names the input
    in messages (unless it is "-").
    """
    return _Archive(stream, source).members()


def member_name_problem(member: Member) -> str | None:
    """Why this member must not be extracted or restored, or None if it is fine.

    Only regular files and directories are restored; links, devices and fifos
    are refused whatever their name.
    """
    if member.type in ("symlink", "hardlink"):
        return f"{member.type} to {_shown(member.linkname)}: links are not restored"
    if member.type not in ("file", "dir"):
        return f"{member.type} member: only files and directories are restored"
    if member.type == "file" and member.name.endswith("/"):
        return "a file name ending in '/'"
    return name_problem(member.name)


def name_problem(name: str) -> str | None:
    """Why `name` is unsafe as a path to extract or restore, or None.

    A backslash is allowed: on Linux, where Aviary runs and we extract, and in
    S3 keys it is an ordinary character, and Aviary may hold documents whose
    names have one.  A Windows-made `..\\x` is then one harmless name.
    """
    if not name:
        return "empty name"
    if "\0" in name:
        return "name contains a NUL byte"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if name.startswith("/"):
        return "absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "path contains a '..' component"
    if len(encoded) > MAX_NAME_BYTES:
        return f"name is longer than {MAX_NAME_BYTES} bytes"
    if len(encoded) > MAX_COMPONENT_BYTES and any(len(part.encode("utf-8")) > MAX_COMPONENT_BYTES for part in parts):
        return f"a path component is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


class NameSet:
    """Names seen so far, to catch duplicate members.

    `a`, `a/` and `./a` are the same name.  Names are kept as 128-bit
    hashes (aviarytools.spill.HashSet), not as strings.
    """

    def __init__(self):
        self._names = HashSet()

    def add(self, name: str) -> bool:
        """Remember `name`; False if it was seen before (a duplicate)."""
        return self._names.add(_normalized(name))

    def __contains__(self, name: str) -> bool:
        return _normalized(name) in self._names

    def __len__(self) -> int:
        return len(self._names)


def _normalized(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


def _shown(name: str) -> str:
    """A name as it can appear in a one-line message."""
    if name.isprintable():
        return name
    return name.encode("unicode_escape", "backslashreplace").decode("ascii")


class _Archive:
    """The state of one sequential read."""

    def __init__(self, stream: BinaryIO, source: str):
        self._stream = stream
        self._source = source
        self._pos = 0
        self._current: Member | None = None
        self._left = 0  # content bytes of the current member still unread
        self._started = False
        self._last: str | None = None
        self._readinto_stream = getattr(stream, "readinto", None)
        self._view_buffer: memoryview | None = None

    def members(self) -> Iterator[Member]:
        while True:
            self._finish_current()
            member = self._next_member()
            if member is None:
                self._drain()
                return
            self._current, self._left, self._started = member, member.size, False
            yield member

    def content(self, member: Member, chunk_size: int) -> Iterator[bytes]:
        if member is not self._current or self._started:
            raise _out_of_sequence(member)
        self._started = True
        return self._content(member, chunk_size)

    def _content(self, member: Member, chunk_size: int) -> Iterator[bytes]:
        while True:
            if member is not self._current:
                raise _out_of_sequence(member)
            if not self._left:
                return
            data = self._read(min(chunk_size, self._left))
            if not data:
                raise self._truncated_content(member)
            self._left -= len(data)
            yield data

    def content_into(self, member: Member, buffer: bytearray | None) -> Iterator[memoryview]:
        if member is not self._current or self._started:
            raise _out_of_sequence(member)
        self._started = True
        return self._content_into(member, self._buffer() if buffer is None else memoryview(buffer).cast("B"))

    def _content_into(self, member: Member, view: memoryview) -> Iterator[memoryview]:
        size = len(view)
        while True:
            if member is not self._current:
                raise _out_of_sequence(member)
            left = self._left
            if not left:
                return
            n = self._readinto(view[:left] if left < size else view)
            if not n:
                raise self._truncated_content(member)
            self._left = left - n
            yield view[:n]

    def _finish_current(self) -> None:
        member = self._current
        if member is None:
            return
        if self._left:
            view = self._buffer()
            while self._left:
                n = self._readinto(view[: min(len(view), self._left)])
                if not n:
                    raise self._truncated_content(member)
                self._left -= n
        padding = -member.size % BLOCK
        if padding and len(self._read_exact(padding)) < padding:
            raise self._error("archive truncated inside the padding after member data", member)
        self._last, self._current = member.name, None

    def _next_member(self) -> Member | None:
        first_offset = None
        pax: dict[bytes, bytes] = {}
        long_names: dict[bytes, bytes] = {}
        while True:
            offset = self._pos
            block = self._read_exact(BLOCK)
            if block == ZERO_BLOCK:
                if first_offset is not None:
                    raise self._error("extended header not followed by a member", offset=offset)
                self._end_of_archive(offset)
                return None
            if len(block) < BLOCK:
                raise self._truncated_header(offset, block, first_offset)
            if first_offset is None:
                first_offset = offset
            header = self._parse_header(block, offset)
            typeflag = header.typeflag
            if typeflag in (b"x", b"g", b"L", b"K"):
                data = self._read_meta(header.size, offset)
                if typeflag == b"x":
                    pax.update(self._parse_pax(data, offset))
                elif typeflag in (b"L", b"K"):
                    long_names[typeflag] = data.split(b"\0", 1)[0]
                continue
            if pax or long_names:
                header = self._extended(header, pax, long_names, first_offset)
            return self._member(header, first_offset)

    def _parse_header(self, block: bytes, offset: int) -> _Header:
        (name, mode, _, _, size, mtime, checksum, typeflag, linkname, magic, _, _, _, _, prefix) = (
            _HEADER.unpack(block)
        )
        if not _checksum_ok(block, checksum):
            hint = " (not a tar archive?)" if offset == 0 else ""
            raise self._error(f"bad header checksum{hint}", offset=offset)
        try:
            numbers = _number(mode), _number(size), _number(mtime)
        except ValueError:
            raise self._bad_field(offset, mode=mode, size=size, mtime=mtime) from None
        mode, size, mtime = numbers
        if size < 0:
            raise self._error(f"negative size {size} in header", offset=offset)
        name = _cstring(name)
        # Only POSIX ustar has a prefix; GNU's "ustar  " keeps other things there.
        if magic.startswith(b"ustar\0") and prefix[0]:
            name = _cstring(prefix) + b"/" + name
        return _Header(name, typeflag, size, mtime, mode, _cstring(linkname))

    def _bad_field(self, offset: int, **fields: bytes) -> ArchiveError:
        label, field = next((k, v) for k, v in fields.items() if not _is_number(v))
        return self._error(f"bad {label} field {field!r} in header", offset=offset)

    def _extended(self, header: _Header, pax, long_names, offset: int) -> _Header:
        """`header` with what pax records and GNU long names say instead."""
        name = pax.get(b"path") or long_names.get(b"L") or header.name
        linkname = pax.get(b"linkpath") or long_names.get(b"K") or header.linkname
        typeflag = header.typeflag
        if any(key.startswith(b"GNU.sparse.") for key in pax):
            typeflag = b"S"  # GNU sparse file: the content is a map, not the file
        try:
            size = _pax_size(pax[b"size"]) if pax.get(b"size") else header.size
            mtime = _pax_mtime(pax[b"mtime"]) if pax.get(b"mtime") else header.mtime
        except ValueError as exc:
            raise self._error(f"bad pax value {exc}", offset=offset) from None
        return _Header(name, typeflag, size, mtime, header.mode, linkname)

    def _member(self, header: _Header, offset: int) -> Member:
        typeflag = header.typeflag
        kind = _TYPES.get(typeflag, "other")
        name = header.name.decode("utf-8", "surrogateescape")
        if typeflag == b"\0" and name.endswith("/"):
            kind = "dir"  # pre-POSIX directory
        if kind == "dir":
            name = name.rstrip("/") or name
        return Member(
            name,
            kind,
            0 if typeflag in _NO_CONTENT else header.size,
            header.mtime,
            header.mode,
            header.linkname.decode("utf-8", "surrogateescape"),
            offset,
            self,
        )

    def _read_meta(self, size: int, offset: int) -> bytes:
        if size > MAX_META_SIZE:
            raise self._error(f"extended header of {size} bytes is too large", offset=offset)
        padded = size + -size % BLOCK
        data = self._read_exact(padded)
        if len(data) < padded:
            raise self._error("archive truncated inside an extended header", offset=offset)
        return data[:size]

    def _parse_pax(self, data: bytes, offset: int) -> dict[bytes, bytes]:
        try:
            return _pax_records(data)
        except ValueError as exc:
            raise self._error(f"malformed pax extended header: {exc}", offset=offset) from None

    def _end_of_archive(self, offset: int) -> None:
        second = self._read_exact(BLOCK)
        if second == ZERO_BLOCK:
            return
        if len(second) == BLOCK:
            raise self._error("a lone zero block inside the archive", offset=offset)
        if self._last is None and offset == 0:
            raise self._error("truncated: end-of-archive marker incomplete (no members)")
        raise self._error(
            f"truncated: end-of-archive marker missing after {_shown(self._last)}"
            f" (offset {offset})",
            bare=True,
        )

    def _truncated_header(self, offset, block, first_offset) -> ArchiveError:
        if not block and first_offset is None:
            if offset == 0:
                return self._error("empty input: not a tar archive", bare=True)
            last = _shown(self._last) if self._last else "?"
            return self._error(
                f"truncated: end-of-archive marker missing after {last} (offset {offset})",
                bare=True,
            )
        return self._error(
            f"archive truncated inside a header (got {len(block)} of {BLOCK} bytes)",
            offset=offset,
        )

    def _truncated_content(self, member: Member) -> ArchiveError:
        got = member.size - self._left
        return self._error(
            f"archive truncated inside member data (got {got} of {member.size} bytes)", member
        )

    def _drain(self) -> None:
        view = self._buffer()
        while self._readinto(view):
            pass

    def _read(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except ArchiveError as exc:  # from a decompressing stream
            raise self._error(str(exc), self._current, offset=self._pos) from None
        self._pos += len(data)
        return data

    def _readinto(self, view: memoryview) -> int:
        """Like _read, into `view`: the number of bytes read, 0 at the end."""
        if self._readinto_stream is None:  # a stream without readinto
            data = self._read(len(view))
            view[: len(data)] = data
            return len(data)
        try:
            n = self._readinto_stream(view)
        except ArchiveError as exc:  # from a decompressing stream
            raise self._error(str(exc), self._current, offset=self._pos) from None
        n = n or 0
        self._pos += n
        return n

    def _buffer(self) -> memoryview:
        """The buffer content is read into (views, skipped content), made once per archive."""
        if self._view_buffer is None:
            self._view_buffer = memoryview(bytearray(CHUNK_SIZE))
        return self._view_buffer

    def _read_exact(self, size: int) -> bytes:
        data = self._read(size)
        if len(data) == size or not data:
            return data
        parts = [data]
        missing = size - len(data)
        while missing:
            data = self._read(missing)
            if not data:
                break
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    def _error(self, problem, member=None, *, offset=None, bare=False) -> ArchiveError:
        """An ArchiveError saying where: the member, else the offset and the member before."""
        source = "" if self._source == "-" else f"{self._source}: "
        if bare:
            return ArchiveError(f"{source}{problem}")
        if member is not None:
            where = f"{_shown(member.name)} (offset {member.offset})"
            return ArchiveError(f"{source}{where}: {problem}")
        after = f" (after {_shown(self._last)})" if self._last else ""
        return ArchiveError(f"{source}offset {offset}: {problem}{after}")


def _out_of_sequence(member: Member) -> ValueError:
    return ValueError(f"{_shown(member.name)}: content already passed; reading is sequential")


def _checksum_ok(block: bytes, field: bytes) -> bool:
    try:
        stored = _number(field)
    except ValueError:
        return False
    # The checksum field itself counts as eight spaces.
    unsigned = byte_sum(block) - sum(field) + 8 * 32
    if stored == unsigned:
        return True
    # Some historic tars summed signed chars.
    high = sum(1 for byte in block if byte & 0x80)
    return stored == unsigned - 256 * high


def byte_sum(block: bytes) -> int:
    """sum(block), six times faster: Adler-32's low half is 1 + the byte sum
    modulo 65521, exact for 256 bytes (at most 65280)."""
    return (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2


def _number(field: bytes) -> int:
    """An octal field, or a GNU base-256 one (leading 0x80, or 0xff if negative)."""
    if field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        if field[0] == 0x80:
            return int.from_bytes(field[1:], "big")
        raise ValueError(field)
    digits = field.strip(b" \0")
    if digits.isdigit():
        return int(digits, 8)  # a ValueError for 8 or 9
    if digits:
        raise ValueError(field)
    return 0


def _is_number(field: bytes) -> bool:
    try:
        _number(field)
    except ValueError:
        return False
    return True


def _cstring(field: bytes) -> bytes:
    end = field.find(0)
    return field if end < 0 else field[:end]


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """'<length> <key>=<value>\\n' records, the length counting the whole record."""
    records = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        if space < 0 or not data[pos:space].isdigit():
            raise ValueError(f"bad record length at byte {pos}")
        end = pos + int(data[pos:space])
        if end <= space or end > len(data) or data[end - 1] != 0x0A:
            raise ValueError(f"bad record length at byte {pos}")
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise ValueError(f"record without key=value at byte {pos}")
        records[key] = value
        pos = end
    return records


def _pax_size(value: bytes) -> int:
    if not value.isdigit():
        raise ValueError(f"size={value[:40]!r}")
    return int(value)


def _pax_mtime(value: bytes) -> int:
    if not _PAX_MTIME.fullmatch(value):
        raise ValueError(f"mtime={value[:40]!r}")
    whole, _, fraction = value.partition(b".")
    seconds = int(whole)
    # Floor: -1.5 is two seconds before the epoch, plus a half.
    if whole.startswith(b"-") and fraction.strip(b"0"):
        seconds -= 1
    return seconds
