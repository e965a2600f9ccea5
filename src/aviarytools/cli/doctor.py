"""aviary doctor: check a live installation, or compare it with an archive."""

import click

from .. import run_report
from ..doctor import check_installation, compare
from ..findings import PROBLEM, WARNING, failing
from ..progress import CountingReader, Progress
from .common import ARCHIVE_FORMS, InputFile, closing, db_option, fail_on_option, input_name, open_db, open_storage, \
    progress_option, report_findings, report_option, storage_options, user_option


@click.command("doctor")
@db_option
@storage_options
@click.option("--deep", is_flag=True, help="Also read every object end to end (S3: check sizes and MD5 ETags).")
@click.option("--against", "archive", metavar="ARCHIVE", type=InputFile("an archive"),
              help=f"Compare the installation with ARCHIVE (a path, or - for stdin; {ARCHIVE_FORMS}).")
@user_option
@click.option("--json", "as_json", is_flag=True, help="Findings as NDJSON on stdout.")
@fail_on_option
@progress_option
@report_option
def command(db_url, deep, archive, users, as_json, fail_on, progress, **storage):
    """Check the live database and documents; exit 0 healthy, 1 problems.

    Problems (data lost or a reference broken): SQLite's integrity and
    foreign key checks, rows naming no user, duplicates in unique columns,
    unreadable objects; with --deep every object is read.  Warnings (odd but
    working; exit 0 unless --fail-on warning): users/<x>/ folders that are no
    user's, objects outside users/<uuid>/pdfs/, empty documents, links.
    Expired sessions and API keys and each user's documents are information.

    With --against ARCHIVE (after a restore) the installation is compared
    with the archive instead, in one pass: every row equal, every document
    with the same XXH128, and what is only on one side.

    \b
      aviary doctor --db sqlite:///data/aviary.db --storage /data --deep
      aviary doctor --against /backups/aviary-2025-07-27.tar.gz --json | jq -c 'select(.severity == "problem")'
    """
    if archive is not None and deep:
        raise click.UsageError("--deep does not apply with --against (which reads every archived document)")
    if users and archive is None:
        raise click.UsageError("--user applies with --against only")
    storage = open_storage(**storage)
    db = open_db(db_url)
    meter = Progress("doctor", progress)
    run_report.count_bytes(meter)
    with closing(db), storage:
        if archive is not None:
            findings = compare(CountingReader(archive, meter), input_name(archive), db, storage,
                               tuple(users) or None)
        else:
            if not deep:
                meter.phase("checking")  # nothing measured: what it does, not "0 B"
            findings = check_installation(db, storage, deep=deep, progress=meter if deep else None)
        counts = report_findings(findings, as_json)
    meter.done()
    problems, warnings = counts[PROBLEM], counts[WARNING]
    verdict = f"{problems} problem(s) found" if problems else "no problems found"
    summary = f"aviary doctor: {verdict}" + (f", {warnings} warning(s)" if warnings else "")
    click.echo(summary, err=True)
    if failing(counts, fail_on):
        run_report.note_error(summary)
        raise SystemExit(1)
