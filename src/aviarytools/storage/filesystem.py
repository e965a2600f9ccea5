"""Documents as files under a root folder (Aviary's STORAGE_BACKEND=filesystem).

What this writes is a live installation's: folders 0755 and files 0644 (less
the umask) as Aviary makes them, and, run as root, owned by the root
folder's owner (ownership.py); a file that replaces another keeps that
file's owner and mode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import xxhash

from .. import ownership
from ..errors import ConfigError, StorageError, UnreadableObject
from .base import CHUNK_SIZE, SWEPT, Capabilities, Irregular, ObjectInfo, Staged, Storage, hashing

TEMP_PREFIX = ".aviary-tmp-"
# A swept staging folder is renamed aside to SWEPT + 12 hex digits, at the root, then removed;
# SWEPT begins with TEMP_PREFIX: no listing shows it until the next restore removes what is left.
SET_ASIDE = SWEPT
# read_ahead reads into two buffers of this size, reused from file to file; from
# AHEAD_SIZE on, a document's first buffer-full is read ahead.
READ_SIZE = 1 << 20
AHEAD_SIZE = 256 << 10


_NOT_NAMES = frozenset(("", ".", ".."))  # as a key's parts: an empty one is a "//" or an end "/"


def valid_key(key: str) -> bool:
    return bool(key) and "\0" not in key and _NOT_NAMES.isdisjoint(key.split("/"))


def write_all(fd: int, chunks: Iterable[bytes], failed: Callable[[OSError], Exception] | None = None) -> int:
    """Write every chunk to `fd`, straight from the caller's buffer (no copy);
    the number of bytes written.  A chunk may be a view its producer reuses:
    each is written before the next is asked for.  `failed` turns a write's
    OSError into the exception to raise; the chunks' own errors pass as they are."""
    written = 0
    for chunk in chunks:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as err:
            if failed is None:
                raise
            raise failed(err) from err
        written += len(chunk)
    return written


def start_writeback(fd: int) -> None:
    """Have the kernel start writing the file's dirty pages now, without waiting:
    the disk works while the next document is read, and the sync at the end has
    little left to do.  (POSIX_FADV_DONTNEED starts writeback of dirty pages.)"""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def syncfs(fd: int) -> None:
    """syncfs(2) the filesystem holding `fd`; sync(2) where there is none."""
    import ctypes  # here: only a restore's last step needs it

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "syncfs"):
        os.sync()
    elif libc.syncfs(fd) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))


def from_url(url: str, environ, options) -> "FilesystemStorage":
    """A plain path, or file:///path."""
    path = url
    if "://" in url:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{url}: a file URL names a local folder: file:///path")
        path = unquote(parts.path)
    if not path:
        raise ConfigError(f"{url!r}: no folder given")
    return FilesystemStorage(path)


def from_environment(environ, options) -> "FilesystemStorage":
    """Aviary's STORAGE_BACKEND=filesystem: keys are paths under $DATA_DIR."""
    return FilesystemStorage(environ.get("DATA_DIR") or "/data")


class FilesystemStorage(Storage):
    # Four readers of a folder beat cat(1) with a cold cache (the disk gets several requests
    # at once) and match it with a warm one (doctor --deep, 1 GB of documents).
    capabilities = Capabilities(renames=True, moves_folders=True, reads_into=True, connections=4,
                                shares_data_dir=True, sweeps=True)

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.url = str(self.root)
        self._root = self.url  # for paths built as strings: pathlib costs more than the syscall
        self._owner: ownership.Owner | None = None  # what new files and folders get, as root
        self._owner_known = False
        self._passed_over: list[Irregular] = []  # links and devices the listings met (rare)

    def exists(self) -> bool:
        return self.root.is_dir()

    def remove_root_if_empty(self) -> None:
        with contextlib.suppress(OSError):  # not empty, or not there
            os.rmdir(self._root)

    def _new_owner(self) -> ownership.Owner | None:
        if not self._owner_known:
            self._owner = ownership.inherited_owner(self._root)
            self._owner_known = os.path.isdir(self._root)  # a root made later has its own owner
        return self._owner

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise self.error(None, "no such directory")
        # Start at the deepest folder the prefix names in full.
        base = prefix.rpartition("/")[0]
        if base and not valid_key(base):
            return
        folder_key = base + "/" if base else ""
        yield from self._walk(self.root / base, folder_key, prefix)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise self.error(key, err.strerror) from err
        if not stat_module.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime, mtime_ns=st.st_mtime_ns)

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        fd = self._open_to_read(key)
        with open(fd, "rb") as file:
            while True:
                with self._translated(key):
                    chunk = file.read(chunk_size)
                if not chunk:
                    return
                yield chunk

    def read_into(self, key: str, buffer: bytearray) -> Iterator[memoryview]:
        """The object's bytes read into `buffer`, a view of it at a time.

        Each view is valid only until the next one is asked for: for a consumer
        that uses every chunk at once (pack hashes and writes it), this reads
        without allocating memory per chunk.
        """
        fd = self._open_to_read(key)
        view = memoryview(buffer)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)  # read ahead further
            while True:
                try:
                    n = os.readv(fd, (buffer,))
                except OSError as err:
                    raise self.error(key, err.strerror or str(err)) from err
                if not n:
                    return
                yield view[:n]
        finally:
            os.close(fd)

    def _open_to_read(self, key: str) -> int:
        """A document opened to read; UnreadableObject where it cannot be (no permission, or
        a link put in its place since the listing)."""
        path = self._path(key)
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (PermissionError, IsADirectoryError) as err:
            raise self.error(key, err.strerror, kind=UnreadableObject) from err
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self.error(key, "a symbolic link now", kind=UnreadableObject) from err
            raise self._os_error(key, err) from err

    def passed_over(self) -> list[Irregular]:
        return sorted(self._passed_over, key=lambda entry: os.fsencode(entry.key))

    def read_ahead(self, objects):
        """Documents are read into two buffers that take turns, so no memory is
        allocated per chunk.  A large document's first buffer-full is read and
        hashed by one of the storage's transfer workers while the one before is
        used from the other buffer (os.readv and xxhash let go of the GIL, so this
        overlaps the caller's writing); its errors (a vanished file) come out in
        order, as the document's own.  Small documents are read in turn: handing
        them over would cost more than it saves."""
        buffers = (bytearray(READ_SIZE), bytearray(READ_SIZE))
        ahead = None  # (the future of the document at hand's first piece, its hasher), if read ahead
        for index, (info, following) in enumerate(_with_next(objects)):
            if ahead is not None:
                hasher = ahead[1]
                content = _after_first(*ahead)
            else:
                hasher = xxhash.xxh3_128()
                content = hashing(self.read_into(info.key, buffers[index % 2]), hasher)
            # The other buffer is free: the document before this one has been used up.
            ahead = None
            if following is not None and following.size >= AHEAD_SIZE:
                next_hasher = xxhash.xxh3_128()
                ahead = (self.transfers.submit(self._first_piece, following.key, buffers[(index + 1) % 2],
                                               next_hasher), next_hasher)
            yield info, content, hasher

    def _first_piece(self, key: str, buffer: bytearray, hasher):
        """(the rest of the document's pieces, its first piece), `hasher` given the first."""
        chunks = self.read_into(key, buffer)
        first = next(chunks, None)
        if first is not None:
            hasher.update(first)
        return chunks, first

    def write(self, key: str, chunks: Iterable[bytes], size: int | None = None,
              sync_follows: bool = False) -> None:
        path = self._path(key)
        made: list[str] = []
        try:
            with self._translated(key):
                fd, temp = self._create_temp(os.path.dirname(path), made)
        except BaseException:
            self._remove_made(made)
            raise
        try:
            try:
                written = write_all(fd, chunks, lambda err: self._os_error(key, err))
                self.check_size(key, size, written)
                with self._translated(key):
                    self._take_place_of(path, fd)
                    if sync_follows:
                        start_writeback(fd)
            finally:
                os.close(fd)
            with self._translated(key):
                os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            self._remove_made(made)
            raise

    def promote(self, staged: Staged, key: str) -> None:
        source, path = self._path(staged.key), self._path(key)
        with self._translated(key):
            self._take_place_of(path, source)
            try:
                os.replace(source, path)
            except FileNotFoundError:  # its folder is new (or the staged file is gone: raised again)
                self._make_dirs(os.path.dirname(path))
                os.replace(source, path)
            self._remove_empty_folders(os.path.dirname(source))

    def _take_place_of(self, path: str, new: str | int) -> None:
        """`new` (a path or an open file) is about to replace `path`: it keeps the
        owner and mode of the file there, if any (new files already have the root's)."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        if not stat_module.S_ISREG(st.st_mode):
            return
        if isinstance(new, int):
            os.fchmod(new, stat_module.S_IMODE(st.st_mode))
        else:
            os.chmod(new, stat_module.S_IMODE(st.st_mode), follow_symlinks=False)
        if os.geteuid() == 0:
            ownership.give(new, (st.st_uid, st.st_gid))

    def write_durably(self, key: str, chunks: Iterable[bytes]) -> None:
        """The file and its folder's entry for it fsynced: on disk when this returns."""
        path = self._path(key)
        with self._translated(key):
            fd, temp = self._create_temp(os.path.dirname(path), [])
            try:
                try:
                    write_all(fd, chunks)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            folder = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def delete_prefix(self, prefix: str) -> None:
        folder = self._path(prefix.rstrip("/"))
        if not os.path.isdir(folder):
            return
        with self._translated(prefix):
            remove_tree(folder, None)
            self._remove_empty_folders(os.path.dirname(folder))

    def sweep(self, prefix: str, seconds: float | None = None) -> str | None:
        """The folder renamed aside (one step: nothing of it is listed from then on), then
        removed file by file, for at most `seconds`."""
        folder = self._path(prefix.rstrip("/"))
        aside = SET_ASIDE + os.urandom(6).hex()  # as secrets.token_hex
        deadline = None if seconds is None else time.monotonic() + seconds
        with self._translated(prefix):
            try:
                os.rename(folder, self._path(aside))
            except FileNotFoundError:
                return None
            self._remove_empty_folders(os.path.dirname(folder))
        try:
            gone = remove_tree(self._path(aside), deadline)
        except (OSError, KeyboardInterrupt, SystemExit):  # a second signal, a failing disk: what is
            gone = False  # left is set aside all the same, said, and removed by the next restore
        return None if gone else aside + "/"

    def sweep_leftovers(self) -> list[str]:
        if not self.root.is_dir():
            return []
        with self._translated(None):
            names = sorted(entry.name for entry in os.scandir(self._root)
                           if entry.name.startswith(SET_ASIDE) and entry.is_dir(follow_symlinks=False))
            for name in names:
                remove_tree(self._path(name), None)
        return [name + "/" for name in names]

    def promote_folder(self, staged_prefix: str, prefix: str) -> bool:
        source, path = self._path(staged_prefix.rstrip("/")), self._path(prefix.rstrip("/"))
        if os.path.lexists(path):
            return False
        with self._translated(prefix):
            self._make_dirs(os.path.dirname(path))
            try:
                os.rename(source, path)
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):  # made meanwhile by someone else
                    return False
                raise
            self._remove_empty_folders(os.path.dirname(source))
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._translated(key):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return
            self._remove_empty_folders(os.path.dirname(path))

    def sync(self) -> None:
        """Every file written, renamed or removed under the root is on disk.

        One syncfs(2) of the root's filesystem: a restore of thousands of
        documents waits once, not once per file and folder as fsync would.
        """
        if not self.root.is_dir():
            return
        with self._translated(None):
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                syncfs(fd)
            finally:
                os.close(fd)

    def irregular_entries(self, skip) -> Iterator[Irregular]:
        """Links, fifos, sockets and devices (which list() passes over, and pack leaves out),
        and folders that cannot be read."""
        yield from self._irregular(self._root, "", skip)

    def _irregular(self, folder: str, prefix: str, skip) -> Iterator[Irregular]:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: os.fsencode(e.name))
        except FileNotFoundError:
            return
        except OSError as err:
            yield Irregular(prefix or ".", f"folder: {err.strerror}", broken=True)
            return
        for entry in entries:
            key = prefix + entry.name
            if entry.name.startswith(TEMP_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not skip(key + "/"):
                    yield from self._irregular(entry.path, key + "/", skip)
            elif entry.is_file(follow_symlinks=False) or skip(key):
                continue
            else:
                yield _irregular_entry(entry, key)

    def _walk(self, folder: str | Path, folder_key: str, prefix: str) -> Iterator[ObjectInfo]:
        # Paths as strings: pathlib's `/` costs more than the stat, file after file.
        for name, is_dir, entry in self._entries(folder, folder_key):
            key = folder_key + name
            if is_dir:
                # True for every folder below the start one; at it, for names that begin the prefix.
                if (key + "/").startswith(prefix):
                    yield from self._walk(entry.path, key + "/", prefix)
            elif key.startswith(prefix):
                info = self._file_info(entry, key)
                if info is not None:
                    yield info

    def _entries(self, folder: str | Path, folder_key: str) -> list[tuple[str, bool, os.DirEntry]]:
        """(name, is_dir, entry) of the regular files and real folders, in bytewise key order."""
        entries = []
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if entry.name.startswith(TEMP_PREFIX):
                        continue
                    if is_dir or entry.is_file(follow_symlinks=False):
                        entries.append((entry.name, is_dir, entry))
                    else:
                        self._passed_over.append(_irregular_entry(entry, folder_key + entry.name))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise self.error(folder_key or None, err.strerror) from err
        # A folder's keys continue with "/", so it sorts as its name + "/" ("a-b" < "a/b").
        return sorted(entries, key=lambda e: os.fsencode(e[0] + "/" if e[1] else e[0]))

    def _file_info(self, entry: os.DirEntry, key: str) -> ObjectInfo | None:
        try:
            st = entry.stat(follow_symlinks=False)  # a stat(2) of its own: not cached from the listing
        except FileNotFoundError:  # deleted while we listed
            return None
        except OSError as err:
            raise self.error(key, err.strerror) from err
        return ObjectInfo(key, st.st_size, st.st_mtime, mtime_ns=st.st_mtime_ns)

    def _path(self, key: str) -> str:
        if not valid_key(key):
            raise self.error(repr(key), "invalid key")
        return os.path.join(self._root, key)

    def _create_temp(self, folder: str, made: list[str]) -> tuple[int, str]:
        """A new file to fill in `folder`, made with its parents if missing."""
        try:
            return self._open_temp(folder)
        except FileNotFoundError:
            self._make_dirs(folder, made)
            return self._open_temp(folder)

    def _open_temp(self, folder: str) -> tuple[int, str]:
        temp = os.path.join(folder, f"{TEMP_PREFIX}{os.urandom(8).hex()}")  # as secrets.token_hex
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     ownership.FILE_MODE)
        try:
            ownership.give(fd, self._new_owner())
        except OSError:
            os.close(fd)
            os.unlink(temp)
            raise
        return fd, temp

    def _make_dirs(self, folder: str, made: list[str] | None = None) -> None:
        """Make `folder` and its missing parents, noting in `made` those made here."""
        ownership.make_folders(folder, self._new_owner(), made)

    @staticmethod
    def _remove_made(made: list[str]) -> None:
        """Undo _make_dirs after a failed write: a failure leaves no empty folder behind."""
        for folder in reversed(made):
            try:
                os.rmdir(folder)
            except OSError:  # something else was put there meanwhile
                return

    def _remove_empty_folders(self, folder: str) -> None:
        inside = self._root + os.sep
        while folder.startswith(inside):
            try:
                os.rmdir(folder)
            except OSError:  # not empty
                return
            folder = os.path.dirname(folder)

    def _os_error(self, key: str | None, err: OSError) -> StorageError:
        return self.error(key, err.strerror or str(err), isinstance(err, FileNotFoundError))

    @contextlib.contextmanager
    def _translated(self, key: str):
        try:
            yield
        except OSError as err:
            raise self._os_error(key, err) from err


def remove_tree(folder: str, deadline: float | None) -> bool:
    """Remove `folder` and all it holds, deepest first, or stop once time.monotonic() passes
    `deadline`: whether it is gone."""
    for parent, folders, files in os.walk(folder, topdown=False):
        for name in files:
            os.unlink(os.path.join(parent, name))
            if deadline is not None and time.monotonic() > deadline:
                return False
        for name in folders:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                os.rmdir(path)
    os.rmdir(folder)
    return True


def _irregular_entry(entry: os.DirEntry, key: str) -> Irregular:
    """What a folder's entry that is neither a file nor a folder is, said to the reader."""
    if entry.is_symlink():
        target = os.readlink(entry.path)
        if os.path.exists(entry.path):
            return Irregular(key, f"a symbolic link (to {target}), not a regular file")
        return Irregular(key, f"a dangling symbolic link (to {target})", broken=True)
    return Irregular(key, f"a {_kind_of(entry)}, not a regular file")


def _kind_of(entry) -> str:
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "special file"
    for test, name in ((stat_module.S_ISFIFO, "fifo"), (stat_module.S_ISSOCK, "socket"),
                       (stat_module.S_ISCHR, "character device"), (stat_module.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _with_next(items: Iterable) -> Iterator[tuple]:
    """(item, the item after it or None) for every item."""
    iterator = iter(items)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following
        current = following


def _after_first(ahead, hasher) -> Iterator[bytes]:
    """A document read ahead: its pieces, from the first (hashed already) on.  The read's
    error (a document deleted meanwhile) comes out here, as the document's own."""
    chunks, first = ahead.result()
    if first is not None:
        yield first
        yield from hashing(chunks, hasher)
