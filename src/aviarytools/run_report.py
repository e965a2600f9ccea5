"""--report FILE: what one run of a command did, for monitoring to read.

A command that runs with --report FILE leaves, when it ends, whether it
succeeded or not, one JSON object in FILE, or (FILE ending in `.prom`) a
Prometheus textfile for node_exporter's textfile collector.  FILE is written
aside and renamed into place, so a collector never reads half a report.

The run collects facts as it goes (`note`, `note_archive`, `note_findings`,
`count_bytes`): the CLI starts the run (`begin`) when it parses --report and
writes FILE (`finish`) once it knows the exit status.  Without --report every
call is a no-op.  Nothing secret goes in: the error line is the one printed,
redacted as every message, and no URL, path or argument is recorded.

A failed run keeps the last success's time from the FILE it replaces, so an
alert on "no success for 26 hours" fires whether the job stopped running or
kept failing.
"""

from __future__ import annotations

import json
import os
import re
import time

from . import __version__
from .errors import AviaryError, message
from .timestamps import NS_PER_SECOND, parse as parse_timestamp, to_rfc3339

FORMAT = 1
PROM_PREFIX = "aviary_backup_"
_started_ns: int | None = None
_run: Run | None = None


class Run:
    """The facts of one run of a command."""

    def __init__(self, path: str, command: str, started_ns: int):
        self.path, self.command, self.started_ns = path, command, started_ns
        self.facts: dict = {"bytes_read": None, "bytes_written": None, "documents": None, "rows": None,
                            "archive": None}
        self.findings: dict[str, int] | None = None
        self.error: str | None = None
        self.meter = None  # a Progress whose byte count is what the run read

    def as_dict(self, status: int, ended_ns: int, last_success: str | None) -> dict:
        facts = dict(self.facts)
        if facts["bytes_read"] is None and self.meter is not None:
            facts["bytes_read"] = self.meter.bytes
        return {"aviarytools_report": FORMAT, "version": __version__, "command": self.command,
                "start": to_rfc3339(self.started_ns), "end": to_rfc3339(ended_ns),
                "duration_seconds": round((ended_ns - self.started_ns) / NS_PER_SECOND, 3),
                "exit_status": status, "ok": status == 0, "error": self.error, **facts,
                "findings": self.findings, "last_success": last_success}


def clock() -> None:
    """The run starts now (the CLI calls this before it parses the arguments)."""
    global _started_ns
    _started_ns = time.time_ns()


def begin(path: str, command: str) -> None:
    """Report this run of `command` (pack, verify, ...) into `path` when it ends."""
    global _run
    _run = Run(path, command, _started_ns if _started_ns is not None else time.time_ns())


def active() -> bool:
    return _run is not None


def note(**facts) -> None:
    """Record facts: bytes_read, bytes_written, documents, rows."""
    if _run is not None:
        _run.facts.update({k: v for k, v in facts.items() if v is not None})


def note_archive(metadata: dict) -> None:
    """The archive the run read or wrote, from its metadata.json: its place in a chain
    (id, level, parent, base) where it has one, and its documents and rows (the last
    archive's, of a chain; what the command notes itself afterwards wins)."""
    if _run is None or not isinstance(metadata, dict):
        return
    ours = metadata.get("aviarytools") if isinstance(metadata.get("aviarytools"), dict) else {}
    chain = ours.get("incremental") if isinstance(ours.get("incremental"), dict) else {}
    archive = {"id": chain.get("archive"), "level": chain.get("level"), "parent": chain.get("parent"),
               "base": chain.get("base"), "exported": metadata.get("export_timestamp")}
    _run.facts["archive"] = {k: v for k, v in archive.items() if isinstance(v, (str, int)) and v is not True}
    rows = ours.get("table_rows")
    if isinstance(rows, dict):
        _run.facts["rows"] = sum(n for n in rows.values() if type(n) is int)
    if type(metadata.get("total_documents")) is int:
        _run.facts["documents"] = metadata["total_documents"]


def note_findings(counts: dict[str, int]) -> None:
    if _run is not None:
        _run.findings = dict(counts)


def count_bytes(meter) -> None:
    """`meter` (a Progress) counts what the run reads: its count is bytes_read unless noted."""
    if _run is not None:
        _run.meter = meter


def note_error(line: str) -> None:
    """The one line the run failed with (as printed: redacted)."""
    if _run is not None and _run.error is None:
        _run.error = message(line)


def finish(status: int) -> None:
    """Write the report of the run that ended with `status`; AviaryError if FILE cannot be."""
    global _run
    run, _run = _run, None
    if run is None:
        return
    ended = time.time_ns()
    last = to_rfc3339(ended) if status == 0 else _last_success(run.path, run.command)
    report = run.as_dict(status, ended, last)
    text = prometheus(report) if run.path.endswith(".prom") else json.dumps(report, indent=2) + "\n"
    _replace(run.path, text.encode())


def _last_success(path: str, command: str) -> str | None:
    """The last success's time that the report at `path` (about to be replaced) holds."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return None
    if path.endswith(".prom"):
        match = re.search(rf'^{PROM_PREFIX}last_success_timestamp_seconds\{{command="{re.escape(command)}"\}} '
                          r"(\d+(?:\.\d+)?)$", text, re.M)
        return to_rfc3339(int(float(match.group(1)) * NS_PER_SECOND)) if match else None
    try:
        before = json.loads(text)
        if before.get("command") != command or not isinstance(before.get("last_success"), str):
            return None
        parse_timestamp(before["last_success"])
        return before["last_success"]
    except (ValueError, AttributeError):
        return None


def _replace(path: str, data: bytes) -> None:
    """FILE written aside, then renamed into place (mode 0644: a collector reads it as
    another user, and it holds nothing secret)."""
    partial = f"{path}.partial-{os.urandom(4).hex()}"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise AviaryError(f"--report {path}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, 0o644)
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as e:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise AviaryError(f"--report {path}: {e.strerror or e}") from None


# name, help, and the report's value for it (None: the sample is left out)
_GAUGES = [
    ("last_run_timestamp_seconds", "When the command last ended (Unix time).", lambda r: _seconds(r["end"])),
    ("last_success_timestamp_seconds", "When the command last ended with exit status 0 (Unix time).",
     lambda r: _seconds(r["last_success"]) if r["last_success"] else None),
    ("success", "1 if the last run ended with exit status 0, else 0.", lambda r: int(r["ok"])),
    ("exit_status", "The last run's exit status.", lambda r: r["exit_status"]),
    ("duration_seconds", "How long the last run took.", lambda r: r["duration_seconds"]),
    ("documents", "Documents the last run packed, checked or restored.", lambda r: r["documents"]),
    ("rows", "Database rows the last run packed, checked or restored.", lambda r: r["rows"]),
    ("archive_level", "The level of the last run's archive (0 a full archive, n an incremental).",
     lambda r: (r["archive"] or {}).get("level")),
]


def prometheus(report: dict) -> str:
    """The report in Prometheus' text exposition format: gauges labelled with the command."""
    command = f'command="{_label(report["command"])}"'
    lines = []

    def family(name: str, help_text: str, samples: list[tuple[str, object]]) -> None:
        samples = [(labels, value) for labels, value in samples if value is not None]
        if samples:
            lines.append(f"# HELP {PROM_PREFIX}{name} {help_text}")
            lines.append(f"# TYPE {PROM_PREFIX}{name} gauge")
            lines.extend(f"{PROM_PREFIX}{name}{{{labels}}} {_number(value)}" for labels, value in samples)

    for name, help_text, value in _GAUGES:
        family(name, help_text, [(command, value(report))])
    family("bytes", "Bytes the last run read and wrote.",
           [(f'{command},direction="read"', report["bytes_read"]),
            (f'{command},direction="written"', report["bytes_written"])])
    family("findings", "Findings of the last run (verify, doctor) by severity.",
           [(f'{command},severity="{_label(severity)}"', n) for severity, n in (report["findings"] or {}).items()])
    archive = report["archive"] or {}
    if archive.get("id"):
        labels = ",".join(f'{key}="{_label(str(archive.get(key) or ""))}"' for key in ("id", "parent", "base"))
        family("archive_info", "The last run's archive: its id, its parent's and its chain's level 0.",
               [(f"{command},{labels}", 1)])
    return "\n".join(lines) + "\n"


def _seconds(rfc3339: str) -> float:
    return parse_timestamp(rfc3339) / NS_PER_SECOND


def _number(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
