"""Family 5: the servers or the disk fail mid-command.

PostgreSQL is stopped (`immediate`, a crash) while load-table and a restore stream in through a
pipe; the S3 server is killed mid-pack and mid-restore; a target folder is read-only (a
read-only bind mount) or full (a 2 MiB tmpfs).  Each command must fail with one line; once the
server is back, the target is exactly as before, with no staging leftovers."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from servers import port_answers

from .fixtures import Fixtures, files_under, login_attempts
from .harness import (WHERE_ARCHIVE, WHERE_KEY, Case, Checks, Env, Proc, Skip, Target, expect_error,
                      expect_no_leftovers, expect_same, expect_verify_fails, leftovers)

WHERE_DB = r"postgresql://\S+|line \d+|" + WHERE_ARCHIVE
WHERE_S3 = r"s3://\S+|users/\S+|" + WHERE_ARCHIVE


def feed_and_strike(proc: Proc, data: bytes, strike, at: float = 0.4, settle: float = 0.8) -> threading.Thread:
    """In a thread: feed `at` of `data`, let the command take it, strike, feed the rest."""
    def work():
        cut = int(len(data) * at)
        proc.feed(data[:cut])
        time.sleep(settle)
        strike()
        proc.feed(data[cut:])
        proc.close_stdin()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@contextmanager
def mounted(kind: str, path: Path):
    """A 2 MiB tmpfs at `path`, or `path` bind-mounted on itself read-only; Skip if not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    steps = ([["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(path)]] if kind == "full" else
             [["mount", "--bind", str(path), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]])
    done = 0
    try:
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode:
                raise Skip(f"`{' '.join(step[:3])} ...` not allowed here: {result.stderr.strip()[:100]}")
            done += 1
        yield path
    finally:
        if done:
            subprocess.run(["umount", str(path)], capture_output=True)


@contextmanager
def brought_back(env: Env):
    """Whatever happens in the block, both servers answer again after it."""
    try:
        yield
    finally:
        if not port_answers(env.pg.port):
            env.pg.start()
        if not port_answers(env.s3.ports["s3"]):
            env.s3.start()


def server_failure_cases(env: Env, fx: Fixtures) -> list[Case]:
    pg, s3 = env.pg, env.s3

    def struck_mid_stream(target: Target, command: list[str], data: bytes, strike, where: str, settle=0.8,
                          advice=None):
        """Run `command`, feed it `data` and strike mid-way; after the servers are back (and the
        error's `advice` is followed), the target must be as before, with no staging leftovers."""
        before = target.state()
        checks = Checks()
        with brought_back(env):
            proc = env.start(*command)
            feeder = feed_and_strike(proc, data, strike, settle=settle)
            result = proc.wait(150)
            feeder.join()
        line = checks(expect_error, result, where)
        if advice and line:
            advice(line)
        checks(expect_same, before, target.state(), after_error=line or result.shown())
        checks(expect_no_leftovers, target.leftovers())
        return checks.done(f"{(line or '').split(': ', 1)[-1][:150]} ({result.measure()})")

    def pg_mid_load_table():
        target = fx.pg_target(env.fresh("pg-mid-load"))
        try:
            return struck_mid_stream(target, ["load-table", "login_attempts", "--db", target.db],
                                     login_attempts(150_000), lambda: pg.stop(mode="immediate"), WHERE_DB)
        finally:
            fx.drop_database(target.db)

    def pg_mid_restore():
        target = fx.pg_s3_target()
        try:
            return struck_mid_stream(target, ["unpack", *target.args], fx.big_archive,
                                     lambda: pg.stop(mode="immediate"), WHERE_DB)
        finally:
            fx.drop_database(target.db)

    def s3_mid_restore():
        local = fx.sqlite_target(env.fresh("s3-mid-restore"))
        target = Target(local.db, fx.target_bucket(), env, s3=True)
        return struck_mid_stream(target, ["unpack", *target.args], fx.big_archive, s3.kill, WHERE_S3, settle=1.5,
                                 advice=lambda line: delete_named_staging(line, target))

    def delete_named_staging(line: str, target: Target) -> None:
        """S3 is not transactional: objects staged before the server died cannot be removed by
        the failed restore.  It must name their prefix; the operator deletes it, as told."""
        told = re.search(r"delete s3://[^/\s]+/(\.aviary-restore-[0-9a-f]+/)", line)
        if told:
            client = env.s3.client()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.storage, Prefix=told[1]):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=target.storage, Key=item["Key"])

    def s3_mid_pack():
        source = Target(fx.big_source.db, fx.big_bucket, env, s3=True)
        before = source.state()
        folder = env.fresh("s3-mid-pack")
        checks = Checks()
        with brought_back(env):
            proc = env.start("pack", *source.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            received = bytearray()
            while len(received) < 0.4 * len(fx.big_archive):
                piece = proc.popen.stdout.read(1 << 16)
                if not piece:
                    break
                received += piece
                time.sleep(0.02)
            s3.kill()
            received += proc.popen.stdout.read()
            result = proc.wait(120)
            env.scan_piped("pack", received)
            line = checks(expect_error, result, WHERE_S3)
            (folder / "received.tar").write_bytes(received)
            checks(expect_verify_fails, env.run("verify", folder / "received.tar"))
            # And `pack -o` while the server is down: no FILE, no FILE.partial-*.
            checks(expect_error, env.run("pack", *source.args, "-o", folder / "backup.tar", timeout=120), WHERE_S3)
            if (folder / "backup.tar").exists() or leftovers(folder):
                checks.failed.append(f"pack -o left {sorted(p.name for p in folder.iterdir())}")
        checks(expect_same, before, source.state(), "bucket")
        return checks.done(f"{(line or '').split(': ', 1)[-1][:150]} ({result.measure()})")

    def restore_into(kind: str):
        folder = env.fresh(f"restore-{kind}")
        target = fx.sqlite_target(folder)
        archive = folder / "archive.tar"
        archive.write_bytes(fx.big_archive if kind == "full" else fx.archive)
        storage = Path(target.storage) if kind == "ro" else folder / "small-disk"
        checks = Checks()
        with mounted(kind, storage):
            if kind == "full":  # the target's documents, on a 2 MiB disk that the archive overflows
                subprocess.run(["cp", "-a", f"{target.storage}/.", str(storage)], check=True)
                target = Target(target.db, str(storage), env)
            before = target.state()
            line = checks(expect_error, env.run("unpack", *target.args, stdin=archive), WHERE_KEY)
            checks(expect_same, before, target.state())
            checks(expect_no_leftovers, target.leftovers())
        return checks.done((line or "").split(": ", 1)[-1][:90])

    def into_disk(kind: str, command: list[str], output: str):
        """`command` writing `output` on a read-only or full disk: one line, and no file there."""
        folder = env.fresh(f"{command[0]}-{kind}")
        archive = folder / "archive.tar"
        archive.write_bytes(fx.big_archive)
        checks = Checks()
        with mounted(kind, folder / "disk") as disk:
            result = env.run(*command, disk / output, stdin=archive if command[0] == "unpack" else None)
            line = checks(expect_error, result, WHERE_KEY)
            if files_under(disk):
                checks.failed.append(f"left a file: {files_under(disk)[0]}")
        return checks.done((line or "").split(": ", 1)[-1][:90])

    def sqlite_on_full_disk():
        folder = env.fresh("sqlite-full")
        checks = Checks()
        with mounted("full", folder / "disk") as disk:
            target = fx.sqlite_target(disk)  # about 300 KB: fits; the load does not
            before = target.state()
            result = env.run("load-table", "login_attempts", "--db", target.db, stdin=login_attempts(40_000))
            line = checks(expect_error, result, r"is full|No space left")  # the cause, not a side effect
            checks(expect_same, before, target.state())
        return checks.done((line or "").split(": ", 1)[-1][:90])

    def case(name, expected, run, quick=False):
        return Case("5 servers fail", name, expected, run, quick=quick, alone=True)

    back = "exit 1, one line; after restart target as before"
    return [
        case("PostgreSQL stopped mid load-table (150k rows, piped)", back, pg_mid_load_table, quick=True),
        case("PostgreSQL stopped mid restore (PostgreSQL+S3)", back + ", no staging", pg_mid_restore),
        case("S3 killed mid pack (stdout), then pack -o with S3 down", "exit 1, one line; stream fails verify; "
             "no FILE/.partial", s3_mid_pack),
        case("S3 killed mid restore (SQLite+S3)", "exit 1, one line naming any staged prefix left; after restart"
             " and deleting it, target as before", s3_mid_restore),
        case("read-only target folder: restore", "exit 1, one line; target as before", lambda: restore_into("ro")),
        case("read-only folder: unpack -C", "exit 1, one line; no file",
             lambda: into_disk("ro", ["unpack", "-C"], "out")),
        case("read-only folder: pack -o", "exit 1, one line; no file",
             lambda: into_disk("ro", ["pack", *fx.big_source.args, "-o"], "backup.tar")),
        case("full disk (2 MiB tmpfs): restore", "exit 1, one line; target as before, no staging",
             lambda: restore_into("full")),
        case("full disk: unpack -C", "exit 1, one line; no file",
             lambda: into_disk("full", ["unpack", "-C"], "out")),
        case("full disk: pack -o", "exit 1, one line; no FILE/.partial",
             lambda: into_disk("full", ["pack", *fx.big_source.args, "-o"], "backup.tar")),
        case("full disk: SQLite database, load-table", "exit 1, one line; table as before", sqlite_on_full_disk),
    ]
