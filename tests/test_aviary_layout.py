"""aviarytools reads installations as Aviary v1.9.0 lays them out (../shared/aviary-format.md):
single-user download copies, the pairing in $HOME, `<NAME>_FILE` variables, and the other
facts the notes changed (the migrations table, uuid folder names, `._*` members, the legacy
users.o_id_c_subject, SQLite's time formats)."""

import io
import os
import json
import sqlite3
import tarfile

import pytest
import xxhash

from archive_helpers import (as_aviary_rows, aviary_tar, bucket_storage, dump_tables, go_json, installation,
                             objects)
from aviarytools import sample
from helpers import aviary, one_line_error

TOKEN = "0123456789abcdef" * 4  # a download link's token: 64 hex digits
PAIRING = b"[auth]\ndevicetoken=in-home\n"


def members(archive: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar}


def stderr_lines(result) -> list[str]:
    return result.stderr.decode().splitlines()


# --- single-user -------------------------------------------------------------------------------


@pytest.fixture
def single(tmp_path):
    """A single-user Aviary with download links on: copies under pdfs/downloads/<token>/."""
    data = tmp_path / "data"
    files = {"a.pdf": b"%PDF a", f"downloads/{TOKEN}/a.pdf": b"%PDF a", f"downloads/{TOKEN}/b.epub": b"PK",
             "downloads/my own folder/c.pdf": b"%PDF c"}
    for path, body in files.items():
        (data / "pdfs" / path).parent.mkdir(parents=True, exist_ok=True)
        (data / "pdfs" / path).write_bytes(body)
    home = tmp_path / "home"
    (home / ".config" / "rmapi").mkdir(parents=True)
    (home / ".config" / "rmapi" / "rmapi.conf").write_bytes(PAIRING)
    return data, home


def test_download_copies_are_left_out_with_one_counted_warning(single):
    data, home = single
    result = aviary("pack", "--single-user", "--storage", data, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"aviary pack: warning: {data}/pdfs/downloads/: 2 file(s) of Aviary's download links"
        " (downloads/<token>/, transient copies, not documents): left out"]
    documents = sorted(name for name, body in members(result.stdout).items()
                       if name.startswith("single-user/pdfs/") and body is not None)
    assert documents == ["single-user/pdfs/a.pdf", "single-user/pdfs/downloads/my own folder/c.pdf"]
    assert aviary("verify", "-", input=result.stdout).returncode == 0


def test_download_copies_in_pdf_dir_are_left_out_too(single):
    data, home = single
    result = aviary("pack", "--single-user", env={"HOME": str(home), "PDF_DIR": str(data / "pdfs")})
    assert result.returncode == 0, result.stderr
    assert "2 file(s) of Aviary's download links" in result.stderr.decode()
    assert not any("downloads/" + TOKEN in name for name in members(result.stdout))


def test_the_pairing_is_read_from_the_home_of_the_user_running_pack(single):
    data, home = single
    archive = aviary("pack", "--single-user", "--storage", data, env={"HOME": str(home)})
    assert archive.returncode == 0, archive.stderr
    assert members(archive.stdout)["single-user/rmapi.conf"] == PAIRING
    help_text = aviary("pack", "--help").stdout.decode()
    assert "$HOME/.config/rmapi/rmapi.conf" in help_text and "/root/" not in help_text


def test_adopt_leaves_out_download_copies_an_older_pack_took(single, tmp_path):
    data, home = single
    (data / "pdfs" / "downloads").rename(data / "pdfs" / "kept")  # packed as documents, then renamed back
    archive = aviary("pack", "--single-user", "--storage", data, env={"HOME": str(home)})
    assert archive.returncode == 0, archive.stderr
    older = io.BytesIO()  # as aviarytools before v1.9.0's layout wrote it (no checksums list then to match)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar, tarfile.open(fileobj=older, mode="w") as out:
        for member in tar:
            if member.name != "checksums.xxh128":
                body = tar.extractfile(member) if member.isfile() else None
                member.name = member.name.replace("single-user/pdfs/kept", "single-user/pdfs/downloads")
                out.addfile(member, body)
    url, files = tmp_path / "multi" / "aviary.db", tmp_path / "multi"
    installation(str(url), files, users=1)
    result = aviary("unpack", "--adopt", "admin", "--db", url, "--storage", files, input=older.getvalue())
    assert result.returncode == 0, result.stderr
    assert "single-user/pdfs/downloads/: 2 file(s) of Aviary's download links (downloads/<token>/, transient" \
           " copies, not documents): not adopted" in result.stderr.decode()
    adopted = {key.split("/pdfs/", 1)[1] for key in objects(files) if "/pdfs/" in key}
    assert "a.pdf" in adopted and "downloads/my own folder/c.pdf" in adopted
    assert not any(path.startswith(f"downloads/{TOKEN}/") for path in adopted)


# --- <NAME>_FILE -------------------------------------------------------------------------------


def test_every_aviary_variable_also_works_as_name_file(tmp_path, pg_server, pg_url, s3_server, s3_bucket):
    """A Docker-secrets deployment: the password, the S3 keys and the settings in files."""
    storage = bucket_storage(s3_server, s3_bucket)
    installation(pg_url, storage, users=1)
    values = {"DB_TYPE": "postgres", "DB_HOST": "127.0.0.1", "DB_PORT": str(pg_server.port),
              "DB_USER": pg_server.user, "DB_PASSWORD": pg_server.password, "DB_NAME": pg_url.rsplit("/", 1)[1],
              "STORAGE_BACKEND": "s3", "S3_BUCKET": s3_bucket, "S3_ENDPOINT": s3_server.endpoint,
              "S3_FORCE_PATH_STYLE": "true", "S3_ACCESS_KEY_ID": s3_server.access_key,
              "S3_SECRET_ACCESS_KEY": s3_server.secret_key}
    env = {}
    for name, value in values.items():
        (tmp_path / name).write_text(f"{value}\n")  # as `echo value > secret` writes it: trimmed
        env[f"{name}_FILE"] = str(tmp_path / name)
    result = aviary("pack", env=env)
    assert result.returncode == 0, result.stderr
    assert aviary("verify", "-", input=result.stdout).returncode == 0
    assert sum(1 for name, body in members(result.stdout).items()
               if name.startswith("filesystem/documents/") and body is not None) == 3
    # The variable itself, when set and not empty, wins over its file (as in Aviary).
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    assert aviary("pack", "-o", tmp_path / "b.tar", env={**env, "DB_PASSWORD": pg_server.password,
                                                         "DB_PASSWORD_FILE": str(wrong)}).returncode == 0
    # A file that cannot be read is said, naming the variable; the secret never shows.
    failed = aviary("pack", "-o", tmp_path / "c.tar", env={**env, "S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "nope")})
    assert failed.returncode == 1
    assert stderr_lines(failed) == [
        f"aviary pack: S3_SECRET_ACCESS_KEY_FILE={tmp_path / 'nope'}: No such file or directory:"
        " give a readable file holding the value"]


def test_pdf_dir_and_data_dir_as_files(tmp_path):
    data = tmp_path / "data"
    installation(str(data / "aviary.db"), data, users=1)
    (tmp_path / "data_dir").write_text(f"  {data}\n")
    assert aviary("tables", env={"DATA_DIR_FILE": str(tmp_path / "data_dir")}).returncode == 0
    (data / "single" / "a.pdf").parent.mkdir()
    (data / "single" / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "pdf_dir").write_text(f"{data / 'single'}\n")
    packed = aviary("pack", "--single-user", "--rmapi-conf", tmp_path / "none",
                    env={"PDF_DIR_FILE": str(tmp_path / "pdf_dir")})
    assert packed.returncode == 0, packed.stderr
    assert members(packed.stdout)["single-user/pdfs/a.pdf"] == b"%PDF"


# --- the other facts the notes changed -----------------------------------------------------------


def archive_of(files: dict[str, bytes], users: list[dict], documents: int) -> bytes:
    """An archive as Aviary v1.9.0 writes it, holding `files` and these users."""
    metadata = {"aviary_version": "v1.9.0", "git_commit": "unknown", "export_timestamp": "2026-05-20T10:11:12Z",
                "database_type": "sqlite", "users_exported": [u["id"] for u in users],
                "total_documents": documents, "total_size_bytes": sum(len(b) for n, b in files.items()
                                                                      if n.startswith("filesystem/documents/")),
                "exported_tables": ["users"], "total_users": len(users), "total_api_keys": 0}
    return aviary_tar(metadata, {"database/users.json": go_json(as_aviary_rows(users)), **files})


def test_user_folders_in_every_form_gos_parser_takes_restore_to_their_user(tmp_path):
    users = sample.sample_rows(users=1, docs_per_user=0)["users"]
    user = users[0]["id"]
    forms = [user, user.upper(), user.replace("-", ""), "{" + user + "}", "URN:UUID:" + user]
    files = {f"filesystem/documents/{form}/d{n}.pdf": f"document {n}".encode() for n, form in enumerate(forms)}
    archive = archive_of(files, users, len(forms))
    checked = aviary("verify", "-", input=archive)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.decode().count(f"not the canonical form of user id {user}") == 4
    result = aviary("unpack", "--db", tmp_path / "aviary.db", "--storage", tmp_path, "--create-schema", "-",
                    input=archive)
    assert result.returncode == 0, result.stderr
    assert {key: body for key, body in objects(tmp_path).items() if key.startswith("users/")} == {
        f"users/{user}/pdfs/d{n}.pdf": xxhash.xxh3_128_hexdigest(f"document {n}".encode()) for n in range(len(forms))}


def test_the_legacy_o_id_c_subject_column_restores_where_it_can_and_is_dropped_where_it_cannot(tmp_path):
    data = tmp_path / "v140"
    url = str(data / "aviary.db")
    installation(url, data, users=2)
    with sqlite3.connect(url) as conn:  # a database first created by Aviary v1.4.0
        conn.execute("ALTER TABLE users ADD COLUMN o_id_c_subject text")
        conn.execute("CREATE UNIQUE INDEX idx_users_o_id_c_subject ON users (o_id_c_subject)")
        conn.execute("UPDATE users SET o_id_c_subject = 'sub-' || username")
    archive = aviary("pack", "--db", url, "--storage", data)
    assert archive.returncode == 0, archive.stderr
    # Into a copy of itself (--create-schema from the archive): the column and its values come back.
    copy = tmp_path / "copy"
    assert aviary("unpack", "--db", copy / "aviary.db", "--storage", copy, "--create-schema", "-",
                  input=archive.stdout).returncode == 0
    assert dump_tables(str(copy / "aviary.db"))["users"] == dump_tables(url)["users"]
    # Into a database Aviary made since v1.4.1: nothing Aviary reads is lost, so no refusal.
    newer = tmp_path / "newer"
    aviary("init-schema", "--db", newer / "aviary.db")
    result = aviary("unpack", "--db", newer / "aviary.db", "--storage", newer, "-", input=archive.stdout)
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        "aviary unpack: warning: users.o_id_c_subject: the target table has no such column: 2 value(s) dropped:"
        " Aviary v1.4.0's name for oidc_subject (renamed in v1.4.1), never read since"]


def test_the_migrations_table_is_neither_packed_nor_touched_by_a_restore(tmp_path):
    data = tmp_path / "data"
    url = str(data / "aviary.db")
    installation(url, data, users=1)
    done = [("SCHEMA_INIT",), ("202504300001_add_contrast_setting_to_users",)]
    with sqlite3.connect(url) as conn:  # gormigrate's table
        conn.execute("CREATE TABLE migrations (id varchar(255) PRIMARY KEY)")
        conn.executemany("INSERT INTO migrations VALUES (?)", done)
    archive = aviary("pack", "--db", url, "--storage", data)
    assert archive.returncode == 0, archive.stderr
    assert not any("migrations" in name for name in members(archive.stdout))
    with sqlite3.connect(url) as conn:
        conn.execute("DELETE FROM migrations WHERE id = 'SCHEMA_INIT'")
    assert aviary("unpack", "--db", url, "--storage", data, "-", input=archive.stdout).returncode == 0
    with sqlite3.connect(url) as conn:
        assert conn.execute("SELECT id FROM migrations").fetchall() == done[1:]


def test_sqlite_time_text_in_every_form_aviary_and_sqlite_write(tmp_path):
    data = tmp_path / "data"
    url = str(data / "aviary.db")
    installation(url, data, users=1)
    stored = {"2025-07-27 10:11:12": "2025-07-27T10:11:12Z",  # CURRENT_TIMESTAMP: UTC, no offset
              "2025-07-27 10:11:12.5+02:00": "2025-07-27T08:11:12.5Z",  # Go's driver: the server's zone
              "2025-07-27 10:11:12.123456789-07:00": "2025-07-27T17:11:12.123456789Z",
              "0001-01-01 00:00:00+00:00": "0001-01-01T00:00:00Z"}  # a time.Time never set
    with sqlite3.connect(url) as conn:
        conn.executemany("INSERT INTO login_attempts (id, ip_address, attempted_at) VALUES (?, '192.0.2.9', ?)",
                         [(f"66666666-6666-4666-8666-{n:012d}", text) for n, text in enumerate(stored)])
    archive = aviary("pack", "--db", url, "--storage", data)
    assert archive.returncode == 0, archive.stderr
    rows = json.loads(members(archive.stdout)["database/login_attempts.json"])
    assert [r["attempted_at"] for r in rows if r["id"].startswith("66666666")] == list(stored.values())


def test_a_single_user_pack_of_the_documents_folder_itself_fails_naming_the_one_above(single, tmp_path):
    data, home = single
    result = aviary("pack", "--single-user", "--storage", data / "pdfs", "-o", tmp_path / "su.tar",
                    env={"HOME": str(home)})
    assert one_line_error(result) == (
        f"aviary pack: {data}/pdfs: no pdfs/ but documents (a.pdf): this is the documents folder itself; give"
        f" the folder above it (--storage {data}), or set PDF_DIR={data}/pdfs without --storage;"
        " --allow-empty-storage packs it without documents")
    assert not (tmp_path / "su.tar").exists()
    allowed = aviary("pack", "--single-user", "--storage", data / "pdfs", "--allow-empty-storage",
                     env={"HOME": str(home)})
    assert allowed.returncode == 0, allowed.stderr
    # A multi-user installation's storage is named as such; an empty folder (a fresh one) packs.
    multi = tmp_path / "multi"
    installation(str(multi / "aviary.db"), multi, users=1)
    refused = aviary("pack", "--single-user", "--storage", multi, "-o", os.devnull, env={"HOME": str(home)})
    assert stderr_lines(refused)[-1].endswith("a multi-user installation's storage; pack it without --single-user")
    (tmp_path / "fresh").mkdir()
    assert aviary("pack", "--single-user", "--storage", tmp_path / "fresh", "-o", os.devnull,
                  env={"HOME": str(home)}).returncode == 0
