"""Archives other tools read, and archives Aviary wrote.

A pack survives gzip and a plain `tar -x` (then `xxhsum -c` holds), GNU tar and Python's
tarfile list it without a word; and an archive made the way Aviary makes it, with every
quirk the format has, restores completely into SQLite and PostgreSQL.
"""

import gzip
import io
import json
import re
import subprocess
import tarfile
import warnings

import pytest
import xxhash

from archive_helpers import (LEGACY_PAIRING, all_ok, aviary_made_archive, dump_tables, installation,
                             load_rows, objects, pipeline, state)
from helpers import aviary, ok


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A sample installation (SQLite + folder), its state and its pack."""
    root = tmp_path_factory.mktemp("packed")
    db, data = str(root / "aviary.db"), root / "data"
    installation(db, data, users=3)
    archive = root / "aviary.tar"
    archive.write_bytes(ok("pack", "--db", db, "--storage", data))
    return {"db": db, "data": data, "archive": archive, "state": state(db, data)}


def restore_into(tmp_path, name, *source, stdin=None):
    """Restore into a new SQLite database and folder; returns their state."""
    db, data = str(tmp_path / f"{name}.db"), tmp_path / f"{name}-data"
    ok("unpack", *source, "--db", db, "--storage", data, "--create-schema", input=stdin)
    return state(db, data)


# --- other tools -----------------------------------------------------------------------------


def test_a_pack_restores_after_gzip_and_from_pack_z(packed, tmp_path):
    db, data = str(tmp_path / "piped.db"), tmp_path / "piped-data"
    all_ok(pipeline(["aviary", "pack", "--db", packed["db"], "--storage", packed["data"]],
                    ["gzip", "-c"],
                    ["aviary", "unpack", "--db", db, "--storage", data, "--create-schema"]))
    assert state(db, data) == packed["state"]

    compressed = tmp_path / "aviary.tar.gz"
    ok("pack", "-z", "-o", compressed, "--db", packed["db"], "--storage", packed["data"])
    assert gzip.decompress(compressed.read_bytes())[:13] == b"metadata.json"
    assert restore_into(tmp_path, "z", compressed) == packed["state"]


def test_tar_x_then_xxhsum_c_checks_every_file_and_tar_c_packs_it_again(packed, tmp_path):
    subprocess.run(["tar", "-xf", packed["archive"], "-C", tmp_path], check=True)
    check = subprocess.run(["xxhsum", "-c", "checksums.xxh128"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.decode().splitlines()
    assert len(lines) == 1 + 7 + 9 and all(line.endswith(": OK") for line in lines)
    extracted = tmp_path / "filesystem/documents"
    documents = {"users/" + p.relative_to(extracted).as_posix().replace("/", "/pdfs/", 1):
                 xxhash.xxh3_128_hexdigest(p.read_bytes()) for p in extracted.rglob("*") if p.is_file()}
    assert documents == packed["state"][1]

    # Packed again by GNU tar (its own format, folders with a slash), metadata.json first: restorable.
    again = subprocess.run(["tar", "-C", tmp_path, "-czf", "-", "metadata.json", "database", "filesystem",
                            "checksums.xxh128"], capture_output=True, check=True).stdout
    assert restore_into(tmp_path, "again", stdin=again) == packed["state"]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_gnu_tar_lists_a_pack_without_a_warning(packed, compressed, tmp_path):
    archive = packed["archive"]
    if compressed:
        archive = tmp_path / "aviary.tar.gz"
        archive.write_bytes(gzip.compress(packed["archive"].read_bytes()))
    listed = subprocess.run(["tar", "-tvf", archive], capture_output=True)
    assert (listed.returncode, listed.stderr) == (0, b"")
    names = [line.split(maxsplit=5)[5] for line in listed.stdout.decode().splitlines()]
    ours = [json.loads(line)["path"] for line in ok("ls", archive).splitlines()]
    assert [n.rstrip("/") for n in names] == ours
    assert ours[0] == "metadata.json" and ours[-1] == "checksums.xxh128"


def test_python_tarfile_lists_and_extracts_a_pack_without_a_warning(packed, tmp_path, capsys):
    data = packed["archive"].read_bytes()
    for n, archive in enumerate((data, gzip.compress(data))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # debug=3: tarfile tells on stderr about every header it had to skip or guess.
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*", debug=3) as tar:
                names = tar.getnames()
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*", errorlevel=2) as tar:
                tar.extractall(tmp_path / str(n), filter="data")  # the strict filter Python 3.14 defaults to
        assert caught == []
        assert capsys.readouterr() == ("", "")
        assert names[0] == "metadata.json" and len(names) == len(set(names)) == 30


# --- what Aviary writes ----------------------------------------------------------------------


def test_the_aviary_made_archive_has_every_quirk():
    archive, _, _ = aviary_made_archive()
    assert archive[:2] == b"\x1f\x8b"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
        users = tar.extractfile("database/users.json").read()
        settings = tar.extractfile("database/system_settings.json").read()
        keys = tar.extractfile("database/api_keys.json").read()
        empty = tar.extractfile("database/login_attempts.json").read()
        metadata = json.load(tar.extractfile("metadata.json"))
    names = [m.name for m in members]
    assert names[:3] == ["metadata.json", "database", "database/._users.json"]
    assert names.index("database/api_keys.json") < names.index("database/users.json")
    assert "filesystem/configs" in names and "database/unknown.json" in names
    assert metadata["exported_tables"].count("unknown") == 3 and "checksums.xxh128" not in names
    assert any(n.startswith("filesystem/documents/") and "/._" in n for n in names)
    plain = gzip.decompress(archive)
    assert plain[-1024:] == bytes(1024) and plain[-1536:-1024] != bytes(512)  # no record padding
    assert users.startswith(b'[\n  {\n    "conflict_resolution": "abort",\n    "contrast_setting"')
    assert '"Ünïcode \\u003chtml\\u003e \\u0026 co"'.encode() in settings
    assert empty == b"null"
    assert re.search(rb'"created_at": "2025-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6,9}[+-]\d\d:\d\d"', users)
    assert b'"reset_token_expires": "0001-01-01T00:00:00Z"' in users
    assert b'"is_admin": 1' in users and b'"is_active": true' in keys
    assert b'"page_dpi": 226,' in users


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_an_archive_aviary_wrote_restores_completely(target, tmp_path, request):
    archive, tables, documents = aviary_made_archive()
    if target == "sqlite":
        url, reference = str(tmp_path / "restored.db"), str(tmp_path / "reference.db")
    else:
        url, reference = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_reference")
    load_rows(reference, tables)

    restored = aviary("unpack", "--db", url, "--storage", tmp_path / "data", "--create-schema", input=archive)
    assert restored.returncode == 0, restored.stderr.decode()
    # A column Aviary's rows carry but the target lacks, null in every row: nothing is lost.
    assert ("documents.deleted_at: the target table has no such column: dropped (the archive holds"
            " no value in it)") in restored.stderr.decode()
    dumped = dump_tables(url)
    assert dumped == dump_tables(reference)
    assert objects(tmp_path / "data") == documents

    users = [json.loads(line) for line in dumped["users"].splitlines()]
    keys = [json.loads(line) for line in dumped["api_keys"].splitlines()]
    sessions = [json.loads(line) for line in dumped["user_sessions"].splitlines()]
    admin = next(u for u in users if u["username"] == "admin")
    assert admin["is_admin"] is True and admin["is_active"] is True
    assert {k["key_hash"] for k in keys} == {k["key_hash"] for k in tables["api_keys"]}
    assert {k["is_active"] for k in keys} == {True, False}
    assert {s["token_hash"] for s in sessions} == {s["token_hash"] for s in tables["user_sessions"]}
    assert LEGACY_PAIRING in {u["rmapi_config"] for u in users}
    assert {u["reset_token_expires"] for u in users} == {"0001-01-01T00:00:00Z"}
    assert dumped["login_attempts"] == b""


def test_verify_and_ls_accept_an_archive_aviary_wrote():
    archive, _, _ = aviary_made_archive()
    checked = aviary("verify", input=archive)
    assert checked.returncode == 0, checked.stderr.decode()
    listed = [json.loads(line) for line in ok("ls", input=archive).splitlines()]
    assert [(m["path"], m["type"]) for m in listed[:2]] == [("metadata.json", "file"), ("database", "dir")]
