"""pack: a whole installation (tables + documents) as one tar stream.

The tar header of each member needs its size before its content, and
metadata.json must come first with true totals.  So everything is measured
before anything is written: each table is read twice inside one snapshot
(once to count rows and bytes, once to stream them; the snapshot guarantees
the same bytes), and the document listing is taken once and kept (a few
dozen bytes per file, never the files themselves).
"""

import json
from contextlib import closing
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

from .. import __version__, schema
from ..db import Database
from ..errors import AviaryError
from ..query import Query
from ..storage import ObjectInfo, Storage
from ..tar import TarWriter
from ..timestamps import NS_PER_SECOND, to_rfc3339
from . import layout


@dataclass(frozen=True)
class PackOptions:
    user_ids: tuple[str, ...] | None = None
    tables: tuple[str, ...] | None = None
    include_db: bool = True
    include_files: bool = True
    redact: bool = False


@dataclass
class PackSummary:
    table_rows: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    document_bytes: int = 0
    bytes_written: int = 0


def chosen_tables(db: Database, options: PackOptions) -> list[str]:
    """The data tables to pack: Aviary's (never its job tables), as asked."""
    present = set(db.table_names())
    names = [t.name for t in schema.DATA_TABLES if t.name in present]
    if options.tables is not None:
        unknown = set(options.tables) - set(names)
        if unknown:
            raise AviaryError(f"no such data table to pack: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in options.tables]
    if options.user_ids is not None:
        names = [n for n in names if schema.user_column(n)]
    return sorted(names)


def table_query(name: str, options: PackOptions) -> Query:
    redact = frozenset(schema.SECRETS.get(name, ())) if options.redact else frozenset()
    return Query(user_ids=options.user_ids, redact=redact)


def array_chunks(lines: Iterable[bytes], piece: int = 1 << 18) -> Iterator[bytes]:
    """A JSON array with one row per line: `[`, rows joined by `,`, `]`."""
    buffer = bytearray(b"[")
    first = True
    for line in lines:
        buffer += b"\n" if first else b",\n"
        buffer += line
        first = False
        if len(buffer) >= piece:
            yield bytes(buffer)
            buffer.clear()
    buffer += b"]\n" if first else b"\n]\n"
    yield bytes(buffer)


def measure_table(db: Database, name: str, query: Query) -> tuple[int, int]:
    """(rows, bytes) of a table's array member, from a first pass over it."""
    rows = size = 0
    for line in db.rows(db.table(name), query):
        rows += 1
        size += len(line)
    return rows, (3 if rows == 0 else size + 2 * (rows - 1) + 5)


def list_documents(storage: Storage, user_ids: tuple[str, ...] | None) -> list[ObjectInfo]:
    """Every document object (users/<uuid>/pdfs/...) of the chosen users."""
    prefixes = [f"users/{u}/pdfs/" for u in sorted(user_ids)] if user_ids is not None else ["users/"]
    found = []
    for prefix in prefixes:
        found.extend(o for o in storage.list(prefix) if layout.document_of_key(o.key))
    return found


def build_metadata(db: Database, options: PackOptions, counts: dict[str, int],
                   files: list[ObjectInfo], now_ns: int) -> dict:
    return {
        "aviary_version": f"aviarytools-{__version__}",
        "git_commit": "",
        "export_timestamp": to_rfc3339(now_ns - now_ns % NS_PER_SECOND),
        "database_type": db.dialect,
        "users_exported": list(options.user_ids) if options.user_ids is not None else None,
        "total_documents": len(files),
        "total_size_bytes": sum(f.size for f in files),
        "exported_tables": sorted(counts),
        "total_users": counts.get("users", 0),
        "total_api_keys": counts.get("api_keys", 0),
        "aviarytools": {
            "version": __version__,
            "table_rows": counts,
            "redacted": options.redact,
            "users_only": options.user_ids is not None,
            "database": options.include_db,
            "files": options.include_files,
        },
    }


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class _Dirs:
    """Writes each directory entry once, before the first member inside it."""

    def __init__(self, writer: TarWriter, mtime: float):
        self.writer, self.mtime, self.done = writer, mtime, []

    def before(self, member: str) -> None:
        for folder in _parents(member):
            if folder not in self.done:
                self.writer.add_dir(folder, self.mtime)
                self.done.append(folder)
        keep = set(_parents(member))
        self.done = [d for d in self.done if d in keep]


def pack(db: Database, storage: Storage | None, out: BinaryIO, options: PackOptions,
         now_ns: int | None = None) -> PackSummary:
    """Write the archive of `db` and `storage` to `out` (one consistent snapshot)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    mtime = now_ns / NS_PER_SECOND
    summary = PackSummary()
    with db.snapshot():
        if options.user_ids is not None:
            options = PackOptions(db.user_ids(options.user_ids), options.tables,
                                  options.include_db, options.include_files, options.redact)
        names = chosen_tables(db, options) if options.include_db else []
        queries = {n: table_query(n, options) for n in names}
        measured = {n: measure_table(db, n, queries[n]) for n in names}
        files = list_documents(storage, options.user_ids) if options.include_files and storage else []
        summary.table_rows = {n: rows for n, (rows, _) in measured.items()}
        metadata = build_metadata(db, options, summary.table_rows, files, now_ns)

        writer = TarWriter(out)
        writer.add_bytes(layout.METADATA, (json.dumps(metadata, indent=2) + "\n").encode(), mtime)
        dirs = _Dirs(writer, mtime)
        for name in names:
            member = layout.table_member(name)
            dirs.before(member)
            with closing(db.rows(db.table(name), queries[name])) as lines:
                writer.add_file(member, measured[name][1], array_chunks(lines), mtime)
        for info in files:
            user_id, path = layout.document_of_key(info.key)
            member = layout.document_member(user_id, path)
            dirs.before(member)
            writer.add_file(member, info.size, _changed_check(storage, info), info.mtime, 0o644)
            summary.documents += 1
            summary.document_bytes += info.size
        writer.write_checksums(mtime=mtime)
        writer.close()
    summary.bytes_written = writer.bytes_written
    return summary


def _changed_check(storage: Storage, info: ObjectInfo) -> Iterator[bytes]:
    """The object's bytes; a clear error if it changed size since the listing."""
    got = 0
    for chunk in storage.read(info.key):
        got += len(chunk)
        if got > info.size:
            break
        yield chunk
    if got != info.size:
        raise AviaryError(
            f"{storage.url}: {info.key}: changed while packing (listed {info.size} bytes,"
            f" read {'more' if got > info.size else got}); run pack again"
        )
