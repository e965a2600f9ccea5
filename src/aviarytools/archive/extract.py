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
from ..tar import format_line
from . import layout
from .inspect import usernames
from .walk import Consumer, Item, Walk, raise_problems


@dataclass
class ExtractSummary:
    files: int = 0
    bytes: int = 0


class Extraction(Consumer):
    """`by_username`: documents go to by-username/<username>/<path> (layout.username_folders),
    with a by-username/checksums.xxh128 of their own; `warn` says which names had to change."""

    def __init__(self, destination: str, by_username: bool = False, warn=None):
        self.root = Path(destination).absolute()
        self.by_username, self.warn = by_username, warn or (lambda message: None)
        self.usernames: dict[str, str] = {}
        self.user_folders: dict[str, str] | None = None  # made at the first document
        self.renamed = SpillList()  # (path under by-username/, XXH128) of each document written there
        self._renaming: str | None = None  # the path under by-username/ of the member being written
        # Paths as strings: pathlib costs more than the syscalls, file after file.
        # One entry per file: these move to a temporary file when there are many.
        self.pending = SpillList()  # (temporary, final name)
        self.files = HashSet()
        self.folders: dict[str, str] = {}  # a member's folder name -> its checked path
        self.checked: set[str] = set()  # folders checked (real, ours to write in) or made
        self.made: list[str] = []  # folders made here, parents first: a failure removes them
        self.summary = ExtractSummary()
        self._open: int | None = None  # the file a member being read by the walk is written to

    def run(self, stream: BinaryIO, source: str, progress=None) -> ExtractSummary:
        missing = [str(p) for p in (self.root, *self.root.parents) if not p.exists()]
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.made = missing[::-1]
        self.real_root = self.root.resolve()
        try:
            raise_problems(Walk(stream, source, self, progress))
            if self.by_username:
                self._by_username_checksums()
            for temp, final in self.pending:
                os.replace(temp, final)
        except BaseException:
            self._close()
            for temp, _ in self.pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            for folder in reversed(self.made):
                with contextlib.suppress(OSError):  # not empty: something else is in it
                    os.rmdir(folder)
            raise
        return self.summary

    # -- what each kind of member becomes: a file (or a folder) of its name ----------

    def on_metadata(self, item: Item, metadata: dict) -> None:
        self._write(item, [item.data])

    def on_document(self, item: Item) -> None:
        name = None
        if self.by_username and item.entry.kind == "document":
            name = f"{layout.BY_USERNAME}{self._folder_of(item.entry.user_id)}/{item.entry.path}"
            self._renaming = name[len(layout.BY_USERNAME):]
        self._write(item, item.content.views(), name)  # straight from the reader's buffer

    on_config = on_single_document = on_pairing = on_carried_document = on_ignored = on_unknown = on_document

    def on_table(self, item: Item, rows) -> None:
        self._tap(item)  # the walk reads the rows, checking them; the bytes come here
        if self.by_username and item.entry.table == "users":
            self.usernames.update(usernames(rows))

    def _folder_of(self, user_id: str) -> str:
        if self.user_folders is None:
            self.user_folders, notes = layout.username_folders(self.usernames)
            for note in notes:
                self.warn(note)
        return self.user_folders.get(user_id, user_id)  # a user the archive does not name: the id

    def on_vanished(self, item: Item) -> None:
        self._tap(item)  # read by the walk too

    def on_manifest(self, item: Item, entries) -> None:
        self._tap(item)

    on_checksums = on_vanished

    def on_dir(self, item: Item) -> None:
        if self.by_username and (item.name + "/").startswith(layout.DOCUMENTS_PREFIX.rstrip("/")):
            return  # filesystem/documents/<uuid>: the documents go elsewhere
        self._folder(item.name)

    def done(self, item: Item) -> None:
        self._close()
        if self._renaming is not None:
            self.renamed.append((self._renaming, item.content.hasher.hexdigest()))
            self._renaming = None

    # -- files ----------------------------------------------------------------------

    def _tap(self, item: Item) -> None:
        fd = self._create(item)
        item.content.tap = lambda chunk: self._count(write_all(fd, [chunk]))
        self._open = fd

    def _write(self, item: Item, chunks, name: str | None = None) -> None:
        fd = self._create(item, name)
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

    def _create(self, item: Item, name: str | None = None) -> int:
        """A new file (0600) under a temporary name beside the member's own (or `name`)."""
        return self._create_named(name or item.name, item.name)

    def _create_named(self, name: str, member: str | None = None) -> int:
        parent, _, base = name.rstrip("/").rpartition("/")
        folder = self._folder(parent)
        final = folder if base == "." else os.path.join(folder, base)
        member = member or name
        if final in self.files:  # two members would be one file (by-username/...)
            raise ArchiveError(f"{member}: {final} is written by another member already")
        try:
            mode = os.lstat(final).st_mode
        except (FileNotFoundError, NotADirectoryError):
            pass
        else:
            if not stat.S_ISREG(mode):  # a link, a folder, ...
                raise ArchiveError(f"{member}: {final} exists and is not a regular file")
        self.files.add(final)
        temp = os.path.join(folder, f".aviary-tmp-{os.urandom(6).hex()}")  # as secrets.token_hex
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self.pending.append((temp, final))
        os.fchmod(fd, 0o600)  # whatever the umask
        self.summary.files += 1
        return fd

    def _by_username_checksums(self) -> None:
        """by-username/checksums.xxh128: the documents under their new names, so that
        `xxhsum -c checksums.xxh128` there checks them as the archive's own list does."""
        fd = self._create_named(f"{layout.BY_USERNAME}{layout.CHECKSUMS}")
        try:
            write_all(fd, (format_line(digest, path).encode() for path, digest in self.renamed))
        finally:
            os.close(fd)

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
                self.made.append(part)
                os.chmod(part, 0o700)
            elif not stat.S_ISDIR(mode):
                raise ArchiveError(f"{name}: {part} exists and is not a folder")
            self.checked.add(part)
        if not Path(folder).resolve().is_relative_to(self.real_root):
            raise ArchiveError(f"{name}: would be written outside {self.root}")
        self.folders[name] = folder
        return folder


def extract(stream: BinaryIO, source: str, destination: str, by_username: bool = False,
            warn=None, progress=None) -> ExtractSummary:
    try:
        return Extraction(destination, by_username, warn).run(stream, source, progress)
    except OSError as e:
        raise StorageError(f"{e.filename or destination}: {e.strerror or e}") from None
