"""What a restore changes, and what it must leave alone: per-user packs and restores, dry runs,
merge and replace, and exports without secrets."""

import io
import json
import os
import stat
import tarfile

import pytest

from aviarytools import rows
from aviarytools.db import connect
from aviarytools.query import Query
from aviarytools.archive.restore import RestoreOptions, restore
from aviarytools.storage import FilesystemStorage, open_storage
from archive_helpers import bucket_storage, dump_tables, installation, objects, s3_args, s3_env, state
from helpers import DATA_TABLES, aviary, ok

RESET_TOKEN = "rst-7f3e9b2c51d04a8e"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A sample installation (one user has a pending password reset), and its full pack."""
    root = tmp_path_factory.mktemp("source")
    db, data = str(root / "aviary.db"), root / "data"
    tables = installation(db, data, users=3)
    sql(db, f"UPDATE users SET reset_token = '{RESET_TOKEN}' WHERE username = 'zoë'")
    users = {u["username"]: u["id"] for u in tables["users"]}
    return {"db": db, "data": data, "tables": tables, "users": users,
            "archive": ok("pack", "--db", db, "--storage", data), "state": state(db, data)}


@pytest.fixture
def target(source, tmp_path):
    """A copy of the source that has since moved on, for every user: each has a renamed
    API key, a new login attempt is logged, zoë and björn each have a new document and
    zoë lost one."""
    db, data = str(tmp_path / "target.db"), tmp_path / "target-data"
    ok("unpack", "--db", db, "--storage", data, "--create-schema", input=source["archive"])
    sql(db, "UPDATE api_keys SET name = name || ' (renamed)'",
        "INSERT INTO login_attempts (id, ip_address, username, success, attempted_at)"
        " VALUES ('00000000-0000-4000-8000-00000000000a', '198.51.100.7', 'zoë', 1,"
        " '2025-08-01 09:00:00+00:00')")
    files = open_storage(str(data))
    zoe, bjorn = source["users"]["zoë"], source["users"]["björn"]
    files.write(f"users/{zoe}/pdfs/new since the backup.pdf", [b"%PDF-1.4 new"])
    files.write(f"users/{bjorn}/pdfs/new since the backup.pdf", [b"%PDF-1.4 new"])
    files.delete(f"users/{zoe}/pdfs/doc-0 ñ.pdf")
    return {"db": db, "data": data}


def sql(url, *statements):
    db = connect(url)
    try:
        with db.transaction():
            for statement in statements:
                db.execute(statement)
    finally:
        db.close()


def user_rows(url, user_id) -> dict[str, bytes]:
    """dump-table --user: the rows of every table that belongs to users."""
    db = connect(url)
    try:
        with db.snapshot():
            return {t: b"\n".join(rows.dump(db, t, Query(user_ids=(user_id,))))
                    for t in ("users", "api_keys", "user_sessions", "user_folders_cache", "documents")}
    finally:
        db.close()


def user_objects(folder, user_id) -> dict[str, str]:
    return {k: v for k, v in objects(folder).items() if k.startswith(f"users/{user_id}/")}


def others(url, folder, user_id) -> tuple:
    """Everything in an installation that is not the user's."""
    tables = dump_tables(url)
    owned = user_rows(url, user_id)
    rest = {t: [line for line in dump.splitlines() if line not in owned.get(t, b"").splitlines()]
            for t, dump in tables.items()}
    files = {k: v for k, v in objects(folder).items() if not k.startswith(f"users/{user_id}/")}
    return rest, files


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


# --- per user --------------------------------------------------------------------------------


def test_a_per_user_pack_holds_only_that_users_rows_and_files(source):
    zoe = source["users"]["zoë"]
    packed = members(ok("pack", "--user", "zoë", "--db", source["db"], "--storage", source["data"]))
    assert sorted(n for n in packed if n.startswith("database/")) == [
        "database/api_keys.json", "database/documents.json", "database/user_folders_cache.json",
        "database/user_sessions.json", "database/users.json"]
    assert [u["id"] for u in json.loads(packed["database/users.json"])] == [zoe]
    for table in ("api_keys", "documents", "user_sessions", "user_folders_cache"):
        assert {r["user_id"] for r in json.loads(packed[f"database/{table}.json"])} == {zoe}
    assert {n.split("/")[2] for n in packed if n.startswith("filesystem/")} == {zoe}
    metadata = json.loads(packed["metadata.json"])
    # not a list: Aviary's admin page refuses it (it would delete every other user)
    assert (metadata["users_exported"], metadata["aviarytools"]["users"]) == ("per-user", [zoe])


@pytest.mark.parametrize("archive", ["per-user pack", "full pack"])
def test_a_per_user_restore_leaves_other_users_untouched(source, target, archive):
    zoe = source["users"]["zoë"]
    if archive == "per-user pack":
        data = ok("pack", "--user", "zoë", "--db", source["db"], "--storage", source["data"])
    else:
        data = source["archive"]
    untouched = others(target["db"], target["data"], zoe)

    ok("unpack", "--user", "zoë", "--db", target["db"], "--storage", target["data"], input=data)
    assert others(target["db"], target["data"], zoe) == untouched
    assert user_rows(target["db"], zoe) == user_rows(source["db"], zoe)
    assert user_objects(target["data"], zoe) == user_objects(source["data"], zoe)


# --- dry run, merge, replace -----------------------------------------------------------------


def test_a_dry_run_writes_nothing_and_says_what_it_would_do(source, target):
    before = state(target["db"], target["data"])
    result = aviary("unpack", "--dry-run", "--db", target["db"], "--storage", target["data"],
                    input=source["archive"])
    assert result.returncode == 0, result.stderr.decode()
    assert state(target["db"], target["data"]) == before
    report = result.stderr.decode()
    assert "api_keys: 6 row(s) in the archive, 6 written, 0 unchanged, 0 removed (dry run)" in report, report
    assert "login_attempts: 5 row(s) in the archive, 0 written, 5 unchanged, 1 removed"\
           " (id=00000000-0000-4000-8000-00000000000a) (dry run)" in report, report
    assert "documents: 9 (" in report and "2 stale (dry run: nothing written)" in report


def test_a_dry_run_of_an_archive_without_documents_removes_none_as_the_restore_does(source, target):
    archive = ok("pack", "--db", source["db"], "--no-files")
    before = state(target["db"], target["data"])[1]
    for dry_run in (["--dry-run"], []):
        result = aviary("unpack", *dry_run, "--db", target["db"], "--storage", target["data"], input=archive)
        assert result.returncode == 0, result.stderr.decode()
        assert b"packed without documents (--no-files): none removed" in result.stderr
        assert b"stale" not in result.stderr or b", 0 stale (dry run" in result.stderr
        assert state(target["db"], target["data"])[1] == before


def test_a_dry_run_into_a_new_database_creates_nothing(source, tmp_path):
    db, data = tmp_path / "new.db", tmp_path / "new-data"
    result = aviary("unpack", "--dry-run", "--create-schema", "--db", db, "--storage", data,
                    input=source["archive"])
    assert result.returncode == 0, result.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_merge_keeps_rows_and_documents_the_archive_does_not_have(source, target):
    ok("unpack", "--mode", "merge", "--db", target["db"], "--storage", target["data"],
       input=source["archive"])
    tables, files = state(target["db"], target["data"])
    wanted_tables, wanted_files = source["state"]
    assert tables["api_keys"] == wanted_tables["api_keys"]  # renamed keys: named as in the archive again
    assert tables["login_attempts"].splitlines() == sorted(
        wanted_tables["login_attempts"].splitlines() + [next(
            line for line in tables["login_attempts"].splitlines() if b"198.51.100.7" in line)])
    for table in DATA_TABLES:
        assert set(wanted_tables[table].splitlines()) <= set(tables[table].splitlines())
    assert wanted_files.items() <= files.items()
    assert len(files) == len(wanted_files) + 2  # the two new documents stay


def test_replace_makes_the_installation_equal_to_the_archive(source, target):
    ok("unpack", "--db", target["db"], "--storage", target["data"], input=source["archive"])
    assert state(target["db"], target["data"]) == source["state"]


class AppSavingDuringTheRestore(FilesystemStorage):
    """A real folder where, as the running Aviary might, a user's upload lands while the
    restore waits for its staged documents (after the archive was read, before the commit)."""

    def __init__(self, root, key):
        super().__init__(root)
        self.key = key

    def settle(self):
        self.write(self.key, [b"%PDF-1.4 uploaded during the restore"])
        super().settle()


def test_a_document_the_app_saves_during_a_replace_is_not_deleted_as_stale(source, target):
    uploaded = f"users/{source['users']['zoë']}/pdfs/uploaded during the restore.pdf"
    db, warned = connect(target["db"]), []
    try:
        with AppSavingDuringTheRestore(target["data"], uploaded) as storage:
            summary = restore(io.BytesIO(source["archive"]), "-", db, storage, RestoreOptions(), warn=warned.append)
    finally:
        db.close()
    assert summary.stale_documents == 2  # what the target had since the backup: those go
    after = objects(target["data"])
    assert uploaded in after
    assert {k: v for k, v in after.items() if k != uploaded} == source["state"][1]
    assert warned == []


# --- redaction -------------------------------------------------------------------------------


def secrets_of(tables) -> list[str]:
    users = tables["users"]
    found = [u["password"] for u in users] + [RESET_TOKEN]
    found += [u["rmapi_config"].split("=")[1].strip() for u in users if u["rmapi_config"]]
    found += [k["key_hash"] for k in tables["api_keys"]]
    found += [k["key_hash"].removeprefix("sha256:") for k in tables["api_keys"]]
    found += [s["token_hash"] for s in tables["user_sessions"]]
    return found


@pytest.mark.parametrize("user", [None, "zoë"])
def test_a_redacted_pack_holds_no_secret(source, user):
    secrets = secrets_of(source["tables"])
    assert all(s.encode() in source["archive"] for s in secrets)  # they are there unredacted

    args = ["--user", user] if user else []
    archive = ok("pack", "--redact", *args, "--db", source["db"], "--storage", source["data"])
    for secret in secrets:
        assert secret.encode() not in archive, secret
    users = json.loads(members(archive)["database/users.json"])
    assert {(u["password"], u["rmapi_config"], u["reset_token"]) for u in users} == {("", None, None)}
    assert json.loads(members(archive)["metadata.json"])["aviarytools"]["redacted"] is True


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_replace_into_a_fresh_installation_with_its_own_admin(kind, tmp_path, request):
    """The usual disaster recovery: Aviary was set up again (a new admin, who changed a
    setting) and the backup goes in.  The old admin leaves, though a setting names them."""
    source = str(tmp_path / "source.db")
    installation(source, tmp_path / "source-data", users=3, nanos=False)
    archive = ok("pack", "--db", source, "--storage", tmp_path / "source-data")
    url = request.getfixturevalue("pg_url") if kind == "postgres" else str(tmp_path / "fresh.db")
    installation(url, tmp_path / "data", users=1, seed=11, nanos=False)
    assert b'"updated_by":null' not in dump_tables(url)["system_settings"].splitlines()[1]

    ok("unpack", "--db", url, "--storage", tmp_path / "data", input=archive)
    assert state(url, tmp_path / "data") == state(source, tmp_path / "source-data")


def test_a_restore_into_a_target_holding_some_users_folders(source, tmp_path):
    """Users new to the target get their staged folder moved whole; the others'
    documents are moved one by one, and their stale ones removed.  --no-sync
    gives the same result without waiting for the disk."""
    db, data = str(tmp_path / "target.db"), tmp_path / "data"
    zoe = source["users"]["zoë"]
    open_storage(str(data)).write(f"users/{zoe}/pdfs/stale.pdf", [b"%PDF-1.4 gone after the restore"])
    ok("unpack", "--no-sync", "--db", db, "--storage", data, "--create-schema", input=source["archive"])
    assert state(db, data) == source["state"]
    assert not [p for p in data.iterdir() if p.name.startswith(".aviary-restore-")]


def test_a_users_only_restore_releases_settings_that_name_a_leaving_user(source, tmp_path):
    db, data = str(tmp_path / "fresh.db"), tmp_path / "data"
    installation(db, data, users=1, seed=11)
    result = aviary("unpack", "--tables", "users", "--db", db, "--storage", data, input=source["archive"])
    assert result.returncode == 0, result.stderr.decode()
    assert "system_settings: updated_by set to null in 1 row(s): their user is not in the archive" in \
        result.stderr.decode()
    assert dump_tables(db)["users"] == source["state"][0]["users"]


def test_a_dry_run_into_postgresql_and_s3_writes_nothing(source, pg_url, s3_server, s3_bucket):
    bucket = bucket_storage(s3_server, s3_bucket)
    installation(pg_url, bucket, users=2, seed=11, nanos=False)
    before = state(pg_url, bucket)
    result = aviary("unpack", "--dry-run", "--db", pg_url, *s3_args(s3_server, s3_bucket),
                    input=source["archive"], env=s3_env(s3_server))
    assert result.returncode == 0, result.stderr.decode()
    assert "documents: 9 (8.8 KiB), 6 stale (dry run: nothing written)" in result.stderr.decode()
    assert state(pg_url, bucket) == before


def test_restoring_a_redacted_export_says_what_comes_back_empty(source, tmp_path):
    archive = ok("pack", "--redact", "--db", source["db"], "--storage", source["data"])
    db = str(tmp_path / "new.db")
    result = aviary("unpack", "--accept-redacted", "--db", db, "--storage", tmp_path / "data", "--create-schema",
                    input=archive)
    assert result.returncode == 0, result.stderr.decode()
    assert "warning: metadata.json: a --redact export: passwords, API key and session hashes" in \
        result.stderr.decode()
    assert {json.loads(line)["password"] for line in dump_tables(db)["users"].splitlines()} == {""}


# --- keeping what you choose: --exclude-tables (the chat server's --keep-settings) -------------


def test_a_restore_that_excludes_a_table_keeps_the_targets_own(source, target):
    sql(target["db"], "UPDATE system_settings SET value = 'smtp.target.example'")
    before = dump_tables(target["db"])
    result = aviary("unpack", "--db", target["db"], "--storage", target["data"],
                    "--exclude-tables", "system_settings,login_attempts", input=source["archive"])
    assert result.returncode == 0, result.stderr.decode()
    after = dump_tables(target["db"])
    for table in DATA_TABLES:
        kept = table in ("system_settings", "login_attempts")
        assert after[table] == (before[table] if kept else source["state"][0][table]), table
    assert objects(target["data"]) == source["state"][1]


def test_exclude_tables_composes_with_user_dry_run_and_merge(source, target):
    zoe = source["users"]["zoë"]
    before = state(target["db"], target["data"])
    dry = aviary("unpack", "--db", target["db"], "--storage", target["data"], "--user", "zoë",
                 "--exclude-tables", "api_keys", "--dry-run", input=source["archive"])
    assert dry.returncode == 0 and b"api_keys" not in dry.stderr and b"users:" in dry.stderr
    assert state(target["db"], target["data"]) == before
    keys_before = user_rows(target["db"], zoe)["api_keys"]
    ok("unpack", "--db", target["db"], "--storage", target["data"], "--user", "zoë", "--mode", "merge",
       "--exclude-tables", "api_keys", input=source["archive"])
    after = user_rows(target["db"], zoe)
    assert after["api_keys"] == keys_before and b"(renamed)" in keys_before  # the target's own keys
    assert after["users"] == user_rows(source["db"], zoe)["users"]


def test_pack_excludes_tables_and_names_the_tables_there_are(source):
    archive = ok("pack", "--db", source["db"], "--no-files", "--exclude-tables", "login_attempts,user_sessions")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tables = {m.name for m in tar if m.name.startswith("database")}
    assert tables == {"database"} | {f"database/{t}.json" for t in DATA_TABLES
                                     if t not in ("login_attempts", "user_sessions")}
    both = ok("pack", "--db", source["db"], "--no-files", "--tables", "users,documents", "--exclude-tables", "documents")
    with tarfile.open(fileobj=io.BytesIO(both)) as tar:
        assert {m.name for m in tar if m.name.startswith("database")} == {"database", "database/users.json"}
    for command in (["pack", "--db", source["db"]], ["unpack", "--db", source["db"]]):
        wrong = aviary(*command, "--exclude-tables", "settings", input=b"")
        assert wrong.returncode == 2
        assert b"no data table settings (tables: users, api_keys, user_sessions, user_folders_cache," in wrong.stderr


@pytest.mark.parametrize("umask, file_mode, folder_mode", [
    (0o022, 0o644, 0o755), (0o002, 0o644, 0o755), (0o000, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_restored_documents_get_aviarys_usual_modes_and_never_more(source, tmp_path, umask, file_mode, folder_mode):
    """Folders 0755 and documents 0644, as Aviary makes them under the usual umask 022; a
    tighter umask tightens them, a looser one never makes a document writable by others."""
    data = tmp_path / "data"
    old = os.umask(umask)
    try:
        ok("unpack", "--no-db", "--storage", data, input=source["archive"])
    finally:
        os.umask(old)
    modes = {(name in files, stat.S_IMODE(os.lstat(os.path.join(folder, name)).st_mode))
             for folder, folders, files in os.walk(data) for name in folders + files}
    assert modes == {(True, file_mode), (False, folder_mode)}
