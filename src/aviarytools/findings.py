"""What the checking commands report: findings, each a problem, a warning or information.

One shape for `verify` and `doctor` alike, in JSON (`as_dict`) and as a human
line (`line`): a finding's subject is a member name or a storage key, which
may hold a newline or an escape sequence, so the line goes through
errors.message like every message we print.

- problem: data lost or a reference broken; the command exits 1.
- warning: odd but working (a zero-byte document); exit 1 only with
  `--fail-on warning`.
- info: what the reader may like to know (counts, expiries).
"""

from dataclasses import dataclass

from .errors import message

PROBLEM = "problem"
WARNING = "warning"
INFO = "info"
RANK = {INFO: 0, WARNING: 1, PROBLEM: 2}

# Findings listed per check and table (or folder); the rest are counted.
LIMIT = 100


@dataclass(frozen=True)
class Finding:
    check: str
    detail: str
    subject: str | None = None  # a table, a storage key or folder, an archive member
    severity: str = PROBLEM

    def as_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "subject": self.subject,
                "detail": self.detail}

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}" if self.subject else f"{self.check}: {self.detail}"

    def line(self) -> str:
        """The finding as one printable line, secrets redacted."""
        return message(f"{self.severity}: {self}")


def failing(counts: dict[str, int], threshold: str) -> int:
    """Of the findings counted per severity, how many make a command with `--fail-on
    threshold` exit 1: those of that severity or worse."""
    return sum(n for severity, n in counts.items() if RANK[severity] >= RANK[threshold])


def problem(check: str, detail: str, subject: str | None = None) -> Finding:
    return Finding(check, detail, subject, PROBLEM)


def warning(check: str, detail: str, subject: str | None = None) -> Finding:
    return Finding(check, detail, subject, WARNING)


def info(check: str, detail: str, subject: str | None = None) -> Finding:
    return Finding(check, detail, subject, INFO)


class Capped:
    """Lists the first LIMIT findings of one check and subject, counts the rest."""

    def __init__(self, check: str, subject: str | None = None, limit: int = LIMIT, severity: str = PROBLEM):
        self.check, self.subject, self.limit, self.severity = check, subject, limit, severity
        self.count = 0

    def offer(self, detail: str, subject: str | None = None) -> Finding | None:
        """The finding to report, or None once LIMIT are listed."""
        self.count += 1
        if self.count > self.limit:
            return None
        return Finding(self.check, detail, subject or self.subject, self.severity)

    def rest(self) -> Finding | None:
        """One finding for those not listed, if any."""
        if self.count <= self.limit:
            return None
        return Finding(self.check, f"... and {self.count - self.limit} more (only the first "
                       f"{self.limit} are listed)", self.subject, self.severity)


def short(value, width: int = 60) -> str:
    """A JSON value for a one-line message."""
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."
