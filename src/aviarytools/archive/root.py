"""Whether a storage root can be Aviary's: a pack of the wrong folder must fail, not succeed empty.

What Aviary keeps under its root (../shared/aviary-format.md): on a folder, its DATA_DIR, with
aviary.db (SQLite), users/<user id>/pdfs/... (documents), users/<user id>/rmapi/ (a legacy
pairing), backups/ and temp/; in a bucket, users/ and backups/ at its root; a single-user
installation's documents under pdfs/.  So a root whose first level holds folders named by user
ids, with pdfs/ inside, is Aviary's users/ folder itself (given one level too deep); and a root
with no document at all, while the database has document rows, is not the installation's.  A
single-user root with no pdfs/ but .pdf or .epub files (what Aviary's own move to multi-user
takes for documents) is the documents folder itself; one with users/<user id>/pdfs/ is a
multi-user installation's.
"""

from ..errors import AviaryError
from ..storage import Storage
from . import layout

LOOKED_AT = 10_000  # keys read to tell what an empty root holds instead


def check_root(storage: Storage, document_rows: int, users: int) -> None:
    """Raise, naming the likely mistake, if `storage`, where no document was found under users/,
    cannot be the root of the installation whose database has `document_rows` documents rows
    of `users` users."""
    holds = _what_it_holds(storage)
    if holds == "users":
        raise AviaryError(f"{storage.url}: holds folders named by user ids (<user id>/pdfs/...) but no users/:"
                          f" this is Aviary's users folder itself; give the root above it ({_above(storage)})")
    if not document_rows:
        return  # a fresh installation: no documents yet
    found = {"pdfs": "holds pdfs/ but no users/ (a single-user installation? see pack --single-user)",
             "other": "holds no document under users/<user id>/pdfs/", "nothing": "holds nothing"}[holds]
    raise AviaryError(
        f"{storage.url}: {found}, while the database has {document_rows} documents rows of {users}"
        f" user{'s' if users != 1 else ''}: not Aviary's storage root? Expected users/<user id>/pdfs/..."
        " there (Aviary's DATA_DIR, or the root of its bucket); --allow-empty-storage packs it without documents")


def _what_it_holds(storage: Storage) -> str:
    """"users" (folders named by user ids holding pdfs/), "pdfs", "other" or "nothing"."""
    if not storage.exists():
        return "nothing"
    seen = "nothing"
    for count, info in enumerate(storage.list("")):
        parts = info.key.split("/")
        if len(parts) >= 3 and layout.is_uuid(parts[0].lower()) and parts[1] == "pdfs":
            return "users"
        if parts[0] == "pdfs" and len(parts) > 1:
            seen = "pdfs"
        elif seen == "nothing":
            seen = "other"
        if count >= LOOKED_AT:
            break
    return seen


def check_single_user_root(storage: Storage, prefix: str) -> None:
    """Raise, naming the likely mistake, if `storage`, where nothing was found under `prefix`
    (pdfs/), holds a multi-user installation's documents or is the documents folder itself."""
    if not storage.exists():
        return
    for count, info in enumerate(storage.list("")):
        if layout.document_of_key(info.key) is not None:
            raise AviaryError(f"{storage.url}: no {prefix} but users/<user id>/pdfs/...: a multi-user installation's"
                              " storage; pack it without --single-user")
        if info.key.lower().endswith((".pdf", ".epub")):
            raise AviaryError(f"{storage.url}: no {prefix} but documents ({info.key}): this is the documents folder"
                              f" itself; give the folder above it ({_above(storage)}), or set PDF_DIR={storage.url} without"
                              " --storage; --allow-empty-storage packs it without documents")
        if count >= LOOKED_AT:
            return


def _above(storage: Storage) -> str:
    """How to name the folder (or bucket) that holds the storage's root."""
    path = storage.url.split("://", 1)[-1]
    parent = storage.url.rsplit("/", 1)[0] or "/" if "/" in path.rstrip("/") else None
    return f"--storage {parent}" if parent else "the folder or bucket that holds it"
