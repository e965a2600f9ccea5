"""Restores and loads over a target that already holds many rows: linear in the rows.

A replace used to delete stale rows with an anti-join that scanned the whole stage once per
row of the table (20,000 rows over 20,000: 17 s; 200,000: half an hour).  Nothing here is
timed: each statement that applies a stage is held to a plan in which every row looks its
key up (an index search, or a hash of the stage), and a replace of 20,000 rows over 20,000
runs through unpack on both engines, where the old plan would take a quarter of a minute.
"""

import io
import pytest

from helpers import make_db, ok
from aviarytools import rows
from aviarytools.db import connect
from aviarytools.rowinput import RowSource

ROWS = 20_000


def attempts(first: int, count: int) -> bytes:
    return b"".join(
        b'{"id":"%08x-0000-4000-8000-%012x","ip_address":"198.51.100.%d","username":"u%d",'
        b'"success":true,"attempted_at":"2025-07-27T10:11:12.5Z","user_agent":"scale"}\n'
        % (n, n, n % 250, n) for n in range(first, first + count))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return make_db(str(tmp_path / "aviary.db"), populate=False)
    return make_db(request.getfixturevalue("pg_url"), populate=False)


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def repeated_scans(plan: list[str]) -> list[str]:
    """The steps of a plan (Database.plan) that read a whole table once per row of another:
    on SQLite a second SCAN, or one inside a subquery; on PostgreSQL a Seq Scan under a
    Nested Loop.  A plan without them grows linearly (give or take a sort)."""
    scans = [line for line in plan if line.lstrip().startswith("SCAN ") and "CONSTANT ROW" not in line]
    if len(scans) > 1 or any(indent(line) for line in scans):
        return scans
    found = []
    for i, line in enumerate(plan):
        if "Nested Loop" in line:
            below = plan[i + 1:]
            end = next((j for j, other in enumerate(below) if indent(other) <= indent(line)), len(below))
            found += [other for other in below[:end] if "Seq Scan" in other]
    return found


def staged(db, first: int, count: int):
    source = RowSource(io.BytesIO(attempts(first, count)))
    return rows.stage_rows(db, "login_attempts", source)[0]


def test_every_apply_statement_looks_keys_up(url):
    db = connect(url)
    try:
        rows.load(db, "login_attempts", RowSource(io.BytesIO(attempts(0, ROWS))))
        with db.transaction(commit=False):
            stage = staged(db, ROWS // 2, ROWS)  # half the table again, and as many new rows
            statements = [db.remove_stale_sql(stage, None), db.duplicates_sql(stage),
                          *(db.insert_sql(stage, mode) for mode in ("upsert", "skip"))]
            for sql in statements:
                plan = db.plan(sql)
                assert not repeated_scans(plan), "\n".join([sql, *plan])
            if db.dialect == "sqlite":  # the stage is searched by its key, not scanned
                assert any("SEARCH s USING" in line for line in db.plan(statements[0])), db.plan(statements[0])
            assert db.remove_stale(stage, None) == ROWS // 2
            assert db.insert(stage, "upsert") == ROWS // 2  # the new half (the other is unchanged)
            assert db.execute("SELECT count(*) FROM login_attempts")[0][0] == ROWS
    finally:
        db.close()


def test_load_table_over_many_rows(url):
    def load(first: int, *mode) -> int:
        ok("load-table", "login_attempts", "--db", url, *mode, input=attempts(first, ROWS))
        return ok("dump-table", "login_attempts", "--db", url).count(b"\n")

    assert load(0) == ROWS
    assert load(ROWS // 2, "--mode", "replace") == ROWS  # the first half goes
    assert load(0, "--mode", "upsert") == ROWS + ROWS // 2
    assert load(ROWS, "--mode", "skip") == 2 * ROWS


def test_replace_over_itself_and_merge(url, tmp_path):
    ok("load-table", "login_attempts", "--db", url, input=attempts(0, ROWS))
    archive = ok("pack", "--db", url, "--no-files")
    before = ok("dump-table", "login_attempts", "--db", url)
    ok("load-table", "login_attempts", "--db", url, "--mode", "append", input=attempts(ROWS, ROWS))
    storage = tmp_path / "documents"
    ok("unpack", "--db", url, "--storage", storage, input=archive)
    assert ok("dump-table", "login_attempts", "--db", url) == before
    ok("load-table", "login_attempts", "--db", url, "--mode", "append", input=attempts(ROWS, 10))
    ok("unpack", "--db", url, "--storage", storage, "--mode", "merge", input=archive)
    assert ok("dump-table", "login_attempts", "--db", url).count(b"\n") == ROWS + 10
