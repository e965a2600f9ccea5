"""Bad input: one clear line on stderr, exit 1, and the table as it was."""

from urllib.parse import quote

import pytest

from helpers import aviary, make_db, ndjson, ok, one_line_error

GOOD = {"key": "a", "value": "1"}


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
