"""Whether Aviary's own admin page (Backup & Restore) may have an archive of ours.

Aviary's restore (../shared/aviary-format.md, "How Aviary restores") checks only that
metadata.json decodes into its struct.  Then it clears the users table, whose ON DELETE
CASCADE empties every table that names a user, imports the tables the archive has, and,
when the archive has a filesystem/ folder, deletes every document of every user of the
restored database before copying in the archive's.  So an archive that lacks users, or a
table that cascades from users, or that carries blank secrets, makes Aviary delete what it
cannot bring back.  Such an archive gets a users_exported that is not a list of ids (a
string naming its kind), and Aviary's decoder refuses it before touching anything.

`refusal` is the one rule: pack writes by it, and info and verify read by it.
"""

from .. import schema
from . import layout

# The tables Aviary's restore empties by clearing users (the job tables aside: never packed).
CASCADED = tuple(sorted(t.name for t in schema.DATA_TABLES
                        if any(fk.parent == "users" and fk.on_delete_cascade for fk in t.foreign_keys)))


def refusal(ours: dict) -> tuple[str, str] | None:
    """(the users_exported mark, why Aviary's admin page would lose data) for an archive of
    pack whose metadata.json's `aviarytools` object is `ours` (the options it was packed
    with); None when Aviary restores it as well as it restores its own (full, --no-files,
    --no-db, or leaving out tables that nothing cascades from)."""
    if isinstance(ours.get("single_user"), dict):
        return layout.SINGLE_USER_MARK, "a single-user archive: Aviary has no user to give it to"
    incremental = ours.get("incremental")
    if isinstance(incremental, dict) and incremental.get("level"):
        return layout.INCREMENTAL_MARK, ("an incremental holds only what changed: Aviary would delete every"
                                         " document it does not carry")
    if ours.get("users_only"):
        return layout.PER_USER_MARK, "a per-user archive: Aviary would delete every other user, rows and documents"
    if ours.get("redacted"):
        return layout.REDACTED_MARK, ("a redacted archive: Aviary would restore empty passwords and key and"
                                      " session hashes")
    tables = ours.get("table_rows")
    if ours.get("database") and isinstance(tables, dict):
        lacking = [t for t in ("users", *CASCADED) if t not in tables]
        if lacking:
            return layout.TABLES_MARK, (f"it lacks {', '.join(lacking)}: Aviary clears users, and so every table"
                                        " that cascades from it, and could not bring them back")
    return None


def kind(metadata: dict) -> str:
    """What an archive is, in words (info and verify say it)."""
    ours = layout.ours(metadata)
    if not ours:
        return "Aviary's own backup"
    if isinstance(ours.get("single_user"), dict):
        return "single-user (pack --single-user)"
    parts = []
    incremental = ours.get("incremental")
    if isinstance(incremental, dict):
        level = incremental.get("level")
        parts.append(f"incremental level {level} (pack -g)" if level else "full, level 0 of a chain (pack -g)")
    if ours.get("users_only"):
        parts.append("per-user (pack --user)")
    if ours.get("database") is False:
        parts.append("documents only (pack --no-db)")
    if ours.get("files") is False:
        parts.append("database only (pack --no-files)")
    tables = ours.get("table_rows")
    if ours.get("database") and isinstance(tables, dict) and not ours.get("users_only"):
        left_out = [t.name for t in schema.DATA_TABLES if t.name not in tables]
        if left_out:
            parts.append(f"without {', '.join(left_out)} (pack --tables/--exclude-tables)")
    if ours.get("redacted"):
        parts.append("redacted (pack --redact)")
    return ", ".join(parts) or "full"


def verdict(metadata: dict) -> str:
    """Whether Aviary's admin page restores the archive, in words."""
    refused = refusal(layout.ours(metadata))
    if refused is None:
        return "restores it (with Aviary's own losses)"
    return f"refuses it (users_exported is {refused[0]!r}, not a list): {refused[1]}"


def describe(metadata: dict, compression=None) -> str:
    """The line info and verify print: the archive's kind, and what Aviary's admin page does.
    `compression` is the archive's format (tar.compression's), None for a plain tar: the page
    reads gzip only, so any other compression is refused before the metadata is looked at."""
    if compression is not None and compression.name != "gzip":
        return (f"{kind(metadata)}; Aviary's admin page refuses it: {compression.described}: it reads only gzip"
                f" archives (pack -z, or '{compression.decode} | gzip')")
    return f"{kind(metadata)}; Aviary's admin page {verdict(metadata)}"
