"""aviary verify: check an archive in one streaming pass."""

import click

from ..archive.verify import verify
from ..findings import PROBLEM, failing
from ..progress import CountingReader, Progress, human_size
from ..timestamps import Duration
from .common import archive_argument, input_name, progress_option, report_findings


def parse_duration(value: str | None) -> Duration | None:
    if value is None:
        return None
    try:
        return Duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("verify")
@archive_argument
@click.option("--json", "as_json", is_flag=True, help="Findings as NDJSON on stdout.")
@click.option("--max-age", metavar="DURATION",
              help="Also fail when the archive was exported longer ago than this (e.g. 26h, 7d).")
@progress_option
def command(archive, as_json, max_age, progress):
    """Check ARCHIVE ({archive}) without extracting it.

    Tar structure and truncation, metadata.json first and well formed, every
    table a JSON array of objects, checksums, metadata totals against the
    content, references (users of every row and document folder) and
    duplicate keys.  A summary goes to stderr; exit 0 clean, 1 problems.
    Aviary v1.4.0 to v1.5.3 wrote metadata.json last: checked when it comes.

    \b
      gunzip -c aviary.tar.gz | aviary verify
      aviary verify --max-age 26h backup.tar.gz || mail -s 'stale backup' ops@example.org
    """
    limit = parse_duration(max_age)
    meter = Progress("verify", progress)
    counts = report_findings(verify(CountingReader(archive, meter), input_name(archive), limit, meter), as_json)
    meter.done()
    problems = counts[PROBLEM]
    if not as_json or problems:
        click.echo(f"aviary verify: {problems} problem(s) in {human_size(meter.bytes)} read"
                   if problems else f"aviary verify: ok ({human_size(meter.bytes)} read)", err=True)
    if failing(counts, PROBLEM):
        raise SystemExit(1)
