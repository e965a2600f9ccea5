"""The tar layer, checked against the real tools: GNU tar, Python's tarfile,
xxhsum, gzip, zstd, xz and bzip2."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
import xxhash

from aviarytools.errors import ArchiveError
from aviarytools.tar import (
    CHECKSUMS_NAME,
    GunzipReader,
    NameSet,
    TarWriter,
    format_line,
    gzip_output,
    member_name_problem,
    open_input,
    parse_checksums,
    parse_line,
    read_members,
)

MTIME = 1_753_610_000  # 2025-07-27
USER = "0b6f7d4e-3c1a-4f7e-9a55-2d8c1e7b9f01"
DOCS = f"filesystem/documents/{USER}"
LONG_NAME = f"{DOCS}/{'Quarterly reports ' * 6}/{'very long document title ' * 5}.pdf"
BIG = random.Random(7).randbytes(5_000_000)
FILES = {
    "metadata.json": b'{"aviary_version": "1.6.0"}\n',
    "database/users.json": b'[\n  {\n    "username": "m\\u00fcller"\n  }\n]\n',
    "database/unknown.json": b"null\n",
    f"{DOCS}/empty.pdf": b"",
    f"{DOCS}/Ünïcödé folder/résumé 2024.pdf": b"%PDF-1.7 r\xc3\xa9sum\xc3\xa9",
    f"{DOCS}/日本語のノート.pdf": b"%PDF-1.4 nihongo",
    f"{DOCS}/with  two spaces .pdf": b"spaces",
    f"{DOCS}/back\\slash.pdf": b"backslash",
    LONG_NAME: b"a name of more than 256 bytes",
    f"{DOCS}/big.bin": BIG,
}
DIRS = ["database", "filesystem", "filesystem/documents", DOCS, f"{DOCS}/Ünïcödé folder",
        f"{DOCS}/{'Quarterly reports ' * 6}"]


def odd_chunks(data: bytes):
    """`data` in pieces of awkward sizes, as a network stream might give it."""
    sizes = [1, 511, 513, 4095, 65537, 1_000_003]
    pos = 0
    for i in range(len(data)):
        if pos >= len(data):
            return
        yield data[pos : pos + sizes[i % len(sizes)]]
        pos += sizes[i % len(sizes)]


def digest(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


def write_sample(out) -> TarWriter:
    writer = TarWriter(out)
    writer.add_bytes("metadata.json", FILES["metadata.json"], MTIME)
    for name in DIRS:
        writer.add_dir(name, MTIME)
    for name, data in FILES.items():
        if name == f"{DOCS}/big.bin":
            assert writer.add_file(name, len(data), odd_chunks(data), MTIME) == digest(data)
        elif name != "metadata.json":
            assert writer.add_bytes(name, data, MTIME, mode=0o600) == digest(data)
    writer.write_checksums(mtime=MTIME)
    writer.close()
    return writer


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "aviary.tar"
    with open(path, "wb") as out:
        write_sample(out)
    return path


def read_all(stream) -> dict[str, tuple[str, str]]:
    """name -> (type, XXH128 of the content) for every member."""
    found = {}
    for member in read_members(stream):
        hasher = xxhash.xxh3_128()
        for chunk in member.chunks():
            hasher.update(chunk)
        found[member.name] = (member.type, hasher.hexdigest())
    return found


def run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    return subprocess.run(args, capture_output=True, env=env, **kwargs)


# --- Writing, then reading back with every reader we know -------------------


def test_our_reader_reads_back_every_member_and_its_digest(sample):
    with open(sample, "rb") as stream:
        found = read_all(stream)
    for name, data in FILES.items():
        assert found[name] == ("file", digest(data))
    for name in DIRS:
        assert found[name] == ("dir", digest(b""))
    assert list(found)[0] == "metadata.json"
    assert list(found)[-1] == CHECKSUMS_NAME


def test_a_producer_may_hash_its_own_chunks():
    """pack hashes a document in the thread that reads it; the writer records that digest."""
    hasher = xxhash.xxh3_128()

    def chunks():
        for chunk in (b"%PDF-1.7 ", b"read ahead"):
            hasher.update(chunk)
            yield chunk

    out = io.BytesIO()
    writer = TarWriter(out)
    assert writer.add_file("a.pdf", 19, chunks(), 0, hasher=hasher) == digest(b"%PDF-1.7 read ahead")
    writer.write_checksums(mtime=0)
    writer.close()
    assert read_all(io.BytesIO(out.getvalue()))["a.pdf"] == ("file", digest(b"%PDF-1.7 read ahead"))


def test_members_carry_their_metadata(sample):
    with open(sample, "rb") as stream:
        members = {m.name: m for m in read_members(stream)}
    users = members["database/users.json"]
    assert (users.size, users.mtime, users.mode) == (len(FILES[users.name]), MTIME, 0o600)
    assert members["database"].mode == 0o755
    assert members[LONG_NAME].offset % 512 == 0


def test_archive_ends_with_zero_blocks_padded_to_a_10240_byte_record(sample):
    data = sample.read_bytes()
    assert len(data) % 10240 == 0
    assert data.endswith(bytes(1024))


def test_gnu_tar_lists_and_extracts_without_a_warning(sample, tmp_path):
    listing = run(["tar", "--quoting-style=literal", "-tvf", "-"], stdin=open(sample, "rb"))
    assert (listing.returncode, listing.stderr) == (0, b"")
    names = [line.split(maxsplit=5)[5] for line in listing.stdout.decode().splitlines()]
    assert names == ["metadata.json", *DIRS, *list(FILES)[1:], CHECKSUMS_NAME]
    assert listing.stdout.decode().splitlines()[1].startswith("drwxr-xr-x root/root")

    extract = run(["tar", "-xf", str(sample)], cwd=tmp_path)
    assert (extract.returncode, extract.stderr) == (0, b"")
    for name, data in FILES.items():
        assert (tmp_path / name).read_bytes() == data


def test_python_tarfile_lists_every_member(sample):
    with tarfile.open(sample) as archive:
        names = [(m.name, m.type, m.size) for m in archive]
    assert ("database", tarfile.DIRTYPE, 0) in names
    assert (f"{DOCS}/big.bin", tarfile.REGTYPE, len(BIG)) in names
    assert len(names) == len(FILES) + len(DIRS) + 1
    with open(sample, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        assert [m.name for m in archive] == [name for name, _, _ in names]


def test_xxhsum_checks_the_files_gnu_tar_extracted(sample, tmp_path):
    run(["tar", "-xf", str(sample)], cwd=tmp_path, check=True)
    check = run(["xxhsum", "-c", CHECKSUMS_NAME], cwd=tmp_path)
    assert (check.returncode, check.stderr) == (0, b"")
    assert check.stdout.decode().count(": OK\n") == len(FILES)


def test_gzip_output_is_valid_gzip_and_open_input_reads_it_back(tmp_path):
    path = tmp_path / "aviary.tar.gz"
    with open(path, "wb") as out:
        gzipped = gzip_output(out)
        write_sample(gzipped)
        gzipped.close()
    assert gzipped.bytes_written == path.stat().st_size
    assert run(["gzip", "-t", str(path)]).returncode == 0
    with open(path, "rb") as raw:
        assert read_all(open_input(raw))[f"{DOCS}/big.bin"] == ("file", digest(BIG))
    listing = run(["tar", "-tzf", str(path)])
    assert (listing.returncode, listing.stderr) == (0, b"")


def test_open_input_reads_real_gzip_from_a_pipe_including_concatenated_members(
    sample, tmp_path
):
    whole = sample.read_bytes()
    half = len(whole) // 2 + 77
    parts = [run(["gzip", "-c"], input=part).stdout for part in (whole[:half], whole[half:])]
    (tmp_path / "two.tar.gz").write_bytes(b"".join(parts))
    with subprocess.Popen(["cat", str(tmp_path / "two.tar.gz")], stdout=subprocess.PIPE) as cat:
        found = read_all(open_input(cat.stdout))
    assert found[LONG_NAME] == ("file", digest(FILES[LONG_NAME]))


def test_open_input_passes_a_plain_tar_through_from_a_pipe(sample):
    with subprocess.Popen(["cat", str(sample)], stdout=subprocess.PIPE) as cat:
        assert read_all(open_input(cat.stdout))[f"{DOCS}/big.bin"][1] == digest(BIG)


def test_open_input_keeps_the_first_bytes_of_a_stream_without_peek(sample):
    class Trickle(io.RawIOBase):
        """A pipe that gives one byte at a time at first."""

        def __init__(self, data):
            self._data, self._calls = memoryview(data), 0

        def readable(self):
            return True

        def readinto(self, buffer):
            self._calls += 1
            size = min(1 if self._calls <= 8 else len(buffer), len(self._data))
            buffer[:size] = self._data[:size]
            self._data = self._data[size:]
            return size

    assert read_all(open_input(Trickle(sample.read_bytes())))[CHECKSUMS_NAME][0] == "file"


# --- Archives written by other tools ----------------------------------------


@pytest.mark.parametrize("tar_format", ["gnu", "posix", "ustar"])
def test_reads_what_gnu_tar_writes(tmp_path, tar_format):
    root = tmp_path / "in"
    long_dir = root / ("d" * 120) / ("é" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / "f.txt").write_bytes(b"deep")
    (root / "plain.txt").write_bytes(b"plain")
    made = run(["tar", f"--format={tar_format}", "-cf", "-", "-C", str(root), "."])
    if tar_format == "ustar":
        assert b"file name is too long" in made.stderr  # ustar cannot hold it: skipped
    found = read_all(io.BytesIO(made.stdout))
    assert found["./plain.txt"] == ("file", digest(b"plain"))
    assert found["."][0] == "dir"  # "./" without its trailing slash
    if tar_format != "ustar":
        assert found[f"./{'d' * 120}/{'é' * 60}/f.txt"] == ("file", digest(b"deep"))


def test_reads_tarfile_gnu_long_names_and_base_256_numbers():
    name = "n" * 300
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid = 3, -(10**9), 8**8
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(b"abc"))
    member = next(read_members(io.BytesIO(buf.getvalue())))
    assert (member.name, member.size, member.mtime) == (name, 3, -(10**9))


def test_accepts_a_header_checksum_summed_as_signed_bytes():
    block = bytearray(tarfile.TarInfo("caf\xe9").tobuf(tarfile.USTAR_FORMAT, "latin-1"))
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + b" " * 8 + block[156:])
    block[148:156] = b"%06o\0 " % signed
    assert next(read_members(io.BytesIO(bytes(block) + bytes(1024)))).name == "caf\udce9"


def test_directory_names_lose_their_trailing_slash():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("database/")
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    assert [m.name for m in read_members(io.BytesIO(buf.getvalue()))] == ["database"]


def test_pax_global_headers_are_skipped_and_fractional_mtimes_floored():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "made by git archive"}) as archive:
        info = tarfile.TarInfo("old.pdf")
        info.mtime = -1.5
        archive.addfile(info)
    [member] = read_members(io.BytesIO(buf.getvalue()))
    assert (member.name, member.mtime) == ("old.pdf", -2)


# --- Sizes of 8 GiB and more --------------------------------------------------


class SparseFile(io.RawIOBase):
    """A file that seeks over the zero chunks it is given, so 8 GiB cost no disk."""

    def __init__(self, path, zeros):
        self._file, self._zeros = open(path, "wb"), zeros

    def writable(self):
        return True

    def write(self, data):
        if data is self._zeros:
            self._file.seek(len(data), os.SEEK_CUR)
        else:
            self._file.write(data)
        return len(data)

    def close(self):
        self._file.truncate()
        self._file.close()


def test_a_member_of_8_gib_gets_a_pax_size_that_gnu_tar_and_tarfile_read(tmp_path):
    size = 8 * 1024**3 + 1
    zeros = bytes(8 << 20)
    chunks = [zeros] * (size // len(zeros)) + [b"\0"]
    path = tmp_path / "big.tar"
    out = SparseFile(path, zeros)
    writer = TarWriter(out)
    expected = writer.add_file("huge.bin", size, chunks, MTIME)
    writer.write_checksums(mtime=MTIME)
    writer.close()
    out.close()

    listing = run(["tar", "-tvf", str(path)])
    assert (listing.returncode, listing.stderr) == (0, b"")
    assert f" {size} " in listing.stdout.decode()
    with tarfile.open(path) as archive:
        assert archive.getmember("huge.bin").size == size
    with open(path, "rb") as stream:
        assert read_all(stream)["huge.bin"] == ("file", expected)


# --- Truncation and corruption ----------------------------------------------


def small_archive() -> bytes:
    buf = io.BytesIO()
    writer = TarWriter(buf)
    writer.add_dir("database", MTIME)
    writer.add_bytes("database/users.json", b"u" * 4096, MTIME)
    writer.add_bytes("database/notes.json", b"n" * 700, MTIME)
    writer.add_bytes(LONG_NAME, b"long", MTIME)
    writer.write_checksums(mtime=MTIME)
    writer.close()
    return buf.getvalue()


def end_of_marker(data: bytes) -> int:
    """Where the two zero blocks end: only zero padding follows."""
    return len(data.rstrip(b"\0")) // 512 * 512 + 512 + 1024


def cut_points(length: int) -> list[int]:
    interesting = {1, 100, 511, 512, 513, 1024, 1536, 1537, 1600, 5632, 5633, 6143, 6144}
    return sorted({*interesting, *range(0, length, 97), length - 512, length - 1} - {0})


def read_everything(stream) -> None:
    for member in read_members(stream):
        for _ in member.chunks(1000):
            pass


def test_truncation_anywhere_is_an_error_naming_the_place():
    data = small_archive()
    end = end_of_marker(data)
    for cut in cut_points(end):
        with pytest.raises(ArchiveError, match=r"offset \d+"):
            read_everything(io.BytesIO(data[:cut]))


def test_truncation_anywhere_in_gzip_is_an_error_naming_the_place():
    buf = io.BytesIO()
    gzipped = gzip_output(buf, level=1)
    gzipped.write(small_archive())
    gzipped.close()
    data = buf.getvalue()
    for cut in range(1, len(data)):
        with pytest.raises(ArchiveError, match=r"offset \d+"):
            read_everything(open_input(io.BytesIO(data[:cut])))


def test_truncation_messages_say_what_was_cut():
    data = small_archive()
    with pytest.raises(ArchiveError) as cut_in_data:
        read_everything(io.BytesIO(data[: 1024 + 200]))
    assert str(cut_in_data.value) == (
        "database/users.json (offset 512): archive truncated inside member data"
        " (got 200 of 4096 bytes)"
    )
    with pytest.raises(ArchiveError) as cut_in_header:
        read_everything(io.BytesIO(data[: 5120 + 100]))
    assert str(cut_in_header.value) == (
        "offset 5120: archive truncated inside a header (got 100 of 512 bytes)"
        " (after database/users.json)"
    )
    end = end_of_marker(data)
    with pytest.raises(ArchiveError) as cut_before_end:
        read_everything(io.BytesIO(data[: end - 1024]))
    assert str(cut_before_end.value) == (
        f"truncated: end-of-archive marker missing after {CHECKSUMS_NAME} (offset {end - 1024})"
    )


def test_the_record_padding_after_the_end_marker_may_be_missing():
    data = small_archive()
    read_everything(io.BytesIO(data[: end_of_marker(data)]))


def test_a_flipped_bit_in_a_header_is_a_checksum_error_naming_the_offset():
    data = bytearray(small_archive())
    data[5120 + 10] ^= 0x04  # inside the name of database/notes.json
    with pytest.raises(ArchiveError) as error:
        read_everything(io.BytesIO(bytes(data)))
    assert str(error.value) == "offset 5120: bad header checksum (after database/users.json)"


def test_a_bad_numeric_field_is_named():
    data = bytearray(small_archive())
    header = data[5120:5632]
    header[124:136] = b"0000000012x\0"  # size of database/notes.json
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    data[5120:5632] = header
    with pytest.raises(ArchiveError) as error:
        read_everything(io.BytesIO(bytes(data)))
    assert str(error.value) == (
        "offset 5120: bad size field b'0000000012x\\x00' in header (after database/users.json)"
    )


def test_messages_name_the_source_when_given():
    with pytest.raises(ArchiveError, match="^backup.tar: empty input"):
        list(read_members(io.BytesIO(b""), source="backup.tar"))


def test_garbage_instead_of_a_tar_says_so():
    with pytest.raises(ArchiveError, match=r"^offset 0: bad header checksum \(not a tar"):
        read_everything(io.BytesIO(b"<html>" * 200))
    with pytest.raises(ArchiveError, match="empty input"):
        read_everything(io.BytesIO(b""))


def test_a_lone_zero_block_between_members_is_an_error():
    data = small_archive()
    with pytest.raises(ArchiveError, match="offset 512: a lone zero block"):
        read_everything(io.BytesIO(data[:512] + bytes(512) + data[512:]))


def test_anything_after_the_two_zero_blocks_is_ignored():
    data = small_archive()
    end = end_of_marker(data)
    assert read_all(io.BytesIO(data[:end] + b"junk" * 1000))["database/notes.json"]


def test_a_member_claiming_an_absurd_size_is_only_streamed():
    info = tarfile.TarInfo("database/users.json")
    info.size = 2**60
    data = info.tobuf(tarfile.GNU_FORMAT) + b"x" * 5000
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match=r"got 5000 of 1152921504606846976 bytes"):
            read_everything(io.BytesIO(data))
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()


def test_an_absurd_pax_header_is_refused_before_it_is_read():
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 2**40
    with pytest.raises(ArchiveError, match="offset 0: extended header of 1099511627776 bytes"):
        read_everything(io.BytesIO(info.tobuf(tarfile.GNU_FORMAT)))


def test_a_gzip_bomb_comes_out_in_bounded_pieces():
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(deflater.compress(zeros) for _ in range(256)) + deflater.flush()
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        reader, total = GunzipReader(io.BytesIO(bomb)), 0
        while piece := reader.read(1 << 20):
            assert len(piece) <= 1 << 20
            total += len(piece)
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()
    assert total == 256 << 20


def test_garbage_after_the_gzip_stream_is_an_error_but_zero_padding_is_not():
    gzipped = zlib.compress(small_archive(), wbits=16 + zlib.MAX_WBITS)
    read_everything(open_input(io.BytesIO(gzipped + bytes(4096))))
    with pytest.raises(ArchiveError, match="after the end of the gzip stream is not gzip"):
        read_everything(open_input(io.BytesIO(gzipped + b"garbage")))


def test_corrupt_gzip_data_is_an_error_naming_the_place():
    gzipped = bytearray(zlib.compress(small_archive(), wbits=16 + zlib.MAX_WBITS))
    gzipped[-8] ^= 0xFF  # the CRC
    with pytest.raises(ArchiveError, match=r"offset \d+.*gzip stream corrupt"):
        read_everything(open_input(io.BytesIO(bytes(gzipped))))


@pytest.mark.parametrize(
    "command, name",
    [(["xz", "-c"], "xz"), (["bzip2", "-c"], "bzip2")],
)
def test_other_compressions_say_which_tool_to_pipe_through(command, name):
    compressed = run(command, input=small_archive(), check=True).stdout
    with pytest.raises(ArchiveError) as error:
        open_input(io.BytesIO(compressed))
    assert str(error.value) == f"input is {name}-compressed: pipe it through '{name} -dc' first"


# --- Reading in sequence ------------------------------------------------------


def test_content_not_read_is_skipped():
    names = [m.name for m in read_members(io.BytesIO(small_archive()))]
    assert names == ["database", "database/users.json", "database/notes.json", LONG_NAME,
                     CHECKSUMS_NAME]


def test_content_half_read_is_skipped_too():
    members = read_members(io.BytesIO(small_archive()))
    next(members)
    users = next(members)
    assert len(next(users.chunks(100))) == 100
    assert next(members).name == "database/notes.json"


def test_content_cannot_be_read_after_the_reader_moved_on():
    members = read_members(io.BytesIO(small_archive()))
    next(members)
    users = next(members)
    next(members)
    with pytest.raises(ValueError, match="sequential"):
        list(users.chunks())


def test_half_read_content_cannot_be_resumed_after_moving_on():
    buf = io.BytesIO()
    writer = TarWriter(buf)
    writer.add_bytes("a.pdf", b"a" * 3000, MTIME)
    writer.add_dir("empty", MTIME)
    writer.close()
    members = read_members(io.BytesIO(buf.getvalue()))
    pieces = next(members).chunks(1000)
    next(pieces)
    next(members)
    with pytest.raises(ValueError, match="sequential"):
        next(pieces)


# --- Unsafe members -----------------------------------------------------------


def hostile_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT,
                      encoding="latin-1") as archive:
        def add(name, type=tarfile.REGTYPE, linkname=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = type, linkname
            archive.addfile(info, io.BytesIO(b""))

        add("../x")
        add("/etc/passwd")
        add("database/../../x")
        add("link", tarfile.SYMTYPE, "/etc/passwd")
        add("hard", tarfile.LNKTYPE, "metadata.json")
        add("dev/tty", tarfile.CHRTYPE)
        add("dev/sda", tarfile.BLKTYPE)
        add("pipe", tarfile.FIFOTYPE)
        add("caf\xe9.pdf")  # Latin-1, not UTF-8
        add("sub\\dir.pdf")
        add("metadata.json")
        add("metadata.json")
        add("database", tarfile.DIRTYPE)
        add("database/", tarfile.DIRTYPE)
    return buf.getvalue()


def test_member_name_problem_names_every_unsafe_member():
    problems = {m.name: member_name_problem(m) for m in read_members(io.BytesIO(hostile_archive()))}
    assert problems == {
        "../x": "path contains a '..' component",
        "/etc/passwd": "absolute path",
        "database/../../x": "path contains a '..' component",
        "link": "symlink to /etc/passwd: links are not restored",
        "hard": "hardlink to metadata.json: links are not restored",
        "dev/tty": "char member: only files and directories are restored",
        "dev/sda": "block member: only files and directories are restored",
        "pipe": "fifo member: only files and directories are restored",
        "caf\udce9.pdf": "name is not valid UTF-8",
        "sub\\dir.pdf": None,  # an ordinary character on Linux and in S3 keys
        "metadata.json": None,
        "database": None,
    }


def test_name_set_reports_duplicates_including_a_and_a_slash():
    seen = NameSet()
    added = [seen.add(m.name) for m in read_members(io.BytesIO(hostile_archive()))]
    assert added[-4:] == [True, False, True, False]
    assert not seen.add("./database/")
    assert "metadata.json" in seen


def test_overlong_names_and_components_are_problems():
    def problem(name):
        info = tarfile.TarInfo(name)
        info.pax_headers = {"path": name}  # even where ustar would do
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
            archive.addfile(info)
        return member_name_problem(next(read_members(io.BytesIO(buf.getvalue()))))

    assert problem("a/" * 2100 + "b") == "name is longer than 4096 bytes"
    assert problem("a" * 256) == "a path component is longer than 255 bytes"
    assert problem("é" * 127) is None  # 254 bytes
    assert problem("a\0b") == "name contains a NUL byte"


# --- The writer refuses what it cannot write faithfully ----------------------


def test_content_longer_or_shorter_than_announced_is_an_error_naming_the_member():
    with pytest.raises(ArchiveError, match="^database/users.json: content is longer than the 3"):
        TarWriter(io.BytesIO()).add_file("database/users.json", 3, [b"ab", b"cd"], MTIME)
    with pytest.raises(ArchiveError, match="^big.pdf: content ended after 4 of 10 bytes"):
        TarWriter(io.BytesIO()).add_file("big.pdf", 10, [b"ab", b"cd"], MTIME)


@pytest.mark.parametrize("name", ["", "../etc/passwd", "/etc/passwd", "a\0b"])
def test_unsafe_names_are_not_written(name):
    with pytest.raises(ArchiveError, match="cannot archive"):
        TarWriter(io.BytesIO()).add_bytes(name, b"", MTIME)


def test_bytes_written_counts_everything(sample):
    buf = io.BytesIO()
    assert write_sample(buf).bytes_written == len(buf.getvalue()) == sample.stat().st_size


# --- The checksums file -------------------------------------------------------


def test_checksum_lines_are_what_xxhsum_prints(tmp_path):
    names = ["plain.pdf", "with space.pdf", "Ünïcödé.pdf", "back\\slash.pdf"]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"content %d" % i)
    printed = run(["xxhsum", "-H2", *names], cwd=tmp_path, check=True).stdout.decode()
    ours = "".join(format_line(digest(b"content %d" % i), n) for i, n in enumerate(names))
    assert ours == printed


def test_checksum_lines_of_both_styles_parse(tmp_path):
    names = ["with space.pdf", "Ünïcödé.pdf", "back\\slash.pdf"]
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    for style in ([], ["--tag"]):
        printed = run(["xxhsum", "-H2", *style, *names], cwd=tmp_path, check=True).stdout
        assert list(parse_checksums([printed[:7], printed[7:]])) == [
            (digest(name.encode()), name) for name in names
        ]


def test_names_with_line_breaks_are_escaped_as_newer_xxhsum_does():
    line = format_line("0" * 32, "two\nlines\\and\rcr")
    assert line == "\\" + "0" * 32 + "  two\\nlines\\\\and\\rcr\n"
    assert parse_line(line.rstrip("\n"), 1) == ("0" * 32, "two\nlines\\and\rcr")


def test_a_bad_checksum_line_is_reported_with_its_number():
    text = b"%s  good.pdf\nnot a checksum\n" % (b"0" * 32)
    with pytest.raises(ArchiveError, match="^checksums.xxh128 line 2: not an XXH128"):
        list(parse_checksums([text]))
    with pytest.raises(ArchiveError, match="line 1: bad escape"):
        parse_line("\\" + "0" * 32 + "  a\\tb", 1)
