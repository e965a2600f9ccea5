"""A restore never destroys by surprise: a redacted export, or a replace that would delete most
of the target's documents, stops before the commit unless its flag accepts it; a dry run
names what a replace would delete; --no-files restores the database and nothing else."""

import json

import pytest

from archive_helpers import bucket_storage, dump_tables, installation, objects, s3_args, s3_env, state
from helpers import aviary, ok, one_line_error


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    db, data = str(root / "aviary.db"), root / "data"
    tables = installation(db, data, users=3, nanos=False)  # (PostgreSQL keeps microseconds)
    return {"db": db, "data": data, "tables": tables, "archive": ok("pack", "--db", db, "--storage", data)}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_no_files_restores_the_database_and_leaves_the_documents(kind, source, tmp_path, request):
    """It crashed after its commit (storage None in the promotion), database restored, exit 1."""
    url = str(tmp_path / "t.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    data = tmp_path / "data"
    installation(url, data, users=2, seed=11, nanos=False)
    documents = objects(data)
    result = aviary("unpack", "--no-files", "--db", url, "--storage", data, input=source["archive"])
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert dump_tables(url)["users"] == dump_tables(source["db"])["users"]
    assert objects(data) == documents


# --- a redacted export ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def redacted(source):
    return ok("pack", "--redact", "--db", source["db"], "--storage", source["data"])


def test_a_redacted_export_is_refused_by_a_restore_and_nothing_changes(source, redacted, pg_url, tmp_path):
    ok("unpack", "--db", pg_url, "--storage", tmp_path / "data", "--create-schema", input=source["archive"])
    before = state(pg_url, tmp_path / "data")
    error = one_line_error(aviary("unpack", "--db", pg_url, "--storage", tmp_path / "data", input=redacted))
    assert error.startswith("aviary unpack: metadata.json: a --redact export: its passwords")
    assert "--accept-redacted" in error and "nothing was changed" in error
    assert state(pg_url, tmp_path / "data") == before
    # merge too: it would blank the secrets of every user it updates
    one_line_error(aviary("unpack", "--mode", "merge", "--db", pg_url, "--no-files", input=redacted))
    assert state(pg_url, tmp_path / "data") == before


def test_a_redacted_export_restores_when_accepted_and_still_dry_runs_and_extracts(redacted, tmp_path):
    db = str(tmp_path / "new.db")
    dry = aviary("unpack", "--dry-run", "--db", db, "--storage", tmp_path / "data", "--create-schema",
                 input=redacted)
    assert dry.returncode == 0, dry.stderr.decode()
    assert "a --redact export: passwords, API key and session hashes, reset tokens and rmapi pairings come back" \
           " empty (a restore needs --accept-redacted)" in dry.stderr.decode()
    ok("unpack", "-C", tmp_path / "look", input=redacted)
    assert (tmp_path / "look" / "database" / "users.json").exists()

    result = aviary("unpack", "--accept-redacted", "--db", db, "--storage", tmp_path / "data", "--create-schema",
                    input=redacted)
    assert result.returncode == 0, result.stderr.decode()
    assert "warning: metadata.json: a --redact export: passwords" in result.stderr.decode()
    assert {json.loads(line)["password"] for line in dump_tables(db)["users"].splitlines()} == {""}


# --- a replace that would delete most documents -----------------------------------------------


def test_a_replace_that_would_delete_most_documents_is_refused_before_the_commit(source, pg_url, s3_server,
                                                                                  s3_bucket):
    """A wrong backup (another installation's) over this one: every document would go.  (A
    handful, fewer than 10, is no sign: a fresh installation's first documents.)"""
    bucket = bucket_storage(s3_server, s3_bucket)
    installation(pg_url, bucket, users=4, seed=11, nanos=False)
    before = state(pg_url, bucket)
    target = ("--db", pg_url, *s3_args(s3_server, s3_bucket))
    error = one_line_error(aviary("unpack", *target, input=source["archive"], env=s3_env(s3_server)))
    assert error == ("aviary unpack: this replace would delete 12 of the target's 12 document(s), those the archive"
                     " does not hold (it restores 9): more than half, so it looks like an empty or wrong backup;"
                     " check the archive (--dry-run names them), or accept the loss with --accept-document-loss"
                     " (nothing was changed)")
    assert state(pg_url, bucket) == before  # no staged object left either

    dry = aviary("unpack", "--dry-run", *target, input=source["archive"], env=s3_env(s3_server))
    assert dry.returncode == 0, dry.stderr.decode()
    named = [line.removeprefix("aviary unpack: ").removesuffix(": would be deleted (not in the archive; dry run)")
             for line in dry.stderr.decode().splitlines() if line.endswith("would be deleted (not in the archive;"
                                                                            " dry run)")]
    assert named == sorted(before[1])
    assert "(a restore needs --accept-document-loss)" in dry.stderr.decode()

    result = aviary("unpack", "--accept-document-loss", *target, input=source["archive"], env=s3_env(s3_server))
    assert result.returncode == 0, result.stderr.decode()
    assert state(pg_url, bucket) == state(source["db"], source["data"])


def test_a_rollback_that_deletes_a_few_documents_needs_no_flag(source, tmp_path):
    db, data = str(tmp_path / "t.db"), tmp_path / "data"
    ok("unpack", "--db", db, "--storage", data, "--create-schema", input=source["archive"])
    user = source["tables"]["users"][0]["id"]
    for n in range(9):  # 9 new of 18: a rollback deletes them (half, and fewer than 10)
        (data / "users" / user / "pdfs" / f"new {n}.pdf").write_bytes(b"%PDF-1.4 new")
    ok("unpack", "--db", db, "--storage", data, input=source["archive"])
    assert state(db, data) == state(source["db"], source["data"])
