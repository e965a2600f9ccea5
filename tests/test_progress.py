"""Progress as a person sees it: commands run with stderr on a real pseudo-terminal, and what
the terminal shows is read back (carriage returns and erase-to-end-of-line applied)."""

import os
import pty
import re
import subprocess

import pytest

from archive_helpers import installation
from helpers import AVIARY, ok

PERCENT = re.compile(r"(\d+)% ([\d.]+ [KMG]?B) of ([\d.]+ [KMG]?B)")


def on_a_terminal(*args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) -> tuple[list[str], list[str]]:
    """Run `aviary ARGS` with stderr on a pty; (every frame drawn, the lines left on the screen)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*AVIARY, *map(str, args)], stdin=stdin, stdout=stdout, stderr=slave,
                            env={k: v for k, v in os.environ.items() if not k.startswith(("AVIARY_", "DB_", "S3_"))})
    os.close(slave)
    raw = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        raw += data
    os.close(master)
    assert proc.wait(timeout=120) == 0, raw.decode(errors="replace")
    return screen(raw.decode("utf-8", "replace"))


def screen(text: str) -> tuple[list[str], list[str]]:
    """What a terminal shows of `text`: the frames a redrawn line went through, and the lines."""
    lines, current, column, frames = [], [], 0, []
    i = 0
    text = text.replace("\r\n", "\n")  # the pty's own line endings
    while i < len(text):
        char = text[i]
        if text.startswith("\x1b[K", i):
            del current[column:]
            i += 3
            continue
        if char == "\r":
            if current:
                frames.append("".join(current))
            column = 0
        elif char == "\n":
            lines.append("".join(current))
            frames.append("".join(current))
            current, column = [], 0
        else:
            if column < len(current):
                current[column] = char
            else:
                current.append(char)
            column += 1
        i += 1
    if current:
        lines.append("".join(current))
    return [f for f in frames if f], lines


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    installation(str(root / "aviary.db"), root / "data", users=3)
    big = root / "data" / "users" / next(p.name for p in (root / "data" / "users").iterdir()) / "pdfs"
    for n in range(40):
        (big / f"big-{n}.pdf").write_bytes(os.urandom(1 << 20))
    path = root / "backup.tar"
    ok("pack", "--db", root / "aviary.db", "--storage", root / "data", "-o", path)
    return root, path


def test_verify_shows_percent_of_the_file_rate_and_time_left_then_100(archive):
    _, path = archive
    frames, lines = on_a_terminal("verify", path)
    progress = [f for f in frames if f.startswith("verify: ")]
    assert progress and all(PERCENT.search(f) for f in progress), frames
    assert all("/s, " in f for f in progress)
    assert "left" in progress[0] or "starting" in progress[0]
    assert lines[0].startswith("verify: 100% ") and lines[0].endswith(", done")
    assert PERCENT.search(lines[0])[2] == PERCENT.search(lines[0])[3]  # all of it
    assert lines[-2].startswith("aviary verify: full; Aviary's admin page restores it")
    assert lines[-1].startswith("aviary verify: ok")
    assert len(lines) == 3  # one progress line, redrawn in place, the archive's kind and the verdict


def test_a_restore_from_a_pipe_counts_documents_against_metadata_json(archive, tmp_path):
    root, path = archive
    with open(path, "rb") as stream:
        cat = subprocess.Popen(["cat"], stdin=stream, stdout=subprocess.PIPE)
        frames, lines = on_a_terminal("unpack", "--db", tmp_path / "t.db", "--storage", tmp_path / "t",
                                      "--create-schema", stdin=cat.stdout)
        cat.wait()
    total = PERCENT.search(lines[0])[3]
    assert lines[0].startswith("unpack: 100% ") and total.endswith("MB")
    assert float(total.split()[0]) >= 40  # the documents' 40 MiB and more, as metadata.json says


def test_pack_knows_its_total_from_the_listing(archive, tmp_path):
    root, _ = archive
    frames, lines = on_a_terminal("pack", "--db", root / "aviary.db", "--storage", root / "data",
                                  "-o", tmp_path / "again.tar")
    assert any(PERCENT.search(f) and not f.startswith("pack: 100%") for f in frames), frames
    assert lines[0].startswith("pack: 100% ")


def test_doctor_deep_shows_what_it_has_read(archive):
    root, _ = archive
    frames, lines = on_a_terminal("doctor", "--db", root / "aviary.db", "--storage", root / "data", "--deep",
                                  "--json")
    assert re.fullmatch(r"doctor: [\d.]+ [KMG]?B, \d+ files, [\d.]+ [KMG]?B/s", lines[0])


def test_no_progress_draws_nothing_even_on_a_terminal(archive):
    _, path = archive
    frames, lines = on_a_terminal("verify", "--no-progress", path)
    assert len(lines) == 2 and lines[-1].startswith("aviary verify: ok")  # the kind, the verdict


def test_nothing_is_drawn_when_stderr_is_not_a_terminal(archive):
    _, path = archive
    done = subprocess.run([*AVIARY, "verify", str(path)], capture_output=True)
    assert b"\r" not in done.stderr and b"\x1b" not in done.stderr
