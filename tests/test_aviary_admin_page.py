"""One rule for Aviary's admin page: an archive of ours that Aviary's restore would take with a
loss does not decode into Aviary's metadata struct, so Aviary refuses it before touching
anything; the others it restores as well as it restores its own.  Every pack option runs
through our unpack and through the model of Aviary's restore (archive_helpers.aviarys_restore,
after the notes): none loses a row or a document the archive does not carry."""

import json

import pytest

from archive_helpers import (AviaryAborted, aviarys_restore, decodes_into_aviarys_struct, dump_tables, installation,
                             lost, read_archive, state)
from aviarytools.storage import open_storage
from helpers import DATA_TABLES, aviary, ok

EVERY_TABLE = ",".join(DATA_TABLES)
CASCADED_AND_USERS = "users,api_keys,user_sessions,user_folders_cache,documents"

# pack options -> (what Aviary's admin page does, what `aviary info` calls it)
PACKS = {
    "": ("restores", "full"),
    "-z": ("restores", "full"),
    "--no-files": ("restores", "database only (pack --no-files)"),
    "--no-db": ("restores", "documents only (pack --no-db)"),
    "--exclude-tables login_attempts,system_settings": (
        "restores", "without system_settings, login_attempts (pack --tables/--exclude-tables)"),
    f"--tables {CASCADED_AND_USERS}": (
        "restores", "without system_settings, login_attempts (pack --tables/--exclude-tables)"),
    f"--tables {EVERY_TABLE}": ("restores", "full"),
    "-g SNAPSHOT --level 0": ("restores", "full, level 0 of a chain (pack -g)"),
    "--exclude-tables documents": ("refuses", "without documents (pack --tables/--exclude-tables)"),
    "--tables users": ("refuses", "without api_keys, user_sessions, user_folders_cache, documents, system_settings,"
                                  " login_attempts (pack --tables/--exclude-tables)"),
    "--tables api_keys,documents": ("refuses", "without users, user_sessions, user_folders_cache, system_settings,"
                                               " login_attempts (pack --tables/--exclude-tables)"),
    "--user zoë": ("refuses", "per-user (pack --user)"),
    "--user zoë --no-files": ("refuses", "per-user (pack --user), database only (pack --no-files)"),
    "--user ZOË-ID --no-db": ("refuses", "per-user (pack --user), documents only (pack --no-db)"),
    "--redact": ("refuses", "redacted (pack --redact)"),
    "--redact --no-files": ("refuses", "database only (pack --no-files), redacted (pack --redact)"),
    "-g SNAPSHOT": ("refuses", "incremental level 1 (pack -g)"),
}


@pytest.fixture(scope="module")
def source(pg_server, tmp_path_factory):
    """An installation on PostgreSQL, and its state as the model of Aviary takes it."""
    root = tmp_path_factory.mktemp("admin-page")
    url = pg_server.create_database("admin_page_source")
    installation(url, root / "data", users=3, nanos=False)
    yield {"url": url, "data": root / "data", "root": root, "state": state(url, root / "data"),
           "model": model_state(url, root / "data"), "full": ok("pack", "--db", url, "--storage", root / "data")}
    pg_server.drop_database("admin_page_source")


def model_state(url, folder) -> tuple[dict, dict]:
    """(rows per table, bytes per object key): an installation as the model of Aviary takes it."""
    tables = {name: [json.loads(line) for line in dumped.splitlines()] for name, dumped in dump_tables(url).items()}
    store = open_storage(str(folder))
    return tables, {info.key: b"".join(store.read(info.key)) for info in store.list()}


def pack_with(source, options: str, tmp_path) -> bytes:
    zoe = next(u["id"] for u in source["model"][0]["users"] if u["username"] == "zoë")
    args = options.replace("SNAPSHOT", str(tmp_path / "snapshot")).replace("ZOË-ID", zoe).split()
    if args[:2] == ["-g", str(tmp_path / "snapshot")] and "--level" not in args:
        level_0 = tmp_path / "level0.tar"  # on disk (-o): FILE moves at once, not FILE.pending
        ok("pack", "-g", tmp_path / "snapshot", "--db", source["url"], "--storage", source["data"], "-o", level_0)
    archive = ok("pack", *args, "--db", source["url"], "--storage", source["data"])
    return archive


@pytest.mark.parametrize("options", list(PACKS))
def test_every_pack_option_through_our_restore_and_aviarys(source, options, tmp_path):
    expected, kind = PACKS[options]
    archive = pack_with(source, options, tmp_path)
    metadata, _ = read_archive(archive)

    # Aviary's admin page, per the notes: refused before anything, or restored with nothing lost.
    before = source["model"]
    after = aviarys_restore(archive, *before)
    assert (after is None) == (expected == "refuses") == (not decodes_into_aviarys_struct(metadata))
    if after is not None:
        assert lost(before, after) == []
    elif not options.startswith("-g"):  # the refusal is needed: taken, it would lose what it lacks
        assert lost(before, aviarys_restore(archive, *before, force=True))

    # info and verify say so.
    said = aviary("info", input=archive).stderr.decode()
    assert said.startswith(f"aviary info: {kind}; Aviary's admin page {expected} it"), said
    checked = aviary("verify", input=archive)
    assert checked.returncode == 0, checked.stderr.decode()
    assert f"aviary verify: {kind}; Aviary's admin page {expected} it" in checked.stderr.decode()

    # Our unpack into the installation itself: nothing changes (a redacted export is refused).
    target_db, target_data = str(tmp_path / "target.db"), tmp_path / "target"
    ok("unpack", "--db", target_db, "--storage", target_data, "--create-schema",
       input=source["full"])
    assert state(target_db, target_data) == source["state"]
    restored = aviary("unpack", "--db", target_db, "--storage", target_data, input=archive)
    assert restored.returncode == (1 if "--redact" in options else 0), restored.stderr.decode()
    assert state(target_db, target_data) == source["state"]


def test_aviarys_restore_as_the_notes_tell_it(source):
    """The model itself: the cascade, tables missing not cleared, the dropped user columns,
    the hashes it empties, and the row values that stop it half-way."""
    tables, objects = source["model"]
    archive = ok("pack", "--tables", "users,login_attempts", "--no-files", "--db", source["url"])
    after, _ = aviarys_restore(archive, tables, objects, force=True)
    assert [len(after[t]) for t in ("api_keys", "user_sessions", "documents", "user_folders_cache")] == [0, 0, 0, 0]
    assert after["system_settings"] and {r["updated_by"] for r in after["system_settings"]} == {None}
    assert "conflict_resolution" not in after["users"][0] and after["users"][0]["is_active"] is True

    full = ok("pack", "--no-files", "--db", source["url"])
    after, _ = aviarys_restore(full, tables, objects)
    assert {r["key_hash"] for r in after["api_keys"]} == {""} and {r["token_hash"] for r in after["user_sessions"]} \
        == {""}
    assert lost((tables, objects), (after, objects)) == []

    members = {"database/users.json": tables["users"],
               "database/api_keys.json": [dict(r, is_active=1) for r in tables["api_keys"]]}
    from archive_helpers import aviary_tar, go_json
    metadata = {"aviary_version": "v1.9.0", "export_timestamp": "2026-05-01T00:00:00Z", "users_exported": None}
    with pytest.raises(AviaryAborted, match="api_keys.is_active: 1 is not a JSON boolean") as aborted:
        aviarys_restore(aviary_tar(metadata, {k: go_json(v) for k, v in members.items()}), tables, objects)
    assert aborted.value.state[0]["documents"] == []  # cascaded away, never brought back
