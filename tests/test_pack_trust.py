"""pack's exit 0 means the archive restores: rows naming no user, a storage root that cannot be
Aviary's, and documents that cannot be packed are each dealt with and said, never passed over
(SQLite + a folder, PostgreSQL + SeaweedFS S3)."""

import io
import json
import os
import sqlite3
import subprocess
import tarfile

import psycopg
import pytest

from archive_helpers import bucket_storage, dump_tables, installation, pack_here, s3_args, s3_env
from aviarytools.storage import open_storage
from helpers import aviary, one_line_error

GONE = "22222222-2222-4222-8222-222222222222"  # a user deleted while foreign keys were off
DOC = "33333333-3333-4333-8333-333333333333"
KEY = "44444444-4444-4444-8444-444444444444"


@pytest.fixture
def lite(tmp_path):
    """SQLite + a folder, as Aviary keeps them: DATA_DIR holds aviary.db and users/."""
    data = tmp_path / "data"
    url = str(data / "aviary.db")
    return url, data, installation(url, data)


def stderr_lines(result) -> list[str]:
    return result.stderr.decode().splitlines()


def restores(archive: bytes, tmp_path, name="restored") -> subprocess.CompletedProcess:
    """unpack of `archive` into a new, empty installation."""
    target = tmp_path / name
    return aviary("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", "-",
                  input=archive)


def plant_orphans_sqlite(url: str) -> None:
    """Rows whose user is gone, as a database that ran with foreign keys off has them."""
    with sqlite3.connect(url) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("INSERT INTO documents (id, user_id, document_name) VALUES (?, ?, 'lost.pdf')", (DOC, GONE))
        conn.execute("INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix) VALUES (?, ?, 'k', 'h', 'p')",
                     (KEY, GONE))
        conn.execute("UPDATE system_settings SET updated_by = ? WHERE key = 'smtp_host'", (GONE,))


# --- rows naming no user -------------------------------------------------------------------------


def test_rows_naming_no_user_are_left_out_with_one_warning_per_table_and_the_archive_restores(lite, tmp_path):
    url, data, tables = lite
    plant_orphans_sqlite(url)
    result = aviary("pack", "--db", url, "--storage", data)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"aviary pack: warning: database/api_keys.json: 1 row whose user_id names no user: left out"
        f" (id={KEY}; `aviary doctor` lists them)",
        f"aviary pack: warning: database/documents.json: 1 row whose user_id names no user: left out"
        f" (id={DOC}; `aviary doctor` lists them)",
        "aviary pack: warning: database/system_settings.json: 1 row whose updated_by names no user:"
        " packed with updated_by null (key=smtp_host; `aviary doctor` lists them)",
    ]
    assert aviary("verify", "-", input=result.stdout).returncode == 0
    restored = restores(result.stdout, tmp_path)
    assert restored.returncode == 0, restored.stderr
    after = dump_tables(str(tmp_path / "restored" / "aviary.db"))
    before = dump_tables(url)
    assert after["users"] == before["users"]
    assert DOC.encode() in before["documents"] and DOC.encode() not in after["documents"]
    assert len(after["documents"].splitlines()) == len(tables["documents"])
    assert b'"key":"smtp_host"' in after["system_settings"] and GONE.encode() not in after["system_settings"]
    # doctor names the same rows, and what pack does with each.
    found = aviary("doctor", "--db", url, "--storage", data).stderr.decode()
    assert f"documents: id={DOC}: user_id {GONE} names no users row: pack leaves the row out" in found
    assert f"system_settings: key=smtp_host: updated_by {GONE} names no users row: pack writes its" \
           " updated_by as null" in found


def test_a_user_id_in_another_case_is_no_orphan_for_pack_as_for_verify(lite, tmp_path):
    url, data, tables = lite
    user = tables["users"][1]["id"]
    with sqlite3.connect(url) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("UPDATE documents SET user_id = upper(user_id) WHERE user_id = ?", (user,))
    result = aviary("pack", "--db", url, "--storage", data)
    assert result.returncode == 0 and stderr_lines(result) == [], result.stderr
    assert aviary("verify", "-", input=result.stdout).returncode == 0


def test_rows_naming_no_user_in_postgresql_and_s3(pg_url, s3_server, s3_bucket, tmp_path):
    storage = bucket_storage(s3_server, s3_bucket)
    tables = installation(pg_url, storage)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the test server's user is a superuser
        conn.execute("ALTER TABLE documents DISABLE TRIGGER ALL")
        conn.execute("UPDATE documents SET user_id = %s WHERE id = %s", (GONE, tables["documents"][4]["id"]))
        conn.execute("ALTER TABLE documents ENABLE TRIGGER ALL")
    result = aviary("pack", "--db", pg_url, *s3_args(s3_server, s3_bucket), env=s3_env(s3_server))
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"aviary pack: warning: database/documents.json: 1 row whose user_id names no user: left out"
        f" (id={tables['documents'][4]['id']}; `aviary doctor` lists them)"]
    assert aviary("verify", "-", input=result.stdout).returncode == 0
    restored = restores(result.stdout, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert len(dump_tables(str(tmp_path / "restored" / "aviary.db"))["documents"].splitlines()) == \
        len(tables["documents"]) - 1


def test_many_orphans_are_named_ten_and_counted(lite):
    url, data, _ = lite
    with sqlite3.connect(url) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.executemany("INSERT INTO documents (id, user_id, document_name) VALUES (?, ?, 'x.pdf')",
                         [(f"55555555-5555-4555-8555-{n:012d}", GONE) for n in range(25)])
    result = aviary("pack", "--db", url, "--storage", data, "-o", os.devnull)
    assert result.returncode == 0
    (line,) = stderr_lines(result)
    assert line.startswith("aviary pack: warning: database/documents.json: 25 rows whose user_id names no user:")
    assert line.count("id=55555555") == 10 and line.endswith(", and 15 more; `aviary doctor` lists them)")


# --- a storage root that cannot be Aviary's -------------------------------------------------------


def test_the_users_folder_given_as_the_root_fails_naming_the_folder_above(lite, tmp_path):
    url, data, _ = lite
    out = tmp_path / "backup.tar"
    result = aviary("pack", "--db", url, "--storage", data / "users", "-o", out)
    assert one_line_error(result) == (
        f"aviary pack: {data}/users: holds folders named by user ids (<user id>/pdfs/...) but no users/:"
        f" this is Aviary's users folder itself; give the root above it (--storage {data})")
    assert not out.exists() and os.listdir(tmp_path) == ["data"]


def test_an_empty_storage_fails_while_the_database_has_documents_unless_allowed(lite, tmp_path):
    url, data, tables = lite
    empty = tmp_path / "empty"
    empty.mkdir()
    result = aviary("pack", "--db", url, "--storage", empty, "-o", tmp_path / "backup.tar")
    assert one_line_error(result) == (
        f"aviary pack: {empty}: holds nothing, while the database has {len(tables['documents'])} documents"
        f" rows of 3 users: not Aviary's storage root? Expected users/<user id>/pdfs/... there (Aviary's"
        " DATA_DIR, or the root of its bucket); --allow-empty-storage packs it without documents")
    assert not (tmp_path / "backup.tar").exists()
    # A folder with something else in it, and a single-user installation's, are named as such.
    (empty / "notes.txt").write_text("x")
    assert "holds no document under users/<user id>/pdfs/, while" in \
        aviary("pack", "--db", url, "--storage", empty, "-o", os.devnull).stderr.decode()
    (empty / "pdfs").mkdir()
    (empty / "pdfs" / "a.pdf").write_text("x")
    assert "holds pdfs/ but no users/ (a single-user installation? see pack --single-user)" in \
        aviary("pack", "--db", url, "--storage", empty, "-o", os.devnull).stderr.decode()
    # Said on purpose: packed, and it restores (the documents rows without their files).
    allowed = aviary("pack", "--db", url, "--storage", empty, "--allow-empty-storage")
    assert allowed.returncode == 0, allowed.stderr
    assert aviary("verify", "-", input=allowed.stdout).returncode == 0


def test_a_fresh_installation_with_no_documents_packs(tmp_path):
    data = tmp_path / "data"
    url = str(data / "aviary.db")
    installation(url, data, docs_per_user=0)
    result = aviary("pack", "--db", url, "--storage", data)
    assert result.returncode == 0, result.stderr
    assert aviary("verify", "-", input=result.stdout).returncode == 0


def test_a_bucket_prefix_one_level_too_deep_fails(pg_url, s3_server, s3_bucket):
    installation(pg_url, bucket_storage(s3_server, s3_bucket))
    result = aviary("pack", "--db", pg_url, "--storage", f"s3://{s3_bucket}/users", "--s3-endpoint",
                    s3_server.endpoint, "--s3-path-style", "-o", os.devnull, env=s3_env(s3_server))
    assert result.returncode == 1
    assert stderr_lines(result)[-1].endswith(
        f"this is Aviary's users folder itself; give the root above it (--storage s3://{s3_bucket})")


# --- documents that cannot be packed -------------------------------------------------------------


def test_a_linked_document_and_a_fifo_are_left_out_with_a_warning_each(lite):
    url, data, tables = lite
    folder = data / "users" / tables["users"][0]["id"] / "pdfs"
    (folder / "linked.pdf").symlink_to(data / "aviary.db")
    os.mkfifo(folder / "pipe.pdf")
    result = aviary("pack", "--db", url, "--storage", data)
    assert result.returncode == 0, result.stderr
    key = f"users/{tables['users'][0]['id']}/pdfs/"
    assert stderr_lines(result) == [
        f"aviary pack: warning: {key}linked.pdf: a symbolic link (to {data / 'aviary.db'}), not a regular file:"
        " left out",
        f"aviary pack: warning: {key}pipe.pdf: a fifo, not a regular file: left out"]
    assert aviary("verify", "-", input=result.stdout).returncode == 0


def test_a_document_that_cannot_be_read_is_left_out_listed_and_counted(lite):
    url, data, tables = lite
    key = f"users/{tables['users'][1]['id']}/pdfs/doc-0 ñ.pdf"
    storage = open_storage(str(data))
    if os.geteuid() == 0:  # root reads any file whatever its mode: it becomes a link after the listing
        class Swapping(type(storage)):
            def list(self, prefix=""):
                yield from super().list(prefix)
                (data / key).unlink()
                (data / key).symlink_to(data / "aviary.db")
        storage.__class__ = Swapping
    else:
        (data / key).chmod(0)
    summary, archive = pack_here(url, storage)
    assert [(member, why.split(": ")[-1]) for member, _, why in summary.unreadable] == [
        (f"filesystem/documents/{key.split('/', 1)[1].replace('pdfs/', '')}",
         "a symbolic link now" if os.geteuid() == 0 else "Permission denied")]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        record = json.loads(tar.extractfile("vanished.ndjson").read())
    assert record["member"] == summary.unreadable[0][0] and record["why"] == summary.unreadable[0][2]
    assert summary.documents == len(tables["documents"]) - 1
    result = aviary("verify", "-", input=archive)  # the totals still add up
    assert result.returncode == 0, result.stderr


def test_documents_under_a_folder_that_is_no_user_id_are_left_out_with_a_warning(lite):
    url, data, tables = lite
    user = tables["users"][0]["id"]
    for folder in (user.upper(), "not-a-uuid"):  # as Aviary's restore of a hand-made archive leaves them
        (data / "users" / folder / "pdfs").mkdir(parents=True)
        (data / "users" / folder / "pdfs" / "x.pdf").write_bytes(b"%PDF x")
    result = aviary("pack", "--db", url, "--storage", data)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"aviary pack: warning: users/{user.upper()}/: 1 file(s) under pdfs/ of a folder that is not a user id"
        f" as Aviary names one (user {user}, in another form): left out (Aviary shows them to no one)",
        "aviary pack: warning: users/not-a-uuid/: 1 file(s) under pdfs/ of a folder that is not a user id"
        " as Aviary names one: left out (Aviary shows them to no one)"]
    assert aviary("verify", "-", input=result.stdout).returncode == 0
