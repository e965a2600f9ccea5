"""doctor: check a live installation, or hold it against an archive after a restore.

check_installation: the database (integrity, orphan rows, duplicates in
unique columns), the storage (users' folders, layout, empty documents, and
with `deep` every object read end to end), and information (expired
sessions and API keys, documents per user).

compare: the live installation against an archive (see against.py).
"""

import time
from typing import Iterator

from ..db import Database
from ..storage import Storage
from .against import compare
from .database import check_database, document_rows, user_names
from ..findings import INFO, PROBLEM, WARNING, Finding, info
from .storage import StorageTally, UserFiles, check_storage

__all__ = ["INFO", "PROBLEM", "WARNING", "Finding", "check_installation", "compare"]


def check_installation(db: Database, storage: Storage | None, *, deep: bool = False,
                       now_ns: int | None = None,
                       progress=None) -> Iterator[Finding]:
    """Every problem found in the database and the storage, then information."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    with db.snapshot():
        users = user_names(db)
        yield from check_database(db, now_ns)
        rows = document_rows(db)
    tally = StorageTally()
    if storage is not None:
        yield from check_storage(storage, users, tally, deep=deep, progress=progress)
    for user_id, name in sorted(users.items(), key=lambda item: (item[1], item[0])):
        files = tally.users.get(user_id, UserFiles())
        count, size = rows.get(user_id, (0, 0))
        stored = f"{files.documents} documents ({files.bytes} bytes) in storage" if storage is not None else ""
        yield info("user-documents", f"{name}: {stored}{', ' if stored else ''}{count} documents rows"
                   f" ({size} bytes by file_size)", user_id)
