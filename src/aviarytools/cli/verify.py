"""aviary verify: check an archive in one streaming pass."""

import click

from .. import errors, run_report
from ..archive import admin_page
from ..archive.chain import Chain, check, is_file, link_of, read_link
from ..archive.verify import verify
from ..findings import PROBLEM, failing
from ..progress import CountingReader, Progress, human_size
from ..tar.compression import sniff
from ..timestamps import Duration
from .common import archives_argument, given_archives, input_name, json_line, progress_option, report_findings, \
    report_option


def parse_duration(value: str | None) -> Duration | None:
    if value is None:
        return None
    try:
        return Duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("verify")
@archives_argument
@click.option("--json", "as_json", is_flag=True, help="Findings as NDJSON on stdout.")
@click.option("--max-age", metavar="DURATION",
              help="Also fail when the archive was exported longer ago than this (e.g. 26h, 7d).")
@click.option("-g", "--listed-incremental", "snapshot", metavar="FILE",
              help="Once ARCHIVE (the last) is found whole, confirm it arrived: the state pack -g FILE left"
              " pending (FILE.pending, when the archive went to a pipe) becomes FILE.")
@progress_option
@report_option
def command(archives, as_json, max_age, snapshot, progress):
    """Check ARCHIVE ({archive}) without extracting it.

    Tar structure and truncation, metadata.json first and well formed, every
    table a JSON array of objects, checksums, metadata totals against the
    content, references (users of every row and document folder) and
    duplicate keys.  A summary goes to stderr, and the archive's kind with
    whether Aviary's admin page can restore it; exit 0 clean, 1 problems.
    Aviary v1.4.0 to v1.5.3 wrote metadata.json last: checked when it comes.

    Several ARCHIVEs are a chain (pack -g): a level 0 and the incrementals
    after it, in order.  Each is checked, and so is each link: every
    archive's parent the one before it, one level 0, one selection.

    \b
      gunzip -c aviary.tar.gz | aviary verify
      aviary verify --max-age 26h backup.tar.gz || mail -s 'stale backup' ops@example.org
      aviary verify level0.tar.gz level1.tar.gz level2.tar.gz
    """
    limit = parse_duration(max_age)
    archives = given_archives(archives)
    chain = _links_first(archives) if len(archives) > 1 else None
    meter = Progress("verify", progress)
    run_report.count_bytes(meter)
    counts, metadata, problems, kinds = {}, {}, 0, []
    for archive in archives:
        kind, totals, read_before = [], [], meter.bytes
        compression, stream = sniff(archive)
        found = report_findings(verify(CountingReader(stream, meter), input_name(archive), limit, meter,
                                       about=kind.append, totals=totals.append), as_json)
        if as_json:
            json_line(_summary(input_name(archive), found, totals[0], meter.bytes - read_before))
        counts = {severity: counts.get(severity, 0) + n for severity, n in found.items()}
        metadata = kind[0] if kind else {}
        kinds += [f"aviary verify: {errors.message(admin_page.describe(about, compression))}" for about in kind]
        if chain is not None:
            _say(f"{input_name(archive)}: " + _verdict(found[PROBLEM]), as_json, found[PROBLEM])
            if metadata:
                chain.add(link_of(metadata, input_name(archive)))
    meter.done()
    for line in kinds:  # once the progress line is done
        click.echo(line, err=True)
    problems = counts[PROBLEM]
    what = f"chain of {len(archives)} archives, {_levels(chain)}: " if chain is not None else ""
    kept = f": {snapshot} left as it was" if problems and snapshot else ""
    _say(f"{what}{_verdict(problems)} in {human_size(meter.bytes)} read{kept}" if problems
         else f"{what}ok ({human_size(meter.bytes)} read)", as_json, problems)
    if failing(counts, PROBLEM):
        run_report.note_error(f"aviary verify: {what}{problems} problem(s){kept}")
        raise SystemExit(1)
    if snapshot is not None:
        from ..archive.incremental import confirm

        click.echo(f"aviary verify: {errors.message(confirm(snapshot, metadata))}", err=True)


def _summary(name: str, found: dict[str, int], totals, read: int) -> dict:
    """--json's last line for each archive: a finding of its own check, "summary" (so that
    filters on severity pass it by), with the exact counts beside its detail."""
    problems = found[PROBLEM]
    detail = (f"{_verdict(problems)}: {totals.members} members, {totals.documents} documents"
              f" ({totals.document_bytes} bytes), {totals.rows} rows, {read} bytes read")
    return {"check": "summary", "severity": "info", "subject": name, "detail": detail,
            "problems": problems, "members": totals.members, "documents": totals.documents,
            "document_bytes": totals.document_bytes, "rows": totals.rows, "bytes_read": read}


def _links_first(archives) -> Chain:
    """Where every ARCHIVE is a file, its link is read first (metadata.json only): a broken chain
    is refused before gigabytes are read.  Every link is checked again as each is verified."""
    names = [input_name(a) for a in archives]
    if all(map(is_file, names)):
        links = [read_link(name) for name in names]
        if None not in links:
            check(links)
    return Chain()


def _verdict(problems: int) -> str:
    return f"{problems} problem(s)" if problems else "ok"


def _levels(chain: Chain) -> str:
    if not chain.links:
        return "no link read"
    return f"levels {chain.links[0].level} to {chain.last.level}, level 0 {chain.links[0].archive}"


def _say(line: str, as_json: bool, problems: int) -> None:
    """A summary line on stderr (with --json, only when there are problems)."""
    if not as_json or problems:
        click.echo(f"aviary verify: {line}", err=True)
