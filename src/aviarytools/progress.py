"""Progress on stderr while someone watches: bytes, files, rate.

Shown only when stderr is a terminal (or --progress says so), redrawn at
most a few times a second, and erased at the end.
"""

import sys
import time


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


class Progress:
    def __init__(self, label: str, enabled: bool | None = None, total: int | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label, self.total = label, total
        self.bytes = self.files = 0
        self.start = self.last = time.monotonic()

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        self.bytes += nbytes
        self.files += files
        now = time.monotonic()
        if self.enabled and now - self.last >= 0.25:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.bytes / max(now - self.start, 1e-6)
        of = f" of {_size(self.total)}" if self.total else ""
        files = f", {self.files} files" if self.files else ""
        sys.stderr.write(f"\r{self.label}: {_size(self.bytes)}{of}{files}, {_size(rate)}/s\x1b[K")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()


class CountingWriter:
    """A binary stream that reports what passes through it to a Progress."""

    def __init__(self, out, progress: Progress):
        self.out, self.progress = out, progress

    def write(self, data) -> int:
        n = self.out.write(data)
        self.progress.add(len(data))
        return n

    def flush(self) -> None:
        self.out.flush()


class CountingReader:
    def __init__(self, source, progress: Progress):
        self.source, self.progress = source, progress

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.progress.add(len(data))
        return data

    def readinto(self, buffer) -> int:
        n = self.source.readinto(buffer)
        self.progress.add(n or 0)
        return n

    def readable(self) -> bool:
        return True
