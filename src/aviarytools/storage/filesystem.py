"""Documents as files under a root folder (Aviary's STORAGE_BACKEND=filesystem)."""

from __future__ import annotations

import os
import stat as stat_module
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .base import CHUNK_SIZE, ObjectInfo, Storage

TEMP_PREFIX = ".aviary-tmp-"


def valid_key(key: str) -> bool:
    parts = key.split("/")
    return bool(key) and "\0" not in key and not any(part in ("", ".", "..") for part in parts)


class FilesystemStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.url = str(self.root)

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
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._path(key)
        with self._translated(key):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
        if not valid_key(key):
            raise self.error(repr(key), "invalid key")
        path = os.path.join(os.fspath(self.root), key)  # _path(key) as a string: cheaper, file after file
        with self._translated(key):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        view = memoryview(buffer)
        try:
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

    def write(self, key: str, chunks: Iterable[bytes], size: int | None = None) -> None:
        path = self._path(key)
        made: list[Path] = []
        try:
            with self._translated(key):
                self._make_dirs(path.parent, made)
                fd, temp = self._create_temp(path.parent)
        except BaseException:
            self._remove_made(made)
            raise
        try:
            written = self._fill(fd, key, chunks)
            self.check_size(key, size, written)
            with self._translated(key):
                os.replace(temp, path)
                self._fsync_dir(path.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            self._remove_made(made)
            raise

    def promote(self, staged_key: str, key: str) -> None:
        source, path = self._path(staged_key), self._path(key)
        with self._translated(key):
            self._make_dirs(path.parent)
            os.replace(source, path)
            self._fsync_dir(path.parent)
            self._remove_empty_folders(source.parent)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._translated(key):
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return
            self._remove_empty_folders(path.parent)

    def _walk(self, folder: str | Path, folder_key: str, prefix: str) -> Iterator[ObjectInfo]:
        # Paths as strings: pathlib's `/` costs more than the stat, file after file.
        for name, is_dir in self._entries(folder, folder_key):
            key = folder_key + name
            if is_dir:
                # True for every folder below the start one; at it, for names that begin the prefix.
                if (key + "/").startswith(prefix):
                    yield from self._walk(os.path.join(folder, name), key + "/", prefix)
            elif key.startswith(prefix):
                info = self._file_info(os.path.join(folder, name), key)
                if info is not None:
                    yield info

    def _entries(self, folder: Path, folder_key: str) -> list[tuple[str, bool]]:
        """(name, is_dir) of the regular files and real folders, in bytewise key order."""
        entries = []
        try:
            with os.scandir(folder) as scan:
                for entry in scan:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if (is_dir or entry.is_file(follow_symlinks=False)) and not entry.name.startswith(TEMP_PREFIX):
                        entries.append((entry.name, is_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise self.error(folder_key or None, err.strerror) from err
        # A folder's keys continue with "/", so it sorts as its name + "/" ("a-b" < "a/b").
        return sorted(entries, key=lambda e: os.fsencode(e[0] + "/" if e[1] else e[0]))

    def _file_info(self, path: Path, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:  # deleted while we listed
            return None
        except OSError as err:
            raise self.error(key, err.strerror) from err
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def _path(self, key: str) -> Path:
        if not valid_key(key):
            raise self.error(repr(key), "invalid key")
        return self.root.joinpath(*key.split("/"))

    def _make_dirs(self, folder: Path, made: list[Path] | None = None) -> None:
        """Make `folder` and its missing parents (0700), noting in `made` those made here."""
        if folder.is_dir():
            return
        self._make_dirs(folder.parent, made)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # made by a concurrent writer
            return
        if made is not None:
            made.append(folder)
        os.chmod(folder, 0o700)  # whatever the umask

    @staticmethod
    def _create_temp(folder: Path) -> tuple[int, Path]:
        temp = folder / f"{TEMP_PREFIX}{os.urandom(8).hex()}"  # as secrets.token_hex, without its imports
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd, temp

    def _fill(self, fd: int, key: str, chunks: Iterable[bytes]) -> int:
        written = 0
        with open(fd, "wb") as file:
            for chunk in chunks:
                with self._translated(key):
                    file.write(chunk)
                written += len(chunk)
            with self._translated(key):
                file.flush()
                os.fsync(file.fileno())
        return written

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _remove_made(made: list[Path]) -> None:
        """Undo _make_dirs after a failed write: a failure leaves no empty folder behind."""
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile
                return

    def _remove_empty_folders(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty
                return
            folder = folder.parent

    @contextmanager
    def _translated(self, key: str):
        try:
            yield
        except OSError as err:
            raise self.error(key, err.strerror or str(err), isinstance(err, FileNotFoundError)) from err
