"""unpack -C DIR: extract an archive into a folder, safely.

Absolute names, `..`, links, devices, fifos and duplicate names are refused
before anything of theirs is written.  Every file is written under a
temporary name and moved to its own name only when the whole archive has
been read and its checksums hold, so no partial or corrupt file ever passes
for complete.  Folders are created 0700 and files 0600.
"""

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ArchiveError, StorageError
from ..tar import NameSet, member_name_problem, parse_checksums
from . import layout
from .reading import check_checksums, HashedContent, members


@dataclass
class ExtractSummary:
    files: int = 0
    bytes: int = 0


class Extraction:
    def __init__(self, destination: str):
        self.root = Path(destination).absolute()
        self.pending: list[tuple[Path, Path]] = []
        self.files: set[Path] = set()
        self.digests: dict[str, str] = {}
        self.checksums: dict[str, str] | None = None
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
                temp.unlink(missing_ok=True)
            raise
        return self.summary

    def _folder(self, name: str) -> Path:
        folder = self.root.joinpath(*[p for p in name.split("/") if p])
        for part in [*reversed(folder.parents), folder]:
            if part == self.root or self.root not in part.parents:
                continue
            if part.is_symlink():
                raise ArchiveError(f"{name}: {part} is a symbolic link in the target folder")
            if part in self.files:
                shown = part.relative_to(self.root).as_posix()
                raise ArchiveError(f"{shown}: both a file and a folder in the archive")
            if not part.exists():
                part.mkdir(mode=0o700)
                os.chmod(part, 0o700)
            elif not part.is_dir():
                raise ArchiveError(f"{name}: {part} exists and is not a folder")
        if not folder.resolve().is_relative_to(self.real_root):
            raise ArchiveError(f"{name}: would be written outside {self.root}")
        return folder

    def _member(self, member) -> None:
        if member.type == "dir":
            self._folder(member.name)
            return
        parent, _, base = member.name.rstrip("/").rpartition("/")
        folder = self._folder(parent)
        content = HashedContent(member)
        if member.name == layout.CHECKSUMS:
            # Kept whole (a line per file) to check the others; extracted too,
            # so that `xxhsum -c checksums.xxh128` works afterwards.
            data = b"".join(content.chunks())
            self.checksums = {n: d for d, n in parse_checksums([data], source=member.name)}
            self._write(folder, base, member.name, [data])
            return
        self._write(folder, base, member.name, content.chunks())
        self.digests[member.name] = content.hasher.hexdigest()

    def _write(self, folder: Path, base: str, name: str, chunks) -> None:
        final = folder / base
        if final.is_symlink() or (final.exists() and not final.is_file()):
            raise ArchiveError(f"{name}: {final} exists and is not a regular file")
        self.files.add(final)
        temp = folder / f".aviary-tmp-{secrets.token_hex(6)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.pending.append((temp, final))
        with open(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                self.summary.bytes += len(chunk)
        os.chmod(temp, 0o600)
        self.summary.files += 1



def extract(stream: BinaryIO, source: str, destination: str) -> ExtractSummary:
    try:
        return Extraction(destination).run(stream, source)
    except OSError as e:
        raise StorageError(f"{e.filename or destination}: {e.strerror or e}") from None
