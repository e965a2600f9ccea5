"""PostgreSQL through psycopg 3: rows leave and enter through COPY.

Dumps run `COPY (SELECT row_to_json(...)) TO STDOUT` with the canonical
value expressions below, in CSV format whose quote and delimiter characters
(\\x01, \\x02) can never occur unescaped in JSON text: the server's output is
then the canonical line itself and passes through untouched.
"""

import re
import selectors
from bisect import bisect_right
from typing import Callable, Iterator

import psycopg
from psycopg import errors as pgerrors

from .. import timestamps
from ..errors import DatabaseError, redact
from ..model import Column, ForeignKey, Kind, Table
from ..query import Query, quote_ident as q, quote_literal
from ..values import reencode_floats
from .base import Database, Stage, known_kind
from ..values import coercer, text_bound

_TYPES = {
    Kind.UUID: "uuid",
    Kind.TEXT: "text",
    Kind.BOOL: "boolean",
    Kind.INT: "bigint",
    Kind.FLOAT: "decimal",
    Kind.TIMESTAMP: "timestamptz",
    Kind.BYTES: "bytea",
}

_KIND_OF_TYPE = {
    "uuid": Kind.UUID,
    "bool": Kind.BOOL,
    "int2": Kind.INT,
    "int4": Kind.INT,
    "int8": Kind.INT,
    "float4": Kind.FLOAT,
    "float8": Kind.FLOAT,
    "numeric": Kind.FLOAT,
    "timestamptz": Kind.TIMESTAMP,
    "timestamp": Kind.TIMESTAMP,
    "date": Kind.TIMESTAMP,
    "bytea": Kind.BYTES,
}
_INT_BITS = {"int2": 16, "int4": 32, "int8": 64}
_NATIVE_TEXT = {"text", "varchar", "bpchar"}

_COPY_OUT = "WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_NEEDS_ESCAPE = re.compile(r"[\\\n\r\t]").search


def _copy_text(value: str) -> str:
    return value.translate(_ESCAPES) if _NEEDS_ESCAPE(value) else value


_TO_COPY = {
    Kind.BOOL: lambda v: "t" if v else "f",
    Kind.INT: str,
    Kind.FLOAT: repr,
    Kind.UUID: str,
    Kind.TEXT: _copy_text,
    Kind.TIMESTAMP: timestamps.to_postgres,
    Kind.BYTES: lambda v: "\\\\x" + v.hex(),
}


def _copy_field(column: Column, rounded: dict[str, int]) -> Callable[[object], str]:
    """A non-null JSON value of `column` as COPY text, checked as values.coerce
    checks it (ValueError); counts in `rounded` the timestamps it rounds."""
    coerce = coercer(column)
    kind = column.kind
    if kind is Kind.UUID:
        return coerce  # canonical uuid text is its COPY text
    if kind is Kind.TEXT:
        # Printable ASCII without a backslash: valid, and its own COPY text.
        plain = re.compile(f"[ -\\[\\]-~]{{0,{text_bound(column)}}}").fullmatch

        def text(value):
            if type(value) is str and plain(value):
                return value
            value = coerce(value)
            return value.translate(_ESCAPES) if _NEEDS_ESCAPE(value) else value
        text.plain = plain
        return text
    if kind is Kind.BOOL:
        def boolean(value):
            if value is True:
                return "t"
            if value is False:
                return "f"
            return "t" if coerce(value) else "f"
        return boolean
    if kind is Kind.TIMESTAMP:
        name, plain = column.name, timestamps.postgres_text

        def timestamp(value):
            if type(value) is str:
                text = plain(value)  # the common case: no arithmetic, nothing to round
                if text is not None:
                    return text
            ns = coerce(value)
            if ns % 1000:
                rounded[name] = rounded.get(name, 0) + 1
            return timestamps.to_postgres(ns)
        return timestamp
    to_copy = _TO_COPY[kind]
    return lambda value: to_copy(coerce(value))


class PostgresStage(Stage):
    FLUSH_BYTES = 1 << 18
    null = "\\N"

    def __init__(self, db, table, name, where):
        super().__init__(db, table, name, where)
        names = ", ".join(q(c.name) for c in table.columns)
        self._copy_cm = db.conn.cursor().copy(f"COPY {name} ({names}, _src) FROM STDIN")
        self._copy = self._copy_cm.__enter__()
        self.rounded: dict[str, int] = {}
        self._buffer: list[str] = []
        self._size = 0

    def field(self, column: Column) -> Callable[[object], str]:
        return _copy_field(column, self.rounded)

    def add(self, src: int, values: list) -> None:
        line = "\t".join(values) + f"\t{src}\n"
        self._buffer.append(line)
        self._size += len(line)
        self.rows += 1
        if self._size >= self.FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        try:
            self._copy.write("".join(self._buffer).encode("utf-8"))
        except psycopg.Error as e:
            raise self.db.error(e) from None
        self._buffer.clear()
        self._size = 0

    def finish(self) -> None:
        self._flush()
        try:
            self._copy_cm.__exit__(None, None, None)
        except psycopg.Error as e:
            raise self.db.error(e) from None
        self.db.key_stage(self)

    def abort(self, error: BaseException) -> None:
        # Ends the COPY (CopyFail) so the connection can roll back.
        try:
            self._copy_cm.__exit__(type(error), error, error.__traceback__)
        except BaseException:
            pass


class PostgresAppend(Stage):
    """--mode append: rows COPYed straight into the table, no staging table.

    The server updates indexes and checks keys while we still parse, and no
    INSERT ... SELECT follows.  The COPY goes in chunks, each under a
    savepoint, so a failed chunk can be explained before the load rolls
    back: PostgreSQL's `COPY t, line N` is a line of the chunk, mapped back to
    the input position it was sent for (`_marks`: where positions jump, for
    blank lines and the like).  Key, unique and foreign key columns of every
    row sent go, chunk after chunk, into a small temporary table `name` with
    `_src`, so a key conflict names the earlier line it repeats and a missing
    parent its line, as with staging (Database.explain_appended).
    """

    CHUNK_ROWS = 100_000
    CHUNK_KEY_BYTES = 16 << 20  # and at most this much of key columns held
    FLUSH_BYTES = 1 << 18
    null = "\\N"
    applied = True

    def __init__(self, db, table, name, where, key_columns: tuple[str, ...]):
        super().__init__(db, table, name, where)
        names = ", ".join(q(c.name) for c in table.columns)
        self._copy_sql = f"COPY {q(table.name)} ({names}) FROM STDIN"
        self._keys_sql = f"COPY {name} ({', '.join(q(c) for c in key_columns)}, _src) FROM STDIN"
        self._key_index = [table.column_names.index(c) for c in key_columns]
        self.rounded: dict[str, int] = {}
        self._copy_cm = None
        self._copy = None
        self._buffer: list[str] = []
        self._size = 0
        self._keys: list[str] = []
        self._key_data = bytearray()
        self._marks: list[tuple[int, int]] = []  # (row of the chunk, input position) where positions jump
        self._sent = 0  # rows of this chunk
        self._next = -1  # the position that would continue the last mark

    def field(self, column: Column) -> Callable[[object], str]:
        return _copy_field(column, self.rounded)

    def add(self, src: int, values: list) -> None:
        if self._copy is None:
            self._start_chunk()
        line = "\t".join(values) + "\n"
        self._buffer.append(line)
        self._size += len(line)
        index = self._key_index
        if len(index) == 1:
            self._keys.append(f"{values[index[0]]}\t{src}\n")
        elif index:
            self._keys.append("\t".join([values[i] for i in index]) + f"\t{src}\n")
        if src != self._next:
            self._marks.append((self._sent, src))
        self._next = src + 1
        self._sent += 1
        self.rows += 1
        if self._size >= self.FLUSH_BYTES:
            self._flush()
            if self._sent >= self.CHUNK_ROWS or len(self._key_data) >= self.CHUNK_KEY_BYTES:
                self._end_chunk()

    def finish(self) -> None:
        if self._copy is not None:
            self._end_chunk(last=True)

    def abort(self, error: BaseException) -> None:
        # Ends the COPY (CopyFail) so the connection can roll back.
        cm, self._copy_cm, self._copy = self._copy_cm, None, None
        if cm is not None:
            try:
                cm.__exit__(type(error), error, error.__traceback__)
            except BaseException:
                pass

    def _start_chunk(self) -> None:
        self.db.execute("SAVEPOINT aviary_append")
        try:
            self._copy_cm = self.db.conn.cursor().copy(self._copy_sql)
            self._copy = self._copy_cm.__enter__()
        except psycopg.Error as e:
            raise self.db.error(e) from None
        self._marks.clear()
        self._sent = 0
        self._next = -1

    def _flush(self) -> None:
        data = "".join(self._buffer).encode("utf-8")
        self._buffer.clear()
        self._size = 0
        self._key_data += "".join(self._keys).encode("utf-8")
        self._keys.clear()
        try:
            self._copy.write(data)
        except psycopg.Error as e:  # the connection, not a row: rows fail at the chunk's end
            self.abort(e)
            raise self.db.error(e) from None

    def _end_chunk(self, last: bool = False) -> None:
        cm = self._copy_cm
        try:
            try:
                self._flush()
            except BaseException as error:
                self.abort(error)
                raise
            self._copy_cm = self._copy = None
            cm.__exit__(None, None, None)  # the server's verdict on the chunk
        except psycopg.Error as e:
            raise self._failed(e) from None
        self.db.execute("RELEASE SAVEPOINT aviary_append")
        if last:  # all in: no later chunk to explain
            self._key_data.clear()
        else:
            self._save_keys()

    def _save_keys(self) -> None:
        if self._key_data:
            try:
                with self.db.conn.cursor().copy(self._keys_sql) as copy:
                    copy.write(self._key_data)
            except psycopg.Error as e:
                raise self.db.error(e) from None
            self._key_data.clear()

    def _position(self, line: int) -> int:
        """The input position sent as line `line` (from 1) of the chunk's COPY."""
        row = line - 1
        mark_row, mark_src = self._marks[bisect_right(self._marks, row, key=lambda m: m[0]) - 1]
        return mark_src + row - mark_row

    def _failed(self, e: psycopg.Error) -> Exception:
        """The error to raise for a failed chunk, naming the input row where it can."""
        if not isinstance(e, (pgerrors.IntegrityError, pgerrors.DataError)):
            return self.db.error(e)
        self.db.execute("ROLLBACK TO SAVEPOINT aviary_append")
        self._key_data += "".join(self._keys).encode("utf-8")
        self._keys.clear()
        self._save_keys()  # this chunk's too: the rows it names are among them
        position = column = None
        prefix = f"COPY {self.table.name}, line "
        for context in (e.diag.context or "").splitlines():
            found = _CONTEXT_LINE.match(context[len(prefix):]) if context.startswith(prefix) else None
            if found and 0 < int(found[1]) <= self._sent:
                position = self._position(int(found[1]))
                if found[2] and self.table.has_column(found[2]):
                    column = found[2]
                break
        detail = e.diag.message_detail or ""
        message = redact(f"{_first_line(e)} {detail}".strip())
        unique = None
        if isinstance(e, pgerrors.UniqueViolation) and e.diag.constraint_name:
            unique = self.db._index_columns(e.diag.constraint_name)
        return self.db.explain_appended(
            self, position, message, unique_columns=unique, column=column,
            foreign=isinstance(e, pgerrors.ForeignKeyViolation),
            key=isinstance(e, pgerrors.UniqueViolation),
        )


_CONTEXT_LINE = re.compile(r"(\d+)(?:, column (.+?): )?")


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str):
        super().__init__(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=15)
            self.conn.execute("SET extra_float_digits = 1")
            self.conn.execute("SET client_encoding = 'UTF8'")
            self.conn.execute("SET TimeZone = 'UTC'")
            self.conn.execute("SET DateStyle = 'ISO'")  # timestamp text in dumps
        except psycopg.Error as e:
            raise DatabaseError(f"{self.display}: {_first_line(e)}") from None
        self._stages = 0
        self._pg_types: dict[tuple[str, str], str] = {}

    def error(self, e: Exception) -> DatabaseError:
        return DatabaseError(f"{self.display}: {_first_line(e)}")

    def execute(self, sql: str) -> list[tuple]:
        try:
            cursor = self.conn.execute(sql)
            return cursor.fetchall() if cursor.description else []
        except psycopg.Error as e:
            raise self.error(e) from None

    def _begin(self, write: bool) -> None:
        self.execute(
            "BEGIN ISOLATION LEVEL READ COMMITTED"
            if write
            else "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        )

    def close(self) -> None:
        self.conn.close()

    # -- introspection -------------------------------------------------------

    def table_names(self) -> list[str]:
        rows = self.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
        )
        return [r[0] for r in rows]

    def _introspect(self, name: str) -> Table | None:
        rows = self.execute(
            "SELECT a.attname, t.typname, a.attnotnull, pg_get_expr(d.adbin, d.adrelid),"
            " a.atttypmod, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            f" WHERE c.relname = {quote_literal(name)} AND c.relkind IN ('r', 'p')"
            " AND n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum"
        )
        if not rows:
            return None
        columns = []
        for col, typname, notnull, default, typmod, declared in rows:
            self._pg_types[(name, col)] = typname
            kind = _KIND_OF_TYPE.get(typname) or known_kind(name, col) or Kind.TEXT
            if typname in _NATIVE_TEXT and kind is not Kind.UUID:
                kind = Kind.TEXT
            columns.append(
                Column(
                    col,
                    kind,
                    nullable=not notnull,
                    max_length=typmod - 4 if typname in ("varchar", "bpchar") and typmod > 4 else None,
                    int_bits=_INT_BITS.get(typname, 64),
                    default_sql=default,
                    declared=declared,
                )
            )
        return Table(name, tuple(columns), *self._keys(name))

    def _keys(self, name: str):
        relation = quote_literal(q(name))
        primary = self.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey)"
            f" WHERE i.indrelid = {relation}::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey::int2[], a.attnum)"
        )
        # Indexes on columns (not expressions): unique ones first, then plain ones.
        indexes = self.execute(
            "SELECT i.indisunique, array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))"
            " FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey)"
            f" WHERE i.indrelid = {relation}::regclass AND NOT i.indisprimary AND 0 <> ALL(i.indkey)"
            " GROUP BY i.indexrelid, i.indisunique ORDER BY 1 DESC, 2"
        )
        fks = self.execute(
            "SELECT (SELECT array_agg(attname ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY"
            "   k(num, n) JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.num),"
            " c.confrelid::regclass::text,"
            " (SELECT array_agg(attname ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY"
            "   k(num, n) JOIN pg_attribute ON attrelid = c.confrelid AND attnum = k.num),"
            " c.confdeltype = 'c'"
            f" FROM pg_constraint c WHERE c.conrelid = {relation}::regclass AND c.contype = 'f'"
            " ORDER BY c.conname"
        )
        return (
            tuple(r[0] for r in primary),
            tuple(
                ForeignKey(tuple(cols), parent.strip('"'), tuple(pcols), cascade)
                for cols, parent, pcols, cascade in fks
            ),
            tuple(tuple(columns) for unique, columns in indexes if unique),
            tuple(tuple(columns) for unique, columns in indexes if not unique),
        )

    # -- reading -------------------------------------------------------------

    def json_value_sql(self, table: Table, column: Column) -> str:
        c = q(column.name)
        typname = self._pg_types.get((table.name, column.name), "")
        if column.kind is Kind.TIMESTAMP:
            utc = c if typname in ("timestamp", "date") else f"{c} AT TIME ZONE 'UTC'"
            general = (
                f"rtrim(rtrim(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.') || 'Z'"
            )
            if typname == "date":
                return general
            # Years 1 to 9999: the ISO text (DateStyle ISO, set on connecting) is
            # the same characters with a space for the T, and about twice as fast.
            # Other years, BC and infinities keep to_char.
            tz = "+00" if typname != "timestamp" else ""
            return (
                f"CASE WHEN {c} >= '0001-01-01 00:00:00{tz}' AND {c} < '10000-01-01 00:00:00{tz}'"
                f" THEN replace(({utc})::text, ' ', 'T') || 'Z' ELSE {general} END"
            )
        if column.kind is Kind.FLOAT:
            return f"{c}::float8"
        if column.kind is Kind.BYTES:
            return f"translate(encode({c}, 'base64'), E'\\n', '')"
        if column.kind is Kind.TEXT and typname not in _NATIVE_TEXT:
            return f"{c}::text"
        if column.kind is Kind.UUID and typname != "uuid":
            return f"lower({c}::text)"
        return c

    def order_sql(self, column: Column) -> str:
        if column.kind in (Kind.TEXT,):
            return f'{q(column.name)} COLLATE "C"'
        return q(column.name)

    def uuid_literal(self, value: str) -> str:
        return super().uuid_literal(value) + "::uuid"

    def text_sql(self, column_name: str) -> str:
        return f"{column_name if '.' in column_name else q(column_name)}::text"

    def default_text_sql(self, default_sql: str) -> str:
        return f"({default_sql})::text"

    def _order_of_lines(self, table: Table, shown: Table, query: Query) -> str | None:
        """` ORDER BY` over the selected values `r` that orders rows exactly as
        order_limit_sql orders the inner SELECT ('' with no primary key), or None
        where it cannot: a key column left out, or ordered by its stored value
        (COLLATE) while the line shows another one."""
        keys = []
        for name in table.primary_key:
            if not shown.has_column(name):
                return None
            column = table.column(name)
            order = self.order_sql(column)
            # A bare name orders by the output column, as r.name does.
            if order != q(name) and self.value_sql(table, column, query) != q(name):
                return None
            keys.append("r." + order)
        return " ORDER BY " + ", ".join(keys) if keys else ""

    # A dump of a whole table reads the heap in order and sorts it: the primary
    # key's index (a uuid) would visit the heap in random order, much slower.
    # work_mem is raised so that the sort of a large table merges its runs in
    # one pass.  Parallel workers, where the server has them, build the lines
    # and sort them while the leader sends: tuples are cheaper to pass on than
    # the planner's default assumes.  JIT compiling (in each worker) costs more
    # than it saves here.  Local to the snapshot's transaction, and undone
    # after the dump.
    _WHOLE_TABLE_SETTINGS = {
        "enable_indexscan": "'off'",
        "work_mem": "CASE WHEN pg_size_bytes(old.work_mem) < pg_size_bytes('32MB') THEN '32MB'"
                    " ELSE old.work_mem END",
        "parallel_tuple_cost": "CASE WHEN old.parallel_tuple_cost::float8 > 0.01 THEN '0.01'"
                               " ELSE old.parallel_tuple_cost END",
        "jit": "'off'",
    }

    def _plan_whole_table(self, table: Table, query: Query) -> dict[str, str] | None:
        """Applies the settings for a whole-table dump, if it is one, inside a
        transaction; returns the settings it replaced."""
        if (not table.primary_key or query.where or query.limit is not None
                or self.conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS):
            return None
        names = list(self._WHOLE_TABLE_SETTINGS)
        old = ", ".join(f"current_setting({quote_literal(n)}) AS {q(n)}" for n in names)
        new = ", ".join(f"set_config({quote_literal(n)}, {v}, true)"
                        for n, v in self._WHOLE_TABLE_SETTINGS.items())
        values = self.execute(f"SELECT old.*, {new} FROM (SELECT {old} OFFSET 0) AS old")[0]
        return dict(zip(names, values))

    def _restore(self, settings: dict[str, str] | None) -> None:
        if settings and self.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            self.execute("SELECT " + ", ".join(
                f"set_config({quote_literal(n)}, {quote_literal(v)}, true)" for n, v in settings.items()))

    def rows(self, table: Table, query: Query) -> Iterator[bytes]:
        self._end_read()  # one COPY at a time on a connection
        self._reading = self._rows(table, query)
        return self._reading

    def _rows(self, table: Table, query: Query) -> Iterator[bytes]:
        shown = self.selected(table, query)
        exprs = ", ".join(f"{self.value_sql(table, c, query)} AS {q(c.name)}" for c in shown.columns)
        inner = f"SELECT {exprs}" + self.from_where_sql(table, query)
        order = self._order_of_lines(table, shown, query)
        if order is None:
            inner += self.order_limit_sql(table, query)
            sql = f"SELECT row_to_json(r) FROM ({inner}) AS r"
        else:
            # Sorting the lines themselves lets the server build them before the
            # sort, in parallel workers where it has them.
            sql = f"SELECT row_to_json(r) FROM ({inner}) AS r{order}"
            if query.limit is not None:
                sql += f" LIMIT {int(query.limit)}"
        sql = f"COPY ({sql}) TO STDOUT {_COPY_OUT}"
        floats = any(c.kind is Kind.FLOAT for c in shown.columns)
        settings = self._plan_whole_table(table, query)
        try:
            with self.conn.cursor().copy(sql):
                try:
                    if floats:
                        for line in self._copy_lines():
                            yield reencode_floats(line)
                    else:
                        yield from self._copy_lines()
                except BaseException:
                    # The reader went away (| head) or we were stopped: without a
                    # cancel, leaving the COPY would first drain all of its rows.
                    self.conn.cancel_safe()
                    raise
        except psycopg.Error as e:
            raise self.error(e) from None
        finally:
            self._restore(settings)

    def _copy_lines(self) -> Iterator[memoryview]:
        """The lines (no newline) of the COPY TO under way, read from libpq a row
        a call: half the work per row of psycopg's Copy iterator.  Ends with the
        COPY's result, raising the error the server ended it with, if any."""
        pgconn = self.conn.pgconn
        get = pgconn.get_copy_data
        with selectors.DefaultSelector() as selector:
            selector.register(pgconn.socket, selectors.EVENT_READ)
            while True:
                size, data = get(1)
                if size > 0:
                    yield data[:-1]
                elif size == 0:  # no whole row received yet
                    selector.select()
                    pgconn.consume_input()
                else:
                    break
            error = None
            while True:
                while pgconn.is_busy():
                    selector.select()
                    pgconn.consume_input()
                result = pgconn.get_result()
                if result is None:
                    break
                if result.status != psycopg.pq.ExecStatus.COMMAND_OK and error is None:
                    error = pgerrors.error_from_result(result, encoding=self.conn.info.encoding)
            if error is not None:
                raise error

    # -- writing -------------------------------------------------------------

    def stage(self, table: Table, where: Callable[[int], str]) -> Stage:
        self._stages += 1
        name = q(f"aviary_stage_{self._stages}_{table.name}")
        self.execute(
            f"CREATE TEMP TABLE {name} (LIKE {q(table.name)}) ON COMMIT DROP"
        )
        self.execute(f"ALTER TABLE {name} ADD COLUMN _src bigint")
        return PostgresStage(self, table, name, where)

    def key_stage(self, stage: Stage) -> None:
        # A temporary table has no statistics until it is analyzed (autovacuum never sees it):
        # with them the planner hashes the stage for its joins, where its guesses from the
        # table's size could pick a nested loop over it.
        self.execute(f"ANALYZE {stage.name}")

    def plan(self, sql: str) -> list[str]:
        return [line for (line,) in self.execute(f"EXPLAIN {sql}")]

    def append_stage(self, table: Table, where: Callable[[int], str]) -> Stage:
        self._stages += 1
        name = q(f"aviary_keys_{self._stages}_{table.name}")
        keys = self.key_columns(table)
        columns = ", ".join([*(q(c) for c in keys), "NULL::bigint AS _src"])
        self.execute(
            f"CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {columns} FROM {q(table.name)} WITH NO DATA"
        )
        return PostgresAppend(self, table, name, where, keys)

    def _apply(self, stage: Stage, sql: str, deleting: bool = False) -> int:
        self.execute("SAVEPOINT aviary_apply")
        try:
            cursor = self.conn.execute(sql)
        except pgerrors.IntegrityError as e:
            self.execute("ROLLBACK TO SAVEPOINT aviary_apply")
            raise self._violation(stage, e) from None
        except psycopg.Error as e:
            self.execute("ROLLBACK TO SAVEPOINT aviary_apply")
            raise self.error(e) from None
        self.execute("RELEASE SAVEPOINT aviary_apply")
        return cursor.rowcount

    def _violation(self, stage: Stage, e: psycopg.Error) -> Exception:
        detail = e.diag.message_detail or ""
        message = f"{_first_line(e)} {detail}".strip()
        if isinstance(e, pgerrors.ForeignKeyViolation) and "still referenced" in detail:
            return self.still_referenced(stage, redact(detail))
        unique = None
        if isinstance(e, pgerrors.UniqueViolation) and e.diag.constraint_name:
            unique = self._index_columns(e.diag.constraint_name)
        return self.explain_violation(stage, redact(message), unique)

    def _index_columns(self, index_name: str) -> tuple[str, ...] | None:
        rows = self.execute(
            "SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            f" WHERE c.relname = {quote_literal(index_name)}"
        )
        return tuple(rows[0][0]) if rows and rows[0][0] else None

    def column_type_sql(self, column: Column) -> str:
        if column.kind is Kind.TEXT and column.max_length:
            return f"varchar({column.max_length})"
        if column.kind is Kind.INT and column.int_bits < 64:
            return "smallint" if column.int_bits <= 16 else "integer"
        return _TYPES[column.kind]


def _first_line(e: Exception) -> str:
    return redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
