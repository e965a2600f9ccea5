"""Family 6: a writer inserts and deletes users and documents (rows and files) while pack runs.

The archive's tables must be one snapshot: metadata's row counts equal the rows in each table
member, every user_id (and system_settings.updated_by) names a user in users.json, and
`verify` passes.  A pack that fails because a document vanished is a FAIL, with its message."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from archive_helpers import installation

from .fixtures import Fixtures
from .harness import Case, Env, Fail, Target

PACKS = 3
PAUSE = 0.005  # between the writer's steps
# The writer's users come from a pool of ids, reused once deleted: SeaweedFS keeps an empty folder
# per deleted user, and pack lists S3 one request per folder, so fresh ids would slow every pack.
ID_POOL = 50
STAMP = "2025-07-27 10:11:12+00:00"
OWNED = {"api_keys": "user_id", "user_sessions": "user_id", "user_folders_cache": "user_id",
         "documents": "user_id", "system_settings": "updated_by"}


class Writer(threading.Thread):
    """Creates a user, then its document file, then its documents row (as an upload does);
    deletes the oldest of its users (file first, then the row: the rows cascade) so that
    about five of them live at any time."""

    def __init__(self, execute, put, remove, files: bool = True):
        super().__init__(daemon=True)
        self.execute = execute
        self.put, self.remove = (put, remove) if files else (lambda *_: None, lambda *_: None)
        self.stop = threading.Event()
        self.created = self.deleted = 0
        self.error: Exception | None = None

    def run(self):
        live: list[tuple[str, str]] = []
        pool = [str(uuid.uuid4()) for _ in range(ID_POOL)]
        try:
            while not self.stop.is_set():
                n = self.created
                uid = pool[n % ID_POOL]  # never a live one: at most six live at once
                key = f"users/{uid}/pdfs/writer-{n}.pdf"
                self.execute([("INSERT INTO users (id, username, email, password, created_at, updated_at)"
                               " VALUES (%s, %s, %s, 'x', %s, %s)", (uid, f"writer-{n}", f"writer-{n}@example.org",
                                                                     STAMP, STAMP))])
                self.put(key, b"%PDF-1.4 " + str(n).encode() * (1 + n % 300))
                self.execute([("INSERT INTO documents (id, user_id, document_name, local_path, file_size)"
                               " VALUES (%s, %s, %s, %s, %s)", (str(uuid.uuid4()), uid, f"writer-{n}.pdf", key, 1))])
                live.append((uid, key))
                self.created += 1
                time.sleep(PAUSE)
                if len(live) > 5:
                    old_uid, old_key = live.pop(0)
                    self.remove(old_key)
                    self.execute([("DELETE FROM users WHERE id = %s", (old_uid,))])
                    self.deleted += 1
        except Exception as e:  # reported by the case
            self.error = e


def sqlite_writer(db: str, storage: Path, files: bool) -> Writer:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")

    def execute(statements):
        conn.execute("BEGIN IMMEDIATE")
        for text, args in statements:
            conn.execute(text.replace("%s", "?"), args)
        conn.execute("COMMIT")

    def put(key, body):
        path = storage / key
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = storage.parent / f"writer-{uuid.uuid4().hex}"  # written aside, renamed in: never seen half done
        temp.write_bytes(body)
        temp.rename(path)

    def remove(key):
        (storage / key).unlink()

    return Writer(execute, put, remove, files)


def postgres_writer(url: str, client, bucket: str, files: bool) -> Writer:
    conn = psycopg.connect(url, autocommit=True)

    def execute(statements):
        with conn.transaction():
            for text, args in statements:
                conn.execute(text, args)

    return Writer(execute, lambda key, body: client.put_object(Bucket=bucket, Key=key, Body=body),
                  lambda key: client.delete_object(Bucket=bucket, Key=key), files)


def check_snapshot(archive: bytes) -> str | None:
    """Why the archive's tables are not one consistent snapshot, or None."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        metadata = json.load(tar.extractfile("metadata.json"))
        tables = {m.name[len("database/"):-len(".json")]: json.load(tar.extractfile(m))
                  for m in tar.getmembers() if m.name.startswith("database/") and m.isfile()}
    for table, claimed in metadata["aviarytools"]["table_rows"].items():
        if len(tables[table]) != claimed:
            return f"metadata says {claimed} rows of {table}, the member holds {len(tables[table])}"
    users = {row["id"] for row in tables["users"]}
    for table, column in OWNED.items():
        for row in tables.get(table, []):
            if row[column] is not None and row[column] not in users:
                return f"{table} row {row.get('id') or row.get('key')} names user {row[column]}, not in users.json"
    return None


def concurrency_cases(env: Env, fx: Fixtures) -> list[Case]:
    def drill(engine: str, files: bool):
        folder = env.fresh(f"concurrency-{engine}")
        if engine == "sqlite":
            target = Target(str(folder / "aviary.db"), str(folder / "data"), env)
            installation(target.db, target.storage, users=40, docs_per_user=4, seed=21)
            with sqlite3.connect(target.db) as conn:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise Fail(f"drill: journal_mode is {mode}, not wal")
            writer = sqlite_writer(target.db, Path(target.storage), files)
        else:
            db = env.new_database()
            installation(db, folder / "files", users=40, docs_per_user=4, seed=21)
            target = Target(db, fx._bucket_from(folder / "files"), env, s3=True)
            writer = postgres_writer(db, env.s3.client(), target.storage, files)
        writer.start()
        time.sleep(0.3)
        problems = []
        try:
            for n in range(PACKS):
                packed = env.run("pack", *target.args, timeout=120)
                if packed.rc != 0:
                    problems.append(f"pack {n + 1}: {packed.shown()}")
                    continue
                archive = folder / f"pack-{n}.tar"
                archive.write_bytes(packed.out)
                verified = env.run("verify", archive)
                if verified.rc != 0:
                    problems.append(f"pack {n + 1} fails verify: {' | '.join(verified.lines[:2])[:200]}")
                why = check_snapshot(packed.out)
                if why:
                    problems.append(f"pack {n + 1} not one snapshot: {why}")
        finally:
            writer.stop.set()
            writer.join(30)
        if writer.error:
            raise Fail(f"drill: the writer failed: {writer.error}")
        if writer.created < 20:
            raise Fail(f"drill: the writer made only {writer.created} users: no real concurrency")
        if problems:
            raise Fail(f"{len(problems)} problem(s) in {PACKS} packs; {'; '.join(problems)[:600]}")
        return f"{PACKS} packs, all one snapshot and verified; writer made {writer.created} users, deleted {writer.deleted}"

    expected = "pack 0, verify 0, counts = rows, references hold"
    return [
        Case("6 concurrency", f"writer of {what} during pack: {engine_name}", expected,
             lambda engine=engine, files=files: drill(engine, files), quick=quick, alone=True)
        for what, files in (("rows", False), ("rows and files", True))
        for engine, engine_name in (("sqlite", "SQLite (WAL) + folder"), ("postgres", "PostgreSQL + S3"))
        for quick in [engine == "sqlite" and not files]
    ]
