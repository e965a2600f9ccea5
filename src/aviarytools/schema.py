"""Aviary's tables, as its GORM models create them.

This is the schema `init-schema` creates and the one an archive's table
members are read against when no database is at hand (verify, cat, doctor).
Commands that talk to a live database introspect it instead, so columns a
newer Aviary adds still flow through.
"""

from .model import Column, ForeignKey, Kind, Table

U, T, B, I, F, TS = Kind.UUID, Kind.TEXT, Kind.BOOL, Kind.INT, Kind.FLOAT, Kind.TIMESTAMP
NOW = "CURRENT_TIMESTAMP"


def _c(name, kind, *, null=True, size=None, default=None):
    return Column(name, kind, nullable=null, max_length=size, default_sql=default)


def _fk(column, parent="users", cascade=True):
    return ForeignKey((column,), parent, ("id",), on_delete_cascade=cascade)


def _id():
    return _c("id", U, null=False)


USERS = Table(
    "users",
    (
        _id(),
        _c("username", T, null=False),
        _c("email", T, null=False),
        _c("password", T, null=False),
        _c("is_admin", B, default="false"),
        _c("is_active", B, default="true"),
        _c("rmapi_host", T),
        _c("default_rmdir", T, default="'/'"),
        _c("folder_refresh_percent", I, default="0"),
        _c("coverpage_setting", T),
        _c("contrast_setting", T, default="'none'"),
        _c("conflict_resolution", T, default="'abort'"),
        _c("folder_depth_limit", I, default="0"),
        _c("folder_exclusion_list", T),
        _c("page_resolution", T),
        _c("page_dpi", F),
        _c("conversion_output_format", T, default="'epub'"),
        _c("rmapi_config", T),
        _c("pdf_background_removal", B),
        _c("experimental_download_link", B),
        _c("reset_token", T),
        _c("reset_token_expires", TS),
        _c("oidc_subject", T),
        _c("created_at", TS),
        _c("updated_at", TS),
        _c("last_login", TS),
    ),
    primary_key=("id",),
    unique=(("username",), ("email",), ("oidc_subject",)),
    indexes=(("reset_token",),),
)

API_KEYS = Table(
    "api_keys",
    (
        _id(),
        _c("user_id", U, null=False),
        _c("name", T, null=False),
        _c("key_hash", T, null=False),
        _c("key_prefix", T, null=False, size=16),
        _c("is_active", B, default="true"),
        _c("last_used", TS),
        _c("expires_at", TS),
        _c("created_at", TS),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id"),),
    indexes=(("user_id",), ("key_hash",)),
)

USER_SESSIONS = Table(
    "user_sessions",
    (
        _id(),
        _c("user_id", U, null=False),
        _c("token_hash", T, null=False),
        _c("expires_at", TS, null=False),
        _c("created_at", TS),
        _c("last_used", TS, default=NOW),
        _c("user_agent", T),
        _c("ip_address", T, size=45),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id"),),
    indexes=(("user_id",), ("token_hash",)),
)

USER_FOLDERS_CACHE = Table(
    "user_folders_cache",
    (
        _id(),
        _c("user_id", U, null=False),
        _c("folder_path", T, null=False, size=1000),
        _c("folder_data", T),
        _c("last_updated", TS, default=NOW),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id"),),
    unique=(("user_id", "folder_path"),),
    indexes=(("user_id",),),
)

DOCUMENTS = Table(
    "documents",
    (
        _id(),
        _c("user_id", U, null=False),
        _c("document_name", T, null=False),
        _c("local_path", T, size=1000),
        _c("remote_path", T, size=1000),
        _c("document_type", T, size=50),
        _c("file_size", I),
        _c("status", T, size=50, default="'uploaded'"),
        _c("upload_date", TS, default=NOW),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("user_id"),),
    indexes=(("user_id",),),
)

SYSTEM_SETTINGS = Table(
    "system_settings",
    (
        _c("key", T, null=False),
        _c("value", T),
        _c("description", T),
        _c("updated_at", TS, default=NOW),
        _c("updated_by", U),
    ),
    primary_key=("key",),
    foreign_keys=(_fk("updated_by", cascade=False),),
)

LOGIN_ATTEMPTS = Table(
    "login_attempts",
    (
        _id(),
        _c("ip_address", T, null=False, size=45),
        _c("username", T),
        _c("success", B, default="false"),
        _c("attempted_at", TS, default=NOW),
        _c("user_agent", T),
    ),
    primary_key=("id",),
    indexes=(("ip_address",), ("username",), ("attempted_at",)),
)

BACKUP_JOBS = Table(
    "backup_jobs",
    (
        _id(),
        _c("admin_user_id", U, null=False),
        _c("status", T, null=False, size=50, default="'pending'"),
        _c("progress", I, default="0"),
        _c("include_files", B, default="true"),
        _c("include_configs", B, default="true"),
        _c("user_ids", T),
        _c("file_path", T, size=1000),
        _c("filename", T, size=255),
        _c("file_size", I),
        _c("error_message", T),
        _c("started_at", TS),
        _c("completed_at", TS),
        _c("expires_at", TS),
        _c("created_at", TS),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("admin_user_id"),),
    indexes=(("admin_user_id",),),
)

RESTORE_UPLOADS = Table(
    "restore_uploads",
    (
        _id(),
        _c("admin_user_id", U, null=False),
        _c("filename", T, null=False, size=255),
        _c("file_path", T, null=False, size=1000),
        _c("file_size", I),
        _c("status", T, null=False, size=50, default="'uploaded'"),
        _c("expires_at", TS, null=False),
        _c("created_at", TS),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("admin_user_id"),),
    indexes=(("admin_user_id",),),
)

RESTORE_EXTRACTION_JOBS = Table(
    "restore_extraction_jobs",
    (
        _id(),
        _c("admin_user_id", U, null=False),
        _c("restore_upload_id", U, null=False),
        _c("status", T, null=False, size=50, default="'pending'"),
        _c("progress", I, default="0"),
        _c("status_message", T),
        _c("error_message", T),
        _c("extracted_path", T, size=1000),
        _c("started_at", TS),
        _c("completed_at", TS),
        _c("created_at", TS),
    ),
    primary_key=("id",),
    foreign_keys=(_fk("admin_user_id"), _fk("restore_upload_id", "restore_uploads")),
    indexes=(("admin_user_id",), ("restore_upload_id",)),
)

# Parents before children: the order to create tables and to insert rows.
TABLES = (
    USERS,
    API_KEYS,
    USER_SESSIONS,
    USER_FOLDERS_CACHE,
    DOCUMENTS,
    SYSTEM_SETTINGS,
    LOGIN_ATTEMPTS,
    BACKUP_JOBS,
    RESTORE_UPLOADS,
    RESTORE_EXTRACTION_JOBS,
)
BY_NAME = {t.name: t for t in TABLES}

# Aviary's job bookkeeping: never packed, never restored.
TRANSIENT = frozenset(("backup_jobs", "restore_uploads", "restore_extraction_jobs"))
DATA_TABLES = tuple(t for t in TABLES if t.name not in TRANSIENT)

# The column naming the user a row belongs to, for --user.
USER_COLUMN = {
    "users": "id",
    "api_keys": "user_id",
    "user_sessions": "user_id",
    "user_folders_cache": "user_id",
    "documents": "user_id",
}

# Columns Aviary once made and never reads now: AutoMigrate drops no column, so a database
# first created by v1.4.0 still has users.o_id_c_subject (v1.4.1 renamed it oidc_subject).
# A restore into a table without such a column drops its values with a warning: nothing is lost.
LEGACY_COLUMNS = {
    ("users", "o_id_c_subject"): "Aviary v1.4.0's name for oidc_subject (renamed in v1.4.1), never read since",
}

# Columns that `pack --redact` leaves out of an export: they let someone in.
SECRETS = {
    "users": ("password", "rmapi_config", "reset_token"),
    "api_keys": ("key_hash",),
    "user_sessions": ("token_hash",),
}


def user_column(table_name: str) -> str | None:
    """The column naming a row's user, for tables that belong to users."""
    return USER_COLUMN.get(table_name)


def user_references(table: Table) -> tuple[ForeignKey, ...]:
    """Aviary's references from `table` (as a database has it) to users.  pack holds each
    against the snapshot's users: a row whose cascading reference names no user is left
    out (Aviary's cascade would have deleted it, and verify refuses it), a reference that
    does not cascade (system_settings.updated_by) is packed as null, as Aviary's own
    restore sets it."""
    model = BY_NAME.get(table.name)
    return tuple(fk for fk in (model.foreign_keys if model else ())
                 if fk.parent == "users" and len(fk.columns) == 1 and table.has_column(fk.columns[0]))


def dependency_order(names) -> list[str]:
    """`names` sorted parents first (Aviary's tables by their FKs, others last)."""
    rank = {t.name: i for i, t in enumerate(TABLES)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))
