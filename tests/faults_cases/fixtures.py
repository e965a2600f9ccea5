"""Installations and archives the drills share, each built once (and then only read).

The member spans come from aviarytools' own tar reader (`Member.offset`, where a member's
first header block starts): a member's data ends, padded, where the next header starts."""

from __future__ import annotations

import io
import os
import random
import shutil
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from archive_helpers import installation
from aviarytools import rows
from aviarytools.db import connect
from aviarytools.rowinput import RowSource
from aviarytools.tar import read_members
from .harness import Env, Fail, Target, copy_target, expect_ok

BLOCK = 512


@dataclass(frozen=True)
class Span:
    """Where a member sits in a plain tar: its first header, its data, and its end (padded)."""
    name: str
    type: str
    size: int
    header: int
    data: int
    end: int


def spans(archive: bytes) -> tuple[list[Span], int]:
    """Every member's span and the offset of the end-of-archive marker."""
    found = [(m.name, m.type, m.size, m.offset) for m in read_members(io.BytesIO(archive))]
    padded = [-(-size // BLOCK) * BLOCK for _, _, size, _ in found]
    last_name, _, _, last_offset = found[-1]
    # The last member (checksums.xxh128: short and ASCII) has a single header block.
    marker = last_offset + BLOCK + padded[-1]
    if archive[marker:marker + 2 * BLOCK] != bytes(2 * BLOCK):
        raise Fail(f"drill: no end-of-archive marker after {last_name} at {marker}")
    boundaries = [offset for *_, offset in found[1:]] + [marker]
    result = [Span(name, kind, size, offset, boundary - pad, boundary)
              for (name, kind, size, offset), pad, boundary in zip(found, padded, boundaries)]
    return result, marker


def gzip_offset(gz: bytes, plain_offset: int) -> int:
    """The shortest prefix of `gz` that inflates to at least `plain_offset` bytes."""
    inflater = zlib.decompressobj(31)
    produced = 0
    for n in range(len(gz)):
        produced += len(inflater.decompress(gz[n:n + 1]))
        if produced >= plain_offset:
            return n + 1
    return len(gz)


class Fixtures:
    """Built on first use, under a lock: cases in two threads may ask at once."""

    def __init__(self, env: Env):
        self.env = env
        self._lock = threading.RLock()
        self._built: dict[str, object] = {}

    def _once(self, name, build):
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    # -- the installation that is packed, and its archives --

    @property
    def source(self) -> Target:
        def build():
            folder = self.env.fresh("source")
            target = Target(str(folder / "aviary.db"), str(folder / "data"), self.env)
            installation(target.db, target.storage, users=3, docs_per_user=3, seed=7)
            return target
        return self._once("source", build)

    @property
    def archive(self) -> bytes:
        return self._once("archive", lambda: expect_ok(self.env.run("pack", *self.source.args)).out)

    @property
    def archive_gz(self) -> bytes:
        return self._once("archive_gz", lambda: expect_ok(self.env.run("pack", "-z", *self.source.args)).out)

    @property
    def archive_zst(self) -> bytes:
        return self._once("archive_zst", lambda: expect_ok(self.env.run("pack", "--zstd", *self.source.args)).out)

    @property
    def layout(self) -> tuple[list[Span], int]:
        return self._once("layout", lambda: spans(self.archive))

    def member(self, name_start: str, index: int = 0) -> Span:
        matches = [s for s in self.layout[0] if s.name.startswith(name_start) and s.type == "file"]
        return matches[index]

    # -- a bigger installation: documents of 256 KiB, for drills that act mid-stream --

    @property
    def big_source(self) -> Target:
        def build():
            folder = self.env.fresh("big-source")
            target = Target(str(folder / "aviary.db"), str(folder / "data"), self.env)
            tables = installation(target.db, target.storage, users=3, docs_per_user=3, seed=5)
            rng = random.Random(3)
            for user in tables["users"]:
                for n in range(8):
                    path = Path(target.storage, "users", user["id"], "pdfs", f"big-{n:02d}.pdf")
                    path.write_bytes(b"%PDF-1.4\n" + rng.randbytes(256 * 1024))
            return target
        return self._once("big_source", build)

    @property
    def big_archive(self) -> bytes:
        return self._once("big_archive", lambda: expect_ok(self.env.run("pack", *self.big_source.args)).out)

    @property
    def big_bucket(self) -> str:
        """The big installation's documents in a bucket (a pack source; never written to)."""
        return self._once("big_bucket", lambda: self._bucket_from(Path(self.big_source.storage)))

    # -- many small documents (400 of 8 KiB), for drills with dozens of uploads in flight --

    @property
    def many_source(self) -> Target:
        def build():
            folder = self.env.fresh("many-source")
            target = Target(str(folder / "aviary.db"), str(folder / "data"), self.env)
            tables = installation(target.db, target.storage, users=4, docs_per_user=2, seed=13)
            rng = random.Random(4)
            for user in tables["users"]:
                pdfs = Path(target.storage, "users", user["id"], "pdfs", "many")
                pdfs.mkdir(parents=True)
                for n in range(100):
                    (pdfs / f"small-{n:03d}.pdf").write_bytes(b"%PDF-1.4\n" + rng.randbytes(8 * 1024))
            return target
        return self._once("many_source", build)

    @property
    def many_archive(self) -> bytes:
        return self._once("many_archive", lambda: expect_ok(self.env.run("pack", *self.many_source.args)).out)

    @property
    def many_bucket(self) -> str:
        """The many documents in a bucket (a pack source; never written to)."""
        return self._once("many_bucket", lambda: self._bucket_from(Path(self.many_source.storage)))

    # -- targets holding other data, to restore into --

    @property
    def target_template(self) -> Target:
        def build():
            folder = self.env.fresh("target-template")
            target = Target(str(folder / "aviary.db"), str(folder / "data"), self.env)
            installation(target.db, target.storage, users=4, docs_per_user=2, seed=11)
            return target
        return self._once("target_template", build)

    def sqlite_target(self, folder: Path) -> Target:
        return copy_target(self.target_template, folder)

    @property
    def pg_template(self) -> str:
        def build():
            url = self.env.new_database()
            installation(url, self.env.fresh("pg-template-files"), users=4, docs_per_user=2, seed=11)
            return url.rsplit("/", 1)[1]
        return self._once("pg_template", build)

    def pg_s3_target(self) -> Target:
        """A PostgreSQL database (a copy of the template) and a bucket of its documents."""
        db = self.env.new_database(self.pg_template)
        return Target(db, self.target_bucket(), self.env, s3=True)

    def target_bucket(self) -> str:
        """A new bucket holding the target template's documents."""
        return self._bucket_from(Path(self.target_template.storage))

    def pg_target(self, folder: Path) -> Target:
        """A PostgreSQL database (a copy of the template) and a folder of its documents."""
        db = self.env.new_database(self.pg_template)
        shutil.copytree(self.target_template.storage, folder / "data")
        return Target(db, str(folder / "data"), self.env)

    def _bucket_from(self, folder: Path) -> str:
        bucket = self.env.new_bucket()
        client = self.env.s3.client()
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            client.put_object(Bucket=bucket, Key=path.relative_to(folder).as_posix(), Body=path.read_bytes())
        return bucket

    def with_attempts(self, target: Target, count: int = 100_000) -> Target:
        """`target` with `count` more login_attempts rows (loaded in this process)."""
        database = connect(target.db)
        try:
            rows.load(database, "login_attempts", RowSource(io.BytesIO(login_attempts(count))))
        finally:
            database.close()
        return target

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.env.pg.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def login_attempts(count: int) -> bytes:
    """`count` distinct login_attempts rows as NDJSON."""
    return b"".join(
        b'{"id":"%08x-0000-4000-8000-%012x","ip_address":"198.51.100.%d","username":"load-%d",'
        b'"success":%d,"attempted_at":"2025-07-27T10:11:12.123456Z","user_agent":"faults"}\n'
        % (n, n, n % 250, n, n % 2) for n in range(count))


def sentinel_dir(case_dir: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """An extraction folder (not made yet) with a sentinel folder beside it, and what the
    sentinel holds, to prove nothing was written outside."""
    sentinel = case_dir / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_bytes(b"untouched\n")
    return case_dir / "out", sentinel, {"keep.txt": b"untouched\n"}


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()] if folder.exists() else []


def passwd_digest() -> bytes:
    with open("/etc/passwd", "rb") as f:
        return f.read()


def outside_untouched(case_dir: Path, out: Path, sentinel: Path, before: dict[str, bytes], passwd: bytes,
                      extra: tuple[str, ...] = ()) -> None:
    """Nothing beside `out` but the sentinel (and `extra`), the sentinel as it was, /etc/passwd too."""
    beside = sorted(p.name for p in case_dir.iterdir() if p.name not in ("out", "sentinel", *extra))
    if beside:
        raise Fail(f"written outside the extraction folder: {case_dir / beside[0]}")
    now = {p.name: p.read_bytes() for p in sentinel.iterdir()}
    if now != before or any(p.is_symlink() for p in sentinel.iterdir()):
        raise Fail(f"the sentinel folder beside {out} changed")
    if passwd_digest() != passwd:
        raise Fail("/etc/passwd changed")
    for parent in out.parents:
        for name in ("evil.txt",):
            if (parent / name).exists() and parent != out:
                raise Fail(f"written outside the extraction folder: {parent / name}")
    if os.path.exists("/tmp/aviary-faults-absolute.txt"):
        raise Fail("written at an absolute path: /tmp/aviary-faults-absolute.txt")
