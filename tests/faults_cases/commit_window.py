"""Family 8: faults after a restore's commit (its finish: the moves and the stale deletes).

The restore of 408 small documents stops itself at a point after its database committed
(AVIARY_TEST_STOP_AT sends it SIGSTOP: nothing is mocked): before the first move, half-way
through the moves, or before the stale deletes.  The drill strikes there, as a real fault
would: the storage is lost (a folder remounted read-only, the S3 server killed), or the
command gets SIGINT, SIGTERM or SIGKILL; then it goes on.  After each:
- the command (where it lived to say so) exits 1 with three lines: the database holds the
  archive's data, how many documents are still to move or delete, the finish command;
- once the storage is back, doctor reports the unfinished restore (exit 1, naming the command);
- `aviary unpack --finish` completes it (exit 0), and the target then equals the archive:
  every row and document, doctor --against exits 0, and no staging entry is left."""

from __future__ import annotations

import os
import re
import signal
import time
from contextlib import ExitStack
from pathlib import Path

from .fixtures import Fixtures
from .harness import Case, Checks, Env, Fail, Proc, Result, State, Target, dump_tables, expect_no_leftovers, \
    expect_ok, expect_same, folder_files
from .server_failures import BOUND, brought_back, mounted, running

POINTS = {"first move": "committed", "mid-moves": "moving", "stale deletes": "deleting"}


def stopped(proc: Proc, timeout: float = 60) -> None:
    """Wait until the command stopped itself (state T)."""
    pid = proc.command_pid()
    deadline = time.monotonic() + timeout
    while running(proc) and time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = ""
        if state == "T":
            return
        time.sleep(0.01)
    raise Fail(f"drill: the restore never stopped after its commit: {proc.wait(5).shown()}")


def expect_unfinished(result: Result) -> str:
    """Exit 1, three lines: what holds, what is left, the command that finishes."""
    if result.timed_out or "Traceback" in result.err:
        raise Fail(f"{result.name}: {result.shown()}")
    lines = result.lines
    if result.rc != 1 or len(lines) != 3 or not all(line.startswith("aviary unpack: ") for line in lines):
        raise Fail(f"expected exit 1 and three lines; {result.shown()}")
    if "the database holds the archive's data" not in lines[0]:
        raise Fail(f"line 1 does not say the database committed: {lines[0][:200]}")
    if not re.search(r"\d+ of \d+ document\(s\) still to move", lines[1]):
        raise Fail(f"line 2 does not count what is left: {lines[1][:200]}")
    if "aviary unpack --finish --storage " not in lines[2]:
        raise Fail(f"line 3 does not give the finish command: {lines[2][:200]}")
    return lines[1].split(": ", 1)[1]


def commit_window_cases(env: Env, fx: Fixtures) -> list[Case]:
    s3 = env.s3

    def as_packed() -> State:
        return State(dump_tables(fx.many_source.db), folder_files(Path(fx.many_source.storage)))

    def struck(on_s3: bool, point: str, strike: str):
        folder = env.fresh(f"window-{'s3' if on_s3 else 'folder'}-{point}-{strike}")
        archive = folder / "many.tar"
        archive.write_bytes(fx.many_archive)
        local = fx.sqlite_target(folder)
        target = Target(local.db, fx.target_bucket(), env, s3=True) if on_s3 else local
        storage_args = env.s3_args(target.storage) if on_s3 else ["--storage", target.storage]
        checks = Checks()
        with brought_back(env), ExitStack() as lost:
            with open(archive, "rb") as source:
                proc = env.start("unpack", *target.args, stdin=source,
                                 extra_env={"AVIARY_TEST_STOP_AT": POINTS[point]})
            stopped(proc)
            pid = proc.command_pid()
            if strike == "storage lost":
                if on_s3:
                    s3.kill()
                else:
                    lost.enter_context(mounted("ro", Path(target.storage)))
            else:
                os.kill(pid, {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}[strike])
            if strike != "SIGKILL":
                os.kill(pid, signal.SIGCONT)
            result = proc.wait(BOUND + 30)
        told = None
        if strike != "SIGKILL":
            told = checks(expect_unfinished, result)
            if result.seconds > BOUND:
                checks.failed.append(f"took {result.seconds:.0f}s to say so")
        elif result.rc != -signal.SIGKILL and result.rc != 128 + signal.SIGKILL:
            checks.failed.append(f"drill: expected the SIGKILL to end it; {result.shown()}")
        if dump_tables(target.db) != as_packed().tables:
            checks.failed.append("the database does not hold the archive's rows: it did not commit")
        doctor = env.run("doctor", *target.args)
        if doctor.rc != 1 or "unfinished-restore" not in doctor.err or "unpack --finish" not in doctor.err:
            checks.failed.append(f"doctor did not report the unfinished restore: {doctor.shown()}")
        finished = checks(expect_ok, env.run("unpack", "--finish", *storage_args, timeout=BOUND))
        checks(expect_same, as_packed(), target.state(), "target (against the archive)")
        against = env.run("doctor", "--against", archive, *target.args)
        if against.rc != 0:
            checks.failed.append(f"doctor --against after the finish: {against.shown()}")
        checks(expect_no_leftovers, target.leftovers())
        again = env.run("unpack", "--finish", *storage_args)
        if again.rc != 0:
            checks.failed.append(f"a second finish: {again.shown()}")
        return checks.done(f"{told or 'killed'}; finished in {finished.seconds:.1f}s" if finished else "")

    cases = []
    for on_s3 in (False, True):
        where = "SQLite + S3" if on_s3 else "SQLite + folder"
        lost = "S3 server killed" if on_s3 else "folder remounted read-only"
        for point in POINTS:
            cases.append(Case("8 commit window", f"storage lost at {point} ({lost}; {where})",
                              "exit 1, 3 lines; doctor problem; --finish: target = archive, no staging",
                              lambda on_s3=on_s3, point=point: struck(on_s3, point, "storage lost"),
                              quick=point == "mid-moves" and not on_s3, alone=True))
        for strike in ("SIGINT", "SIGTERM", "SIGKILL"):
            said = "killed" if strike == "SIGKILL" else "exit 1, 3 lines"
            cases.append(Case("8 commit window", f"{strike} after the commit ({where})",
                              f"{said}; doctor problem; --finish: target = archive, no staging",
                              lambda on_s3=on_s3, strike=strike: struck(on_s3, "first move", strike),
                              quick=strike == "SIGKILL" and on_s3, alone=True))
    return cases
