"""dump-table and load-table between SQLite and PostgreSQL: byte-identical rows."""

import json
import subprocess
import sys

import pytest

from helpers import DATA_TABLES, aviary, dump_all, make_db, ndjson, ok


def copy_tables(source: str, target: str, tables=DATA_TABLES) -> list[str]:
    """Pipe every table from source to target; returns load-table's stderr lines."""
    messages = []
    for table in tables:
        rows = ok("dump-table", table, "--db", source)
        result = aviary("load-table", table, "--db", target, input=rows)
        assert result.returncode == 0, result.stderr.decode()
        messages += result.stderr.decode().splitlines()
    return messages


def test_sqlite_to_postgresql_and_back_is_byte_identical(tmp_path, pg_url):
    source = make_db(str(tmp_path / "a.db"), users=4, nanos=False)
    make_db(pg_url, populate=False)
    back = make_db(str(tmp_path / "b.db"), populate=False)

    assert copy_tables(source, pg_url) == []
    assert dump_all(pg_url) == dump_all(source)
    copy_tables(pg_url, back)
    assert dump_all(back) == dump_all(source)


def test_the_sample_holds_every_trap(tmp_path):
    url = make_db(str(tmp_path / "a.db"), users=4, nanos=False)
    users = [json.loads(line) for line in ok("dump-table", "users", "--db", url).splitlines()]
    assert {u["reset_token_expires"] for u in users} == {"0001-01-01T00:00:00Z"}
    assert {u["is_admin"] for u in users} == {True, False}
    assert None in {u["last_login"] for u in users}
    assert {u["page_dpi"] for u in users} >= {226, 0.1, 1e15}
    assert any("ö" in u["username"] or "ë" in u["username"] for u in users)
    folders = ok("dump-table", "user_folders_cache", "--db", url).splitlines()
    assert json.loads(json.loads(folders[0])["folder_data"])["folders"]


def test_nanoseconds_survive_sqlite_to_sqlite(tmp_path):
    source = make_db(str(tmp_path / "a.db"))
    target = make_db(str(tmp_path / "b.db"), populate=False)
    assert copy_tables(source, target) == []
    dumped = dump_all(target)
    assert dumped == dump_all(source)
    created = json.loads(dumped["users"].splitlines()[0])["created_at"]
    assert len(created.split(".")[1]) >= 8, created


def test_postgresql_rounds_nanoseconds_and_says_so_in_one_line_per_column(tmp_path, pg_url):
    source = make_db(str(tmp_path / "a.db"), users=3)
    make_db(pg_url, populate=False)
    result = aviary("load-table", "users", "--db", pg_url, input=ok("dump-table", "users", "--db", source))
    assert result.returncode == 0
    [warning] = result.stderr.decode().splitlines()
    counts = warning.split("(PostgreSQL keeps microseconds): ")[1].split(", ")
    assert [c.split(" ")[0] for c in counts] == ["users.created_at", "users.last_login", "users.updated_at"]
    ours = [json.loads(line) for line in ok("dump-table", "users", "--db", source).splitlines()]
    theirs = [json.loads(line) for line in ok("dump-table", "users", "--db", pg_url).splitlines()]
    for a, b in zip(ours, theirs):
        assert {k: v for k, v in a.items() if k not in ("created_at", "updated_at", "last_login")} == \
               {k: v for k, v in b.items() if k not in ("created_at", "updated_at", "last_login")}
        assert b["created_at"][:19] == a["created_at"][:19]
        assert len(b["created_at"]) <= len("2025-01-01T00:00:00.123456Z")


def test_year_one_survives_a_non_utc_server_and_client(tmp_path, pg_url, pg_server):
    make_db(pg_url, populate=False)
    row = {"key": "k", "value": "v", "updated_at": "0001-01-01T00:00:00Z"}
    ok("load-table", "system_settings", "--db", pg_url, input=ndjson(row),
       env={"PGTZ": "America/St_Johns", "TZ": "Asia/Kathmandu"})
    out = ok("dump-table", "system_settings", "--db", pg_url, env={"PGTZ": "Pacific/Chatham"})
    assert json.loads(out)["updated_at"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_control_characters_and_json_text_encode_alike(engine, tmp_path, pg_url):
    url = pg_url if engine == "postgres" else str(tmp_path / "a.db")
    make_db(url, populate=False)
    tricky = "tab\tnl\ncr\rbs\\q\"ctl\x01\x1f del\x7f <&> \u2028 🦜"
    ok("load-table", "login_attempts", "--db", url, input=ndjson(
        {"id": "00000000-0000-4000-8000-000000000001", "ip_address": "::1", "username": tricky,
         "success": 1, "attempted_at": "2025-01-01T00:00:00Z", "user_agent": None}))
    line = ok("dump-table", "login_attempts", "--db", url).rstrip(b"\n").decode()
    expected = ('{"id":"00000000-0000-4000-8000-000000000001","ip_address":"::1","username":'
                + json.dumps(tricky, ensure_ascii=False)
                + ',"success":true,"attempted_at":"2025-01-01T00:00:00Z","user_agent":null}')
    assert line == expected


def test_an_aviary_json_array_loads_as_it_is(tmp_path):
    url = make_db(str(tmp_path / "a.db"), populate=False)
    aviary_style = b"""[
  {
    "created_at": "2025-07-27T10:11:12.123456789+02:00",
    "description": "\\u003cb\\u003e \\u0026",
    "key": "site_name",
    "updated_at": "0001-01-01T00:00:00Z",
    "updated_by": null,
    "value": "Aviary"
  }
]"""
    result = aviary("load-table", "system_settings", "--db", url, input=aviary_style)
    assert result.returncode == 0
    assert b"created_at" in result.stderr  # unknown column: warned about, dropped
    row = json.loads(ok("dump-table", "system_settings", "--db", url))
    assert row["description"] == "<b> &"
    assert aviary("load-table", "documents", "--db", url, input=b"null\n").returncode == 0


def test_dump_options_select_rows_and_columns(tmp_path):
    url = make_db(str(tmp_path / "a.db"), users=3)
    users = [json.loads(x) for x in ok("dump-table", "users", "--db", url).splitlines()]
    admin = next(u for u in users if u["is_admin"])
    docs = ok("dump-table", "documents", "--db", url, "--user", "admin", "--columns", "id,user_id")
    assert {tuple(json.loads(x)) for x in docs.splitlines()} == {("id", "user_id")}
    assert {json.loads(x)["user_id"] for x in docs.splitlines()} == {admin["id"]}
    by_id = ok("dump-table", "users", "--db", url, "--user", admin["id"].upper())
    assert json.loads(by_id)["username"] == "admin"
    assert len(ok("dump-table", "documents", "--db", url, "--limit", "2").splitlines()) == 2
    assert len(ok("dump-table", "users", "--db", url, "--where", "is_admin").splitlines()) == 1


def test_dump_table_feeds_jq(tmp_path):
    url = make_db(str(tmp_path / "a.db"), users=3)
    out = subprocess.run(f"{sys.executable} -m aviarytools dump-table users --db {url} | jq -r 'select(.is_admin) | .username'",
                         shell=True, capture_output=True, check=True)
    assert out.stdout == b"admin\n"


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_head_closes_the_pipe_quietly(engine, tmp_path, pg_url):
    url = make_db(pg_url if engine == "postgres" else str(tmp_path / "a.db"), populate=False)
    rows = b"".join(ndjson({"id": f"00000000-0000-4000-8000-{n:012d}", "ip_address": "::1",
                            "username": "x" * 200, "success": n % 2}) for n in range(20000))
    ok("load-table", "login_attempts", "--db", url, input=rows)
    out = subprocess.run(
        f"set -o pipefail; {sys.executable} -m aviarytools dump-table login_attempts --db {url} | head -1",
        shell=True, capture_output=True, executable="/bin/bash")
    assert out.returncode == 0 and out.stderr == b"" and out.stdout.count(b"\n") == 1


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_modes(engine, tmp_path, pg_url):
    url = pg_url if engine == "postgres" else str(tmp_path / "a.db")
    make_db(url, populate=False)
    a = {"key": "a", "value": "1"}
    b = {"key": "b", "value": "2"}
    ok("load-table", "system_settings", "--db", url, input=ndjson(a, b))
    def values():
        dumped = ok("dump-table", "system_settings", "--db", url).splitlines()
        return {json.loads(x)["key"]: json.loads(x)["value"] for x in dumped}

    ok("load-table", "system_settings", "--db", url, "--mode", "skip", input=ndjson({"key": "a", "value": "new"}, {"key": "c", "value": "3"}))
    assert values() == {"a": "1", "b": "2", "c": "3"}
    ok("load-table", "system_settings", "--db", url, "--mode", "upsert", input=ndjson({"key": "a", "value": "new"}))
    assert values() == {"a": "new", "b": "2", "c": "3"}
    ok("load-table", "system_settings", "--db", url, "--mode", "replace", input=ndjson({"key": "b", "value": "x"}))
    assert values() == {"b": "x"}


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_replace_for_one_user_leaves_the_others(engine, tmp_path, pg_url):
    url = pg_url if engine == "postgres" else str(tmp_path / "a.db")
    make_db(url, users=3)
    before = ok("dump-table", "documents", "--db", url)
    admin_docs = ok("dump-table", "documents", "--db", url, "--user", "admin")
    ok("load-table", "documents", "--db", url, "--mode", "replace", "--user", "admin", input=b"")
    assert ok("dump-table", "documents", "--db", url, "--user", "admin") == b""
    ok("load-table", "documents", "--db", url, "--mode", "replace", "--user", "admin", input=before)
    assert ok("dump-table", "documents", "--db", url, "--user", "admin") == admin_docs
    assert ok("dump-table", "documents", "--db", url) == before


def test_tables_lists_row_counts(tmp_path):
    url = make_db(str(tmp_path / "a.db"), users=2)
    counts = {json.loads(x)["table"]: json.loads(x)["rows"] for x in ok("tables", "--db", url).splitlines()}
    assert counts["users"] == 2 and counts["documents"] == 6 and counts["backup_jobs"] == 0


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_init_schema_twice_is_harmless_and_matches_aviary(engine, tmp_path, pg_url):
    url = pg_url if engine == "postgres" else str(tmp_path / "new.db")
    ok("init-schema", "--db", url)
    ok("init-schema", "--db", url)
    names = {json.loads(x)["table"] for x in ok("tables", "--db", url).splitlines()}
    assert names == {"users", "api_keys", "user_sessions", "user_folders_cache", "documents",
                     "system_settings", "login_attempts", "backup_jobs", "restore_uploads",
                     "restore_extraction_jobs"}
    from aviarytools.db import connect
    db = connect(url)
    keys = db.table("api_keys")
    assert keys.primary_key == ("id",)
    assert [(fk.columns, fk.parent, fk.on_delete_cascade) for fk in keys.foreign_keys] == [(("user_id",), "users", True)]
    assert ("username",) in db.table("users").unique
    assert ("user_id", "folder_path") in db.table("user_folders_cache").unique


def test_the_environment_names_the_database_like_aviary_does(tmp_path, pg_server, pg_url):
    make_db(str(tmp_path / "aviary.db"), users=1)
    assert ok("tables", env={"DATA_DIR": str(tmp_path)})
    assert ok("tables", env={"AVIARY_DB": f"sqlite:///{tmp_path}/aviary.db"})
    make_db(pg_url, users=1)
    password_file = tmp_path / "pw"
    password_file.write_text(pg_server.password + "\n")
    env = {"DB_TYPE": "postgres", "DB_HOST": "127.0.0.1", "DB_PORT": str(pg_server.port),
           "DB_USER": pg_server.user, "DB_PASSWORD_FILE": str(password_file),
           "DB_NAME": pg_url.rsplit("/", 1)[1]}
    assert b'"users"' in ok("tables", env=env)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_upsert_updates_only_the_columns_the_input_has(engine, tmp_path, pg_url):
    url = pg_url if engine == "postgres" else str(tmp_path / "a.db")
    make_db(url, users=2, nanos=False)
    before = {json.loads(x)["id"]: json.loads(x) for x in ok("dump-table", "users", "--db", url).splitlines()}
    partial = ok("dump-table", "users", "--db", url, "--columns", "id,username,email,password")
    renamed = partial.replace(b"@example.org", b"@example.net")
    ok("load-table", "users", "--db", url, "--mode", "upsert", input=renamed)
    after = {json.loads(x)["id"]: json.loads(x) for x in ok("dump-table", "users", "--db", url).splitlines()}
    for user_id, row in after.items():
        assert row["email"].endswith("@example.net")
        assert {k: v for k, v in row.items() if k != "email"} == \
               {k: v for k, v in before[user_id].items() if k != "email"}


def test_postgresql_timestamp_text_is_to_chars_for_every_year(pg_url):
    # Years 1 to 9999 are written from the ISO text (faster), the others by
    # to_char: the same characters either way, whatever the client's DateStyle.
    import psycopg
    values = ["0001-01-01 00:00:00+00", "0001-01-01 00:00:00.000001+00", "0999-05-05 05:05:05.5+00",
              "1969-12-31 23:59:59.999999+00", "2025-01-01 10:11:12.120+13:45", "2025-06-30 23:59:60+00",
              "2025-07-27 00:00:00.000010+00", "9999-12-31 23:59:59.999999+00", "10000-01-01 00:00:00+00",
              "294276-12-31 23:59:59.999999+00", "0001-12-31 23:59:59.999999+00 BC",
              "4713-01-01 00:00:00+00 BC", "infinity", "-infinity", None]
    general = "rtrim(rtrim(to_char({}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '0'), '.') || 'Z'"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE moments (n int PRIMARY KEY, tz timestamptz, plain timestamp, day date)")
        for n, value in enumerate(values):
            conn.execute("INSERT INTO moments VALUES (%s, %s::timestamptz, %s::timestamptz AT TIME ZONE 'UTC',"
                         " %s::timestamptz AT TIME ZONE 'UTC')", (n, value, value, value))
        columns = ", ".join(general.format(c) for c in ("tz AT TIME ZONE 'UTC'", "plain", "day"))
        expected = conn.execute(f"SELECT n, {columns} FROM moments ORDER BY n").fetchall()
    out = ok("dump-table", "moments", "--db", pg_url, env={"PGDATESTYLE": "SQL, DMY", "PGTZ": "Asia/Kathmandu"})
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["n"], r["tz"], r["plain"], r["day"]) for r in rows] == [tuple(e) for e in expected]
    assert rows[0]["tz"] == rows[0]["plain"] == "0001-01-01T00:00:00Z"
    assert rows[4]["tz"] == "2024-12-31T20:26:12.12Z" and rows[7]["tz"] == "9999-12-31T23:59:59.999999Z"


def test_postgresql_dump_options_match_sqlite(tmp_path, pg_url):
    # Whole tables, limits, conditions and columns without the key take
    # different queries in PostgreSQL; the rows and their order do not change.
    source = make_db(str(tmp_path / "a.db"), users=4, nanos=False)
    make_db(pg_url, populate=False)
    assert copy_tables(source, pg_url) == []
    for options in (["documents"], ["documents", "--limit", "3"], ["documents", "--limit", "0"],
                    ["documents", "--columns", "document_name,id", "--limit", "4"],
                    ["documents", "--columns", "user_id,document_name"],
                    ["documents", "--columns", "file_size", "--limit", "2"],
                    ["documents", "--user", "admin"], ["documents", "--user", "admin", "--limit", "1"],
                    ["documents", "--where", "file_size > 1000", "--columns", "id,file_size"],
                    ["system_settings", "--columns", "value,key"], ["system_settings", "--limit", "2"]):
        expected = ok("dump-table", *options, "--db", source)
        assert ok("dump-table", *options, "--db", pg_url) == expected, options
        assert expected or options[-1] == "0"


def test_a_postgresql_row_stream_its_consumer_left_open_does_not_block_the_rollback(pg_url):
    """A COPY holds the connection: the snapshot's end closes a stream whose reader
    raised mid-way, instead of waiting on it for ever."""
    from aviarytools.db import connect
    from aviarytools.query import Query

    make_db(pg_url)
    db = connect(pg_url)
    try:
        with pytest.raises(RuntimeError):
            with db.snapshot():
                lines = db.rows(db.table("users"), Query())
                next(lines)
                raise RuntimeError("the consumer failed")
        assert db.execute("SELECT 1") == [(1,)]
    finally:
        db.close()
