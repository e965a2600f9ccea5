"""verify: check an archive in one streaming pass.

Every check is the archive walk's own (walk.py): structure and truncation,
metadata well formed and first (last, in an archive of Aviary v1.4.0 to
v1.5.3), every table a JSON array of objects without a key twice,
checksums, metadata totals against content, and references
(every user a row or a document folder names is in users.json).  The same
rules stop a restore and an extraction, so what verify rejects never
restores.  verify adds only the age of the archive, when asked.
Memory grows with the number of users and files, never with file sizes.
"""

import time
from typing import BinaryIO, Iterator, NamedTuple

from ..errors import ArchiveError
from ..findings import Finding, problem
from ..timestamps import NS_PER_SECOND, Duration, parse as parse_timestamp
from . import layout
from .walk import Consumer, Walk


class Totals(NamedTuple):
    """What an archive's walk counted, as far as it read: exact counts and bytes."""

    members: int  # tar members, of every kind
    documents: int
    document_bytes: int  # the documents' content
    rows: int  # of every table


class _Checks(Consumer):
    """Nothing to do with the members: the walk's checks are all verify does."""

    ignores = frozenset(layout.KINDS)  # every kind


def verify(stream: BinaryIO, source: str = "-", max_age: Duration | None = None,
           progress=None, about=None, totals=None) -> Iterator[Finding]:
    """Yield every problem found (and a few informational findings); `about` is given the
    metadata, if the archive has any, once the walk ends (also when damage stopped it: a
    chain's links are read from it), and `totals` what the walk counted (Totals)."""
    walk = Walk(stream, source, _Checks(), progress)
    try:
        yield from walk
    except ArchiveError as e:
        yield problem("structure", str(e))
        return
    finally:
        if about is not None and walk.metadata is not None:
            about(walk.metadata)
        if totals is not None:
            tally = walk.tally
            totals(Totals(tally.members, tally.documents, tally.document_bytes, sum(tally.table_rows.values())))
    if walk.metadata is not None:
        yield from _check_age(walk.metadata, max_age)


def _check_age(metadata: dict, max_age: Duration | None) -> Iterator[Finding]:
    if max_age is None:
        return
    try:
        exported = parse_timestamp(str(metadata.get("export_timestamp"))) / NS_PER_SECOND
    except ValueError:
        yield problem("age", "export_timestamp is not a timestamp", layout.METADATA)
        return
    age = time.time() - exported
    if age > max_age.seconds:
        yield problem("age", f"archive is {max_age.describe(age)} old (limit {max_age})", layout.METADATA)
