"""One pass over an archive: the only place that knows its kinds of member and its rules.

Restore, `unpack -C`, `verify` and `doctor --against` each read an archive
once, from the front.  They used to walk it each in their own way, with
their own idea of a member the checksums do not list; now each is a
`Consumer` of this walk, and the walk holds every rule:

- metadata.json well formed (with its `aviarytools.schema`), and first,
  as aviarytools and Aviary since v1.5.4 write it; an archive of Aviary
  v1.4.0 to v1.5.3, whose metadata.json comes after everything else, is
  read as what it can only be, Aviary's full multi-user archive (see
  `Consumer.begin`), and its metadata is checked when it comes;
- every name safe and no name twice;
- every table a JSON array (or Aviary's `null`) of objects, no key twice;
- vanished.ndjson records well formed, rmapi.conf files of a sane size;
- at the end: every member against checksums.xxh128 (each listed member
  read with its digest, each regular member listed), metadata.json's
  totals against what the archive holds, and every user a row or a
  document folder names present in users.json.

Walking yields Findings as they are known (problems before the member they
concern is handed over, where they can be); a tar stream that cannot be read
on raises ArchiveError.  `verify` prints them; a
restore or an extraction stops at the first problem (`raise_problems`),
before anything is committed or renamed, so an archive verify rejects
never restores.  An archive Aviary itself wrote (no checksums, no
`aviarytools` object) passes as it always has.

A consumer has, for each kind in layout.KINDS, a method `on_<kind>` or the
kind in its `ignores`; a kind it has neither for stops the walk with a
TypeError (tests/test_archive_walk.py holds every consumer to every kind).
The content of tables, checksums and vanished records is read by the walk
itself: a consumer takes a table's rows (`on_table(item, rows)`) or taps the
bytes as they pass (`item.content.tap`); the content of other members is
the consumer's to read, or not.  What is left unread is read (and hashed)
by the walk after the handler returns.

Nothing has to wait for a late metadata.json: Aviary's steers nothing (its
restore reads no field of it to import), and what a consumer makes of the
members before it is held back until the end of the walk anyway: a restore
stages rows and documents until its commit, an extraction writes under
temporary names.  The checks that need the metadata (its fields, its
totals) run at the end of the walk, before either commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import BinaryIO

import xxhash

from .. import declared, run_report, schema
from ..errors import ArchiveError, InputError
from ..findings import PROBLEM, Finding, info, problem
from ..model import Table
from ..rowinput import RowSource
from ..spill import SeenDigests, SpillList, compare_digests
from ..tar import Member, NameSet, member_name_problem
from . import admin_page, incremental, layout
from .inspect import archived_tables
from .reading import HashedContent, MetadataError, buffered, members, parse_checksum_member, read_metadata

METADATA_FIELDS = {
    "aviary_version": str,
    "export_timestamp": str,
    "database_type": str,
    "total_documents": int,
    "total_size_bytes": int,
    "exported_tables": (list, type(None)),
    "total_users": int,
}
# Aviary v1.4.0 to v1.5.3 wrote no user or API key totals: required only in an archive of ours.
AVIARY_MAY_LACK = frozenset(("total_users",))
# What an archive whose metadata.json is not its first member is taken to be, until it comes:
# Aviary's own (no `aviarytools` object), the only kind ever written that way.
AVIARYS_OWN = MappingProxyType({})


@dataclass
class Item:
    """A member handed to a consumer: the tar member, what it is, and its content
    (hashed as it is read; `data` holds the bytes of metadata.json, read whole)."""

    member: Member
    entry: layout.Entry
    content: HashedContent | None = None
    data: bytes | None = None

    @property
    def name(self) -> str:
        return self.member.name


class Consumer:
    """What one command does with each kind of member (see the module's docstring)."""

    ignores: frozenset[str] = frozenset()

    def begin(self, metadata: dict) -> None:
        """Called once, before any member is handed over, with what the archive is:
        metadata.json when it is the first member, else AVIARYS_OWN (an archive of Aviary
        v1.4.0 to v1.5.3, whose metadata.json comes last and is handed over then)."""

    def done(self, item: Item) -> None:
        """Called once the walk has read all of a member's content."""

    def take_findings(self) -> list[Finding]:
        """Findings of the consumer's own since the last call, for the walk to yield
        with its own (doctor --against compares as it goes)."""
        return []


class BrokenTable(ArchiveError):
    """A table member stopped parsing: raised into the consumer reading its rows."""


class Rows:
    """The rows of a table member, checked as they are handed over: (position, row),
    objects only; `where(position)` says where a row is.  Nothing is read before the
    rows are asked for (or where() is), so that a consumer may tap the content first."""

    def __init__(self, walk: "Walk", item: Item):
        self.walk, self.item = walk, item
        self.table = item.entry.table
        self._source: RowSource | None = None
        self.count = 0
        self.done = False
        model = walk.model(self.table)
        self.key = model.primary_key if model else ()
        self.owner = "updated_by" if self.table == "system_settings" else \
            (schema.user_column(self.table) if self.table != "users" else None)
        self._seen = SeenDigests()  # the key of each row so far
        self._rows = self._checked()

    def __iter__(self):
        return self._rows

    @property
    def source(self) -> RowSource:
        if self._source is None:
            self._source = RowSource(buffered(self.item.content), self.item.name)
        return self._source

    def where(self, position: int) -> str:
        return self.source.where(position)

    def _checked(self) -> Iterator[tuple[int, dict]]:
        walk, name = self.walk, self.item.name
        try:
            for position, row in self.source:
                self.count = position
                if not isinstance(row, dict):
                    walk.report(problem("table", f"item {position} is not a JSON object", name))
                    continue
                self._tally(position, row)
                yield position, row
        except InputError as e:
            self._end_keys()
            walk.report(problem("table", str(e).removeprefix(f"{name}: "), name))
            self.done = True
            raise BrokenTable(str(e)) from None
        self._end_keys()
        self.done = True

    def _tally(self, position: int, row: dict) -> None:
        tally = self.walk.tally
        if self.key:
            values = [str(row.get(c)) for c in self.key]
            key = xxhash.xxh3_64_intdigest("\x00".join(values).encode())
            self._duplicates(self._seen.add(key, (position, values)))
        if self.table == "users" and isinstance(row.get("id"), str):
            tally.users.add(row["id"].lower())
        owner = row.get(self.owner) if self.owner else None
        if isinstance(owner, str):
            tally.referenced.setdefault(owner.lower(), self.item.name)

    def _end_keys(self) -> None:
        self._duplicates(self._seen.end())

    def _duplicates(self, repeated: list[tuple[int, list[str]]]) -> None:
        for position, values in repeated:
            shown = ", ".join(f"{c}={v}" for c, v in zip(self.key, values))
            self.walk.report(problem("duplicate-key", f"item {position}: duplicate key {shown}", self.item.name))

    def drain(self) -> None:
        """Read (and check) the rows the consumer left."""
        try:
            for _ in self._rows:
                pass
        except BrokenTable:
            pass


class ManifestEntries:
    """The entries of an incremental's manifest.ndjson, checked as they are handed over."""

    def __init__(self, walk: "Walk", item: Item):
        self.walk, self.item = walk, item
        self._entries = self._checked()

    def __iter__(self):
        return self._entries

    def _checked(self) -> Iterator:
        walk, tally = self.walk, self.walk.tally
        reader = buffered(self.item.content)
        previous = b""
        for number, line in enumerate(iter(lambda: reader.readline(1 << 16), b""), 1):
            try:
                entry = incremental.entry_of(json.loads(line), manifest=True)
                order = entry.key.encode("utf-8", "surrogateescape")
                if order <= previous:
                    raise ValueError("out of key order")
                previous = order
            except ValueError as e:
                walk.report(problem("manifest", f"line {number}: not a manifest record ({e})", self.item.name))
                continue
            tally.manifest_documents += 1
            tally.manifest_bytes += entry.size
            tally.referenced.setdefault(layout.document_of_key(entry.key)[0], self.item.name)
            if entry.carried:
                walk.carried[entry.key] = (entry.size, entry.xxh128)
            yield entry

    def drain(self) -> None:
        for _ in self._entries:
            pass


@dataclass
class Tally:
    """What the content holds, to hold metadata and references against at the end."""

    members: int = 0  # tar members read, of every kind
    table_rows: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    document_bytes: int = 0
    configs: int = 0
    config_bytes: int = 0
    manifest_documents: int = 0  # an incremental's documents as they are
    manifest_bytes: int = 0
    vanished: int = 0  # documents listed in metadata, deleted before pack read them
    vanished_bytes: int = 0
    users: set[str] = field(default_factory=set)
    referenced: dict[str, str] = field(default_factory=dict)  # user id -> first member naming it
    digests: SpillList = field(default_factory=SpillList)  # (member name, digest)
    listed: SpillList | None = None  # checksums.xxh128's (name, digest)


class Walk:
    """Iterating walks the archive, handing members to `consumer`, yielding findings."""

    def __init__(self, stream: BinaryIO, source: str, consumer: Consumer, progress=None):
        self.stream, self.source, self.consumer = stream, source, consumer
        self.progress = progress  # told of each document done, and of metadata.json's total
        self.metadata: dict | None = None
        self.metadata_late = False  # metadata.json is not the first member (Aviary v1.4.0 to v1.5.3)
        self._late_metadata_read = False
        self.single_user = False  # metadata.json says so (pack --single-user)
        self.incremental: dict | None = None  # pack -g: level, archive, parent, base
        self.partial = False  # an incremental of level 1 or more: a manifest, not every document
        self.carried: dict[str, tuple[int, str]] | None = None  # the manifest's carried: key -> (size, XXH128)
        self.declared: dict[str, Table] = {}
        self.tally = Tally()
        self._pending: list[Finding] = []
        self._names = NameSet()
        self._odd_folders: set[str] = set()  # user folders named by a non-canonical uuid, said once each

    def report(self, finding: Finding) -> None:
        self._pending.append(finding)

    def model(self, table: str) -> Table | None:
        """The table as the archive declares it, with Aviary's columns."""
        return declared.union(schema.BY_NAME.get(table), self.declared.get(table))

    def __iter__(self) -> Iterator[Finding]:
        """The findings, as they are known.  An archive that cannot be read on (not a tar,
        cut short, a corrupt header) raises ArchiveError, naming the place."""
        try:
            walk = members(self.stream, self.source)
            first = next(walk, None)
            if first is None:
                raise ArchiveError("empty archive")
            if first.name == layout.METADATA:
                yield from self._first(first)
            else:
                self.metadata_late = True
                self.consumer.begin(AVIARYS_OWN)
                yield from self._member(first)
            for member in walk:
                yield from self._member(member)
        except ArchiveError:
            yield from self._flushed()
            raise
        yield from self._flushed()
        if self.metadata_late and not self._late_metadata_read:
            yield problem("metadata", f"no {layout.METADATA} in the archive: not an Aviary backup")
        yield from self._checked_against_checksums()
        for key in sorted(self.carried or ()):
            yield problem("manifest", f"{key}: carried, says {layout.MANIFEST}, but not in the archive")
        if self.partial and self.carried is None:
            yield problem("manifest", f"an incremental without its {layout.MANIFEST}")
        if self.metadata is not None:
            yield from self._totals()
        yield from self._references()

    def _flushed(self) -> Iterator[Finding]:
        found, self._pending = self._pending, []
        yield from found
        yield from self.consumer.take_findings()

    # -- members -------------------------------------------------------------------

    def _first(self, member: Member) -> Iterator[Finding]:
        self.tally.members += 1
        self._names.add(member.name)
        content = HashedContent(member)
        try:
            metadata, data = read_metadata(content)
        except MetadataError as e:  # (an archive cut short inside it is the walk's own error)
            yield problem("metadata", str(e).removeprefix(f"{layout.METADATA}: "), member.name)
            return
        self.tally.digests.append((member.name, content.hasher.hexdigest()))
        yield from self._metadata_problems(metadata)
        self.metadata = metadata
        run_report.note_archive(metadata)
        if self.progress is not None and self.progress.total is None:  # read from a pipe: documents' bytes
            total = metadata.get("total_size_bytes")
            self.progress.expect(total if isinstance(total, int) else None, by_documents=True)
        self.consumer.begin(metadata)
        self._dispatch(Item(member, layout.Entry("metadata"), data=data), metadata)
        yield from self._flushed()

    def _metadata_problems(self, metadata: dict) -> Iterator[Finding]:
        for name, kind in METADATA_FIELDS.items():
            if name not in metadata:
                if name in AVIARY_MAY_LACK and not layout.ours(metadata):
                    continue
                yield problem("metadata", f"missing field {name}", layout.METADATA)
            elif not isinstance(metadata[name], kind) or isinstance(metadata[name], bool):
                yield problem("metadata", f"field {name} has the wrong type", layout.METADATA)
        self.single_user = layout.is_single_user(metadata)
        self.incremental = layout.ours(metadata).get("incremental")
        if self.incremental is not None and not _chain_link(self.incremental):
            yield problem("metadata", "aviarytools.incremental is not {level, archive, parent, base}", layout.METADATA)
            self.incremental = None
        self.partial = bool(self.incremental and self.incremental["level"])
        mark = layout.SINGLE_USER_MARK if self.single_user else layout.INCREMENTAL_MARK if self.partial else None
        users = metadata.get("users_exported")
        refused = (admin_page.refusal(layout.ours(metadata)) or (None,))[0]  # (older packs wrote a list)
        if mark is not None and users != mark:
            yield problem("metadata", f"users_exported must be {mark!r} in this archive", layout.METADATA)
        elif mark is None and users is not None and not (
                isinstance(users, list) and all(isinstance(u, str) for u in users)) and users != refused:
            yield problem("metadata", "field users_exported is not a list of ids", layout.METADATA)
        try:
            self.declared = archived_tables(metadata)
        except ArchiveError as e:
            yield problem("metadata", str(e).removeprefix(f"{layout.METADATA}: "), layout.METADATA)

    def _member(self, member: Member) -> Iterator[Finding]:
        self.tally.members += 1
        unsafe = member_name_problem(member)
        if unsafe:
            yield problem("unsafe-member", unsafe, member.name)
            return
        if not self._names.add(member.name):
            yield problem("duplicate-member", "appears more than once in the archive", member.name)
        entry = layout.classify(member.name, member.type)
        misplaced = self._misplaced(entry.kind)
        if misplaced:
            yield problem("layout", misplaced, member.name)
            return
        if member.type != "file":
            self._dispatch(Item(member, entry))
            return
        item = Item(member, entry, HashedContent(member))
        yield from getattr(self, f"_{entry.kind}", self._plain)(item)
        digest = item.content.finish()
        if entry.kind != "checksums":  # the list does not list itself
            self.tally.digests.append((member.name, digest))
        self.consumer.done(item)
        if self.progress is not None and entry.kind in ("document", "single_document"):
            self.progress.document(member.size)
        yield from self._flushed()

    def _misplaced(self, kind: str) -> str | None:
        """Why a member of this kind does not belong in this archive, if it does not."""
        if self.metadata_late and kind in ("single_document", "pairing", "manifest", "carried_document"):
            return (f"a member of aviarytools' own before {layout.METADATA}, which must then be the first member:"
                    f" re-pack the archive with {layout.METADATA} first (tar -c {layout.METADATA} ...)")
        if self.single_user and kind in ("table", "document", "config"):
            return "a multi-user member in a single-user archive"
        if not self.single_user and kind in ("single_document", "pairing"):
            return "a single-user member in a multi-user archive"
        if self.partial and kind in ("document", "config"):
            return "a full archive's member in an incremental (its documents are under incremental/)"
        if not self.partial and kind in ("manifest", "carried_document"):
            return "an incremental's member in an archive that is not one"
        return None

    def _plain(self, item: Item) -> Iterator[Finding]:
        if item.entry.kind == "unknown":
            yield info("unknown-member", "not part of Aviary's layout", item.name)
        self._dispatch(item)

    def _table(self, item: Item) -> Iterator[Finding]:
        rows = Rows(self, item)
        try:
            self._dispatch(item, rows)
        except BrokenTable:
            pass  # reported; the rest of the member is read as bytes
        rows.drain()
        self.tally.table_rows[item.entry.table] = rows.count
        return iter(())

    def _document(self, item: Item) -> Iterator[Finding]:
        self.tally.documents += 1
        self.tally.document_bytes += item.member.size
        self.tally.referenced.setdefault(item.entry.user_id, item.name)
        self._dispatch(item)
        if item.entry.folder is not None and item.entry.folder not in self._odd_folders:
            self._odd_folders.add(item.entry.folder)
            yield info("user-folder", f"not the canonical form of user id {item.entry.user_id}: restored as that"
                       " user's documents (Aviary restores them under this name, which no user sees)",
                       f"{layout.DOCUMENTS_PREFIX}{item.entry.folder}/")

    def _config(self, item: Item) -> Iterator[Finding]:
        if item.member.size > layout.MAX_CONFIG_BYTES:
            yield problem("config", f"{item.member.size} bytes is too large for an rmapi.conf", item.name)
            return
        if item.entry.kind == "config":
            self.tally.configs += 1
            self.tally.config_bytes += item.member.size
        self._dispatch(item)

    _pairing = _config

    def _manifest(self, item: Item) -> Iterator[Finding]:
        entries = ManifestEntries(self, item)
        self.carried = {}
        self._dispatch(item, entries)
        entries.drain()
        return iter(())

    def _carried_document(self, item: Item) -> Iterator[Finding]:
        if self.carried is None:
            yield problem("manifest", f"before {layout.MANIFEST}, which must come first", item.name)
            return
        key = layout.storage_key(item.entry.user_id, item.entry.path)
        expected = self.carried.pop(key, None)
        self.tally.documents += 1
        self.tally.document_bytes += item.member.size
        self._dispatch(item)
        digest = item.content.finish()
        if expected is None:
            yield problem("manifest", f"not carried, says {layout.MANIFEST}", item.name)
        elif expected != (item.member.size, digest):
            yield problem("manifest", f"{item.member.size} bytes, XXH128 {digest}: {layout.MANIFEST} says"
                          f" {expected[0]} bytes, {expected[1]}", item.name)

    def _single_document(self, item: Item) -> Iterator[Finding]:
        self.tally.documents += 1
        self.tally.document_bytes += item.member.size
        self._dispatch(item)
        return iter(())

    def _checksums(self, item: Item) -> Iterator[Finding]:
        self._dispatch(item)  # a consumer may tap what the walk reads
        self.tally.listed = parse_checksum_member(item.content, item.name)
        return iter(())

    def _metadata(self, item: Item) -> Iterator[Finding]:
        if not self.metadata_late:
            yield problem("metadata", f"must be the first member, not member {len(self._names)}", item.name)
            return
        if self._late_metadata_read:
            return  # a second one: a duplicate member, reported
        self._late_metadata_read = True
        try:
            metadata, item.data = read_metadata(item.content)
        except MetadataError as e:  # (an archive cut short inside it is the walk's own error)
            yield problem("metadata", str(e).removeprefix(f"{layout.METADATA}: "), item.name)
            return
        if layout.ours(metadata):  # the members before it were taken for Aviary's: none may be
            yield problem("metadata", "an aviarytools archive, whose metadata.json must be the first member:"
                          " re-pack it with metadata.json first (tar -c metadata.json ...)", item.name)
            return
        yield info("metadata", "after the other members, as Aviary v1.4.0 to v1.5.3 wrote it: an old Aviary"
                   " backup", item.name)
        yield from self._metadata_problems(metadata)
        self.metadata = metadata
        self._dispatch(item, metadata)

    def _checked_against_checksums(self) -> Iterator[Finding]:
        """Every member against the list (the archive's end)."""
        if self.tally.listed is None:
            yield info("checksums", f"no {layout.CHECKSUMS} member: content not checked")
            return
        for name, actual, listed in compare_digests(self.tally.listed, self.tally.digests):
            if listed is None:
                yield problem("checksums", f"not listed in {layout.CHECKSUMS}", name)
            elif actual is None:
                yield problem("checksums", f"listed in {layout.CHECKSUMS} but missing from the archive", name)
            else:
                yield problem("checksums", f"XXH128 mismatch (archive corrupt): archive has {actual},"
                              f" {layout.CHECKSUMS} says {listed}", name)

    def _vanished(self, item: Item) -> Iterator[Finding]:
        self._dispatch(item)
        reader = buffered(item.content)
        before = self.tally.vanished
        for number, line in enumerate(iter(lambda: reader.readline(1 << 16), b""), 1):
            try:
                record = json.loads(line)
                size = record["size"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                yield problem("vanished", f"line {number}: not a {{\"member\", \"size\"}} record", item.name)
                continue
            self.tally.vanished += 1
            self.tally.vanished_bytes += size
        if self.tally.vanished > before:
            yield info("vanished", f"{self.tally.vanished - before} document(s) were deleted while pack ran:"
                       " not in the archive", item.name)

    def _dispatch(self, item: Item, *args) -> None:
        kind = item.entry.kind
        handler = getattr(self.consumer, f"on_{kind}", None)
        if handler is not None:
            handler(item, *args)
        elif kind not in self.consumer.ignores:
            raise TypeError(f"{type(self.consumer).__name__} does not say what to do with a {kind} member")

    # -- the end of the archive ------------------------------------------------------

    def _totals(self) -> Iterator[Finding]:
        metadata, tally = self.metadata, self.tally
        documents, size = tally.documents + tally.vanished, tally.document_bytes + tally.vanished_bytes
        if self.partial:  # the state the manifest records, not the documents carried
            documents, size = tally.manifest_documents, tally.manifest_bytes
        expected = {
            "total_documents": (documents,), "total_size_bytes": (size,),
            "total_users": (tally.table_rows.get("users", 0),),
        }
        if not isinstance(metadata.get("aviarytools"), dict):  # Aviary's own archive: old versions may count rmapi.conf files too
            expected["total_documents"] += (documents + tally.configs,)
            expected["total_size_bytes"] += (size + tally.config_bytes,)
        if "api_keys" in tally.table_rows or metadata.get("total_api_keys"):
            expected["total_api_keys"] = (tally.table_rows.get("api_keys", 0),)
        for name, actual in expected.items():
            claimed = metadata.get(name)
            if isinstance(claimed, int) and not isinstance(claimed, bool) and claimed not in actual:
                yield problem("totals", f"metadata says {name} {claimed}, the archive holds {actual[0]}",
                              layout.METADATA)
        table_rows = layout.ours(metadata).get("table_rows", {})
        for table, claimed in table_rows.items() if isinstance(table_rows, dict) else ():
            actual = tally.table_rows.get(table)
            if actual != claimed:
                yield problem("totals", f"metadata says {claimed} rows, the archive holds {actual}",
                              layout.table_member(table))

    def _references(self) -> Iterator[Finding]:
        tally = self.tally
        if "users" not in tally.table_rows and not tally.users:
            return  # a --no-db or --tables archive: nothing to hold references against
        for user_id, member in sorted(tally.referenced.items()):
            if user_id not in tally.users:
                yield problem("references", f"user {user_id} is not in database/users.json", member)


def raise_problems(findings: Iterator[Finding]) -> None:
    """Walk to the end; the first problem found is raised as an ArchiveError (one line,
    naming the member): for the commands that must not act on a damaged archive."""
    for finding in findings:
        if finding.severity == PROBLEM:
            raise ArchiveError(f"{finding.subject}: {finding.detail}" if finding.subject else finding.detail)


def _chain_link(value) -> bool:
    """Whether metadata's aviarytools.incremental says what it must."""
    return (isinstance(value, dict) and type(value.get("level")) is int and value["level"] >= 0
            and isinstance(value.get("archive"), str) and isinstance(value.get("base"), str)
            and (value.get("parent") is None or isinstance(value.get("parent"), str)))
