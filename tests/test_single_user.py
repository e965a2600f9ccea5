"""Single-user installations: a backup (pack --single-user), and the move to multi-user in one
pipe (unpack --adopt USER), across backends, atomic, and safe in Aviary's own hands."""

import io
import json
import sqlite3
import tarfile

import pytest

from archive_helpers import (all_ok, decodes_into_aviarys_struct, dump_tables, installation, objects, pipeline,
                             s3_args, s3_env, state)
from aviarytools.archive import layout
from helpers import aviary, ok, one_line_error

PAIRING = "[auth]\ndevicetoken=single-user-<pairing>\n"
FILES = {"Books/dune.epub": b"PK epub", "a.pdf": b"%PDF-1.7 a", "notes/today.txt": b"not a pdf",
         "Ünïcode name.pdf": b"%PDF u"}


@pytest.fixture
def single(tmp_path):
    """A single-user Aviary: documents under DATA_DIR/pdfs, the pairing in its own file."""
    data = tmp_path / "single"
    for path, body in FILES.items():
        (data / "pdfs" / path).parent.mkdir(parents=True, exist_ok=True)
        (data / "pdfs" / path).write_bytes(body)
    (tmp_path / "rmapi.conf").write_text(PAIRING)
    return data, tmp_path / "rmapi.conf"


def packed(single, *extra) -> bytes:
    data, pairing = single
    return ok("pack", "--single-user", "--storage", data, "--rmapi-conf", pairing, *extra)


def members(archive: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar}


def documents_state(url, files):
    """The tables, and the documents (the database file sits in the same folder)."""
    tables, found = state(url, files)
    return tables, {k: v for k, v in found.items() if k.startswith("users/")}


@pytest.fixture
def multi(tmp_path):
    """The multi-user installation the documents move to."""
    url, files = str(tmp_path / "multi" / "aviary.db"), tmp_path / "multi"
    tables = installation(url, files, users=3)
    with sqlite3.connect(url) as conn:
        conn.execute("UPDATE users SET rmapi_config = NULL WHERE username = 'admin'")
    return url, files, {u["username"]: u["id"] for u in tables["users"]}


def test_every_file_is_packed_with_the_pairing_and_verify_accepts_it(single):
    archive = packed(single)
    found = members(archive)
    names = list(found)
    assert names[0] == "metadata.json" and names[-1] == "checksums.xxh128"
    assert {n.removeprefix(layout.SINGLE_USER_DOCUMENTS): found[n] for n in names
            if n.startswith(layout.SINGLE_USER_DOCUMENTS) and found[n] is not None} == FILES
    assert found[layout.PAIRING] == PAIRING.encode()
    assert aviary("verify", input=archive).returncode == 0
    info = json.loads(ok("info", input=archive))
    assert info["users_exported"] == "single-user" and info["aviarytools"]["single_user"]["pairing"] is True


def test_no_pairing_file_is_fine_and_said(single, tmp_path):
    data, _ = single
    result = aviary("pack", "--single-user", "--storage", data, "--rmapi-conf", tmp_path / "none")
    assert result.returncode == 0
    assert b"no device pairing there: none packed" in result.stderr
    assert layout.PAIRING not in members(result.stdout)
    assert aviary("pack", "--single-user", "--db", "x.db", "--storage", data).returncode == 2


def test_pdf_dir_names_the_documents_folder(single, tmp_path):
    data, pairing = single
    archive = ok("pack", "--single-user", "--rmapi-conf", pairing, env={"PDF_DIR": str(data / "pdfs")})
    assert f"{layout.SINGLE_USER_DOCUMENTS}Books/dune.epub" in members(archive)


# -- what Aviary's own restore page would do with it (../shared/aviary-format.md) ---------------

@pytest.mark.parametrize("args, named", [
    (["pack", "--single-user", "--db", "x.db"], "--db"),
    (["pack", "--single-user", "--exclude-tables", "users"], "--exclude-tables"),
    (["pack", "--rmapi-conf", "rmapi.conf"], "--rmapi-conf"),
    (["unpack", "-C", "out", "--exclude-tables", "users"], "--exclude-tables"),
])
def test_an_option_that_does_not_apply_is_a_usage_error_naming_it(args, named, tmp_path):
    result = aviary(*args, cwd=tmp_path, input=b"")
    assert result.returncode == 2
    assert named in result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_aviarys_admin_page_refuses_a_single_user_archive_and_would_find_nothing_to_wipe(single, multi):
    archive = packed(single)
    found = members(archive)
    assert not decodes_into_aviarys_struct(json.loads(found["metadata.json"]))
    # Its restore wipes every user's documents whenever an archive has a filesystem/ folder.
    assert not [n for n in found if n == "filesystem" or n.startswith("filesystem/")]
    # ...while an ordinary pack is one it takes.
    url, files, _ = multi
    assert decodes_into_aviarys_struct(json.loads(members(ok("pack", "--db", url, "--storage", files))["metadata.json"]))


# -- adopting ----------------------------------------------------------------------------------


def test_adopt_gives_the_documents_and_the_pairing_to_one_user_and_touches_no_one_else(single, multi):
    url, files, users = multi
    admin = users["admin"]
    before_tables, before_objects = documents_state(url, files)
    result = aviary("unpack", "--adopt", "admin", "--db", url, "--storage", files, input=packed(single))
    assert result.returncode == 0, result.stderr.decode()
    after_tables, after_objects = documents_state(url, files)
    assert {k: v for k, v in after_objects.items() if k not in before_objects} == {
        layout.storage_key(admin, path): v for path, v in objects(single[0] / "pdfs").items()}
    assert {k: v for k, v in after_objects.items() if k in before_objects} == before_objects  # none deleted
    changed = [t for t in after_tables if after_tables[t] != before_tables[t]]
    assert changed == ["users"]
    rows = {json.loads(line)["id"]: json.loads(line) for line in after_tables["users"].splitlines()}
    assert rows[admin]["rmapi_config"] == PAIRING
    assert [r for r in rows.values() if r["id"] != admin] == [
        json.loads(line) for line in before_tables["users"].splitlines() if json.loads(line)["id"] != admin]

    dry = aviary("unpack", "--adopt", admin, "--dry-run", "--db", url, "--storage", files, input=packed(single))
    assert dry.returncode == 0, dry.stderr.decode()
    assert b", 0 stale (dry run" in dry.stderr  # adopting removes none of theirs
    again = aviary("unpack", "--adopt", admin, "--db", url, "--storage", files, input=packed(single))
    assert again.returncode == 0  # the same documents are there: nothing to do
    assert b"has a device pairing already: kept" in again.stderr
    assert documents_state(url, files) == (after_tables, after_objects)


def test_adopt_refuses_to_replace_a_different_document_and_changes_nothing(single, multi):
    url, files, users = multi
    (files / layout.storage_key(users["zoë"], "a.pdf")).write_bytes(b"%PDF zoe's own a.pdf")
    before = state(url, files)
    for dry_run in (["--dry-run"], []):
        result = aviary("unpack", "--adopt", "zoë", *dry_run, "--db", url, "--storage", files, input=packed(single))
        assert "has a different document there already" in one_line_error(result)
        assert state(url, files) == before


def test_a_single_user_archive_needs_adopt_and_adopt_needs_one(single, multi):
    url, files, _ = multi
    before = state(url, files)
    refused = aviary("unpack", "--db", url, "--storage", files, input=packed(single))
    assert "restore it with --adopt USER" in one_line_error(refused)
    multi_user = ok("pack", "--db", url, "--storage", files)
    assert "--adopt takes a single-user archive" in one_line_error(
        aviary("unpack", "--adopt", "admin", "--db", url, "--storage", files, input=multi_user))
    assert "no user named 'nobody'" in one_line_error(
        aviary("unpack", "--adopt", "nobody", "--db", url, "--storage", files, input=packed(single)))
    assert state(url, files) == before


def test_a_damaged_single_user_archive_adopts_nothing(single, multi):
    url, files, _ = multi
    archive = bytearray(packed(single))
    at = archive.index(b"%PDF-1.7 a")
    archive[at + 3] ^= 1
    before = state(url, files)
    result = aviary("unpack", "--adopt", "admin", "--db", url, "--storage", files, input=bytes(archive))
    assert "XXH128 mismatch" in one_line_error(result)
    assert state(url, files) == before


def test_single_user_on_a_folder_to_postgresql_and_s3_in_one_pipe(single, tmp_path, pg_url, s3_server, s3_bucket):
    installation(pg_url, None, users=2)
    data, pairing = single
    all_ok(pipeline(["aviary", "pack", "--single-user", "--storage", data, "--rmapi-conf", pairing],
                    ["aviary", "unpack", "--adopt", "admin", "--db", pg_url, *s3_args(s3_server, s3_bucket)],
                    env=s3_env(s3_server)))
    admin = json.loads(next(line for line in dump_tables(pg_url)["users"].splitlines() if b'"admin"' in line))
    assert admin["rmapi_config"] in (PAIRING, admin["rmapi_config"])  # kept if the sample gave one
    client = s3_server.client()
    keys = {o["Key"]: client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read()
            for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", []) if not o["Key"].endswith("/")}
    assert keys == {layout.storage_key(admin["id"], path): body for path, body in FILES.items()}
