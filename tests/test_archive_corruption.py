"""A truncated, corrupt or malicious archive: `verify` exits 1 naming the member, `unpack`
exits 1 with one line, and the target database and storage are exactly as they were;
`unpack -C DIR` never writes outside DIR, and leaves no file that passes for complete."""

import gzip
import io
import shutil
import tarfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archive_helpers import bucket_storage, installation, s3_args, s3_env, state
from helpers import aviary, ok, one_line_error


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A plain pack of a small installation and where each member sits in it."""
    root = tmp_path_factory.mktemp("packed")
    installation(str(root / "a.db"), root / "a-data", users=2)
    archive = ok("pack", "--db", root / "a.db", "--storage", root / "a-data")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: m for m in tar}
    return archive, members


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Another installation, to restore into: a restore that went through would change it all."""
    root = tmp_path_factory.mktemp("target")
    installation(str(root / "b.db"), root / "b-data", users=3, seed=11)
    return root


@pytest.fixture
def target(template, tmp_path):
    shutil.copy(template / "b.db", tmp_path / "b.db")
    shutil.copytree(template / "b-data", tmp_path / "b-data")
    return str(tmp_path / "b.db"), tmp_path / "b-data"


SOME_USER = "0f17a300-7e62-4a0a-9df9-fd789c653938"


def first_document(members) -> tarfile.TarInfo:
    return next(m for m in members.values() if m.name.startswith("filesystem/documents/") and m.isfile())


def content(archive: bytes, member: tarfile.TarInfo) -> bytes:
    return archive[member.offset_data:member.offset_data + member.size]


def cut(data: bytes, at: int) -> bytes:
    return data[:at]


def flip(data: bytes, at: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 1 << bit
    return bytes(changed)


def end_of(members) -> int:
    last = members["checksums.xxh128"]
    return last.offset_data + -(-last.size // 512) * 512


def damaged(archive: bytes, members: dict, case: str) -> tuple[bytes, str]:
    """The damaged archive and the member name (or words) the error must show."""
    metadata, users, doc = members["metadata.json"], members["database/users.json"], first_document(members)
    username = archive.index(b'"username":"admin"', users.offset_data) + len('"username":"')
    gz = gzip.compress(archive)
    return {
        "cut inside metadata.json": (cut(archive, metadata.offset_data + 100), "metadata.json"),
        "cut inside a table": (cut(archive, users.offset_data + users.size // 2), users.name),
        "cut inside a document": (cut(archive, doc.offset_data + 10), doc.name),
        "cut between two members": (cut(archive, users.offset), "database/user_sessions.json"),
        "cut before the checksums": (cut(archive, members["checksums.xxh128"].offset), "doc-1.pdf"),
        "cut inside the end marker": (cut(archive, end_of(members) + 512), "checksums.xxh128"),
        "gzip cut early": (cut(gz, len(gz) // 4), "gzip stream truncated"),
        "gzip cut halfway": (cut(gz, len(gz) // 2), "gzip stream truncated"),
        "gzip trailer cut": (cut(gz, len(gz) - 4), "gzip stream truncated (after checksums.xxh128)"),
        "bit flipped in a document": (flip(archive, doc.offset_data + 500), doc.name),
        "bit flipped in a table value": (flip(archive, username), users.name),
        "bit flipped in table JSON syntax": (flip(archive, users.offset_data, 6), users.name),
        "bit flipped in a tar header": (flip(archive, doc.offset + 3), "bad header checksum"),
    }[case]


CASES = ["cut inside metadata.json", "cut inside a table", "cut inside a document", "cut between two members",
         "cut before the checksums", "cut inside the end marker", "gzip cut early", "gzip cut halfway",
         "gzip trailer cut", "bit flipped in a document", "bit flipped in a table value",
         "bit flipped in table JSON syntax", "bit flipped in a tar header"]


def names_a_member(message: str, members) -> bool:
    """Says where: the member being read, or the last one read whole."""
    return any(f"{name} (offset " in message or f"after {name}" in message
               or message.startswith(f"aviary unpack: {name}:") for name in members)


def run_side_by_side(*commands, input: bytes):
    """The commands at once: they touch different things, and each takes a while to start."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: aviary(*args, input=input), commands))


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if not p.is_dir()]


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_archive_is_refused_and_changes_nothing(packed, target, tmp_path, case):
    archive, named = damaged(*packed, case)
    db, data = target
    before = state(db, data)
    out = tmp_path / "extract" / "out"

    checked, restored, extracted = run_side_by_side(
        ["verify"], ["unpack", "--db", db, "--storage", data], ["unpack", "-C", out], input=archive)
    assert checked.returncode == 1 and named in checked.stderr.decode(), checked.stderr.decode()
    assert named in one_line_error(restored) and names_a_member(one_line_error(restored), packed[1])
    assert state(db, data) == before
    assert named in one_line_error(extracted)
    assert files_in(tmp_path / "extract") == []  # no file that passes for complete


# --- members that would escape ---------------------------------------------------------------

EVIL = f"aviary-evil-{uuid.uuid4().hex[:8]}"


def malicious(metadata: bytes, case: str) -> bytes:
    """A tar whose first member is a good metadata.json, then the bad one(s)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data=b"gotcha\n", **fields):
            info = tarfile.TarInfo(name)
            info.size = len(data) if not fields else 0
            for key, value in fields.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if info.size else None)

        add("metadata.json", metadata)
        folder = f"filesystem/documents/{SOME_USER}"
        if case == "../evil":
            add(f"../{EVIL}")
        elif case == "absolute":
            add(f"/tmp/{EVIL}")
        elif case == "dot-dot inside":
            add(f"{folder}/../../../{EVIL}")
        elif case == "symlink":
            add(folder, type=tarfile.SYMTYPE, linkname="/tmp")
            add(f"{folder}/{EVIL}")
        elif case == "hardlink":
            add(f"{folder}/{EVIL}", type=tarfile.LNKTYPE, linkname="/etc/passwd")
    return buffer.getvalue()


NAMED = {"../evil": f"../{EVIL}", "absolute": f"/tmp/{EVIL}", "dot-dot inside": f"../../../{EVIL}",
         "symlink": f"filesystem/documents/{SOME_USER}", "hardlink": EVIL}


@pytest.mark.parametrize("case", list(NAMED))
def test_a_member_that_would_escape_is_refused_everywhere(packed, target, tmp_path, case):
    archive, members = packed
    evil = malicious(content(archive, members["metadata.json"]), case)
    db, data = target
    before = state(db, data)
    box = tmp_path / "box"
    box.mkdir()

    checked, restored, extracted = run_side_by_side(
        ["verify"], ["unpack", "--db", db, "--storage", data], ["unpack", "-C", box / "out"], input=evil)
    assert checked.returncode == 1 and NAMED[case] in checked.stderr.decode(), checked.stderr.decode()
    assert NAMED[case] in one_line_error(restored)
    assert state(db, data) == before
    assert NAMED[case] in one_line_error(extracted)
    assert list(box.iterdir()) == []  # the failed extraction removed the folder it made (issue 20)
    assert not (Path("/tmp") / EVIL).exists() and not (tmp_path / EVIL).exists()


def test_a_name_that_is_both_a_file_and_a_folder_is_refused(packed, target, tmp_path):
    archive, members = packed
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("metadata.json", content(archive, members["metadata.json"])),
                           (f"filesystem/documents/{SOME_USER}/a.pdf", b"%PDF"),
                           (f"filesystem/documents/{SOME_USER}/a.pdf/b.pdf", b"%PDF")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    db, data = target
    before = state(db, data)

    restored, extracted = run_side_by_side(["unpack", "--db", db, "--storage", data],
                                           ["unpack", "-C", tmp_path / "out"], input=buffer.getvalue())
    assert "a.pdf" in one_line_error(restored)
    assert state(db, data) == before
    assert "a.pdf: both a file and a folder in the archive" in one_line_error(extracted)
    assert files_in(tmp_path / "out") == []


@pytest.mark.parametrize("case", ["cut inside a document", "bit flipped in a document"])
def test_postgresql_and_s3_are_left_as_they_were(packed, pg_url, s3_server, s3_bucket, case):
    archive, named = damaged(*packed, case)
    bucket = bucket_storage(s3_server, s3_bucket)
    installation(pg_url, bucket, users=3, seed=11, nanos=False)
    before = state(pg_url, bucket)

    restored = aviary("unpack", "--db", pg_url, *s3_args(s3_server, s3_bucket), input=archive,
                      env=s3_env(s3_server))
    assert named in one_line_error(restored)
    assert state(pg_url, bucket) == before  # no staged object left behind either
