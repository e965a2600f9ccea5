"""pack: a whole installation (tables + documents) as one tar stream.

The tar header of each member needs its size before its content, and
metadata.json must come first with true totals.  So everything is measured
before anything is written: each table is read twice inside one snapshot
(once to count rows and bytes, once to stream them; the snapshot guarantees
the same bytes), and the document listing is taken once and kept (in a
temporary file past 20,000 documents; never the files themselves).
"""

import itertools
import json
import time
import uuid
from contextlib import closing, nullcontext
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Iterable, Iterator

from .. import __version__, declared, run_report, schema
from ..db import Database
from ..errors import AviaryError, MissingObject, UnreadableObject
from ..query import Query, quote_ident
from ..storage import Listing, ObjectInfo, Storage
from ..tar import TarWriter
from ..timestamps import NS_PER_SECOND, to_rfc3339
from . import admin_page, incremental, layout, root


@dataclass(frozen=True)
class Incremental:
    """pack -g FILE: an incremental against the state FILE records (incremental.py)."""

    snapshot: str
    level_0: bool = False  # --level 0: a full archive, and a new chain
    checksum: bool = False  # compare contents, not size and mtime (or ETag)


@dataclass(frozen=True)
class PackOptions:
    user_ids: tuple[str, ...] | None = None
    tables: tuple[str, ...] | None = None  # None: every data table
    exclude_tables: tuple[str, ...] = ()
    include_files: bool = True
    redact: bool = False
    incremental: Incremental | None = None
    allow_empty_storage: bool = False  # no documents while the database has rows of them: pack all the same


@dataclass
class PackSummary:
    table_rows: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    document_bytes: int = 0
    bytes_written: int = 0
    vanished: list[tuple[str, int]] = field(default_factory=list)  # (member, listed size)
    unreadable: list[tuple[str, int, str]] = field(default_factory=list)  # (member, listed size, why)
    passed_over: list = field(default_factory=list)  # storage.Irregular: documents that are links, devices
    userless: dict[str, int] = field(default_factory=dict)  # user id -> documents left out
    odd_folders: dict[str, int] = field(default_factory=dict)  # users/<x>/, x no user id -> files left out
    orphans: list["Orphans"] = field(default_factory=list)  # rows naming no user
    pairing: bool = False  # a single-user archive holds the device pairing
    download_copies: int = 0  # a single-user pack: download links' copies left out (downloads/<token>/)
    snapshot: incremental.SnapshotWriter | None = None  # pack -g: the new FILE, to commit once out is whole
    level: int | None = None
    parent: str | None = None  # pack -g: the archive this one follows
    vanished_keys: list[str] = field(default_factory=list)  # pack -g: deleted before they could be hashed


def chosen_tables(db: Database, options: PackOptions) -> list[str]:
    """The data tables to pack: Aviary's (never its job tables), as asked."""
    present = set(db.table_names())
    names = [t.name for t in schema.DATA_TABLES if t.name in present]
    if options.tables is not None:
        unknown = set(options.tables) - set(names)
        if unknown:
            raise AviaryError(f"no such data table to pack: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in options.tables]
    names = [n for n in names if n not in (options.exclude_tables or ())]
    if options.user_ids is not None:
        names = [n for n in names if schema.user_column(n)]
    return sorted(names)


def table_query(db: Database, name: str, options: PackOptions) -> Query:
    """The rows of a table to pack: of the chosen users, redacted as asked, and held against
    the snapshot's users (schema.user_references) so that the archive restores."""
    redact = frozenset(schema.SECRETS.get(name, ())) if options.redact else frozenset()
    return Query(user_ids=options.user_ids, redact=redact, parents=held_references(db, db.table(name)))


def held_references(db: Database, table) -> tuple:
    """The references of `table` that a pack holds against the snapshot's users."""
    return schema.user_references(table) if "users" in db.table_names() else ()


ORPHANS_SHOWN = 10  # rows named in pack's warning about a table's orphan rows


@dataclass(frozen=True)
class Orphans:
    """A table's rows whose reference names no user: left out (a cascading reference) or
    packed with the reference null."""

    table: str
    column: str
    left_out: bool
    shown: list[str]  # the first rows, by primary key
    total: int


def find_orphans(db: Database, name: str, query: Query) -> list[Orphans]:
    table = db.table(name)
    found = []
    for fk in query.parents:
        rows, total = db.orphans(table, fk, ORPHANS_SHOWN, query.user_ids)
        if total:
            shown = [", ".join(f"{k}={v}" for k, v in zip(table.primary_key, row)) or f"{fk.columns[0]}={row[-1]}"
                     for row in rows]
            found.append(Orphans(name, fk.columns[0], fk.on_delete_cascade, shown, total))
    return found


def array_chunks(lines: Iterable[bytes], piece: int = 1 << 18) -> Iterator[bytes]:
    """A JSON array with one row per line: `[`, rows joined by `,`, `]`."""
    buffer = bytearray(b"[")
    first = True
    for line in lines:
        buffer += b"\n" if first else b",\n"
        buffer += line
        first = False
        if len(buffer) >= piece:
            yield bytes(buffer)
            buffer.clear()
    buffer += b"]\n" if first else b"\n]\n"
    yield bytes(buffer)


def measure_table(db: Database, name: str, query: Query) -> tuple[int, int]:
    """(rows, bytes) of a table's array member, from a first pass over it."""
    rows = size = 0
    for line in db.rows(db.table(name), query):
        rows += 1
        size += len(line)
    return rows, (3 if rows == 0 else size + 2 * (rows - 1) + 5)


def list_documents(storage: Storage, user_ids: tuple[str, ...] | None,
                   known: set[str] | None = None) -> tuple[Listing, dict[str, int], dict[str, int]]:
    """Every document object (users/<uuid>/pdfs/...) of the chosen users, and of those the
    users table of the snapshot has (`known`, unless None); per other user how many were
    left out; and per folder users/<x>/ whose x is not a user id as Aviary writes one (a
    lower-case uuid), how many files under its pdfs/ were left out.  A user created after
    the snapshot (or deleted long ago) would make a folder no row of users.json owns: not
    restorable, and a broken reference for verify.  A folder such as users/<UPPER-CASE
    uuid>/ (Aviary's restore makes them from such archive folders) no user sees."""
    prefixes = ([layout.storage_key(u, "") for u in sorted(user_ids)] if user_ids is not None
                else [layout.STORAGE_USERS])
    found, userless, odd = Listing(), {}, {}
    for prefix in prefixes:
        for info in storage.list(prefix):
            owner = layout.document_of_key(info.key)
            if owner is None:
                parts = info.key.split("/", 3)
                if len(parts) == 4 and parts[2] == "pdfs" and parts[3]:
                    odd[parts[1]] = odd.get(parts[1], 0) + 1
            elif known is None or owner[0] in known:
                found.add(info)
            else:
                userless[owner[0]] = userless.get(owner[0], 0) + 1
    return found, userless, odd


def only_broken_references(name: str, query: Query, orphans: list[Orphans]) -> Query:
    """The query of table `name` holding only the references some row breaks: the others cost
    a lookup per row for nothing (a tenth of a pack's time, 100,000 documents rows on SQLite)."""
    broken = {found.column for found in orphans if found.table == name}
    return replace(query, parents=tuple(fk for fk in query.parents if fk.columns[0] in broken))


def document_rows(db: Database, options: PackOptions, query: Query | None) -> tuple[int, int]:
    """(documents rows, users they belong to) of the chosen users, in the snapshot: what
    the storage must hold documents of.  `query`: the documents' query of the pack, if it has one."""
    if "documents" not in db.table_names() or not db.table("documents").has_column("user_id"):
        return 0, 0
    table = db.table("documents")
    if query is None:
        query = Query(user_ids=options.user_ids, parents=held_references(db, table))
    counts = db.execute(f"SELECT count(*), count(DISTINCT {quote_ident('user_id')}){db.from_where_sql(table, query)}")
    return counts[0][0], counts[0][1]


def snapshot_users(db: Database) -> list[str] | None:
    """The id of every user in the snapshot, in key order; None without a users table."""
    if "users" not in db.table_names():
        return None
    # bytes(): PostgreSQL's lines are memoryviews; closing(): a failure ends the COPY.
    with closing(db.rows(db.table("users"), Query(columns=("id",)))) as lines:
        return [json.loads(bytes(line))["id"] for line in lines]


def exported_users(options: PackOptions, users: list[str] | None, files: Listing) -> list[str] | None:
    """metadata.json's users_exported, as Aviary writes it: the users whose files the
    archive holds (all of them for a full pack), None only when files are left out."""
    if not options.include_files:
        return None
    if options.user_ids is not None:
        return sorted(options.user_ids)
    if users is not None:
        return users
    return sorted({info.key.split("/", 2)[1] for info in files})  # no database: the folders' users


def build_metadata(db: Database | None, options: PackOptions, counts: dict[str, int],
                   files: Listing, now_ns: int, users: list[str] | None = None,
                   plan: incremental.Plan | None = None) -> dict:
    partial = plan is not None and plan.level > 0  # an incremental: not every document's bytes
    ours = {
        "version": __version__,
        "table_rows": counts,
        "redacted": options.redact,
        "users_only": options.user_ids is not None,
        "database": db is not None,
        "files": options.include_files,
        # Each table as the source declares it: a restore creates what it lacks from it.
        "schema": {name: declared.table_to_json(db.table(name), db.dialect) for name in counts},
    }
    if plan is not None:
        ours["incremental"] = plan.metadata()
    if options.user_ids is not None:
        ours["users"] = sorted(options.user_ids)  # what a restore of it may replace
    users_exported = exported_users(options, users, files)
    refused = admin_page.refusal(ours)
    if refused is not None:  # not a list: Aviary's admin page refuses the archive before touching anything
        users_exported = refused[0]
    return {
        "aviary_version": f"aviarytools-{__version__}",
        "git_commit": "",
        "export_timestamp": to_rfc3339(now_ns - now_ns % NS_PER_SECOND),
        "database_type": db.dialect if db is not None else "none",
        "users_exported": users_exported,
        "total_documents": plan.documents if partial else len(files),
        "total_size_bytes": plan.document_bytes if partial else files.bytes,
        "exported_tables": sorted(counts),
        "total_users": counts.get("users", 0),
        "total_api_keys": counts.get("api_keys", 0),
        "aviarytools": ours,
    }


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class _Dirs:
    """Writes each directory entry once, before the first member inside it."""

    def __init__(self, writer: TarWriter, mtime: float):
        self.writer, self.mtime, self.done = writer, mtime, []

    def before(self, member: str) -> None:
        parents = _parents(member)
        if parents == self.done:  # in the same folder as the member before
            return
        for folder in parents:
            if folder not in self.done:
                self.writer.add_dir(folder, self.mtime)
                self.done.append(folder)
        keep = set(parents)
        self.done = [d for d in self.done if d in keep]


def pack(db: Database | None, storage: Storage | None, out: BinaryIO, options: PackOptions,
         now_ns: int | None = None, progress=None) -> PackSummary:
    """Write the archive of `db` (None: no database) and `storage` to `out`, the tables
    from one consistent snapshot."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    mtime = now_ns / NS_PER_SECOND
    summary = PackSummary()
    if progress is not None:
        progress.phase("listing")  # measuring the tables, listing the documents: nothing written yet
    with db.snapshot() if db is not None else nullcontext():
        if options.user_ids is not None:
            ids = db.user_ids(options.user_ids) if db is not None else layout.canonical_ids(options.user_ids)
            options = replace(options, user_ids=ids)
        names = chosen_tables(db, options) if db is not None else []
        queries = {n: table_query(db, n, options) for n in names}
        summary.orphans = [found for n in names for found in find_orphans(db, n, queries[n])]
        queries = {n: only_broken_references(n, query, summary.orphans) for n, query in queries.items()}
        measured = {n: measure_table(db, n, queries[n]) for n in names}
        users = snapshot_users(db) if names else None
        files = Listing()
        if options.include_files and storage:
            files, summary.userless, summary.odd_folders = list_documents(storage, options.user_ids,
                                                     set(users) if users is not None else None)
            summary.passed_over = [entry for entry in storage.passed_over()
                                   if layout.document_of_key(entry.key) is not None]
        if options.include_files and storage and not options.allow_empty_storage \
                and not len(files) + sum(summary.userless.values()):  # no document: is it Aviary's root?
            root.check_root(storage, *document_rows(db, options, queries.get("documents")) if db is not None else (0, 0))
        summary.table_rows = {n: rows for n, (rows, _) in measured.items()}
        plan = None
        if options.incremental is not None:
            inc = options.incremental
            plan = incremental.plan(inc.snapshot, inc.level_0, inc.checksum, storage, files, options.user_ids,
                                    str(uuid.uuid4()))
            summary.level, summary.parent = plan.level, plan.parent
            summary.vanished_keys = plan.vanished
        metadata = build_metadata(db, options, summary.table_rows, files, now_ns, users, plan)
        run_report.note_archive(metadata)
        written = plan.carried if plan is not None and plan.level else files
        if progress is not None:
            progress.expect(expected_size([size for _, size in measured.values()], written))
            progress.phase(None)
        snapshot = (incremental.SnapshotWriter(options.incremental.snapshot, plan.state,
                                               metadata["export_timestamp"]) if plan is not None else None)
        try:
            writer = TarWriter(out)
            writer.add_bytes(layout.METADATA, (json.dumps(metadata, indent=2) + "\n").encode(), mtime)
            if plan is not None and plan.level:
                writer.add_file(incremental.MANIFEST, plan.manifest_size, plan.manifest_lines(snapshot), mtime)
            dirs = _Dirs(writer, mtime)
            for name in names:
                member = layout.table_member(name)
                dirs.before(member)
                with closing(db.rows(db.table(name), queries[name])) as lines:
                    writer.add_file(member, measured[name][1], array_chunks(lines), mtime)
            if plan is not None and plan.level:
                _write_carried(writer, dirs, storage, plan, summary)
            else:
                _write_documents(writer, dirs, storage, files, lambda key: layout.document_member(
                    *layout.document_of_key(key)), summary, snapshot.add if snapshot is not None else None)
            _finish(writer, summary, mtime)
        except BaseException:
            if snapshot is not None:
                snapshot.abort()
            raise
        summary.snapshot = snapshot
    return summary


def _write_carried(writer: TarWriter, dirs: "_Dirs", storage: Storage, plan: incremental.Plan,
                   summary: PackSummary) -> None:
    """An incremental's documents, under incremental/documents/: exactly those its manifest
    (written already) says it carries, with the content whose XXH128 it records."""
    # The carried entries of the manifest and the carried listing are in the same (key) order.
    digests = plan.carried_digests()
    documents = storage.read_ahead(plan.carried) if len(plan.carried) else ()
    for (info, chunks, hasher), digest in zip(documents, digests):
        member = layout.carried_member(*layout.document_of_key(info.key))
        dirs.before(member)
        content = _still_there(_changed_check(storage, info, chunks))
        if content is None:
            raise AviaryError(f"{storage.url}: {info.key}: deleted while packing an incremental (its manifest"
                              " lists it); run pack again")
        if writer.add_file(member, info.size, content, info.mtime, 0o644, hasher=hasher) != digest:
            raise AviaryError(f"{storage.url}: {info.key}: changed while packing (not the content whose XXH128"
                              " the manifest records); run pack again")
        summary.documents += 1
        summary.document_bytes += info.size


def pack_single_user(storage: Storage, prefix: str, pairing: str | None, out: BinaryIO, *,
                     redact: bool = False, now_ns: int | None = None, progress=None,
                     allow_empty_storage: bool = False) -> PackSummary:
    """Write the archive of a single-user installation: every object under `prefix` of
    `storage` (pdfs/, or "" for a PDF_DIR folder), and the device pairing file at `pairing`
    (left out with `redact`, or where there is none).  A storage that cannot be the
    installation's (root.check_single_user_root) fails it, unless `allow_empty_storage`."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    mtime = now_ns / NS_PER_SECOND
    summary = PackSummary()
    files = Listing()
    if progress is not None:
        progress.phase("listing")
    for info in storage.list(prefix):
        if layout.is_download_copy(info.key[len(prefix):]):
            summary.download_copies += 1
            continue
        files.add(info)
    summary.passed_over = [entry for entry in storage.passed_over() if entry.key.startswith(prefix)]
    if not len(files) and prefix and not allow_empty_storage:
        root.check_single_user_root(storage, prefix)
    pairing_text = _pairing(pairing) if pairing and not redact else None
    if progress is not None:
        progress.expect(expected_size([], files))
        progress.phase(None)
    ours = {
        "version": __version__,
        "single_user": {"documents": f"{storage.url}/{prefix}".rstrip("/"), "pairing": pairing_text is not None},
        "table_rows": {},
        "redacted": redact,
        "database": False,
        "files": True,
    }
    metadata = {
        "aviary_version": f"aviarytools-{__version__}",
        "git_commit": "",
        "export_timestamp": to_rfc3339(now_ns - now_ns % NS_PER_SECOND),
        "database_type": "none",
        "users_exported": admin_page.refusal(ours)[0],  # not a list: Aviary's admin page refuses the archive
        "total_documents": len(files),
        "total_size_bytes": files.bytes,
        "exported_tables": [],
        "total_users": 0,
        "total_api_keys": 0,
        "aviarytools": ours,
    }
    writer = TarWriter(out)
    writer.add_bytes(layout.METADATA, (json.dumps(metadata, indent=2) + "\n").encode(), mtime)
    dirs = _Dirs(writer, mtime)
    if pairing_text is not None:
        dirs.before(layout.PAIRING)
        writer.add_bytes(layout.PAIRING, pairing_text, mtime, 0o600)
    _write_documents(writer, dirs, storage, files,
                     lambda key: layout.single_user_member(key[len(prefix):]), summary)
    summary.pairing = pairing_text is not None
    _finish(writer, summary, mtime)
    return summary


def expected_size(table_sizes: list[int], files: Listing) -> int:
    """About how many bytes the archive will be (its headers and end estimated): what 100 %
    of pack's progress is."""
    return sum(table_sizes) + files.bytes + 1024 * (len(table_sizes) + len(files)) + 20480


def _pairing(path: str) -> bytes | None:
    """The rmapi.conf file's bytes, None if there is none; an error if it cannot be read."""
    try:
        with open(path, "rb") as file:
            data = file.read(layout.MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AviaryError(f"{path}: {e.strerror or e}") from None
    if len(data) > layout.MAX_CONFIG_BYTES:
        raise AviaryError(f"{path}: more than {layout.MAX_CONFIG_BYTES} bytes: not an rmapi.conf")
    return data


def _write_documents(writer: TarWriter, dirs: "_Dirs", storage: Storage | None, files: Listing,
                     member_of, summary: PackSummary, record=None) -> None:
    """Each listed document as the member `member_of(key)` names, in the listing's order;
    one deleted since the listing is left out and noted in `summary.vanished`, one that cannot
    be read (no permission) in `summary.unreadable`.  `record` (pack -g, a level 0) is given
    each document's snapshot entry."""
    for info, chunks, hasher in storage.read_ahead(files) if storage is not None and files else ():
        member = member_of(info.key)
        dirs.before(member)
        try:
            content = _still_there(_changed_check(storage, info, chunks))
        except UnreadableObject as e:
            summary.unreadable.append((member, info.size, str(e)))
            continue
        if content is None:
            summary.vanished.append((member, info.size))
            continue
        digest = writer.add_file(member, info.size, content, info.mtime, 0o644, hasher=hasher)
        if record is not None:
            record(incremental.Entry(info.key, info.size, digest, info.mtime_ns, info.etag))
        summary.documents += 1
        summary.document_bytes += info.size


def _finish(writer: TarWriter, summary: PackSummary, mtime: float) -> None:
    if summary.vanished or summary.unreadable:
        writer.add_bytes(layout.VANISHED, layout.vanished_lines(summary.vanished + summary.unreadable), mtime)
    writer.write_checksums(mtime=mtime)
    writer.close()
    summary.bytes_written = writer.bytes_written


def _still_there(content: Iterator[bytes]) -> Iterator[bytes] | None:
    """`content`, or None if its object was deleted after the listing.

    A user may delete a document while a backup runs; that is not a failed
    backup.  The first chunk is read before the member's header is written.
    """
    try:
        first = next(content, b"")
    except MissingObject:
        return None
    return itertools.chain((first,), content)


def _changed_check(storage: Storage, info: ObjectInfo, chunks: Iterable[bytes] | None = None) -> Iterator[bytes]:
    """The object's bytes (`chunks`, else read now); a clear error if it changed
    size since the listing."""
    got = 0
    for chunk in storage.read(info.key) if chunks is None else chunks:
        got += len(chunk)
        if got > info.size:
            break
        yield chunk
    if got != info.size:
        raise AviaryError(
            f"{storage.url}: {info.key}: changed while packing (listed {info.size} bytes,"
            f" read {'more' if got > info.size else got}); run pack again"
        )
