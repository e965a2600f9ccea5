"""Tables as an archive declares them: the source database's columns, keys and indexes.

Aviary adds columns with most releases; a tool that knows its tables only
from a built-in list (schema.py) loses whatever the next release adds.  So
`pack` records, in metadata.json's `aviarytools.schema`, each table it
writes as the source database declares it, and `unpack --create-schema`
creates a missing table from the union of the built-in table and that
declaration: a column this tool has never heard of then survives a
migration between engines with its values.

A column's default is recorded in a form both engines read (`portable`):
a quoted string, a number, true/false or CURRENT_TIMESTAMP, chosen by the
column's kind, so that a SQLite `DEFAULT 0` of a boolean becomes
PostgreSQL's `DEFAULT false`.  A default no rule covers (a function call, a
sequence) is recorded as the source wrote it, for the reader, and never
executed: SQL from an archive does not reach a target's DDL.
"""

from __future__ import annotations

import re

from . import timestamps
from .errors import ArchiveError
from .model import Column, ForeignKey, Kind, Table
from .query import quote_literal

_CAST = re.compile(r"^(.*?)::[a-z ]+(?:\(\d+\))?(?:\[\])?$", re.S)
_STRING = re.compile(r"'((?:[^']|'')*)'", re.S)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NOW = frozenset(("current_timestamp", "now()", "datetime('now')", "transaction_timestamp()",
                  "localtimestamp", "statement_timestamp()"))
_TRUE = frozenset(("true", "t", "1", "yes", "on"))
_FALSE = frozenset(("false", "f", "0", "no", "off"))


def _bare(sql: str) -> str:
    """`sql` without outer parentheses and PostgreSQL casts: `('x'::text)` -> `'x'`."""
    text = sql.strip()
    while True:
        if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
            text = text[1:-1].strip()
            continue
        cast = _CAST.match(text)
        if cast and (_STRING.fullmatch(cast[1].strip()) or _balanced(cast[1])):
            text = cast[1].strip()
            continue
        return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in _STRING.sub("", text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def portable(kind: Kind, sql: str | None) -> str | None:
    """The default `sql` (as either engine reports it) in a form both engines take,
    for a column of `kind`; None for no default, or for one no rule covers."""
    if sql is None:
        return None
    text = _bare(sql)
    if text.upper() == "NULL":
        return None
    string = _STRING.fullmatch(text)
    value = string[1].replace("''", "'") if string else text
    if kind in (Kind.TEXT, Kind.UUID):
        return quote_literal(value) if string or _NUMBER.fullmatch(text) else None
    if kind is Kind.BOOL:
        word = value.strip().lower()
        return "true" if word in _TRUE else "false" if word in _FALSE else None
    if kind in (Kind.INT, Kind.FLOAT):
        number = value.strip()
        if not _NUMBER.fullmatch(number) or (kind is Kind.INT and not re.fullmatch(r"[+-]?\d+", number)):
            return None
        return number
    if kind is Kind.TIMESTAMP:
        if not string and text.lower() in _NOW:
            return "CURRENT_TIMESTAMP"
        if string:
            try:
                return quote_literal(timestamps.to_rfc3339(timestamps.parse(value)))
            except ValueError:
                return None
    return None


# -- JSON ------------------------------------------------------------------------


def table_to_json(table: Table, dialect: str) -> dict:
    """The declaration of `table` for metadata.json (`dialect`: the source's)."""
    return {
        "columns": [_column_to_json(c, dialect) for c in table.columns],
        "primary_key": list(table.primary_key),
        "unique": [list(u) for u in table.unique],
        "indexes": [list(i) for i in table.indexes],
        "foreign_keys": [{"columns": list(fk.columns), "parent": fk.parent,
                          "parent_columns": list(fk.parent_columns),
                          "on_delete": "cascade" if fk.on_delete_cascade else "no action"}
                         for fk in table.foreign_keys],
    }


def _column_to_json(column: Column, dialect: str) -> dict:
    found = {"name": column.name, "kind": column.kind.value, "not_null": not column.nullable}
    if column.declared:
        found["type"] = column.declared
    if column.max_length is not None:
        found["size"] = column.max_length
    if column.kind is Kind.INT and column.int_bits != 64:
        found["bits"] = column.int_bits
    default = portable(column.kind, column.default_sql)
    if default is not None:
        found["default"] = default
    elif column.default_sql is not None and column.default_sql.strip().upper() != "NULL":
        found["default_sql"] = {"dialect": dialect, "sql": column.default_sql}
    return found


def tables_from_json(value, where: str) -> dict[str, Table]:
    """The declarations of metadata.json's `aviarytools.schema` (`where` names it);
    ArchiveError, naming the table, for anything malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArchiveError(f"{where}: expected an object of tables")
    tables = {}
    for name, declaration in value.items():
        try:
            tables[name] = _table_from_json(name, declaration)
        except (KeyError, TypeError, ValueError) as e:
            raise ArchiveError(f"{where}.{name}: malformed declaration ({type(e).__name__}: {e})") from None
    return tables


def _table_from_json(name: str, value: dict) -> Table:
    columns = tuple(_column_from_json(c) for c in value["columns"])
    names = {c.name for c in columns}
    if not columns or len(names) != len(columns):
        raise ValueError("no columns, or a column twice")

    def column_sets(key: str) -> tuple[tuple[str, ...], ...]:
        sets = tuple(tuple(_names(s)) for s in value.get(key, ()))
        if any(not s or not set(s) <= names for s in sets):
            raise ValueError(f"{key} names a column the table does not have")
        return sets

    foreign = tuple(
        ForeignKey(tuple(_names(fk["columns"])), _name(fk["parent"]), tuple(_names(fk["parent_columns"])),
                   fk.get("on_delete") == "cascade")
        for fk in value.get("foreign_keys", ()))
    primary_key = tuple(_names(value.get("primary_key", ())))
    if not set(primary_key) <= names or any(not set(fk.columns) <= names for fk in foreign):
        raise ValueError("a key names a column the table does not have")
    return Table(name, columns, primary_key, foreign, column_sets("unique"), column_sets("indexes"))


def _column_from_json(value: dict) -> Column:
    kind = Kind(value["kind"])
    default = value.get("default")
    if default is not None and portable(kind, default) != default:
        raise ValueError(f"default {default!r} of {value['name']!r} is not a portable default")
    raw = value.get("default_sql")
    return Column(
        _name(value["name"]), kind, nullable=not value.get("not_null", False),
        max_length=_positive(value.get("size")), int_bits=int(value.get("bits", 64)),
        default_sql=default, declared=value.get("type"),
        source_default=f"{raw['sql']} ({raw['dialect']})" if raw else None,
    )


def _name(value) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"bad name {value!r}")
    return value


def _names(values) -> list[str]:
    if not isinstance(values, list):
        raise TypeError("expected a list of names")
    return [_name(v) for v in values]


def _positive(value) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value <= 0:
        raise ValueError(f"bad size {value!r}")
    return value


# -- the union with the built-in schema -------------------------------------------


def union(builtin: Table | None, archived: Table | None) -> Table:
    """The table to create: the archive's columns in the archive's order (the built-in
    definition where it has one: it is what this engine's Aviary creates), then the
    built-in columns the archive lacks; keys and indexes of both."""
    if archived is None or builtin is None:
        return builtin or archived
    known = {c.name: c for c in builtin.columns}
    columns = tuple(known.get(c.name, c) for c in archived.columns)
    columns += tuple(c for c in builtin.columns if c.name not in {a.name for a in archived.columns})
    names = {c.name for c in columns}

    def merged(ours, theirs):
        return tuple(dict.fromkeys(s for s in (*ours, *theirs) if set(s) <= names))

    foreign = {fk.columns: fk for fk in (*archived.foreign_keys, *builtin.foreign_keys)}
    return Table(builtin.name, columns, builtin.primary_key or archived.primary_key,
                 tuple(foreign.values()), merged(builtin.unique, archived.unique),
                 merged(builtin.indexes, archived.indexes))


def extra_columns(builtin: Table | None, archived: Table) -> list[str]:
    """Columns the archive declares that the built-in table does not know."""
    return [c.name for c in archived.columns if builtin is None or not builtin.has_column(c.name)]
