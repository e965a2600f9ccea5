"""unpack --db/--storage: restore an archive into a database and storage.

One pass over the archive, in whatever order its members come (Aviary writes
users.json after the tables that reference it):
- each table member is staged (rows.stage_rows, as load-table does) inside
  one transaction;
- each document is staged (transaction.py: written aside, nothing live changes);
- at the end the checksums are held against what was read, the staged
  tables are applied parents first (stale rows removed children first), the
  journal of what the documents' finish does is written, and the database
  commits;
- only then do staged documents move to their keys and stale documents go.
A failure before the commit rolls the database back and deletes the staged
objects: the old database and every old object are as they were.  One after
it says so and how to finish (transaction.py).

A chain (unpack BASE INC1 INC2 ...) is one restore of several passes, one per
archive, in one transaction and one staging: restore_chain.py says in which
order they are read and which documents each gives; a single archive is a
chain of one.
"""

import functools
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator

import xxhash

from .. import declared, run_report, schema
from .. import rows as rows_module
from ..db import Database
from ..errors import ArchiveError, InputError
from ..spill import HashSet, SpillList
from ..storage import Listing, ObjectInfo, Staged, Storage
from . import layout
from .inspect import archived_tables
from .restore_chain import ChainReading
from .transaction import Transaction
from .walk import Consumer, Item, Walk, raise_problems


# A replace may delete at most this share of the target's documents (those in its scope)
# unless --accept-document-loss: more, and it looks like an empty or wrong backup.  Fewer
# than DOCUMENT_LOSS_FLOOR are no sign (a fresh installation's first documents).
DOCUMENT_LOSS_SHARE = (1, 2)
DOCUMENT_LOSS_FLOOR = 10


@dataclass(frozen=True)
class RestoreOptions:
    mode: str = "replace"  # or "merge"
    user_ids: tuple[str, ...] | None = None
    tables: tuple[str, ...] | None = None  # None: every table in the archive
    exclude_tables: tuple[str, ...] = ()
    include_db: bool = True
    include_files: bool = True
    create_schema: bool = False
    dry_run: bool = False
    sync: bool = True  # wait for written documents to reach the disk (before the commit, and at the end)
    accept_column_loss: bool = False  # archive columns the target tables lack are dropped, not refused
    adopt: str | None = None  # a single-user archive's documents become this user's (id or username)
    accept_redacted: bool = False  # a --redact export may restore (its secrets come back empty)
    accept_document_loss: bool = False  # a replace may delete most of the target's documents


# A dry run names this many of the rows a replace would remove from each table.
STALE_NAMED = 5


@dataclass
class RestoreSummary:
    # table -> rows (in the archive), written (new or changed), unchanged, removed, and with
    # --dry-run stale: the first STALE_NAMED keys of those removed
    tables: dict[str, dict] = field(default_factory=dict)
    documents: int = 0
    document_bytes: int = 0
    stale_documents: int = 0
    skipped: int = 0
    stale_keys: SpillList | None = None  # a dry run: the documents a replace would delete


class Restore(Consumer):
    """A consumer of the archive walk (walk.py): the walk checks every member and
    stops the restore at the first problem, before the commit."""

    ignores = frozenset(("metadata", "vanished", "checksums", "dir", "ignored", "unknown"))  # metadata: begin()

    def __init__(self, db: Database | None, storage: Storage | None, options: RestoreOptions,
                 warn: Callable[[str], None]):
        self.db, self.storage, self.options, self.warn = db, storage, options, warn
        self.use_db = db is not None and options.include_db
        self.summary = RestoreSummary()
        self.stages: dict[str, tuple] = {}
        self.restored_keys = HashSet()
        self.configs: list[tuple[str, str, str]] = []
        self.transaction = Transaction(storage, sync=options.sync, warn=warn) if storage is not None else None
        self.archive_has_files = True
        self.user_ids: tuple[str, ...] | None = None
        self.unknown_columns: dict[tuple[str, str], int] = {}  # (table, column) -> values dropped
        self.adopter: str | None = None  # the user id a single-user archive's documents go to
        self.incremental: dict | None = None  # pack -g: level, archive, parent, base
        self.adopted = Adoption()
        self.progress = None  # told of each phase (progress.Progress)
        self.reading: ChainReading | None = None  # the archives, and which is read now
        self.ready = False  # begin() made the restore ready (with the first archive read)

    # -- the pass over the archive -------------------------------------------

    def run(self, archives: list[tuple[BinaryIO, str]], progress=None) -> RestoreSummary:
        """Restore the archives, a chain in order (restore_chain.py) or one archive, as one."""
        self.progress = progress
        self.reading = ChainReading(archives)
        self.reading.check_files()
        documents = self.transaction
        if documents is not None and self.options.include_files:
            documents.finish_earlier(self.options.dry_run)
        try:
            with self.db.transaction(commit=not self.options.dry_run) if self.use_db else nullcontext():
                self._read_all(progress)
                self._phase("listing")
                stale = self._stale_documents()  # listed while the last uploads still go up
                if documents is not None:
                    documents.settle()  # every staged document complete (uploads may still be going)
                if self.adopter is not None:
                    self._adopt()
                elif self.use_db:
                    self._apply_configs()
                    self._apply_tables()
                if documents is not None and not self.options.dry_run:
                    documents.prepare(stale)  # on disk, and the journal beside them, before the commit
                self._phase("rolling back (dry run)" if self.options.dry_run else "committing")
        except BaseException as error:
            told = documents.abort(error) if documents is not None else error
            if told is error:
                raise
            raise told from error
        if documents is not None:
            if self.options.dry_run:
                documents.discard()
            else:
                self._phase("moving documents")
                documents.finish()
        if self.options.dry_run:
            self.summary.stale_keys = stale  # unpack names them
        else:
            stale.clear()
        note = rows_module.rounding_note({table: sum(result.rounded.values())
                              for table, (_, result) in self.stages.items() if result.rounded})
        if note:
            self.warn(note)
        self._report_unknown_columns()
        return self.summary

    def _read_all(self, progress) -> None:
        """Each archive walked through (checked member by member), in the chain's reading order."""
        reading = self.reading
        for read, archive in enumerate(reading.order(), 1):
            reading.current = archive
            self._phase(reading.label(read), figures=True)
            try:
                raise_problems(Walk(archive.stream, archive.name, self, progress))
            except ArchiveError as error:  # in a chain, the line names the archive too
                if not reading.is_chain or str(error).startswith(f"{archive.name}: "):
                    raise
                raise ArchiveError(f"{archive.name}: {error}") from None
            reading.after_this()
        reading.complete()
        if reading.is_chain:
            run_report.note_archive(reading.last.metadata)  # the chain's last, whichever was read last

    def begin(self, metadata: dict) -> None:
        """What the archive is (metadata.json, or Aviary's own when that comes last) decides
        how its members are restored: made ready before the first of them.  In a chain, the
        last archive's metadata decides, and each archive's link is checked as it comes."""
        self.reading.arrived(metadata)
        if self.ready:
            return
        self.ready = True
        metadata = self.reading.setup_metadata()
        single_user = layout.is_single_user(metadata)
        if single_user and not self.options.adopt:
            raise InputError(f"{layout.METADATA}: a single-user archive (pack --single-user): restore it with"
                             " --adopt USER, the user whose documents it becomes")
        if self.options.adopt and not single_user:
            raise InputError(f"{layout.METADATA}: --adopt takes a single-user archive (pack --single-user);"
                             " this one is multi-user")
        if single_user:
            self._adopting()
            return
        if self.use_db:
            if self.options.create_schema:
                self.db.create_schema(self._schema(metadata), warn=self.warn)
            self.user_ids = self.db.user_ids(self.options.user_ids) if self.options.user_ids else None
        else:
            self.user_ids = layout.canonical_ids(self.options.user_ids)
        self._follow_metadata(metadata)
        self.incremental = layout.ours(metadata).get("incremental")
        self._manifests_ahead()

    def _manifests_ahead(self) -> None:
        """A `-` read ahead of archives that follow it: their manifests (read alone) say which
        documents exist and which of them a later archive carries."""
        reading = self.reading
        for archive in reading.ahead():
            entries = reading.passing_over(reading.manifest(archive))
            if archive is reading.last:
                self._final_manifest(entries)
            else:
                for _ in entries:
                    pass

    def _adopting(self) -> None:
        if not self.use_db:
            raise InputError("--adopt needs the database in which the user is (--db)")
        if self.options.create_schema:
            self.db.create_schema(warn=self.warn)
        self.adopter = self.db.find_user(self.options.adopt)
        self.user_ids = (self.adopter,)
        if self.storage is not None and self.storage.exists():
            self.adopted.existing = {info.key: info.size for info in self.storage.list(layout.storage_key(
                self.adopter, ""))}

    def on_single_document(self, item: Item) -> None:
        if self.storage is None or not self.options.include_files:
            return
        if layout.is_download_copy(item.entry.path):  # packed by an older aviarytools: not a document
            self.adopted.download_copies += 1
            return
        key = layout.storage_key(self.adopter, item.entry.path)
        staged = self._stage(key, item)
        if key in self.adopted.existing:  # the user has a document there: the same, or refused
            self.adopted.overlap = (staged, key, item.member.size)

    def done(self, item: Item) -> None:
        self.reading.done(item.content.hasher.hexdigest())
        overlap, self.adopted.overlap = self.adopted.overlap, None
        if overlap is not None:  # its content read whole now (a dry run stages nothing)
            self.adopted.overlapping.append((*overlap, item.content.hasher.hexdigest()))

    def on_manifest(self, item: Item, entries) -> None:
        """An incremental: the target's documents are to be the manifest's (the last archive's,
        of a chain).  Those it does not carry come from the archives before it in the chain;
        restored alone, they must be in the target already, as the manifest records them:
        checked now, before anything is written."""
        reading = self.reading
        if self.storage is None or not self.options.include_files or not reading.reading_last \
                or reading.final_known:
            return
        self._final_manifest(entries)
        if not reading.is_chain:
            self._check_base(reading.relied or SpillList())

    def _final_manifest(self, entries) -> None:
        if self.storage is None or not self.options.include_files:
            return
        for entry in entries:
            if self._wanted_user(layout.document_of_key(entry.key)[0]):
                self.restored_keys.add(entry.key)  # kept by a replace
                self.reading.final(entry)

    def _check_base(self, relied: SpillList) -> None:
        link = self.incremental

        def lacking(key: str, why: str) -> InputError:
            return InputError(f"{key}: this incremental (level {link['level']}, archive {link['archive']}) relies on"
                              f" it, and the target {why}: restore the archive it follows first ({link['parent']};"
                              f" the chain's level 0 is {link['base']})")

        there = self._target_documents()
        current = next(there, None)
        found = Listing()
        for key, size, _ in relied:
            order = key.encode("utf-8", "surrogateescape")
            while current is not None and current.key.encode("utf-8", "surrogateescape") < order:
                current = next(there, None)
            if current is None or current.key != key:
                raise lacking(key, "does not have it")
            if current.size != size:
                raise lacking(key, f"has {current.size} bytes there, not {size}")
            found.add(current)
        for (info, chunks, hasher), (key, _, digest) in zip(self.storage.read_ahead(found), relied):
            for _ in chunks:
                pass
            if hasher.hexdigest() != digest:
                raise lacking(key, f"has other content there (XXH128 {hasher.hexdigest()}, not {digest})")

    def _target_documents(self) -> Iterator[ObjectInfo]:
        """The target's objects under the folders of the users restored, in key order."""
        if not self.storage.exists():
            return iter(())
        users = sorted(self.user_ids) if self.user_ids is not None else None
        prefixes = [layout.storage_key(u, "") for u in users] if users is not None else [layout.STORAGE_USERS]
        return (info for prefix in prefixes for info in self.storage.list(prefix))

    def on_carried_document(self, item: Item) -> None:
        self.on_document(item)

    def on_pairing(self, item: Item) -> None:
        self.adopted.pairing = b"".join(item.content.chunks()).decode("utf-8", "replace")

    def _schema(self, metadata: dict) -> list:
        """The tables --create-schema makes where missing: Aviary's, each with the columns
        the archive declares for it (a newer Aviary's among them)."""
        archived = archived_tables(metadata)
        return [declared.union(table, archived.get(table.name)) for table in schema.TABLES]

    def _follow_metadata(self, metadata: dict) -> None:
        """What the archive says it holds bounds what a replace may remove."""
        ours = layout.ours(metadata)
        if not ours:
            return
        if ours.get("redacted"):
            blank = "passwords, API key and session hashes, reset tokens and rmapi pairings come back empty"
            if not (self.options.accept_redacted or self.options.dry_run):
                raise InputError(f"{layout.METADATA}: a --redact export: its {blank.replace(' come back', ' are')}"
                                 " (every login would break): restore a full pack, or accept blank secrets with"
                                 " --accept-redacted (nothing was changed)")
            self.warn(f"{layout.METADATA}: a --redact export: {blank}"
                      + ("" if self.options.accept_redacted else " (a restore needs --accept-redacted)"))
        exported = ours.get("users", metadata.get("users_exported"))  # (older packs: users_exported)
        if ours.get("users_only") and self.user_ids is None and isinstance(exported, list):
            self.user_ids = layout.canonical_ids(exported)
            self.warn(f"{layout.METADATA}: a per-user archive: only its {len(exported)} user(s) are restored")
        if ours.get("files") is False:
            self.archive_has_files = False

    def _wanted_table(self, table: str) -> bool:
        if self.db is None or not self.options.include_db or table in schema.TRANSIENT:
            return False
        if self.options.tables is not None and table not in self.options.tables:
            return False
        if table in (self.options.exclude_tables or ()):
            return False
        if self.user_ids is not None and schema.user_column(table) is None:
            return False
        if table not in self.db.table_names():
            if table in schema.BY_NAME:
                raise InputError(f"{layout.table_member(table)}: the target database has no table"
                                 f" {table}: create Aviary's schema first (--create-schema)")
            self.warn(f"{layout.table_member(table)}: no table {table} in the target database: skipped")
            return False
        return True

    def on_table(self, item: Item, rows) -> None:
        table = item.entry.table
        if not self.reading.reading_last or not self._wanted_table(table):  # a chain's tables: the last's
            return
        stage, result = rows_module.stage_rows(self.db, table, rows, user_ids=self.user_ids, warn=self.warn,
                                               on_unknown=functools.partial(self._unknown_column, table))
        self.stages[table] = (stage, result)

    def _unknown_column(self, table: str, where: str, column: str, value) -> None:
        """A key of an archived row that the target table has no column for: a value
        there would be lost, so the restore stops (unless the loss was accepted)."""
        legacy = (table, column) in schema.LEGACY_COLUMNS
        if value is not None and not self.options.accept_column_loss and not legacy:
            raise InputError(
                f"{where}: {table}.{column} holds values, but the target table has no column {column}:"
                f" upgrade Aviary at the target (its migrations add the column), or accept the loss"
                f" with --accept-column-loss")
        key = (table, column)
        self.unknown_columns[key] = self.unknown_columns.get(key, 0) + (value is not None)

    def _report_unknown_columns(self) -> None:
        for (table, column), values in sorted(self.unknown_columns.items()):
            what = f"{values} value(s) dropped" if values else "dropped (the archive holds no value in it)"
            legacy = schema.LEGACY_COLUMNS.get((table, column))
            if legacy:
                what += f": {legacy}"
            self.warn(f"{table}.{column}: the target table has no such column: {what}"
                      + (" (dry run)" if self.options.dry_run else ""))

    def _wanted_user(self, user_id: str) -> bool:
        return self.user_ids is None or user_id in self.user_ids

    def on_document(self, item: Item) -> None:
        entry = item.entry
        if self.storage is None or not self.options.include_files or not self._wanted_user(entry.user_id):
            return
        key = layout.storage_key(entry.user_id, entry.path)
        if self.reading.gives(key, self.restored_keys):
            self._stage(key, item)
            self.reading.took(key, item.member.size)

    def _stage(self, key: str, item: Item) -> Staged | None:
        """Write the document aside (transaction.py); it becomes `key` after the commit."""
        self.restored_keys.add(key)
        self.summary.documents += 1
        self.summary.document_bytes += item.member.size
        if self.options.dry_run:
            return None
        return self.transaction.stage(key, item.content.views(), item.member.size)

    def on_config(self, item: Item) -> None:
        entry = item.entry
        if entry.path == "rmapi.conf" and self._wanted_user(entry.user_id) and self.reading.reading_last:
            text = b"".join(item.content.chunks()).decode("utf-8", "replace")
            self.configs.append((entry.user_id, text, item.name))

    # -- applying ------------------------------------------------------------

    def _phase(self, doing: str, figures: bool = False) -> None:
        if self.progress is not None:
            self.progress.phase(doing, figures)

    def _adopt(self) -> None:
        """A single-user archive into its user: the pairing where the user has none (as
        Aviary's own move to multi-user does), and no document of theirs replaced by a
        different one."""
        if self.adopted.download_copies:
            self.warn(f"{layout.SINGLE_USER_DOCUMENTS}{layout.DOWNLOADS}: {self.adopted.download_copies} file(s) of"
                      " Aviary's download links (downloads/<token>/, transient copies, not documents): not adopted")
        for staged, key, size, digest in self.adopted.overlapping:
            live = xxhash.xxh3_128()
            if self.adopted.existing[key] == size:
                for chunk in self.storage.read(key):
                    live.update(chunk)
            if self.adopted.existing[key] != size or live.hexdigest() != digest:
                raise InputError(f"{key}: user {self.options.adopt} has a different document there already:"
                                 " rename one of them, then adopt again (nothing was changed)")
            if staged is not None:  # (a dry run stages nothing)
                self.transaction.keep_live(staged)
        if self.adopted.pairing is not None:
            if not self.db.pair_if_unpaired("users", self.adopter, self.adopted.pairing):
                self.warn(f"{layout.PAIRING}: user {self.options.adopt} has a device pairing already: kept"
                          " (the archive's is not used)")

    def _apply_configs(self) -> None:
        """Old archives keep each user's pairing as a file: it becomes users.rmapi_config."""
        staged = self.stages.get("users")
        if staged is None or not self.configs:
            return
        for user_id, text, name in self.configs:
            self.db.pair_if_unpaired(staged[0].name, user_id, text)

    def _apply_tables(self) -> None:
        order = schema.dependency_order(self.stages)
        mode = "replace" if self.options.mode == "replace" else "upsert"
        if mode == "replace":
            self._release_leaving_users()
            for table in reversed(order):
                stage, result = self.stages[table]
                self._phase(f"removing the {table} rows not in the archive")
                if self.options.dry_run:
                    self.summary.tables[table] = {"stale": self.db.stale_keys(stage, self._scope(table), STALE_NAMED)}
                result.removed = self.db.remove_stale(stage, self._scope(table))
        for table in order:
            stage, result = self.stages[table]
            self._phase(f"applying {table} ({result.staged:,} rows)")
            result.written = self.db.insert(stage, "upsert")
            self.summary.tables.setdefault(table, {}).update(
                rows=result.staged, written=result.written, unchanged=result.staged - result.written,
                removed=result.removed)

    def _release_leaving_users(self) -> None:
        """system_settings.updated_by does not cascade: a user who is not in the archive
        could not be removed while a setting names them.  Aviary's restore sets it to null."""
        staged = self.stages.get("users")
        if staged is None or "system_settings" not in self.db.table_names():
            return
        if not self.db.table("system_settings").has_column("updated_by"):
            return
        released = self.db.release_settings_of_leaving_users(staged[0], self.user_ids)
        if released and "system_settings" not in self.stages:
            self.warn(f"system_settings: updated_by set to null in {released} row(s): "
                      "their user is not in the archive")

    def _scope(self, table: str) -> tuple[str, ...] | None:
        return self.user_ids if self.user_ids is not None and schema.user_column(table) else None

    # -- objects -------------------------------------------------------------

    def _stale_documents(self) -> SpillList:
        """The target's documents a replace removes after the commit, those the archive does
        not hold (a dry run counts them): none when adopting (a user's own documents stay),
        nor from an archive packed without documents.  Listed before the commit, so a
        document the live app writes meanwhile is not among them."""
        stale = SpillList()
        if self.storage is None or not self.options.include_files or self.options.mode != "replace":
            return stale
        if self.adopter is not None:
            return stale
        if not self.archive_has_files:
            self.warn("the archive was packed without documents (--no-files): none removed")
            return stale
        present = 0
        for info in self._target_documents():  # (a dry run into a folder not made yet: none)
            if layout.document_of_key(info.key):
                present += 1
                if info.key not in self.restored_keys:
                    stale.append((info.key,))
        self.summary.stale_documents = len(stale)
        self._check_document_loss(len(stale), present)
        return stale

    def _check_document_loss(self, stale: int, present: int) -> None:
        """A replace that would delete most of the target's documents looks like an empty or
        wrong backup, not a rollback: refused before the commit, unless accepted."""
        most = stale * DOCUMENT_LOSS_SHARE[1] > present * DOCUMENT_LOSS_SHARE[0]
        if not most or stale < DOCUMENT_LOSS_FLOOR or self.options.accept_document_loss:
            return
        message = (f"this replace would delete {stale} of the target's {present} document(s), those the archive"
                   f" does not hold (it restores {self.summary.documents}): more than half, so it looks like an"
                   " empty or wrong backup")
        if self.options.dry_run:
            self.warn(f"{message} (a restore needs --accept-document-loss)")
        else:
            raise InputError(f"{message}; check the archive (--dry-run names them), or accept the loss with"
                             " --accept-document-loss (nothing was changed)")


def restore(stream: BinaryIO, source: str, db: Database | None, storage: Storage | None,
            options: RestoreOptions, warn: Callable[[str], None], progress=None) -> RestoreSummary:
    """Restore one archive: a chain of one."""
    return restore_chain([(stream, source)], db, storage, options, warn, progress)


def restore_chain(archives: list[tuple[BinaryIO, str]], db: Database | None, storage: Storage | None,
                  options: RestoreOptions, warn: Callable[[str], None], progress=None) -> RestoreSummary:
    """Restore a chain (a level 0 and the incrementals after it, in order) as one restore."""
    return Restore(db, storage, options, warn).run(archives, progress)


@dataclass
class Adoption:
    """unpack --adopt: what the adopting user has, and what the archive brings them."""

    existing: dict[str, int] = field(default_factory=dict)  # the user's documents: key -> size
    overlapping: list[tuple[Staged | None, str, int, str]] = field(default_factory=list)  # (staged, key, size, XXH128)
    overlap: tuple[Staged | None, str, int] | None = None  # the member being read, if it is one
    pairing: str | None = None
    download_copies: int = 0  # single-user/pdfs/downloads/<token>/ files: not adopted
