"""Progress on stderr while someone watches: the phase, percent, bytes of the total, rate, time left.

Shown only when stderr is a terminal (or --progress says so), redrawn in place
at most four times a second (and once at the start, so that even a short run
shows what it does), and ended with a newline.  The total comes from what the
command knows: pack's listing and measured tables, the size of an archive file,
or metadata.json's total_size_bytes for an archive read from a pipe (then what
is done is the documents' bytes, as the walk reads them).  Without a total, the
line shows what there is: bytes, files, rate.  Time left only once there is a rate
to base it on (RATE_AFTER).  Between the reading and the end a command says what it
does (`phase`: "listing", "applying users (120,000 rows)", "committing", "moving
documents"), drawn at once: a long statement may hold the line for minutes.  A command
that measures nothing (doctor without --deep) shows its phase, and ends with "<phase>, done".
"""

import sys
import time

REDRAW_SECONDS = 0.25
RATE_AFTER = 1.0  # seconds of work before a rate (and the time left) is shown


def human_size(n: float) -> str:
    """Bytes as a person reads them: `512 B`, `414.3 MiB` (binary units, as du -h and ls -h)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    def __init__(self, label: str, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label = label
        self.bytes = self.files = 0  # what has passed through (read, written)
        self.total: int | None = None
        self.by_documents = False  # done counts documents' bytes, not the bytes passing
        self.documents = 0
        self.start = time.monotonic()
        self.last: float | None = None
        self.doing: str | None = None  # the phase, if the command said
        self.figures = True  # whether the phase moves bytes (the figures follow its name)

    def phase(self, doing: str | None, figures: bool = False) -> None:
        """What the command does now; `figures`: it moves bytes, whose figures follow."""
        self.doing, self.figures = doing, figures
        if self.enabled:
            self.last = time.monotonic()
            self._draw(self.last)

    def expect(self, total: int | None, by_documents: bool = False) -> None:
        """What 100 % is: `total` bytes passing, or (by_documents) of documents."""
        if total is not None and total > 0:
            self.total, self.by_documents = total, by_documents
            if not self.completed:  # the work measured starts now (after pack's listing)
                self.start = time.monotonic()

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        self.bytes += nbytes
        self.files += files
        self._tick()

    def document(self, nbytes: int) -> None:
        """A document's bytes are done (the measure of an archive read from a pipe)."""
        self.documents += nbytes
        self.files += 1
        self._tick()

    @property
    def completed(self) -> int:
        return self.documents if self.by_documents else self.bytes

    def _tick(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.last is None or now - self.last >= REDRAW_SECONDS:
            self.last = now
            self._draw(now)

    def line(self, now: float | None = None, final: bool = False) -> str:
        """What the progress line says."""
        now = time.monotonic() if now is None else now
        if final and self.doing and not (self.total or self.bytes or self.files):
            return f"{self.label}: {self.doing}, done"  # nothing was measured: no "0 B"
        head = f"{self.label}: " + (f"{self.doing}" if self.doing and not final else "")
        if self.doing and not self.figures and not final:
            return head
        if self.doing and not final:
            head += " "
        elapsed = now - self.start
        files = f", {self.files} files" if self.files else ""
        if self.total is None:  # (from a pipe, no total known): what is done, and its rate
            rate = f", {human_size(self.bytes / elapsed)}/s" if elapsed >= RATE_AFTER and self.bytes else ""
            return f"{head}{human_size(self.bytes)}{files}{rate}"
        done = self.total if final else min(self.completed, self.total)
        # The rate of what the percentage counts (documents' bytes, for an archive from a pipe).
        timed = elapsed >= RATE_AFTER and done > 0
        rate = f", {human_size(done / elapsed)}/s" if timed else ""
        eta = "done" if final else (f"{_duration((self.total - done) * elapsed / done)} left" if timed
                                    else "starting")
        return f"{head}{100 * done // self.total:3d}% {human_size(done)} of {human_size(self.total)}{files}{rate}, {eta}"

    def _draw(self, now: float, final: bool = False) -> None:
        global _line_open
        sys.stderr.write(f"\r{self.line(now, final)}\x1b[K")
        sys.stderr.flush()
        _line_open = True

    def done(self) -> None:
        """The last line, left on the screen."""
        if self.enabled:
            self._draw(time.monotonic(), final=True)
            end_line()


_line_open = False  # a progress line is drawn and not ended


def end_line() -> None:
    """End the progress line being drawn, if one is: what is printed next (an error, an
    interrupt) starts on a line of its own."""
    global _line_open
    if _line_open:
        _line_open = False
        sys.stderr.write("\n")
        sys.stderr.flush()


def counted(out, progress: Progress):
    """`out`, through a CountingWriter where `progress` is shown: else nothing reads the
    count, and pack would pay for it at every write (three an archive member)."""
    return CountingWriter(out, progress) if progress.enabled else out


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
    """A binary stream read through, reporting to a Progress; an archive file's size is the total."""

    def __init__(self, source, progress: Progress):
        self.source, self.progress = source, progress
        size = _file_size(source)
        if size:
            progress.expect(size)

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


def _file_size(stream) -> int | None:
    import os
    import stat

    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None
