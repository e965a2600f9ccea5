"""ls, cat and info: look inside an archive without extracting it."""

import json
from typing import BinaryIO, Iterator

import ijson

from .. import declared, schema, timestamps
from ..errors import ArchiveError, InputError
from ..rowinput import RowSource, ijson_reason
from ..values import encode_untyped, coerce, encode
from ..model import Table
from . import layout
from .reading import HashedContent, buffered, members, read_metadata


def archived_tables(metadata: dict) -> dict[str, Table]:
    """The tables an archive declares (metadata.json's aviarytools.schema; none in Aviary's own)."""
    return declared.tables_from_json(layout.ours(metadata).get("schema"), f"{layout.METADATA}: aviarytools.schema")


def listing(stream: BinaryIO, source: str = "-") -> Iterator[dict]:
    """One dict per member: path, type, size, mtime (RFC 3339), and for a document whose
    user is in the archive's users.json (which comes before the documents, in our layout
    and in Aviary's), "user": their username."""
    names: dict[str, str] = {}
    for member in members(stream, source):
        found = {
            "path": member.name,
            "type": member.type,
            "size": member.size,
            "mtime": timestamps.to_rfc3339(int(member.mtime) * timestamps.NS_PER_SECOND),
        }
        entry = layout.classify(member.name, member.type)
        if entry.kind == "table" and entry.table == "users" and member.type == "file":
            names.update(usernames(RowSource(buffered(HashedContent(member)), member.name)))
        elif entry.kind == "document" and entry.user_id in names:
            found["user"] = names[entry.user_id]
        yield found


def usernames(rows) -> Iterator[tuple[str, str]]:
    """(id, username) of each users row of (position, row) pairs that has both (up to a row
    that does not parse: a listing lists a damaged archive too)."""
    try:
        for _, row in rows:
            if isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("username"), str):
                yield row["id"].lower(), row["username"]
    except (InputError, ArchiveError):
        return


def info(stream: BinaryIO, source: str = "-", warn=None) -> dict:
    """metadata.json: the first member, as aviarytools and Aviary since v1.5.4 write it.
    Aviary v1.4.0 to v1.5.3 wrote it last: then the archive is read on to find it, and
    `warn` is told so (it takes a while, and the operator should know why)."""
    walk = members(stream, source)
    first = next(walk, None)
    if first is None:
        raise ArchiveError("empty archive")
    if first.name == layout.METADATA:
        return read_metadata(HashedContent(first))[0]
    if warn is not None:
        warn(f"{layout.METADATA} is not the first member (Aviary v1.4.0 to v1.5.3 wrote it last):"
             " reading the whole archive to find it")
    for member in walk:
        if member.name == layout.METADATA:
            return read_metadata(HashedContent(member))[0]
    raise ArchiveError(f"no {layout.METADATA} in the archive: not an Aviary backup")


def member_chunks(stream: BinaryIO, name: str, source: str = "-") -> Iterator[bytes]:
    """The bytes of one member, streamed; ArchiveError if there is none."""
    for member in members(stream, source):
        if member.name.rstrip("/") == name.rstrip("/"):
            if member.type != "file":
                raise ArchiveError(f"{name}: is a {member.type}, not a file")
            yield from member.chunks()
            return
    raise ArchiveError(f"{name}: no such member in the archive")


def canonical_line(model: Table | None, row: dict) -> bytes:
    """An archive row in canonical form (as dump-table prints it), values encoded by the
    kinds of `model`'s columns (keys it does not know as JSON gives them)."""
    parts = []
    known = set()
    for column in model.columns if model else ():
        if column.name in row:
            known.add(column.name)
            try:
                value = encode(column, coerce(column, row[column.name]))
            except ValueError as e:
                raise InputError(f"column {column.name}: {e}") from None
            parts.append(json.dumps(column.name, ensure_ascii=False) + ":" + value)
    for key, value in row.items():
        if key not in known:
            parts.append(json.dumps(key, ensure_ascii=False) + ":" + encode_untyped(value))
    return ("{" + ",".join(parts) + "}").encode()


def table_rows(stream: BinaryIO, name: str, source: str = "-") -> Iterator[bytes]:
    """A table member's rows as canonical NDJSON lines, streamed."""
    entry = layout.classify(name)
    if entry.kind != "table":
        raise ArchiveError(f"{name}: --ndjson needs a database/<table>.json member")
    model = schema.BY_NAME.get(entry.table)
    for member in members(stream, source):
        if member.name == layout.METADATA:
            model = declared.union(model, archived_tables(read_metadata(HashedContent(member))[0]).get(entry.table))
        if member.name == name:
            reader = buffered(HashedContent(member))
            if reader.peek(1).lstrip()[:1] == b"n":
                return
            try:
                for number, row in enumerate(ijson.items(reader, "item", use_float=True), 1):
                    if not isinstance(row, dict):
                        raise InputError(f"{name}: item {number}: not a JSON object")
                    try:
                        yield canonical_line(model, row)
                    except InputError as e:
                        raise InputError(f"{name}: item {number}, {e}") from None
            except ijson.JSONError as e:
                raise ArchiveError(f"{name}: invalid JSON: {ijson_reason(e)[:120]}") from None
            return
    raise ArchiveError(f"{name}: no such member in the archive")
