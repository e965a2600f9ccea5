"""A restore of a chain (unpack BASE INC1 INC2 ...): which archive is read when, and which of
its documents each gives.  One restore (restore.py) reads them all, in one transaction.

Before any archive is read through, every link the files' metadata.json records is checked
(chain.py); a `-` is read first, and its link is checked as soon as its metadata.json comes,
before any member of it is staged.  The files are then read from the last to the first: the
last gives the tables and, by its manifest, the documents that exist; each earlier archive
gives only the documents of that manifest that no later archive carried (each is written
once), each checked against the manifest's size and XXH128; its tables are read and checked,
not restored.  A `-` read ahead of archives that follow it learns from their manifests
(read alone) what they carry.  A single archive is a chain of one: every document it holds
is restored, as always.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import ArchiveError, InputError
from ..spill import HashSet, SpillList
from . import incremental, layout
from .chain import ChainError, Link, check, file_link, is_file, link_of
from .inspect import member_chunks


@dataclass
class Archive:
    """One archive of the chain: its stream, its name as given, and its place (0: the first)."""

    stream: BinaryIO
    name: str
    position: int
    link: Link | None = None
    metadata: dict | None = None

    @property
    def streamed(self) -> bool:
        """`-` or a pipe (`<(ssh host cat x.tar)`): read once, as it comes, never ahead."""
        return not is_file(self.name)


class ChainReading:
    """The archives of one restore, the order they are read in, and what each gives."""

    def __init__(self, archives: list[tuple[BinaryIO, str]]):
        self.archives = [Archive(stream, name, n) for n, (stream, name) in enumerate(archives)]
        self.current: Archive | None = None
        self.final_entries: HashSet | None = None  # "key\0size\0xxh128" of each document of the last manifest
        self.relied: SpillList | None = None  # (key, size, xxh128) the last archive does not carry
        self.staged = HashSet()  # the keys staged so far
        self.passed_over = HashSet()  # what archives after a `-` read ahead of them carry
        self._checking: tuple[str, int] | None = None  # a document from an earlier archive being read

    @property
    def is_chain(self) -> bool:
        return len(self.archives) > 1

    @property
    def last(self) -> Archive:
        return self.archives[-1]

    def check_files(self) -> None:
        """Every file's link (its metadata.json alone), those before a `-` checked as a chain at
        once, all of them once the `-`'s comes: a broken chain is refused before anything is read
        through."""
        if not self.is_chain:
            return
        streamed = [a.name for a in self.archives if a.streamed]
        if len(streamed) > 1:
            raise ChainError(f"{', '.join(streamed)}: at most one archive of a chain can be read as a stream"
                             " (- or a pipe): give the others as files")
        for archive in self.archives:
            if not archive.streamed:
                archive.link, archive.metadata = file_link(archive.name)
        known = [a.link for a in self.archives]
        check(known[:known.index(None)] if None in known else known)

    def order(self) -> list[Archive]:
        """The order the archives are read in: `-` (or a pipe) first, then the files from the last to the first."""
        ahead = [a for a in self.archives if a.streamed]
        return ahead + [a for a in reversed(self.archives) if not a.streamed]

    def label(self, read: int) -> str:
        """The progress line's phase while the `read`-th archive read (1: the first) is."""
        if not self.is_chain:
            return "reading"
        return f"reading {read}/{len(self.archives)} {self.current.name}"

    def arrived(self, metadata: dict) -> None:
        """The current archive's metadata.json: a `-`'s link is checked now (the whole chain);
        a file's must be what was read first."""
        archive = self.current
        if not self.is_chain:
            archive.metadata = metadata
            return
        link = link_of(metadata, archive.name)
        if archive.link is None:
            archive.link, archive.metadata = link, metadata
            check([a.link for a in self.archives])
        elif link != archive.link:
            raise ArchiveError(f"{archive.name}: its metadata.json changed since it was read: give it again")

    def setup_metadata(self) -> dict:
        """The metadata that decides how the chain is restored: the last archive's."""
        return self.last.metadata if self.last.metadata is not None else self.current.metadata

    @property
    def reading_last(self) -> bool:
        return self.current is self.last

    def ahead(self) -> list[Archive]:
        """The files after a `-` read first, whose manifests it must know (none otherwise)."""
        if not self.current.streamed or self.current is self.last:
            return []
        return self.archives[self.current.position + 1:]

    # -- the last manifest, and the documents each archive gives ------------------------

    def final(self, entry: incremental.Entry) -> None:
        """A document of the last archive's manifest (in the restore's scope)."""
        if self.final_entries is None:
            self.final_entries, self.relied = HashSet(), SpillList()
        self.final_entries.add(_entry_key(entry.key, entry.size, entry.xxh128))
        if not entry.carried:
            self.relied.append((entry.key, entry.size, entry.xxh128))

    @property
    def final_known(self) -> bool:
        return self.final_entries is not None

    def gives(self, key: str, restored_keys: HashSet) -> bool:
        """Whether the document at `key` is staged from the archive being read."""
        if not self.is_chain:
            return True
        if key in self.staged or key in self.passed_over or key not in restored_keys:
            return False
        return True

    def took(self, key: str, size: int) -> None:
        if not self.is_chain:
            return
        self.staged.add(key)
        if not self.reading_last:
            self._checking = (key, size)

    def done(self, digest: str) -> None:
        """A document from an earlier archive, read whole: it must be the one the last manifest records."""
        if self._checking is None:
            return
        (key, size), self._checking = self._checking, None
        if _entry_key(key, size, digest) not in self.final_entries:
            raise InputError(f"{self.current.name}: {key}: {size} bytes, XXH128 {digest}, but {self.last.name}'s"
                             f" manifest records it otherwise and no archive after this one carries it: these"
                             " archives are not the states of one chain (nothing was changed)")

    def passing_over(self, entries: Iterator[incremental.Entry]) -> Iterator[incremental.Entry]:
        """The entries of an archive after a `-` read ahead of it: what it carries, the `-` does not give."""
        for entry in entries:
            if entry.carried:
                self.passed_over.add(entry.key)
            yield entry

    def after_this(self) -> None:
        """The archive read first was a `-`: what the archives after it carry is theirs again."""
        self.passed_over = HashSet()

    def complete(self) -> None:
        """Every document of the last manifest came from some archive of the chain."""
        if not self.is_chain or self.relied is None:
            return
        last = self.last
        for key, _, _ in self.relied:
            if key not in self.staged:
                raise InputError(f"{key}: in the manifest of {last.link}, but no archive of the chain carries it:"
                                 " give the whole chain, from its level 0 (nothing was changed)")

    def manifest(self, archive: Archive) -> Iterator[incremental.Entry]:
        """The entries of a file's manifest.ndjson, read alone (its metadata.json and the manifest)."""
        with open(archive.name, "rb") as file:
            lines = _lines(member_chunks(file, layout.MANIFEST, archive.name))
            for number, line in enumerate(lines, 1):
                try:
                    yield incremental.entry_of(json.loads(line), manifest=True)
                except ValueError as e:
                    raise ArchiveError(f"{archive.name}: {layout.MANIFEST} line {number}: not a manifest record"
                                       f" ({e})") from None


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        *whole, rest = (rest + chunk).split(b"\n")
        yield from whole
    if rest:
        yield rest


def _entry_key(key: str, size: int, digest: str) -> str:
    return f"{key}\0{size}\0{digest}"
