"""Family 7: signals and closed pipes.

`dump-table | head -1` and `pack | head -c` end quietly (exit 0, nothing on stderr).  SIGINT or
SIGTERM mid-restore (also with 32 uploads to S3 in flight), mid-extraction, mid-load and mid-pack
rolls back, removes what it wrote aside (empty staging folders too) and exits 130 or 143 with
one line.  (After the commit, a signal is the commit window's: faults_cases/commit_window.py.)
A signal in one long SQL statement (the apply of 200,000 rows restored over themselves, on each
engine) stops it within a second."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from .fixtures import Fixtures, files_under, login_attempts
from .harness import Case, Checks, Env, Fail, expect_error, expect_no_leftovers, expect_ok, expect_same, \
    leftovers
from .server_failures import feed_and_strike, when_staged

STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
WORD = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
# A second, as promised, and as much again for a loaded machine: on the 2-core development VM at a
# load of 15 a SIGTERM in PostgreSQL's apply once took 1.9 s (0.2-0.5 s in a quieter minute).
STOP_WITHIN = 2.0


def signal_cases(env: Env, fx: Fixtures) -> list[Case]:
    def piped_to_head(engine: str, command: list[str], head: list[str], quiet: bool = True):
        folder = env.fresh(f"head-{engine}")
        target = fx.sqlite_target(folder) if engine == "sqlite" else fx.pg_target(folder)
        fx.with_attempts(target, 100_000)
        proc = env.start(*command, *(target.args if command[0] == "pack" else ["--db", target.db]),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        reader = subprocess.Popen(head, stdin=proc.popen.stdout, stdout=subprocess.PIPE)
        proc.popen.stdout.close()
        shown = reader.communicate(timeout=60)[0]
        result = proc.wait(60)
        env.scan_piped(command[0], shown)
        if engine == "postgres":
            fx.drop_database(target.db)
        if not shown:
            raise Fail(f"{' '.join(head)} got nothing")
        if quiet and (result.rc != 0 or result.err.strip()):
            raise Fail(f"expected exit 0 and a quiet stderr; {result.shown()}")
        if not quiet:  # pack: a cut archive is a failed backup (aviary-pack(1))
            return expect_error(result, None).split(": ", 1)[-1]
        return f"exit 0, quiet, {result.measure()}"

    def struck(proc, data: bytes, signum, settle=1.0):
        feeder = feed_and_strike(proc, data, lambda: proc.signal(signum), settle=settle)
        result = proc.wait(60)
        feeder.join()
        return result

    def interrupted_restore(signum, pg: bool):
        folder = env.fresh(f"signal-restore-{signum}")
        target = fx.pg_s3_target() if pg else fx.sqlite_target(folder)
        before = target.state()
        result = struck(env.start("unpack", *target.args), fx.big_archive, signum)
        checks = Checks()
        checks(expect_same, before, target.state())
        checks(expect_no_leftovers, target.leftovers())
        checks(expect_error, result, WORD[signum], rc=STATUS[signum])
        if pg:
            fx.drop_database(target.db)
        return checks.done(f"exit {result.rc}, rolled back, no staging left")

    def interrupted_uploads(signum):
        """A restore of 408 small documents into S3, signalled once 60 are staged."""
        target = fx.pg_s3_target()
        archive = env.fresh(f"signal-uploads-{signum}") / "many.tar"
        archive.write_bytes(fx.many_archive)
        before = target.state()
        try:
            with open(archive, "rb") as source:
                proc = env.start("unpack", *target.args, "--s3-concurrency", "32", stdin=source)
            staged = when_staged(target, proc, 60)
            proc.signal(signum)
            result = proc.wait(60)
            checks = Checks()
            checks(expect_same, before, target.state())
            checks(expect_no_leftovers, target.leftovers())
            checks(expect_error, result, WORD[signum], rc=STATUS[signum])
        finally:
            fx.drop_database(target.db)
        return checks.done(f"signalled with {staged} staged: exit {result.rc} in {result.seconds:.1f}s, "
                           "rolled back, no staged object")

    def interrupted_extract(signum):
        out = env.fresh(f"signal-extract-{signum}") / "out"
        result = struck(env.start("unpack", "-C", out), fx.big_archive, signum)
        checks = Checks()
        if files_under(out):
            checks.failed.append(f"left a file: {files_under(out)[0]}")
        checks(expect_error, result, WORD[signum], rc=STATUS[signum])
        return checks.done(f"exit {result.rc}, no file left")

    def interrupted_load(signum):
        target = fx.sqlite_target(env.fresh(f"signal-load-{signum}"))
        before = target.state()
        result = struck(env.start("load-table", "login_attempts", "--db", target.db), login_attempts(150_000),
                        signum, settle=0.8)
        checks = Checks()
        checks(expect_same, before, target.state())
        checks(expect_error, result, WORD[signum], rc=STATUS[signum])
        return checks.done(f"exit {result.rc}, table as before")

    def interrupted_pack(signum):
        folder = env.fresh(f"signal-pack-{signum}")
        source = fx.with_attempts(fx.sqlite_target(folder), 300_000)
        output = folder / "backup.tar"
        proc = env.start("pack", *source.args, "-o", output, stdin=None)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.popen.poll() is None:
            partial = list(folder.glob("backup.tar.partial-*"))
            if partial and partial[0].stat().st_size > (1 << 20):
                break
            time.sleep(0.01)
        else:
            raise Fail("pack -o never wrote a 1 MiB partial file to interrupt")
        proc.signal(signum)
        result = proc.wait(60)
        checks = Checks()
        if output.exists() or leftovers(folder):
            checks.failed.append(f"left {output if output.exists() else leftovers(folder)[0]}")
        checks(expect_error, result, WORD[signum], rc=STATUS[signum])
        return checks.done(f"exit {result.rc}, no FILE, no partial")

    def in_long_statement(signum, engine: str):
        """A restore of 200,000 login_attempts over themselves, signalled once its progress line
        (on stderr) says it applies them: one statement, on SQLite or on the server."""
        folder = env.fresh(f"signal-statement-{engine}-{signum}")
        target = fx.sqlite_target(folder) if engine == "sqlite" else fx.pg_target(folder)
        try:
            fx.with_attempts(target, 200_000)
            archive = folder / "backup.tar"
            expect_ok(env.run("pack", *target.args, "-o", archive))
            before = target.state()
            with open(archive, "rb") as source:
                proc = env.start("unpack", *target.args, "--progress", stdin=source)
            phase = applying(proc, "login_attempts")
            struck_at = time.monotonic()
            proc.signal(signum)
            result = proc.wait(60)
            took = time.monotonic() - struck_at
            checks = Checks()
            checks(expect_same, before, target.state())
            result.err = result.err.rsplit("\x1b[K", 1)[-1]  # what follows the progress line
            checks(expect_error, result, WORD[signum], rc=STATUS[signum])
            if took > STOP_WITHIN:
                checks.failed.append(f"took {took:.1f} s to stop after the signal")
        finally:
            if engine == "postgres":
                fx.drop_database(target.db)
        return checks.done(f"signalled in '{phase}': exit {result.rc} {took:.2f} s later, rolled back")

    def applying(proc, table: str) -> str:
        """Wait for the phase that applies `table` (removing its stale rows, or writing them)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.popen.poll() is None:
            text = os.pread(proc.err_file.fileno(), 1 << 20, 0).decode("utf-8", "replace")
            frames = text.replace("\x1b[K", "").split("\r")
            phase = frames[-1].strip().removeprefix("unpack: ")
            if table in phase and phase.startswith(("applying", "removing")):
                return phase
            time.sleep(0.01)
        raise Fail(f"never saw the restore apply {table} (exit {proc.popen.poll()})")

    def case(name, expected, run, quick=False):
        return Case("7 signals", name, expected, run, quick=quick, alone=True)

    quiet = "exit 0, nothing on stderr"
    return [
        case("dump-table | head -1 (SQLite, 100k rows)", quiet,
             lambda: piped_to_head("sqlite", ["dump-table", "login_attempts"], ["head", "-1"]), quick=True),
        case("dump-table | head -1 (PostgreSQL, 100k rows)", quiet,
             lambda: piped_to_head("postgres", ["dump-table", "login_attempts"], ["head", "-1"])),
        case("pack | head -c 1000", "exit 1, one line (a cut archive is a failed backup)",
             lambda: piped_to_head("sqlite", ["pack"], ["head", "-c", "1000"], quiet=False)),
        case("SIGINT mid restore (SQLite + folder)", "exit 130, one line; rolled back, no staged file",
             lambda: interrupted_restore(signal.SIGINT, pg=False), quick=True),
        case("SIGTERM mid restore (SQLite + folder)", "exit 143, one line; rolled back, no staged file",
             lambda: interrupted_restore(signal.SIGTERM, pg=False)),
        case("SIGINT mid restore (PostgreSQL + S3)", "exit 130, one line; rolled back, no staged object",
             lambda: interrupted_restore(signal.SIGINT, pg=True)),
        case("SIGTERM mid restore (PostgreSQL + S3)", "exit 143, one line; rolled back, no staged object",
             lambda: interrupted_restore(signal.SIGTERM, pg=True)),
        case("SIGINT mid restore, 32 uploads in flight (PostgreSQL + S3)", "exit 130, one line; rolled back, "
             "no staged object", lambda: interrupted_uploads(signal.SIGINT)),
        case("SIGTERM mid restore, 32 uploads in flight (PostgreSQL + S3)", "exit 143, one line; rolled back, "
             "no staged object", lambda: interrupted_uploads(signal.SIGTERM)),
        case("SIGTERM mid unpack -C", "exit 143, one line; no file in DIR",
             lambda: interrupted_extract(signal.SIGTERM)),
        case("SIGINT mid unpack -C", "exit 130, one line; no file in DIR",
             lambda: interrupted_extract(signal.SIGINT)),
        case("SIGTERM mid load-table (SQLite, piped)", "exit 143, one line; table as before",
             lambda: interrupted_load(signal.SIGTERM)),
        case("SIGINT in one long statement (SQLite, 200k rows applied)", "exit 130 within 1 s, one line; "
             "rolled back", lambda: in_long_statement(signal.SIGINT, "sqlite")),
        case("SIGTERM in one long statement (SQLite, 200k rows applied)", "exit 143 within 1 s, one line; "
             "rolled back", lambda: in_long_statement(signal.SIGTERM, "sqlite")),
        case("SIGINT in one long statement (PostgreSQL, 200k rows applied)", "exit 130 within 1 s, one line; "
             "rolled back, cancelled on the server", lambda: in_long_statement(signal.SIGINT, "postgres")),
        case("SIGTERM in one long statement (PostgreSQL, 200k rows applied)", "exit 143 within 1 s, one line; "
             "rolled back, cancelled on the server", lambda: in_long_statement(signal.SIGTERM, "postgres")),
        case("SIGINT mid pack -o", "exit 130, one line; no FILE, no .partial",
             lambda: interrupted_pack(signal.SIGINT)),
        case("SIGTERM mid pack -o", "exit 143, one line; no FILE, no .partial",
             lambda: interrupted_pack(signal.SIGTERM)),
    ]


