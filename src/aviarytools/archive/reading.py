"""What every reader of an archive shares: input, hashing, member streams."""

import io
import json
from typing import BinaryIO, Iterator

import xxhash

from ..errors import ArchiveError
from ..spill import SpillList
from ..tar import Member, open_input, read_members
from . import layout

MAX_METADATA_BYTES = 16 << 20  # users_exported lists every user, the schema every column


def members(stream: BinaryIO, source: str = "-") -> Iterator[Member]:
    """Members of a plain, gzip or zstd tar stream (others: a clear error)."""
    return read_members(open_input(stream), source=source)


class HashedContent(io.RawIOBase):
    """A member's content as a readable stream, hashed (XXH128) as it is read; `tap`, if
    set, is given every piece as it passes, whoever reads (unpack -C writes tables that way)."""

    def __init__(self, member: Member):
        self.member = member
        self.hasher = xxhash.xxh3_128()
        self.tap = None
        self._chunks = None  # the member's chunks, once read as a stream
        self._views = None  # or its views, once read that way
        self._pending = memoryview(b"")
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._chunks is None:
            self._chunks = self.member.chunks()
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._passing(chunk)
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def chunks(self) -> Iterator[bytes]:
        """The rest of the content, chunk by chunk (hashed as it goes)."""
        if self._pending:
            rest, self._pending = bytes(self._pending), memoryview(b"")
            yield rest
        if self._chunks is None:
            self._chunks = self.member.chunks() if self._views is None else (bytes(v) for v in self._views)
        for chunk in self._chunks:
            self._passing(chunk)
            yield chunk

    def views(self) -> Iterator[memoryview]:
        """The rest of the content, hashed as it goes, as views of the reader's
        buffer (see Member.views): each valid only until the next is asked for."""
        if self._chunks is not None:  # partly read as a stream already
            yield from self.chunks()
            return
        if self._views is None:
            self._views = self.member.views()
        hasher = self.hasher
        for view in self._views:  # where an earlier call stopped: a second finish() reads nothing
            if self.tap is not None:
                self.tap(view)
            hasher.update(view)
            self.size += len(view)
            yield view

    def _passing(self, chunk) -> None:
        if self.tap is not None:
            self.tap(chunk)
        self.hasher.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Read what is left and return the hex digest of the whole content."""
        for _ in self.views():
            pass
        return self.hasher.hexdigest()


def buffered(content: HashedContent) -> io.BufferedReader:
    return io.BufferedReader(content, 1 << 16)


class MetadataError(ArchiveError):
    """metadata.json is not what it must be, though the archive reads on (unlike a tar
    archive cut short inside it, the plain ArchiveError of the reader)."""


def read_metadata(content: HashedContent) -> tuple[dict, bytes]:
    """The parsed metadata.json member and its bytes (its digest: content.hasher)."""
    if content.member.size > MAX_METADATA_BYTES:
        raise MetadataError(f"{layout.METADATA}: {content.member.size} bytes is too large for metadata")
    data = b"".join(content.chunks())
    try:
        metadata = json.loads(data)
    except ValueError as e:
        raise MetadataError(f"{layout.METADATA}: invalid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise MetadataError(f"{layout.METADATA}: expected a JSON object")
    return metadata, data


def parse_checksum_member(content: HashedContent, source: str) -> SpillList:
    return parse_checksum_chunks(content.chunks(), source)


def parse_checksum_chunks(chunks, source: str) -> SpillList:
    """(name, digest in lower case) of every line of a checksums member."""
    from ..tar import parse_checksums

    listed = SpillList()
    for digest, name in parse_checksums(chunks, source=source):
        listed.append((name, digest.lower()))
    return listed
