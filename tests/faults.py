#!/usr/bin/env python3
"""Fault drills (`make faults`): aviarytools against damaged and hostile archives, hostile rows,
failing servers, a concurrent writer, signals, and secret leaks, on a real PostgreSQL (password
auth) and a real SeaweedFS S3 server (secret key) started here, once, for every case.

    .venv/bin/python tests/faults.py            # every case (about 7 minutes on 2 cores)
    .venv/bin/python tests/faults.py --quick    # one or two of each family (under a minute)
    .venv/bin/python tests/faults.py --only bomb --keep

Prints one row per case (case, expected, result) and the totals; exit 1 if any case FAILs.
The cases are in faults_cases/, one module per family; harness.py holds the checks.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults_cases import FAMILIES  # noqa: E402
from faults_cases.fixtures import Fixtures  # noqa: E402
from faults_cases.harness import Case, Env, Outcome, attempt  # noqa: E402
from servers import PostgresServer, SeaweedS3Server  # noqa: E402

WIDTHS = (66, 50)


def cell(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text.ljust(width) if len(text) <= width else text[:width - 1] + "…"


def row(outcome: Outcome) -> str:
    case = outcome.case
    result = f"{outcome.status} {outcome.detail}".strip()
    result = " ".join(result.split())[:160]
    return f"{cell(case.family + ': ' + case.name, WIDTHS[0])} {cell(case.expected, WIDTHS[1])} {result}"


def batches(cases: list[Case]):
    """Consecutive cases that may run side by side, and each case that must run alone."""
    group: list[Case] = []
    for case in cases:
        if case.alone:
            if group:
                yield group
                group = []
            yield [case]
        else:
            group.append(case)
    if group:
        yield group


def run_all(cases: list[Case], jobs: int, mask) -> list[Outcome]:
    outcomes = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for group in batches(cases):
            for outcome in pool.map(attempt, group) if len(group) > 1 else [attempt(group[0])]:
                outcome.detail = mask(outcome.detail)
                outcomes.append(outcome)
                print(row(outcome), flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a representative subset (one of each family)")
    parser.add_argument("--only", metavar="REGEX", help="only the cases whose family or name matches")
    parser.add_argument("--jobs", type=int, default=2, help="cases run side by side (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    # The drills send SIGINT as a terminal's Ctrl-C does.  Started with it ignored (`cmd &` in a
    # script, nohup), this runner would pass that on to every command, which rightly keeps
    # ignoring it; a signal caught here is back at its default in them.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="aviary-faults-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as `postgres` and must reach its folder
    for sub in ("postgres", "seaweedfs", "work/tmp"):
        (root / sub).mkdir(parents=True)
    pg, s3 = PostgresServer(root / "postgres"), SeaweedS3Server(root / "seaweedfs")
    try:
        pg.start()
        s3.start()
        env = Env(root / "work", pg, s3)
        fixtures = Fixtures(env)
        cases = [case for family in FAMILIES for case in family(env, fixtures)]
        if args.quick:
            cases = [c for c in cases if c.quick]
        if args.only:
            cases = [c for c in cases if re.search(args.only, f"{c.family}: {c.name}")]
        print(f"servers up in {time.monotonic() - started:.0f}s: PostgreSQL 127.0.0.1:{pg.port}, "
              f"SeaweedFS S3 {s3.endpoint}; {len(cases)} case(s)\n", flush=True)
        print(f"{cell('case', WIDTHS[0])} {cell('expected', WIDTHS[1])} result")
        print("-" * (sum(WIDTHS) + 60))
        outcomes = run_all(cases, args.jobs, env.mask)
    finally:
        s3.kill()
        pg.stop(mode="immediate")
        if args.keep:
            print(f"\nwork folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    counts = {status: sum(o.status == status for o in outcomes) for status in ("PASS", "FAIL", "SKIP")}
    failed = [o for o in outcomes if o.status == "FAIL"]
    if failed:
        print("\nFailures in full:")
        for o in failed:
            print(f"- {o.case.family}: {o.case.name}\n    expected: {o.case.expected}\n    got: {o.detail}")
    print("\ntime per family (case durations summed; cases run two at a time unless they touch the servers):")
    for family in dict.fromkeys(o.case.family for o in outcomes):
        mine = [o for o in outcomes if o.case.family == family]
        print(f"  {family:16} {len(mine):4} cases {sum(o.seconds for o in mine):7.0f}s")
    print(f"\n{len(outcomes)} cases tried: {counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped; {env.commands} commands run, {env.scanned} bytes of their output "
          f"searched for secrets; {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
