"""verify: check an archive in one streaming pass.

Structure and truncation (the tar reader), metadata first and well formed,
every table member a JSON array of objects, checksums, metadata totals
against content, and references: every user_id has a user, every
filesystem/documents/<uuid> folder has a user, no duplicate keys.
Memory grows with the number of users and files, never with file sizes;
duplicate keys are remembered as 64-bit hashes.
"""

import json
import time
from typing import BinaryIO, Iterator

import ijson
import xxhash

from .. import schema
from ..errors import ArchiveError
from ..findings import Finding
from ..rowinput import ijson_reason
from ..spill import SpillList, compare_digests
from ..tar import NameSet, member_name_problem
from ..timestamps import NS_PER_SECOND, parse as parse_timestamp
from . import layout
from .reading import HashedContent, buffered, members, metadata_problems, parse_checksum_member, read_metadata


class _Tally:
    """What the content holds, to hold metadata and references against."""

    def __init__(self):
        self.table_rows: dict[str, int] = {}
        self.documents = 0
        self.document_bytes = 0
        self.vanished = 0  # documents listed in metadata, deleted before pack read them
        self.vanished_bytes = 0
        self.users: set[str] = set()
        self.referenced: dict[str, str] = {}  # user id -> first member naming it
        self.digests = SpillList()  # (member name, digest)
        self.checksums: SpillList | None = None


def verify(stream: BinaryIO, source: str = "-", max_age_seconds: float | None = None) -> Iterator[Finding]:
    """Yield every problem found (and a few informational findings)."""
    tally = _Tally()
    metadata = None
    try:
        walk = members(stream, source)
        first = next(walk, None)
        if first is None:
            yield Finding("structure", "empty archive")
            return
        try:
            metadata, digest = read_metadata(first)
            tally.digests.append((layout.METADATA, digest))
        except ArchiveError as e:
            yield Finding("metadata", str(e), first.name)
        else:
            for problem in metadata_problems(metadata):
                yield Finding("metadata", problem, layout.METADATA)
        names = NameSet()
        names.add(first.name)
        for member in walk:
            yield from _check_member(member, names, tally)
    except ArchiveError as e:
        yield Finding("structure", str(e))
        return
    yield from _check_checksums(tally)
    if metadata is not None:
        yield from _check_totals(metadata, tally)
        yield from _check_age(metadata, max_age_seconds)
    yield from _check_references(tally)


def _check_member(member, names: NameSet, tally: _Tally) -> Iterator[Finding]:
    problem = member_name_problem(member)
    if problem:
        yield Finding("unsafe-member", problem, member.name)
        return
    if not names.add(member.name):
        yield Finding("duplicate-member", "appears more than once", member.name)
    entry = layout.classify(member.name, member.type)
    if member.type != "file":
        return
    content = HashedContent(member)
    if entry.kind == "checksums":
        tally.checksums = parse_checksum_member(content, member.name)
        return
    if entry.kind == "table":
        yield from _check_table(entry.table, content, tally)
    elif entry.kind == "vanished":
        yield from _check_vanished(content, member.name, tally)
    elif entry.kind == "document":
        tally.documents += 1
        tally.document_bytes += member.size
        tally.referenced.setdefault(entry.user_id, member.name)
    elif entry.kind == "unknown":
        yield Finding("unknown-member", "not part of Aviary's layout", member.name, "info")
    tally.digests.append((member.name, content.finish()))


def _check_table(table: str, content: HashedContent, tally: _Tally) -> Iterator[Finding]:
    member = layout.table_member(table)
    model = schema.BY_NAME.get(table)
    key_columns = model.primary_key if model else ()
    user_column = schema.user_column(table) if table != "users" else None
    if table == "system_settings":
        user_column = "updated_by"
    seen_keys: set[int] = set()
    rows = 0
    stream = buffered(content)
    if stream.peek(1)[:4].lstrip()[:1] == b"n":  # Aviary writes an empty table as null
        tally.table_rows[table] = 0
        return
    try:
        for rows, row in enumerate(ijson.items(stream, "item", use_float=True), 1):
            if not isinstance(row, dict):
                yield Finding("table", f"item {rows} is not a JSON object", member)
                continue
            if key_columns:
                key = xxhash.xxh3_64_intdigest("\x00".join(str(row.get(c)) for c in key_columns).encode())
                if key in seen_keys:
                    shown = ", ".join(f"{c}={row.get(c)}" for c in key_columns)
                    yield Finding("duplicate-key", f"item {rows}: duplicate key {shown}", member)
                seen_keys.add(key)
            if table == "users" and isinstance(row.get("id"), str):
                tally.users.add(row["id"].lower())
            owner = row.get(user_column) if user_column else None
            if isinstance(owner, str):
                tally.referenced.setdefault(owner.lower(), member)
    except ijson.JSONError as e:
        yield Finding("table", f"item {rows + 1}: invalid JSON: {ijson_reason(e)[:120]}", member)
    tally.table_rows[table] = rows


def _check_vanished(content: HashedContent, member: str, tally: _Tally) -> Iterator[Finding]:
    reader = buffered(content)
    for number, line in enumerate(iter(lambda: reader.readline(1 << 16), b""), 1):
        try:
            record = json.loads(line)
            size = record["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            yield Finding("vanished", f"line {number}: not a {{\"member\", \"size\"}} record", member)
            continue
        tally.vanished += 1
        tally.vanished_bytes += size
    if tally.vanished:
        yield Finding("vanished", f"{tally.vanished} document(s) were deleted while pack ran: not in the archive",
                      member, "info")


def _check_checksums(tally: _Tally) -> Iterator[Finding]:
    if tally.checksums is None:
        yield Finding("checksums", f"no {layout.CHECKSUMS} member: content not checked", None, "info")
        return
    for name, actual, listed in compare_digests(tally.checksums, tally.digests):
        if listed is None:
            yield Finding("checksums", "not listed in checksums", name)
        elif actual is None:
            yield Finding("checksums", "listed in checksums but not in the archive", name)
        else:
            yield Finding("checksums", f"XXH128 mismatch: archive has {actual}, checksums say {listed}", name)


def _check_totals(metadata: dict, tally: _Tally) -> Iterator[Finding]:
    expected = {
        "total_documents": tally.documents + tally.vanished,
        "total_size_bytes": tally.document_bytes + tally.vanished_bytes,
        "total_users": tally.table_rows.get("users", 0),
    }
    if "api_keys" in tally.table_rows or metadata.get("total_api_keys"):
        expected["total_api_keys"] = tally.table_rows.get("api_keys", 0)
    for field, actual in expected.items():
        claimed = metadata.get(field)
        if isinstance(claimed, int) and claimed != actual:
            yield Finding("totals", f"metadata says {field} {claimed}, the archive holds {actual}", layout.METADATA)
    ours = metadata.get("aviarytools", {})
    for table, claimed in (ours.get("table_rows", {}) if isinstance(ours, dict) else {}).items():
        actual = tally.table_rows.get(table)
        if actual != claimed:
            yield Finding("totals", f"metadata says {claimed} rows, the archive holds {actual}",
                          layout.table_member(table))


def _check_age(metadata: dict, max_age_seconds: float | None) -> Iterator[Finding]:
    if max_age_seconds is None:
        return
    try:
        exported = parse_timestamp(str(metadata.get("export_timestamp"))) / NS_PER_SECOND
    except ValueError:
        yield Finding("age", "export_timestamp is not a timestamp", layout.METADATA)
        return
    age = time.time() - exported
    if age > max_age_seconds:
        yield Finding("age", f"archive is {age / 3600:.1f} hours old (limit {max_age_seconds / 3600:g} hours)",
                      layout.METADATA)


def _check_references(tally: _Tally) -> Iterator[Finding]:
    if "users" not in tally.table_rows and not tally.users:
        return  # a --no-db or --tables archive: nothing to hold references against
    for user_id, member in sorted(tally.referenced.items()):
        if user_id not in tally.users:
            yield Finding("references", f"user {user_id} is not in database/users.json", member)
