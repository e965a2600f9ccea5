"""The database checks of doctor: integrity, orphan rows, duplicates, expiry.

Run inside one snapshot.  References and unique sets are the union of what
the live tables declare and what Aviary's models (schema.py) say, so an old
or hand-made database that lacks a foreign key or a unique index is checked
all the same.
"""

import json
from typing import Iterator

from .. import schema, timestamps
from ..db import Database
from ..model import ForeignKey, Table
from ..query import Query, quote_ident as q
from ..findings import LIMIT, Capped, Finding, info, problem

# Go's zero time (year 1, or year 0 once written with a positive offset) means "never set".
_UNSET_BEFORE_NS = timestamps.parse("0002-01-01T00:00:00Z")


def check_database(db: Database, now_ns: int) -> Iterator[Finding]:
    """Every database problem found, then information about expired credentials."""
    names = db.table_names()
    if db.dialect == "sqlite":
        yield from _sqlite_integrity(db)
    for name in names:
        table = db.table(name)
        yield from _orphans(db, table, set(names))
        yield from _duplicates(db, table)
    yield from _expired(db, set(names), now_ns)


# -- SQLite's own checks ------------------------------------------------------


def _sqlite_integrity(db: Database) -> Iterator[Finding]:
    found = Capped("integrity")
    for (message,) in db.execute("PRAGMA main.integrity_check"):
        if message != "ok":
            finding = found.offer(f"PRAGMA integrity_check: {message}")
            if finding:
                yield finding
    rest = found.rest()
    if rest:
        yield rest
    # Single-column foreign keys are checked below on both engines, naming the
    # row and the missing user; PRAGMA foreign_key_check adds the others.
    single: dict[tuple[str, int], bool] = {}
    capped: dict[str, Capped] = {}
    for table, rowid, parent, fk_id in db.execute("PRAGMA main.foreign_key_check"):
        if (table, fk_id) not in single:
            columns = [r for r in db.execute(f"PRAGMA main.foreign_key_list({q(table)})") if r[0] == fk_id]
            single[(table, fk_id)] = len(columns) == 1
        if single[(table, fk_id)]:
            continue
        cap = capped.setdefault(table, Capped("foreign-keys", table))
        finding = cap.offer(f"row {rowid}: no matching row in {parent} (PRAGMA foreign_key_check)")
        if finding:
            yield finding
    for cap in capped.values():
        rest = cap.rest()
        if rest:
            yield rest


# -- rows naming no parent ------------------------------------------------------


def references(table: Table) -> dict[str, tuple[str, str]]:
    """column -> (parent table, parent column): declared foreign keys and Aviary's."""
    refs: dict[str, tuple[str, str]] = {}
    declared = [fk for fk in table.foreign_keys if len(fk.columns) == 1]
    model = schema.BY_NAME.get(table.name)
    modelled = [fk for fk in (model.foreign_keys if model else ()) if table.has_column(fk.columns[0])]
    for fk in declared + modelled:
        refs.setdefault(fk.columns[0], (fk.parent, fk.parent_columns[0]))
    return refs


def _orphans(db: Database, table: Table, names: set[str]) -> Iterator[Finding]:
    key = table.primary_key
    for column, (parent, parent_column) in sorted(references(table).items()):
        if parent not in names or not db.table(parent).has_column(parent_column):
            yield problem("orphan-rows", f"column {column} refers to {parent}.{parent_column},"
                          f" which does not exist", table.name)
            continue
        fk = ForeignKey((column,), parent, (parent_column,))
        rows, total = db.orphans(table, fk, LIMIT)
        for row in rows:
            where = ", ".join(f"{k}={v}" for k, v in zip(key, row)) or "a row"
            yield problem("orphan-rows", f"{where}: {column} {row[-1]} names no {parent} row{_packed(table, fk)}",
                          table.name)
        if total > len(rows):
            yield problem("orphan-rows", f"... and {total - len(rows)} more rows whose {column} names no"
                          f" {parent} row (only the first {LIMIT} are listed)", table.name)


def _packed(table: Table, fk: ForeignKey) -> str:
    """What pack does with such a row (schema.user_references), for the operator to know."""
    for packed in schema.user_references(table):
        if packed.columns == fk.columns and packed.parent == fk.parent:
            return ": pack leaves the row out" if packed.on_delete_cascade else f": pack writes its {fk.columns[0]} as null"
    return ""


# -- duplicates in unique columns --------------------------------------------


def unique_sets(table: Table) -> list[tuple[str, ...]]:
    """Column sets that must be unique: declared, and Aviary's (an old database may lack the index)."""
    model = schema.BY_NAME.get(table.name)
    sets = list(table.unique)
    if model is not None:
        sets += list(model.unique)
        if model.primary_key and tuple(model.primary_key) != tuple(table.primary_key):
            sets.append(tuple(model.primary_key))  # a key the live table does not enforce
    wanted = []
    for columns in sets:
        if all(table.has_column(c) for c in columns) and tuple(columns) not in wanted:
            wanted.append(tuple(columns))
    return wanted


def _duplicates(db: Database, table: Table) -> Iterator[Finding]:
    for columns in unique_sets(table):
        shown = ", ".join(db.text_sql(c) for c in columns)
        grouped = ", ".join(q(c) for c in columns)
        not_null = " AND ".join(f"{q(c)} IS NOT NULL" for c in columns)
        rows = db.execute(
            f"SELECT {shown}, count(*) FROM {q(table.name)} WHERE {not_null} GROUP BY {grouped}"
            f" HAVING count(*) > 1 ORDER BY count(*) DESC, {grouped} LIMIT {LIMIT + 1}"
        )
        for row in rows[:LIMIT]:
            values = ", ".join(f"{c}={json.dumps(v, ensure_ascii=False)}" for c, v in zip(columns, row))
            yield problem("duplicates", f"{row[-1]} rows have {values} (must be unique)", table.name)
        if len(rows) > LIMIT:
            yield problem("duplicates", f"... and more duplicated values of ({', '.join(columns)})"
                          f" (only the first {LIMIT} are listed)", table.name)


# -- information ---------------------------------------------------------------


def _expired(db: Database, names: set[str], now_ns: int) -> Iterator[Finding]:
    for name, what in (("user_sessions", "session"), ("api_keys", "API key")):
        if name not in names or not db.table(name).has_column("expires_at"):
            continue
        total = expired = 0
        for line in db.rows(db.table(name), Query(columns=("expires_at",))):
            total += 1
            value = json.loads(bytes(line))["expires_at"]
            if value is None:
                continue
            ns = timestamps.parse(value)
            if _UNSET_BEFORE_NS <= ns < now_ns:
                expired += 1
        if expired:
            yield info("expired", f"{expired} of {total} {what}s have expired", name)


def user_names(db: Database) -> dict[str, str]:
    """Every user: id -> username (the id alone where there is no username column)."""
    if "users" not in db.table_names():
        return {}
    table = db.table("users")
    columns = ("id", "username") if table.has_column("username") else ("id",)
    users = {}
    for line in db.rows(table, Query(columns=columns)):
        row = json.loads(bytes(line))
        users[row["id"]] = row.get("username") or row["id"]
    return users


def document_rows(db: Database) -> dict[str, tuple[int, int]]:
    """user id -> (documents rows, sum of their file_size)."""
    if "documents" not in db.table_names():
        return {}
    table = db.table("documents")
    if not table.has_column("user_id"):
        return {}
    size = f"coalesce(sum({q('file_size')}), 0)" if table.has_column("file_size") else "0"
    rows = db.execute(f"SELECT {db.text_sql('user_id')}, count(*), {size}"
                      f" FROM {q('documents')} GROUP BY {q('user_id')}")
    return {str(user).lower(): (count, int(total or 0)) for user, count, total in rows if user is not None}
