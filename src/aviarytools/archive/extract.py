"""unpack -C DIR: extract an archive into a folder, safely.

Absolute names, `..`, links, devices, fifos and duplicate names are refused
before anything of theirs is written.  Every file is written under a
temporary name and moved to its own name only when the whole archive has
been read and its checksums hold, so no partial or corrupt file ever passes
for complete.  Folders are created 0700 and files 0600.
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
from ..tar import NameSet, member_name_problem
from . import layout
from .reading import check_checksums, HashedContent, members, parse_checksum_chunks


@dataclass
class ExtractSummary:
    files: int = 0
    bytes: int = 0


class Extraction:
    def __init__(self, destination: str):
        self.root = Path(destination).absolute()
        # Paths as strings: pathlib costs more than the syscalls, file after file.
        # One entry per file: these move to a temporary file when there are many.
        self.pending = SpillList()  # (temporary, final name)
        self.files = HashSet()
        self.folders: dict[str, str] = {}  # a member's folder name -> its checked path
        self.checked: set[str] = set()  # folders checked (real, ours to write in) or made
        self.digests = SpillList()  # (member name, digest)
        self.checksums: SpillList | None = None
        self.summary = ExtractSummary()

    def run(self, stream: BinaryIO, source: str) -> ExtractSummary:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.real_root = self.root.resolve()
        try:
            names = NameSet()
            for member in members(stream, source):
                problem = member_name_problem(member)
                if problem:
                    raise ArchiveError(f"{member.name}: {problem}")
                if not names.add(member.name):
                    raise ArchiveError(f"{member.name}: appears more than once in the archive")
                self._member(member)
            check_checksums(self.checksums, self.digests)
            for temp, final in self.pending:
                os.replace(temp, final)
        except BaseException:
            for temp, _ in self.pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            raise
        return self.summary

    def _folder(self, name: str) -> str:
        """The folder `name` under the root, made where missing, checked once.

        A folder checked stays good: members only add files under temporary
        names, and a file member under a folder's name is refused in _write.
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

    def _member(self, member) -> None:
        if member.type == "dir":
            self._folder(member.name)
            return
        parent, _, base = member.name.rstrip("/").rpartition("/")
        folder = self._folder(parent)
        content = HashedContent(member)
        temp = self._write(folder, base, member.name, content.views())
        if member.name == layout.CHECKSUMS:
            # Read back from the extracted file, to check the others; extracted,
            # so that `xxhsum -c checksums.xxh128` works afterwards.
            with open(temp, "rb") as written:
                self.checksums = parse_checksum_chunks(iter(lambda: written.read(1 << 16), b""), member.name)
            return
        self.digests.append((member.name, content.hasher.hexdigest()))

    def _write(self, folder: str, base: str, name: str, chunks) -> str:
        """Write the member under a temporary name beside its own; that name."""
        final = folder if base == "." else os.path.join(folder, base)
        try:
            mode = os.lstat(final).st_mode
        except (FileNotFoundError, NotADirectoryError):
            pass
        else:
            if not stat.S_ISREG(mode):  # a link, a folder, ...
                raise ArchiveError(f"{name}: {final} exists and is not a regular file")
        self.files.add(final)
        temp = os.path.join(folder, f".aviary-tmp-{os.urandom(6).hex()}")  # as secrets.token_hex
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.pending.append((temp, final))
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            self.summary.bytes += write_all(fd, chunks)  # straight from the reader's buffer
        finally:
            os.close(fd)
        self.summary.files += 1
        return temp


def extract(stream: BinaryIO, source: str, destination: str) -> ExtractSummary:
    try:
        return Extraction(destination).run(stream, source)
    except OSError as e:
        raise StorageError(f"{e.filename or destination}: {e.strerror or e}") from None
