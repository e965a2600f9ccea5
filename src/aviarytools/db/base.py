"""What both databases offer: introspection, snapshots, canonical rows, staging.

Reading: the database itself turns each row into its canonical JSON line
(SQL in each dialect), so a dump streams at the speed of the database's own
JSON output and stays byte-identical across engines.

Writing: rows are first staged in a temporary table (with `_src`, where the
row came from), then applied to the real table in one statement per mode.
Staging is what lets a restore accept tables in any order, report a key
conflict or a missing parent by input line, and commit nothing on error.
`load-table --mode append` (no --user) skips it: rows go straight into the
table inside the transaction (`append_stage`), in chunks under a savepoint,
with only their key columns and `_src` kept aside to explain a refusal by
input line (`explain_appended`).
"""

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Callable, Iterator

from .. import schema, timestamps
from ..config import display_url
from ..errors import DatabaseError, InputError
from ..model import Column, ForeignKey, Kind, Table
from ..query import Query, quote_ident as q, quote_literal
from ..values import canonical_uuid, coercer

MODES = ("append", "replace", "upsert", "skip")


class Stage:
    """Rows of one table waiting in a temporary table to be applied.

    `add` takes each value in the stage's own form: `field(column)` turns a
    non-null JSON value into it (ValueError if it does not fit the column),
    `null` stands for NULL.  By default that is the internal value (values.py);
    a database may go straight to what it sends (PostgreSQL: COPY text).
    """

    null: object = None
    applied = False  # True: `add` wrote the rows into the table itself (nothing to apply)

    def __init__(self, db: "Database", table: Table, name: str, where: Callable[[int], str]):
        self.db, self.table, self.name, self.where = db, table, name, where
        self.rows = 0
        self.present: set[str] = set(table.column_names)  # columns the input gave

    def field(self, column: Column) -> Callable[[object], object]:
        return coercer(column)

    def add(self, src: int, values: list) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called once every row is added."""

    def abort(self, error: BaseException) -> None:
        """Called instead of finish when adding rows failed."""


class Database(ABC):
    dialect = ""

    def __init__(self, url: str):
        self.url = url
        self.display = display_url(url)
        self._tables: dict[str, Table] = {}
        self._defaults: dict[tuple[str, str], object] = {}
        self._reading: Iterator | None = None  # the last row stream handed out (see _end_read)

    # -- introspection -------------------------------------------------------

    @abstractmethod
    def table_names(self) -> list[str]:
        """Every table in the database, sorted."""

    @abstractmethod
    def _introspect(self, name: str) -> Table | None: ...

    def table(self, name: str) -> Table:
        """The live table `name`; InputError if there is none."""
        if name not in self._tables:
            table = self._introspect(name)
            if table is None:
                known = ", ".join(self.table_names()) or "none"
                raise InputError(f"no table {name!r} in {self.display} (tables: {known})")
            self._tables[name] = table
        return self._tables[name]

    # -- transactions --------------------------------------------------------

    @abstractmethod
    def execute(self, sql: str) -> list[tuple]:
        """Run one statement and return its rows (if any)."""

    @abstractmethod
    def _begin(self, write: bool) -> None: ...

    @contextmanager
    def snapshot(self):
        """A read transaction: every read inside sees one consistent state."""
        self._begin(write=False)
        try:
            yield self
        except BaseException:
            self.rollback()  # quietly: a COPY cut short by a signal may leave the connection busy
            raise
        self._end_read()
        self.execute("ROLLBACK")

    @contextmanager
    def transaction(self, commit: bool = True):
        """One write transaction: committed if the block ends (rolled back instead
        with commit=False: a dry run), rolled back if it raises."""
        self._begin(write=True)
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        if commit:
            self.execute("COMMIT")
        else:
            self.rollback()

    def _end_read(self) -> None:
        """Close a row stream its consumer left open (it raised mid-way): a PostgreSQL
        COPY still under way would otherwise make the ROLLBACK wait on it for ever."""
        reading, self._reading = self._reading, None
        if reading is not None:
            try:
                reading.close()
            except Exception:
                pass  # the error that stopped the consumer is the one to report

    def rollback(self) -> None:
        self._end_read()
        try:
            self.execute("ROLLBACK")
        except Exception:
            pass  # the connection may be gone: nothing was committed either way

    @abstractmethod
    def close(self) -> None: ...

    # -- reading -------------------------------------------------------------

    @abstractmethod
    def json_value_sql(self, table: Table, column: Column) -> str:
        """An SQL expression giving the canonical JSON value of `column`."""

    def value_sql(self, table: Table, column: Column, query: Query) -> str:
        """The column's canonical JSON value, or its blank if the query redacts it, or null
        where it names no parent row the query holds it against (Query.parents)."""
        if column.name in query.redact:
            return "NULL" if column.nullable else "CAST('' AS TEXT)"
        value = self.json_value_sql(table, column)
        for fk in query.parents:
            if not fk.on_delete_cascade and fk.columns == (column.name,):
                value = f"CASE WHEN {self.orphan_sql(fk)} THEN NULL ELSE {value} END"
        return value

    def orphan_sql(self, fk: ForeignKey, child: str = "") -> str:
        """True for a row whose single-column reference `fk` names no parent row (`child`:
        the child table's alias and a dot, if it has one).  Compared as lower-case text, as
        an archive holds uuids and verify compares them."""
        column = self.text_sql(child + q(fk.columns[0]) if child else fk.columns[0])
        parent_column = self.text_sql("p." + q(fk.parent_columns[0]))
        return (f"({column} IS NOT NULL AND lower({column}) NOT IN"
                f" (SELECT lower({parent_column}) FROM {q(fk.parent)} AS p WHERE {parent_column} IS NOT NULL))")

    def orphans(self, table: Table, fk: ForeignKey, limit: int,
                user_ids: tuple[str, ...] | None = None) -> tuple[list[tuple], int]:
        """The rows (their primary key and the reference) whose reference `fk` names no
        parent row, the first `limit` of them in key order, and how many there are (of
        these users' rows only, with `user_ids`)."""
        key = table.primary_key
        condition = f" FROM {q(table.name)} AS c WHERE {self.orphan_sql(fk, 'c.')}"
        if user_ids is not None:
            condition += " AND " + self.user_condition(table, user_ids)
        # Counted first: the count reads the reference's index alone, and there are
        # seldom any (0.39 s of CPU for 100,000 documents rows in key order, 0.05 s so).
        total = self.execute(f"SELECT count(*){condition}")[0][0]
        if not total:
            return [], 0
        shown = [self.text_sql("c." + q(k)) for k in key] + [self.text_sql("c." + q(fk.columns[0]))]
        order = " ORDER BY " + ", ".join(f"c.{q(k)}" for k in key) if key else ""
        return self.execute(f"SELECT {', '.join(shown)}{condition}{order} LIMIT {limit}"), total

    @abstractmethod
    def rows(self, table: Table, query: Query) -> Iterator[bytes]:
        """Canonical JSON lines (UTF-8, no newline) of the rows `query` selects."""

    def selected(self, table: Table, query: Query) -> Table:
        """`table` narrowed to the query's columns; InputError for unknown ones."""
        if query.columns is None:
            return table
        for name in query.columns:
            if not table.has_column(name):
                raise InputError(f"no column {name!r} in table {table.name}")
        return table.project(query.columns)

    def from_where_sql(self, table: Table, query: Query) -> str:
        sql = " FROM " + q(table.name)
        conditions = []
        if query.user_ids is not None:
            conditions.append(self.user_condition(table, query.user_ids))
        conditions += [f"NOT {self.orphan_sql(fk)}" for fk in query.parents if fk.on_delete_cascade]
        if query.where:
            conditions.append(f"({query.where})")
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        return sql

    def order_limit_sql(self, table: Table, query: Query) -> str:
        sql = ""
        if table.primary_key:
            sql += " ORDER BY " + ", ".join(self.order_sql(table.column(c)) for c in table.primary_key)
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return sql

    def order_sql(self, column: Column) -> str:
        return q(column.name)

    def row_with_key(self, table: Table, columns: tuple[str, ...], key: list[tuple[Column, object]]) -> bytes | None:
        """The canonical JSON line of `columns` of the row whose key columns hold the values
        `key` pairs with them (as values.coerce gives them), or None if there is none."""
        where = " AND ".join(f"{q(column.name)} = {_key_literal(column, value)}" for column, value in key)
        for line in self.rows(table, Query(columns=columns, where=where)):
            return bytes(line)
        return None

    def user_condition(self, table: Table, user_ids: tuple[str, ...]) -> str:
        column = schema.user_column(table.name)
        if column is None or not table.has_column(column):
            raise InputError(f"table {table.name} does not belong to users: --user does not apply")
        if not user_ids:
            return "1 = 0"
        return f"{q(column)} IN ({', '.join(self.uuid_literal(u) for u in user_ids)})"

    def uuid_literal(self, value: str) -> str:
        return quote_literal(canonical_uuid(value))

    def count(self, table: Table, query: Query) -> int:
        inner = "SELECT 1" + self.from_where_sql(table, query) + self.order_limit_sql(table, query)
        return self.execute(f"SELECT count(*) FROM ({inner}) AS counted")[0][0]

    def user_ids(self, names_or_ids) -> tuple[str, ...]:
        """Canonical ids of users given by id or username (InputError if unknown)."""
        ids = []
        for value in names_or_ids:
            try:
                ids.append(canonical_uuid(value))
                continue
            except ValueError:
                pass
            found = self.execute(
                f"SELECT {self.text_sql('id')} FROM users WHERE username = {quote_literal(value)}"
            )
            if not found:
                raise InputError(f"no user named {value!r} in {self.display}")
            ids.append(found[0][0])
        return tuple(dict.fromkeys(ids))

    def find_user(self, name_or_id: str) -> str:
        """The canonical id of the user with this id or username; InputError if there is none."""
        user_id = self.user_ids([name_or_id])[0]
        if "users" not in self.table_names() or not self.execute(
                f"SELECT 1 FROM users WHERE id = {self.uuid_literal(user_id)}"):
            raise InputError(f"no user {name_or_id!r} in {self.display}")
        return user_id

    def text_sql(self, column_name: str) -> str:
        """`column_name` (or an already qualified `s."col"`) as text."""
        return column_name if "." in column_name else q(column_name)

    # -- writing -------------------------------------------------------------

    def pair_if_unpaired(self, table: str, user_id: str, rmapi_config: str) -> bool:
        """Give the user in `table` (users, or a stage of it) this device pairing if they have
        none; whether they had none."""
        column = q("rmapi_config")
        where = f"WHERE CAST(id AS TEXT) = {quote_literal(user_id)} AND ({column} IS NULL OR {column} = '')"
        if not self.execute(f"SELECT 1 FROM {table} {where}"):
            return False
        self.execute(f"UPDATE {table} SET {column} = {quote_literal(rmapi_config)} {where}")
        return True

    def release_settings_of_leaving_users(self, users: "Stage", user_ids: tuple[str, ...] | None) -> int:
        """system_settings.updated_by set to null where it names a user (of `user_ids`, if
        given) who is not among the staged `users`: how many rows."""
        where = (f"updated_by IS NOT NULL AND NOT EXISTS"
                 f" (SELECT 1 FROM {users.name} AS s WHERE s.id = system_settings.updated_by)")
        if user_ids is not None:
            where += f" AND updated_by IN ({', '.join(self.uuid_literal(u) for u in user_ids)})"
        released = self.execute(f"SELECT count(*) FROM system_settings WHERE {where}")[0][0]
        if released:
            self.execute(f"UPDATE system_settings SET updated_by = NULL WHERE {where}")
        return released

    def default(self, table: Table, column: Column) -> object:
        """The column's default as a JSON-ish value, evaluated once per load."""
        key = (table.name, column.name)
        if key not in self._defaults:
            value = None
            if column.default_sql:
                value = self.execute(f"SELECT {self.default_text_sql(column.default_sql)}")[0][0]
            self._defaults[key] = value
        return self._defaults[key]

    def default_text_sql(self, default_sql: str) -> str:
        return default_sql

    @abstractmethod
    def stage(self, table: Table, where: Callable[[int], str]) -> Stage:
        """A new, empty staging table for rows of `table`."""

    def append_stage(self, table: Table, where: Callable[[int], str]) -> Stage | None:
        """For --mode append: a stage whose rows go straight into `table`
        (`Stage.applied`), inside the load's transaction; None: stage them."""
        return None

    @staticmethod
    def key_columns(table: Table) -> tuple[str, ...]:
        """The columns an append straight into `table` keeps with each row's
        position, to explain a failure: primary key, unique and foreign keys."""
        columns = [*table.primary_key, *(c for u in table.unique for c in u),
                   *(c for fk in table.foreign_keys for c in fk.columns)]
        return tuple(dict.fromkeys(columns))

    @abstractmethod
    def key_stage(self, stage: Stage) -> None:
        """Once every row is staged: make the stage quick to find by the table's primary key.
        Every statement that applies it (remove_stale's anti-join, the duplicate check, the
        users a restore releases, explain_violation's finders) then looks each key up instead
        of scanning the whole stage once per row of the table: without it a replace over
        200,000 rows ran for half an hour on SQLite."""

    def remove_stale(self, stage: Stage, user_ids: tuple[str, ...] | None) -> int:
        """Delete rows of the table (or of `user_ids`) whose key is not staged."""
        self._require_key(stage.table, "replace")
        return self._apply(stage, self.remove_stale_sql(stage, user_ids), deleting=True)

    def remove_stale_sql(self, stage: Stage, user_ids: tuple[str, ...] | None) -> str:
        """The anti-join of remove_stale: each row of the table looks its key up in the
        stage (key_stage), so the cost grows with the rows, not their product."""
        return f"DELETE FROM {q(stage.table.name)} AS t WHERE {self._stale(stage, user_ids)}"

    def stale_keys(self, stage: Stage, user_ids: tuple[str, ...] | None, limit: int) -> list[str]:
        """The first `limit` rows remove_stale would delete, each as `key=value`, in key order."""
        keys = stage.table.primary_key
        rows = self.execute(
            f"SELECT {', '.join(self.text_sql(f't.{q(c)}') for c in keys)} FROM {q(stage.table.name)} AS t"
            f" WHERE {self._stale(stage, user_ids)} ORDER BY {', '.join(f't.{q(c)}' for c in keys)}"
            f" LIMIT {int(limit)}")
        return [", ".join(f"{c}={v}" for c, v in zip(keys, row)) for row in rows]

    def _stale(self, stage: Stage, user_ids: tuple[str, ...] | None) -> str:
        """The condition on rows `t` of the table (or of `user_ids`) whose key is not staged."""
        table = stage.table
        match = " AND ".join(f"s.{q(c)} = t.{q(c)}" for c in table.primary_key)
        scope = ""
        if user_ids is not None:
            scope = self.user_condition(table, user_ids).replace(
                q(schema.user_column(table.name)), "t." + q(schema.user_column(table.name)), 1
            ) + " AND "
        return f"{scope}NOT EXISTS (SELECT 1 FROM {stage.name} AS s WHERE {match})"

    def insert(self, stage: Stage, mode: str) -> int:
        """Move the staged rows into the table as `mode` says; returns rows written: an upsert
        leaves a row equal to its staged one as it is, and does not count it."""
        if mode in ("upsert", "replace"):
            self._require_key(stage.table, mode)
            self._refuse_staged_duplicates(stage)
        return self._apply(stage, self.insert_sql(stage, mode))

    def insert_sql(self, stage: Stage, mode: str) -> str:
        """One INSERT ... SELECT of the whole stage: conflicts are found through the
        table's own primary key."""
        table = stage.table
        names = ", ".join(q(c.name) for c in table.columns)
        sql = (
            f"INSERT INTO {q(table.name)} ({names}) SELECT {names} FROM {stage.name}"
            f" WHERE true ORDER BY _src"
        )
        if mode == "skip":
            sql += " ON CONFLICT DO NOTHING"
        elif mode in ("upsert", "replace"):
            keys = ", ".join(q(c) for c in table.primary_key)
            updated = [c.name for c in table.columns
                       if c.name not in table.primary_key and c.name in stage.present]
            updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in updated)
            changed = " OR ".join(self.differs_sql(f"{q(table.name)}.{q(c)}", f"excluded.{q(c)}") for c in updated)
            sql += f" ON CONFLICT ({keys}) " + (f"DO UPDATE SET {updates} WHERE {changed}" if updates else "DO NOTHING")
        return sql

    def duplicates_sql(self, stage: Stage) -> str:
        """The first key staged twice (the stage's key index gives the groups in order)."""
        keys = ", ".join(q(c) for c in stage.table.primary_key)
        return (f"SELECT min(_src), max(_src) FROM {stage.name} GROUP BY {keys}"
                f" HAVING count(*) > 1 ORDER BY 2 LIMIT 1")

    @abstractmethod
    def plan(self, sql: str) -> list[str]:
        """How the database would run `sql`, one line a step (EXPLAIN): what a test reads
        to hold a statement to a plan that grows linearly with the rows."""

    def differs_sql(self, a: str, b: str) -> str:
        """SQL true when the values `a` and `b` (qualified columns) differ, NULL equal to
        NULL.  Compared as text: a type without an equality operator (json) compares too."""
        return f"{self.text_sql(a)} IS DISTINCT FROM {self.text_sql(b)}"

    def _require_key(self, table: Table, mode: str) -> None:
        if not table.primary_key:
            raise InputError(f"table {table.name} has no primary key: --mode {mode} needs one")

    def _refuse_staged_duplicates(self, stage: Stage) -> None:
        found = self.execute(self.duplicates_sql(stage))
        if found:
            first, second = found[0]
            raise InputError(
                f"{stage.where(second)}: duplicate key"
                f" {self._shown(stage, stage.table.primary_key, second)} (also on {stage.where(first)})"
            )

    @abstractmethod
    def _apply(self, stage: Stage, sql: str, deleting: bool = False) -> int:
        """Run `sql`; on a constraint error, raise InputError naming the row."""

    @staticmethod
    def still_referenced(stage: Stage, detail: str) -> InputError:
        return InputError(
            f"table {stage.table.name}: cannot remove rows missing from the input:"
            f" other rows still reference them ({detail})"
        )

    def explain_violation(self, stage: Stage, message: str, unique_columns=None) -> InputError:
        """The InputError for a constraint `message`, naming the first offending row."""
        for finder in (self._missing_parent, self._existing_key):
            found = finder(stage, unique_columns)
            if found:
                return InputError(found)
        return InputError(f"table {stage.table.name}: {message}")

    def explain_appended(self, stage: Stage, position: int | None, message: str, *,
                         unique_columns=None, column: str | None = None, foreign: bool = False,
                         key: bool = False) -> InputError:
        """The InputError for rows appended straight into the table (append_stage)
        that the database refused.  `stage.name` holds the key columns of every
        row sent so far with its `_src`, the table only what was there before
        plus the chunks that passed; `position` is the input row the database
        named, if it did (a foreign key is checked at the end of a chunk)."""
        table = stage.table
        if foreign:
            found = self._missing_parent(stage, None)
            if found:
                return InputError(found)
        if position is None:
            return InputError(f"table {table.name}: {message}")
        if key:
            keys = set(self.key_columns(table))
            candidates = [c for c in ([unique_columns] if unique_columns else [table.primary_key, *table.unique])
                          if c and set(c) <= keys]
            for columns in candidates:
                match = " AND ".join(f"e.{q(c)} = s.{q(c)}" for c in columns)
                found = self.execute(
                    f"SELECT min(e._src) FROM {stage.name} AS s JOIN {stage.name} AS e ON {match}"
                    f" WHERE s._src = {int(position)} AND e._src < {int(position)}"
                )
                if found and found[0][0] is not None:
                    return InputError(
                        f"{stage.where(position)}: duplicate key {self._shown(stage, columns, position)}"
                        f" (also on {stage.where(found[0][0])})"
                    )
            for columns in candidates:
                match = " AND ".join(f"t.{q(c)} = s.{q(c)}" for c in columns)
                if self.execute(
                    f"SELECT 1 FROM {stage.name} AS s WHERE s._src = {int(position)}"
                    f" AND EXISTS (SELECT 1 FROM {q(table.name)} AS t WHERE {match})"
                ):
                    return InputError(
                        f"{stage.where(position)}: key {self._shown(stage, columns, position)}"
                        f" already exists in {table.name}"
                    )
        return InputError(f"{stage.where(position)}{f', column {column}' if column else ''}: {message}")

    def _missing_parent(self, stage: Stage, unique_columns) -> str | None:
        for fk in stage.table.foreign_keys:
            if len(fk.columns) != 1:
                continue
            column, parent_column = fk.columns[0], fk.parent_columns[0]
            found = self.execute(
                f"SELECT s._src, {self.text_sql('s.' + q(column))} FROM {stage.name} AS s"
                f" WHERE s.{q(column)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {q(fk.parent)}"
                f" AS p WHERE p.{q(parent_column)} = s.{q(column)}) ORDER BY s._src LIMIT 1"
            )
            if found:
                src, value = found[0]
                return (
                    f"{stage.where(src)}, column {column}: no {fk.parent} row has"
                    f" {parent_column} {value}"
                )
        return None

    def _existing_key(self, stage: Stage, unique_columns) -> str | None:
        table = stage.table
        candidates = [unique_columns] if unique_columns else [table.primary_key, *table.unique]
        for columns in candidates:
            if not columns:
                continue
            match = " AND ".join(f"t.{q(c)} = s.{q(c)}" for c in columns)
            same_row = " AND ".join(f"t.{q(c)} = s.{q(c)}" for c in table.primary_key)
            other_row = f" AND NOT ({same_row})" if same_row and tuple(columns) != table.primary_key else ""
            found = self.execute(
                f"SELECT s._src FROM {stage.name} AS s WHERE EXISTS (SELECT 1 FROM"
                f" {q(table.name)} AS t WHERE {match}{other_row}) ORDER BY s._src LIMIT 1"
            )
            if found:
                src = found[0][0]
                return f"{stage.where(src)}: key {self._shown(stage, columns, src)} already exists in {table.name}"
            keys = ", ".join(q(c) for c in columns)
            found = self.execute(
                f"SELECT min(_src), max(_src) FROM {stage.name} GROUP BY {keys}"
                f" HAVING count(*) > 1 ORDER BY 2 LIMIT 1"
            )
            if found:
                first, src = found[0]
                return (f"{stage.where(src)}: duplicate key {self._shown(stage, columns, src)}"
                        f" (also on {stage.where(first)})")
        return None

    def _shown(self, stage: Stage, columns, src: int) -> str:
        values = self.execute(
            f"SELECT {', '.join(self.text_sql(c) for c in columns)} FROM {stage.name}"
            f" WHERE _src = {int(src)}"
        )[0]
        return ", ".join(f"{c}={v}" for c, v in zip(columns, values))

    # -- schema --------------------------------------------------------------

    @abstractmethod
    def column_type_sql(self, column: Column) -> str: ...

    def create_schema(self, tables=schema.TABLES, warn: Callable[[str], None] | None = None) -> list[str]:
        """Create the tables (Aviary's by default) where missing, and their indexes
        where missing; returns the tables created.  A table that exists is left as
        it is: only indexes on columns it has are added."""
        existing = set(self.table_names())
        created = []
        for table in tables:
            if table.name in existing:
                have = set(self.table(table.name).column_names)
                table = Table(table.name, (), unique=tuple(u for u in table.unique if set(u) <= have),
                              indexes=tuple(i for i in table.indexes if set(i) <= have))
            else:
                created.append(table.name)
                self.execute(self.create_table_sql(table))
                for column in table.columns:
                    if column.source_default and not column.default_sql and warn:
                        warn(f"{table.name}.{column.name}: the archive's default {column.source_default}"
                             " has no portable form: created without a default")
            for statement in self.index_statements(table):
                self.execute(statement)
        self._tables.clear()
        return created

    def create_table_sql(self, table: Table) -> str:
        parts = [self._column_ddl(c) for c in table.columns]
        if table.primary_key:
            parts.append(f"PRIMARY KEY ({', '.join(q(c) for c in table.primary_key)})")
        for fk in table.foreign_keys:
            parts.append(
                f"CONSTRAINT {q('fk_' + table.name + '_' + '_'.join(c.removesuffix('_id') for c in fk.columns))}"
                f" FOREIGN KEY ({', '.join(q(c) for c in fk.columns)})"
                f" REFERENCES {q(fk.parent)} ({', '.join(q(c) for c in fk.parent_columns)})"
                + (" ON DELETE CASCADE" if fk.on_delete_cascade else "")
            )
        return f"CREATE TABLE IF NOT EXISTS {q(table.name)} ({', '.join(parts)})"

    @staticmethod
    def index_statements(table: Table) -> list[str]:
        statements = []
        for unique, columns in [(True, c) for c in table.unique] + [(False, c) for c in table.indexes]:
            name = "idx_" + table.name + "_" + "_".join(columns)
            statements.append(
                f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {q(name)}"
                f" ON {q(table.name)} ({', '.join(q(c) for c in columns)})"
            )
        return statements

    def _column_ddl(self, column: Column) -> str:
        sql = f"{q(column.name)} {self.column_type_sql(column)}"
        if not column.nullable:
            sql += " NOT NULL"
        if column.default_sql:
            sql += f" DEFAULT {column.default_sql}"
        return sql


def _key_literal(column: Column, value) -> str:
    """An SQL literal of a key value, as values.coerce gave it."""
    if column.kind is Kind.TIMESTAMP:
        return quote_literal(timestamps.to_rfc3339(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return quote_literal(str(value))


def kind_from_declared_type(declared: str) -> Kind:
    """The kind of a column from its declared SQL type (either engine)."""
    t = declared.lower()
    rules = (
        (("uuid",), Kind.UUID),
        (("bool", "numeric"), Kind.BOOL),  # GORM declares Go bools `numeric` in SQLite
        (("timestamp", "datetime", "date", "time"), Kind.TIMESTAMP),
        (("int", "serial"), Kind.INT),
        (("real", "floa", "doub", "decimal"), Kind.FLOAT),
        (("bytea", "blob"), Kind.BYTES),
    )
    for words, kind in rules:
        if any(w in t for w in words):
            return kind
    return Kind.TEXT


def known_kind(table: str, column: str) -> Kind | None:
    """The kind Aviary's models give a column, where they know it."""
    model = schema.BY_NAME.get(table)
    if model and model.has_column(column):
        return model.column(column).kind
    return None


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise DatabaseError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
