"""Family 5: the servers or the disk fail mid-command.

PostgreSQL is stopped (`immediate`, a crash) while load-table and a restore stream in through a
pipe; the S3 server is killed mid-pack and mid-restore (also with dozens of uploads or reads in
flight), answers 500 or 403 (fault_proxy.py in front of it) or answers slowly (latency_proxy.py);
a target folder is read-only (a read-only bind mount) or full (a 2 MiB tmpfs).  Each command must
fail with one line; once the server is back (and the prefix the error names is deleted), the
target is exactly as before, with no staging leftovers.  Through retried 500s or a slow server,
a restore must succeed and leave the target equal to the archive."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from fault_proxy import INTERNAL_ERROR, INVALID_ACCESS_KEY, FaultProxy
from latency_proxy import LatencyProxy
from servers import port_answers

from .fixtures import Fixtures, files_under, login_attempts
from .harness import (WHERE_ARCHIVE, WHERE_KEY, Case, Checks, Env, Fail, Proc, Result, Skip, State, Target,
                      dump_tables, expect_error, expect_no_leftovers, expect_ok, expect_same, expect_verify_fails,
                      folder_files, leftovers)

WHERE_DB = r"postgresql://\S+|line \d+|" + WHERE_ARCHIVE
WHERE_S3 = r"s3://\S+|users/\S+|" + WHERE_ARCHIVE
# A restore that could not remove what it staged says which prefix to delete.
WHERE_STAGED = r"could not be removed: once the storage answers, delete s3://[^/\s]+/\.aviary-restore-[0-9a-f]+/"
BOUND = 120  # seconds: a failure within this, whatever the S3 client's timeouts and retries


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


def running(proc: Proc) -> bool:
    """Whether the command still runs, without reaping it (Proc.wait does)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def when(proc: Proc, reached, what: str, timeout: float = 60):
    """Wait until reached() gives a true value, and give it; Fail (the command stopped) if it
    never does while the command runs."""
    deadline = time.monotonic() + timeout
    while running(proc) and time.monotonic() < deadline:
        if value := reached():
            return value
        time.sleep(0.005)
    raise Fail(f"drill: {what} never happened: {proc.wait(5).shown()}")


def when_staged(target: Target, proc: Proc, count: int) -> int:
    """Wait until `count` objects are staged in the target's bucket; how many were then."""
    client = target.env.s3.client()

    def staged():
        found = client.list_objects_v2(Bucket=target.storage, Prefix=".aviary-restore-").get("KeyCount", 0)
        return found if found >= count else 0
    return when(proc, staged, f"{count} objects staged at once")


def via(target: Target, endpoint: str) -> list[str]:
    """The target's arguments, with its S3 requests sent to `endpoint` (a proxy)."""
    args = target.args
    args[args.index("--s3-endpoint") + 1] = endpoint
    return args


def within(result: Result, seconds: float = BOUND) -> None:
    if result.seconds > seconds:
        raise Fail(f"{result.name} took {result.seconds:.0f}s to fail (bound: {seconds:.0f}s)")


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

    def many_target(name: str, pg: bool = False) -> tuple[Target, Path]:
        """A target (a bucket of other documents and SQLite or PostgreSQL), and an archive of
        408 small documents in a file, to restore into it."""
        folder = env.fresh(name)
        archive = folder / "many.tar"
        archive.write_bytes(fx.many_archive)
        if pg:
            return fx.pg_s3_target(), archive
        return Target(fx.sqlite_target(folder).db, fx.target_bucket(), env, s3=True), archive

    def as_packed() -> State:
        """What a restore of the many archive leaves: its source's rows and documents."""
        return State(dump_tables(fx.many_source.db), folder_files(Path(fx.many_source.storage)))

    def s3_killed_many_in_flight():
        target, archive = many_target("s3-killed-many", pg=True)
        before = target.state()
        checks = Checks()
        try:
            with brought_back(env):
                with open(archive, "rb") as source:
                    proc = env.start("unpack", *target.args, "--s3-concurrency", "32", stdin=source)
                staged = when_staged(target, proc, 60)
                s3.kill()
                result = proc.wait(BOUND + 30)
            line = checks(expect_error, result, WHERE_STAGED)
            if line:
                delete_named_staging(line, target)
            checks(within, result)
            checks(expect_same, before, target.state(), after_error=line or result.shown())
            checks(expect_no_leftovers, target.leftovers())
        finally:
            fx.drop_database(target.db)
        return checks.done(f"killed with {staged} staged; {(line or '').split('; ', 1)[-1][:110]} "
                           f"({result.measure()})")

    def through_faults(name: str, rule) -> tuple[Target, State, Result, FaultProxy]:
        """The many archive restored (SQLite + S3) through a FaultProxy answering by `rule`."""
        target, archive = many_target(name)
        before = target.state()
        with FaultProxy(s3.ports["s3"], rule) as proxy:
            result = env.run("unpack", *via(target, proxy.endpoint), stdin=archive, timeout=BOUND + 30)
        if not proxy.answered:
            raise Fail(f"drill: the proxy answered none of {len(proxy.requests)} requests; {result.shown()}")
        return target, before, result, proxy

    def transient_500s():
        failed = set()

        def every_7th_put_once(request):
            if request.method == "PUT" and request.nth % 7 == 0 and request.path not in failed:
                failed.add(request.path)
                return INTERNAL_ERROR
            return None

        target, _, result, proxy = through_faults("s3-transient-500s", every_7th_put_once)
        checks = Checks()
        checks(expect_ok, result)
        checks(expect_same, as_packed(), target.state(), "target (against the archive)")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done(f"{len(proxy.answered)} of {len(proxy.requests)} requests answered 500, retried; "
                           f"target = archive ({result.measure()})")

    def failing_after(name: str, rule, where: str, staged_left: bool):
        target, before, result, proxy = through_faults(name, rule)
        checks = Checks()
        line = checks(expect_error, result, where)
        if line and staged_left:
            delete_named_staging(line, target)  # the rule is lifted: the storage answers again
        elif line and "could not be removed" in line:
            checks.failed.append(f"the staged objects were not removed, yet DELETEs passed: {line[-150:]}")
        checks(within, result)
        checks(expect_same, before, target.state(), after_error=line or result.shown())
        checks(expect_no_leftovers, target.leftovers())
        return checks.done(f"{len(proxy.answered)} answered; {(line or '').split(': ', 1)[-1][:110]} "
                           f"({result.measure()})")

    def slow_server():
        target, archive = many_target("s3-slow")
        with LatencyProxy(s3.ports["s3"], delay_ms=200) as proxy:
            result = env.run("unpack", *via(target, proxy.endpoint), stdin=archive, timeout=300)
        checks = Checks()
        checks(expect_ok, result)
        checks(expect_same, as_packed(), target.state(), "target (against the archive)")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done(f"target = archive ({result.measure()})")

    def s3_killed_mid_pack_to_file():
        source = Target(fx.many_source.db, fx.many_bucket, env, s3=True)
        before = source.state()
        folder = env.fresh("s3-mid-pack-o")
        output = folder / "backup.tar"
        checks = Checks()
        with brought_back(env):
            proc = env.start("pack", *source.args, "--s3-concurrency", "16", "-o", output, stdin=subprocess.DEVNULL)
            when(proc, lambda: any(p.stat().st_size > (1 << 20) for p in folder.glob("backup.tar.partial-*")),
                 "a 1 MiB partial file")
            s3.kill()
            result = proc.wait(BOUND + 30)
        line = checks(expect_error, result, WHERE_S3)
        checks(within, result)
        if output.exists() or leftovers(folder):
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
        case("S3 killed mid pack -o (408 small documents, 16 reads in flight)", "exit 1, one line; no FILE, "
             "no FILE.partial-*; bucket as before", s3_killed_mid_pack_to_file),
        case("S3 killed mid restore, 32 uploads in flight (PostgreSQL+S3)", f"exit 1 within {BOUND}s, one line "
             "naming the staged prefix; after restart and deleting it, target as before", s3_killed_many_in_flight),
        case("S3 answers 500 to every 7th PUT, once each (SQLite+S3)", "exit 0 (retried); target = archive, "
             "no staging", transient_500s),
        case("S3 answers 500 to every PUT after the 50th (SQLite+S3)", "exit 1, one line; target as before, "
             "staged objects removed",
             lambda: failing_after("s3-persistent-500s", lambda r: INTERNAL_ERROR if r.method == "PUT" and r.nth > 50
                                   else None, WHERE_S3, staged_left=False)),
        case("S3 credentials revoked: 403 after the 50th request (SQLite+S3)", "exit 1, one line naming the staged "
             "prefix, no secret; after deleting it, target as before",
             lambda: failing_after("s3-revoked", lambda r: INVALID_ACCESS_KEY if r.number > 50 else None,
                                   WHERE_STAGED, staged_left=True)),
        case("S3 200 ms away each way: restore (SQLite+S3)", "exit 0; target = archive, no staging", slow_server),
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
