"""unpack -C DIR: extract an archive into a folder, safely.

A consumer of the archive walk (walk.py), so an archive that verify rejects
is refused here too, before any file gets its name.  Absolute names, `..`,
links, devices, fifos and duplicate names are refused before anything of
theirs is written.  Every file is written under a temporary name and moved
to its own name only when the whole archive has been read and every check
holds, so no partial or corrupt file ever passes for complete.  Folders are
created 0700 and files 0600: an extraction is a private copy, not a live
installation.
"""

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ArchiveError, StorageError
from ..storage.filesystem import write_all
from ..spill import HashSet, SpillList
from .walk import Consumer, Item, Walk, raise_problems


@dataclass
class ExtractSummary:
    files: int = 0
    bytes: int = 0


class Extraction(Consumer):
    def __init__(self, destination: str):
        self.root = Path(destination).absolute()
        # Paths as strings: pathlib costs more than the syscalls, file after file.
        # One entry per file: these move to a temporary file when there are many.
        self.pending = SpillList()  # (temporary, final name)
        self.files = HashSet()
        self.folders: dict[str, str] = {}  # a member's folder name -> its checked path
        self.checked: set[str] = set()  # folders checked (real, ours to write in) or made
        self.summary = ExtractSummary()
        self._open: int | None = None  # the file a member being read by the walk is written to

    def run(self, stream: BinaryIO, source: str) -> ExtractSummary:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.real_root = self.root.resolve()
        try:
            raise_problems(Walk(stream, source, self))
            for temp, final in self.pending:
                os.replace(temp, final)
        except BaseException:
            self._close()
            for temp, _ in self.pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            raise
        return self.summary

    # -- what each kind of member becomes: a file (or a folder) of its name ----------

    def on_metadata(self, item: Item, metadata: dict) -> None:
        self._write(item, [item.data])

    def on_document(self, item: Item) -> None:
        self._write(item, item.content.views())  # straight from the reader's buffer

    on_config = on_ignored = on_unknown = on_document

    def on_table(self, item: Item, rows) -> None:
        self._tap(item)  # the walk reads the rows, checking them; the bytes come here

    def on_vanished(self, item: Item) -> None:
        self._tap(item)  # read by the walk too

    on_checksums = on_vanished

    def on_dir(self, item: Item) -> None:
        self._folder(item.name)

    def done(self, item: Item) -> None:
        self._close()

    # -- files ----------------------------------------------------------------------

    def _tap(self, item: Item) -> None:
        fd = self._create(item)
        item.content.tap = lambda chunk: self._count(write_all(fd, [chunk]))
        self._open = fd

    def _write(self, item: Item, chunks) -> None:
        fd = self._create(item)
        try:
            self._count(write_all(fd, chunks))
        finally:
            os.close(fd)

    def _count(self, written: int) -> None:
        self.summary.bytes += written

    def _close(self) -> None:
        fd, self._open = self._open, None
        if fd is not None:
            os.close(fd)

    def _create(self, item: Item) -> int:
        """A new file (0600) under a temporary name beside the member's own."""
        parent, _, base = item.name.rstrip("/").rpartition("/")
        folder = self._folder(parent)
        final = folder if base == "." else os.path.join(folder, base)
        try:
            mode = os.lstat(final).st_mode
        except (FileNotFoundError, NotADirectoryError):
            pass
        else:
            if not stat.S_ISREG(mode):  # a link, a folder, ...
                raise ArchiveError(f"{item.name}: {final} exists and is not a regular file")
        self.files.add(final)
        temp = os.path.join(folder, f".aviary-tmp-{os.urandom(6).hex()}")  # as secrets.token_hex
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.pending.append((temp, final))
        os.fchmod(fd, 0o600)  # whatever the umask
        self.summary.files += 1
        return fd

    def _folder(self, name: str) -> str:
        """The folder `name` under the root, made where missing, checked once.

        A folder checked stays good: members only add files under temporary
        names, and a file member under a folder's name is refused in _create.
        """
        known = self.folders.get(name)
        if known is not None:
            return known
        parts = [p for p in name.split("/") if p not in ("", ".")]
        folder = str(self.root)
        for i, part_name in enumerate(parts):
            part = os.path.join(folder, part_name)
            folder = part
            if part in self.checked:
                continue
            try:
                mode = os.lstat(part).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and stat.S_ISLNK(mode):
                raise ArchiveError(f"{name}: {part} is a symbolic link in the target folder")
            if part in self.files:
                shown = "/".join(parts[: i + 1])
                raise ArchiveError(f"{shown}: both a file and a folder in the archive")
            if mode is None:
                os.mkdir(part, 0o700)
                os.chmod(part, 0o700)
            elif not stat.S_ISDIR(mode):
                raise ArchiveError(f"{name}: {part} exists and is not a folder")
            self.checked.add(part)
        if not Path(folder).resolve().is_relative_to(self.real_root):
            raise ArchiveError(f"{name}: would be written outside {self.root}")
        self.folders[name] = folder
        return folder


def extract(stream: BinaryIO, source: str, destination: str) -> ExtractSummary:
    try:
        return Extraction(destination).run(stream, source)
    except OSError as e:
        raise StorageError(f"{e.filename or destination}: {e.strerror or e}") from None
