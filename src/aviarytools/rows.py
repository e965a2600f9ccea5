"""Table streams: canonical rows out of a database, JSON rows into one.

`dump` yields canonical JSON lines; `stage_rows` coerces input rows by the
target columns and stages them; `load` is one transaction around staging and
applying.  `dump-table`/`load-table` print and read these streams; `pack` and
`unpack` compose the very same functions for many tables at once.
"""

from contextlib import closing
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator

from . import schema
from .db import Database, Stage
from .db.base import check_mode
from .errors import InputError
from .model import Table
from .query import EVERYTHING, Query
from .rowinput import RowSource
from .values import _COERCE, describe

Warn = Callable[[str], None]


def _ignore(message: str) -> None:
    pass


def dump(db: Database, table_name: str, query: Query = EVERYTHING) -> Iterator[bytes]:
    """Canonical JSON lines (bytes, no newline) of a table, in primary-key order."""
    return db.rows(db.table(table_name), query)


def write_lines(lines: Iterable[bytes], out: BinaryIO, *, flush_bytes: int = 1 << 18) -> int:
    """Write each line plus a newline to `out` in large writes; returns the count."""
    buffer = bytearray()
    count = 0
    # Closed on any error (a reader gone away): a database stream must end its
    # query before the connection can do anything else.
    with closing(iter(lines)) as lines:
        for line in lines:
            buffer += line
            buffer += b"\n"
            count += 1
            if len(buffer) >= flush_bytes:
                out.write(buffer)
                buffer.clear()
    out.write(buffer)
    out.flush()
    return count


class RowConverter:
    """Turns input rows (dicts) into tuples of internal values for one table."""

    def __init__(self, db: Database, table: Table, where: Callable[[int], str], *,
                 strict: bool = False, warn: Warn = _ignore):
        self.db, self.table, self.where = db, table, where
        self.strict, self.warn = strict, warn
        self.known = frozenset(table.column_names)
        self.warned: set[str] = set()
        self.columns = [(c.name, c, _COERCE[c.kind]) for c in table.columns]
        # Evaluated now: once a COPY is under way the connection runs nothing else.
        self.defaults = {c.name: db.default(table, c) for c in table.columns}

    def __call__(self, position: int, row: object) -> tuple:
        if type(row) is not dict:
            raise InputError(f"{self.where(position)}: expected a JSON object, got {describe(row)}")
        if not row.keys() <= self.known:
            self._unknown(position, row)
        values = []
        name = ""
        try:
            for name, column, coerce in self.columns:
                value = row[name] if name in row else self.defaults[name]
                if value is None:
                    if not column.nullable:
                        raise ValueError("cannot be null" if name in row else "missing, and it cannot be null")
                    values.append(None)
                else:
                    values.append(coerce(value, column))
        except ValueError as e:
            raise InputError(f"{self.where(position)}, column {name}: {e}") from None
        return tuple(values)

    def _unknown(self, position: int, row: dict) -> None:
        for key in row.keys() - self.known:
            if self.strict:
                raise InputError(
                    f"{self.where(position)}, column {key}: no such column in table {self.table.name}"
                )
            if key not in self.warned:
                self.warned.add(key)
                self.warn(f"{self.where(position)}: column {key!r} is not in table {self.table.name}: dropped")


@dataclass
class LoadResult:
    table: str
    staged: int = 0
    written: int = 0
    removed: int = 0
    skipped_users: int = 0
    rounded: dict[str, int] = field(default_factory=dict)


def stage_rows(db: Database, table_name: str, source: RowSource, *,
               user_ids: tuple[str, ...] | None = None, strict: bool = False,
               warn: Warn = _ignore, rows: Iterable | None = None) -> tuple[Stage, LoadResult]:
    """Coerce every row of `source` by the live table's columns and stage it."""
    table = db.table(table_name)
    convert = RowConverter(db, table, source.where, strict=strict, warn=warn)
    stage = db.stage(table, source.where)
    result = LoadResult(table_name)
    owner = _owner_index(table, user_ids)
    wanted = frozenset(user_ids or ())
    present: set[str] = set()
    last_keys = None
    try:
        for position, row in (source if rows is None else rows):
            values = convert(position, row)
            if row.keys() != last_keys:
                last_keys = row.keys()
                present.update(last_keys)
            if owner is not None and values[owner] not in wanted:
                result.skipped_users += 1
                continue
            stage.add(position, values)
    except BaseException as error:
        stage.abort(error)
        raise
    stage.finish()
    stage.present = present & set(table.column_names)
    result.staged = stage.rows
    result.rounded = dict(getattr(stage, "rounded", {}))
    return stage, result


def _owner_index(table: Table, user_ids) -> int | None:
    if user_ids is None:
        return None
    column = schema.user_column(table.name)
    if column is None or not table.has_column(column):
        raise InputError(f"table {table.name} does not belong to users: --user does not apply")
    return table.column_names.index(column)


def apply_stage(db: Database, stage: Stage, mode: str, result: LoadResult,
                user_ids: tuple[str, ...] | None = None) -> LoadResult:
    """Apply staged rows: replace first removes rows missing from the input."""
    if mode == "replace":
        result.removed = db.remove_stale(stage, user_ids)
    result.written = db.insert(stage, mode)
    return result


def load(db: Database, table_name: str, source: RowSource, *, mode: str = "append",
         user_ids: tuple[str, ...] | None = None, strict: bool = False,
         warn: Warn = _ignore) -> LoadResult:
    """Load every row of `source` into a table in one transaction, or nothing."""
    check_mode(mode)
    with db.transaction():
        stage, result = stage_rows(db, table_name, source, user_ids=user_ids, strict=strict, warn=warn)
        apply_stage(db, stage, mode, result, user_ids)
    for column, count in result.rounded.items():
        warn(
            f"{table_name}.{column}: {count} timestamp(s) rounded from nanoseconds to"
            f" microseconds (PostgreSQL keeps microseconds)"
        )
    return result
