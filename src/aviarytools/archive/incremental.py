"""Incremental archives: the state of the documents at a pack, and what changed since.

As GNU tar's --listed-incremental, `pack -g FILE` keeps in FILE (the snapshot
file) the state of the documents when it last packed: one NDJSON line per
document, in key order, after a first line saying whose state it is:

    {"aviarytools_snapshot": 1, "archive": ID, "base": ID, "level": 0,
     "storage": "/data", "users": null, "created": "2026-12-01T03:15:00Z"}
    {"key": "users/<uuid>/pdfs/a.pdf", "size": 1234, "mtime_ns": 1764..., "etag": null,
     "xxh128": "<32 hex digits>"}

Without FILE (or with --level 0) pack writes an ordinary full archive and
creates FILE.  With FILE, it writes an incremental: every table whole, a
manifest of every document as it is now (the same lines, with "carried"),
and the bytes of the documents that are new or changed since FILE's state:
a different size, or a different mtime (a folder) or ETag (S3), or with
--checksum a different XXH128.  FILE is replaced only once the archive is
complete, and (the archive written to a pipe, whose far end may have failed
after reading it) only once the archive is confirmed to have arrived: see
confirm().

An incremental keeps its documents under incremental/documents/, not
filesystem/: Aviary's own restore wipes every user's folder whenever an
archive has a filesystem/ folder, and this archive does not carry every
document.  Its users_exported is not a list, so Aviary's admin page refuses
it before touching anything.  A level 0 stays an ordinary archive.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring as _string  # json.dumps(s, ensure_ascii=False) of a str

from ..errors import AviaryError, MissingObject
from ..spill import SpillList
from ..storage import Listing, ObjectInfo
from . import layout

FORMAT = 1
MANIFEST = layout.MANIFEST
_HEX = re.compile(r"[0-9a-f]{32}")
_HEX_BYTES = re.compile(rb"[0-9a-f]{32}")
_LINE_END = b'"}\n'  # after a snapshot line's XXH128
_DIGEST_END = 32 + len(_LINE_END)  # from the XXH128's first digit to the line's end
_CARRIED = {True: b', "carried": true}\n', False: b', "carried": false}\n'}


@dataclass(frozen=True)
class State:
    """Whose state a snapshot file holds: the archive it was written with, the chain's
    level 0, its level, and the storage and users it covers."""

    archive: str
    base: str
    level: int
    storage: str
    users: tuple[str, ...] | None

    def header(self, created: str) -> dict:
        return {"aviarytools_snapshot": FORMAT, "archive": self.archive, "base": self.base, "level": self.level,
                "storage": self.storage, "users": list(self.users) if self.users is not None else None,
                "created": created}


@dataclass(frozen=True)
class Entry:
    """One document as the snapshot (or a manifest) records it."""

    key: str
    size: int
    xxh128: str
    mtime_ns: int | None = None
    etag: str | None = None
    carried: bool = True  # in a manifest: whether the archive holds its bytes

    def line(self, manifest: bool = False) -> bytes:
        """The entry's NDJSON line: in a snapshot, or (`manifest`) with "carried"."""
        line = snapshot_line(self.key, self.size, self.xxh128, self.mtime_ns, self.etag)
        return manifest_line(line, self.carried) if manifest else line


def snapshot_line(key: str, size: int, xxh128: str, mtime_ns: int | None, etag: str | None) -> bytes:
    """One document's line of a snapshot file: json.dumps of a dict, spelled out, since a
    snapshot has a line per document and this is much of a level 1's own time."""
    return _line_head(key, size, mtime_ns, etag) + xxh128.encode() + _LINE_END


def _line_head(key: str, size: int, mtime_ns: int | None, etag: str | None) -> bytes:
    """A snapshot line up to its XXH128's digits."""
    return (f'{{"key": {_string(key)}, "size": {size},'
            f' "mtime_ns": {"null" if mtime_ns is None else mtime_ns},'
            f' "etag": {"null" if etag is None else _string(etag)},'
            ' "xxh128": "').encode("utf-8", "surrogateescape")


def recorded_digest(line: bytes) -> str:
    """The XXH128 of a line snapshot_line() wrote (or that records_as_listed() accepted)."""
    return line[-_DIGEST_END:-len(_LINE_END)].decode()


def records_as_listed(line: bytes, info: ObjectInfo) -> bool:
    """Whether `line` is, byte for byte, the snapshot line of `info` as listed now (same key,
    size, mtime_ns and etag) with a well-formed XXH128: then it needs no parsing, and
    change detection says the object is unchanged.  Most lines of a level 1 are."""
    if info.mtime_ns is None and info.etag is None:  # nothing to detect a change by (see unchanged())
        return False
    head = _line_head(info.key, info.size, info.mtime_ns, info.etag)
    return (len(line) == len(head) + _DIGEST_END and line.startswith(head) and line.endswith(_LINE_END)
            and _HEX_BYTES.fullmatch(line, len(head), len(head) + 32) is not None)


def manifest_line(snapshot_line: bytes, carried: bool) -> bytes:
    """A manifest's line: the snapshot's, with "carried" last (its "}\\n" replaced)."""
    return snapshot_line[:-2] + _CARRIED[carried]


def entry_of(record: object, manifest: bool = False) -> Entry:
    """An Entry from a parsed line; ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    key, size, digest = record.get("key"), record.get("size"), record.get("xxh128")
    if not isinstance(key, str) or layout.document_of_key(key) is None:
        raise ValueError("no key of a document (users/<uuid>/pdfs/...)")
    if type(size) is not int or size < 0:
        raise ValueError("no size")
    if not isinstance(digest, str) or not _HEX.fullmatch(digest):
        raise ValueError("no XXH128")
    mtime_ns, etag = record.get("mtime_ns"), record.get("etag")
    if mtime_ns is not None and type(mtime_ns) is not int or etag is not None and not isinstance(etag, str):
        raise ValueError("a bad mtime_ns or etag")
    carried = record.get("carried", True)
    if manifest and not isinstance(carried, bool):
        raise ValueError("no carried")
    return Entry(key, size, digest, mtime_ns, etag, carried)


def read_snapshot(path: str) -> tuple[State, SnapshotLines] | None:
    """The state FILE records (None if there is no FILE, or it is empty), and its document
    lines, read as they are asked for.  A damaged FILE is an error naming its line."""
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AviaryError(f"{path}: {e.strerror or e}") from None
    first = file.readline()
    if not first:  # an empty FILE, as GNU tar takes one: no previous state, a level 0
        file.close()
        return None
    try:
        header = json.loads(first)
        state = State(str(header["archive"]), str(header["base"]), int(header["level"]), str(header["storage"]),
                      tuple(header["users"]) if header["users"] is not None else None)
        if header.get("aviarytools_snapshot") != FORMAT:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        file.close()
        raise AviaryError(f"{path} line 1: not an aviarytools snapshot file (pack -g writes one)") from None
    return state, SnapshotLines(file, path)


class SnapshotLines:
    """A snapshot file's document lines, one at a time (`line`, None after the last), each
    parsed only when asked (`parse`): pack first holds a line against what it would write
    now for the object listed (records_as_listed), and most are that.  Key order is
    checked as lines are parsed: a line that records a listed object is in order, since
    the listing is."""

    def __init__(self, file, path: str):
        self.path = path
        self._file = file
        self._numbered = enumerate(file, 2)
        self._key: str | None = None  # of the line before
        self.line: bytes | None = None
        self.entry: Entry | None = None  # the line's, once parsed
        self.number = 1
        self.advance(None)

    def advance(self, key: str | None) -> None:
        """On to the next line; `key` is the one the current line holds."""
        self._key, self.entry = key, None
        self.number, self.line = next(self._numbered, (self.number + 1, None))
        if self.line is None:
            self._file.close()

    def parse(self) -> Entry:
        if self.entry is None:
            try:
                self.entry = entry_of(json.loads(self.line))
            except ValueError as e:
                raise AviaryError(f"{self.path} line {self.number}: not a snapshot record ({e})") from None
            if self._key is not None and _order(self.entry.key) <= _order(self._key):
                raise AviaryError(f"{self.path} line {self.number}: {self.entry.key}: out of key order (damaged?)")
        return self.entry

    def close(self) -> None:
        self._file.close()

    def rest(self) -> None:
        """Parse every line left (a damaged snapshot is refused wherever it is damaged)."""
        while self.line is not None:
            self.advance(self.parse().key)


def _order(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def unchanged(info: ObjectInfo, before: Entry) -> bool:
    """Whether change detection says the object is as the snapshot recorded it: the same
    size, and the same nanosecond mtime (a folder) or ETag (S3)."""
    if info.size != before.size:
        return False
    if info.mtime_ns is not None:
        return info.mtime_ns == before.mtime_ns
    return info.etag is not None and info.etag == before.etag


def merged(listing: Iterable[ObjectInfo], before: SnapshotLines
           ) -> Iterator[tuple[ObjectInfo, Entry | None, bytes | None]]:
    """(object, the snapshot's entry for its key or None, the snapshot's line instead where
    it records the object just as listed) for every listed object: both are in key order,
    so this is a merge, holding one line at a time."""
    for info in listing:
        entry = None
        while before.line is not None:
            if before.entry is None and records_as_listed(before.line, info):
                yield info, None, before.line
                before.advance(info.key)
                break
            recorded = before.parse()
            if _order(recorded.key) < _order(info.key):  # deleted since
                before.advance(recorded.key)
                continue
            if recorded.key == info.key:
                entry = recorded
                before.advance(recorded.key)
            yield info, entry, None
            break
        else:
            yield info, None, None
    before.rest()


def pending_path(path: str) -> str:
    """Where a pack whose archive went to a pipe leaves the new state, until confirm()."""
    return path + ".pending"


def unconfirmed(path: str) -> State | None:
    """The state FILE.pending holds (a pack whose archive was never confirmed), if any."""
    found = read_snapshot(pending_path(path))
    if found is None:
        return None
    state, lines = found
    lines.close()
    return state


def confirm(path: str, metadata: dict) -> str:
    """FILE.pending becomes FILE, now that an archive found whole (verify -g FILE) is the one
    it describes: `metadata` is that archive's metadata.json.  What happened, or an
    AviaryError saying why FILE stays as it was."""
    chain = (metadata.get("aviarytools") or {}).get("incremental") if isinstance(metadata, dict) else None
    arrived = chain.get("archive") if isinstance(chain, dict) else None
    if arrived is None:
        raise AviaryError(f"{path}: the archive is not of a pack -g (no aviarytools.incremental): FILE left as it was")
    waiting = unconfirmed(path)
    if waiting is None:
        current = read_snapshot(path)
        if current is not None:
            current[1].close()
            if current[0].archive == arrived:
                return f"{path}: already the state of archive {arrived} (level {current[0].level})"
        raise AviaryError(f"{path}: no pack awaits confirmation ({pending_path(path)} is missing), and the "
                          f"archive {arrived} is not the one FILE records: FILE left as it was")
    if waiting.archive != arrived:
        raise AviaryError(f"{pending_path(path)}: awaits archive {waiting.archive} (level {waiting.level}), not "
                          f"{arrived}: verify the archive that pack wrote; FILE left as it was")
    try:
        os.replace(pending_path(path), path)
    except OSError as e:
        raise AviaryError(f"{path}: {e.strerror or e}") from None
    return f"{path}: now the state of archive {arrived} (level {waiting.level}), confirmed"


class SnapshotWriter:
    """The new FILE, written as FILE.partial-<random> and put in FILE's place by commit():
    a pack that fails leaves FILE as it was."""

    def __init__(self, path: str, state: State, created: str):
        self.path = path
        self.partial = f"{path}.partial-{os.urandom(4).hex()}"
        try:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise AviaryError(f"{path}: {e.strerror or e}") from None
        self.file = open(fd, "wb")
        self.file.write(json.dumps(state.header(created)).encode() + b"\n")

    def add(self, entry: Entry) -> None:
        self.file.write(entry.line())

    def add_lines(self, lines: Iterable[bytes]) -> None:
        self.file.writelines(lines)

    def commit(self, pending: bool = False) -> str:
        """Put the new state in FILE's place, or (`pending`: the archive went where pack
        cannot see it arrive) at FILE.pending, until confirm(); the name it now has."""
        target = pending_path(self.path) if pending else self.path
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.partial, target)
            if not pending:  # a pending state from an earlier pack is superseded
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pending_path(self.path))
        except OSError as e:
            self.abort()
            raise AviaryError(f"{self.path}: {e.strerror or e}") from None
        return target

    def abort(self) -> None:
        self.file.close()
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


@dataclass
class Plan:
    """What one pack -g writes: the new state, and for an incremental its manifest and the
    documents it carries."""

    state: State
    parent: str | None
    manifest: SpillList | None = None  # (snapshot line, carried, xxh128) of every document, level >= 1
    carried: object = None  # pack's Listing of the objects whose bytes go in, level >= 1
    documents: int = 0
    document_bytes: int = 0
    manifest_size: int = 0
    vanished: list = None

    @property
    def level(self) -> int:
        return self.state.level

    def metadata(self) -> dict:
        return {"level": self.level, "archive": self.state.archive, "parent": self.parent,
                "base": self.state.base, "carried": len(self.carried) if self.carried is not None else None,
                "manifest": MANIFEST if self.level else None}

    def manifest_lines(self, snapshot: SnapshotWriter, piece: int = 1 << 18) -> Iterator[bytes]:
        """The manifest's lines, joined into pieces of about `piece` bytes (a write each); the
        same lines as the new snapshot's go to `snapshot` on the way (one pass for both)."""
        pieces, lines = bytearray(), bytearray()
        for line, carried, _ in self.manifest or ():
            pieces += manifest_line(line, carried)
            lines += line
            if len(pieces) >= piece:
                snapshot.add_lines((bytes(lines),))
                yield bytes(pieces)
                pieces.clear()
                lines.clear()
        snapshot.add_lines((bytes(lines),))
        yield bytes(pieces)

    def carried_digests(self) -> Iterator[str]:
        """The XXH128 of each carried document, in the order of `carried`."""
        for _, carried, digest in self.manifest or ():
            if carried:
                yield digest


def plan(path: str, level_0: bool, checksum: bool, storage, files, users: tuple[str, ...] | None,
         new_id: str) -> Plan:
    """Read FILE's state (unless level_0) and decide, document by document, what goes in
    (`files`: pack's listing, in key order)."""
    previous = None if level_0 else read_snapshot(path)
    if previous is None:
        return Plan(State(new_id, new_id, 0, storage.url if storage else "", users), None, vanished=[])
    state, before = previous
    here = storage.url if storage else ""
    if state.storage != here:
        raise AviaryError(f"{path}: the snapshot of {state.storage}, not of {here}: give another FILE,"
                          " or --level 0 for a new chain")
    if state.users != users:
        shown = "every user" if state.users is None else ", ".join(state.users)
        raise AviaryError(f"{path}: the snapshot of a pack of {shown}: one snapshot file per selection"
                          " (--user); give another FILE, or --level 0")
    result = Plan(State(new_id, state.base, state.level + 1, here, users), state.archive,
                  SpillList(), Listing(), vanished=[])
    # Per document: (its line, XXH128, size) if unchanged, else (its fields, the XXH128 it had
    # at the same size or None) and its content is hashed.
    decided = SpillList()
    to_hash = Listing()
    for info, entry, line in merged(files, before):
        if not checksum and line is not None:
            decided.append((line, recorded_digest(line), info.size))
        elif not checksum and entry is not None and unchanged(info, entry):
            decided.append((snapshot_line(info.key, info.size, entry.xxh128, info.mtime_ns, info.etag),
                            entry.xxh128, info.size))
        else:
            recorded = (recorded_digest(line) if line is not None
                        else entry.xxh128 if entry is not None and entry.size == info.size else None)
            decided.append((tuple(info), recorded))
            to_hash.add(info)
    hashed = _digests(storage, to_hash, result.vanished)
    for item in decided:
        if len(item) == 3:
            line, digest, size = item
            carried = False
        else:
            fields, recorded = item
            digest = next(hashed)
            if digest is None:
                continue  # deleted since the listing: not in the state
            key, size, _, etag, mtime_ns = fields
            line = snapshot_line(key, size, digest, mtime_ns, etag)
            carried = digest != recorded  # new, or its content changed
            if carried:
                result.carried.add(ObjectInfo(*fields))
        result.manifest.append((line, carried, digest))
        result.manifest_size += len(line) - 2 + len(_CARRIED[carried])  # its manifest_line's
        result.documents += 1
        result.document_bytes += size
    return result


def _digests(storage, objects, vanished: list) -> Iterator[str | None]:
    """The XXH128 of each object, in order (None for one deleted meanwhile, noted in `vanished`)."""
    for info, chunks, hasher in storage.read_ahead(objects) if len(objects) else ():
        try:
            for _ in chunks:
                pass
        except MissingObject:
            vanished.append(info.key)
            yield None
            continue
        yield hasher.hexdigest()
