"""The storage checks of doctor: layout, users' folders, empty documents, deep reads.

One listing of the storage, in key order, so the objects of one users/<x>/
folder come together and are reported once per folder.  --deep reads every
object end to end, several at a time, reported in listing order: a folder's
files with readinto() into one reused 1 MiB buffer per reader (no Python
object per chunk); S3 objects checking the size and, where the ETag is a
plain MD5, the content.
"""

import hashlib
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..archive import layout
from ..archive.transaction import JOURNAL, STAGING, finish_command
from ..errors import StorageError
from ..storage import SWEPT, ObjectInfo, Storage
from ..findings import WARNING, Capped, Finding, info, problem, warning

BUFFER_SIZE = 1 << 20
_PLAIN_MD5 = re.compile(r"[0-9a-fA-F]{32}")


def ignored(storage: Storage, key: str) -> bool:
    """Keys that are not Aviary documents and rightly so.

    An unpack's staging prefix and what a sweep of one left (the next restore removes it),
    Aviary's own backup files (backups/) and, in a storage that may be Aviary's DATA_DIR, the
    SQLite database files.
    """
    first, slash, _ = key.partition("/")
    if first.startswith((STAGING, SWEPT)) or (first == "backups" and slash):
        return True
    return storage.capabilities.shares_data_dir and not slash and first.startswith("aviary.db")


# -- reading an object end to end -----------------------------------------------

_buffers = threading.local()


def _buffer() -> bytearray:
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = bytearray(BUFFER_SIZE)
    return buf


def read_object(storage: Storage, key: str, update: Callable | None = None) -> int:
    """Read the object under `key` to its end, passing each piece to `update`; returns its size.

    Where the storage reads into a buffer, into one buffer per thread (no Python
    object per piece); else through its own reader.  StorageError if unreadable.
    """
    if storage.capabilities.reads_into:
        pieces = storage.read_into(key, _buffer())
    else:
        pieces = storage.read(key, BUFFER_SIZE)
    total = 0
    for piece in pieces:
        if update is not None:
            update(piece)
        total += len(piece)
    return total


@dataclass
class _Read:
    size: int = 0
    md5: str | None = None
    error: str | None = None


class DeepReader:
    """Reads objects end to end, as many at a time as the storage takes requests
    (its transfers), reporting in listing order."""

    def __init__(self, storage: Storage, progress=None):
        self.storage = storage
        self.capabilities = storage.capabilities
        self.transfers = storage.transfers
        self.window = self.transfers.limit * 4
        self.pending: deque = deque()
        self.progress = progress
        self.objects = self.bytes = self.unreadable = 0
        self.started = time.monotonic()

    def submit(self, obj: ObjectInfo) -> Iterator[Finding]:
        self.pending.append((obj, self.transfers.submit(self._read, obj)))
        while len(self.pending) > self.window:
            obj, future = self.pending.popleft()
            yield from self._settle(obj, future.result())

    def drain(self) -> Iterator[Finding]:
        while self.pending:
            obj, future = self.pending.popleft()
            yield from self._settle(obj, future.result())
        seconds = max(time.monotonic() - self.started, 1e-6)
        yield info("deep-read", f"{self.objects} objects, {self.bytes} bytes read in {seconds:.1f} s"
                   f" ({self.bytes / seconds / 1e6:.0f} MB/s), {self.unreadable} unreadable")

    def _read(self, obj: ObjectInfo) -> _Read:
        md5 = None
        if self.capabilities.md5_etags and obj.etag and _PLAIN_MD5.fullmatch(obj.etag):
            md5 = hashlib.md5(usedforsecurity=False)
        try:
            size = read_object(self.storage, obj.key, md5.update if md5 else None)
        except StorageError as err:
            return _Read(error=str(err))
        except OSError as err:  # not every reader translates every error
            return _Read(error=f"{self.storage.url}: {obj.key}: {err.strerror or err}")
        return _Read(size, md5.hexdigest() if md5 else None)

    def _settle(self, obj: ObjectInfo, read: _Read) -> Iterator[Finding]:
        self.objects += 1
        if self.progress is not None:
            self.progress.add(read.size, 1)
        if read.error is not None:
            self.unreadable += 1
            yield problem("unreadable", read.error, obj.key)
            return
        self.bytes += read.size
        if read.size != obj.size:
            if self.capabilities.immutable_objects:
                yield problem("size", f"listed as {obj.size} bytes, {read.size} bytes read", obj.key)
            else:
                yield info("size", f"changed while being read ({obj.size} bytes listed,"
                           f" {read.size} read): in use?", obj.key)
        if read.md5 is not None and read.md5 != obj.etag.lower():
            yield problem("etag", f"content MD5 {read.md5} differs from the ETag {obj.etag}", obj.key)


# -- the listing -------------------------------------------------------------------


@dataclass
class UserFiles:
    documents: int = 0
    bytes: int = 0


@dataclass
class _Folder:
    """The users/<x>/ folder being listed, when it is one to report."""

    prefix: str
    why: str
    objects: int = 0
    bytes: int = 0


@dataclass
class StorageTally:
    users: dict[str, UserFiles] = field(default_factory=dict)


def check_storage(storage: Storage, users: dict[str, str], tally: StorageTally, *, deep: bool = False,
                  progress=None) -> Iterator[Finding]:
    """Every storage problem found; documents per user counted into `tally`."""
    yield from irregular_entries(storage)
    yield from restores_left(storage)
    # Odd but working: Aviary serves its documents all the same.
    folders = Capped("user-folder", severity=WARNING)
    outside = Capped("layout", severity=WARNING)
    empty = Capped("empty-document", severity=WARNING)
    reader = DeepReader(storage, progress) if deep else None
    folder: _Folder | None = None
    try:
        for obj in storage.list(""):
            if ignored(storage, obj.key):
                continue
            parts = obj.key.split("/", 3)
            if folder is not None and not obj.key.startswith(folder.prefix):
                yield from _report_folder(folders, folder)
                folder = None
            if parts[0] == "users" and len(parts) >= 3:
                user = parts[1]
                if folder is None and (not layout.is_uuid(user) or user not in users):
                    why = "not a user id" if not layout.is_uuid(user) else "no user has this id"
                    folder = _Folder(f"users/{user}/", why)
                if folder is not None:
                    folder.objects += 1
                    folder.bytes += obj.size
                elif len(parts) == 4 and parts[2] == "pdfs" and parts[3]:
                    files = tally.users.setdefault(user, UserFiles())
                    files.documents += 1
                    files.bytes += obj.size
                    if obj.size == 0:
                        yield from _offered(empty, "a document of 0 bytes", obj.key)
                elif parts[2:] == ["rmapi", "rmapi.conf"]:
                    yield info("layout", "rmapi config of Aviary before v1.6.0 (now users.rmapi_config)",
                               obj.key)
                else:
                    yield from _offered(outside, "outside Aviary's layout (users/<uuid>/pdfs/...)", obj.key)
            else:
                yield from _offered(outside, "outside Aviary's layout (users/<uuid>/pdfs/...)", obj.key)
            if reader is not None:
                yield from reader.submit(obj)
    except StorageError as err:
        yield problem("unreadable", f"listing failed: {err}")
    if folder is not None:
        yield from _report_folder(folders, folder)
    for cap in (folders, outside, empty):
        if cap.rest():
            yield cap.rest()
    if reader is not None:
        yield from reader.drain()


def _offered(cap: Capped, detail: str, subject: str) -> Iterator[Finding]:
    finding = cap.offer(detail, subject)
    if finding:
        yield finding


def _report_folder(cap: Capped, folder: _Folder) -> Iterator[Finding]:
    objects = f"{folder.objects} object{'s' if folder.objects != 1 else ''}"
    yield from _offered(cap, f"{folder.why} ({objects}, {folder.bytes} bytes)", folder.prefix)


def restores_left(storage: Storage) -> Iterator[Finding]:
    """Staging prefixes of restores (transaction.py): one with a journal committed its database
    and did not finish moving its documents (a problem: the database names documents that are
    not at their keys); one without was cut before its commit (its objects serve nothing)."""
    prefix, objects, size, journal = None, 0, 0, False

    def report() -> Iterator[Finding]:
        if journal:
            yield problem("unfinished-restore", "a restore committed its database but did not move all its"
                          f" documents into place: run `{finish_command(storage)}`", prefix)
        elif prefix is not None:
            yield warning("staging", f"staged by a restore cut before its commit ({objects} object(s),"
                          f" {size} bytes; nothing uses them): once no restore runs, delete {storage.url}/{prefix}",
                          prefix)

    try:
        for obj in storage.list(STAGING) if storage.exists() else ():
            first = obj.key.split("/", 1)[0] + "/"
            if first != prefix:
                yield from report()
                prefix, objects, size, journal = first, 0, 0, False
            journal = journal or obj.key == prefix + JOURNAL
            objects += 1
            size += obj.size
    except StorageError as err:
        yield problem("unreadable", f"listing failed: {err}")
        return
    yield from report()


def irregular_entries(storage: Storage) -> Iterator[Finding]:
    """Entries of the storage that are not objects (a folder's links, fifos, devices).

    The storage listing (and so pack) passes over them silently; Aviary
    cannot serve a dangling link, and a backup leaves any link out.
    """
    cap = Capped("not-regular", severity=WARNING)  # served by Aviary, left out of a backup
    for entry in storage.irregular_entries(lambda key: ignored(storage, key)):
        if entry.broken:
            yield problem("unreadable", entry.what, entry.key)
        else:
            yield from _offered(cap, f"{entry.what}: pack leaves it out", entry.key)
    if cap.rest():
        yield cap.rest()
