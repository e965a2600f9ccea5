"""Sample Aviary data with every trap real data has, for the demo and tests.

    python -m aviarytools.sample --db demo/aviary.db --storage demo/data --users 3

Year-1 timestamps (Go's zero time), nanosecond fractions, non-ASCII text,
JSON inside text, NULLs, 0/1 booleans, floats, and document files under
users/<uuid>/pdfs/ (sub-folders included).
"""

import argparse
import io
import json
import random
import uuid

from . import rows
from .db import Database, connect
from .rowinput import RowSource

ZERO_TIME = "0001-01-01 00:00:00+00:00"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _time(rng: random.Random, nanos: bool = True) -> str:
    day = rng.randint(1, 28)
    fraction = f".{rng.randint(1, 999_999_999):09d}" if nanos else ""
    return f"2025-{rng.randint(1, 12):02d}-{day:02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{fraction}+00:00"


def sample_rows(users: int = 3, docs_per_user: int = 3, seed: int = 7, nanos: bool = True) -> dict[str, list[dict]]:
    """Rows for each Aviary table, as dicts of JSON values."""
    rng = random.Random(seed)
    tables: dict[str, list[dict]] = {name: [] for name in (
        "users", "api_keys", "user_sessions", "user_folders_cache", "documents",
        "system_settings", "login_attempts")}
    names = ["admin", "zoë", "björn", "李雷", "o'brien", "ana-maría"]
    for n in range(users):
        uid = _uuid(rng)
        name = names[n] if n < len(names) else f"user{n}"
        tables["users"].append({
            "id": uid, "username": name, "email": f"{name}@example.org",
            "password": f"$2a$10${rng.getrandbits(100):x}", "is_admin": 1 if n == 0 else 0,
            "is_active": 1, "rmapi_host": "" if n % 2 else "remarkable.cloud",
            "default_rmdir": "/Books/Ünïcode", "folder_refresh_percent": rng.randint(1, 99),
            "coverpage_setting": "current", "contrast_setting": ["high", "none", "medium"][n % 3],
            "conflict_resolution": "abort",
            "folder_depth_limit": 0, "folder_exclusion_list": "", "page_resolution": "1404x1872",
            "page_dpi": [226.0, 300.5, 0.1, 1e15][n % 4], "conversion_output_format": "epub",
            "rmapi_config": f"[auth]\ndevicetoken=dev-{rng.getrandbits(64):x}\n" if n % 3 != 2 else None,
            "pdf_background_removal": [None, 1, 0][n % 3], "experimental_download_link": None if n else 1,
            "reset_token": "", "reset_token_expires": ZERO_TIME, "oidc_subject": None if n % 2 else f"sub-{n}",
            "created_at": _time(rng, nanos), "updated_at": _time(rng, nanos),
            "last_login": None if n % 2 else _time(rng, nanos),
        })
        for k in range(2):
            tables["api_keys"].append({
                "id": _uuid(rng), "user_id": uid, "name": f"key {k} “quoted”",
                "key_hash": f"sha256:{rng.getrandbits(256):064x}", "key_prefix": f"avk_{rng.getrandbits(48):012x}",
                "is_active": k, "last_used": None if k else _time(rng, nanos),
                "expires_at": ZERO_TIME if k else None, "created_at": _time(rng, nanos),
            })
        tables["user_sessions"].append({
            "id": _uuid(rng), "user_id": uid, "token_hash": f"{rng.getrandbits(256):064x}",
            "expires_at": _time(rng, nanos), "created_at": _time(rng, nanos), "last_used": _time(rng, nanos),
            "user_agent": "Mozilla/5.0 (X11; Linux) — ünïcödé 🦜", "ip_address": "2001:db8::1",
        })
        tables["user_folders_cache"].append({
            "id": _uuid(rng), "user_id": uid, "folder_path": "/Books/Ärger",
            "folder_data": json.dumps({"folders": ["/Books", "/Books/Ärger"], "q": "\"x\"\\y"}),
            "last_updated": _time(rng, nanos),
        })
        for d in range(docs_per_user):
            path = f"sub/dir {d}/doc-{d}.pdf" if d % 2 else f"doc-{d} ñ.pdf"
            tables["documents"].append({
                "id": _uuid(rng), "user_id": uid, "document_name": path.rsplit("/", 1)[-1],
                "local_path": f"users/{uid}/pdfs/{path}", "remote_path": "/Books",
                "document_type": "pdf", "file_size": 1000 + d, "status": "uploaded",
                "upload_date": _time(rng, nanos),
            })
    admin = tables["users"][0]["id"] if users else None
    tables["system_settings"] = [
        {"key": "smtp_host", "value": "mail.example.org", "description": "Ünïcode <html> & co",
         "updated_at": _time(rng, nanos), "updated_by": admin},
        {"key": "registration_enabled", "value": "false", "description": None,
         "updated_at": ZERO_TIME, "updated_by": None},
    ]
    for a in range(5):
        tables["login_attempts"].append({
            "id": _uuid(rng), "ip_address": f"192.0.2.{a}", "username": names[a % len(names)],
            "success": a % 2, "attempted_at": _time(rng, nanos), "user_agent": "curl/8.0\ttab",
        })
    return tables


def document_files(tables: dict[str, list[dict]], size: int = 1000, seed: int = 7):
    """(key, bytes) of a document file for every documents row."""
    rng = random.Random(seed)
    for row in tables["documents"]:
        body = b"%PDF-1.4\n" + rng.randbytes(max(0, row["file_size"] - 9))
        yield row["local_path"], body


def populate(db: Database, storage=None, **options) -> dict[str, list[dict]]:
    """Load sample rows into `db` (its schema must exist) and files into `storage`."""
    tables = sample_rows(**options)
    for name, table_rows in tables.items():
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table_rows).encode()
        rows.load(db, name, RowSource(io.BytesIO(data)), mode="append")
    if storage is not None:
        for key, body in document_files(tables):
            storage.write(key, [body], len(body))
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database URL or SQLite path (schema created)")
    parser.add_argument("--storage", help="storage URL or folder for document files")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--docs", type=int, default=3, help="documents per user")
    args = parser.parse_args()
    db = connect(args.db, create=True)
    with db.transaction():
        db.create_schema()
    storage = None
    if args.storage:
        from .storage import open_storage

        storage = open_storage(args.storage)
    populate(db, storage, users=args.users, docs_per_user=args.docs)
    db.close()


if __name__ == "__main__":
    main()
