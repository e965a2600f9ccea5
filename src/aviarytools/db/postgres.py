"""PostgreSQL through psycopg 3: rows leave and enter through COPY.

Dumps run `COPY (SELECT row_to_json(...)) TO STDOUT` with the canonical
value expressions below, in CSV format whose quote and delimiter characters
(\\x01, \\x02) can never occur unescaped in JSON text: the server's output is
then the canonical line itself and passes through untouched.
"""

import re
from typing import Callable, Iterator

import psycopg
from psycopg import errors as pgerrors

from .. import timestamps
from ..errors import DatabaseError, InputError, redact
from ..model import Column, ForeignKey, Kind, Table
from ..query import Query, quote_ident as q, quote_literal
from ..values import reencode_floats
from .base import Database, Stage, known_kind

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


class PostgresStage(Stage):
    FLUSH_BYTES = 1 << 20

    def __init__(self, db, table, name, where):
        super().__init__(db, table, name, where)
        names = ", ".join(q(c.name) for c in table.columns)
        self._copy_cm = db.conn.cursor().copy(f"COPY {name} ({names}, _src) FROM STDIN")
        self._copy = self._copy_cm.__enter__()
        self._convert = [_TO_COPY[c.kind] for c in table.columns]
        self._timestamps = [i for i, c in enumerate(table.columns) if c.kind is Kind.TIMESTAMP]
        self.rounded: dict[str, int] = {}
        self._buffer: list[str] = []
        self._size = 0

    def add(self, src: int, values: tuple) -> None:
        for i in self._timestamps:
            v = values[i]
            if v is not None and v % 1000:
                name = self.table.columns[i].name
                self.rounded[name] = self.rounded.get(name, 0) + 1
        line = "\t".join(
            "\\N" if v is None else f(v) for f, v in zip(self._convert, values)
        ) + f"\t{src}\n"
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

    def abort(self, error: BaseException) -> None:
        # Ends the COPY (CopyFail) so the connection can roll back.
        try:
            self._copy_cm.__exit__(type(error), error, error.__traceback__)
        except BaseException:
            pass


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(self, url: str):
        super().__init__(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=15)
            self.conn.execute("SET extra_float_digits = 1")
            self.conn.execute("SET client_encoding = 'UTF8'")
            self.conn.execute("SET TimeZone = 'UTC'")
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
            " a.atttypmod FROM pg_attribute a"
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
        for col, typname, notnull, default, typmod in rows:
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
        unique = self.execute(
            "SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))"
            " FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey)"
            f" WHERE i.indrelid = {relation}::regclass AND i.indisunique AND NOT i.indisprimary"
            " GROUP BY i.indexrelid ORDER BY 1"
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
            tuple(tuple(r[0]) for r in unique),
        )

    # -- reading -------------------------------------------------------------

    def json_value_sql(self, table: Table, column: Column) -> str:
        c = q(column.name)
        typname = self._pg_types.get((table.name, column.name), "")
        if column.kind is Kind.TIMESTAMP:
            utc = c if typname in ("timestamp", "date") else f"{c} AT TIME ZONE 'UTC'"
            return (
                f"rtrim(rtrim(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.') || 'Z'"
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

    def rows(self, table: Table, query: Query) -> Iterator[bytes]:
        shown = self.selected(table, query)
        exprs = ", ".join(f"{self.value_sql(table, c, query)} AS {q(c.name)}" for c in shown.columns)
        inner = f"SELECT {exprs}" + self.from_where_sql(table, query) + self.order_limit_sql(table, query)
        sql = f"COPY (SELECT row_to_json(r) FROM ({inner}) AS r) TO STDOUT {_COPY_OUT}"
        floats = any(c.kind is Kind.FLOAT for c in shown.columns)
        try:
            with self.conn.cursor().copy(sql) as copy:
                try:
                    for data in copy:
                        yield reencode_floats(data[:-1]) if floats else data[:-1]
                except BaseException:
                    # The reader went away (| head) or we were stopped: without a
                    # cancel, leaving the COPY would first drain all of its rows.
                    self.conn.cancel_safe()
                    raise
        except psycopg.Error as e:
            raise self.error(e) from None

    # -- writing -------------------------------------------------------------

    def stage(self, table: Table, where: Callable[[int], str]) -> Stage:
        self._stages += 1
        name = q(f"aviary_stage_{self._stages}_{table.name}")
        self.execute(
            f"CREATE TEMP TABLE {name} (LIKE {q(table.name)}) ON COMMIT DROP"
        )
        self.execute(f"ALTER TABLE {name} ADD COLUMN _src bigint")
        return PostgresStage(self, table, name, where)

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
        return _TYPES[column.kind]


def _first_line(e: Exception) -> str:
    return redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
