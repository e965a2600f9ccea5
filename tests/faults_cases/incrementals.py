"""Family 9: incrementals (pack -g FILE, restored as a chain).

A level 1 archive cut anywhere (the manifest, a table, a carried document, the end blocks;
plain and gzip) is refused by verify, `unpack -C` and a restore into the level 0 it follows,
which stays as it was.  A pack -g cut by `| head -c`, signalled, or failing to write leaves its
snapshot FILE as it was (the same bytes, the same inode) and no FILE.partial-*.  A damaged
FILE, or one of another storage or another --user selection, is refused with one line naming
it (and the line), and no archive is written.  A chain applied out of order is refused before
anything is written, naming the document and the parent; in order, it gives the live
installation.  `unpack L0 L1 L2` (one restore) with L1 cut in its middle, or after another
installation's level 0 (a file, or `-`), is refused with one line naming the archive, and the
target is as it was.  A document changed while pack -g runs either fails the pack (FILE as it was)
or goes in consistently: never an archive verify rejects, never a FILE ahead of its archive.
On S3, a level 1 restore whose server dies mid-way names its staged prefix, and the target is
the level 0 again once it is deleted."""

from __future__ import annotations

import array
import fcntl
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import termios
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
import xxhash

from archive_helpers import installation
from aviarytools.archive import layout
from servers import port_answers

from .damage import check_extraction_refused
from .fixtures import Fixtures, Span, spans
from .harness import (WHERE_ARCHIVE, Case, Checks, Env, Fail, Proc, Result, Target, expect_error,
                      expect_no_leftovers, expect_ok, expect_same, expect_verify_fails, folder_files, leftovers)

FAMILY = "9 incrementals"
WHERE_INC = WHERE_ARCHIVE + r"|manifest\.ndjson|incremental/\S+"
# A restore that could not remove what it staged says which prefix to delete.
WHERE_STAGED = r"could not be removed: once the storage answers, delete s3://[^/\s]+/(\.aviary-restore-[0-9a-f]+/)"
PIPE = 1 << 20  # what pack widens its stdout pipe to
BIG = 512 * 1024  # a carried document of the drills that act mid-stream
# Where a level 1 is cut (incremental_cases.cut_points gives each its offset).
CUT_POINTS = ("manifest.ndjson: inside its header", "manifest.ndjson: first line", "inside manifest.ndjson",
              "manifest.ndjson: last byte missing", "mid-table users.json", "users.json: last byte missing",
              "carried document: inside its header", "carried document: 10 bytes in", "mid carried document",
              "carried document: last byte missing", "between two carried documents", "just before checksums.xxh128",
              "inside checksums.xxh128", "end marker: first byte", "end marker: first block only",
              "end marker: 1 byte short")


# --- installations and chains ----------------------------------------------------------------


@dataclass
class Site:
    """A private installation (SQLite + folder) with its snapshot FILE and archives."""

    source: Target
    folder: Path  # the case's folder
    backups: Path  # the snapshot FILE and the archives: nothing else is written there

    @property
    def snapshot(self) -> Path:
        return self.backups / "snapshot.ndjson"

    @property
    def data(self) -> Path:
        return Path(self.source.storage)

    def keys(self, under: str = "") -> list[str]:
        return sorted(k for k in folder_files(self.data) if k.startswith("users/") and under in k)

    def users(self) -> list[str]:
        return sorted(p.name for p in (self.data / "users").iterdir())


def new_site(env: Env, name: str, seed: int, users: int = 3, docs: int = 3) -> Site:
    folder = env.fresh(name)
    source = Target(str(folder / "aviary.db"), str(folder / "data"), env)
    installation(source.db, source.storage, users=users, docs_per_user=docs, seed=seed)
    backups = folder / "backups"
    backups.mkdir()
    return Site(source, folder, backups)


def pack_g(env: Env, site: Site, name: str | None, *extra, snapshot: Path | None = None) -> Result:
    """pack -g (the site's FILE unless told), to backups/NAME (-o) or, NAME None, to stdout."""
    output = ["-o", site.backups / name] if name else []
    return env.run("pack", *site.source.args, "-g", snapshot or site.snapshot, *output, *extra, timeout=180)


def write_doc(site: Site, key: str, body: bytes) -> None:
    path = site.data / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def same_size_rewrite(path: Path) -> None:
    body = bytearray(path.read_bytes())
    body[len(body) // 2] ^= 0xFF
    path.write_bytes(bytes(body))


def sqlite_change(db: str, value: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE system_settings SET value = ? WHERE key = 'smtp_host'", (value,))
        conn.execute("UPDATE users SET email = ? WHERE username = 'admin'", (f"{value}@example.org",))


def restored_level_0(env: Env, level_0: Path, into: Path) -> Target:
    """A new SQLite + folder target holding `level_0`."""
    target = Target(str(into / "aviary.db"), str(into / "data"), env)
    expect_ok(env.run("unpack", "--create-schema", *target.args, level_0))
    return target


def file_state(path: Path) -> tuple[bytes, int] | None:
    """The snapshot FILE's bytes and inode: 'exactly as before' is both."""
    try:
        return path.read_bytes(), path.stat().st_ino
    except FileNotFoundError:
        return None


def expect_file_kept(path: Path, before) -> None:
    now = file_state(path)
    if now != before:
        if now is None:
            raise Fail(f"{path.name} is gone")
        if before is not None and now[0] == before[0]:
            raise Fail(f"{path.name} was replaced (same bytes, another inode)")
        header = now[0].split(b"\n", 1)[0][:160].decode("utf-8", "replace")
        raise Fail(f"{path.name} changed: now {header}")


def expect_no_partials(folder: Path) -> None:
    found = sorted(p.name for p in folder.iterdir() if ".partial" in p.name)
    if found:
        raise Fail(f"left {found[0]} in {folder.name}/")


# --- reading an incremental --------------------------------------------------------------------


def tar_members(archive: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar}


def link_of(archive: bytes) -> dict:
    return json.loads(tar_members(archive)["metadata.json"])["aviarytools"]["incremental"]


def manifest_of(archive: bytes) -> list[dict]:
    return [json.loads(line) for line in tar_members(archive)["manifest.ndjson"].splitlines()]


def piped_state(snapshot: Path) -> bytes:
    """The state a pack -g to a pipe wrote: FILE.pending, FILE itself waiting for verify -g FILE."""
    pending = snapshot.with_name(snapshot.name + ".pending")
    return pending.read_bytes() if pending.exists() else b'{"archive": "(no FILE.pending)", "level": null, "base": null}\n'


def consistency(archive: bytes, snapshot: bytes | None) -> list[str]:
    """Why an incremental and the FILE written with it disagree: every carried entry of the
    manifest a member of that size and XXH128, no member it does not carry, and FILE the
    manifest's state (header: the archive's id, level and base)."""
    members = tar_members(archive)
    link = json.loads(members["metadata.json"])["aviarytools"]["incremental"]
    manifest = [json.loads(line) for line in members["manifest.ndjson"].splitlines()]
    carried = {e["key"]: e for e in manifest if e["carried"]}
    problems = []
    for name, data in members.items():
        if not name.startswith(layout.CARRIED_PREFIX) or data is None:
            continue
        user, path = name[len(layout.CARRIED_PREFIX):].split("/", 1)
        key = layout.storage_key(user, path)
        entry = carried.pop(key, None)
        if entry is None:
            problems.append(f"{name}: in the archive, not carried by its manifest")
        elif (entry["size"], entry["xxh128"]) != (len(data), xxhash.xxh3_128_hexdigest(data)):
            problems.append(f"{name}: {len(data)} bytes {xxhash.xxh3_128_hexdigest(data)}, the manifest says "
                            f"{entry['size']} {entry['xxh128']}")
    problems += [f"{key}: carried, says the manifest, not in the archive" for key in sorted(carried)]
    if snapshot is not None:
        header, *lines = [json.loads(line) for line in snapshot.splitlines()]
        if (header["archive"], header["level"], header["base"]) != (link["archive"], link["level"], link["base"]):
            problems.append(f"FILE says archive {header['archive']} level {header['level']}, the archive is "
                            f"{link['archive']} level {link['level']}")
        recorded = [{k: v for k, v in e.items() if k != "carried"} for e in manifest]
        if lines != recorded:
            diff = next((f"{a.get('key')}: FILE {a} | manifest {b}" for a, b in zip(lines, recorded) if a != b),
                        f"{len(lines)} entries against {len(recorded)}")
            problems.append(f"FILE is not the manifest's state: {diff[:300]}")
    return problems


def level_0_consistency(archive: bytes, snapshot: bytes) -> list[str]:
    """Why a level 0 and the FILE written with it disagree: FILE lists exactly the documents the
    archive holds, each with the XXH128 of its member."""
    members = tar_members(archive)
    held = {}
    for name, data in members.items():
        if name.startswith(layout.DOCUMENTS_PREFIX) and data is not None:
            user, path = name[len(layout.DOCUMENTS_PREFIX):].split("/", 1)
            held[layout.storage_key(user, path)] = xxhash.xxh3_128_hexdigest(data)
    header, *lines = [json.loads(line) for line in snapshot.splitlines()]
    recorded = {e["key"]: e["xxh128"] for e in lines}
    link = json.loads(members["metadata.json"])["aviarytools"]["incremental"]
    problems = []
    if (header["archive"], header["level"]) != (link["archive"], 0):
        problems.append(f"FILE says archive {header['archive']} level {header['level']}, the archive is {link}")
    problems += [f"{k}: in FILE, not in the archive" for k in sorted(recorded.keys() - held.keys())]
    problems += [f"{k}: in the archive, not in FILE" for k in sorted(held.keys() - recorded.keys())]
    problems += [f"{k}: FILE's XXH128 is not its member's" for k in sorted(held.keys() & recorded.keys())
                 if held[k] != recorded[k]]
    return problems


def gzip_prefix(gz: bytes, plain_offset: int) -> int:
    """The length of the shortest prefix of `gz` that inflates to at least `plain_offset` bytes."""
    inflater, produced, step = zlib.decompressobj(31), 0, 4096
    for start in range(0, len(gz), step):
        saved = inflater.copy()
        got = len(inflater.decompress(gz[start:start + step]))
        if produced + got >= plain_offset:
            for n in range(start, min(start + step, len(gz))):
                produced += len(saved.decompress(gz[n:n + 1]))
                if produced >= plain_offset:
                    return n + 1
        produced += got
    return len(gz)


# --- watching a running pack ---------------------------------------------------------------------


def running(proc: Proc) -> bool:
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def waiting(proc: Proc, reached, what: str, timeout: float = 60, pause: float = 0.002):
    deadline = time.monotonic() + timeout
    while running(proc) and time.monotonic() < deadline:
        value = reached()
        if value:
            return value
        time.sleep(pause)
    raise Fail(f"drill: {what} never happened: {proc.wait(10).shown()}")


def pipe_holds(stream) -> int:
    """Bytes waiting in the pipe behind `stream` (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(stream.fileno(), termios.FIONREAD, count, True)
    return count[0]


def blocked_on_pipe(proc: Proc):
    """A test for waiting(): the command has written into its stdout pipe (the drill's) and now
    waits for room there: its main thread sleeps in the kernel's pipe write (/proc/PID/wchan), or,
    where wchan says nothing, the pipe's level has stayed put for 0.3 s."""
    pid, seen = proc.command_pid(), []

    def test() -> bool:
        held = pipe_holds(proc.popen.stdout)
        if not held:
            return False
        try:
            with open(f"/proc/{pid}/wchan") as f:
                wchan = f.read()
        except OSError:
            wchan = ""
        if "pipe" in wchan and ("write" in wchan or "wait" in wchan):
            return True
        seen.append((time.monotonic(), held))
        recent = [h for t, h in seen if t > time.monotonic() - 0.3]
        return seen[0][0] < time.monotonic() - 0.3 and len(set(recent)) == 1
    return test


def stopped_when(proc: Proc, test, what: str, run: float = 0.0002, timeout: float = 60):
    """Run the command in slices of about `run` seconds, stopping it (SIGSTOP) after each, until
    test() holds while it is stopped: then leave it stopped and give test()'s value.  What a
    running process has open flickers faster than a drill can look; a stopped one's does not."""
    pid = proc.command_pid()
    deadline, stops = time.monotonic() + timeout, 0
    try:
        while running(proc) and time.monotonic() < deadline:
            os.kill(pid, signal.SIGSTOP)
            stops += 1
            while _state(pid) not in ("T", "t", "Z", None):
                time.sleep(0.0001)
            value = test()
            if value:
                return value
            os.kill(pid, signal.SIGCONT)
            time.sleep(run)
    except ProcessLookupError:  # it ended between two looks
        pass
    raise Fail(f"drill: {what} never seen in {stops} stops: {proc.wait(10).shown()}")


def resume(proc: Proc) -> None:
    """SIGCONT, if the command is still there (a drill that failed may have reaped it already)."""
    try:
        os.kill(proc.command_pid(), signal.SIGCONT)
    except (ProcessLookupError, Fail):
        pass


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def open_under(pid: int, folder: Path) -> str | None:
    """A regular file under `folder` that process `pid` has open, if any."""
    prefix = str(folder) + "/"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                path = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if path.startswith(prefix) and os.path.isfile(path):
                return path
    except OSError:
        return None
    return None


def read_all(proc: Proc) -> bytearray:
    received = bytearray()
    for piece in iter(lambda: proc.popen.stdout.read(1 << 16), b""):
        received += piece
    return received


# --- the family ----------------------------------------------------------------------------------


def incremental_cases(env: Env, fx: Fixtures) -> list[Case]:
    cases: list[Case] = []

    def case(name, expected, run, quick=False, alone=False):
        cases.append(Case(FAMILY, name, expected, run, quick=quick, alone=alone))

    # -- a small chain: level 0, then a new, a same-size, a resized and a deleted document --

    def changes_a(site: Site) -> dict[str, str]:
        keys, user = site.keys(), site.users()[0]
        new = layout.storage_key(user, "added by A.pdf")
        write_doc(site, new, b"%PDF-1.4 added " + random.Random(1).randbytes(3000))
        same_size_rewrite(site.data / keys[1])
        (site.data / keys[2]).write_bytes(b"%PDF-1.4 grown " + random.Random(2).randbytes(6000))
        (site.data / keys[3]).unlink()
        sqlite_change(site.source.db, "changed-by-a")
        return {"new": new, "same size": keys[1], "other size": keys[2], "deleted": keys[3]}

    def small_chain() -> dict:
        def build():
            site = new_site(env, "inc-chain", seed=17)
            expect_ok(pack_g(env, site, "level0.tar"))
            changes_a(site)
            expect_ok(pack_g(env, site, "level1.tar"))
            level_1 = (site.backups / "level1.tar").read_bytes()
            target = restored_level_0(env, site.backups / "level0.tar", env.fresh("inc-chain-target"))
            # The drill's own check: whole, this level 1 restores into that target.
            expect_ok(env.run("unpack", *copy_of(target, env.fresh("inc-chain-intact")).args, site.backups / "level1.tar"))
            return {"site": site, "level_1": level_1, "level_1_gz": zlib.compress(level_1, 6, 31),
                    "layout": spans(level_1), "target": target}
        return fx._once("inc-small-chain", build)

    # 1. a cut incremental

    def cut_points(layout_: tuple[list[Span], int]) -> list[tuple[str, int]]:
        members, marker = layout_
        files = [m for m in members if m.type == "file"]
        manifest = next(m for m in files if m.name == layout.MANIFEST)
        users = next(m for m in files if m.name == "database/users.json")
        docs = [m for m in files if m.name.startswith(layout.CARRIED_PREFIX)]
        biggest = max(docs, key=lambda m: m.size)
        sums = files[-1]
        return [("manifest.ndjson: inside its header", manifest.header + 100),
                ("manifest.ndjson: first line", manifest.data + 40),
                ("inside manifest.ndjson", manifest.data + manifest.size // 2),
                ("manifest.ndjson: last byte missing", manifest.data + manifest.size - 1),
                ("mid-table users.json", users.data + users.size // 2),
                ("users.json: last byte missing", users.data + users.size - 1),
                ("carried document: inside its header", biggest.header + 150),
                ("carried document: 10 bytes in", biggest.data + 10),
                ("mid carried document", biggest.data + biggest.size // 2),
                ("carried document: last byte missing", biggest.data + biggest.size - 1),
                ("between two carried documents", docs[-1].header),
                ("just before checksums.xxh128", sums.header),
                ("inside checksums.xxh128", sums.data + sums.size // 2),
                ("end marker: first byte", marker + 1), ("end marker: first block only", marker + 512),
                ("end marker: 1 byte short", marker + 1023)]

    def cut_incremental(label: str, gzip: bool, offset_of):
        chain = small_chain()
        plain, gz = chain["level_1"], chain["level_1_gz"]
        offset = offset_of(chain["layout"])
        data = gz[:gzip_prefix(gz, offset)] if gzip else plain[:offset]
        folder = env.fresh(f"inc-cut-{label}")
        damaged = folder / ("level1-cut.tar.gz" if gzip else "level1-cut.tar")
        damaged.write_bytes(data)
        checks = Checks()
        checks(expect_verify_fails, env.run("verify", damaged), WHERE_INC)
        check_extraction_refused(env, checks, folder, damaged, WHERE_INC)
        target = copy_of(chain["target"], folder)
        before = target.state()
        line = checks(expect_error, env.run("unpack", *target.args, stdin=damaged), WHERE_INC)
        checks(expect_same, before, target.state(), "target (restored level 0)", after_error=line or "")
        checks(expect_no_leftovers, target.leftovers() + leftovers(folder))
        return checks.done(f"@{len(data)}: " + (line or "").split(": ", 1)[-1][:100])

    def copy_of(template: Target, folder: Path) -> Target:
        shutil.copy(template.db, folder / "aviary.db")
        shutil.copytree(template.storage, folder / "data", symlinks=True)
        return Target(str(folder / "aviary.db"), str(folder / "data"), env)

    cut_expected = "verify 1; -C 1, no file; restore 1, level 0 target as before"
    for gzip in (False, True):
        for where in CUT_POINTS:
            def offset_of(layout_, where=where):
                return dict(cut_points(layout_))[where]
            case(f"level 1 cut {'gzip' if gzip else 'plain'}: {where}", cut_expected,
                 lambda where=where, gzip=gzip, offset_of=offset_of: cut_incremental(where, gzip, offset_of),
                 quick=where == "mid carried document" and not gzip)

    # -- a chain whose level 1 carries more than a pipe holds --

    def big_changes(site: Site, count: int = 8, size: int = BIG, user_index: int = 0) -> list[str]:
        """`count` new documents of `size` bytes under one user, in key order; and a table change."""
        user = site.users()[user_index]
        rng = random.Random(count * size)
        keys = [layout.storage_key(user, f"big/big-{n}.pdf") for n in range(count)]
        for key in keys:
            write_doc(site, key, b"%PDF-1.4\n" + rng.randbytes(size - 9))
        same_size_rewrite(site.data / site.keys("doc-0")[0])
        sqlite_change(site.source.db, "changed-big")
        return keys

    def big_site(name: str, seed: int) -> tuple[Site, list[str]]:
        """A level 0 packed (FILE made), then 8 new documents of 512 KiB: the next pack -g is a
        level 1 of about 4 MiB."""
        site = new_site(env, name, seed=seed)
        expect_ok(pack_g(env, site, "level0.tar"))
        return site, big_changes(site)

    def big_chain() -> dict:
        """Shared by the drills that only read it: each works on its own copy of FILE."""
        def build():
            site, keys = big_site("inc-big", seed=23)
            scratch = site.folder / "reference.ndjson"
            shutil.copy(site.snapshot, scratch)
            reference = expect_ok(pack_g(env, site, None, snapshot=scratch)).out
            scratch.unlink()
            scratch.with_name(scratch.name + ".pending").unlink()
            return {"site": site, "keys": keys, "layout": spans(reference), "size": len(reference)}
        return fx._once("inc-big-chain", build)

    def own_snapshot(site: Site, name: str) -> tuple[Path, Path]:
        """A folder of the case's own with a copy of the site's FILE in it."""
        folder = env.fresh(name)
        snapshot = folder / "snapshot.ndjson"
        shutil.copy2(site.snapshot, snapshot)
        return folder, snapshot

    # 2. a cut or failed pack -g

    def piped_to_head(offset_of, gzip: bool):
        chain = big_chain()
        site = chain["site"]
        folder, snapshot = own_snapshot(site, "inc-head")
        before = file_state(snapshot)
        count = offset_of(chain)
        if chain["size"] - count < PIPE + (512 << 10):
            raise Fail(f"drill: a cut at {count} of {chain['size']} bytes leaves less than a pipe's worth")
        proc = env.start("pack", *site.source.args, "-g", snapshot, *(["-z"] if gzip else []),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        reader = subprocess.Popen(["head", "-c", str(count)], stdin=proc.popen.stdout, stdout=subprocess.PIPE)
        proc.popen.stdout.close()
        shown = reader.communicate(timeout=120)[0]
        result = proc.wait(120)
        env.scan_piped("pack", shown)
        checks = Checks()
        if len(shown) != count:
            checks.failed.append(f"head got {len(shown)} bytes, not {count}")
        line = checks(expect_error, result, r"the reader closed the output")
        checks(expect_file_kept, snapshot, before)
        checks(expect_no_partials, folder)
        return checks.done(f"cut at {count}: exit {result.rc}, FILE as before; " + (line or "").split(": ", 1)[-1][:70])

    def member_offset(name_start: str, fraction: float, index: int = 0):
        def offset_of(chain):
            members = [m for m in chain["layout"][0] if m.name.startswith(name_start) and m.type == "file"]
            m = members[index]
            return m.data + int(m.size * fraction)
        return offset_of

    head_expected = "exit 1, one line; FILE as before (bytes, inode), no FILE.partial-*"
    for label, offset_of, gzip, quick in (
            ("inside metadata.json (1000 bytes)", lambda chain: 1000, False, True),
            ("inside the manifest", member_offset(layout.MANIFEST, 0.5), False, False),
            ("mid-table users.json", member_offset("database/users.json", 0.5), False, False),
            ("inside carried document 1", member_offset(layout.CARRIED_PREFIX, 0.5), False, False),
            ("inside carried document 4", member_offset(layout.CARRIED_PREFIX, 0.5, 3), False, False),
            ("gzip: 1000 bytes", lambda chain: 1000, True, False),
            ("gzip: a third (carried documents)", lambda chain: chain["size"] // 3, True, False)):
        case(f"pack -g | head -c: {label}", head_expected,
             lambda offset_of=offset_of, gzip=gzip: piped_to_head(offset_of, gzip), quick=quick)

    def far_end_failed():
        """pack -g into a pipe that nothing reads: the far end (aws s3 cp -) failed, yet a small
        incremental fits in the pipe's buffer and pack ends well.  FILE must not move."""
        site = new_site(env, "inc-far-end", seed=31)
        expect_ok(pack_g(env, site, "level0.tar"))
        before = file_state(site.snapshot)
        write_doc(site, layout.storage_key(site.users()[0], "night 1.pdf"), b"%PDF-1.4 night 1")
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        result = proc.wait(120)
        proc.popen.stdout.close()  # unread: what the far end never took is lost
        checks = Checks()
        checks(expect_ok, result)
        checks(expect_file_kept, site.snapshot, before)
        pending = site.snapshot.with_name(site.snapshot.name + ".pending")
        if not pending.exists():
            checks.failed.append("no FILE.pending")
        again = pack_g(env, site, "level1.tar")
        checks(expect_ok, again)
        if "was never confirmed" not in again.err:
            checks.failed.append(f"the next pack does not say the last was never confirmed: {again.err[:200]}")
        level_0 = json.loads(tar_members((site.backups / "level0.tar").read_bytes())["metadata.json"])
        level_1 = json.loads(tar_members((site.backups / "level1.tar").read_bytes())["metadata.json"])
        parent = level_1["aviarytools"]["incremental"]["parent"]
        if parent != level_0["aviarytools"]["incremental"]["archive"]:
            checks.failed.append(f"the next level 1 follows {parent}, not the level 0")
        if pending.exists():
            checks.failed.append("FILE.pending left after a pack -o")
        return checks.done("pack exit 0, FILE as before, FILE.pending; the next pack follows the level 0, warned")

    case("pack -g | a far end that fails without reading (fits in the pipe)", "pack exit 0; FILE kept, "
         "FILE.pending; the next pack follows FILE's archive, with a warning", far_end_failed, quick=True)

    def signalled_mid_stream(signum: int):
        """pack -g to a pipe the drill stops reading once 2 MiB (the carried documents) came."""
        chain = big_chain()
        site = chain["site"]
        folder, snapshot = own_snapshot(site, f"inc-signal-{signum}")
        before = file_state(snapshot)
        proc = env.start("pack", *site.source.args, "-g", snapshot, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        received = bytearray()
        while len(received) < 2 * PIPE:
            piece = proc.popen.stdout.read(1 << 16)
            if not piece:
                break
            received += piece
        waiting(proc, blocked_on_pipe(proc), "pack waiting on a full pipe")
        partial = sorted(p.name for p in folder.iterdir() if ".partial" in p.name)
        proc.signal(signum)
        received += read_all(proc)
        result = proc.wait(60)
        env.scan_piped("pack", bytes(received))
        (folder / "received.tar").write_bytes(received)
        checks = Checks()
        if not partial:
            checks.failed.append("drill: no FILE.partial-* while pack ran (struck too late?)")
        checks(expect_error, result, {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}[signum],
               rc=128 + signum)
        checks(expect_file_kept, snapshot, before)
        checks(expect_no_partials, folder)
        checks(expect_verify_fails, env.run("verify", folder / "received.tar"), WHERE_INC)
        return checks.done(f"struck after {len(received) >> 10} KiB: exit {result.rc}, FILE as before, "
                           "the stream fails verify")

    def slow_site() -> dict:
        """A level 0 with 300,000 login_attempts rows: a level 1 that takes seconds to write."""
        def build():
            site = new_site(env, "inc-slow", seed=29)
            fx.with_attempts(site.source, 300_000)
            expect_ok(pack_g(env, site, "level0.tar"))
            big_changes(site, count=2)
            return {"site": site}
        return fx._once("inc-slow", build)

    def terminated_mid_pack_o():
        site = slow_site()["site"]
        folder, snapshot = own_snapshot(site, "inc-sigterm-o")
        before = file_state(snapshot)
        output = folder / "level1.tar"
        proc = env.start("pack", *site.source.args, "-g", snapshot, "-o", output, stdin=subprocess.DEVNULL)
        waiting(proc, lambda: any(p.stat().st_size > PIPE for p in folder.glob("level1.tar.partial-*")),
                "a 1 MiB level1.tar.partial-*", pause=0.005)
        had_partial = any(folder.glob("snapshot.ndjson.partial-*"))
        proc.signal(signal.SIGTERM)
        result = proc.wait(60)
        checks = Checks()
        if not had_partial:
            checks.failed.append("drill: no snapshot.ndjson.partial-* while pack wrote")
        checks(expect_error, result, "terminated", rc=143)
        checks(expect_file_kept, snapshot, before)
        if output.exists():
            checks.failed.append("level1.tar exists")
        checks(expect_no_partials, folder)
        return checks.done("exit 143 mid-table; FILE as before; no archive, no FILE.partial-*")

    def many_site(name: str, seed: int, touched: int = 1500, last_size: int = 4 << 20,
                  touched_size: int = 4000) -> tuple[Site, str]:
        """A level 0 with `touched` small documents more, each touched since (a new mtime, the
        same bytes: hashed by the next pack -g, not carried), and one new document (4 MiB),
        last in key order."""
        site = new_site(env, name, seed=seed)
        rng = random.Random(seed)
        user = site.users()[-1]
        many = site.data / "users" / user / "pdfs" / "many"
        many.mkdir(parents=True)
        for n in range(touched):
            (many / f"small-{n:04d}.pdf").write_bytes(b"%PDF-1.4\n" + rng.randbytes(touched_size))
        expect_ok(pack_g(env, site, "level0.tar"))
        for path in many.iterdir():
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
        last = layout.storage_key(user, "zz-last.pdf")
        write_doc(site, last, b"%PDF-1.4\n" + rng.randbytes(last_size - 9))
        return site, last

    def terminated_while_hashing():
        # 64 KiB each: a document is open for most of its turn, so the drill's looks (one per
        # SIGSTOP) find one open even when a loaded machine makes each slice long.
        site, _ = many_site("inc-sigterm-hashing", seed=31, touched_size=64 << 10)
        before = file_state(site.snapshot)
        output = site.backups / "level1.tar"
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, "-o", output, stdin=subprocess.DEVNULL)
        pid = proc.command_pid()
        many = site.data / "users" / site.users()[-1] / "pdfs" / "many"
        try:
            reading = stopped_when(proc, lambda: open_under(pid, many), "pack hashing the touched documents")
            partials = {p.name: p.stat().st_size for p in site.backups.iterdir() if ".partial" in p.name}
            os.kill(pid, signal.SIGTERM)
        finally:
            resume(proc)
        result = proc.wait(60)
        checks = Checks()
        before_output = (len(partials) == 1
                         and all(k.startswith("level1.tar.partial-") and v == 0 for k, v in partials.items()))
        if not before_output:
            checks.failed.append(f"drill: not struck before any output: reading {reading}; partials {partials}")
        checks(expect_error, result, "terminated", rc=143)
        checks(expect_file_kept, site.snapshot, before)
        if output.exists():
            checks.failed.append("level1.tar exists")
        checks(expect_no_partials, site.backups)
        return checks.done("struck while hashing, before any output: exit 143, FILE as before, no archive, "
                           "no .partial")

    def failing_output():
        chain = big_chain()
        site = chain["site"]
        folder, snapshot = own_snapshot(site, "inc-no-folder")
        before = file_state(snapshot)
        result = env.run("pack", *site.source.args, "-g", snapshot, "-o", folder / "missing" / "level1.tar")
        checks = Checks()
        checks(expect_error, result, r"missing/level1\.tar")
        checks(expect_file_kept, snapshot, before)
        checks(expect_no_partials, folder)
        return checks.done((result.lines or [""])[0].split(": ", 1)[-1][:100])

    case("pack -g | reader stops, SIGTERM (mid carried documents)", "exit 143, one line; FILE as before, "
         "no FILE.partial-*; the stream fails verify", lambda: signalled_mid_stream(signal.SIGTERM), quick=True)
    case("pack -g | reader stops, SIGINT (mid carried documents)", "exit 130, one line; FILE as before, "
         "no FILE.partial-*; the stream fails verify", lambda: signalled_mid_stream(signal.SIGINT))
    case("SIGTERM mid pack -g -o (300k rows: mid-table)", "exit 143, one line; FILE as before; no archive, "
         "no .partial", terminated_mid_pack_o)
    case("SIGTERM while pack -g -o hashes the changed documents", "exit 143, one line; FILE as before; no "
         "archive, no .partial", terminated_while_hashing)
    case("pack -g -o into a folder that does not exist", "exit 1, one line naming it; FILE as before",
         failing_output)

    # 3. snapshot files that are wrong

    def wrong_snapshot(make, where: str):
        """`make(site, good)` writes a wrong FILE at site.snapshot from the good one; pack -g with it
        must refuse with one line matching `where` (its name first), write no archive, keep FILE."""
        site = small_site()
        folder = env.fresh("inc-wrong-snapshot")
        snapshot = folder / "snapshot.ndjson"
        args = make(site, site["good"], snapshot)
        before = file_state(snapshot)
        pattern = "^" + re.escape(str(snapshot)) + where
        checks = Checks()
        to_file = env.run("pack", *site["source"].args, "-g", snapshot, "-o", folder / "level1.tar", *args)
        line = checks(expect_error, to_file, pattern)
        if (folder / "level1.tar").exists():
            checks.failed.append("pack -o wrote level1.tar")
        to_stdout = env.run("pack", *site["source"].args, "-g", snapshot, "-z", *args)
        checks(expect_error, to_stdout, pattern)
        if to_stdout.out:
            checks.failed.append(f"pack (stdout, -z) wrote {len(to_stdout.out)} bytes")
        checks(expect_file_kept, snapshot, before)
        checks(expect_no_partials, folder)
        return checks.done((line or "").split(": ", 1)[-1].replace(f"{folder}/", "")[:110])

    def small_site() -> dict:
        """An installation that the drills only read, and FILEs of its level 0: of every user
        and of --user admin."""
        def build():
            site = new_site(env, "inc-snapshots", seed=37)
            expect_ok(pack_g(env, site, "level0.tar"))
            admin = site.backups / "admin.ndjson"
            expect_ok(pack_g(env, site, "admin0.tar", "--user", "admin", snapshot=admin))
            other = site.backups / "other.ndjson"
            expect_ok(pack_g(env, site, "other0.tar", "--user", "zoë", snapshot=other))
            with sqlite3.connect(site.source.db) as conn:
                admin_id = conn.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()[0]
            return {"source": site.source, "good": site.snapshot.read_bytes(), "admin": admin.read_bytes(),
                    "other": other.read_bytes(), "admin_id": admin_id}
        return fx._once("inc-small-site", build)

    def lines_of(good: bytes) -> list[bytes]:
        return good.splitlines(keepends=True)

    def garbage_in_the_middle(site, good, path):
        lines = lines_of(good)
        middle = len(lines) // 2
        path.write_bytes(b"".join(lines[:middle] + [b"\x00\xffnot json at all {{{\n"] + lines[middle:]))
        return []

    def truncated_last_line(site, good, path):
        path.write_bytes(good[:-40])
        return []

    def not_a_snapshot(body: bytes):
        def make(site, good, path):
            path.write_bytes(body)
            return []
        return make

    def out_of_order(site, good, path):
        lines = lines_of(good)
        lines[3], lines[4] = lines[4], lines[3]
        path.write_bytes(b"".join(lines))
        return []

    def line_twice(site, good, path):
        lines = lines_of(good)
        path.write_bytes(b"".join(lines[:4] + [lines[3]] + lines[4:]))
        return []

    def other_storage(site, good, path):
        header, rest = good.split(b"\n", 1)
        record = json.loads(header)
        record["storage"] = "/srv/another-aviary/data"
        path.write_bytes(json.dumps(record).encode() + b"\n" + rest)
        return []

    def of_selection(name: str, *args: str):
        def make(site, good, path):
            path.write_bytes(site[name])
            return [a if a != "ADMIN_ID" else site["admin_id"] for a in args]
        return make

    def garbage_line_number() -> str:
        return str(len(lines_of(small_site()["good"])) // 2 + 1)

    snapshot_expected = "exit 1, one line naming FILE{}; no archive (-o: no file, no .partial; stdout: 0 bytes); FILE kept"
    for label, make, where, quick in (
            ("damaged: a line of garbage in the middle", garbage_in_the_middle,
             lambda: f" line {garbage_line_number()}: not a snapshot record", True),
            ("damaged: the last line truncated", truncated_last_line,
             lambda: f" line {len(lines_of(small_site()['good']))}: not a snapshot record", False),
            ("damaged: two lines out of key order", out_of_order, lambda: " line 5: users/\\S+.*out of key order",
             False),
            ("damaged: a line twice", line_twice, lambda: " line 5: users/\\S+.*out of key order", False),
            ("not a snapshot: a tar archive", lambda s, g, p: not_a_snapshot(fx.archive[:4096])(s, g, p),
             lambda: " line 1: not an aviarytools snapshot file", False),
            ("not a snapshot: text", not_a_snapshot(b"last backup: sunday\n"),
             lambda: " line 1: not an aviarytools snapshot file", False),
            ("not a snapshot: an empty line", not_a_snapshot(b"\n"), lambda: " line 1: not an aviarytools snapshot file",
             False),
            ("of another storage (header's storage changed)", other_storage,
             lambda: r": the snapshot of /srv/another-aviary/data, not of ", False),
            ("of --user admin, used without --user", of_selection("admin"),
             lambda: ": the snapshot of a pack of .*one snapshot file per selection", False),
            ("of every user, used with --user admin", of_selection("good", "--user", "admin"),
             lambda: ": the snapshot of a pack of every user.*one snapshot file per selection", False),
            ("of --user zoë, used with --user admin", of_selection("other", "--user", "admin"),
             lambda: ": the snapshot of a pack of .*one snapshot file per selection", False)):
        case(f"snapshot FILE {label}", snapshot_expected.format(" and the line" if label.startswith("damaged") else ""),
             lambda make=make, where=where: wrong_snapshot(make, where()), quick=quick)

    def same_selection_by_id():
        site = small_site()
        folder = env.fresh("inc-selection-by-id")
        snapshot = folder / "snapshot.ndjson"
        snapshot.write_bytes(site["admin"])
        result = expect_ok(env.run("pack", *site["source"].args, "-g", snapshot, "--user", site["admin_id"],
                                   "-o", folder / "level1.tar"))
        link = link_of((folder / "level1.tar").read_bytes())
        if link["level"] != 1:
            raise Fail(f"level {link['level']}, not 1")
        return f"level 1 ({result.measure()})"

    case("snapshot FILE of --user admin, used with --user <admin's id>", "the same selection: exit 0, level 1",
         same_selection_by_id)

    # 4. a chain applied out of order

    def chain_of(spare: str) -> dict:
        """L0; changes A (new, same size, other size, deleted); L1; changes B, which touch every
        document A changed but `spare` (one L2 then relies on, as L1 left it) and two that A
        left alone (one rewritten, one deleted), and add one; L2."""
        def build():
            site = new_site(env, f"inc-order-{spare}", seed=41)
            expect_ok(pack_g(env, site, "level0.tar"))
            before_a = set(site.keys())
            a = changes_a(site)
            expect_ok(pack_g(env, site, "level1.tar"))
            after_l1 = site.source.state()
            rng = random.Random(5)
            for kind in ("new", "same size", "other size"):
                if kind != spare:
                    (site.data / a[kind]).write_bytes(b"%PDF-1.4 B " + rng.randbytes(2000 + len(kind)))
            untouched = sorted(before_a - set(a.values()))
            same_size_rewrite(site.data / untouched[0])
            (site.data / untouched[1]).unlink()
            write_doc(site, layout.storage_key(site.users()[1], "added by B.pdf"), b"%PDF-1.4 B " + rng.randbytes(900))
            sqlite_change(site.source.db, "changed-by-b")
            expect_ok(pack_g(env, site, "level2.tar"))
            return {"site": site, "a": a, "l1_state": after_l1, "live": site.source.state(),
                    "b_touched": untouched[:2],  # rewritten, deleted: L1 relies on both
                    "links": [link_of((site.backups / f"level{n}.tar").read_bytes()) for n in range(3)]}
        return fx._once(f"inc-order-{spare}", build)

    def archive(chain: dict, level: int) -> Path:
        return chain["site"].backups / f"level{level}.tar"

    def skipping_level_1(spare: str):
        chain = chain_of(spare)
        target = restored_level_0(env, archive(chain, 0), env.fresh("inc-skip-l1"))
        before = target.state()
        result = env.run("unpack", *target.args, archive(chain, 2))
        checks = Checks()
        relied = re.escape(chain["a"][spare])
        line = checks(expect_error, result, relied)
        l1, l2 = chain["links"][1], chain["links"][2]
        if line and (l1["archive"] not in line or l2["base"] not in line):
            checks.failed.append(f"the error does not name the parent {l1['archive']} and the base: {line[:250]}")
        checks(expect_same, before, target.state(), after_error=line or "")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done(refusal_note(line))

    def in_order():
        chain = chain_of("same size")
        target = restored_level_0(env, archive(chain, 0), env.fresh("inc-in-order"))
        checks = Checks()
        expect_ok(env.run("unpack", *target.args, archive(chain, 1)))
        checks(expect_same, chain["l1_state"], target.state(), "target after L1 (against the live L1 state)")
        expect_ok(env.run("unpack", *target.args, archive(chain, 2)))
        checks(expect_same, chain["live"], target.state(), "target after L2 (against the live installation)")
        checks(expect_no_leftovers, target.leftovers())
        doctor = env.run("doctor", *target.args, "--against", archive(chain, 2))
        if doctor.rc != 0:
            checks.failed.append(f"doctor --against level 2: {doctor.shown()}")
        return checks.done("L0, L1, L2: tables and every object = the live installation; doctor --against L2 0")

    def level_1_twice():
        chain = chain_of("same size")
        target = restored_level_0(env, archive(chain, 0), env.fresh("inc-l1-twice"))
        checks = Checks()
        expect_ok(env.run("unpack", *target.args, archive(chain, 1)))
        once = target.state()
        checks(expect_ok, env.run("unpack", *target.args, archive(chain, 1)))
        checks(expect_same, once, target.state(), "target after L1 again")
        checks(expect_same, chain["l1_state"], target.state(), "target (against the live L1 state)")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done("exit 0 twice; target = L1's state")

    def backwards():
        """L1 into a target that has L2 already: L1 relies on a document B rewrote and one B deleted."""
        chain = chain_of("same size")
        target = restored_level_0(env, archive(chain, 0), env.fresh("inc-backwards"))
        for level in (1, 2):
            expect_ok(env.run("unpack", *target.args, archive(chain, level)))
        before = target.state()
        result = env.run("unpack", *target.args, archive(chain, 1))
        checks = Checks()
        line = checks(expect_error, result, "|".join(map(re.escape, chain["b_touched"])))
        if line and chain["links"][0]["archive"] not in line:
            checks.failed.append(f"the error does not name L1's parent: {line[:200]}")
        checks(expect_same, before, target.state(), after_error=line or "")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done(refusal_note(line))

    refused = "exit 1, one line naming the document L1 {} and the parent; target as before"
    case("L2 into a restored L0 (L1 skipped): relies on a document L1 added", refused.format("added"),
         lambda: skipping_level_1("new"), quick=True)
    case("L2 into a restored L0 (L1 skipped): relies on one L1 rewrote at the same size",
         refused.format("rewrote"), lambda: skipping_level_1("same size"))
    case("L2 into a restored L0 (L1 skipped): relies on one L1 resized", refused.format("resized"),
         lambda: skipping_level_1("other size"))
    case("L1 into a target at L2 (backwards)", "exit 1, one line naming a document L2 rewrote or deleted; target "
         "as before",
         backwards)
    case("L0, L1, L2 in order", "exit 0 each; = live installation (dumps, object hashes); doctor 0", in_order)
    case("L1 applied twice", "exit 0 twice; target = L1's state", level_1_twice)

    def chain_cut_in_the_middle():
        """verify L0 L1 L2 with L1 cut in its middle: its links read, L1's damage found and named."""
        chain = chain_of("same size")
        folder = env.fresh("inc-chain-cut")
        cut = folder / "level1.tar"
        whole = archive(chain, 1).read_bytes()
        cut.write_bytes(whole[: len(whole) // 2])
        result = env.run("verify", archive(chain, 0), cut, archive(chain, 2))
        checks = Checks()
        if result.rc != 1 or "Traceback" in result.err:
            checks.failed.append(f"expected exit 1; {result.shown()}")
        line = next((x for x in result.lines if x.startswith("aviary verify: problem: ") and str(cut) in x), None)
        if line is None:
            checks.failed.append(f"no finding naming {cut}: {result.shown()}")
        expected = [rf"{re.escape(str(archive(chain, 0)))}: ok$", rf"{re.escape(str(cut))}: \d+ problem\(s\)$",
                    rf"{re.escape(str(archive(chain, 2)))}: ok$", r"chain of 3 archives, levels 0 to 2, .*: \d+ problem"]
        for pattern in expected:
            if not any(re.search(pattern, x) for x in result.lines):
                checks.failed.append(f"no line {pattern}: {result.shown()}")
        return checks.done((line or "").replace(str(folder) + "/", "")[:110])

    def chain_of_another_installation():
        """verify with the level 0 of another installation before this chain's L1."""
        chain = chain_of("same size")
        other = new_site(env, "inc-chain-other", seed=43)
        expect_ok(pack_g(env, other, "level0.tar"))
        result = env.run("verify", other.backups / "level0.tar", archive(chain, 1), archive(chain, 2))
        checks = Checks()
        line = checks(expect_error, result, re.escape(str(archive(chain, 1))) + r" \(archive .*, level 1\): of the chain"
                      r" whose level 0 is .*an archive of another chain or installation")
        return checks.done(refusal_note(line))

    case("verify L0 L1 L2 with L1 cut in its middle", "exit 1; a finding naming the cut archive; chain summary",
         chain_cut_in_the_middle)
    case("verify a chain after another installation's level 0", "exit 1, one line naming L1 and the base it"
         " expected", chain_of_another_installation)

    def unpack_chain_refused(name: str, given, where: str) -> str:
        """unpack L0 L1 L2 (as `given`) into a target holding L0: one line saying where; the target
        (its dumps and every object) as before, nothing staged left."""
        target = restored_level_0(env, archive(chain_of("same size"), 0), env.fresh(name))
        before = target.state()
        result = env.run("unpack", *target.args, *given)
        checks = Checks()
        line = checks(expect_error, result, where)
        checks(expect_same, before, target.state(), after_error=line or "")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done((line or "").replace(str(env.root) + "/", "")[:110])

    def unpack_chain_cut_in_the_middle(gzip: bool):
        chain = chain_of("same size")
        cut = env.fresh(f"inc-unpack-cut-{gzip}") / ("level1.tar.gz" if gzip else "level1.tar")
        whole = archive(chain, 1).read_bytes()
        whole = zlib.compress(whole, wbits=31) if gzip else whole  # (wbits 31: a gzip stream)
        cut.write_bytes(whole[: len(whole) // 2])
        return unpack_chain_refused(f"inc-unpack-cut-target-{gzip}", (archive(chain, 0), cut, archive(chain, 2)),
                                    re.escape(str(cut)))

    def unpack_chain_of_another_installation():
        chain = chain_of("same size")
        other = new_site(env, "inc-unpack-other", seed=47)
        expect_ok(pack_g(env, other, "level0.tar"))
        return unpack_chain_refused("inc-unpack-other-target", (other.backups / "level0.tar", archive(chain, 1),
                                    archive(chain, 2)), re.escape(str(archive(chain, 1))) + r" \(archive .*, level 1\):"
                                    r" of the chain whose level 0 is .*an archive of another chain or installation")

    def unpack_chain_from_stdin_of_another_installation():
        """The other installation's level 0 as `-`: its link is refused as its metadata.json comes."""
        chain = chain_of("same size")
        other = new_site(env, "inc-unpack-other-stdin", seed=53)
        expect_ok(pack_g(env, other, "level0.tar"))
        target = restored_level_0(env, archive(chain, 0), env.fresh("inc-unpack-other-stdin-target"))
        before = target.state()
        result = env.run("unpack", *target.args, "-", archive(chain, 1), archive(chain, 2),
                         stdin=(other.backups / "level0.tar").read_bytes())
        checks = Checks()
        line = checks(expect_error, result, re.escape(str(archive(chain, 1))) + r" .*another chain or installation")
        checks(expect_same, before, target.state(), after_error=line or "")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done((line or "")[:110])

    def unpack_chain_in_one_step():
        chain = chain_of("same size")
        into = env.fresh("inc-one-step")
        target = Target(str(into / "aviary.db"), str(into / "data"), env)
        checks = Checks()
        checks(expect_ok, env.run("unpack", "--create-schema", *target.args, *(archive(chain, n) for n in range(3))))
        checks(expect_same, chain["live"], target.state(), "target after L0 L1 L2 in one step (against the live)")
        checks(expect_no_leftovers, target.leftovers())
        return checks.done("exit 0; = live installation (dumps, object hashes)")

    case("unpack L0 L1 L2 in one step", "exit 0; = live installation (dumps, object hashes)", unpack_chain_in_one_step)
    unpack_refused = "exit 1, one line naming {}; target (dumps, objects) as before, nothing staged left"
    case("unpack L0 L1 L2 with L1 cut in its middle (plain)", unpack_refused.format("the cut archive"),
         lambda: unpack_chain_cut_in_the_middle(False), quick=True)
    case("unpack L0 L1 L2 with L1 cut in its middle (gzip)", unpack_refused.format("the cut archive"),
         lambda: unpack_chain_cut_in_the_middle(True))
    case("unpack a chain after another installation's level 0", unpack_refused.format("L1 and the base it expected"),
         unpack_chain_of_another_installation)
    case("unpack - L1 L2, - another installation's level 0", unpack_refused.format("L1 and the base it expected"),
         unpack_chain_from_stdin_of_another_installation)

    # 5. a document changed between the listing and the read

    def outcome(site: Site, received: bytes, result: Result, before, checks: Checks, changed: str) -> str:
        """Either exit 1 with one line (FILE as it was, the stream refused by verify), or exit 0
        with an archive that verify accepts, consistent with its manifest and with the new FILE."""
        stream = site.backups / "received.tar"
        stream.write_bytes(received)
        if result.rc == 0:
            checks(expect_ok, env.run("verify", stream))
            checks(expect_file_kept, site.snapshot, before)
            problems = consistency(received, piped_state(site.snapshot))
            if problems:
                checks.failed.append(f"exit 0, but {len(problems)} problem(s): {'; '.join(problems)[:400]}")
            carried = {e["key"]: e for e in manifest_of(received) if e["carried"]}
            entry = carried.get(changed)
            note = ("exit 0: carried as read" if entry else "exit 0: not carried") + \
                ", verify 0, FILE as before, FILE.pending = manifest"
            return note
        line = checks(expect_error, result, r"changed while packing.*run pack again|deleted while packing.*run pack"
                                            r" again")
        if line and changed not in line:
            checks.failed.append(f"the error does not name {changed}: {line[:200]}")
        checks(expect_file_kept, site.snapshot, before)
        checks(expect_no_partials, site.backups)
        checks(expect_verify_fails, env.run("verify", stream), WHERE_INC)
        return "exit 1: " + (line or "").split(": ", 2)[-1][:110]

    def after_the_hash(how: str):
        """pack -g to a pipe the drill does not read: once its metadata is in the pipe the plan
        (which hashes every new document) is done, and pack waits on the pipe a few documents
        in; the last carried document is then changed, before pack reads it again."""
        site, keys = big_site(f"inc-after-hash-{how}", seed=43)
        before = file_state(site.snapshot)
        last = site.data / keys[-1]
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        waiting(proc, blocked_on_pipe(proc), "pack waiting on a full pipe")
        if how == "same size":
            same_size_rewrite(last)
        elif how == "other size":
            last.write_bytes(last.read_bytes() + b"appended")
        else:
            last.unlink()
        received = read_all(proc)
        result = proc.wait(60)
        env.scan_piped("pack", bytes(received))
        checks = Checks()
        note = outcome(site, bytes(received), result, before, checks, keys[-1])
        if result.rc == 0:
            checks.failed.append("pack read the document before the drill changed it: the drill's timing is off")
        return checks.done(note)

    def during_the_hash(how: str):
        """1,500 touched documents are hashed before the last one (4 MiB, new) is; it is changed
        as soon as pack opens a document, in place, in pieces: before, during or after its hash."""
        site, last = many_site(f"inc-during-hash-{how}", seed=47 if how == "same size" else 53)
        before = file_state(site.snapshot)
        path = site.data / last
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        pid = proc.command_pid()
        box = {}

        def drain():
            box["received"] = read_all(proc)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            stopped_when(proc, lambda: open_under(pid, site.data / "users"), "pack reading a document")
        finally:
            resume(proc)
        rng = random.Random(9)
        with open(path, "r+b") as file:
            if how == "other size":
                file.truncate(path.stat().st_size - 4096)
            for offset in range(0, path.stat().st_size, 256 << 10):
                file.seek(offset)
                file.write(rng.randbytes(256 << 10)[:max(0, path.stat().st_size - offset)])
                file.flush()
                time.sleep(0.002)
        result = proc.wait(120)
        reader.join(30)
        received = bytes(box.get("received", b""))
        env.scan_piped("pack", received)
        checks = Checks()
        note = outcome(site, received, result, before, checks, last)
        return checks.done(note)

    def uncarried_rewritten():
        """A document the level 1 does not carry, rewritten once the plan is done: the archive and
        FILE record it as listed, and the next pack -g carries it (nothing is lost)."""
        site, keys = big_site("inc-uncarried", seed=59)
        before = file_state(site.snapshot)
        kept = next(k for k in site.keys() if "doc-2" in k)
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        waiting(proc, blocked_on_pipe(proc), "pack waiting on a full pipe")
        same_size_rewrite(site.data / kept)
        received = bytes(read_all(proc))
        result = proc.wait(60)
        env.scan_piped("pack", received)
        checks = Checks()
        note = outcome(site, received, result, before, checks, kept)
        if result.rc == 0:
            entry = next(e for e in manifest_of(received) if e["key"] == kept)
            if entry["carried"]:
                checks.failed.append(f"{kept} carried, though unchanged when listed")
            level_2 = pack_g(env, site, "level2.tar")
            if checks(expect_ok, level_2):
                again = (site.backups / "level2.tar").read_bytes()
                carried = {e["key"] for e in manifest_of(again) if e["carried"]}
                if kept not in carried:
                    checks.failed.append(f"the next level does not carry {kept}: its change is lost")
                problems = consistency(again, site.snapshot.read_bytes())
                if problems:
                    checks.failed.append(f"level 2: {'; '.join(problems)[:300]}")
                note += "; the level 2 carries it"
        else:
            checks.failed.append("expected exit 0: the document is not read by a level 1")
        return checks.done(note)

    either = "exit 1 'changed while packing; run pack again', FILE kept; or exit 0, verify 0, manifest = members = FILE.pending"
    case("carried document rewritten at the same size after the hash", either,
         lambda: after_the_hash("same size"), quick=True)
    case("carried document grown after the hash", either, lambda: after_the_hash("other size"))
    case("carried document deleted after the hash", "exit 1, one line naming it ('run pack again'), FILE kept",
         lambda: after_the_hash("deleted"))
    case("carried document (4 MiB) rewritten in place while pack -g hashes", either,
         lambda: during_the_hash("same size"))
    case("carried document (4 MiB) shrunk and rewritten while pack -g hashes", either,
         lambda: during_the_hash("other size"))
    case("uncarried document rewritten mid-pack", "exit 0, verify 0, FILE.pending = manifest; the next level carries it",
         uncarried_rewritten)

    def expect_left_out(checks: Checks, result: Result, name: str, received: bytes, stream: Path) -> None:
        """pack warned that `name` was deleted while packing, and what it wrote (saved as
        `stream`) passes verify."""
        if not re.search(re.escape(name) + ".*deleted while packing", result.err):
            checks.failed.append(f"no warning naming {name}: {result.err.strip()[:200]}")
        stream.write_bytes(received)
        checks(expect_ok, env.run("verify", stream))

    def level_0_vanished(size: int):
        """A level 0 (pack -g, no FILE yet) to a pipe the drill does not read; once pack waits on
        it, the last document (of `size` bytes) is deleted.  Deleted while pack runs: left out,
        named in vanished.ndjson, and FILE must not list it (the archive does not hold it)."""
        site = new_site(env, f"inc-l0-vanished-{size}", seed=67)
        user, rng = site.users()[0], random.Random(size)
        count = max(8, (3 << 20) // size)
        keys = [layout.storage_key(user, f"big/doc-{n:04d}.pdf") for n in range(count)]
        for key in keys:
            write_doc(site, key, b"%PDF-1.4\n" + rng.randbytes(size - 9))
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        waiting(proc, blocked_on_pipe(proc), "pack waiting on a full pipe")
        (site.data / keys[-1]).unlink()
        received = bytes(read_all(proc))
        result = proc.wait(60)
        env.scan_piped("pack", received)
        member = layout.document_member(*layout.document_of_key(keys[-1]))
        checks = Checks()
        if checks(expect_ok, result):
            expect_left_out(checks, result, member, received, site.backups / "level0.tar")
            vanished = tar_members(received).get(layout.VANISHED) or b""
            if member.encode() not in vanished:
                checks.failed.append(f"vanished.ndjson does not name {member}")
            problems = level_0_consistency(received, piped_state(site.snapshot))
            if problems:
                checks.failed.append(f"FILE and archive disagree: {'; '.join(problems)[:300]}")
        else:
            checks(expect_file_kept, site.snapshot, None)
            checks(expect_no_partials, site.backups)
        return checks.done(f"exit 0, left out, in vanished.ndjson, not in FILE ({count} documents of {human(size)})")

    def deleted_before_its_hash(size: int):
        """pack -g (a level 1) stopped (SIGSTOP) while it hashes the 1,500 touched documents; the
        new last document is deleted, and pack resumed.  Deleted since the listing: left out of
        the incremental and of FILE, with a warning."""
        site, last = many_site(f"inc-deleted-before-hash-{size}", seed=71, last_size=size)
        before = file_state(site.snapshot)
        proc = env.start("pack", *site.source.args, "-g", site.snapshot, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE)
        pid = proc.command_pid()
        box = {}
        reader = threading.Thread(target=lambda: box.update(received=read_all(proc)), daemon=True)
        reader.start()
        try:
            stopped_when(proc, lambda: open_under(pid, site.data / "users" / last.split("/")[1] / "pdfs" / "many"),
                         "pack hashing the touched documents")
            (site.data / last).unlink()
        finally:
            resume(proc)
        result = proc.wait(120)
        reader.join(30)
        received = bytes(box.get("received", b""))
        env.scan_piped("pack", received)
        checks = Checks()
        if checks(expect_ok, result):
            expect_left_out(checks, result, last, received, site.backups / "level1.tar")
            if any(e["key"] == last for e in manifest_of(received)):
                checks.failed.append(f"the manifest lists {last}, deleted before it was read")
            problems = consistency(received, piped_state(site.snapshot))
            if problems:
                checks.failed.append(f"{'; '.join(problems)[:300]}")
        else:  # a failed pack, at least, keeps FILE
            checks(expect_file_kept, site.snapshot, before)
            checks(expect_no_partials, site.backups)
        return checks.done(f"exit 0, a warning; left out of the manifest and FILE ({human(size)})")

    for size in (8 << 10, 4 << 20):
        case(f"level 1: a new document of {human(size)} deleted before pack -g hashes it",
             "exit 0, a warning; verify 0; not in the manifest nor FILE.pending; = manifest",
             lambda size=size: deleted_before_its_hash(size))
    for size in (8 << 10, BIG):
        case(f"level 0 (pack -g, no FILE): a document of {human(size)} deleted mid-pack",
             "exit 0, a warning; verify 0; vanished.ndjson names it; FILE.pending = the archive's documents",
             lambda size=size: level_0_vanished(size))

    # 6. S3

    def s3_chain_killed():
        pg_source = env.new_database()
        files = env.fresh("inc-s3-source") / "files"
        installation(pg_source, files, users=3, docs_per_user=3, seed=61)
        source = Target(pg_source, fx._bucket_from(files), env, s3=True)
        backups = env.fresh("inc-s3-backups")
        snapshot = backups / "snapshot.ndjson"
        client = env.s3.client()
        target = fx.pg_s3_target()
        checks = Checks()
        try:
            expect_ok(env.run("pack", *source.args, "-g", snapshot, "-o", backups / "level0.tar", timeout=120))
            keys = sorted(k for k in (o["Key"] for o in client.list_objects_v2(Bucket=source.storage)
                                      .get("Contents", [])) if k.startswith("users/"))
            user = keys[0].split("/")[1]
            rng = random.Random(7)
            for n in range(150):
                client.put_object(Bucket=source.storage, Key=layout.storage_key(user, f"new/n-{n:03d}.pdf"),
                                  Body=b"%PDF-1.4\n" + rng.randbytes(16 << 10))
            body = client.get_object(Bucket=source.storage, Key=keys[1])["Body"].read()
            client.put_object(Bucket=source.storage, Key=keys[1], Body=bytes(b ^ 0x55 for b in body))
            client.put_object(Bucket=source.storage, Key=keys[2], Body=body + b"grown")
            client.delete_object(Bucket=source.storage, Key=keys[3])
            with psycopg.connect(pg_source, autocommit=True) as conn:
                conn.execute("UPDATE system_settings SET value = 'changed-on-s3' WHERE key = 'smtp_host'")
            expect_ok(env.run("pack", *source.args, "-g", snapshot, "-o", backups / "level1.tar", timeout=120))
            carried = sum(e["carried"] for e in manifest_of((backups / "level1.tar").read_bytes()))
            expect_ok(env.run("unpack", *target.args, backups / "level0.tar", timeout=120))
            before = target.state()
            line, result = None, None
            try:
                with open(backups / "level1.tar", "rb") as stream:
                    proc = env.start("unpack", *target.args, "--s3-concurrency", "8", stdin=stream)
                staged = waiting(proc, lambda: staged_count(client, target.storage, 20),
                                 "20 objects staged", pause=0.005)
                env.s3.kill()
                result = proc.wait(180)
            finally:
                if not port_answers(env.s3.ports["s3"]):
                    env.s3.start()
            line = checks(expect_error, result, WHERE_STAGED)
            if line:
                prefix = re.search(WHERE_STAGED, line)[1]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.storage, Prefix=prefix):
                    for item in page.get("Contents", []):
                        client.delete_object(Bucket=target.storage, Key=item["Key"])
            checks(expect_same, before, target.state(), "target (restored level 0)", after_error=line or "")
            checks(expect_no_leftovers, target.leftovers())
            again = env.run("unpack", *target.args, backups / "level1.tar", timeout=180)
            if checks(expect_ok, again):
                checks(expect_same, source.state(), target.state(), "target after L1 again (against the source)")
                checks(expect_no_leftovers, target.leftovers())
        finally:
            fx.drop_database(target.db)
            fx.drop_database(pg_source)
        left = re.search(r"(\d+) staged object\(s\) could not be removed", line or "")
        return checks.done(f"{carried} carried; killed with {staged} staged: exit 1 naming the prefix "
                           f"({left[1] if left else '?'} left); deleted: = L0; L1 again: = source")

    case("S3: L0 + L1 chain into PostgreSQL+S3, S3 killed mid level-1 restore",
         "exit 1, one line naming the staged prefix; after restart and deleting it, target = L0; L1 again = source",
         s3_chain_killed, quick=True, alone=True)
    return cases


def human(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def refusal_note(line: str | None) -> str:
    """'<path>: the target <why>; parent and base named', from a restore's refusal of an incremental."""
    found = re.match(r"aviary unpack: users/[0-9a-f-]+/pdfs/(.+?): this incremental .*? and the target (.+?): restore",
                     line or "")
    return f"refused: {found[1]}: the target {found[2]}; parent and base named" if found else (line or "")[:150]


def staged_count(client, bucket: str, count: int) -> int:
    found = client.list_objects_v2(Bucket=bucket, Prefix=".aviary-restore-").get("KeyCount", 0)
    return found if found >= count else 0
