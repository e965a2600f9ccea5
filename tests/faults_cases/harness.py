"""What every fault drill shares: the Case structure, running `aviary` (with its time, peak
memory and a scan of its output for secrets), targets to restore into, snapshots of them, and
the checks every case makes."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import psycopg
import xxhash
from psycopg import sql

from aviarytools import rows
from aviarytools.db import connect

AVIARY = [sys.executable, "-m", "aviarytools"]
DATA_TABLES = ("users", "api_keys", "user_sessions", "user_folders_cache", "documents",
               "system_settings", "login_attempts")
LEFTOVER_MARKS = (".partial", ".aviary-tmp-", ".aviary-restore-")

# How an error line says where: a member, an offset, a line or item, a key or a database.
WHERE_ARCHIVE = r"offset \d+|metadata\.json|database/\w+\.json|filesystem/\S+|checksums\.xxh128|\w+ \(offset"
WHERE_ROW = r"\b(line|item) \d+|column |table |no table "
WHERE_KEY = r"users/[^ ]+|\.aviary-restore-|s3://|/[\w.-]+"


# --- cases and outcomes ----------------------------------------------------------------------


class Fail(Exception):
    """The case found a fault: the message is the detail."""


class Skip(Exception):
    """The case cannot run here: the message says why."""


@dataclass
class Case:
    family: str
    name: str
    expected: str
    run: Callable[[], str | None]  # raises Fail or Skip; may return a note (measurements)
    quick: bool = False  # part of --quick
    alone: bool = False  # touches the servers: never beside another case


@dataclass
class Outcome:
    case: Case
    status: str  # PASS, FAIL, SKIP
    detail: str = ""
    seconds: float = 0.0


def attempt(case: Case) -> Outcome:
    started = time.monotonic()
    try:
        note = case.run()
        status, detail = "PASS", note or ""
    except Fail as e:
        status, detail = "FAIL", str(e)
    except Skip as e:
        status, detail = "SKIP", str(e)
    except Exception as e:  # a bug of the drill itself shows as a failure, with its place
        tb = e.__traceback__
        while tb.tb_next:
            tb = tb.tb_next
        status = "FAIL"
        detail = f"drill error: {type(e).__name__}: {e} ({Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"
    return Outcome(case, status, detail, time.monotonic() - started)


# --- commands --------------------------------------------------------------------------------


@dataclass
class Result:
    args: list[str]
    rc: int
    out: bytes
    err: str
    seconds: float
    rss_mb: float
    timed_out: bool = False

    @property
    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def name(self) -> str:
        words = [a for a in self.args[len(AVIARY):] if not a.startswith("-")]
        return "aviary " + (words[0] if words else "")

    def shown(self) -> str:
        err = " | ".join(self.lines[:3]) or "(no stderr)"
        return f"{self.name}: exit {self.rc}{' (timed out)' if self.timed_out else ''}: {err[:300]}"

    def measure(self) -> str:
        return f"{self.seconds:.1f}s {self.rss_mb:.0f}MB"


TIME = "/usr/bin/time"  # GNU time: the peak memory of the command alone


class Proc:
    """A running `aviary` command, fed and signalled by the drill; `wait` gives its Result.

    It runs under GNU time, whose small process forks it, so that its peak memory is its own:
    Linux carries the forking process's high-water mark across exec, and this runner is large.
    """

    def __init__(self, env: "Env", args, *, stdin=subprocess.PIPE, stdout=None, extra_env=None,
                 umask: int | None = None, cwd=None):
        self.env = env
        self.args = AVIARY + [str(a) for a in args]
        self.out_file = tempfile.TemporaryFile(dir=env.root)
        self.err_file = tempfile.TemporaryFile(dir=env.root)
        self.peak_file = Path(tempfile.mkstemp(dir=env.root)[1]) if os.access(TIME, os.X_OK) else None
        timed = [TIME, "-f", "%M", "-o", str(self.peak_file)] if self.peak_file else []
        preexec = (lambda: os.umask(umask)) if umask is not None else None
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            timed + self.args, stdin=stdin, stdout=self.out_file if stdout is None else stdout,
            stderr=self.err_file, env=env.command_env(extra_env), cwd=cwd,
            start_new_session=True, preexec_fn=preexec)
        self.pid = self.popen.pid
        self._command_pid: int | None = None

    def feed(self, data: bytes, *, piece: int = 1 << 16, pause: float = 0.0) -> bool:
        """Write `data` to stdin; False once the command stopped reading."""
        view = memoryview(data)
        try:
            for start in range(0, len(view), piece):
                self.popen.stdin.write(view[start:start + piece])
                self.popen.stdin.flush()
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError, ValueError):
            return False
        return True

    def close_stdin(self) -> None:
        try:
            self.popen.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def signal(self, signum: int) -> None:
        """To the command itself (GNU time, its parent, would ignore SIGINT)."""
        os.kill(self.command_pid(), signum)

    def command_pid(self) -> int:
        """The command's own pid, found once: GNU time's child. Waits while GNU time runs, since
        on a loaded machine its fork can take a while; fails saying so if it ended first."""
        if self._command_pid is None:
            self._command_pid = self._find_command() if self.peak_file else self.pid
        return self._command_pid

    def _find_command(self) -> int:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                found = children.read_text().split()
            except OSError:
                found = []
            if found:
                return int(found[0])
            if self.popen.poll() is not None:
                raise Fail(f"drill: the command ended (exit {self.popen.returncode}) before the drill "
                           "found it under GNU time")
            time.sleep(0.01)
        raise Fail("drill: the command under GNU time did not start in 30 s")

    def wait(self, timeout: float = 120) -> Result:
        box: dict = {}
        waiter = threading.Thread(target=lambda: box.update(r=os.wait4(self.pid, 0)), daemon=True)
        waiter.start()
        waiter.join(timeout)
        timed_out = waiter.is_alive()
        if timed_out:
            os.killpg(self.pid, signal.SIGKILL)
            waiter.join()
        _, status, usage = box["r"]
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        peak_kb = usage.ru_maxrss
        if self.peak_file:
            lines = self.peak_file.read_text().split()
            self.peak_file.unlink()
            if lines and lines[-1].isdigit():
                peak_kb = int(lines[-1])
        if self.popen.stdin:
            self.close_stdin()
        seconds = time.monotonic() - self.started
        self.out_file.seek(0)
        self.err_file.seek(0)
        out = self.out_file.read()
        err = self.err_file.read().decode("utf-8", "replace")
        self.out_file.close()
        self.err_file.close()
        result = Result(self.args, self.popen.returncode, out, err, seconds, peak_kb / 1024, timed_out)
        self.env.scan(result)
        return result


class Env:
    """The servers, a workspace, and every secret the drills use."""

    def __init__(self, root: Path, pg, s3):
        self.root = root
        self.pg, self.s3 = pg, s3
        self.secrets = sorted({pg.password, quote(pg.password, safe=""), s3.secret_key,
                               quote(s3.secret_key, safe="")}, key=len, reverse=True)
        self.leaks: list[str] = []
        self.commands = 0
        self.scanned = 0
        self._lock = threading.Lock()
        self._serial = 0

    # -- commands --

    def command_env(self, extra=None) -> dict[str, str]:
        """The environment of every command: Aviary's own variables cleared, then the
        database password and the S3 secret set, so any message that shows them is caught."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AVIARY_", "DB_", "S3_", "DATA_DIR", "STORAGE_", "PG", "AWS_"))}
        env.update({"DB_PASSWORD": self.pg.password, "S3_ACCESS_KEY_ID": self.s3.access_key,
                    "S3_SECRET_ACCESS_KEY": self.s3.secret_key, "TMPDIR": str(self.root / "tmp")})
        env.update(extra or {})
        return env

    def start(self, *args, **kwargs) -> Proc:
        return Proc(self, args, **kwargs)

    def run(self, *args, stdin: bytes | Path | None = None, timeout: float = 90, **kwargs) -> Result:
        if isinstance(stdin, (bytes, bytearray)):
            source = tempfile.TemporaryFile(dir=self.root)
            source.write(stdin)
            source.seek(0)
        elif isinstance(stdin, Path):
            source = open(stdin, "rb")
        else:
            source = subprocess.DEVNULL
        try:
            return Proc(self, args, stdin=source, **kwargs).wait(timeout)
        finally:
            if source is not subprocess.DEVNULL:
                source.close()

    def scan_piped(self, name: str, data: bytes) -> None:
        """Output the drill read through a pipe (not in a Result), searched as well."""
        self.scan(Result([*AVIARY, name], 0, bytes(data), "", 0.0, 0.0))

    def scan(self, result: Result) -> None:
        """Every byte a command printed, searched for the secrets (gzip output unpacked)."""
        texts = [result.out, result.err.encode()]
        if result.out[:2] == b"\x1f\x8b":
            texts.append(_gunzip_some(result.out))
        found = [s for s in self.secrets for t in texts if s.encode() in t]
        with self._lock:
            self.commands += 1
            self.scanned += sum(map(len, texts))
            if found:
                self.leaks.append(f"{result.name} printed a secret")
        if found:
            raise Fail(f"secret in the output of {result.name}: {self.mask(result.shown())}")

    def mask(self, text: str) -> str:
        """`text` with every secret replaced: the drill's own report must not leak them either."""
        for secret in self.secrets:
            text = text.replace(secret, "<SECRET>")
        return text

    # -- places --

    def fresh(self, name: str) -> Path:
        with self._lock:
            self._serial += 1
            serial = self._serial
        folder = self.root / f"{serial:04d}-{re.sub(r'[^A-Za-z0-9]+', '-', name)[:40]}"
        folder.mkdir(parents=True)
        return folder

    def s3_args(self, bucket: str) -> list[str]:
        return ["--storage", f"s3://{bucket}", "--s3-endpoint", self.s3.endpoint, "--s3-path-style"]

    def new_bucket(self) -> str:
        return self.s3.create_bucket(f"faults-{uuid.uuid4().hex[:12]}")

    def new_database(self, template: str | None = None) -> str:
        name = f"faults_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.pg.url("postgres"), autocommit=True) as conn:
            conn.execute(statement)
        return self.pg.url(name)


def _gunzip_some(data: bytes, limit: int = 64 << 20) -> bytes:
    try:
        return zlib.decompressobj(31).decompress(data, limit)
    except zlib.error:
        return b""


# --- targets: a database and a storage, and what they hold -------------------------------------


@dataclass
class Target:
    db: str  # SQLite path or PostgreSQL URL
    storage: str  # folder or bucket name
    env: Env
    s3: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def args(self) -> list[str]:
        where = self.env.s3_args(self.storage) if self.s3 else ["--storage", self.storage]
        return ["--db", self.db, *where]

    def state(self) -> "State":
        return State(dump_tables(self.db), objects(self))

    def leftovers(self) -> list[str]:
        if self.s3:
            return [k for k in bucket_keys(self) if any(m in k for m in LEFTOVER_MARKS)]
        return leftovers(Path(self.storage))


@dataclass
class State:
    tables: dict[str, bytes]
    objects: dict[str, str]

    def differences(self, other: "State") -> list[str]:
        found = []
        for table in self.tables.keys() | other.tables.keys():
            a, b = self.tables.get(table), other.tables.get(table)
            if a != b:
                na, nb = (x.count(b"\n") if x is not None else "no table" for x in (a, b))
                found.append(f"table {table} changed ({na} -> {nb} rows)")
        gone = sorted(self.objects.keys() - other.objects.keys())
        new = sorted(other.objects.keys() - self.objects.keys())
        changed = sorted(k for k in self.objects.keys() & other.objects.keys() if self.objects[k] != other.objects[k])
        for label, keys in (("gone", gone), ("new", new), ("changed", changed)):
            if keys:
                found.append(f"{len(keys)} object(s) {label}: {keys[0]}")
        return found


def dump_tables(db: str, tables=DATA_TABLES) -> dict[str, bytes]:
    """dump-table's bytes (its very code path, in this process) for every data table."""
    database = connect(db)
    try:
        present = set(database.table_names())
        dumped = {}
        with database.snapshot():
            for table in tables:
                if table in present:
                    out = io.BytesIO()
                    rows.write_lines(rows.dump(database, table), out)
                    dumped[table] = out.getvalue()
        return dumped
    finally:
        database.close()


def objects(target: Target) -> dict[str, str]:
    """Every file or object (hidden ones too) with its XXH128."""
    if target.s3:
        client = target.env.s3.client()
        found = {}
        for key in bucket_keys(target):
            body = client.get_object(Bucket=target.storage, Key=key)["Body"]
            found[key] = xxhash.xxh3_128_hexdigest(body.read())
        return found
    return folder_files(Path(target.storage))


def folder_files(root: Path) -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            hasher = xxhash.xxh3_128()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    hasher.update(chunk)
            found[path.relative_to(root).as_posix()] = hasher.hexdigest()
    return found


def bucket_keys(target: Target) -> list[str]:
    client = target.env.s3.client()
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.storage):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def leftovers(*roots: Path) -> list[str]:
    """Temporary or staging files and folders a command left behind."""
    found = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                if any(mark in name for mark in LEFTOVER_MARKS):
                    path = Path(folder, name)
                    empty = path.is_dir() and not any(p.is_file() for p in path.rglob("*"))
                    found.append(f"{path}{' (empty folders only)' if empty else ''}")
            dirs[:] = [d for d in dirs if not any(mark in d for mark in LEFTOVER_MARKS)]
    return found


# --- checks ------------------------------------------------------------------------------------


class Checks:
    """Runs each check of a case and fails with every one that failed, not only the first."""

    def __init__(self):
        self.failed: list[str] = []

    def __call__(self, check, *args, **kwargs):
        try:
            return check(*args, **kwargs)
        except Fail as e:
            self.failed.append(str(e))
            return None

    def done(self, note: str | None = "") -> str | None:
        if self.failed:
            raise Fail(" || ".join(self.failed))
        return note


def expect_error(result: Result, where: str | None, *, rc: int = 1) -> str:
    """Exit `rc` with exactly one line on stderr, `aviary CMD: ...`, saying where."""
    if result.timed_out:
        raise Fail(f"{result.name} did not finish ({result.seconds:.0f}s)")
    if "Traceback" in result.err:
        raise Fail(f"{result.name}: a traceback: {result.err.strip()[-1500:]}")
    if result.rc != rc:
        raise Fail(f"expected exit {rc}; {result.shown()}")
    lines = result.lines
    if len(lines) != 1:
        raise Fail(f"{result.name}: {len(lines)} lines on stderr, expected one: {' | '.join(lines[:4])[:300]}")
    if not lines[0].startswith(result.name + ": "):
        raise Fail(f"{result.name}: error line does not name the command: {lines[0][:200]}")
    if where and not re.search(where, lines[0][len(result.name) + 2:]):
        raise Fail(f"{result.name}: error does not say where: {lines[0][:200]}")
    return lines[0]


def expect_verify_fails(result: Result, where: str = WHERE_ARCHIVE) -> str:
    """verify: exit 1, no traceback, a finding that says where, and its summary line."""
    if result.timed_out or "Traceback" in result.err or result.rc != 1:
        raise Fail(f"expected exit 1; {result.shown()}")
    findings = [line for line in result.lines if not re.search(r"problem\(s\) in [\d.]+ \w+ read", line)]
    if not findings:
        raise Fail(f"verify: no finding on stderr: {result.shown()}")
    stray = [line for line in result.lines if not line.startswith("aviary verify: ")]
    if stray:
        raise Fail(f"verify: a finding spans several lines: {' | '.join(result.lines[:3])[:250]}")
    if not re.search(where, findings[0]):
        raise Fail(f"verify: finding does not say where: {findings[0][:200]}")
    return findings[0]


def expect_ok(result: Result, *, quiet: bool = False) -> Result:
    if result.timed_out or result.rc != 0 or "Traceback" in result.err:
        raise Fail(f"expected success; {result.shown()}")
    if quiet and result.err.strip():
        raise Fail(f"{result.name}: expected no stderr, got: {result.err.strip()[:200]}")
    return result


def expect_same(before: State, after: State, what: str = "target", *, after_error: str = "") -> None:
    differences = before.differences(after)
    if differences:
        told = f" (the command said: {after_error})" if after_error else ""
        raise Fail(f"{what} changed: {'; '.join(differences)[:300]}{told}")


def expect_no_leftovers(found: list[str], *, empty_folders_allowed: bool = False) -> None:
    if empty_folders_allowed:
        found = [f for f in found if not f.endswith("(empty folders only)")]
    if found:
        raise Fail(f"{len(found)} leftover(s): {found[0]}")


def copy_target(template: Target, into: Path) -> Target:
    """A private copy of an SQLite + folder target."""
    shutil.copy(template.db, into / "aviary.db")
    shutil.copytree(template.storage, into / "data", symlinks=True)
    return Target(str(into / "aviary.db"), str(into / "data"), template.env)
