"""Member names of an Aviary archive and the storage keys they stand for.

    metadata.json                                  first, always
    database/<table>.json                          one JSON array per table
    filesystem/documents/<user>/<path>             <-> users/<user>/pdfs/<path>
    filesystem/configs/<user>/rmapi.conf           old Aviary: -> users.rmapi_config
    vanished.ndjson                                documents deleted while pack ran (aviarytools only)
    checksums.xxh128                               last (aviarytools only)
"""

import json
import re
from dataclasses import dataclass

from ..tar import CHECKSUMS_NAME

METADATA = "metadata.json"
CHECKSUMS = CHECKSUMS_NAME
VANISHED = "vanished.ndjson"
DOCUMENTS_PREFIX = "filesystem/documents/"
CONFIGS_PREFIX = "filesystem/configs/"
STORAGE_USERS = "users/"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(text: str) -> bool:
    return bool(_UUID.fullmatch(text))


def table_member(table: str) -> str:
    return f"database/{table}.json"


def document_member(user_id: str, path: str) -> str:
    return f"{DOCUMENTS_PREFIX}{user_id}/{path}"


def storage_key(user_id: str, path: str) -> str:
    """Where Aviary keeps a user's document: users/<uuid>/pdfs/<path>."""
    return f"{STORAGE_USERS}{user_id}/pdfs/{path}"


def vanished_lines(vanished: list[tuple[str, int]]) -> bytes:
    """The vanished.ndjson member: one {"member", "size"} line per document that
    was listed (and counted in metadata.json) but deleted before it was read."""
    return b"".join(json.dumps({"member": m, "size": s}).encode() + b"\n" for m, s in vanished)


def document_of_key(key: str) -> tuple[str, str] | None:
    """(user id, path) of a storage key under users/<uuid>/pdfs/, else None."""
    parts = key.split("/", 3)
    if len(parts) == 4 and parts[0] == "users" and parts[2] == "pdfs" and is_uuid(parts[1]) and parts[3]:
        return parts[1], parts[3]
    return None


# Every kind of member `classify` tells apart; each consumer of an archive walk
# (walk.py) says what it does with each.
KINDS = ("metadata", "table", "document", "config", "vanished", "checksums", "dir", "ignored", "unknown")


@dataclass(frozen=True)
class Entry:
    """What an archive member is: its kind (one of KINDS) and what its name says."""

    kind: str
    table: str | None = None
    user_id: str | None = None
    path: str | None = None


def classify(name: str, member_type: str = "file") -> Entry:
    name = name.rstrip("/")
    base = name.rsplit("/", 1)[-1]
    if member_type == "dir":
        return Entry("dir")
    if base.startswith("._"):
        return Entry("ignored")  # AppleDouble files from a Mac
    if name == METADATA:
        return Entry("metadata")
    if name == CHECKSUMS:
        return Entry("checksums")
    if name == VANISHED:
        return Entry("vanished")
    if name.startswith("database/") and name.endswith(".json") and name.count("/") == 1:
        table = name[len("database/"):-len(".json")]
        return Entry("ignored", table) if table == "unknown" else Entry("table", table)
    for prefix, kind in ((DOCUMENTS_PREFIX, "document"), (CONFIGS_PREFIX, "config")):
        if name.startswith(prefix):
            user_id, _, path = name[len(prefix):].partition("/")
            if is_uuid(user_id) and path:
                return Entry(kind, user_id=user_id, path=path)
    return Entry("unknown")
