"""A restore's three phases over the storage: stage, commit, finish.

- stage: each document is written aside, under the staging prefix .aviary-restore-<id>/ (or,
  where the storage can, as an upload to its key left incomplete).  Nothing live changes.
- commit: once every staged document is complete and on disk, a journal is written beside
  them, durably: which staged object becomes which key, and which stale keys go.  Then the
  database commits (the caller's transaction ends).
- finish: staged documents move to their keys, stale ones are deleted, the staging prefix is
  cleared, and the journal goes last.

A failure before the commit gives up what was staged (and the journal): the target is as it
was.  A failure or a signal after it raises UnfinishedRestore, whose three lines say that the
database holds the archive's data, what is left to do, and the command that does it:
`aviary unpack --finish --storage URL` finishes from the journal alone (no archive, no
database), and can be run again after its own failure.  A restore that finds a journal
finishes it before it starts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .. import errors
from ..errors import AviaryError, MissingObject, StorageError
from ..spill import HashSet, SpillList
from ..storage import Staged, Storage
from . import layout

STAGING = ".aviary-restore-"  # a restore's staging prefix is STAGING + 12 hex digits + "/"
JOURNAL = "journal.ndjson"  # under the staging prefix: written before the commit, removed last
_JOURNAL_KEY = re.compile(re.escape(STAGING) + r"[0-9a-f]+/" + re.escape(JOURNAL))
# The drills stop the command at one of these points to strike there: "staged" (every document
# staged, the tables not applied yet), and after the commit "committed" (before the first move),
# "moving" (half the documents moved), "deleting" (before the stale documents go).  Never set
# in use.
STOP_AT = "AVIARY_TEST_STOP_AT"
# A restore a signal stops gives up its staged documents within this many seconds, where the
# storage sweeps (a folder: renamed aside, then removed; S3: deleted until then, and an object
# names the prefix): what is left then stays set aside, said so, and the next restore (or
# unpack --finish) removes it.
SWEEP_SECONDS = 0.5


class UnfinishedRestore(StorageError):
    """The database committed, the documents are not all in place: three lines."""

    def __init__(self, cause: str, left: str, command: str):
        super().__init__(f"the database holds the archive's data, but not every document is in place: {cause}")
        self.left, self.command = left, command

    def lines(self) -> list[str]:
        return [str(self), self.left, f"to finish, once the storage answers: {self.command}"]


def finish_command(storage: Storage) -> str:
    return " ".join(["aviary unpack --finish --storage", _shell_word(storage.url), *storage.command_options()])


def _shell_word(text: str) -> str:
    return text if re.fullmatch(r"[\w@%+=:,./-]+", text) else "'" + text.replace("'", "'\\''") + "'"


@dataclass
class Work:
    """What a finish does, as the journal records it, and how much of it is done."""

    prefix: str  # the staging prefix, where the journal is
    moves: SpillList  # (staged key, upload id or "", key)
    drops: SpillList  # (staged key, upload id or ""): documents there already (unpack --adopt)
    stale: SpillList  # (key,)
    moved: int = 0
    deleted: int = 0

    @classmethod
    def empty(cls, prefix: str) -> "Work":
        return cls(prefix, SpillList(), SpillList(), SpillList())

    def left(self) -> str:
        documents = len(self.moves) + len(self.drops)
        text = f"{documents - self.moved} of {documents} document(s) still to move"
        if len(self.stale):
            text += f", {len(self.stale) - self.deleted} of {len(self.stale)} stale document(s) still to delete"
        return text


class Transaction:
    """One restore's documents, from staging to finish (see the module's doc)."""

    def __init__(self, storage: Storage, *, sync: bool = True, warn: Callable[[str], None] = lambda _: None):
        self.storage, self.sync, self.warn = storage, sync, warn
        self.prefix = f"{STAGING}{os.urandom(6).hex()}/"  # as secrets.token_hex, without its imports
        self.staged = SpillList()  # (staged key, upload handle or "", key): one per document
        self.unchanged = HashSet()  # staged keys whose very document is at its key already
        self.work: Work | None = None  # what the finish does, once prepared
        self.root_existed = storage.exists()

    def finish_earlier(self, dry_run: bool) -> None:
        """A restore left unfinished here (its journal is there) is finished first: the
        database it committed names its documents.  A dry run only says so."""
        if not dry_run:
            for key in self.storage.sweep_leftovers():
                self.warn(f"{self.storage.url}/{key}: removed what an interrupted restore had set aside")
        for prefix in journals(self.storage):
            if dry_run:
                self.warn(f"{self.storage.url}/{prefix}{JOURNAL}: an earlier restore is unfinished:"
                          f" {finish_command(self.storage)}")
                continue
            self.warn(f"{self.storage.url}/{prefix}{JOURNAL}: an earlier restore is unfinished: finished first")
            finish(self.storage, read_journal(self.storage, prefix), resumed=True)

    # -- stage ---------------------------------------------------------------

    def stage(self, key: str, chunks: Iterable[bytes], size: int) -> Staged:
        staged = self.storage.stage(self.prefix + key, key, chunks, size, sync_follows=self.sync)
        self.staged.append((staged.key, staged.upload or "", key))
        return staged

    def keep_live(self, staged: Staged) -> None:
        """The document at `staged`'s key is the very one staged: it stays, the staged one goes."""
        self.unchanged.add(staged.key)

    def settle(self) -> None:
        """Every staged document complete (uploads may still be going up)."""
        self.storage.settle()
        _stop_at("staged")

    # -- commit --------------------------------------------------------------

    def prepare(self, stale: SpillList) -> None:
        """The staged documents on disk, then the journal beside them: called last before the
        database commits.  `stale`: (key,) of each document the finish deletes."""
        work = self.work = Work.empty(self.prefix)
        for staged_key, handle, key in self.staged:
            staged = self.storage.settled(Staged(staged_key, handle or None))
            if staged_key in self.unchanged:
                work.drops.append((staged.key, staged.upload or ""))
            else:
                work.moves.append((staged.key, staged.upload or "", key))
        work.stale = stale
        if self.sync:
            self.storage.sync()
        self.storage.write_durably(self.prefix + JOURNAL, journal_lines(work, self.storage.url))

    def abort(self, error: BaseException) -> BaseException:
        """Give up the staged documents (the database did not commit): `error`, or an error
        naming what could not be removed, to raise."""
        aside = None
        try:
            self.storage.discard()  # uploads still under way end first
            aside = self._unstage()
            if not self.root_existed and aside is None:
                self.storage.remove_root_if_empty()
        except Exception:  # the failure being reported matters more
            left = self.storage.landed()
            left = len(self.staged) if left is None else left
            if left and isinstance(error, AviaryError):
                return type(error)(f"{error}; {left} staged object(s) could not be removed: once the"
                                   f" storage answers, {self.storage.leftovers(self.prefix)}")
        finally:
            self.staged.clear()
        if aside is not None:
            self.warn(f"{self.storage.url}/{aside}: the staged documents not removed yet, set aside: the next"
                      f" restore here removes them, or {finish_command(self.storage)}")
        return error

    def _unstage(self) -> str | None:
        """The staged documents given up: in one sweep of the staging prefix where the
        storage can (within SWEEP_SECONDS once a signal stopped the restore), uploads to
        keys of their own one by one.  Where the sweep left what it set aside (None: nothing)."""
        staged = (self.storage.settled(Staged(k, h or None)) for k, h, _ in self.staged)
        if not self.storage.capabilities.sweeps:
            self.storage.unstage_many(staged)
            self._clear()
            return None
        self.storage.unstage_many(s for s in staged if s.upload is not None)
        return self.storage.sweep(self.prefix, SWEEP_SECONDS if errors.stop_requested() else None)

    # -- finish --------------------------------------------------------------

    def finish(self) -> None:
        """After the commit: the documents into place (UnfinishedRestore if cut short)."""
        self.staged.clear()
        try:
            _stop_at("committed")
        except BaseException as error:
            raise _unfinished(self.storage, error, self.work) from error
        finish(self.storage, self.work, resumed=False, sync=self.sync)

    def discard(self) -> None:
        """A dry run: nothing was staged; nothing stays."""
        self.staged.clear()

    def _clear(self) -> None:
        self.storage.delete_prefix(self.prefix)


def finish(storage: Storage, work: Work, *, resumed: bool, sync: bool = True) -> None:
    """Move, drop and delete as `work` says, then (`sync`) wait for that to be on disk, and
    clear the staging prefix, the journal last.  `resumed`: an earlier finish may have done
    some of it (a staged object no longer there was moved)."""
    try:
        _finish(storage, work, resumed, sync)
    except BaseException as error:
        raise _unfinished(storage, error, work) from error


def _finish(storage: Storage, work: Work, resumed: bool, sync: bool) -> None:
    prefix = work.prefix
    still_staged = HashSet()
    if resumed:
        for info in storage.list(prefix):
            still_staged.add(info.key)
    half = (len(work.moves) + 1) // 2
    counting = threading.Lock()  # done() is called from the storage's transfer threads

    def done(count: int) -> None:
        with counting:
            work.moved += count
            crossed = work.moved >= half > work.moved - count
        if crossed:
            _stop_at("moving")

    # A user whose folder the target does not have yet (a first restore, a migration) gets
    # the whole staged folder in one move, where the storage can.
    whole = storage.capabilities.moves_folders
    moved_folders: dict[str, bool] = {}

    def one_by_one() -> Iterator[tuple[Staged, str]]:
        for staged_key, upload, key in work.moves:
            staged = Staged(staged_key, upload or None)
            if resumed and upload == "" and staged_key not in still_staged:
                done(1)  # moved by the finish before
                continue
            folder = layout.storage_key(layout.document_of_key(key)[0], "")
            if whole and folder not in moved_folders:
                moved_folders[folder] = storage.promote_folder(prefix + folder, folder)
            if moved_folders.get(folder):
                done(1)
            else:
                yield staged, key

    storage.promote_many(one_by_one(), done)  # side by side, where the storage can
    storage.unstage_many(Staged(k, u or None) for k, u in work.drops)
    work.moved += len(work.drops)
    _stop_at("deleting")

    def deleted(count: int) -> None:
        with counting:
            work.deleted += count

    storage.delete_many((key for (key,) in work.stale), deleted)
    if sync:
        storage.sync()  # the moves and deletions durable before the journal goes
    # The staged objects are gone (moved or dropped): what is left is the journal and the
    # folders (or S3 folder markers) that held them.
    storage.delete(prefix + JOURNAL)
    storage.delete_prefix(prefix)


def _unfinished(storage: Storage, error: BaseException, work: Work) -> UnfinishedRestore:
    if isinstance(error, UnfinishedRestore):
        return error
    if isinstance(error, KeyboardInterrupt):
        cause = "interrupted"
    elif type(error).__name__ == "Terminated":
        cause = "terminated"
    else:
        cause = errors.message(str(error) or type(error).__name__)
    return UnfinishedRestore(cause, f"{work.left()} (journal: {storage.url}/{work.prefix}{JOURNAL})",
                             finish_command(storage))


def _stop_at(point: str) -> None:
    if os.environ.get(STOP_AT) == point:
        os.kill(os.getpid(), signal.SIGSTOP)


# -- journals found in a storage --------------------------------------------------


def journals(storage: Storage) -> list[str]:
    """The staging prefixes of the storage that hold a journal: restores left unfinished."""
    if not storage.exists():
        return []
    return [info.key[:-len(JOURNAL)] for info in storage.list(STAGING) if _JOURNAL_KEY.fullmatch(info.key)]


def journal_lines(work: Work, url: str) -> Iterator[bytes]:
    """The journal of `work`: a header, then one JSON object a line, 1,024 lines a chunk."""
    def entries() -> Iterator[dict]:
        for staged_key, upload, key in work.moves:
            yield {"complete": key, "upload": upload} if upload else {"move": staged_key, "to": key}
        for staged_key, upload in work.drops:
            yield {"drop": staged_key, **({"upload": upload} if upload else {})}
        for (key,) in work.stale:
            yield {"delete": key}

    yield (json.dumps({"journal": 1, "storage": url, "documents": len(work.moves) + len(work.drops),
                       "stale": len(work.stale)}) + "\n").encode()
    lines = []
    for entry in entries():
        lines.append(json.dumps(entry, ensure_ascii=False))
        if len(lines) == 1024:
            yield ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
            lines = []
    if lines:
        yield ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def read_journal(storage: Storage, prefix: str) -> Work:
    work = Work.empty(prefix)
    for number, line in enumerate(_lines(storage.read(prefix + JOURNAL)), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            raise StorageError(f"{storage.url}: {prefix}{JOURNAL}: line {number}: not JSON") from None
        if number == 1:
            if entry.get("journal") != 1:
                raise StorageError(f"{storage.url}: {prefix}{JOURNAL}: not a journal of this version")
        elif "move" in entry:
            work.moves.append((entry["move"], "", entry["to"]))
        elif "complete" in entry:
            work.moves.append((entry["complete"], entry["upload"], entry["complete"]))
        elif "drop" in entry:
            work.drops.append((entry["drop"], entry.get("upload", "")))
        elif "delete" in entry:
            work.stale.append((entry["delete"],))
    return work


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        for line in whole:
            if line:
                yield line.decode("utf-8", "surrogateescape")
    if rest:
        yield rest.decode("utf-8", "surrogateescape")


def finish_journals(storage: Storage, warn: Callable[[str], None]) -> list[Work]:
    """Finish every restore whose journal the storage holds (unpack --finish): what each did.
    What an interrupted restore set aside goes first (each one said to `warn`)."""
    for key in storage.sweep_leftovers():
        warn(f"{storage.url}/{key}: removed what an interrupted restore had set aside")
    finished = []
    for prefix in journals(storage):
        try:
            work = read_journal(storage, prefix)
        except MissingObject:
            continue  # finished meanwhile
        finish(storage, work, resumed=True)
        finished.append(work)
    return finished
