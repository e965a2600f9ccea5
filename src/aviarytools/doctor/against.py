"""doctor --against: the live installation held against an archive, in one pass.

Tables.  Each archived table is compared with the live one by walking both
in primary-key order at once (a merge): our archives and dump-table are in
key order, and so is `db.rows`, so an equal row costs one byte comparison
and memory stays flat.  Archive rows are put in canonical form with
`canonical_line`, over the columns both sides have, in the same order as the
live rows are asked for.  A row that does not line up is set aside in a dict
of key -> xxh3_64 of its canonical line, to be matched when its partner
comes.  With aligned streams those dicts only ever hold the differences;
with an archive whose rows are not in key order (Aviary's own) they become
a hash join: memory proportional to the number of rows, not to their size.
A live row passed over that way is fetched again by key at the end of the
table when it turns out to differ, so the report names the columns.

When the live database is PostgreSQL, archived timestamps are first rounded
to microseconds (half to even, as a restore into PostgreSQL rounds them).

Files.  Each archived document is hashed (XXH128) as it is read from the
archive while the live object is read and hashed beside it (a few at a
time); then the live documents of the scope that the archive does not hold
are listed.
"""

import json
from collections import deque
from typing import BinaryIO, Iterator

import xxhash

from .. import schema, timestamps
from ..archive import layout
from ..archive.inspect import canonical_line
from ..archive.walk import BrokenTable, Consumer, Item, Walk
from ..db import Database
from ..errors import InputError, MissingObject, StorageError
from ..findings import LIMIT, Capped, Finding, info, problem, short
from ..model import Kind, Table
from ..query import Query
from ..storage import Storage
from ..values import canonical_uuid, coerce
from .storage import read_object

_MISSING = object()


def _hash(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data)


def _secret(table: str, column: str) -> bool:
    return column in schema.SECRETS.get(table, ())


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


class _Configs:
    """Old archives keep users' rmapi.conf as files; a restore puts them in users.rmapi_config.

    A users row whose only difference is an empty archived rmapi_config waits
    here for its file (or the file waits for the row).
    """

    def __init__(self):
        self.rows: dict[str, int] = {}  # user id -> hash of the live rmapi_config
        self.files: dict[str, int] = {}  # user id -> hash of the archived file's text

    def row(self, user_id: str, live_value) -> bool:
        """True if the difference is accounted for (now, or when the file comes)."""
        if live_value is None:
            return False
        digest = _hash(live_value.encode())
        if user_id in self.files:
            return self.files.pop(user_id) == digest
        self.rows[user_id] = digest
        return True

    def file(self, user_id: str, text: str) -> Finding | None:
        digest = _hash(text.encode())
        if user_id not in self.rows:
            self.files[user_id] = digest
            return None
        if self.rows.pop(user_id) != digest:
            return problem("row-differs", f"id={user_id}: rmapi_config differs from"
                           f" {layout.CONFIGS_PREFIX}{user_id}/rmapi.conf", "users")
        return None

    def rest(self) -> Iterator[Finding]:
        for user_id in sorted(self.rows):
            yield problem("row-differs", f"id={user_id}: rmapi_config: empty in the archive,"
                          " set in the live database", "users")


class TableComparison:
    """One archived table against the live one (see the module's docstring)."""

    def __init__(self, db: Database, table: Table, user_ids, configs: _Configs):
        self.db, self.table, self.user_ids, self.configs = db, table, user_ids, configs
        self.name = table.name
        self.model = schema.BY_NAME.get(self.name)
        self.key_columns = [table.column(c) for c in table.primary_key]
        self.user_column = schema.user_column(self.name) if user_ids is not None else None
        self.wanted = frozenset(user_ids or ())
        self.round = db.dialect == "postgres"
        self.rounded = 0
        self.order: list[str] | None = None
        self.live = None
        self.cur: bytes | None = None
        self.cur_key = None
        self.pending_live: dict[tuple, int] = {}
        self.pending_archive: dict[tuple, int] = {}
        self.recheck: list[tuple[tuple, bytes]] = []
        self.prev_key = None
        self.unordered = False
        self.counts = dict(archived=0, equal=0, differ=0, archive_only=0, live_only=0)
        self.out: list[Finding] = []
        self.caps = {c: Capped(c, self.name) for c in ("row-differs", "row-missing", "row-extra", "archive-row")}

    # -- driving -------------------------------------------------------------

    def run(self, rows) -> Iterator[Finding]:
        """Compare the rows of a table member ((position, row), checked by the archive walk)."""
        if not self.key_columns:
            yield info("rows", "no primary key: not compared", self.name)
            return
        try:
            for position, row in rows:
                self._archived(position, row)
                if self.out:
                    yield from self._flush()
        except (BrokenTable, InputError) as err:
            if isinstance(err, InputError):  # the archive's rows do not fit (the walk reports broken JSON)
                yield problem("archive-row", f"{err}: the rest of the table is not compared", self.name)
            if self.live is not None:
                for _ in self.live:  # let the database finish sending
                    pass
            return
        if self.order is None:  # an empty table: every live row is extra
            self._start(list(self.table.column_names), ())
        self._finish_live()
        yield from self._flush()
        yield from self._recheck()
        for key in self.pending_archive:
            self._report("row-missing", f"{self._key_text(key)}: in the archive, not in the live database")
        for key in self.pending_live:
            self._report("row-extra", f"{self._key_text(key)}: in the live database, not in the archive")
        yield from self._flush()
        for cap in self.caps.values():
            if cap.rest():
                yield cap.rest()
        yield from self._summary()

    def _flush(self) -> Iterator[Finding]:
        if self.out:
            found, self.out = self.out, []
            yield from found

    def _report(self, check: str, detail: str) -> None:
        if check in ("row-differs", "row-missing", "row-extra"):
            self.counts[{"row-differs": "differ", "row-missing": "archive_only",
                         "row-extra": "live_only"}[check]] += 1
        finding = self.caps[check].offer(detail)
        if finding:
            self.out.append(finding)

    def _summary(self) -> Iterator[Finding]:
        c = self.counts
        how = "; archive rows not in key order: compared through a hash table" if self.unordered else ""
        yield info("rows", f"{c['archived']} archived rows: {c['equal']} equal, {c['differ']} differ,"
                   f" {c['archive_only']} only in the archive, {c['live_only']} only in the live database"
                   + how, self.name)
        if self.rounded:
            yield info("rounded", f"{self.rounded} archived timestamps rounded to microseconds before"
                       " comparing (PostgreSQL keeps microseconds)", self.name)

    # -- the two streams --------------------------------------------------------

    def _start(self, archived_columns, first_row) -> None:
        """Decide the columns to compare and start the live stream."""
        live_names = self.table.column_names
        common = [c for c in archived_columns if c in live_names]
        modelled = [c for c in self.model.column_names if c in common] if self.model else []
        self.order = modelled + [c for c in live_names if c in common and c not in modelled]
        for column in archived_columns:
            if column not in live_names:
                self.out.append(problem("columns", f"column {column} is in the archive but not in the"
                                        " live table: not compared", self.name))
        if first_row:
            unarchived = [c for c in live_names if c not in common]
            if unarchived:
                self.out.append(info("columns", f"not in the archive, not compared: {', '.join(unarchived)}",
                                     self.name))
        missing_key = [c.name for c in self.key_columns if c.name not in self.order]
        if missing_key:
            raise InputError(f"{layout.table_member(self.name)}: rows have no {', '.join(missing_key)}")
        self.timestamps = [c for c in self.order if self.table.column(c).kind is Kind.TIMESTAMP] \
            if self.round else []
        query = Query(columns=tuple(self.order), user_ids=self.user_ids)
        self.live = iter(self.db.rows(self.table, query))
        self._advance()

    def _advance(self) -> None:
        line = next(self.live, None)
        self.cur = None if line is None else bytes(line)  # PostgreSQL hands out memoryviews
        self.cur_key = None

    def _live_key(self) -> tuple:
        if self.cur_key is None:
            row = json.loads(self.cur)
            # The database's own text for text and uuid keys: it need not be a valid uuid.
            self.cur_key = tuple(row[c.name] if c.kind in (Kind.UUID, Kind.TEXT) else coerce(c, row[c.name])
                                 for c in self.key_columns)
        return self.cur_key

    def _archived(self, position: int, row) -> None:
        if not isinstance(row, dict):
            self._report("archive-row", f"item {position}: not a JSON object")
            return
        if self.order is None:
            self._start(list(row), row)
        if self.user_column is not None and _owner(row.get(self.user_column)) not in self.wanted:
            return
        try:
            key = tuple(coerce(c, row.get(c.name)) for c in self.key_columns)
            projected = {c: row[c] for c in self.order if c in row}
            if self.timestamps:
                self._round(projected)
            line = canonical_line(self.table, projected)
        except (InputError, ValueError) as err:
            self._report("archive-row", f"item {position}: {err}")
            return
        if key == self.prev_key:
            self._report("archive-row", f"item {position}: {self._key_text(key)} appears more than once")
            return
        self.counts["archived"] += 1
        if self.prev_key is not None and key < self.prev_key:
            self.unordered = True
        self.prev_key = key
        self._match(key, line)

    def _round(self, row: dict) -> None:
        for column in self.timestamps:
            value = row.get(column)
            if isinstance(value, str):
                try:
                    ns = timestamps.parse(value)
                except ValueError:
                    continue  # canonical_line says what is wrong with it
                rounded = timestamps.round_to_microseconds(ns)
                if rounded != ns:
                    row[column] = timestamps.to_rfc3339(rounded)
                    self.rounded += 1

    def _match(self, key: tuple, line: bytes) -> None:
        if self.cur is not None and self.cur == line:
            self.counts["equal"] += 1
            self._advance()
            return
        if key in self.pending_live:
            if self.pending_live.pop(key) == _hash(line):
                self.counts["equal"] += 1
            elif len(self.recheck) < LIMIT:
                self.recheck.append((key, line))
            else:
                self._report("row-differs", f"{self._key_text(key)}: differs")
            return
        while self.cur is not None and self._live_key() < key:
            self._pass_live(keep=True)
        if self.cur is not None and self._live_key() == key:
            self._pair(key, line, self.cur)
            self._advance()
        elif key in self.pending_archive:
            self._report("archive-row", f"{self._key_text(key)}: appears more than once in the archive")
        else:
            self.pending_archive[key] = _hash(line)

    def _pass_live(self, keep: bool) -> None:
        """The current live row has no partner yet: match it with a waiting archive row, or set it aside."""
        key = self._live_key()
        waiting = self.pending_archive.pop(key, None)
        if waiting is not None:
            if waiting == _hash(self.cur):
                self.counts["equal"] += 1
            else:
                self._report("row-differs", f"{self._key_text(key)}: differs (compared by hash)")
        elif keep:
            self.pending_live[key] = _hash(self.cur)
        else:
            self._report("row-extra", f"{self._key_text(key)}: in the live database, not in the archive")
        self._advance()

    def _finish_live(self) -> None:
        while self.cur is not None:
            self._pass_live(keep=False)

    def _recheck(self) -> Iterator[Finding]:
        """Rows set aside by hash that differ: fetch the live row again to name the columns."""
        for key, line in self.recheck:
            live = self.db.row_with_key(self.table, tuple(self.order), list(zip(self.key_columns, key)))
            if live is not None:
                self._pair(key, line, live)
            else:
                self._report("row-missing", f"{self._key_text(key)}: in the archive, not in the live database")
            yield from self._flush()

    # -- one pair of rows ------------------------------------------------------------

    def _pair(self, key: tuple, archived: bytes, live: bytes) -> None:
        if archived == live:
            self.counts["equal"] += 1
            return
        a, b = json.loads(archived), json.loads(live)
        columns = [c for c in self.order if not _same(a.get(c, _MISSING), b.get(c, _MISSING))]
        if not columns:
            self.counts["equal"] += 1
            return
        if self.name == "users" and columns == ["rmapi_config"] and a.get("rmapi_config") in (None, ""):
            if isinstance(b.get("rmapi_config"), str) and self.configs.row(str(b.get("id")), b["rmapi_config"]):
                self.counts["equal"] += 1
                return
        shown = []
        for c in columns:
            if _secret(self.name, c):
                shown.append(f"{c} differs")
            else:
                archived_value = "missing" if c not in a else short(a[c])
                shown.append(f"{c}: archive {archived_value}, live {short(b.get(c))}")
        self._report("row-differs", f"{self._key_text(key)}: " + "; ".join(shown))

    def _key_text(self, key: tuple) -> str:
        return ", ".join(f"{c.name}={_shown_key(c, v)}" for c, v in zip(self.key_columns, key))


def _shown_key(column, value) -> str:
    return timestamps.to_rfc3339(value) if column.kind is Kind.TIMESTAMP else str(value)


def _owner(value) -> str | None:
    try:
        return canonical_uuid(value)
    except ValueError:
        return None


class Comparison(Consumer):
    """The whole archive against the live database and storage: a consumer of the
    archive walk, whose own findings (a damaged archive) come out with doctor's."""

    # A single-user archive's documents have no user yet (unpack --adopt gives them one).
    ignores = frozenset(("metadata", "single_document", "pairing", "vanished", "checksums", "dir", "ignored",
                         "unknown"))

    def __init__(self, db: Database, storage: Storage | None, user_ids: tuple[str, ...] | None):
        self.db, self.storage, self.user_ids = db, storage, user_ids
        self.live_tables = set(db.table_names())
        self.configs = _Configs()
        self.compared: set[str] = set()
        self.archived_keys: set[str] = set()
        self.pending: deque = deque()
        self.found: list[Finding] = []
        self.files = dict(archived=0, equal=0, differ=0, missing=0, unreadable=0, extra=0)
        self.caps = {c: Capped(c) for c in ("file-differs", "file-missing", "file-extra", "unreadable")}

    def run(self, stream: BinaryIO, source: str) -> Iterator[Finding]:
        try:
            yield from Walk(stream, source, self)
            self._settle_all()
            yield from self.take_findings()
        finally:
            for *_, future in self.pending:
                future.cancel()
        yield from self.configs.rest()
        yield from self._extra_files()
        for cap in self.caps.values():
            if cap.rest():
                yield cap.rest()
        if self.storage is not None:
            f = self.files
            yield info("files", f"{f['archived']} archived documents: {f['equal']} equal, {f['differ']} differ,"
                       f" {f['missing']} missing, {f['unreadable']} unreadable; {f['extra']} live documents"
                       " not in the archive")
        for name in schema.DATA_TABLES:
            if name.name in self.live_tables and name.name not in self.compared and self._in_scope(name.name):
                yield info("rows", "not in the archive: not compared", name.name)

    def take_findings(self) -> list[Finding]:
        found, self.found = self.found, []
        return found

    def _in_scope(self, table: str) -> bool:
        return self.user_ids is None or schema.user_column(table) is not None

    # -- tables ---------------------------------------------------------------------

    def on_table(self, item: Item, rows) -> None:
        name = item.entry.table
        if name in schema.TRANSIENT or not self._in_scope(name):
            return
        if name not in self.live_tables:
            self.found.append(problem("tables", "in the archive, not in the live database", name))
            return
        self.compared.add(name)
        comparison = TableComparison(self.db, self.db.table(name), self.user_ids, self.configs)
        self.found.extend(comparison.run(rows))

    def on_config(self, item: Item) -> None:
        entry = item.entry
        if entry.path != "rmapi.conf" or "users" not in self.live_tables:
            return
        if self.user_ids is not None and entry.user_id not in self.user_ids:
            return
        text = b"".join(item.content.chunks()).decode("utf-8", "replace")
        finding = self.configs.file(entry.user_id, text)
        if finding:
            self.found.append(finding)

    # -- documents ----------------------------------------------------------------------

    def on_document(self, item: Item) -> None:
        entry = item.entry
        if self.storage is None or (self.user_ids is not None and entry.user_id not in self.user_ids):
            return
        key = layout.storage_key(entry.user_id, entry.path)
        self.archived_keys.add(key)
        self._compare_live(key, item.member.size, item.content.finish())

    on_carried_document = on_document

    def on_manifest(self, item: Item, entries) -> None:
        """An incremental: the live documents against the state it records; those it
        does not carry, against the XXH128 its manifest gives them."""
        if self.storage is None:
            return
        for entry in entries:
            if self.user_ids is not None and layout.document_of_key(entry.key)[0] not in self.user_ids:
                continue
            self.archived_keys.add(entry.key)
            if not entry.carried:
                self._compare_live(entry.key, entry.size, entry.xxh128)

    def _compare_live(self, key: str, size: int, digest: str) -> None:
        """Read and hash the live object beside the archive's (a few at a time)."""
        future = self.storage.transfers.submit(self._live_digest, key)
        self.pending.append((key, size, digest, future))
        while len(self.pending) > self.storage.transfers.limit * 2:
            self._settle(*self.pending.popleft())

    def _live_digest(self, key: str):
        """(size, XXH128) of the live object, None if there is none, or the error text."""
        try:
            hasher = xxhash.xxh3_128()
            size = read_object(self.storage, key, hasher.update)
        except MissingObject:
            return None
        except StorageError as err:
            return str(err)
        except OSError as err:  # not every reader translates every error
            return f"{self.storage.url}: {key}: {err.strerror or err}"
        return size, hasher.hexdigest()

    def _settle_all(self) -> None:
        while self.pending:
            self._settle(*self.pending.popleft())

    def _settle(self, key: str, size: int, archived: str, future) -> None:
        self.files["archived"] += 1
        live = future.result()
        if live is None:
            self.files["missing"] += 1
            finding = self.caps["file-missing"].offer("in the archive, not in the live storage", key)
        elif isinstance(live, str):
            self.files["unreadable"] += 1
            finding = self.caps["unreadable"].offer(live, key)
        elif live != (size, archived):
            self.files["differ"] += 1
            finding = self.caps["file-differs"].offer(
                f"XXH128 {live[1]} ({live[0]} bytes) live, {archived} ({size} bytes) in the archive", key)
        else:
            self.files["equal"] += 1
            finding = None
        if finding:
            self.found.append(finding)

    def _extra_files(self) -> Iterator[Finding]:
        if self.storage is None:
            return
        prefixes = [f"users/{u}/pdfs/" for u in self.user_ids] if self.user_ids is not None else ["users/"]
        for prefix in prefixes:
            for obj in self.storage.list(prefix):
                if layout.document_of_key(obj.key) and obj.key not in self.archived_keys:
                    self.files["extra"] += 1
                    finding = self.caps["file-extra"].offer("in the live storage, not in the archive", obj.key)
                    if finding:
                        yield finding

def compare(stream: BinaryIO, source: str, db: Database, storage: Storage | None,
            users: tuple[str, ...] | None = None) -> Iterator[Finding]:
    """Findings of the live installation against the archive read from `stream`."""
    user_ids = db.user_ids(users) if users else None
    with db.snapshot():
        yield from Comparison(db, storage, user_ids).run(stream, source)
