"""What doctor reports: findings, each a problem or information."""

from dataclasses import dataclass

PROBLEM = "problem"
INFO = "info"

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


def problem(check: str, detail: str, subject: str | None = None) -> Finding:
    return Finding(check, detail, subject, PROBLEM)


def info(check: str, detail: str, subject: str | None = None) -> Finding:
    return Finding(check, detail, subject, INFO)


class Capped:
    """Lists the first LIMIT findings of one check and subject, counts the rest."""

    def __init__(self, check: str, subject: str | None = None, limit: int = LIMIT):
        self.check, self.subject, self.limit = check, subject, limit
        self.count = 0

    def offer(self, detail: str, subject: str | None = None) -> Finding | None:
        """The finding to report, or None once LIMIT are listed."""
        self.count += 1
        if self.count > self.limit:
            return None
        return problem(self.check, detail, subject or self.subject)

    def rest(self) -> Finding | None:
        """One finding for those not listed, if any."""
        if self.count <= self.limit:
            return None
        return problem(self.check, f"... and {self.count - self.limit} more (only the first "
                       f"{self.limit} are listed)", self.subject)


def short(value, width: int = 60) -> str:
    """A JSON value for a one-line message."""
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."
