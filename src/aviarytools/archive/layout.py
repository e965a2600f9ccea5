"""Member names of an Aviary archive and the storage keys they stand for.

    metadata.json                                  first, always
    database/<table>.json                          one JSON array per table
    filesystem/documents/<user>/<path>             <-> users/<user>/pdfs/<path>
    filesystem/configs/<user>/rmapi.conf           old Aviary: -> users.rmapi_config
    vanished.ndjson                                documents deleted while pack ran (aviarytools only)
    checksums.xxh128                               last (aviarytools only)

A single-user installation's archive (pack --single-user) holds, instead of
database/ and filesystem/:

    single-user/pdfs/<path>                        <-> pdfs/<path> (PDF_DIR)
    single-user/rmapi.conf                         the device pairing
"""

import json
import re
import unicodedata
from dataclasses import dataclass

from ..errors import InputError
from ..tar import CHECKSUMS_NAME
from ..values import canonical_uuid

METADATA = "metadata.json"
CHECKSUMS = CHECKSUMS_NAME
VANISHED = "vanished.ndjson"
MANIFEST = "manifest.ndjson"  # an incremental's documents as they are (pack -g)
DOCUMENTS_PREFIX = "filesystem/documents/"
CONFIGS_PREFIX = "filesystem/configs/"
SINGLE_USER_DOCUMENTS = "single-user/pdfs/"
PAIRING = "single-user/rmapi.conf"
STORAGE_USERS = "users/"
SINGLE_USER_STORAGE = "pdfs/"  # a single-user installation's documents, as Aviary keeps them
# metadata.json's users_exported of a single-user archive: not a list, so that Aviary's
# admin page, whose Go struct wants a list of ids, refuses the archive before touching anything.
SINGLE_USER_MARK = "single-user"
INCREMENTAL_MARK = "incremental"  # the same, for an incremental (pack -g): not every document's bytes
PER_USER_MARK = "per-user"  # the same, for pack --user (the users are aviarytools.users)
REDACTED_MARK = "redacted"  # the same, for pack --redact
TABLES_MARK = "partial-tables"  # the same, for a pack without users or a table that cascades from it
CARRIED_PREFIX = "incremental/documents/"  # an incremental's documents: not filesystem/, which Aviary wipes
BY_USERNAME = "by-username/"  # unpack -C --by-username: documents under their user's name
MAX_CONFIG_BYTES = 1 << 20  # an rmapi.conf (a device pairing) larger than this is not one

# Aviary v1.9.0's download links (EXPERIMENTAL_DOWNLOAD_LINK) keep transient copies under
# downloads/<64-hex token>/ in a single-user installation's documents folder: not documents.
_DOWNLOAD_COPY = re.compile(r"downloads/[0-9a-f]{64}/.+", re.DOTALL)
DOWNLOADS = "downloads/"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_uuid(text: str) -> bool:
    return bool(_UUID.fullmatch(text))


# The forms Go's uuid.Parse takes besides the canonical one, any case: 32 hex digits, {uuid},
# urn:uuid:uuid.  Aviary's restore takes such a folder name under filesystem/ as a user id.
_GO_UUID = re.compile(r"(?i:urn:uuid:)?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
                      r"|\{([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}"
                      r"|([0-9a-fA-F]{32})")


def user_folder_id(folder: str) -> str | None:
    """The user id an archive's folder name stands for, canonical (lower case, dashed), as
    Aviary's restore parses it; None if it is none."""
    if _UUID.fullmatch(folder):
        return folder
    match = _GO_UUID.fullmatch(folder)
    if match is None:
        return None
    return canonical_uuid(next(group for group in match.groups() if group))


def is_download_copy(path: str) -> bool:
    """Whether a path under a single-user installation's documents root is a download link's
    transient copy (downloads/<64-hex token>/<file>), which Aviary removes on its own."""
    return bool(_DOWNLOAD_COPY.fullmatch(path))


def ours(metadata: dict) -> dict:
    """metadata.json's `aviarytools` object, which Aviary ignores; empty in an archive Aviary wrote."""
    value = metadata.get("aviarytools")
    return value if isinstance(value, dict) else {}


def is_single_user(metadata: dict) -> bool:
    """An archive of pack --single-user (metadata.json's aviarytools.single_user)."""
    return isinstance(ours(metadata).get("single_user"), dict)


def table_member(table: str) -> str:
    return f"database/{table}.json"


def document_member(user_id: str, path: str) -> str:
    return f"{DOCUMENTS_PREFIX}{user_id}/{path}"


def storage_key(user_id: str, path: str) -> str:
    """Where Aviary keeps a user's document: users/<uuid>/pdfs/<path>."""
    return f"{STORAGE_USERS}{user_id}/pdfs/{path}"


def vanished_lines(vanished: list[tuple]) -> bytes:
    """The vanished.ndjson member: one {"member", "size"} line per document that was listed
    (and counted in metadata.json) but deleted before it was read, and with "why" (the error)
    per document that could not be read (no permission)."""
    return b"".join(json.dumps({"member": m, "size": s, **({"why": why[0]} if why else {})}).encode() + b"\n"
                    for m, s, *why in vanished)


def document_of_key(key: str) -> tuple[str, str] | None:
    """(user id, path) of a storage key under users/<uuid>/pdfs/, else None."""
    parts = key.split("/", 3)
    if len(parts) == 4 and parts[0] == "users" and parts[2] == "pdfs" and is_uuid(parts[1]) and parts[3]:
        return parts[1], parts[3]
    return None


# Every kind of member `classify` tells apart; each consumer of an archive walk
# (walk.py) says what it does with each.
KINDS = ("metadata", "table", "document", "config", "single_document", "pairing", "manifest",
         "carried_document", "vanished", "checksums", "dir", "ignored", "unknown")


@dataclass(frozen=True)
class Entry:
    """What an archive member is: its kind (one of KINDS) and what its name says."""

    kind: str
    table: str | None = None
    user_id: str | None = None  # canonical, whatever form the member's folder name has
    path: str | None = None
    folder: str | None = None  # the member's user folder where it is not the canonical id


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
    if name == PAIRING:
        return Entry("pairing")
    if name.startswith(SINGLE_USER_DOCUMENTS) and len(name) > len(SINGLE_USER_DOCUMENTS):
        return Entry("single_document", path=name[len(SINGLE_USER_DOCUMENTS):])
    if name == MANIFEST:
        return Entry("manifest")
    for prefix, kind in ((DOCUMENTS_PREFIX, "document"), (CONFIGS_PREFIX, "config"),
                         (CARRIED_PREFIX, "carried_document")):
        if name.startswith(prefix):
            folder, _, path = name[len(prefix):].partition("/")
            user_id = user_folder_id(folder)
            if user_id is not None and path:
                return Entry(kind, user_id=user_id, path=path, folder=None if folder == user_id else folder)
    return Entry("unknown")


def carried_member(user_id: str, path: str) -> str:
    return f"{CARRIED_PREFIX}{user_id}/{path}"


def single_user_member(path: str) -> str:
    return f"{SINGLE_USER_DOCUMENTS}{path}"


def username_folders(users: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """A folder name for each user (id -> username) of `unpack -C --by-username`, and why
    each that is not the username itself differs.

    A username is not a path: `/`, NUL and control characters are written as %XX (and `%`
    as %25), a leading `.` as %2E (no `..`, nothing hidden), an empty or overlong name
    falls back to the id, and users whose names fold to the same folder (case, Unicode
    normalization: as a macOS or Windows filesystem would) get `~` and the start of
    their id, so that no two users share a folder."""
    def escaped(char: str) -> str:
        if char in "/%" or not char.isprintable():
            return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))
        return char

    folders, why = {}, {}
    for user_id, name in users.items():
        folder = "".join(escaped(c) for c in name)
        if folder.startswith("."):
            folder = "%2E" + folder[1:]
        if folder != name:
            why[user_id] = "not a safe folder name"
        if not name or len(folder.encode("utf-8", "surrogatepass")) > 200:
            folder, why[user_id] = user_id, "empty or too long for a folder name"
        folders[user_id] = folder
    folded: dict[str, list[str]] = {}
    for user_id, folder in folders.items():
        folded.setdefault(unicodedata.normalize("NFC", folder).casefold(), []).append(user_id)
    for same in folded.values():
        if len(same) > 1:
            for user_id in same:
                folders[user_id] = f"{folders[user_id]}~{user_id[:8]}"
                why[user_id] = "another user's name folds to the same folder (case, accents)"
    notes = [f"{BY_USERNAME}{folders[user_id]}/: user {user_id}, named {users[user_id]!r}: {reason}"
             for user_id, reason in sorted(why.items(), key=lambda item: folders[item[0]])]
    return folders, notes


def canonical_ids(ids) -> tuple[str, ...] | None:
    """--user without a database: user ids only (a name needs the users table)."""
    if ids is None:
        return None
    try:
        return tuple(canonical_uuid(i) for i in ids)
    except ValueError:
        raise InputError("without --db, --user takes user ids (uuids), not names") from None
