"""Every column of any Aviary version survives a migration, and no restore drops one silently.

The source databases here are made from the DDL GORM runs for the tables of
the format notes (tests/aviary_facts.json, read by format_notes.py), not by our own init-schema, so that
a column our built-in schema lacked would show as a difference.
"""

import json
import re
import sqlite3

import psycopg
import pytest

import format_notes
from archive_helpers import all_ok, aviary_made_archive, dump_tables, installation, objects, pipeline, state
from aviarytools import sample, timestamps
from aviarytools.db import connect
from helpers import aviary, one_line_error

GORM_SQLITE_TYPES = {"uuid": "uuid", "text": "text", "bool": "numeric", "int": "integer", "float": "real",
                     "timestamp": "datetime"}
DATA_TABLES = ("users", "api_keys", "user_sessions", "user_folders_cache", "documents", "system_settings",
               "login_attempts")


def gorm_sqlite_ddl() -> list[str]:
    """The statements GORM's SQLite dialect runs for Aviary's data tables, as the notes list them:
    backquoted names, `numeric` booleans, `uni_` unique constraints, `fk_` foreign keys."""
    noted = format_notes.read_tables()
    statements = []
    for name in DATA_TABLES:
        table = noted[name]
        parts = []
        for c in table.columns:
            part = f"`{c.name}` {GORM_SQLITE_TYPES[c.kind]}"
            part += " NOT NULL" if c.not_null else ""
            part += f" DEFAULT {c.default}" if c.default else ""
            parts.append(part)
        parts.append(f"PRIMARY KEY ({', '.join(f'`{c.name}`' for c in table.columns if c.primary_key)})")
        for c in table.columns:
            if c.unique:
                parts.append(f"CONSTRAINT `uni_{name}_{c.name}` UNIQUE (`{c.name}`)")
            if c.references:
                parent, cascade = c.references
                parts.append(f"CONSTRAINT `fk_{parent}_{name}` FOREIGN KEY (`{c.name}`) REFERENCES `{parent}`(`id`)"
                             + (" ON DELETE CASCADE" if cascade else ""))
        statements.append(f"CREATE TABLE `{name}` ({','.join(parts)})")
        for c in table.columns:
            if c.indexed:
                statements.append(f"CREATE INDEX `idx_{name}_{c.name}` ON `{name}`(`{c.name}`)")
        for columns in table.unique_sets:
            statements.append(f"CREATE UNIQUE INDEX `idx_{name}_{'_'.join(columns)}` ON `{name}`"
                              f"({','.join(f'`{c}`' for c in columns)})")
    return statements


def gorm_installation(folder, extra_ddl=(), **options) -> str:
    """An Aviary data folder whose aviary.db GORM made, with sample rows and documents."""
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / "aviary.db")
    with sqlite3.connect(path) as conn:
        for statement in [*gorm_sqlite_ddl(), *extra_ddl]:
            conn.execute(statement)
    db = connect(path)
    try:
        from aviarytools.storage import open_storage

        sample.populate(db, open_storage(str(folder)), **options)
    finally:
        db.close()
    return path


def migrate(source_db, source_files, target_db, target_files, *extra):
    """`aviary pack | aviary unpack --create-schema`: the README's migration recipe."""
    return pipeline(["aviary", "pack", "--db", source_db, "--storage", source_files],
                    ["aviary", "unpack", "--db", target_db, "--storage", target_files, "--create-schema",
                     *extra])


def documents(folder) -> dict[str, str]:
    return {key: digest for key, digest in objects(folder).items() if key.startswith("users/")}


_TIMESTAMP = re.compile(r'"(-?\d{4,}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"')


def rounded(dump: bytes) -> bytes:
    """A canonical dump as PostgreSQL keeps it: timestamps rounded to microseconds, half to even."""
    def micro(match):
        ns = timestamps.round_to_microseconds(timestamps.parse(match[1]))
        return f'"{timestamps.to_rfc3339(ns)}"'
    return _TIMESTAMP.sub(micro, dump.decode()).encode()


def test_sqlite_to_postgresql_to_sqlite_keeps_every_column_of_a_gorm_database(tmp_path, pg_url):
    first = gorm_installation(tmp_path / "first")
    before = dump_tables(first)
    assert b'"contrast_setting":"high"' in before["users"]

    all_ok(migrate(first, tmp_path / "first", pg_url, tmp_path / "middle"))
    middle = dump_tables(pg_url)
    assert middle == {t: rounded(d) for t, d in before.items()}  # nanoseconds: the documented rounding
    archive = tmp_path / "first.tar"
    all_ok(pipeline(["aviary", "pack", "--db", first, "--storage", tmp_path / "first", "-o", archive]))
    assert aviary("doctor", "--db", pg_url, "--storage", tmp_path / "middle", "--against", archive).returncode == 0

    last = str(tmp_path / "last" / "aviary.db")
    all_ok(migrate(pg_url, tmp_path / "middle", last, tmp_path / "last"))
    assert dump_tables(last) == middle  # byte for byte
    assert documents(tmp_path / "last") == documents(tmp_path / "first")
    all_ok(pipeline(["aviary", "pack", "--db", pg_url, "--storage", tmp_path / "middle", "-o", archive]))
    doctor = aviary("doctor", "--db", last, "--storage", tmp_path / "last", "--against", archive)
    assert doctor.returncode == 0, doctor.stderr


# A newer Aviary's columns, which this tool has never heard of.
NEWER = ("ALTER TABLE `users` ADD COLUMN `theme` text NOT NULL DEFAULT 'dark'",
         "ALTER TABLE `users` ADD COLUMN `beta_features` numeric DEFAULT 0",
         "ALTER TABLE `documents` ADD COLUMN `page_count` integer DEFAULT 7",
         "CREATE INDEX `idx_documents_page_count` ON `documents`(`page_count`)")


@pytest.fixture
def newer(tmp_path):
    """A SQLite installation of a newer Aviary, with values in its new columns."""
    path = gorm_installation(tmp_path / "newer", NEWER, nanos=False)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE users SET theme = 'solarized ☀', beta_features = 1 WHERE username = 'zoë'")
        conn.execute("UPDATE documents SET page_count = 12 WHERE rowid = 2")
    return path, tmp_path / "newer"


def test_a_column_this_tool_does_not_know_migrates_with_its_kind_default_and_values(newer, tmp_path, pg_url):
    path, files = newer
    all_ok(migrate(path, files, pg_url, tmp_path / "pg-files"))
    assert dump_tables(pg_url) == dump_tables(path)
    with psycopg.connect(pg_url) as conn:
        declared = {row[0]: row[1:] for row in conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE column_name IN ('theme', 'beta_features', 'page_count')")}
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'documents'")}
    assert declared == {"theme": ("text", "NO", "'dark'::text"), "beta_features": ("boolean", "YES", "false"),
                        "page_count": ("bigint", "YES", "7")}
    assert "idx_documents_page_count" in indexes
    zoe = next(json.loads(line) for line in dump_tables(pg_url)["users"].splitlines() if b'"zo\xc3\xab"' in line)
    assert (zoe["theme"], zoe["beta_features"]) == ("solarized ☀", True)
    # And back into SQLite, from PostgreSQL's own declaration of them.
    back = str(tmp_path / "back" / "aviary.db")
    all_ok(migrate(pg_url, tmp_path / "pg-files", back, tmp_path / "back"))
    assert dump_tables(back) == dump_tables(path)


def test_a_restore_into_a_table_without_the_column_stops_and_changes_nothing(newer, tmp_path):
    path, files = newer
    archive = tmp_path / "newer.tar"
    all_ok(pipeline(["aviary", "pack", "--db", path, "--storage", files, "-o", archive]))
    target = str(tmp_path / "older" / "aviary.db")
    installation(target, tmp_path / "older", users=2, seed=99)
    before = state(target, tmp_path / "older")
    for extra in ([], ["--dry-run"], ["--create-schema"]):
        result = aviary("unpack", "--db", target, "--storage", tmp_path / "older", *extra, archive)
        error = one_line_error(result)
        # The first such value in the archive stops it: database/documents.json comes before users.json.
        assert "database/documents.json: item 1: documents.page_count holds values, but the target" \
               " table has no column page_count: upgrade Aviary at the target" in error
        assert "--accept-column-loss" in error
        assert state(target, tmp_path / "older") == before

    accepted = aviary("unpack", "--db", target, "--storage", tmp_path / "older", "--accept-column-loss", archive)
    assert accepted.returncode == 0, accepted.stderr
    warnings = accepted.stderr.decode()
    for column in ("users.theme", "users.beta_features", "documents.page_count"):
        assert f"{column}: the target table has no such column:" in warnings
    assert "users.theme: the target table has no such column: 3 value(s) dropped" in warnings
    assert "is not in table" not in warnings  # one warning per column, not load-table's per key


def test_an_archive_a_newer_aviary_wrote_is_refused_where_its_column_would_be_lost(tmp_path):
    """Aviary's own archives declare no schema: the built-in one is all there is to create."""
    archive, _, _ = aviary_made_archive(user_extras={"theme": "dark"})
    target = tmp_path / "restored.db"
    result = aviary("unpack", "--db", target, "--storage", tmp_path / "data", "--create-schema", input=archive)
    assert "database/users.json: item 1: users.theme holds values" in one_line_error(result)
    assert not target.exists()  # the database it made for the restore is gone with it
    assert not (tmp_path / "data" / "users").exists()


def test_load_table_still_drops_an_unknown_key_with_a_warning(tmp_path):
    target = str(tmp_path / "aviary.db")
    installation(target, tmp_path, users=1)
    row = {"key": "k", "value": "v", "shiny_new": "x"}
    result = aviary("load-table", "system_settings", "--db", target, input=json.dumps(row).encode())
    assert result.returncode == 0
    assert b"column 'shiny_new' is not in table system_settings: dropped" in result.stderr
    assert aviary("load-table", "system_settings", "--db", target, "--strict",
                  input=json.dumps(dict(row, key="k2")).encode()).returncode == 1
