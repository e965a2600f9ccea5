"""Families 1 and 2: truncated and corrupted archives.

Each damaged archive goes through `verify` (exit 1, a finding that says where), `unpack -C`
(one line, no file in the folder, nothing beside it) and a restore into a target that holds
other data (one line, the database and every object as before, no staging leftovers)."""

from __future__ import annotations

import bisect
import zlib
from pathlib import Path

from .fixtures import Fixtures, Span, files_under, outside_untouched, passwd_digest, sentinel_dir, spans
from .harness import (WHERE_ARCHIVE, Case, Checks, Env, expect_error, expect_no_leftovers, expect_same,
                      expect_verify_fails, leftovers)


def refused_everywhere(env: Env, fx: Fixtures, label: str, data: bytes, *, pg: bool = False) -> str:
    """The checks every damaged archive must pass; returns the restore's error line."""
    folder = env.fresh(label)
    damaged = folder / "damaged"
    damaged.write_bytes(data)

    checks = Checks()
    checks(expect_verify_fails, env.run("verify", damaged))

    check_extraction_refused(env, checks, folder, damaged, WHERE_ARCHIVE)

    target = fx.pg_s3_target() if pg else fx.sqlite_target(folder)
    try:
        before = target.state()
        line = checks(expect_error, env.run("unpack", *target.args, stdin=damaged), WHERE_ARCHIVE)
        checks(expect_same, before, target.state())
        checks(expect_no_leftovers, target.leftovers() + leftovers(folder))
    finally:
        if pg:
            fx.drop_database(target.db)
    return checks.done(line)


def check_extraction_refused(env: Env, checks: Checks, folder: Path, damaged: Path, where: str) -> None:
    """`unpack -C` of a damaged archive: an error naming `where`, no file that passes for
    complete, nothing written beside its folder."""
    (folder / "x").mkdir()
    out, sentinel, kept = sentinel_dir(folder / "x")
    passwd = passwd_digest()
    checks(expect_error, env.run("unpack", "-C", out, stdin=damaged), where)
    if files_under(out):
        checks.failed.append(f"unpack -C left a file that passes for complete: {files_under(out)[0]}")
    checks(outside_untouched, folder / "x", out, sentinel, kept, passwd)


def truncation_points(layout: tuple[list[Span], int]) -> list[tuple[str, int]]:
    """(where, offset) pairs across the whole structure of a plain pack."""
    members, marker = layout
    files = [m for m in members if m.type == "file"]
    meta = files[0]
    points = [("metadata.json header, 1 byte", 1), ("metadata.json header, mid-name", 60),
              ("metadata.json header, at magic", 257), ("metadata.json header, 1 byte short", 511),
              ("metadata.json data, 1 byte", meta.data + 1), ("inside metadata.json", meta.data + meta.size // 2),
              ("metadata.json, last byte missing", meta.data + meta.size - 1)]
    if meta.end > meta.data + meta.size + 1:
        points.append(("metadata.json padding", meta.data + meta.size + 1))
    dirs = [m for m in members if m.type == "dir"]
    points += [(f"inside the header of dir {dirs[0].name}", dirs[0].header + 200),
               (f"between members, before {dirs[-1].name}", dirs[-1].header)]
    for table in (m for m in files if m.name.startswith("database/")):
        short = table.name.removeprefix("database/")
        points += [(f"{short}: inside its header", table.header + 100),
                   (f"{short}: first byte of its JSON", table.data + 1),
                   (f"mid-table {short}", table.data + table.size // 2),
                   (f"{short}: last byte missing", table.data + table.size - 1)]
    for n, doc in enumerate(m for m in files if m.name.startswith("filesystem/")):
        if n >= 3:
            break
        short = f"document {n + 1}"
        points += [(f"{short}: header checksum field", doc.header + 150),
                   (f"{short}: 10 bytes in", doc.data + 10), (f"mid-file, {short}", doc.data + doc.size // 2),
                   (f"{short}: last byte missing", doc.data + doc.size - 1),
                   (f"{short}: inside its padding", doc.data + doc.size + 10)]
    sums = files[-1]
    points += [("just before checksums.xxh128", sums.header), ("checksums.xxh128: inside its header", sums.header + 300),
               ("inside checksums.xxh128", sums.data + sums.size // 2),
               ("checksums.xxh128: last byte missing", sums.data + sums.size - 1),
               ("end marker: first byte", marker + 1), ("end marker: first block only", marker + 512),
               ("end marker: second block, 1 byte", marker + 513),
               ("end marker: 1 byte short", marker + 1023)]
    return points


def inflated_sizes(gz: bytes) -> list[int]:
    """After each byte of `gz`, how many bytes it has inflated to so far."""
    inflater = zlib.decompressobj(31)
    produced, sizes = 0, []
    for n in range(len(gz)):
        produced += len(inflater.decompress(gz[n:n + 1]))
        sizes.append(produced)
    return sizes


def truncation_cases(env: Env, fx: Fixtures) -> list[Case]:
    plain = fx.archive
    gz = fx.archive_gz
    gz_points = truncation_points(spans(zlib.decompress(gz, 31)))
    sizes = inflated_sizes(gz)
    expected = "verify 1; -C 1, no file; restore 1, target as before"
    cases = []

    def case(label, data, quick=False, pg=False):
        def run():
            line = refused_everywhere(env, fx, label, data, pg=pg)
            return line.split(": ", 1)[1][:90]
        name = f"cut {label}" + (" -> PostgreSQL+S3" if pg else "")
        cases.append(Case("1 truncated", name, expected + (" (pg+s3)" if pg else ""), run, quick=quick))

    for where, offset in truncation_points(fx.layout):
        case(f"plain @{offset} ({where})", plain[:offset], quick=where == "mid-table users.json",
             pg=False)
    for where, offset in gz_points[::2]:  # every other point: the same structure, compressed
        cut = bisect.bisect_left(sizes, offset) + 1  # the shortest prefix reaching `offset`
        case(f"gzip @{cut} ({where})", gz[:cut], quick=where == "mid-file, document 1")
    for where, offset in (("gzip header, 10 bytes", 10), ("gzip trailer: CRC cut", len(gz) - 6),
                          ("gzip trailer: 1 byte short", len(gz) - 1)):
        case(f"gzip @{offset} ({where})", gz[:offset])
    # A few into PostgreSQL and S3.
    by_label = dict(truncation_points(fx.layout))
    for where in ("mid-table users.json", "mid-file, document 2", "just before checksums.xxh128"):
        case(f"plain @{by_label[where]} ({where})", plain[:by_label[where]], quick=where.startswith("mid-file"),
             pg=True)
    case(f"gzip @{len(gz) // 2} (gzip halfway)", gz[:len(gz) // 2], pg=True)
    zst = fx.archive_zst
    for where, offset in (("zstd magic only", 4), ("zstd frame header", 8), ("zstd a quarter in", len(zst) // 4),
                          ("zstd three quarters in", len(zst) * 3 // 4), ("zstd checksum cut", len(zst) - 2),
                          ("zstd 1 byte short", len(zst) - 1)):
        case(f"zstd @{offset} ({where})", zst[:offset], quick=where == "zstd checksum cut")
    case(f"zstd @{len(zst) // 2} (zstd halfway)", zst[:len(zst) // 2], pg=True)
    return cases


def flip(data: bytes, at: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 1 << bit
    return bytes(changed)


def corruption_cases(env: Env, fx: Fixtures) -> list[Case]:
    plain, gz, zst = fx.archive, fx.archive_gz, fx.archive_zst
    meta, users, doc, sums = (fx.member("metadata.json"), fx.member("database/users.json"),
                              fx.member("filesystem/"), fx.member("checksums.xxh128"))
    username = plain.index(b'"username":"admin"', users.data) + len('"username":"') + 1
    flips = [
        ("bit flip in a document's data", flip(plain, doc.data + 500), False),
        ("bit flip in a table value (a username)", flip(plain, username), True),
        ("bit flip in table JSON syntax ('[')", flip(plain, users.data, 6), False),
        ("bit flip in metadata.json", flip(plain, meta.data + 5), False),
        ("bit flip in checksums.xxh128", flip(plain, sums.data + 3), False),
        ("bit flip in a header's checksum field", flip(plain, doc.header + 150), True),
        ("bit flip in a header's name", flip(plain, users.header + 3), False),
        ("bit flip in a header's size field", flip(plain, doc.header + 124 + 9), False),
        ("gzip: bit flip mid-stream", flip(gz, len(gz) // 2, 3), True),
        ("gzip: bit flip in the CRC trailer", flip(gz, len(gz) - 6), False),
        ("gzip: bit flip in the length trailer", flip(gz, len(gz) - 2), False),
        ("zstd: bit flip mid-stream", flip(zst, len(zst) // 2, 3), True),
        ("zstd: bit flip in the frame checksum", flip(zst, len(zst) - 2), False),
    ]
    expected = "verify 1; -C 1, no file; restore 1, target as before"

    def case(label, data, quick):
        def run():
            return refused_everywhere(env, fx, label, data).split(": ", 1)[1][:90]
        return Case("2 corrupted", label, expected, run, quick=quick)

    return [case(*spec) for spec in flips]
