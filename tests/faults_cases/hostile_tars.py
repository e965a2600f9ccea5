"""Family 3: hostile tars.

Each archive starts like Aviary's (a valid metadata.json) and then turns hostile.  It goes
through `verify`, `unpack -C DIR` (a sentinel folder beside DIR, /etc/passwd, an absolute
path: all untouched) and a restore into SQLite + a folder (target as before).  Each command
runs under a time limit, and its time and peak memory (wait4) are printed and bounded."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import xxhash

from .fixtures import Fixtures, files_under, outside_untouched, passwd_digest, sentinel_dir
from .harness import Case, Checks, Env, Fail, Result, expect_error, expect_no_leftovers, expect_ok, expect_same, leftovers

MAX_RSS_MB = 256
USER = "0f17a300-7e62-4a0a-9df9-fd789c653938"
ABSOLUTE = "/tmp/aviary-faults-absolute.txt"
METADATA = json.dumps({
    "aviary_version": "faults", "git_commit": "", "export_timestamp": "2026-01-01T00:00:00Z",
    "database_type": "sqlite", "users_exported": None, "total_documents": 0, "total_size_bytes": 0,
    "exported_tables": [], "total_users": 0, "total_api_keys": 0,
}, indent=2).encode()


# --- building archives ------------------------------------------------------------------------


def entry(kind: str, name: str, data: bytes | str = b"", size: int | None = None) -> tarfile.TarInfo:
    """One member: file (data), dir, symlink/hardlink (data = the link target), chr, blk, fifo."""
    info = tarfile.TarInfo(name)
    info.mtime, info.mode = 1767225600, 0o644
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE,
                 "fifo": tarfile.FIFOTYPE}[kind]
    if kind in ("symlink", "hardlink"):
        info.linkname = data
    elif kind in ("chr", "blk"):
        info.devmajor, info.devminor = 1, 3
    elif kind == "file":
        info.size = len(data) if size is None else size
    return info


def tar_of(*members, fmt=tarfile.PAX_FORMAT, checksums: bool = False, pax: dict | None = None) -> bytes:
    """metadata.json, then `members` ((TarInfo, data) pairs or TarInfos), then (optionally)
    a true checksums.xxh128, then the end-of-archive marker."""
    buffer = io.BytesIO()
    sums = []
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape",
                      pax_headers=pax) as tar:
        items = [(entry("file", "metadata.json", METADATA), METADATA)] + [
            m if isinstance(m, tuple) else (m, None) for m in members]
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            if info.isfile() and data is not None:
                sums.append(f"{xxhash.xxh3_128_hexdigest(data)}  {info.name}\n")
        if checksums:
            text = "".join(sums).encode()
            tar.addfile(entry("file", "checksums.xxh128", text), io.BytesIO(text))
    return buffer.getvalue()


def file(name: str, data: bytes = b"hostile\n") -> tuple[tarfile.TarInfo, bytes]:
    return entry("file", name, data), data


def header_only(info: tarfile.TarInfo, fmt=tarfile.GNU_FORMAT) -> bytes:
    return info.tobuf(format=fmt, encoding="utf-8", errors="surrogateescape")


def one_tb_member() -> bytes:
    """A member claiming 1 TB (a GNU base-256 size), its header, 100 bytes of it, then EOF."""
    huge = entry("file", f"filesystem/documents/{USER}/huge.pdf", size=1 << 40)
    return _members_before_end(tar_of()) + header_only(huge) + b"%PDF" * 25


def nul_in_pax_path() -> bytes:
    """A pax header whose path holds a NUL byte, for a member that follows."""
    body = b" path=nul\x00byte.txt\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    record = str(length).encode() + body
    pax = entry("file", "././@PaxHeader", record)
    pax.type = tarfile.XHDTYPE
    return (_members_before_end(tar_of()) + header_only(pax, tarfile.USTAR_FORMAT) + record
            + bytes(-len(record) % 512) + header_only(entry("file", "placeholder.txt", b"x"), tarfile.USTAR_FORMAT)
            + b"x" + bytes(511) + bytes(1024))


def _members_before_end(archive: bytes) -> bytes:
    """A finished tarfile archive without its end marker and record padding."""
    end = len(archive)
    while end >= 512 and archive[end - 512:end] == bytes(512):
        end -= 512
    return archive[:end]


def write_bomb(path: Path, size: int = 10 << 30) -> None:
    """A gzip'd archive whose one document is `size` bytes of zeros, streamed to `path`: one
    deflate block of 16 MiB zeros, fully flushed, is repeated (identical each time), so the
    file is about 1/1000 of what it inflates to.  Its checksum line for the bomb is wrong, so
    every reader must read it all, then fail."""
    chunk = bytes(16 << 20)
    assert size % len(chunk) == 0
    name = f"filesystem/documents/{USER}/bomb.pdf"
    head = _members_before_end(tar_of()) + header_only(entry("file", name, size=size))
    sums = (f"{xxhash.xxh3_128_hexdigest(METADATA)}  metadata.json\n{'0' * 32}  {name}\n").encode()
    tail = header_only(entry("file", "checksums.xxh128", sums)) + sums + bytes(-len(sums) % 512) + bytes(1024)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(head)
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # gzip header, no name, mtime 0
        out.write(deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH))
        block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
        again = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
        if block != again:
            raise Fail("drill: a flushed deflate block of zeros is not reproducible")
        out.write(block * 2)
        crc = zlib.crc32(chunk, zlib.crc32(chunk, crc))
        for _ in range(size // len(chunk) - 2):
            out.write(block)
            crc = zlib.crc32(chunk, crc)
        out.write(deflate.compress(tail) + deflate.flush())
        crc = zlib.crc32(tail, crc)
        total = len(head) + size + len(tail)
        out.write(crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little"))


def write_many_empty(path: Path, count: int = 100_000) -> None:
    """metadata.json, a folder `junk` and `count` empty files in it, true checksums; gzip'd."""
    empty = xxhash.xxh3_128_hexdigest(b"")
    deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(deflate.compress(_members_before_end(tar_of(entry("dir", "junk")))))
        sums = [f"{xxhash.xxh3_128_hexdigest(METADATA)}  metadata.json\n"]
        for n in range(count):
            name = f"junk/{n:06d}"
            out.write(deflate.compress(header_only(entry("file", name), tarfile.USTAR_FORMAT)))
            sums.append(f"{empty}  {name}\n")
        text = "".join(sums).encode()
        out.write(deflate.compress(header_only(entry("file", "checksums.xxh128", text), tarfile.USTAR_FORMAT)
                                   + text + bytes(-len(text) % 512) + bytes(1024)))
        out.write(deflate.flush())


# --- the cases ---------------------------------------------------------------------------------


@dataclass
class Hostile:
    name: str
    build: Callable[[Path], None]  # writes the archive to the path given
    where: str = ""  # what the error must name (a regex)
    refused_by: tuple[str, ...] = ("verify", "-C", "restore")  # the others exit 0 (restore: --dry-run)
    prepare: Callable[[Path], None] | None = None  # readies the extraction folder
    timeout: float = 60
    quick: bool = False


def writes(data_or_builder) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        data = data_or_builder() if callable(data_or_builder) else data_or_builder
        path.write_bytes(data)
    return build


def link_in(out_name: str, target: str) -> Callable[[Path], None]:
    def prepare(out: Path) -> None:
        out.mkdir(mode=0o700)
        os.symlink(target, out / out_name)
    return prepare


EXTRACT = ("-C",)  # hostile only to extraction: verify and restore accept it
LONG = "n" * 300
LONG_PATH = "/".join(["d" * 99, "e" * 99, "f" * 98 + ".pdf"])  # 300 bytes, short components

HOSTILE = [
    Hostile("../ name", writes(lambda: tar_of(file("../evil.txt"))), r"\.\./evil\.txt", quick=True),
    Hostile("a/../../ name", writes(lambda: tar_of(file("a/../../evil.txt"))), r"a/\.\./\.\./evil"),
    Hostile("./../ name", writes(lambda: tar_of(file("./../evil.txt"))), r"\.\./evil"),
    Hostile("absolute name", writes(lambda: tar_of(file(ABSOLUTE))), r"/tmp/aviary-faults-absolute"),
    Hostile("symlink to /etc/passwd, then a file through it",
            writes(lambda: tar_of(entry("symlink", "passwd", "/etc/passwd"), file("passwd", b"root::0:0::/:/bin/sh\n"))),
            r"passwd"),
    Hostile("symlink to .., then a file through it",
            writes(lambda: tar_of(entry("symlink", "escape", ".."), file("escape/evil.txt"))), r"escape"),
    Hostile("hardlink to /etc/passwd", writes(lambda: tar_of(entry("hardlink", "hard", "/etc/passwd"))), r"hard"),
    Hostile("hardlink to metadata.json", writes(lambda: tar_of(entry("hardlink", "hard", "metadata.json"))), r"hard"),
    Hostile("character device", writes(lambda: tar_of(entry("chr", "null"))), r"null"),
    Hostile("block device", writes(lambda: tar_of(entry("blk", "disk"))), r"disk"),
    Hostile("FIFO", writes(lambda: tar_of(entry("fifo", "pipe"))), r"pipe"),
    Hostile("duplicate member", writes(lambda: tar_of(file("twice.txt", b"one"), file("twice.txt", b"two"))),
            r"twice\.txt"),
    Hostile("duplicate as x and ./x", writes(lambda: tar_of(file("twice.txt"), file("./twice.txt"))), r"twice\.txt"),
    Hostile("a folder, then a file of the same name",
            writes(lambda: tar_of(entry("dir", "both"), file("both"))), r"both"),
    Hostile("a file, then a folder under it",
            writes(lambda: tar_of(file("both"), file("both/inner.txt"))), r"both", refused_by=EXTRACT),
    Hostile("symlink already in DIR on a member's path", writes(lambda: tar_of(file("docs/evil.txt"))),
            r"docs", prepare=link_in("docs", "../sentinel"), refused_by=EXTRACT),
    Hostile("symlink already in DIR where a file goes", writes(lambda: tar_of(file("victim", b"overwrite\n"))),
            r"victim", prepare=link_in("victim", "/etc/passwd"), refused_by=EXTRACT),
    Hostile("non-UTF-8 name", writes(lambda: tar_of(file("bad-\udcff\udcfe.pdf"), fmt=tarfile.GNU_FORMAT)),
            r"bad-"),
    Hostile("NUL in a pax path", writes(nul_in_pax_path), r"nul"),
    Hostile("newline in a refused name (one-line error?)", writes(lambda: tar_of(file("../evil\nsecond line.txt"))),
            r"evil"),
    Hostile("escape sequence in a refused name", writes(lambda: tar_of(file("../\x1b[2J\x1b[31mred.txt"))),
            r"red\.txt"),
    Hostile("300-byte name component", writes(lambda: tar_of(file(LONG))), r"n{20}"),
    Hostile("300-byte path of short components (harmless)", writes(lambda: tar_of(file(LONG_PATH), checksums=True)),
            refused_by=()),
    Hostile("backslash name ..\\evil.txt (harmless on Linux)",
            writes(lambda: tar_of(file("..\\evil.txt"), checksums=True)), refused_by=()),
    Hostile("member claiming 1 TB, then EOF", writes(one_tb_member), r"huge\.pdf"),
    Hostile("gzip bomb: 10 GiB of zeros in one member", write_bomb, r"bomb\.pdf", timeout=300),
    Hostile("100,000 empty members", write_many_empty, refused_by=(), timeout=300),
]


def control_characters(result: Result) -> None:
    if any(ord(c) < 32 and c != "\n" for c in result.err):
        raise Fail(f"{result.name}: raw control characters on stderr: {result.err.strip()[:120]!r}")


def bounded(results: list[Result]) -> str:
    for result in results:
        if result.rss_mb > MAX_RSS_MB:
            raise Fail(f"{result.name}: peak memory {result.rss_mb:.0f} MB (limit {MAX_RSS_MB})")
    return "; ".join(f"{r.name.split()[-1]}{' -C' if '-C' in r.args else ''} {r.measure()}" for r in results)


def expectation(refused_by: tuple[str, ...]) -> str:
    if not refused_by:
        return "harmless: verify 0, -C 0 inside DIR, restore --dry-run 0"
    if refused_by == EXTRACT:
        return "-C refused, nothing outside DIR; verify 0, restore --dry-run 0"
    return "refused: verify 1, -C 1, restore 1; nothing outside DIR"


def hostile_tar_cases(env: Env, fx: Fixtures) -> list[Case]:
    def case(spec: Hostile) -> Case:
        def run():
            folder = env.fresh(spec.name)
            archive = folder / "archive"
            spec.build(archive)
            Path(ABSOLUTE).unlink(missing_ok=True)
            passwd = passwd_digest()

            (folder / "x").mkdir()
            out, sentinel, kept = sentinel_dir(folder / "x")
            if spec.prepare:
                spec.prepare(out)
            target = fx.sqlite_target(folder)
            before = target.state()
            restore_args = [] if "restore" in spec.refused_by else ["--dry-run"]
            commands = [["verify", "--no-progress", archive], ["unpack", "-C", out],
                        ["unpack", *restore_args, *target.args]]
            # The three touch different things: side by side when each takes a while.
            with ThreadPoolExecutor(3 if spec.timeout > 60 else 1) as pool:
                results = list(pool.map(lambda args: env.run(*args, stdin=None if args[0] == "verify" else archive,
                                                             timeout=spec.timeout), commands))
            verify, extract, restore = results
            checks = Checks()
            for result in results:
                checks(control_characters, result)

            if "verify" in spec.refused_by:
                if verify.rc != 1 or "Traceback" in verify.err:
                    checks.failed.append(f"expected exit 1; {verify.shown()}")
            else:
                checks(expect_ok, verify)
            if "-C" in spec.refused_by:
                checks(expect_error, extract, spec.where)
                made = [p for p in files_under(out) if not p.is_symlink()]
                if made:
                    checks.failed.append(f"unpack -C left a file: {made[0]}")
            else:
                checks(expect_ok, extract)
                if not files_under(out):
                    checks.failed.append("unpack -C extracted nothing")
            if "restore" in spec.refused_by:
                checks(expect_error, restore, spec.where)
            else:
                checks(expect_ok, restore)
            checks(outside_untouched, folder / "x", out, sentinel, kept, passwd)
            checks(expect_same, before, target.state())
            checks(expect_no_leftovers, leftovers(folder))
            checks(bounded, results)
            return checks.done(bounded(results) if not checks.failed else "")
        return Case("3 hostile tar", spec.name, expectation(spec.refused_by), run, quick=spec.quick)

    return [case(spec) for spec in HOSTILE]
