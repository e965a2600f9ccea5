"""SQLite, as Aviary uses it: text uuids, 0/1 booleans, Go's datetime text."""

import base64
import functools
import os
import sqlite3
from typing import Callable, Iterator

from .. import errors, ownership, timestamps
from ..errors import DatabaseError, InputError, MissingDatabase
from ..model import Column, ForeignKey, Kind, Table
from ..query import Query, quote_ident as q
from ..values import coercer, format_float
from .base import Database, Stage, kind_from_declared_type, known_kind

_TYPES = {
    Kind.UUID: "uuid",
    Kind.TEXT: "text",
    Kind.BOOL: "numeric",
    Kind.INT: "integer",
    Kind.FLOAT: "real",
    Kind.TIMESTAMP: "datetime",
    Kind.BYTES: "blob",
}


# SQL functions.  SQLite reports an exception raised in one only as "user-defined
# function raised exception": each notes its reason in `errors`, the list of the
# connection it was registered on, for SQLiteDatabase._error to report.

def _canonical_timestamp(errors: list[str], value):
    """Stored datetime (text, or Unix seconds) -> RFC 3339 text."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return timestamps.to_rfc3339(int(value * timestamps.NS_PER_SECOND))
    try:
        return timestamps.to_rfc3339(timestamps.parse(str(value)))
    except ValueError as e:
        errors.append(str(e))
        raise


def _canonical_float(errors: list[str], value):
    if value is None:
        return None
    try:
        return format_float(float(value))
    except ValueError as e:
        errors.append(f"{value!r}: {e}")
        raise


PROGRESS_STEPS = 20_000
# What SQLite says when a callback of ours raised: the progress handler, a function.
_SWALLOWED = frozenset(("interrupted", "user-defined function raised exception"))


def _let_signals_in() -> int:
    return 0  # carry on (a signal handler that raises on entering here stops the statement)


def _base64(value):
    if value is None:
        return None
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _sqlite_field(column: Column) -> Callable[[object], object]:
    """A non-null JSON value of `column` as SQLite stores it, checked as
    values.coerce checks it (ValueError): booleans 0/1, Go's timestamp text."""
    coerce = coercer(column)
    if column.kind is Kind.BOOL:
        def boolean(value):
            if value is True or value is False:
                return int(value)
            return int(coerce(value))
        return boolean
    if column.kind is Kind.TIMESTAMP:
        plain = timestamps.sqlite_text

        def timestamp(value):
            if type(value) is str:
                text = plain(value)  # the common case, without the arithmetic
                if text is not None:
                    return text
            return timestamps.to_sqlite(coerce(value))
        return timestamp
    return coerce


_D = "[0-9]"
# Go's UTC text with its fields' digits in range: the month, day and hour are checked further.
_GO_UTC = f"{_D * 4}-[01]{_D}-[0-3]{_D} [012]{_D}:[0-5]{_D}:[0-5]{_D}"
_MONTH_DAYS = ", ".join(f"'{month:02d}-{day:02d}'" for month, days in enumerate(
    (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), 1) for day in range(1, days + 1))


def _timestamp_sql(c: str) -> str:
    """Go's UTC text (`2025-07-27 10:11:12.123456789+00:00`), the common case,
    rewritten in SQL (a dump's hot path); anything else goes to aviary_ts.

    The common case is what Go writes: the fraction without trailing zeros, or
    none.  Its length picks the one GLOB that fits it (digits where digits go:
    no second pass over the fraction), the month and day are looked up among
    the 365 of a common year (February 29th, valid or not, is left to
    aviary_ts) and the hour is compared as text.  300,000 timestamps: 0.31 s
    of CPU over the raw column, 0.51 s with a GLOB over the fraction and
    substr() comparisons for the month, day and hour (issue 22)."""
    shapes = " ".join(f"WHEN {26 + n} THEN {c} GLOB '{_GO_UTC}.{_D * (n - 1)}[1-9]+00:00'" for n in range(1, 10))
    return (
        f"CASE WHEN CASE length({c}) WHEN 25 THEN {c} GLOB '{_GO_UTC}+00:00' {shapes} END"
        f" AND substr({c}, 6, 5) IN ({_MONTH_DAYS}) AND substr({c}, 12, 2) < '24'"
        f" THEN substr({c}, 1, 10) || 'T' || substr({c}, 12, length({c}) - 17) || 'Z'"
        f" WHEN {c} IS NULL THEN NULL ELSE aviary_ts({c}) END"
    )


def _boolean_sql(c: str) -> str:
    """JSON true/false of SQLite's 0/1 (Aviary's booleans), the common case, in one
    comparison; NULL and other spellings ('false', 'f', 2, ...) after it."""
    return (f"CASE {c} WHEN 1 THEN json('true') WHEN 0 THEN json('false')"
            f" ELSE CASE WHEN {c} IS NULL THEN NULL WHEN {c} IN ('0', 'false', 'f', 'FALSE')"
            f" THEN json('false') ELSE json('true') END END")


class SQLiteStage(Stage):
    BATCH = 5000

    def __init__(self, db, table, name, where):
        super().__init__(db, table, name, where)
        marks = ", ".join("?" * (len(table.columns) + 1))
        names = ", ".join(q(c.name) for c in table.columns)
        self._sql = f"INSERT INTO {name} ({names}, _src) VALUES ({marks})"
        self._batch: list[list] = []

    def field(self, column: Column) -> Callable[[object], object]:
        return _sqlite_field(column)

    def add(self, src: int, values: list) -> None:
        values.append(src)
        self._batch.append(values)
        self.rows += 1
        if len(self._batch) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        try:
            self.db.conn.executemany(self._sql, self._batch)
        except sqlite3.Error as e:
            raise self.db._error(e, self._sql) from None
        self._batch.clear()

    def finish(self) -> None:
        self._flush()
        self.db.key_stage(self)


class SQLiteAppend(Stage):
    """--mode append: rows inserted straight into the table, no staging table.

    A refused row stops the batch's executemany where it is: the rows before it
    stay in (the load's transaction rolls them back with the rest) and its
    position is the count of rows handed to executemany, with no savepoint
    (whose journal copied every page a batch touched: 0.3-1.3 s of 8 s of CPU
    for 300,000 login_attempts).  The key, unique and foreign key columns of every
    row inserted go, batch after batch, into the temporary table `name` with
    `_src`, so a key conflict names the earlier line it repeats
    (Database.explain_appended).
    """

    BATCH = 5000
    applied = True

    def __init__(self, db, table, name, where, key_columns: tuple[str, ...]):
        super().__init__(db, table, name, where)
        names = ", ".join(q(c.name) for c in table.columns)
        marks = ", ".join("?" * len(table.columns))
        self._sql = f"INSERT INTO main.{q(table.name)} ({names}) VALUES ({marks})"
        self._key_index = [table.column_names.index(c) for c in key_columns]
        self._keys_sql = (f"INSERT INTO {name} ({', '.join(q(c) for c in key_columns)}, _src)"
                          f" VALUES ({', '.join('?' * (len(key_columns) + 1))})")
        self._batch: list[list] = []
        self._positions: list[int] = []
        self._sent = 0  # rows of the batch handed to executemany

    def field(self, column: Column) -> Callable[[object], object]:
        return _sqlite_field(column)

    def add(self, src: int, values: list) -> None:
        self._batch.append(values)
        self._positions.append(src)
        self.rows += 1
        if len(self._batch) >= self.BATCH:
            self._flush()

    def finish(self) -> None:
        self._flush()

    def _counted(self) -> Iterator[list]:
        self._sent = 0
        for values in self._batch:
            self._sent += 1
            yield values

    def _flush(self) -> None:
        if not self._batch:
            return
        try:
            self.db.conn.executemany(self._sql, self._counted())
        except sqlite3.IntegrityError as e:
            raise self._failed(e, self._sent - 1) from None
        except sqlite3.Error as e:
            raise self.db._error(e, self._sql) from None
        self._save_keys(len(self._batch))
        self._batch.clear()
        self._positions.clear()

    def _save_keys(self, count: int) -> None:
        index = self._key_index
        if index:
            self.db.conn.executemany(self._keys_sql, (
                [values[i] for i in index] + [src]
                for values, src in zip(self._batch[:count], self._positions)
            ))

    def _failed(self, error: sqlite3.IntegrityError, refused: int) -> Exception:
        """Explain the refused row (the batch's `refused`-th) as PostgreSQL's appends are."""
        if not self.db.conn.in_transaction:  # SQLite rolled back itself (disk full): nothing to explain
            return self.db._error(error, self._sql)
        message = str(error)
        self._save_keys(refused + 1)
        return self.db.explain_appended(
            self, self._positions[refused], message, unique_columns=_unique_columns(message),
            foreign="FOREIGN KEY" in message, key=message.startswith("UNIQUE"),
        )


def _create_file(path: str) -> None:
    """A new, empty database file: private from the start (it will hold password and
    key hashes), and, made by root, owned by its folder's owner, so that an Aviary
    running as that user can open it; a folder made for it is given to that owner too."""
    folder = os.path.dirname(os.path.abspath(path))
    owner = ownership.inherited_owner(folder)
    try:
        ownership.make_folders(folder, owner)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            ownership.give(fd, owner)
        finally:
            os.close(fd)
    except OSError as e:
        raise DatabaseError(f"{path}: {e.strerror or e}") from None


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, path: str, create: bool = False):
        super().__init__(url)
        self.path = path
        if not create and not os.path.exists(path):
            raise MissingDatabase(f"{path}: no such SQLite database")
        if create and path != ":memory:" and not os.path.exists(path):
            _create_file(path)
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as e:
            raise DatabaseError(f"{path}: {e}") from None
        self._udf_errors: list[str] = []
        self.conn.create_function("aviary_ts", 1, functools.partial(_canonical_timestamp, self._udf_errors),
                                  deterministic=True)
        self.conn.create_function("aviary_float", 1, functools.partial(_canonical_float, self._udf_errors),
                                  deterministic=True)
        self.conn.create_function("aviary_base64", 1, _base64, deterministic=True)
        # Python runs a signal handler only between bytecodes, never inside one long
        # sqlite3_step: this callback gives it the chance every PROGRESS_STEPS steps of
        # SQLite's machine (about a millisecond).  A handler that raises there makes the
        # statement stop ("interrupted"), and _error raises the handler's exception.
        self.conn.set_progress_handler(_let_signals_in, PROGRESS_STEPS)
        self._stages = 0
        self._index_order: dict[str, bool] = {}  # table -> _key_order_looks_up_rows
        self._utf8 = self.execute("PRAGMA encoding")[0][0] == "UTF-8"

    def execute(self, sql: str) -> list[tuple]:
        try:
            return self.conn.execute(sql).fetchall()
        except sqlite3.Error as e:
            raise self._error(e, sql) from None

    def _error(self, e: sqlite3.Error, sql: str = "") -> BaseException:
        stop = errors.stop_requested()
        if stop is not None and str(e) in _SWALLOWED:  # a signal, in a callback of ours
            self._udf_errors.clear()
            return stop
        if str(e) == "interrupted":  # Python's own handler raised in the progress handler
            return KeyboardInterrupt()
        if self._udf_errors:
            reason = self._udf_errors[-1]
            self._udf_errors.clear()
            return InputError(f"{self.path}: bad stored value: {reason}")
        return DatabaseError(f"{self.path}: {e}")

    def _begin(self, write: bool) -> None:
        self.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def close(self) -> None:
        self.conn.close()

    # -- introspection -------------------------------------------------------

    def table_names(self) -> list[str]:
        rows = self.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
        return [r[0] for r in rows]

    def _introspect(self, name: str) -> Table | None:
        info = self.execute(f"PRAGMA main.table_info({q(name)})")
        if not info:
            return None
        columns = tuple(
            Column(
                col,
                known_kind(name, col) or kind_from_declared_type(declared or ""),
                nullable=not notnull and not pk,
                default_sql=default,
                declared=declared or None,
            )
            for _, col, declared, notnull, default, pk in info
        )
        primary_key = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        return Table(name, columns, primary_key, self._foreign_keys(name), *self._indexes(name))

    def _foreign_keys(self, name: str) -> tuple[ForeignKey, ...]:
        groups: dict[int, list] = {}
        for fk_id, _, parent, child_col, parent_col, _, on_delete, _ in self.execute(
            f"PRAGMA main.foreign_key_list({q(name)})"
        ):
            groups.setdefault(fk_id, []).append((parent, child_col, parent_col, on_delete))
        return tuple(
            ForeignKey(
                tuple(r[1] for r in rows),
                rows[0][0],
                tuple(r[2] or "id" for r in rows),
                rows[0][3].upper() == "CASCADE",
            )
            for rows in groups.values()
        )

    def _indexes(self, name: str) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[str, ...], ...]]:
        """(unique column sets, plain indexes' column sets); expression indexes left out."""
        unique, plain = [], []
        for _, index, is_unique, origin, _ in self.execute(f"PRAGMA main.index_list({q(name)})"):
            columns = tuple(c[2] for c in self.execute(f"PRAGMA main.index_info({q(index)})"))
            if origin == "pk" or not columns or None in columns:
                continue
            (unique if is_unique else plain).append(columns)
        return tuple(sorted(unique)), tuple(sorted(plain))

    # -- reading -------------------------------------------------------------

    def json_value_sql(self, table: Table, column: Column) -> str:
        c = q(column.name)
        return {
            Kind.UUID: f"lower(CAST({c} AS TEXT))",
            Kind.TEXT: f"CAST({c} AS TEXT)",
            Kind.BOOL: _boolean_sql(c),
            Kind.INT: c,
            Kind.FLOAT: f"json(aviary_float({c}))",
            Kind.TIMESTAMP: _timestamp_sql(c),
            Kind.BYTES: f"aviary_base64({c})",
        }[column.kind]

    def rows(self, table: Table, query: Query) -> Iterator[bytes]:
        shown = self.selected(table, query)
        pairs = ", ".join(f"'{c.name.replace(chr(39), chr(39) * 2)}', {self.value_sql(table, c, query)}" for c in shown.columns)
        line = f"json_object({pairs})"
        if self._utf8:  # the line's bytes as they are: no str made and encoded again per row
            line = f"CAST({line} AS BLOB)"
        sql = f"SELECT {line}" + self.from_where_sql(table, query) + self._order_limit_sql(table, query)
        try:
            cursor = self.conn.execute(sql)
            while True:
                batch = cursor.fetchmany(2000)
                if not batch:
                    return
                for (line,) in batch:
                    yield line if self._utf8 else line.encode("utf-8")
        except sqlite3.Error as e:
            raise self._error(e, sql) from None

    def _order_limit_sql(self, table: Table, query: Query) -> str:
        """order_limit_sql, but a whole table whose key order SQLite would take from an
        index, looking each row up in the table (a rowid table keyed by a uuid), is
        sorted instead: 300,000 login_attempts in 0.63 s of CPU instead of 1.0 s,
        1,200,000 in 2.5 s instead of 4.3 s.  `+key` keeps the key's collation and
        leaves its index to the WHERE, if any (`--where "id = ..."`).  The sort spills
        to temporary files past the page cache's size: memory stays flat."""
        if query.where or query.limit is not None or not self._key_order_looks_up_rows(table):
            return self.order_limit_sql(table, query)
        return " ORDER BY " + ", ".join("+" + self.order_sql(table.column(c)) for c in table.primary_key)

    def _key_order_looks_up_rows(self, table: Table) -> bool:
        """Whether SQLite would read `table` in key order by walking an index that does
        not hold the whole row (rather than the table itself: an INTEGER PRIMARY KEY,
        WITHOUT ROWID)."""
        if not table.primary_key:
            return False
        if table.name not in self._index_order:
            keys = ", ".join(self.order_sql(table.column(c)) for c in table.primary_key)
            steps = self.plan(f"SELECT * FROM main.{q(table.name)} ORDER BY {keys}")
            self._index_order[table.name] = any(s.strip().startswith("SCAN") and "USING INDEX" in s
                                                for s in steps)
        return self._index_order[table.name]

    # -- writing -------------------------------------------------------------

    # Rows loaded go into every index of the table, each in an order of its own: with
    # SQLite's default page cache (2 MB) most inserts evict a page, to read it back soon
    # after.  300,000 login_attempts (four indexes): 10.5-11.5 s of CPU with 2 MB,
    # 8.0-8.8 s with 16 MB, 7.4 s with 32 MB, 6.0-6.5 s with 64 MB (peak RSS 100 MB).
    # A bound, whatever the rows: memory stays flat.  16 MB, not 32: a restore of the
    # scale bench's 4N (200,000 login_attempts, 80,000 documents rows) peaked at 118 MB
    # with 32 MB, 71 MB with 16 MB, in the same time (6.0 s); load-table replace of the
    # 200,000 rows 2.84 s either way, 107 MB against 57 MB.
    LOAD_CACHE_KIB = 16 * 1024

    def _cache_for_loading(self) -> None:
        self.execute(f"PRAGMA cache_size = -{self.LOAD_CACHE_KIB}")

    def stage(self, table: Table, where: Callable[[int], str]) -> Stage:
        self._cache_for_loading()
        self._stages += 1
        name = f"temp.{q('aviary_stage_' + str(self._stages) + '_' + table.name)}"
        self.execute(f"CREATE TEMP TABLE {name[5:]} AS SELECT * FROM main.{q(table.name)} WHERE 0")
        self.execute(f"ALTER TABLE {name} ADD COLUMN _src INTEGER")
        return SQLiteStage(self, table, name, where)

    def key_stage(self, stage: Stage) -> None:
        # An index built once the rows are in: quicker than keeping one up to date row by row.
        key = stage.table.primary_key
        if key:
            self._stages += 1
            self.execute(f"CREATE INDEX temp.aviary_key_{self._stages} ON {stage.name.removeprefix('temp.')}"
                         f" ({', '.join(q(c) for c in key)})")

    def plan(self, sql: str) -> list[str]:
        # (id, parent, _, detail): each step indented under the one it belongs to.
        steps = self.execute(f"EXPLAIN QUERY PLAN {sql}")
        depth = {0: -1}
        for step, parent, _, _ in steps:
            depth[step] = depth.get(parent, -1) + 1
        return ["  " * depth[step] + detail for step, _, _, detail in steps]

    def append_stage(self, table: Table, where: Callable[[int], str]) -> Stage:
        self._cache_for_loading()
        self._stages += 1
        name = f"temp.{q('aviary_keys_' + str(self._stages) + '_' + table.name)}"
        keys = self.key_columns(table)
        columns = ", ".join([*(q(c) for c in keys), "NULL AS _src"])
        self.execute(f"CREATE TEMP TABLE {name[5:]} AS SELECT {columns} FROM main.{q(table.name)} WHERE 0")
        return SQLiteAppend(self, table, name, where, keys)

    def differs_sql(self, a: str, b: str) -> str:
        return f"{a} IS NOT {b}"

    def _apply(self, stage: Stage, sql: str, deleting: bool = False) -> int:
        self.execute("SAVEPOINT aviary_apply")
        try:
            cursor = self.conn.execute(sql)
        except sqlite3.IntegrityError as e:
            if self.conn.in_transaction:  # SQLite may have rolled back itself (disk full)
                self.execute("ROLLBACK TO aviary_apply")
            if deleting:
                raise self.still_referenced(stage, str(e)) from None
            raise self.explain_violation(stage, str(e), _unique_columns(str(e))) from None
        except sqlite3.Error as e:
            if self.conn.in_transaction:  # SQLite may have rolled back itself (disk full)
                self.execute("ROLLBACK TO aviary_apply")
            raise self._error(e, sql) from None
        self.execute("RELEASE aviary_apply")
        return cursor.rowcount

    def column_type_sql(self, column: Column) -> str:
        return _TYPES[column.kind]


def _unique_columns(message: str) -> tuple[str, ...] | None:
    """The columns of "UNIQUE constraint failed: users.username, users.x"."""
    prefix = "UNIQUE constraint failed: "
    if not message.startswith(prefix):
        return None
    return tuple(part.strip().split(".", 1)[-1] for part in message[len(prefix):].split(","))
