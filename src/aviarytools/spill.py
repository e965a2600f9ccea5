"""Per-member bookkeeping that stays small however many members an archive has.

A reader of an archive remembers something about every member until the
end: its name (to catch a duplicate), its digest (checksums.xxh128 comes
last), a file to rename once everything checks out.  As Python strings and
dicts that was 1-2 KB per member: 100,000 documents took 110-185 MB.

- NameSet-like membership keeps 128-bit hashes of the strings, not the
  strings: about 70 bytes an item.
- SpillList keeps its first SPILL_AFTER items in memory and writes the rest
  to an anonymous temporary file, SPILL_BLOCK at a time, to be read back in
  order (also pack's document listing and an incremental's manifest).
- SeenDigests finds a table's duplicate keys: past SPILL_AFTER rows their digests go to a
  temporary SQLite table, a block at a time (a set of 280,000 held 27 MB).
- compare_digests matches the digests read against those checksums.xxh128
  lists; spilled, it joins them in a temporary SQLite database.

AVIARY_SPILL_AFTER (an item count) moves the threshold: the tests set it low
to run every command through the spilled path.
"""

from __future__ import annotations

import marshal
import os
from collections.abc import Iterator

import xxhash

SPILL_AFTER = int(os.environ.get("AVIARY_SPILL_AFTER", "20000"))
# Items marshalled as one list, read back whole with marshal.loads: marshal.load from a file
# reads it a field at a time, and an item at a time took 2.3 us of the 14 a level 1 spent on each
# of 100,000 unchanged documents (a block of them read so, 1.4 us; with loads, 0.1 us).
SPILL_BLOCK = 1024
_LENGTH = 4  # bytes of the length before each block
JOIN_CACHE_KIB = 2048  # SQLite's page cache while joining spilled digests (more was slower)


class HashSet:
    """A set of strings held as their 128-bit hashes (the chance that two of a
    million items share one: about 1 in 10^26)."""

    def __init__(self):
        self._hashes: set[int] = set()

    def add(self, text: str) -> bool:
        """Add `text`; False if it was there already."""
        h = _hash(text)
        if h in self._hashes:
            return False
        self._hashes.add(h)
        return True

    def __contains__(self, text: str) -> bool:
        return _hash(text) in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)


class SeenDigests:
    """64-bit digests (of a table's row keys), to find each one seen before: a set in memory
    for the first `limit` (SPILL_AFTER), then a table in a private temporary SQLite database,
    SPILL_BLOCK at a time, so that a table of millions of rows holds no set of millions of
    integers (about 90 bytes each).  add() and end() return the notes given with the digests
    found again: at once while in memory, a block later once spilled."""

    def __init__(self, limit: int | None = None):
        self._limit = SPILL_AFTER if limit is None else limit
        self._memory: set[int] = set()
        self._db = None
        self._block: list[tuple[int, int, object]] = []  # (digest, block number, note) not written yet
        self._blocks = 0

    def add(self, digest: int, note) -> list:
        if self._db is None:
            if digest in self._memory:
                return [note]
            self._memory.add(digest)
            if len(self._memory) > self._limit:
                self._spill()
            return []
        self._block.append((digest - (1 << 63), self._blocks, note))  # a signed 64-bit SQLite integer
        return self._write() if len(self._block) >= SPILL_BLOCK else []

    def end(self) -> list:
        """The notes of the digests found again that add() has not returned yet; the database gone."""
        repeated = self._write() if self._block else []
        if self._db is not None:
            self._db.close()
            self._db = None
        self._memory = set()
        return repeated

    def _spill(self) -> None:
        import sqlite3  # here: only tables of tens of thousands of rows get this far

        self._db = sqlite3.connect("", isolation_level=None)  # "": a private temporary file, gone on close
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute(f"PRAGMA cache_size = -{JOIN_CACHE_KIB}")
        self._db.execute("CREATE TABLE seen (h INTEGER PRIMARY KEY, block INTEGER) WITHOUT ROWID")
        self._db.executemany("INSERT INTO seen VALUES (?, -1)", ((d - (1 << 63),) for d in self._memory))
        self._memory = set()

    def _write(self) -> list:
        """The block into the table; where fewer rows went in than the block holds, the notes of
        the digests there before it or twice in it (rare: the slow way is fine)."""
        block, self._block = self._block, []
        db, number = self._db, self._blocks
        self._blocks += 1
        before = db.total_changes
        # In digest order: the block's inserts then walk the tree once instead of landing on a
        # random page each (restore of 200,000 rows: SeenDigests 23 % of the profile before, 18 % after; 7.0 s down to 5.9 s).
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", sorted((h, n) for h, n, _ in block))
        if db.total_changes - before == len(block):
            return []
        earlier = {h for (h,) in db.execute(
            "SELECT h FROM seen WHERE block < ? AND h IN (SELECT value FROM json_each(?))",
            (number, "[" + ",".join(str(h) for h, _, _ in block) + "]"))}
        repeated, first = [], set()
        for h, _, note in block:
            if h in earlier or h in first:
                repeated.append(note)
            first.add(h)
        return repeated


class SpillList:
    """Tuples of strings and numbers, appended and read back in order; past
    `limit` items they go to a temporary file (deleted when closed, or at exit)."""

    def __init__(self, limit: int | None = None):
        self._limit = SPILL_AFTER if limit is None else limit
        self._memory: list[tuple[str, ...]] = []  # every item, or (spilled) those not written yet
        self._file = None
        self._blocks = 0  # written to the file
        self._count = 0

    def append(self, item: tuple[str, ...]) -> None:
        self._count += 1
        self._memory.append(item)
        if self._file is None:
            if len(self._memory) > self._limit:
                self._spill()
        elif len(self._memory) >= SPILL_BLOCK:
            self._write_block(self._memory)
            self._memory = []

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        tail = list(self._memory)  # a copy: the consumer may clear() meanwhile
        if self._file is not None:
            self._file.flush()
            with open(os.dup(self._file.fileno()), "rb", buffering=1 << 16) as reader:
                reader.seek(0)
                for _ in range(self._blocks):
                    yield from marshal.loads(reader.read(int.from_bytes(reader.read(_LENGTH), "little")))
        yield from tail

    def __len__(self) -> int:
        return self._count

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def clear(self) -> None:
        self._memory = []
        if self._file is not None:
            self._file.close()
            self._file = None
        self._blocks = self._count = 0

    def _spill(self) -> None:
        import tempfile  # here: it takes a while to import, and most archives never spill

        self._file = tempfile.TemporaryFile(prefix="aviary-spill-", buffering=1 << 16)
        items = self._memory
        whole = len(items) - len(items) % SPILL_BLOCK
        for start in range(0, whole, SPILL_BLOCK):
            self._write_block(items[start:start + SPILL_BLOCK])
        self._memory = items[whole:]

    def _write_block(self, block: list) -> None:
        data = marshal.dumps(block)  # str as UTF-8 with surrogates kept: names come back as they went
        self._file.write(len(data).to_bytes(_LENGTH, "little"))
        self._file.write(data)
        self._blocks += 1


def sorted_records(records, limit: int | None = None) -> Iterator[tuple]:
    """Tuples sorted by their first item (a string, as UTF-8 bytes); past `limit`
    (SPILL_AFTER) records they are sorted in a private temporary SQLite database,
    so memory stays flat however many there are (an S3 listing of a million keys)."""
    limit = SPILL_AFTER if limit is None else limit
    records = iter(records)
    first = []
    for record in records:
        first.append(record)
        if len(first) > limit:
            break
    else:
        yield from sorted(first, key=lambda r: _b(r[0]))
        return
    import sqlite3  # here: only very large listings get this far

    db = sqlite3.connect("", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("CREATE TABLE r (k BLOB, record BLOB)")
        rows = ((_b(r[0]), marshal.dumps(r)) for chunk in (first, records) for r in chunk)
        db.executemany("INSERT INTO r VALUES (?, ?)", rows)
        for (record,) in db.execute("SELECT record FROM r ORDER BY k"):
            yield marshal.loads(record)
    finally:
        db.close()


def compare_digests(listed: SpillList, read: SpillList) -> Iterator[tuple[str, str | None, str | None]]:
    """(name, digest read, digest listed) for every name whose two differ: a
    listed name that was not read has None read, one read but not listed None
    listed.  Listed names come first, in the order of the list."""
    if not listed.spilled and not read.spilled:
        yield from _compare_in_memory(listed, read)
    else:
        yield from _compare_in_sqlite(listed, read)


def _compare_in_memory(listed, read):
    digests = dict(read)
    names = set()
    for name, expected in listed:
        names.add(name)
        actual = digests.get(name)
        if actual != expected:
            yield name, actual, expected
    for name, actual in digests.items():
        if name not in names:
            yield name, actual, None


def _compare_in_sqlite(listed, read):
    import sqlite3  # here: only archives of tens of thousands of members get this far

    db = sqlite3.connect("", isolation_level=None)  # "": a private temporary file, gone on close
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute(f"PRAGMA cache_size = -{JOIN_CACHE_KIB}")
        # Joined on a 64-bit hash of the name (a small integer index), then on the name itself.
        db.execute("CREATE TABLE listed (n INTEGER PRIMARY KEY, h INTEGER, name BLOB, digest TEXT)")
        db.execute("CREATE TABLE read (h INTEGER, name BLOB, digest TEXT)")
        db.executemany("INSERT INTO listed (h, name, digest) VALUES (?, ?, ?)", _hashed(listed))
        db.executemany("INSERT INTO read VALUES (?, ?, ?)", _hashed(read))
        db.execute("CREATE INDEX listed_h ON listed (h)")
        db.execute("CREATE INDEX read_h ON read (h)")
        differ = db.execute("SELECT l.name, r.digest, l.digest FROM listed AS l LEFT JOIN read AS r"
                            " ON r.h = l.h AND r.name = l.name WHERE r.digest IS NOT l.digest ORDER BY l.n")
        unlisted = db.execute("SELECT r.name, r.digest, NULL FROM read AS r WHERE NOT EXISTS"
                              " (SELECT 1 FROM listed AS l WHERE l.h = r.h AND l.name = r.name) ORDER BY r.rowid")
        for cursor in (differ, unlisted):
            for name, actual, expected in cursor:
                yield _s(name), actual, expected
    finally:
        db.close()


def _hashed(pairs):
    for name, digest in pairs:
        data = _b(name)
        yield xxhash.xxh3_64_intdigest(data) - (1 << 63), data, digest  # as a signed 64-bit SQLite integer


def _hash(text: str) -> int:
    return xxhash.xxh3_128_intdigest(_b(text))


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")
