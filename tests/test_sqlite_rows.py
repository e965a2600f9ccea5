"""SQLite builds each canonical line in SQL, the common forms first (issue 22): every
other spelling gives what it gave before, whole tables come out in key order, and a
database in UTF-16 dumps the same bytes as one in UTF-8."""

import sqlite3

import pytest

from aviarytools.db import connect
from aviarytools.db.sqlite import _boolean_sql
from aviarytools.query import EVERYTHING
from helpers import DATA_TABLES, dump_all, make_db

BOOLEANS = [0, 1, 2, -1, 0.0, 1.0, 0.5, "0", "1", "false", "true", "f", "t", "FALSE", "TRUE", "no", "", None]


def _before_issue_22(c: str) -> str:
    """The boolean SQL of every row before the common case was taken first: the oracle."""
    return (f"CASE WHEN {c} IS NULL THEN NULL WHEN {c} IN (0, '0', 'false', 'f', 'FALSE')"
            f" THEN json('false') ELSE json('true') END")


@pytest.mark.parametrize("declared", ["numeric", "boolean", "text", ""])
def test_every_boolean_spelling_reads_as_before(declared):
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE TABLE t (c {declared})")
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in BOOLEANS])
    got = conn.execute(f"SELECT json_object('c', {_boolean_sql('c')}), json_object('c', {_before_issue_22('c')})"
                       f" FROM t ORDER BY rowid").fetchall()
    for value, (new, old) in zip(BOOLEANS, got):
        assert new == old, value
    assert [line for line, _ in got[:2]] == ['{"c":false}', '{"c":true}']


def test_a_whole_table_is_sorted_by_key_not_walked_through_a_uuid_index(tmp_path):
    db = connect(make_db(str(tmp_path / "a.db"), users=4))
    try:
        db.execute("CREATE TABLE counted (n INTEGER PRIMARY KEY, v text)")
        db.execute("CREATE TABLE keyed (k text PRIMARY KEY, v text) WITHOUT ROWID")
        assert db._key_order_looks_up_rows(db.table("login_attempts"))
        assert not db._key_order_looks_up_rows(db.table("counted"))  # the table is in key order
        assert not db._key_order_looks_up_rows(db.table("keyed"))
        lines = list(db.rows(db.table("login_attempts"), EVERYTHING))
        ids = [line.split(b'"', 4)[3] for line in lines]
        assert ids == sorted(ids) and len(ids) > 4
    finally:
        db.close()


def test_a_utf16_database_dumps_the_bytes_of_a_utf8_one(tmp_path):
    utf8 = make_db(str(tmp_path / "a.db"), users=4, nanos=False)
    utf16 = str(tmp_path / "b.db")
    with sqlite3.connect(utf16) as conn:
        conn.execute("PRAGMA encoding = 'UTF-16le'")
        conn.execute("CREATE TABLE t (c)")
        conn.execute("DROP TABLE t")
    make_db(utf16, populate=False)
    with sqlite3.connect(utf8) as source, sqlite3.connect(utf16) as conn:
        assert conn.execute("PRAGMA encoding").fetchone()[0] == "UTF-16le"
        conn.execute("PRAGMA foreign_keys = OFF")
        for table in DATA_TABLES:
            rows = source.execute(f"SELECT * FROM {table}").fetchall()
            if rows:
                conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    source.close()
    assert dump_all(utf16) == dump_all(utf8)
