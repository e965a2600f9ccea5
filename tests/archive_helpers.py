"""What the archive tests share: snapshots of a database and a storage, pipes, S3 settings,
and archives written the way Aviary itself writes them."""

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from datetime import datetime, timedelta

import xxhash

import format_notes
from aviarytools import rows, sample
from aviarytools.db import connect
from aviarytools.rowinput import RowSource
from aviarytools.storage import open_storage
from helpers import AVIARY, DATA_TABLES, aviary


# --- what an installation holds -------------------------------------------------------------


def dump_tables(url: str, tables=DATA_TABLES) -> dict[str, bytes]:
    """dump-table's output (the very same code path) for every data table, in one process:
    the comparisons run often, and a command start costs most of a second."""
    db = connect(url)
    try:
        with db.snapshot():
            dumped = {}
            for table in tables:
                out = io.BytesIO()
                rows.write_lines(rows.dump(db, table), out)
                dumped[table] = out.getvalue()
            return dumped
    finally:
        db.close()


def objects(storage) -> dict[str, str]:
    """Every object of a storage (a folder path or a Storage) with its XXH128."""
    store = open_storage(str(storage)) if isinstance(storage, (str, os.PathLike)) else storage
    found = {}
    for info in store.list():
        hasher = xxhash.xxh3_128()
        for chunk in store.read(info.key):
            hasher.update(chunk)
        found[info.key] = hasher.hexdigest()
    return found


def state(url: str, storage) -> tuple[dict, dict]:
    """The whole installation, to compare before and after."""
    return dump_tables(url), objects(storage)


def installation(url: str, storage, **options) -> dict[str, list[dict]]:
    """Aviary's schema at `url`, sample rows in it and their document files in `storage`
    (a folder path or a Storage)."""
    db = connect(url, create=True)
    try:
        with db.transaction():
            db.create_schema()
        store = open_storage(str(storage)) if isinstance(storage, (str, os.PathLike)) else storage
        return sample.populate(db, store, **options)
    finally:
        db.close()


def load_rows(url: str, tables: dict[str, list[dict]]) -> None:
    """Aviary's schema at `url` holding exactly `tables` (a reference to compare with)."""
    db = connect(url, create=True)
    try:
        with db.transaction():
            db.create_schema()
        for name in DATA_TABLES:
            data = b"".join(json.dumps(r).encode() + b"\n" for r in tables.get(name, []))
            rows.load(db, name, RowSource(io.BytesIO(data)))
    finally:
        db.close()


def pack_here(url: str, storage, options=None):
    """pack in this process (a command start costs most of a second): (its summary, the archive)."""
    from aviarytools.archive.pack import PackOptions, pack

    out = io.BytesIO()
    db = connect(url)
    try:
        summary = pack(db, storage, out, options or PackOptions())
    finally:
        db.close()
    return summary, out.getvalue()


# --- S3 --------------------------------------------------------------------------------------


def s3_env(server) -> dict[str, str]:
    """Credentials as Aviary takes them: from the environment, never on the command line."""
    return {"S3_ACCESS_KEY_ID": server.access_key, "S3_SECRET_ACCESS_KEY": server.secret_key}


def s3_args(server, bucket: str) -> list[str]:
    return ["--storage", f"s3://{bucket}", "--s3-endpoint", server.endpoint, "--s3-path-style"]


def bucket_storage(server, bucket: str):
    return open_storage(f"s3://{bucket}", s3_endpoint=server.endpoint, s3_path_style=True,
                        s3_access_key=server.access_key, s3_secret_key=server.secret_key)


# --- commands --------------------------------------------------------------------------------


def clean_env(extra=None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AVIARY_", "DB_", "S3_", "DATA_DIR", "STORAGE_"))}
    env.update(extra or {})
    return env


def pipeline(*commands, env=None, stdin=None) -> list[subprocess.CompletedProcess]:
    """Run `A | B | ...`; a command starting with "aviary" runs this aviarytools.

    Returns one CompletedProcess per command (stderr each, stdout of the last).
    """
    procs, errors = [], []
    previous = stdin if stdin is not None else subprocess.DEVNULL
    for command in commands:
        argv = AVIARY + list(command[1:]) if command[0] == "aviary" else list(command)
        error = tempfile.TemporaryFile()
        proc = subprocess.Popen([str(a) for a in argv], stdin=previous, stdout=subprocess.PIPE,
                                stderr=error, env=clean_env(env))
        if procs:
            procs[-1].stdout.close()  # only the next command reads it now
        procs.append(proc)
        errors.append(error)
        previous = proc.stdout
    out = procs[-1].stdout.read()
    procs[-1].stdout.close()
    results = []
    for proc, error, command in zip(procs, errors, commands):
        proc.wait(timeout=120)
        error.seek(0)
        results.append(subprocess.CompletedProcess(command, proc.returncode, b"", error.read()))
        error.close()
    results[-1].stdout = out
    return results


def refused_by_every_reader(archive: bytes, expected: str, tmp_path) -> None:
    """verify, a restore (dry run or not) and `unpack -C` each refuse `archive`, saying
    `expected`, and leave the target as it was: no file of the archive's written."""
    checked = aviary("verify", input=archive)
    assert checked.returncode == 1 and expected in checked.stderr.decode(), checked.stderr.decode()

    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    installation(target, files, users=3, seed=11)
    before = state(target, files)
    for extra in (["--dry-run"], []):
        restored = aviary("unpack", "--db", target, "--storage", files, *extra, input=archive)
        assert restored.returncode == 1, (extra, restored.stderr.decode())
        assert expected in restored.stderr.decode()
        assert state(target, files) == before
        assert not [p for p in os.listdir(files) if p.startswith(".aviary-restore-")]

    extracted = aviary("unpack", "-C", tmp_path / "out", input=archive)
    assert extracted.returncode == 1 and expected in extracted.stderr.decode()
    assert not (tmp_path / "out").exists()  # a failed extraction removes the folders it made


def all_ok(results) -> bytes:
    for result in results:
        assert result.returncode == 0, (result.args, result.stderr.decode())
    return results[-1].stdout


# --- archives as Aviary writes them ------------------------------------------------------------


def go_json(value) -> bytes:
    """What Go's json.MarshalIndent(v, "", "  ") writes: keys sorted, <, > and & escaped,
    whole floats without a fraction."""
    text = json.dumps(_go_numbers(value), indent=2, sort_keys=True, ensure_ascii=False)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, "\\u%04x" % ord(char))
    return text.encode()


def _go_numbers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _go_numbers(v) for k, v in value.items()}
    return value


OFFSETS = ["Z", "+05:45", "-03:30", "+13:45"]


def go_time(text: str, offset: str) -> str:
    """A sample timestamp (`2025-07-27 10:11:12.123456789+00:00`) as Go's RFC 3339 with
    nanoseconds, shifted to `offset`.  Go's zero time stays in UTC, as Aviary stores it."""
    stamp, _, fraction = text.removesuffix("+00:00").partition(".")
    moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")
    fraction = fraction.rstrip("0")
    if moment.year == 1:
        offset = "Z"
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        moment += sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    m = moment  # strftime writes year 1 as "1"
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
            + (f".{fraction}" if fraction else "") + offset)


class _GoTarInfo(tarfile.TarInfo):
    """Go's archive/tar names a directory without the trailing slash Python adds."""

    def get_info(self):
        info = super().get_info()
        info["name"] = info["name"].rstrip("/")
        return info


def _walk(tree: dict, prefix: str = ""):
    """filepath.Walk's order: each folder's entries sorted by name, depth first."""
    for name in sorted(tree, key=str.encode):
        path = prefix + name
        if isinstance(tree[name], dict):
            yield path, None
            yield from _walk(tree[name], path + "/")
        else:
            yield path, tree[name]


def aviary_tar(metadata: dict, files: dict[str, bytes], mtime: int = 1753600000, metadata_last=False) -> bytes:
    """A gzip'd tar as Aviary's backup writes it: metadata.json first (last, as v1.4.0 to
    v1.5.3 wrote it, with `metadata_last`), then the staging folder walked in lexical order
    with directory entries, ended by two zero blocks only."""
    tree: dict = {}
    for path, data in files.items():
        *folders, base = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[base] = data
    buffer = io.BytesIO()
    tar = tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, tarinfo=_GoTarInfo)
    staged = list(_walk(tree))
    order = [*staged, ("metadata.json", go_json(metadata))] if metadata_last else [("metadata.json", go_json(metadata)), *staged]
    for path, data in order:
        info = _GoTarInfo(path)
        info.mtime, info.uname, info.gname = mtime, "", ""
        if data is None:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        else:
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    end = tar.offset
    tar.close()
    return gzip.compress(buffer.getvalue()[:end] + bytes(1024), mtime=0)


LEGACY_PAIRING = "[auth]\ndevicetoken=legacy-<pairing>&more\n"
_SAMPLE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00:00")


def as_aviary_rows(table_rows: list[dict], booleans=None) -> list[dict]:
    """Rows as Aviary's export writes them: RFC 3339 times with nanoseconds, at varied
    UTC offsets; `booleans` columns as true/false (else 0/1 as SQLite holds them)."""
    out = []
    for n, row in enumerate(table_rows):
        row = dict(row)
        for column, value in row.items():
            if isinstance(value, str) and _SAMPLE_TIME.fullmatch(value):
                row[column] = go_time(value, OFFSETS[n % len(OFFSETS)])
            elif column in (booleans or ()) and value is not None:
                row[column] = bool(value)
        out.append(row)
    return out


def aviary_made_archive(user_extras: dict | None = None) -> tuple[bytes, dict[str, list[dict]], dict[str, bytes]]:
    """An archive with every quirk of Aviary's, the rows it must restore to (login_attempts
    empty, the legacy pairing in users.rmapi_config) and the XXH128 of each object.
    `user_extras`: columns of a newer Aviary, added to every users row."""
    tables = sample.sample_rows(users=3)
    documents = dict(sample.document_files(tables))
    legacy = tables["users"][2]
    assert legacy["rmapi_config"] is None
    members = {
        "database/users.json": [dict(r, **(user_extras or {})) for r in as_aviary_rows(tables["users"])],
        "database/api_keys.json": as_aviary_rows(tables["api_keys"], booleans=("is_active",)),
        "database/user_sessions.json": as_aviary_rows(tables["user_sessions"]),
        "database/user_folders_cache.json": as_aviary_rows(tables["user_folders_cache"]),
        "database/documents.json": [dict(r, deleted_at=None) for r in as_aviary_rows(tables["documents"])],
        "database/system_settings.json": as_aviary_rows(tables["system_settings"]),
        "database/login_attempts.json": None,
        "database/unknown.json": [{"id": "5c0f3e1a-8d2b-4f6e-9a7c-1b2d3e4f5a6b", "status": "completed"}],
    }
    files = {name: go_json(rows) for name, rows in members.items()}
    files["database/._users.json"] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "
    files[f"filesystem/configs/{legacy['id']}/rmapi.conf"] = LEGACY_PAIRING.encode()
    for key, body in documents.items():
        user_id, path = key.removeprefix("users/").split("/pdfs/", 1)
        files[f"filesystem/documents/{user_id}/{path}"] = body
    first_user = tables["users"][0]["id"]
    files[f"filesystem/documents/{first_user}/._doc-0 ñ.pdf"] = b"\x00\x05\x16\x07AppleDouble"
    metadata = {
        "aviary_version": "v1.5.2", "git_commit": "3f2a9c1", "export_timestamp": "2025-07-27T10:11:12Z",
        "database_type": "sqlite", "users_exported": None,
        "total_documents": len(documents), "total_size_bytes": sum(map(len, documents.values())),
        "exported_tables": ["users", "system_settings", "api_keys", "user_sessions", "documents",
                            "user_folders_cache", "login_attempts", "unknown", "unknown", "unknown"],
        "total_users": 3, "total_api_keys": len(tables["api_keys"]),
    }
    legacy["rmapi_config"] = LEGACY_PAIRING
    tables["login_attempts"] = []
    hashes = {key: xxhash.xxh3_128_hexdigest(body) for key, body in documents.items()}
    return aviary_tar(metadata, files), tables, hashes


def old_aviary_archive(version: str = "v1.5.3", users: int = 3, docs_per_user: int = 3,
                       document_size: int | None = None) -> tuple[bytes, dict[str, list[dict]], dict[str, bytes]]:
    """An archive as Aviary `version` (v1.4.0 to v1.5.3) wrote it, built from the facts the
    project carries (format_notes): metadata.json last, without the totals those releases lacked;
    users.json without the columns later releases added; each pairing only as
    filesystem/configs/<uuid>/rmapi.conf.  Also the rows a complete restore gives (absent
    columns at their defaults, the pairing in users.rmapi_config) and each document's XXH128."""
    facts = format_notes.read_facts()
    assert facts["metadata_last"]["from"] <= version <= facts["metadata_last"]["to"]
    later = {c for c, release in facts["users_column_releases"].items() if format_notes.before(release, version)}
    tables = sample.sample_rows(users=users, docs_per_user=docs_per_user)
    for row in tables["documents"] if document_size else ():
        row["file_size"] = document_size
    documents = dict(sample.document_files(tables))
    booleans = {"users": ("is_admin", "is_active"), "api_keys": ("is_active",), "login_attempts": ("success",)}
    files = {f"database/{name}.json": go_json([{k: v for k, v in row.items() if name != "users" or k not in later}
                                              for row in as_aviary_rows(table_rows, booleans.get(name))])
             for name, table_rows in tables.items()}
    for user in tables["users"]:
        if user["rmapi_config"] is not None:
            files[f"filesystem/configs/{user['id']}/rmapi.conf"] = user["rmapi_config"].encode()
    for key, body in documents.items():
        user_id, path = key.removeprefix("users/").split("/pdfs/", 1)
        files[f"filesystem/documents/{user_id}/{path}"] = body
    configs = sum(len(body) for name, body in files.items() if name.startswith("filesystem/configs/"))
    values = {
        "aviary_version": version, "git_commit": "0" * 40, "export_timestamp": "2025-08-10T09:08:07.123456789Z",
        "database_type": "sqlite", "users_exported": [u["id"] for u in tables["users"]],
        "total_documents": len(documents), "total_size_bytes": sum(map(len, documents.values())) + configs,
        "exported_tables": list(tables),
    }
    lacks = facts["metadata_last"]["lacks"]
    metadata = {name: values[name] for name in facts["metadata_fields"] if name not in lacks}
    assert set(metadata) == set(values)
    columns = {c["name"]: c for c in facts["tables"]["users"]["columns"]}
    for user in tables["users"]:  # as the restore must leave them: the pairing from its file
        user.update({c: _default_of(columns[c]) for c in later if c != "rmapi_config"})
    hashes = {key: xxhash.xxh3_128_hexdigest(body) for key, body in documents.items()}
    return aviary_tar(metadata, files, metadata_last=True), tables, hashes


def _default_of(column: dict):
    """A column's default as a JSON value ('epub' -> "epub", 0 -> 0), None where it has none."""
    default = column.get("default")
    if default is None:
        return None
    return default[1:-1] if default.startswith("'") else json.loads(default)


# --- what Aviary's own admin page does with an archive (../shared/aviary-format.md) -----------

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
# metadata.json's fields as the format notes describe them, as Go's decoder takes them.
AVIARY_METADATA = {"aviary_version": str, "git_commit": str, "export_timestamp": "time", "database_type": str,
                   "users_exported": [str], "total_documents": int, "total_size_bytes": int,
                   "exported_tables": [str], "total_users": int, "total_api_keys": int}


def decodes_into_aviarys_struct(metadata: dict) -> bool:
    """Whether Go's json.Unmarshal into Aviary's metadata struct succeeds (null leaves a field
    alone; a value of another type is an error, and Aviary then refuses the archive)."""
    for name, kind in AVIARY_METADATA.items():
        value = metadata.get(name)
        if value is None:
            continue
        if kind == "time":
            ok_value = isinstance(value, str) and bool(_RFC3339.fullmatch(value))
        elif isinstance(kind, list):
            ok_value = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok_value = isinstance(value, kind) and not isinstance(value, bool)
        if not ok_value:
            return False
    return True


# The model of Aviary's admin page restore, database and files (the notes' "How Aviary restores,
# and where it loses data").  An installation is (tables: name -> rows, objects: key -> bytes).

AVIARY_RESTORE_ORDER = ("users", "system_settings", "api_keys", "user_sessions", "documents",
                        "user_folders_cache", "login_attempts")
# ON DELETE CASCADE from users (the job tables aside: never in an archive of ours).
AVIARY_CASCADED = ("api_keys", "user_sessions", "documents", "user_folders_cache")
AVIARY_DROPPED_USER_COLUMNS = ("oidc_subject", "conflict_resolution", "folder_depth_limit", "folder_exclusion_list",
                               "page_resolution", "page_dpi", "conversion_output_format", "pdf_background_removal",
                               "experimental_download_link")
AVIARY_KEYS = {"system_settings": "key"}  # every other table: id
# Row values Aviary's Go structs read: a boolean must be JSON true/false, a time RFC 3339.
AVIARY_BOOLEANS = {"users": ("is_admin", "is_active"), "api_keys": ("is_active",), "login_attempts": ("success",)}
AVIARY_TIMES = {"users": ("reset_token_expires", "created_at", "updated_at", "last_login"),
                "api_keys": ("last_used", "expires_at", "created_at"),
                "user_sessions": ("expires_at", "created_at", "last_used"),
                "user_folders_cache": ("last_updated",), "documents": ("upload_date",),
                "system_settings": ("updated_at",), "login_attempts": ("attempted_at",)}


class AviaryAborted(Exception):
    """Aviary's restore stopped half-way (the state it left is `state`)."""

    def __init__(self, message, state):
        super().__init__(message)
        self.state = state


def _aviary_reads(table: str, row: dict) -> str | None:
    """Why Aviary's struct would misread a row (None: it reads it)."""
    for column in AVIARY_BOOLEANS.get(table, ()):
        if row.get(column) is not None and not isinstance(row[column], bool):
            return f"{table}.{column}: {row[column]!r} is not a JSON boolean"
    for column in AVIARY_TIMES.get(table, ()):
        value = row.get(column)
        if value is not None and not (isinstance(value, str) and _RFC3339.fullmatch(value)):
            return f"{table}.{column}: {value!r} is not RFC 3339"
    return None


def _as_aviary_imports(table: str, row: dict) -> dict:
    row = dict(row)
    if table == "users":
        for column in AVIARY_DROPPED_USER_COLUMNS:
            row.pop(column, None)  # the column's default at Aviary's next start
        row["is_active"] = True
    if table == "api_keys":
        row["key_hash"], row["is_active"] = "", True
    if table == "user_sessions":
        row["token_hash"] = ""
    return row


def read_archive(archive: bytes) -> tuple[dict, dict[str, bytes | None]]:
    """(metadata, member name -> bytes, None for a folder) of a tar or gzip'd tar."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        for member in tar:
            found[member.name.rstrip("/")] = tar.extractfile(member).read() if member.isfile() else None
    return json.loads(found["metadata.json"]), found


def aviarys_restore(archive: bytes, tables: dict[str, list[dict]], objects: dict[str, bytes], force=False):
    """What Aviary's admin page makes of an installation from `archive`: None when it refuses
    the archive (nothing changes), else the installation after it.  AviaryAborted when a row it
    misreads stops it after users (and every cascaded table) were replaced.  `force`: as if
    the metadata decoded (what the refusal spares)."""
    metadata, members = read_archive(archive)
    if not force and not decodes_into_aviarys_struct(metadata):
        return None
    tables = {name: [dict(r) for r in rows] for name, rows in tables.items()}
    objects = dict(objects)
    archived = {name[len("database/"):-len(".json")]: json.loads(data) for name, data in members.items()
                if name.startswith("database/") and name.endswith(".json") and data is not None}
    if archived:  # the database: users cleared, and with it every table that cascades from it
        for row in tables.get("system_settings", []):
            row["updated_by"] = None
        for name in ("users", *AVIARY_CASCADED):
            tables[name] = []
        for name in AVIARY_RESTORE_ORDER:  # a table missing (or null) is not cleared beyond that
            key = AVIARY_KEYS.get(name, "id")
            for row in archived.get(name) or []:
                misread = _aviary_reads(name, row)
                if misread and name != "users":
                    raise AviaryAborted(misread, (tables, objects))
                kept = [r for r in tables.setdefault(name, []) if r[key] != row[key]]
                tables[name] = kept + [_as_aviary_imports(name, row)]
    if "filesystem" in members:  # every file of every user of the restored database goes first
        for user in tables.get("users", []):
            objects = {k: v for k, v in objects.items() if not k.startswith(f"users/{user['id']}/")}
        objects = {k: v for k, v in objects.items() if not k.startswith("backups/")}
        for name, data in members.items():
            if name.startswith("filesystem/documents/") and data is not None:
                user, _, path = name[len("filesystem/documents/"):].partition("/")
                objects[f"users/{user}/pdfs/{path}"] = data
    return tables, objects


def lost(before: tuple[dict, dict], after: tuple[dict, dict]) -> list[str]:
    """What an installation lost in a restore beyond Aviary's own losses: rows (by key) or
    documents gone, or a user's password hash, pairing or document bytes changed."""
    (tables, objects), (tables_after, objects_after) = before, after
    found = []
    for name, table in tables.items():
        key = AVIARY_KEYS.get(name, "id")
        now = {r[key]: r for r in tables_after.get(name, [])}
        for row in table:
            if row[key] not in now:
                found.append(f"{name} row {row[key]}")
            elif name == "users":
                for column in ("password", "rmapi_config"):
                    if now[row[key]].get(column) != row.get(column):
                        found.append(f"users.{column} of {row['username']}")
    for key, data in objects.items():
        if objects_after.get(key) != data:
            found.append(f"document {key}")
    return found
