"""Bad input: one clear line on stderr, exit 1, and the table as it was."""

import io
import json
from urllib.parse import quote

import pytest

from aviarytools import rows
from aviarytools.db import connect
from aviarytools.errors import InputError
from aviarytools.rowinput import RowSource
from helpers import aviary, make_db, ndjson, ok, one_line_error

GOOD = {"key": "a", "value": "1"}
NO_USER = "00000000-0000-4000-8000-000000000009"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = str(tmp_path / "a.db")
    make_db(url, populate=False)
    ok("load-table", "system_settings", "--db", url, input=ndjson(GOOD))
    return url


CASES = {
    "invalid JSON": (b'{"key": "b", "value": "2"}\n{"key": "c", "value": \n', "line 2: invalid JSON"),
    "wrong type": (ndjson({"key": "b", "value": "2"}, {"key": "c", "updated_at": 12}), "line 2, column updated_at: expected a timestamp"),
    "not an object": (b'{"key": "b"}\n[1, 2]\n', "line 2: expected a JSON object"),
    "bad uuid": (ndjson({"key": "b", "updated_by": "nobody"}), "line 1, column updated_by: expected a uuid"),
    "NaN": (b'{"key": "b", "value": NaN}\n', "line 1: NaN is not valid JSON"),
    "missing key column": (ndjson({"value": "x"}), "line 1, column key: missing"),
    "10 MB string": (ndjson({"key": "b", "value": "x" * 10_000_000}), "line 1, column value: string of 10000000 bytes"),
    "key conflict": (ndjson({"key": "b"}, {"key": "a", "value": "dup"}), "line 2: key key=a already exists"),
    "duplicate in input": (ndjson({"key": "z"}, {"key": "z"}), "line 2: duplicate key key=z (also on line 1)"),
    "after blank lines": (b"\n\n" + ndjson({"key": 5}), "line 3, column key: expected a string"),
    "no such parent": (ndjson({"key": "b", "updated_by": "00000000-0000-4000-8000-000000000009"}),
                       "line 1, column updated_by: no users row has id 00000000-0000-4000-8000-000000000009"),
    "invalid UTF-8": (b'{"key": "\xff"}\n', "line 1: invalid UTF-8"),
    "array item": (b'[{"key": "b"}, {"key": 5}]', "item 2, column key: expected a string"),
    "broken array": (b'[{"key": "b"}, {"key": ', "item 2: invalid JSON"),
    "deep nesting": (b'{"key": ' + b"[" * 10000 + b"]" * 10000 + b"}\n", "line 1"),
    # --mode append writes straight into the table: the database's verdict
    # still names the input line, past blank lines and in arrays.
    "key conflict after blank lines": (b"\n" + ndjson({"key": "b"}) + b"\n \n" + ndjson({"key": "a"}),
                                       "line 5: key key=a already exists in system_settings"),
    "key conflict in an array": (b'[{"key": "b"}, {"key": "c"}, {"key": "a"}]',
                                 "item 3: key key=a already exists in system_settings"),
    "duplicate in an array": (b'[{"key": "y"}, {"key": "x"}, {"key": "y"}]',
                              "item 3: duplicate key key=y (also on item 1)"),
    "duplicate after blank lines": (ndjson({"key": "y"}) + b"\n\n" + ndjson({"key": "x"}, {"key": "y"}),
                                    "line 5: duplicate key key=y (also on line 1)"),
    "no such parent after blank lines": (b"\n\n" + ndjson({"key": "b"}, {"key": "c", "updated_by": NO_USER}),
                                         f"line 4, column updated_by: no users row has id {NO_USER}"),
    "no such parent in an array": (f'[{{"key": "b"}}, {{"key": "c", "updated_by": "{NO_USER}"}}]'.encode(),
                                   f"item 2, column updated_by: no users row has id {NO_USER}"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_rows_commit_nothing(url, case):
    data, message = CASES[case]
    before = ok("dump-table", "system_settings", "--db", url)
    line = one_line_error(aviary("load-table", "system_settings", "--db", url, input=data))
    assert line.startswith("aviary load-table: ")
    assert message in line
    assert ok("dump-table", "system_settings", "--db", url) == before


def test_unknown_columns_warn_or_fail_with_strict(url):
    data = ndjson({"key": "b", "colour": "red"}, {"key": "c", "colour": "blue"})
    strict = aviary("load-table", "system_settings", "--db", url, "--strict", input=data)
    assert "line 1, column colour: no such column in table system_settings" in one_line_error(strict)
    lenient = aviary("load-table", "system_settings", "--db", url, input=data)
    assert lenient.returncode == 0
    assert lenient.stderr.decode().count("colour") == 1


def test_unknown_table_and_column(url):
    assert "no table 'nope'" in one_line_error(aviary("dump-table", "nope", "--db", url))
    assert "no table 'nope'" in one_line_error(aviary("load-table", "nope", "--db", url, input=b""))
    assert "no column 'x'" in one_line_error(aviary("dump-table", "users", "--db", url, "--columns", "id,x"))


def test_usage_errors_exit_2(url):
    assert aviary("load-table", "users", "--db", url, "--mode", "merge").returncode == 2
    assert aviary("dump-table").returncode == 2
    assert aviary("no-such-command").returncode == 2


def test_a_password_never_appears(pg_server, pg_url):
    encoded = quote(pg_server.password, safe="")
    for result in (aviary("dump-table", "nope", "--db", pg_url),
                   aviary("tables", "--db", pg_url.replace("/test_", "/missing_")),
                   aviary("tables", "--db", pg_url.replace(encoded, "wr0ngPassw0rd"))):
        assert result.returncode == 1
        text = result.stderr.decode()
        assert pg_server.password not in text and encoded not in text
        assert "wr0ngPassw0rd" not in text


def test_missing_sqlite_file_is_an_error_not_a_new_file(tmp_path):
    line = one_line_error(aviary("tables", "--db", str(tmp_path / "nope.db")))
    assert "no such SQLite database" in line
    assert not (tmp_path / "nope.db").exists()


def test_replace_cannot_remove_a_user_others_still_reference(url):
    # The fixture's database has no users; make two, then let a setting name one.
    make_db(url, populate=False)
    from aviarytools import sample
    users = sample.sample_rows(users=2)["users"]
    ok("load-table", "users", "--db", url, input=ndjson(*users))
    ok("load-table", "system_settings", "--db", url, "--mode", "upsert",
       input=ndjson({"key": "a", "updated_by": users[0]["id"]}))
    line = one_line_error(aviary("load-table", "users", "--db", url, "--mode", "replace",
                                 input=ndjson(users[1])))
    assert "users: cannot remove rows missing from the input: other rows still reference them" in line


def test_an_impossible_date_stored_in_sqlite_stops_the_dump(tmp_path):
    import sqlite3
    url = make_db(str(tmp_path / "a.db"), populate=False)
    with sqlite3.connect(url) as conn:
        conn.execute("INSERT INTO login_attempts (id, ip_address, attempted_at) VALUES"
                     " ('00000000-0000-4000-8000-000000000001', '::1', '2025-02-30 10:00:00.5+00:00')")
    line = one_line_error(aviary("dump-table", "login_attempts", "--db", url))
    assert "no such date: '2025-02-30 10:00:00.5+00:00'" in line


# -- --mode append straight into the table, in chunks --------------------------

ATTEMPT = "00000000-0000-4000-8000-0000000000%02d"


def attempts(*numbers, **extra) -> list[bytes]:
    return [json.dumps({"id": ATTEMPT % n, "ip_address": "::1", **extra}).encode() for n in numbers]


APPEND_CASES = {
    "duplicate chunks apart": (b"\n".join([*attempts(1), b"", *attempts(2, 3), b"", b"", *attempts(4, 2, 5)]),
                               f"line 8: duplicate key id={ATTEMPT % 2} (also on line 3)"),
    "existing key in a later chunk": (b"\n".join(attempts(1, 2, 3, 4, 90)),
                                      f"line 5: key id={ATTEMPT % 90} already exists in login_attempts"),
    "duplicate items chunks apart": (b"[" + b",".join(attempts(1, 2, 3, 4, 5, 3)) + b"]",
                                     f"item 6: duplicate key id={ATTEMPT % 3} (also on item 3)"),
    "existing key after blank lines": (b"\n\n\n".join(attempts(1, 2, 3, 90)),
                                       f"line 10: key id={ATTEMPT % 90} already exists in login_attempts"),
}


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks (PostgreSQL) and batches (SQLite) of two rows."""
    from aviarytools.db.postgres import PostgresAppend
    from aviarytools.db.sqlite import SQLiteAppend
    monkeypatch.setattr(PostgresAppend, "CHUNK_ROWS", 2)
    monkeypatch.setattr(PostgresAppend, "FLUSH_BYTES", 1)
    monkeypatch.setattr(SQLiteAppend, "BATCH", 2)


def _load(db, table, data: bytes):
    return rows.load(db, table, RowSource(io.BytesIO(data)))


@pytest.mark.parametrize("case", APPEND_CASES)
def test_append_errors_name_the_line_across_chunks(url, small_chunks, case):
    data, message = APPEND_CASES[case]
    db = connect(url)
    try:
        _load(db, "login_attempts", attempts(90)[0])
        with pytest.raises(InputError) as error:
            _load(db, "login_attempts", data)
        assert str(error.value) == message
        assert db.execute("SELECT count(*) FROM login_attempts") == [(1,)]
        # The connection is usable after it: the next load commits.
        assert _load(db, "login_attempts", b"\n\n".join(attempts(10, 11, 12, 13, 14))).written == 5
        assert db.execute("SELECT count(*) FROM login_attempts") == [(6,)]
    finally:
        db.close()


def test_a_missing_parent_in_a_later_chunk_names_its_line(url, small_chunks):
    data = ndjson({"key": "b"}, {"key": "c"}) + b"\n" + ndjson({"key": "d"}, {"key": "e", "updated_by": NO_USER})
    db = connect(url)
    try:
        with pytest.raises(InputError) as error:
            _load(db, "system_settings", data)
        assert str(error.value) == f"line 5, column updated_by: no users row has id {NO_USER}"
        assert db.execute("SELECT count(*) FROM system_settings") == [(1,)]
    finally:
        db.close()


def test_appending_in_chunks_loads_every_row_as_given(url, small_chunks, tmp_path):
    source = make_db(str(tmp_path / "source.db"), users=3)
    for table in ("users", "api_keys", "login_attempts"):
        dumped = ok("dump-table", table, "--db", source)
        db = connect(url)
        try:
            lines = dumped.splitlines()
            assert _load(db, table, b"\n\n".join(lines)).written == len(lines)
        finally:
            db.close()
    for table in ("api_keys", "login_attempts"):
        theirs = ok("dump-table", table, "--db", url)
        ours = ok("dump-table", table, "--db", source)
        if url.startswith("postgresql:"):  # PostgreSQL keeps microseconds
            assert len(theirs.splitlines()) == len(ours.splitlines())
        else:
            assert theirs == ours


def test_a_value_postgresql_refuses_names_its_line(pg_url):
    make_db(pg_url, populate=False)
    data = b"\n".join(attempts(1, 2)) + b"\n\n" + attempts(3, attempted_at="294277-01-01T00:00:00Z")[0]
    line = one_line_error(aviary("load-table", "login_attempts", "--db", pg_url, input=data))
    assert "line 4, column attempted_at: timestamp out of range" in line
    assert ok("dump-table", "login_attempts", "--db", pg_url) == b""
