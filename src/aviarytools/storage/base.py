"""What every place that holds Aviary's documents can do."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import xxhash

from aviarytools.errors import MissingObject, StorageError, redact

from ..spill import SpillList
from .transfers import Transfers

CHUNK_SIZE = 1 << 20
# What a sweep out of time leaves, at the root: a folder's staging folder renamed aside, or (S3)
# an object naming the staging prefix still to delete.  sweep_leftovers() removes them.
SWEPT = ".aviary-tmp-swept-"


def ignore_count(count: int) -> None:
    """The default `done` of promote_many and delete_many."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as it declares it: callers choose their way by these,
    never by the backend's type."""

    renames: bool = False  # promote() renames in place: atomic, nothing copied
    moves_folders: bool = False  # promote_folder() moves a whole staged folder in one step
    server_side_copy: bool = False  # promote() copies inside the store: the bytes do not come back to us
    md5_etags: bool = False  # a single-part object's ETag is the MD5 of its content
    immutable_objects: bool = False  # an object changes only by being replaced whole, never in place
    reads_into: bool = False  # read_into(): content read into the caller's buffer
    batch_delete: int = 1  # keys one delete_many() request removes
    sweeps: bool = False  # sweep() removes a whole prefix without a request or call per object known
    connections: int = 1  # requests worth having in flight at once
    shares_data_dir: bool = False  # may be Aviary's DATA_DIR, holding aviary.db beside users/


@dataclass(frozen=True)
class Irregular:
    """An entry of a storage that is not an object: a link, a device, an unreadable folder."""

    key: str
    what: str  # what it is, said to the reader
    broken: bool = False  # nothing can be read there (a dangling link, a folder that fails to list)


class ObjectInfo(NamedTuple):
    """An object as a listing saw it.  A named tuple, not a frozen dataclass: one is made for
    every document each time a listing is read, and this makes it in a third of the time."""

    key: str
    size: int
    mtime: float  # seconds since the epoch
    etag: str | None = None  # S3 ETag without quotes; None on a filesystem
    mtime_ns: int | None = None  # a file's nanoseconds, where the storage keeps them (a folder)


class Staged(NamedTuple):
    """A document stage() wrote aside, which becomes its key only once a restore commits: an
    object under the staging prefix (upload None), or, where the storage can, an upload to the
    key itself left incomplete (upload: the storage's id for it).  A named tuple: a restore keeps
    one per document in a SpillList, and writes them to its journal."""

    key: str  # the staged object's key; for an upload, the key it completes
    upload: str | None = None


class Storage(ABC):
    """Objects under '/'-separated keys relative to a root, e.g. users/<uuid>/pdfs/sub/a.pdf.

    A backend is a subclass in its own module, which also has `from_url(url,
    environ, options)` and `from_environment(environ, options)` and is named in
    the registry (storage/__init__.py)."""

    url: str  # display form: never holds a secret
    capabilities = Capabilities()
    _transfers: Transfers | None = None  # made when first asked for

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Regular objects whose key starts with `prefix`, in bytewise key order, streamed."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """The object under `key`, or None if there is none."""

    @abstractmethod
    def read(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The object's bytes, a chunk at a time."""

    @abstractmethod
    def write(self, key: str, chunks: Iterable[bytes], size: int | None = None,
              sync_follows: bool = False) -> None:
        """Store `chunks` under `key`, visible only once complete.

        Each chunk is used before the next is asked for, so a producer may
        reuse one buffer.  An exception raised by `chunks` leaves no object
        behind and propagates as is.  `size`, when given, is checked against
        the bytes actually written.  `sync_follows`: the caller will call
        sync() after its last write, so the object may start on its way to
        the disk now.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    def promote(self, staged: Staged, key: str) -> None:
        """Move a complete staged object to `key`, replacing what is there.  MissingObject
        if the staged object is not there (it was moved already, or never written)."""
        info = self.stat(staged.key)
        if info is None:
            raise self.error(staged.key, "no such staged object", missing=True)
        self.write(key, self.read(staged.key), info.size)
        self.delete(staged.key)

    # -- many objects at once: side by side where the backend can (transfers.py) ----------

    @property
    def transfers(self) -> Transfers:
        """The storage's one bound on requests in flight (capabilities.connections)."""
        if self._transfers is None:
            self._transfers = Transfers(self.capabilities.connections, name=type(self).__name__)
        return self._transfers

    def read_ahead(self, objects: Iterable[ObjectInfo]) -> Iterator[tuple[ObjectInfo, Iterator[bytes], object]]:
        """(object, its bytes, an XXH128 hasher) for each object, in the order given.

        Each one's bytes are to be used up before the next object is asked for;
        the hasher has seen every chunk before it is handed over (a backend may
        hash in the thread that reads).  A backend may read the objects that
        follow while the caller works: within capabilities.connections requests
        and the transfers' byte budget.  An object's error (MissingObject, when
        it was deleted meanwhile) is raised from its bytes, in order."""
        for info in objects:
            hasher = xxhash.xxh3_128()
            yield info, hashing(self.read(info.key), hasher), hasher

    def put(self, key: str, chunks: Iterable[bytes], size: int, sync_follows: bool = False) -> None:
        """write(), perhaps finished in the background: the chunks are used up before this
        returns, but the object may be complete only at settle(), which raises any
        error of a put (so may a later put)."""
        self.write(key, chunks, size, sync_follows)

    def settle(self) -> None:
        """Wait for every put() (and stage()) to be complete; raise the first that failed."""

    def stage(self, staged_key: str, key: str, chunks: Iterable[bytes], size: int,
              sync_follows: bool = False) -> Staged:
        """Store an object that is to become `key` only once a restore commits: by default a
        put() under `staged_key`."""
        self.put(staged_key, chunks, size, sync_follows)
        return Staged(staged_key)

    def settled(self, staged: Staged) -> Staged:
        """After settle(): `staged` as another process can promote it (a restore's journal)."""
        return staged

    def landed(self) -> int | None:
        """How many staged objects were stored so far, where puts end in the background
        (None: every stage() that returned stored its object)."""
        return None

    def unstage_many(self, staged: Iterable[Staged]) -> None:
        """Give up staged objects (a failed restore): none is left behind; one not there is
        no error."""
        self.delete_many(s.key for s in staged)

    def leftovers(self, prefix: str) -> str:
        """What to do by hand about a restore's staged objects a dead storage kept."""
        return f"delete {self.url}/{prefix}"

    def promote_many(self, pairs: Iterable[tuple[Staged, str]], done: Callable[[int], None] = ignore_count) -> None:
        """promote(staged, key) for every pair; done(1) after each one."""
        for staged, key in pairs:
            self.promote(staged, key)
            done(1)

    def delete_many(self, keys: Iterable[str], done: Callable[[int], None] = ignore_count) -> None:
        """delete(key) for every key (in batches of capabilities.batch_delete where the
        backend has them); done(n) once n more are gone."""
        for key in keys:
            self.delete(key)
            done(1)

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under `prefix` (a restore's staging prefix, ending in "/"), and
        what held it (folders, folder markers)."""
        self.delete_many([info.key for info in self.list(prefix)])

    def sweep(self, prefix: str, seconds: float | None = None) -> str | None:
        """Remove everything under `prefix` (a failed restore's staging prefix, ending in "/") in
        one sweep: with capabilities.sweeps, without a call per object (a staged upload to a
        key of its own is not under it: unstage_many gives it up).  `seconds`: how long the sweep may take; what is left then
        stays set aside, out of every listing, for sweep_leftovers(): its key (None: nothing is
        left).  By default: delete_prefix()."""
        self.delete_prefix(prefix)
        return None

    def sweep_leftovers(self) -> list[str]:
        """Remove what earlier sweeps set aside (a restore interrupted while it gave up its
        staged documents): the keys they were under."""
        return []

    def write_durably(self, key: str, chunks: Iterable[bytes]) -> None:
        """An object complete and durable when this returns, or not there at all."""
        self.write(key, chunks)
        self.sync()

    def command_options(self) -> list[str]:
        """The options that, beside --storage URL, open this storage again (none secret)."""
        return []

    def discard(self) -> None:
        """Give up the puts not complete yet (a restore failed): none of them is left behind."""
        self.transfers.cancel()

    def promote_folder(self, staged_prefix: str, prefix: str) -> bool:
        """Move every object under `staged_prefix` (ending in "/") to `prefix` in
        one step, where the storage can and nothing is under `prefix` yet.
        False: nothing was moved; promote the objects one by one."""
        return False

    def read_into(self, key: str, buffer: bytearray) -> Iterator[memoryview]:
        """With capabilities.reads_into: the object's bytes read into `buffer`, a view
        of it at a time, each valid only until the next is asked for."""
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether the storage's root is there (a restore may not have made it yet)."""
        return True

    def passed_over(self) -> list[Irregular]:
        """The entries that this storage's listings so far passed over for not being objects
        (a folder's links, fifos, devices), so that pack can name each document it leaves out."""
        return []

    def check(self) -> None:
        """Raise a StorageError if the storage cannot be what a command reads or restores
        into, before it reads or writes anything: a bucket that does not exist (a server
        such as SeaweedFS would make a misspelt one on the first write).  A folder passes:
        a restore makes one that is not there yet."""

    def remove_root_if_empty(self) -> None:
        """A failed restore made the root: it goes again if nothing is in it."""

    def irregular_entries(self, skip: Callable[[str], bool]) -> Iterator[Irregular]:
        """Entries that are not objects, which list() passes over (keys `skip` says to leave
        alone are not looked into)."""
        return iter(())

    def sync(self) -> None:
        """Make every write, promotion and deletion so far durable.

        Writes return once the object is complete and visible, not once it is on
        disk: a caller writing many objects syncs once, after the last.
        """

    def close(self) -> None:
        if self._transfers is not None:
            self._transfers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def error(self, key: str | None, problem: str, missing: bool = False,
              kind: type[StorageError] | None = None) -> StorageError:
        where = f"{self.url}: {key}" if key is not None else self.url
        return (kind or (MissingObject if missing else StorageError))(redact(f"{where}: {problem}"))

    def check_size(self, key: str, expected: int | None, written: int) -> None:
        if expected is not None and expected != written:
            raise self.error(key, f"expected {expected} bytes, got {written}")


class Listing:
    """Objects listed before they are read (pack lists every document before it writes
    metadata.json, with their count and total size): kept in a SpillList, so that a
    million of them do not sit in memory."""

    def __init__(self):
        self._entries = SpillList()
        self.bytes = 0

    def add(self, info: ObjectInfo) -> None:
        self._entries.append(tuple(info))  # a plain tuple: marshal takes no subclass of one
        self.bytes += info.size

    def __iter__(self) -> Iterator[ObjectInfo]:
        return (ObjectInfo(*entry) for entry in self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def hashing(chunks: Iterable[bytes], hasher) -> Iterator[bytes]:
    """`chunks`, each given to `hasher` before it is handed on."""
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk
