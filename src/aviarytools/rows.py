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
from .values import coercer, describe

Warn = Callable[[str], None]
# Told of every key of a row that is not a column: (where, key, value).  Without one,
# such keys are dropped with a warning (or refused with strict), as load-table does.
UnknownKey = Callable[[str, str, object], None]


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


def _refuse_null():
    raise ValueError("cannot be null")


class RowConverter:
    """Turns input rows (dicts) into lists of values for one table: internal
    values, or after `use(stage)` the stage's own form (Stage.field)."""

    def __init__(self, db: Database, table: Table, where: Callable[[int], str], *,
                 strict: bool = False, warn: Warn = _ignore, on_unknown: "UnknownKey | None" = None):
        self.db, self.table, self.where = db, table, where
        self.strict, self.warn, self.on_unknown = strict, warn, on_unknown
        self.known = frozenset(table.column_names)
        self.warned: set[str] = set()
        # Evaluated now: once a COPY is under way the connection runs nothing else.
        self.defaults = {c.name: db.default(table, c) for c in table.columns}
        self.use(None)

    def use(self, stage: Stage | None) -> None:
        """Give values in `stage`'s form (Stage.field, Stage.null); None: internal values."""
        self._null = None if stage is None else stage.null
        self._fields = [
            (c.name, self.defaults[c.name], coercer(c) if stage is None else stage.field(c))
            for c in self.table.columns
        ]
        self._convert = self._compile()

    def _compile(self) -> Callable[[dict], list]:
        """One function for the whole row, the columns spelled out: on a
        million rows, the loop over columns it saves is a good part of the cost.
        Any ValueError (a bad value, a NULL where none may be) sends the row
        to `_checked`, which says which column and why."""
        bound: dict[str, object] = {"null": self._null, "refuse": _refuse_null, "str": str}
        items = []
        for i, ((name, default, coerce), column) in enumerate(zip(self._fields, self.table.columns)):
            bound[f"f{i}"], bound[f"d{i}"] = coerce, default
            value = f"f{i}(v)"
            if getattr(coerce, "plain", None) is not None:  # strings that are their own value
                bound[f"p{i}"] = coerce.plain
                value = f"v if type(v) is str and p{i}(v) else {value}"
            if column.nullable:
                items.append(f"null if (v := get({name!r}, d{i})) is None else {value}")
            else:
                items.append(f"refuse() if (v := get({name!r}, d{i})) is None else {value}")
        source = (f"def convert(row, {', '.join(f'{k}={k}' for k in bound)}):\n"
                  f"    get = row.get\n"
                  f"    return [{', '.join(items)}]\n")
        namespace = dict(bound)
        exec(source, namespace)
        return namespace["convert"]

    def __call__(self, position: int, row: object) -> list:
        if type(row) is not dict:
            raise InputError(f"{self.where(position)}: expected a JSON object, got {describe(row)}")
        if not row.keys() <= self.known:
            return self._with_unknown(position, row)
        try:
            return self._convert(row)
        except ValueError:
            return self._checked(position, row)

    def _with_unknown(self, position: int, row: dict) -> list:
        """A row with keys the table lacks: converted first, so that a row loaded into the
        wrong table fails alone, and only then the keys dropped, in one warning."""
        dropped = self._unknown(position, row)
        try:
            values = self._convert(row)
        except ValueError:
            values = self._checked(position, row)
        if dropped:
            self.warned.update(dropped)
            names = ", ".join(repr(key) for key in dropped)
            self.warn(f"{self.where(position)}: column {names} is not in table {self.table.name}: dropped"
                      if len(dropped) == 1 else
                      f"{self.where(position)}: columns {names} are not in table {self.table.name}: dropped")
        return values

    def _checked(self, position: int, row: dict) -> list:
        """The row again, column by column, to say which column is wrong and why."""
        values = []
        name = ""
        try:
            for (name, default, field), column in zip(self._fields, self.table.columns):
                value = row[name] if name in row else default
                if value is None:
                    if not column.nullable:
                        raise ValueError("cannot be null" if name in row else "missing, and it cannot be null")
                    values.append(self._null)
                else:
                    values.append(field(value))
        except ValueError as e:
            raise InputError(f"{self.where(position)}, column {name}: {e}") from None
        return values

    def _unknown(self, position: int, row: dict) -> list[str]:
        """The keys of `row` the table lacks and no warning named yet, in the row's order
        (on_unknown or --strict take them instead)."""
        dropped = []
        for key in row:
            if key in self.known:
                continue
            if self.on_unknown is not None:
                self.on_unknown(self.where(position), key, row[key])
                continue
            if self.strict:
                raise InputError(
                    f"{self.where(position)}, column {key}: no such column in table {self.table.name}"
                )
            if key not in self.warned:
                dropped.append(key)
        return dropped


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
               warn: Warn = _ignore, rows: Iterable | None = None,
               append: bool = False, on_unknown: UnknownKey | None = None) -> tuple[Stage, LoadResult]:
    """Coerce every row of `source` by the live table's columns and stage it.

    `append` (inside a transaction, for --mode append without --user): where
    the database can, the rows go straight into the table instead
    (`stage.applied`), errors still naming their input line."""
    table = db.table(table_name)
    convert = RowConverter(db, table, source.where, strict=strict, warn=warn, on_unknown=on_unknown)
    stage = (append and db.append_stage(table, source.where)) or db.stage(table, source.where)
    convert.use(stage)
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
    if stage.applied:
        result.written = stage.rows
        return result
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
        stage, result = stage_rows(db, table_name, source, user_ids=user_ids, strict=strict, warn=warn,
                                   append=mode == "append" and user_ids is None)
        apply_stage(db, stage, mode, result, user_ids)
    note = rounding_note({f"{table_name}.{column}": n for column, n in result.rounded.items()})
    if note:
        warn(note)
    return result


def rounding_note(counts: dict[str, int]) -> str | None:
    """The one warning for every timestamp a PostgreSQL target rounded, counted per table
    (a restore) or per column (a load): `name count` pairs in name order."""
    if not counts:
        return None
    listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return (f"{sum(counts.values())} timestamp(s) rounded from nanoseconds to microseconds"
            f" (PostgreSQL keeps microseconds): {listed}")
