"""aviary doctor on real installations (SQLite + a folder, PostgreSQL + SeaweedFS S3):
a clean installation reports no problem, every planted fault is reported, and after
pack | unpack the installation matches the archive exactly, until one row or one byte
changes.  Also `aviary verify --max-age` and the manual page."""

import copy
import gzip
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path

import psycopg
import pytest

from aviarytools import sample
from aviarytools.archive.pack import PackOptions, pack
from aviarytools.db import connect
from aviarytools.doctor import check_installation, compare
from aviarytools.storage import ObjectInfo, open_storage
from helpers import aviary, ok

ROOT = Path(__file__).resolve().parent.parent
ORPHAN_USER = "22222222-2222-4222-8222-222222222222"


# --- installations and how to look at what doctor says -------------------------------------------


def s3_env(server) -> dict[str, str]:
    return {"S3_ACCESS_KEY_ID": server.access_key, "S3_SECRET_ACCESS_KEY": server.secret_key}


def s3_args(server, bucket) -> list[str]:
    return ["--storage", f"s3://{bucket}", "--s3-endpoint", server.endpoint, "--s3-path-style"]


def bucket(server, name):
    return open_storage(f"s3://{name}", s3_endpoint=server.endpoint, s3_path_style=True,
                        s3_access_key=server.access_key, s3_secret_key=server.secret_key)


def install(url: str, storage, **options) -> dict[str, list[dict]]:
    """Aviary's schema and the sample rows at `url`, their documents in `storage`."""
    db = connect(url, create=True)
    try:
        with db.transaction():
            db.create_schema()
        return sample.populate(db, storage, **options)
    finally:
        db.close()


@pytest.fixture
def lite(tmp_path):
    """SQLite + a folder, as Aviary keeps them: DATA_DIR holds aviary.db and users/."""
    data = tmp_path / "data"
    url = str(data / "aviary.db")
    tables = install(url, open_storage(str(data)))
    return url, data, tables


def findings(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def problems(found) -> list[dict]:
    return [f for f in found if f["severity"] == "problem"]


def warnings(found) -> list[dict]:
    return [f for f in found if f["severity"] == "warning"]


def doctor(*args, **kwargs):
    return aviary("doctor", "--json", *args, **kwargs)


def run_check(url, storage, **options) -> list[dict]:
    """check_installation in this process (a command start costs most of a second)."""
    db = connect(str(url))
    try:
        return [f.as_dict() for f in check_installation(db, storage, **options)]
    finally:
        db.close()


def only(found, check) -> list[dict]:
    return [f for f in found if f["check"] == check]


def user_ids(tables) -> list[str]:
    return [u["id"] for u in tables["users"]]


# --- a clean installation ---------------------------------------------------------------------------


def test_a_clean_sqlite_installation_has_no_problem(lite):
    url, data, tables = lite
    # What belongs in Aviary's DATA_DIR beside the documents, and an unpack's staging area (a warning).
    (data / "aviary.db-wal").write_bytes(b"")
    (data / "backups").mkdir()
    (data / "backups" / "aviary-backup-2025-07-27.tar.gz").write_bytes(b"Aviary's own backup")
    (data / ".aviary-restore-0123456789ab" / "users").mkdir(parents=True)
    (data / ".aviary-restore-0123456789ab" / "users" / "x.pdf").write_bytes(b"staged")

    result = doctor("--db", url, "--storage", data, "--deep")
    assert result.returncode == 0, result.stderr.decode()
    found = findings(result)
    assert problems(found) == []
    assert b"no problems found" in result.stderr
    # A staging prefix without a journal: a restore cut before its commit (issue 20).
    assert {f["check"] for f in found} == {"expired", "deep-read", "user-documents", "staging"}
    staging = only(found, "staging")[0]
    assert (staging["severity"], staging["subject"]) == ("warning", ".aviary-restore-0123456789ab/")
    assert f"delete {data}/.aviary-restore-0123456789ab/" in staging["detail"]
    per_user = {f["subject"]: f["detail"] for f in only(found, "user-documents")}
    assert set(per_user) == set(user_ids(tables))
    assert all("3 documents (3003 bytes) in storage, 3 documents rows (3003 bytes" in d for d in per_user.values())
    assert "9 objects, 9009 bytes read" in only(found, "deep-read")[0]["detail"]


def test_the_human_report_goes_to_stderr(lite):
    url, data, _ = lite
    result = aviary("doctor", "--db", url, "--storage", data)
    assert result.returncode == 0 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert lines[-1] == "aviary doctor: no problems found"
    assert any(line.startswith("aviary doctor: info: user-documents: ") for line in lines)


def test_a_clean_postgresql_and_s3_installation_reads_every_object_ok(pg_url, s3_server, s3_bucket):
    install(pg_url, bucket(s3_server, s3_bucket), users=4)
    result = doctor("--db", pg_url, *s3_args(s3_server, s3_bucket), "--deep", env=s3_env(s3_server))
    assert result.returncode == 0, result.stderr.decode()
    found = findings(result)
    assert problems(found) == []
    assert "12 objects, 12012 bytes read" in only(found, "deep-read")[0]["detail"]
    assert "0 unreadable" in only(found, "deep-read")[0]["detail"]


def test_expired_sessions_and_api_keys_are_information(lite):
    url, data, tables = lite
    now = time.time_ns()
    future = "2999-01-01T00:00:00Z"
    with sqlite3.connect(url) as conn:
        conn.execute("UPDATE user_sessions SET expires_at = ? WHERE id = ?",
                     (future, tables["user_sessions"][0]["id"]))
        conn.execute("UPDATE api_keys SET expires_at = '2001-01-01 00:00:00+00:00' WHERE id = ?",
                     (tables["api_keys"][1]["id"],))
    found = run_check(url, open_storage(str(data)), now_ns=now)
    assert problems(found) == []
    expired = {f["subject"]: f for f in only(found, "expired")}
    assert expired["user_sessions"]["detail"] == "2 of 3 sessions have expired"
    # Year 1 (Go's zero time) and null mean "never expires".
    assert expired["api_keys"]["detail"] == "1 of 6 API keys have expired"
    assert {f["severity"] for f in expired.values()} == {"info"}


# --- planted database faults -------------------------------------------------------------------------


def test_orphan_rows_in_sqlite(lite):
    url, data, tables = lite
    with sqlite3.connect(url) as conn:  # Python's sqlite3 leaves foreign keys off
        conn.execute("INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix) VALUES"
                     " ('11111111-1111-4111-8111-111111111111', ?, 'k', 'h', 'p')", (ORPHAN_USER,))
        conn.execute("UPDATE system_settings SET updated_by = ? WHERE key = 'registration_enabled'",
                     (ORPHAN_USER,))
    result = doctor("--db", url, "--storage", data)
    assert result.returncode == 1
    orphans = problems(findings(result))
    assert [(f["check"], f["subject"]) for f in orphans] == [("orphan-rows", "api_keys"),
                                                              ("orphan-rows", "system_settings")]
    assert orphans[0]["detail"] == (f"id=11111111-1111-4111-8111-111111111111: user_id {ORPHAN_USER}"
                                    " names no users row: pack leaves the row out")
    assert orphans[1]["detail"] == (f"key=registration_enabled: updated_by {ORPHAN_USER} names no users row:"
                                    " pack writes its updated_by as null")
    assert b"aviary doctor: 2 problem(s) found" in result.stderr


def test_orphan_rows_in_postgresql(pg_url):
    tables = install(pg_url, None)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the test server's user is a superuser
        conn.execute("ALTER TABLE documents DISABLE TRIGGER ALL")
        conn.execute("UPDATE documents SET user_id = %s WHERE id = %s", (ORPHAN_USER, tables["documents"][4]["id"]))
        conn.execute("ALTER TABLE documents ENABLE TRIGGER ALL")
    found = run_check(pg_url, None)
    assert problems(found) == [{
        "check": "orphan-rows", "severity": "problem", "subject": "documents",
        "detail": f"id={tables['documents'][4]['id']}: user_id {ORPHAN_USER} names no users row:"
                  " pack leaves the row out"}]


def test_rows_naming_no_user_are_found_without_a_foreign_key(lite):
    # An old or hand-made database may lack the constraint: Aviary's schema still says so.
    url, data, tables = lite
    with sqlite3.connect(url) as conn:
        conn.executescript("""
            CREATE TABLE sessions_copy AS SELECT * FROM user_sessions;
            DROP TABLE user_sessions;
            CREATE TABLE user_sessions (id uuid PRIMARY KEY, user_id uuid NOT NULL, token_hash text NOT NULL,
              expires_at datetime NOT NULL, created_at datetime, last_used datetime, user_agent text,
              ip_address varchar(45));
            INSERT INTO user_sessions SELECT * FROM sessions_copy;
            DROP TABLE sessions_copy;
        """)
        conn.execute("UPDATE user_sessions SET user_id = ?", (ORPHAN_USER,))
    found = problems(run_check(url, open_storage(str(data))))
    assert [(f["check"], f["subject"]) for f in found] == [("orphan-rows", "user_sessions")] * 3


def test_duplicate_usernames_in_sqlite(lite):
    url, data, tables = lite
    with sqlite3.connect(url) as conn:
        conn.execute("DROP INDEX idx_users_username")
        conn.execute("INSERT INTO users (id, username, email, password) VALUES"
                     " ('33333333-3333-4333-8333-333333333333', 'admin', 'other@example.org', 'x')")
    result = doctor("--db", url, "--storage", data)
    assert result.returncode == 1
    assert problems(findings(result)) == [{
        "check": "duplicates", "severity": "problem", "subject": "users",
        "detail": '2 rows have username="admin" (must be unique)'}]


def test_duplicates_in_postgresql_in_declared_and_modelled_unique_columns(pg_url):
    tables = install(pg_url, None)
    admin = tables["users"][0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('DROP INDEX "idx_users_email"')
        conn.execute('DROP INDEX "idx_user_folders_cache_user_id_folder_path"')
        conn.execute("INSERT INTO users (id, username, email, password) VALUES (%s, 'admin2', %s, 'x')",
                     ("33333333-3333-4333-8333-333333333333", admin["email"]))
        conn.execute("INSERT INTO user_folders_cache (id, user_id, folder_path) VALUES (%s, %s, %s)",
                     ("44444444-4444-4444-8444-444444444444", admin["id"], "/Books/Ärger"))
    found = problems(run_check(pg_url, None))
    assert [(f["subject"], f["detail"]) for f in found] == [
        ("user_folders_cache", f'2 rows have user_id="{admin["id"]}", folder_path="/Books/Ärger" (must be unique)'),
        ("users", '2 rows have email="admin@example.org" (must be unique)'),
    ]


def test_sqlite_integrity_check(lite):
    url, data, _ = lite
    # Make the username index describe another column: its entries no longer match the rows.
    conn = sqlite3.connect(url)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE UNIQUE INDEX idx_users_username ON users(email)'"
                 " WHERE name = 'idx_users_username'")
    conn.commit()
    conn.close()
    found = problems(run_check(url, open_storage(str(data))))
    assert {f["check"] for f in found} == {"integrity"}
    assert "row 1 missing from index idx_users_username" in found[0]["detail"]


def test_sqlite_foreign_key_check_reports_what_the_row_check_does_not(lite):
    url, data, _ = lite
    with sqlite3.connect(url) as conn:
        conn.executescript("""
            CREATE TABLE shelves (owner text, name text, PRIMARY KEY (owner, name));
            CREATE TABLE books (id integer PRIMARY KEY, owner text, shelf text,
              FOREIGN KEY (owner, shelf) REFERENCES shelves (owner, name));
            INSERT INTO books VALUES (1, 'ann', 'nowhere');
        """)
    found = problems(run_check(url, open_storage(str(data))))
    assert found == [{"check": "foreign-keys", "severity": "problem", "subject": "books",
                      "detail": "row 1: no matching row in shelves (PRAGMA foreign_key_check)"}]


# --- planted storage faults ------------------------------------------------------------------------------


@pytest.fixture(params=["folder", "s3"])
def any_storage(request, tmp_path):
    """An installation on SQLite with its documents in a folder or in a bucket."""
    if request.param == "folder":
        storage = open_storage(str(tmp_path / "data"))
    else:
        storage = bucket(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))
    url = str(tmp_path / "aviary.db")
    tables = install(url, storage)
    return url, storage, tables


def test_folders_and_objects_outside_the_layout(any_storage):
    url, storage, tables = any_storage
    user = user_ids(tables)[0]
    stranger = "44444444-4444-4444-8444-444444444444"
    for key, body in [("users/not-a-uuid/pdfs/a.pdf", b"a"), ("users/not-a-uuid/pdfs/b.pdf", b"bb"),
                      (f"users/{stranger}/pdfs/c.pdf", b"ccc"), (f"users/{user}/notes.txt", b"n"),
                      ("stray.pdf", b"s"), (f"users/{user}/pdfs/empty.pdf", b""),
                      ("backups/aviary.tar.gz", b"ignored"), (".aviary-restore-00ff/x", b"staged")]:
        storage.write(key, [body], len(body))
    found = run_check(url, storage)
    assert problems(found) == []  # odd, but Aviary works: warnings
    assert [(f["check"], f["subject"], f["detail"]) for f in warnings(found)] == [
        ("staging", ".aviary-restore-00ff/", "staged by a restore cut before its commit (1 object(s), 6 bytes;"
         f" nothing uses them): once no restore runs, delete {storage.url}/.aviary-restore-00ff/"),
        ("layout", "stray.pdf", "outside Aviary's layout (users/<uuid>/pdfs/...)"),
        ("user-folder", f"users/{stranger}/", "no user has this id (1 object, 3 bytes)"),
        ("layout", f"users/{user}/notes.txt", "outside Aviary's layout (users/<uuid>/pdfs/...)"),
        ("empty-document", f"users/{user}/pdfs/empty.pdf", "a document of 0 bytes"),
        ("user-folder", "users/not-a-uuid/", "not a user id (2 objects, 3 bytes)"),
    ]


def test_a_dangling_link_in_a_folder_is_unreadable(lite):
    url, data, tables = lite
    folder = data / "users" / user_ids(tables)[1] / "pdfs"
    (folder / "gone.pdf").symlink_to("/nonexistent/gone.pdf")
    (folder / "elsewhere.pdf").symlink_to(data / "aviary.db")
    result = doctor("--db", url, "--storage", data, "--deep")
    assert result.returncode == 1
    found = [f for f in findings(result) if f["severity"] != "info"]
    key = f"users/{user_ids(tables)[1]}/pdfs/"
    # A link to a file is served (a warning: pack leaves it out); one to nothing loses data.
    assert [(f["severity"], f["check"], f["subject"]) for f in found] == [
        ("warning", "not-regular", key + "elsewhere.pdf"), ("problem", "unreadable", key + "gone.pdf")]
    assert "dangling symbolic link" in found[1]["detail"]


def test_a_healthy_installation_with_warnings_exits_0_unless_warnings_fail(lite):
    url, data, tables = lite
    (data / "users" / user_ids(tables)[0] / "pdfs" / "uploaded empty.pdf").write_bytes(b"")
    result = aviary("doctor", "--db", url, "--storage", data)
    assert result.returncode == 0
    assert b"aviary doctor: warning: empty-document: " in result.stderr
    assert result.stderr.decode().splitlines()[-1] == "aviary doctor: no problems found, 1 warning(s)"
    assert aviary("doctor", "--db", url, "--storage", data, "--fail-on", "warning").returncode == 1
    assert aviary("doctor", "--db", url, "--storage", data, "--fail-on", "info").returncode == 2


def test_names_with_line_breaks_and_escapes_print_as_one_line_each(lite):
    url, data, tables = lite
    folder = data / "users" / user_ids(tables)[0] / "pdfs"
    planted = ["a\nproblem: forged-check: everything is fine.pdf", "b\r\x1b[2Kcleared.pdf", "c\tx\x07.pdf"]
    for name in planted:
        (folder / name).write_bytes(b"")
    (data / "users" / "x\nproblem: y").mkdir()
    (data / "users" / "x\nproblem: y" / "z.pdf").write_bytes(b"z")
    human = aviary("doctor", "--db", url, "--storage", data).stderr.decode()
    lines = human.splitlines()
    assert not any(line.startswith("problem") for line in lines)
    assert all(line.startswith("aviary doctor: ") and line.isprintable() for line in lines), lines
    assert sum("empty-document" in line for line in lines) == 3
    assert "users/x\\nproblem: y/" in human
    # NDJSON carries the names as they are.
    found = findings(doctor("--db", url, "--storage", data))
    subjects = {f["subject"] for f in found if f["check"] == "empty-document"}
    assert subjects == {f"users/{user_ids(tables)[0]}/pdfs/{name}" for name in planted}


def lying(storage, change):
    """`storage` (still a folder or a bucket) whose listing says something else about some objects."""

    class Lying(type(storage)):
        def list(self, prefix=""):
            for obj in super().list(prefix):
                yield from change(obj)

    liar = copy.copy(storage)
    liar.__class__ = Lying
    return liar


def test_deep_reads_report_an_unreadable_file(lite):
    url, data, tables = lite
    folder = data / "users" / user_ids(tables)[0] / "pdfs"
    (folder / "a-folder.pdf").mkdir()  # a directory where a document is expected

    def with_folder(obj):
        if obj.key == f"users/{user_ids(tables)[0]}/pdfs/doc-0 ñ.pdf":
            yield ObjectInfo(obj.key.replace("doc-0 ñ.pdf", "a-folder.pdf"), 10, obj.mtime)
        yield obj

    storage = open_storage(str(data))
    found = run_check(url, lying(storage, with_folder), deep=True)
    assert [(f["check"], f["detail"]) for f in problems(found)] == [
        ("unreadable", f"{storage.url}: users/{user_ids(tables)[0]}/pdfs/a-folder.pdf: Is a directory")]
    if os.geteuid() != 0:  # root reads any file whatever its mode
        (folder / "doc-0 ñ.pdf").chmod(0)
        found = run_check(url, storage, deep=True)
        assert "Permission denied" in problems(found)[0]["detail"]


def test_deep_reads_compare_s3_sizes_and_md5_etags(tmp_path, s3_server, s3_bucket):
    storage = bucket(s3_server, s3_bucket)
    url = str(tmp_path / "aviary.db")
    install(url, storage, users=2)
    keys = sorted(o.key for o in storage.list(""))
    assert all(len(o.etag) == 32 for o in storage.list(""))  # SeaweedFS: a plain MD5

    def change(obj):
        if obj.key == keys[0]:
            yield ObjectInfo(obj.key, obj.size + 1, obj.mtime, obj.etag)
        elif obj.key == keys[1]:
            yield ObjectInfo(obj.key, obj.size, obj.mtime, "0" * 32)
        elif obj.key == keys[2]:
            yield ObjectInfo(obj.key, obj.size, obj.mtime, obj.etag + "-2")  # multipart: not an MD5
        else:
            yield obj

    found = run_check(url, lying(storage, change), deep=True)
    assert [(f["check"], f["subject"]) for f in problems(found)] == [("size", keys[0]), ("etag", keys[1])]
    assert problems(found)[0]["detail"] == "listed as 1001 bytes, 1000 bytes read"
    assert "6 objects" in only(found, "deep-read")[0]["detail"]


# --- doctor --against after a restore ---------------------------------------------------------------------


def pack_to(path: Path, url: str, storage_args, env=None, gzip_it=True) -> Path:
    result = aviary("pack", "--db", url, *storage_args, *(["-z"] if gzip_it else []), "-o", path, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return path


def test_after_pack_and_unpack_into_sqlite_and_a_folder_nothing_differs(lite, tmp_path):
    url, data, tables = lite
    archive = pack_to(tmp_path / "aviary.tar.gz", url, ["--storage", data])
    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    ok("unpack", "--db", target, "--storage", files, "--create-schema", archive)

    result = doctor("--db", target, "--storage", files, "--against", archive)
    assert result.returncode == 0, result.stderr.decode()
    found = findings(result)
    assert problems(found) == []
    summary = {f["subject"]: f["detail"] for f in only(found, "rows")}
    assert summary["users"] == "3 archived rows: 3 equal, 0 differ, 0 only in the archive, 0 only in the live database"
    assert "hash table" not in "".join(summary.values())  # our archives are in key order
    assert only(found, "files")[0]["detail"].startswith("9 archived documents: 9 equal, 0 differ")

    # One row and one byte change; a row and a document appear; a row and a document go.
    user = tables["users"][1]
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE users SET is_admin = 1, rmapi_config = 'changed' WHERE id = ?", (user["id"],))
        conn.execute("DELETE FROM login_attempts WHERE id = ?", (tables["login_attempts"][2]["id"],))
        conn.execute("INSERT INTO system_settings (key, value) VALUES ('added', 'x')")
    document = files / "users" / user["id"] / "pdfs" / "doc-0 ñ.pdf"
    body = bytearray(document.read_bytes())
    body[500] ^= 1
    document.write_bytes(body)
    (document.parent / "new.pdf").write_bytes(b"%PDF-new")
    (document.parent / "doc-2 ñ.pdf").unlink()

    result = aviary("doctor", "--db", target, "--storage", files, "--against", archive)
    assert result.returncode == 1
    report = result.stderr.decode()
    prefix = f"users/{user['id']}/pdfs/"
    for line in [
        f"problem: row-differs: users: id={user['id']}: is_admin: archive false, live true; rmapi_config differs",
        f"problem: row-missing: login_attempts: id={tables['login_attempts'][2]['id']}: in the archive, not in",
        "problem: row-extra: system_settings: key=added: in the live database, not in the archive",
        f"problem: file-differs: {prefix}doc-0 ñ.pdf: XXH128 ",
        f"problem: file-missing: {prefix}doc-2 ñ.pdf: in the archive, not in the live storage",
        f"problem: file-extra: {prefix}new.pdf: in the live storage, not in the archive",
        "aviary doctor: 6 problem(s) found",
    ]:
        assert line in report, report
    assert "changed" not in report  # secrets are named, never shown


def test_after_a_restore_into_postgresql_and_s3_only_rounding_differs(lite, tmp_path, pg_url, s3_server, s3_bucket):
    url, data, tables = lite  # SQLite keeps nanoseconds; PostgreSQL rounds them to microseconds
    archive = pack_to(tmp_path / "aviary.tar", url, ["--storage", data], gzip_it=False)
    env = s3_env(s3_server)
    result = aviary("unpack", "--db", pg_url, *s3_args(s3_server, s3_bucket), "--create-schema", archive, env=env)
    assert result.returncode == 0, result.stderr.decode()

    result = doctor("--db", pg_url, *s3_args(s3_server, s3_bucket), "--against", "-",
                    input=archive.read_bytes(), env=env)
    assert result.returncode == 0, result.stderr.decode()
    found = findings(result)
    assert problems(found) == []
    rounded = {f["subject"] for f in only(found, "rounded")}
    assert {"users", "user_sessions", "documents"} <= rounded

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE documents SET status = 'failed' WHERE id = %s", (tables["documents"][7]["id"],))
    storage = bucket(s3_server, s3_bucket)
    key = tables["documents"][3]["local_path"]
    body = b"".join(storage.read(key))
    storage.write(key, [body[:-1] + b"!"])
    result = doctor("--db", pg_url, *s3_args(s3_server, s3_bucket), "--against", archive, env=env)
    assert result.returncode == 1
    found = problems(findings(result))
    assert [(f["check"], f["subject"]) for f in found] == [("row-differs", "documents"), ("file-differs", key)]
    assert found[0]["detail"] == f'id={tables["documents"][7]["id"]}: status: archive "uploaded", live "failed"'
    assert found[1]["detail"].startswith("XXH128 ")


def test_a_corrupt_row_in_the_archive_is_reported_and_the_rest_compared(lite, tmp_path):
    url, data, tables = lite
    archive = pack_to(tmp_path / "aviary.tar", url, ["--storage", data], gzip_it=False)
    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    ok("unpack", "--db", target, "--storage", files, "--create-schema", archive)
    victim = tables["login_attempts"][1]
    assert victim["success"] == 1
    tar = archive.read_bytes()
    row = tar.index(victim["id"].encode())
    at = tar.index(b'"success":true', row)
    archive.write_bytes(tar[:at] + b'"success":"xx"' + tar[at + 14:])  # as long: the tar stays whole

    result = doctor("--db", target, "--storage", files, "--against", archive)
    assert result.returncode == 1
    found = problems(findings(result))
    assert [(f["check"], f["subject"]) for f in found] == [
        ("archive-row", "login_attempts"), ("row-extra", "login_attempts"),
        ("checksums", "database/login_attempts.json")]  # the archive walk's own check, as verify names it
    assert found[0]["detail"].startswith("item ") and "column success: expected a boolean" in found[0]["detail"]
    assert found[1]["detail"] == f"id={victim['id']}: in the live database, not in the archive"
    assert only(findings(result), "rows")[2]["detail"].startswith("4 archived rows: 4 equal")


def test_tables_and_columns_the_live_database_lacks(lite, tmp_path):
    url, data, tables = lite
    archive = pack_to(tmp_path / "aviary.tar.gz", url, ["--storage", data])
    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    ok("unpack", "--db", target, "--storage", files, "--create-schema", archive)
    with sqlite3.connect(target) as conn:
        conn.execute("ALTER TABLE login_attempts DROP COLUMN user_agent")
        conn.execute("DROP TABLE user_folders_cache")
    found = findings(doctor("--db", target, "--storage", files, "--against", archive))
    assert [(f["check"], f["subject"], f["detail"]) for f in problems(found)] == [
        ("columns", "login_attempts", "column user_agent is in the archive but not in the live table: not compared"),
        ("tables", "user_folders_cache", "in the archive, not in the live database"),
    ]
    assert only(found, "rows")[2] == {"check": "rows", "severity": "info", "subject": "login_attempts", "detail":
                                      "5 archived rows: 5 equal, 0 differ, 0 only in the archive, 0 only in the"
                                      " live database"}


def test_against_one_user(lite, tmp_path):
    url, data, tables = lite
    archive = pack_to(tmp_path / "aviary.tar.gz", url, ["--storage", data])
    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    ok("unpack", "--db", target, "--storage", files, "--create-schema", archive)
    alice, other = tables["users"][1], tables["users"][2]
    with sqlite3.connect(target) as conn:  # changes outside the user's scope
        conn.execute("UPDATE users SET email = 'x@y' WHERE id = ?", (other["id"],))
        conn.execute("DELETE FROM login_attempts")
    (files / "users" / other["id"] / "pdfs" / "more.pdf").write_bytes(b"more")

    result = doctor("--db", target, "--storage", files, "--against", archive, "--user", alice["username"])
    assert result.returncode == 0, result.stderr.decode()
    found = findings(result)
    summary = {f["subject"]: f["detail"] for f in only(found, "rows")}
    assert set(summary) == {"users", "api_keys", "user_sessions", "user_folders_cache", "documents"}
    assert summary["users"].startswith("1 archived rows: 1 equal")
    assert summary["api_keys"].startswith("2 archived rows: 2 equal")
    assert only(found, "files")[0]["detail"].startswith("3 archived documents: 3 equal")

    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE api_keys SET name = 'renamed' WHERE user_id = ?", (alice["id"],))
    (files / "users" / alice["id"] / "pdfs" / "more.pdf").write_bytes(b"more")
    result = doctor("--db", target, "--storage", files, "--against", archive, "--user", alice["id"])
    assert [(f["check"], f["subject"]) for f in problems(findings(result))] == [
        ("row-differs", "api_keys"), ("row-differs", "api_keys"),
        ("file-extra", f"users/{alice['id']}/pdfs/more.pdf")]


def go_json(value) -> bytes:
    """As Go's json.MarshalIndent writes it: keys sorted, <, > and & escaped."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    for char in "<>&":
        text = text.replace(char, "\\u%04x" % ord(char))
    return text.encode()


def aviary_archive(tables: dict[str, list[dict]], files: dict[str, bytes]) -> bytes:
    """A backup as Aviary writes it: rows in no particular order, 0/1 booleans, an
    unknown.json, directory entries, the staging folder in lexical order, gzip'd."""
    members = {f"database/{name}.json": go_json(rows) for name, rows in tables.items()}
    members["database/unknown.json"] = b"null"
    members.update(files)
    paths = set(members)
    for path in members:
        parts = path.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    metadata = {"aviary_version": "v1.7.0", "git_commit": "abc", "export_timestamp": "2025-07-27T10:00:00Z",
                "database_type": "sqlite", "users_exported": None, "total_documents": len(files),
                "total_size_bytes": sum(map(len, files.values())), "exported_tables": sorted(tables),
                "total_users": len(tables["users"]), "total_api_keys": len(tables["api_keys"])}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in ["metadata.json"] + sorted(paths, key=lambda p: p.encode().split(b"/")):
            data = go_json(metadata) if path == "metadata.json" else members.get(path)
            info = tarfile.TarInfo(path)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)


def test_an_archive_of_aviary_itself_is_compared_through_a_hash_table(tmp_path):
    tables = sample.sample_rows(users=4, docs_per_user=2, seed=3)
    documents = {f"filesystem/documents/{key.split('/', 2)[1]}/{key.split('/', 3)[3]}": body
                 for key, body in sample.document_files(tables)}
    # Before v1.6.0 a user's device pairing was a file, which a restore puts in the row.
    paired = tables["users"][0]
    documents[f"filesystem/configs/{paired['id']}/rmapi.conf"] = paired["rmapi_config"].encode()
    paired["rmapi_config"] = ""
    rng = random.Random(5)
    for rows in tables.values():
        rng.shuffle(rows)
    archive = tmp_path / "aviary-backup.tar.gz"
    archive.write_bytes(aviary_archive(tables, documents))
    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    ok("unpack", "--db", target, "--storage", files, "--create-schema", archive)

    result = doctor("--db", target, "--storage", files, "--against", archive)
    assert result.returncode == 0, result.stderr.decode()
    summary = {f["subject"]: f["detail"] for f in only(findings(result), "rows")}
    assert summary["api_keys"] == ("8 archived rows: 8 equal, 0 differ, 0 only in the archive, 0 only in the"
                                   " live database; archive rows not in key order: compared through a hash table")
    assert summary["users"].startswith("4 archived rows: 4 equal")

    # A difference found by hash is still named column by column.
    changed = tables["api_keys"][0]
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE api_keys SET name = 'renamed', key_hash = 'x' WHERE id = ?", (changed["id"],))
        conn.execute("UPDATE users SET rmapi_config = 'other device' WHERE id = ?", (paired["id"],))
    found = problems(findings(doctor("--db", target, "--storage", files, "--against", archive)))
    name = json.dumps(changed["name"], ensure_ascii=False)
    assert found == [
        {"check": "row-differs", "severity": "problem", "subject": "api_keys",
         "detail": f'id={changed["id"]}: name: archive {name}, live "renamed"; key_hash differs'},
        {"check": "row-differs", "severity": "problem", "subject": "users",
         "detail": f"id={paired['id']}: rmapi_config differs from filesystem/configs/{paired['id']}/rmapi.conf"},
    ]


def test_a_library_comparison_streams_from_a_pipe(lite, tmp_path):
    """compare() reads the archive once, front to back, from an unseekable stream."""
    url, data, tables = lite
    db = connect(url)
    read, write = os.pipe()
    with os.fdopen(write, "wb") as out:
        pid = os.fork()
        if pid == 0:  # the child packs into the pipe
            os.close(read)
            pack(connect(url), open_storage(str(data)), out, PackOptions())
            out.flush()
            os._exit(0)
    with os.fdopen(read, "rb") as stream:
        found = [f.as_dict() for f in compare(stream, "-", db, open_storage(str(data)))]
    os.waitpid(pid, 0)
    assert problems(found) == []
    assert len(only(found, "rows")) == 7


# --- options and usage -------------------------------------------------------------------------------------


def test_usage_errors(lite, tmp_path):
    url, data, _ = lite
    result = aviary("doctor", "--db", url, "--storage", data, "--deep", "--against", "-", input=b"")
    assert result.returncode == 2 and b"--deep does not apply with --against" in result.stderr
    result = aviary("doctor", "--db", url, "--storage", data, "--user", "admin")
    assert result.returncode == 2 and b"--user applies with --against only" in result.stderr
    result = aviary("doctor", "--db", url, "--storage", data, "--against", "-", input=b"not a tar")
    assert result.returncode == 1
    assert len(result.stderr.decode().strip().splitlines()) == 1


# --- aviary verify --max-age ---------------------------------------------------------------------------------


def test_verify_max_age(lite, tmp_path):
    url, data, _ = lite
    fresh = pack_to(tmp_path / "fresh.tar.gz", url, ["--storage", data])
    assert aviary("verify", "--max-age", "26h", fresh).returncode == 0

    stale = tmp_path / "stale.tar"
    db = connect(url)
    with open(stale, "wb") as out:
        pack(db, open_storage(str(data)), out, PackOptions(), now_ns=time.time_ns() - 30 * 3600 * 10**9)
    db.close()
    result = aviary("verify", "--max-age", "26h", stale)
    assert result.returncode == 1
    assert b"archive is 30.0 hours old (limit 26 hours)" in result.stderr
    assert aviary("verify", "--max-age", "2d", stale).returncode == 0
    result = aviary("verify", "--max-age", "soon", stale)
    assert result.returncode == 2 and b"expected a duration like 26h" in result.stderr


# --- the manual page ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["groff", "-man", "-ww", "-z"], ["mandoc", "-T", "lint", "-W", "warning"]])
def test_the_manual_page_is_clean(command):
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is not installed")
    done = subprocess.run([*command, str(ROOT / "man" / "aviary-doctor.1")], capture_output=True, text=True)
    assert (done.stdout + done.stderr) == ""
