"""What every reader of an archive shares: input, hashing, member streams."""

import io
import json
from typing import BinaryIO, Iterator

import xxhash

from ..errors import ArchiveError
from ..spill import SpillList, compare_digests
from ..tar import Member, open_input, read_members
from . import layout

MAX_METADATA_BYTES = 16 << 20  # users_exported lists every user, the schema every column


def members(stream: BinaryIO, source: str = "-") -> Iterator[Member]:
    """Members of a plain or gzip tar stream (zstd and others: a clear error)."""
    return read_members(open_input(stream), source=source)


class HashedContent(io.RawIOBase):
    """A member's content as a readable stream, hashed (XXH128) as it is read."""

    def __init__(self, member: Member):
        self.member = member
        self.hasher = xxhash.xxh3_128()
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
            self.hasher.update(chunk)
            self.size += len(chunk)
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
            self.hasher.update(chunk)
            self.size += len(chunk)
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
            hasher.update(view)
            self.size += len(view)
            yield view

    def finish(self) -> str:
        """Read what is left and return the hex digest of the whole content."""
        for _ in self.views():
            pass
        return self.hasher.hexdigest()


def buffered(content: HashedContent) -> io.BufferedReader:
    return io.BufferedReader(content, 1 << 16)


def read_metadata(member: Member) -> tuple[dict, str]:
    """The parsed metadata.json member and its digest."""
    if member.name != layout.METADATA:
        raise ArchiveError(f"{member.name}: expected {layout.METADATA} as the first member")
    if member.size > MAX_METADATA_BYTES:
        raise ArchiveError(f"{layout.METADATA}: {member.size} bytes is too large for metadata")
    content = HashedContent(member)
    data = b"".join(content.chunks())
    try:
        metadata = json.loads(data)
    except ValueError as e:
        raise ArchiveError(f"{layout.METADATA}: invalid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise ArchiveError(f"{layout.METADATA}: expected a JSON object")
    return metadata, content.hasher.hexdigest()


METADATA_FIELDS = {
    "aviary_version": str,
    "export_timestamp": str,
    "database_type": str,
    "total_documents": int,
    "total_size_bytes": int,
    "exported_tables": (list, type(None)),
    "total_users": int,
}


def metadata_problems(metadata: dict) -> list[str]:
    """What is missing or mistyped in metadata.json."""
    problems = []
    for name, kind in METADATA_FIELDS.items():
        if name not in metadata:
            problems.append(f"missing field {name}")
        elif not isinstance(metadata[name], kind) or isinstance(metadata[name], bool):
            problems.append(f"field {name} has the wrong type")
    users = metadata.get("users_exported")
    if users is not None and not (isinstance(users, list) and all(isinstance(u, str) for u in users)):
        problems.append("field users_exported is not a list of ids")
    return problems


def parse_checksum_member(content: HashedContent, source: str) -> SpillList:
    return parse_checksum_chunks(content.chunks(), source)


def parse_checksum_chunks(chunks, source: str) -> SpillList:
    """(name, digest in lower case) of every line of a checksums member."""
    from ..tar import parse_checksums

    listed = SpillList()
    for digest, name in parse_checksums(chunks, source=source):
        listed.append((name, digest.lower()))
    return listed


def check_checksums(checksums: SpillList | None, digests: SpillList) -> None:
    """ArchiveError unless every member the checksums list was read with that digest."""
    if checksums is None:
        return  # Aviary's own archives carry none
    for name, actual, listed in compare_digests(checksums, digests):
        if listed is None:
            return  # the listed names come first, and all were read as listed
        if actual is None:
            raise ArchiveError(f"{name}: listed in {layout.CHECKSUMS} but missing from the archive")
        raise ArchiveError(f"{name}: XXH128 mismatch (archive corrupt): {actual} != {listed}")
