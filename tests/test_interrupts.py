"""Ctrl-C and SIGTERM inside one long SQL statement: the command stops, says `interrupted`
(130) or `terminated` (143), and the database is left as it was.

Python runs a signal handler only between bytecodes: SQLite gets a progress handler that lets
it in, and an exception it raises there, or inside one of our SQL functions, is reported as the
signal it is (SQLite itself would say "interrupted" or "user-defined function raised
exception").  PostgreSQL's statement is cancelled on the server."""

import os
import signal
import sqlite3
import subprocess
import time

import psycopg
import pytest

from archive_helpers import bucket_storage, dump_tables, installation, s3_args, s3_env, state
from helpers import AVIARY, aviary, make_db, ok
from test_restore_finish import start, stopped

STATUS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}
# One statement that runs for minutes on either engine, and returns nothing.
LONG_SQLITE = ("(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
               " SELECT count(*) FROM c) < 0")
LONG_POSTGRES = "(SELECT count(*) FROM (SELECT generate_series(1, 10000000000)) AS s) < 0"  # (in the select list: one row at a time, no tuplestore to clean up)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def struck(args, signum, busy) -> tuple[int, str]:
    """Run `aviary ARGS`, send `signum` once `busy()` says the long statement runs; its exit
    status and stderr."""
    proc = subprocess.Popen(AVIARY + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not busy(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signum)
        err = proc.communicate(timeout=30)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def past_start(pid: int) -> bool:
    """The command used a second of CPU: imports done, its statement under way."""
    return cpu_seconds(pid) >= 1.0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_long_sqlite_statement_stops(tmp_path, signum):
    url = make_db(str(tmp_path / "aviary.db"), users=2)
    rc, err = struck(["dump-table", "users", "--db", url, "--where", LONG_SQLITE], signum, past_start)
    assert (rc, err.split()) == (STATUS[signum][0], ["aviary", "dump-table:", STATUS[signum][1]]), err


def test_a_signal_inside_an_sql_function_is_an_interrupt(tmp_path):
    """Timestamps stored in a form the SQL fast path leaves to aviary_ts, a Python function:
    the dump spends its time in it, where the signal lands."""
    url = make_db(str(tmp_path / "aviary.db"), populate=False)
    with sqlite3.connect(url) as conn:
        conn.executemany(
            "INSERT INTO login_attempts (id, ip_address, username, success, attempted_at, user_agent)"
            " VALUES (?, '192.0.2.1', 'u', 1, ?, 'x')",
            ((f"{n:08x}-0000-4000-8000-000000000000", f"2025-07-27T10:11:{n % 60:02d}.{n}Z")
             for n in range(300_000)))
    rc, err = struck(["dump-table", "login_attempts", "--db", url], signal.SIGINT, past_start)
    assert "user-defined function" not in err
    assert (rc, err.split()) == (130, ["aviary", "dump-table:", "interrupted"]), err


def running(url: str, text: str):
    def busy(pid: int) -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE state = 'active'"
                                     " AND query LIKE %s AND pid <> pg_backend_pid()", (f"%{text}%",)).fetchall())
    return busy


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_long_postgresql_statement_is_cancelled(pg_url, signum):
    make_db(pg_url, users=2)
    rc, err = struck(["dump-table", "users", "--db", pg_url, "--where", LONG_POSTGRES], signum,
                     running(pg_url, "generate_series"))
    assert (rc, err.split()) == (STATUS[signum][0], ["aviary", "dump-table:", STATUS[signum][1]]), err
    assert not running(pg_url, "generate_series")(0), "the statement still runs on the server"


# --- a restore with many documents staged -------------------------------------------------

SET_ASIDE = ".aviary-tmp-swept-"  # where a folder's sweep out of time leaves what is left


@pytest.fixture(scope="module")
def many_documents(tmp_path_factory):
    """An archive of 600 documents (4 users, 150 each)."""
    root = tmp_path_factory.mktemp("many-documents")
    db, data = str(root / "aviary.db"), root / "data"
    installation(db, data, users=4, docs_per_user=150, seed=19)
    return ok("pack", "--db", db, "--storage", data)


def staged_then_struck(args, archive: bytes, signum, env=None) -> tuple[int, str]:
    """Run `aviary ARGS` until every document is staged (it stops itself there), send `signum`,
    let it go on: its exit status and stderr."""
    proc = start(args, "staged", archive, env=env)
    try:
        stopped(proc)
        proc.send_signal(signum)
        os.kill(proc.pid, signal.SIGCONT)
        err = proc.stderr.read().decode()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_with_many_documents_staged_in_a_folder_leaves_it_as_it_was(many_documents, tmp_path, signum):
    db, data = str(tmp_path / "aviary.db"), tmp_path / "data"
    installation(db, data, users=2, docs_per_user=3, seed=5)
    before = state(db, data)
    rc, err = staged_then_struck(["unpack", "--db", db, "--storage", data], many_documents, signum)
    assert rc == STATUS[signum][0] and err.endswith(f"aviary unpack: {STATUS[signum][1]}\n"), err
    assert state(db, data) == before
    assert not [name for name in os.listdir(data) if name.startswith(".aviary-restore-")]
    aside = [name for name in os.listdir(data) if name.startswith(SET_ASIDE)]
    if aside:  # the sweep ran out of its half second (a loaded machine): said, and removed next time
        assert f"{data}/{aside[0]}/: the staged documents not removed yet" in err, err
        ok("unpack", "--finish", "--storage", data)
    assert os.listdir(data) == ["users"]


def test_a_signal_with_many_documents_staged_in_s3_leaves_it_as_it_was(many_documents, tmp_path, s3_server,
                                                                      s3_bucket):
    db = str(tmp_path / "aviary.db")
    storage = bucket_storage(s3_server, s3_bucket)
    installation(db, storage, users=2, docs_per_user=3, seed=5)
    before = state(db, storage)
    rc, err = staged_then_struck(["unpack", "--db", db, *s3_args(s3_server, s3_bucket)], many_documents,
                                 signal.SIGINT, env=s3_env(s3_server))
    assert rc == 130 and err.endswith("aviary unpack: interrupted\n"), err
    assert dump_tables(db) == before[0]
    if "set aside" in err:  # the sweep ran out of its half second (a loaded machine): said, and removed next time
        assert f"s3://{s3_bucket}/.aviary-restore-" in err and "the staged documents not removed yet" in err, err
        ok("unpack", "--finish", *s3_args(s3_server, s3_bucket), env=s3_env(s3_server))
    else:
        assert err.strip() == "aviary unpack: interrupted", err
    assert state(db, storage) == before
    listed = storage.client.list_objects_v2(Bucket=s3_bucket, Prefix=".aviary-")
    assert listed.get("KeyCount") == 0, listed.get("Contents")
    assert not storage.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_what_a_sweep_out_of_time_left_goes_with_the_next_restore_or_finish(many_documents, tmp_path, s3_server,
                                                                           s3_bucket):
    from aviarytools.storage import open_storage

    folder = open_storage(str(tmp_path / "data"))
    bucket = bucket_storage(s3_server, s3_bucket)
    for storage in (folder, bucket):
        storage.write(".aviary-restore-0c/users/u1/pdfs/a.pdf", [b"staged"])
        assert storage.sweep(".aviary-restore-0c/", seconds=0) is not None  # out of time: set aside
    db = str(tmp_path / "aviary.db")
    restored = aviary("unpack", "--db", db, "--storage", folder.url, "--create-schema", input=many_documents)
    assert restored.returncode == 0 and "removed what an interrupted restore had set aside" in restored.stderr.decode()
    assert os.listdir(folder.url) == ["users"]
    ok("unpack", "--finish", *s3_args(s3_server, s3_bucket), env=s3_env(s3_server))
    assert bucket.client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
