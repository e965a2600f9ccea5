"""Looking inside archives (ls, cat, info, verify) and the files pack and unpack -C leave."""

import json
import shlex
import stat
import subprocess
import sys
import tarfile

import pytest

from archive_helpers import aviary_made_archive, installation
from helpers import AVIARY, DATA_TABLES, aviary, ok, one_line_error


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    db, data = str(root / "aviary.db"), root / "data"
    installation(db, data, users=2)
    archive = root / "aviary.tar"
    archive.write_bytes(ok("pack", "--db", db, "--storage", data))
    with tarfile.open(archive) as tar:
        members = {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar}
    return {"db": db, "data": data, "archive": archive, "members": members}


def test_ls_lists_every_member_in_order(packed):
    listed = [json.loads(line) for line in ok("ls", packed["archive"]).splitlines()]
    assert [(m["path"], m["type"], m["size"]) for m in listed] == [
        (name, "dir" if info.isdir() else "file", info.size) for name, (info, _) in packed["members"].items()]
    assert listed[0]["mtime"].endswith("Z")


def test_cat_writes_a_member_as_it_is(packed):
    document = next(n for n in packed["members"] if n.endswith(".pdf"))
    for name in ("metadata.json", "database/users.json", document, "checksums.xxh128"):
        assert ok("cat", name, packed["archive"]) == packed["members"][name][1]
    missing = aviary("cat", "database/nope.json", packed["archive"])
    assert one_line_error(missing) == "aviary cat: database/nope.json: no such member in the archive"


def test_cat_ndjson_prints_what_dump_table_prints(packed):
    for table in DATA_TABLES:
        rows = ok("cat", f"database/{table}.json", "--ndjson", input=packed["archive"].read_bytes())
        assert rows == ok("dump-table", table, "--db", packed["db"]), table


def test_cat_ndjson_makes_aviarys_rows_canonical():
    archive, tables, _ = aviary_made_archive()
    cat = ok("cat", "database/api_keys.json", "--ndjson", input=archive)
    keys = [json.loads(line) for line in cat.splitlines()]
    assert [k["key_hash"] for k in keys] == [k["key_hash"] for k in tables["api_keys"]]
    assert all(k["created_at"].endswith("Z") for k in keys)
    assert {k["is_active"] for k in keys} == {True, False}
    assert ok("cat", "database/login_attempts.json", "--ndjson", input=archive) == b""  # null: no rows


def metadata_end(members) -> int:
    info, _ = members["metadata.json"]
    return info.offset_data + -(-info.size // 512) * 512


def test_info_reads_the_first_member_only(packed):
    data = packed["archive"].read_bytes()
    head = data[:metadata_end(packed["members"])]
    metadata = json.loads(packed["members"]["metadata.json"][1])
    assert json.loads(ok("info", input=head)) == metadata

    # From a pipe that stays open: info answers without waiting for the rest.
    proc = subprocess.Popen(AVIARY + ["info"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(head)
    proc.stdin.flush()
    try:
        assert proc.wait(timeout=30) == 0
        assert json.loads(proc.stdout.read()) == metadata
    finally:
        proc.kill()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


# --- files pack and unpack leave ---------------------------------------------------------------


def test_pack_refuses_to_write_to_a_terminal(packed):
    command = shlex.join([sys.executable, "-m", "aviarytools", "pack", "--db", packed["db"], "--no-files"])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert b"refusing to write an archive to a terminal" in result.stdout
    assert len(result.stdout) < 1000  # the message, not an archive


def test_pack_o_writes_a_private_file_and_nothing_on_failure(packed, tmp_path):
    archive = tmp_path / "aviary.tar"
    victim = tmp_path / "victim"
    victim.write_text("not yours")
    (tmp_path / "aviary.tar.partial").symlink_to(victim)  # planted where a careless pack would write
    ok("pack", "-o", archive, "--db", packed["db"], "--storage", packed["data"])
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # whatever the umask (022 here)
    assert ok("verify", archive) == b""
    assert victim.read_text() == "not yours" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    (tmp_path / "aviary.tar.partial").unlink()

    nowhere = tmp_path / "nowhere"
    failed = aviary("pack", "-o", tmp_path / "new.tar", "--db", packed["db"], "--storage", nowhere)
    assert "nowhere: no such directory" in one_line_error(failed)
    kept = archive.read_bytes()
    failed = aviary("pack", "-o", archive, "--db", packed["db"], "--storage", nowhere)
    assert failed.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aviary.tar", "victim"]
    assert archive.read_bytes() == kept  # the old archive is still whole
    missing = aviary("pack", "-o", tmp_path / "no" / "such.tar", "--db", packed["db"], "--no-files")
    assert one_line_error(missing) == f"aviary pack: {tmp_path}/no/such.tar: No such file or directory"
    with open("/dev/full", "wb") as full:
        result = subprocess.run(AVIARY + ["pack", "--db", packed["db"], "--no-files"], stdout=full,
                                stderr=subprocess.PIPE)
    assert result.stderr == b"aviary pack: stdout: No space left on device\n"


def test_unpack_C_writes_private_files_and_folders(packed, tmp_path):
    out = tmp_path / "out"
    ok("unpack", "-C", out, packed["archive"])
    found = {p.relative_to(out).as_posix(): p for p in out.rglob("*")}
    assert {n for n, (info, _) in packed["members"].items()} == set(found)
    for name, path in found.items():
        info, data = packed["members"][name]
        mode = stat.S_IMODE(path.stat().st_mode)
        if info.isdir():
            assert path.is_dir() and mode == 0o700, name
        else:
            assert path.read_bytes() == data and mode == 0o600, name
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


# --- verify ------------------------------------------------------------------------------------


def findings(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_verify_json_prints_one_finding_per_line_then_its_totals(packed):
    """The last line is the summary: a finding of check "summary" (severity info, so filters on
    problems pass it by) with exact integer counts and bytes, held against tarfile's reading."""
    clean = aviary("verify", "--json", packed["archive"])
    assert clean.returncode == 0
    [summary] = findings(clean)
    pdfs = [info for info, _ in packed["members"].values() if info.name.endswith(".pdf")]
    rows = sum(len(json.loads(body) or []) for info, body in packed["members"].values()
               if info.name.startswith("database/") and info.name.endswith(".json"))
    assert summary == {
        "check": "summary", "severity": "info", "subject": str(packed["archive"]),
        "detail": f"ok: {len(packed['members'])} members, {len(pdfs)} documents"
                  f" ({sum(i.size for i in pdfs)} bytes), {rows} rows, {packed['archive'].stat().st_size} bytes read",
        "problems": 0, "members": len(packed["members"]), "documents": len(pdfs),
        "document_bytes": sum(info.size for info in pdfs), "rows": rows,
        "bytes_read": packed["archive"].stat().st_size}

    aviarys = aviary("verify", "--json", input=aviary_made_archive()[0])
    assert aviarys.returncode == 0
    # The same keys as doctor's findings: check, severity, subject (here a member), detail.
    assert findings(aviarys)[:-1] == [{"check": "checksums", "severity": "info", "subject": None,
                                       "detail": "no checksums.xxh128 member: content not checked"}]
    assert findings(aviarys)[-1]["subject"] == "-"

    data = bytearray(packed["archive"].read_bytes())
    document = pdfs[0]
    data[document.offset_data] ^= 0x20
    damaged = aviary("verify", "--json", input=bytes(data))
    assert damaged.returncode == 1
    [finding, summary] = findings(damaged)
    assert finding["check"] == "checksums" and finding["subject"] == document.name
    assert finding["severity"] == "problem" and "XXH128 mismatch" in finding["detail"]
    assert summary["problems"] == 1 and summary["detail"].startswith("1 problem(s): ")


def test_verify_max_age_fails_an_old_archive(packed):
    old = aviary("verify", "--max-age", "1s", input=aviary_made_archive()[0])  # exported 2025-07-27
    assert old.returncode == 1
    assert "metadata.json: archive is" in old.stderr.decode() and "days old (limit 1 second)" in old.stderr.decode()
    assert aviary("verify", "--max-age", "1h", packed["archive"]).returncode == 0
    assert aviary("verify", "--max-age", "soon", packed["archive"]).returncode == 2


# --- an archive a person can browse ----------------------------------------------------------------


HOSTILE = {"11111111-1111-4111-8111-111111111111": "../etc", "22222222-2222-4222-8222-222222222222": "a/b",
           "33333333-3333-4333-8333-333333333333": "x\x00y", "44444444-4444-4444-8444-444444444444": ".hidden",
           "55555555-5555-4555-8555-555555555555": "Zoë", "66666666-6666-4666-8666-666666666666": "zoe\u0308",
           "77777777-7777-4777-8777-777777777777": "", "88888888-8888-4888-8888-888888888888": "alice"}


def named_archive() -> bytes:
    """An archive as Aviary writes it, whose users have names that are not paths."""
    from archive_helpers import aviary_tar

    users = [{"id": i, "username": n, "email": f"{n}@x", "password": "h"} for i, n in HOSTILE.items()]
    files = {"database/users.json": json.dumps(users).encode()}
    for user_id in HOSTILE:
        files[f"filesystem/documents/{user_id}/sub/doc.pdf"] = user_id.encode()
    metadata = {"aviary_version": "v1.7", "git_commit": "", "export_timestamp": "2025-07-27T10:00:00Z",
                "database_type": "sqlite", "users_exported": None, "total_documents": len(HOSTILE),
                "total_size_bytes": 36 * len(HOSTILE), "exported_tables": ["users"],
                "total_users": len(HOSTILE), "total_api_keys": 0}
    return aviary_tar(metadata, files)


def test_ls_names_each_documents_user():
    listed = [json.loads(line) for line in ok("ls", input=named_archive()).splitlines()]
    users = {m["path"].split("/")[2]: m.get("user") for m in listed if m["path"].endswith("doc.pdf")}
    assert users == HOSTILE


def test_unpack_by_username_writes_every_name_safely_and_says_which_it_changed(tmp_path):
    result = aviary("unpack", "-C", tmp_path / "out", "--by-username", input=named_archive())
    assert result.returncode == 0, result.stderr.decode()
    root = tmp_path / "out" / "by-username"
    written = {str(p.relative_to(root).parent.parent): p.read_bytes().decode()
               for p in root.rglob("doc.pdf")}
    assert sorted(written.values()) == sorted(HOSTILE)  # every document, none overwritten
    folders = {user: folder for folder, user in written.items()}
    assert folders["88888888-8888-4888-8888-888888888888"] == "alice"
    for folder in folders.values():
        assert "/" not in folder and "\x00" not in folder and not folder.startswith(".")
    assert len({f.casefold() for f in folders.values()}) == len(folders)  # no two fold alike
    import unicodedata
    assert len({unicodedata.normalize("NFC", f).casefold() for f in folders.values()}) == len(folders)
    warnings = result.stderr.decode()
    for name in ("../etc", "a/b", ".hidden", "Zoë"):
        assert f"named {name!r}" in warnings
    assert "named 'alice'" not in warnings
    assert all(p.resolve().is_relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*"))
    assert not (tmp_path / "out" / "filesystem" / "documents").exists()
    assert (tmp_path / "out" / "database" / "users.json").exists()  # the rest as it always was
    check = subprocess.run(["xxhsum", "-c", "checksums.xxh128"], cwd=root, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_users_json_documents_keep_their_ids(packed, tmp_path):
    archive = ok("pack", "--db", packed["db"], "--storage", packed["data"], "--tables", "documents")
    assert aviary("unpack", "-C", tmp_path / "out", "--by-username", input=archive).returncode == 0
    assert {p.name for p in (tmp_path / "out" / "by-username").iterdir()} == \
        {m.split("/")[2] for m in packed["members"] if m.startswith("filesystem/documents/") and m.count("/") > 2} | \
        {"checksums.xxh128"}
