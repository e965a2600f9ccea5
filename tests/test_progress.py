"""Progress as a person sees it: commands run with stderr on a real pseudo-terminal, and what
the terminal shows is read back (carriage returns and erase-to-end-of-line applied)."""

import os
import pty
import re
import subprocess

import pytest

from archive_helpers import installation
from aviarytools.progress import Progress, human_size
from helpers import AVIARY, ok

SIZE = r"[\d.]+ (?:B|[KMGT]iB)"
PERCENT = re.compile(rf"(\d+)% ({SIZE}) of ({SIZE})")


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
    assert all("/s, " in f and "left" in f for f in progress if "starting" not in f and not f.endswith("done"))
    assert "starting" in progress[0]  # no rate, nor time left, before there is one
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
    assert lines[0].startswith("unpack: 100% ") and total.endswith("MiB")
    assert float(total.split()[0]) >= 40  # the documents' 40 MiB and more, as metadata.json says


def test_a_restore_says_what_it_does_between_reading_and_the_end(archive, tmp_path):
    root, path = archive
    frames, lines = on_a_terminal("unpack", "--db", tmp_path / "t.db", "--storage", tmp_path / "t",
                                  "--create-schema", path)
    assert frames[0].startswith("unpack: reading ") and PERCENT.search(frames[0])
    said = [f.removeprefix("unpack: ") for f in frames if not PERCENT.search(f)]
    assert "listing" in said and "committing" in said and "moving documents" in said, said
    assert "applying users (3 rows)" in said, said
    assert said.index("listing") < said.index("applying users (3 rows)") < said.index("committing") \
        < said.index("moving documents")
    assert lines[0].startswith("unpack: 100% ")  # the last frame: the figures, not a phase


def test_the_line_shows_no_rate_before_there_is_one():
    meter = Progress("pack", enabled=False)
    meter.expect(1 << 30)
    meter.add(1 << 20)
    assert meter.line(meter.start + 0.01) == "pack:   0% 1.0 MiB of 1.0 GiB, starting"  # not "770 h left"
    assert meter.line(meter.start + 2) == "pack:   0% 1.0 MiB of 1.0 GiB, 512.0 KiB/s, 34 min 06 s left"


def test_from_a_pipe_without_a_total_the_line_shows_bytes_done_and_their_rate():
    meter = Progress("unpack", enabled=False)
    meter.add(3 << 20, files=2)
    assert meter.line(meter.start + 0.5) == "unpack: 3.0 MiB, 2 files"
    assert meter.line(meter.start + 2) == "unpack: 3.0 MiB, 2 files, 1.5 MiB/s"
    waiting = Progress("unpack", enabled=False)  # nothing came through the pipe yet
    assert waiting.line(waiting.start + 5) == "unpack: 0 B"  # not "0 B, 0 B/s"


def test_a_pipe_counting_documents_gives_their_rate_not_a_rate_beside_nothing():
    meter = Progress("unpack", enabled=False)
    meter.expect(100 << 20, by_documents=True)
    meter.add(10 << 20)  # tables read: no document yet
    assert meter.line(meter.start + 2) == "unpack:   0% 0 B of 100.0 MiB, starting"
    meter.document(20 << 20)
    assert meter.line(meter.start + 4) == "unpack:  20% 20.0 MiB of 100.0 MiB, 1 files, 5.0 MiB/s, 16 s left"


def test_a_phase_replaces_the_figures_and_reading_keeps_them():
    meter = Progress("unpack", enabled=False)
    meter.expect(100 << 20)
    meter.phase("reading", figures=True)
    meter.add(50 << 20)
    assert meter.line(meter.start + 5) == "unpack: reading  50% 50.0 MiB of 100.0 MiB, 10.0 MiB/s, 5 s left"
    meter.phase("applying login_attempts (200,000 rows)")
    assert meter.line(meter.start + 600) == "unpack: applying login_attempts (200,000 rows)"
    assert meter.line(meter.start + 600, final=True).endswith("100% 100.0 MiB of 100.0 MiB, 170.7 KiB/s, done")


@pytest.mark.parametrize("size, shown", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                         (434_438_912, "414.3 MiB"), (5 << 40, "5.0 TiB")])
def test_sizes_in_binary_units(size, shown):
    assert human_size(size) == shown


def test_pack_knows_its_total_from_the_listing(archive, tmp_path):
    root, _ = archive
    frames, lines = on_a_terminal("pack", "--db", root / "aviary.db", "--storage", root / "data",
                                  "-o", tmp_path / "again.tar")
    assert any(PERCENT.search(f) and not f.startswith("pack: 100%") for f in frames), frames
    assert lines[0].startswith("pack: 100% ")
    assert frames[0] == "pack: listing"  # not blank while it measures


def test_doctor_deep_shows_what_it_has_read(archive):
    root, _ = archive
    frames, lines = on_a_terminal("doctor", "--db", root / "aviary.db", "--storage", root / "data", "--deep",
                                  "--json")
    assert re.fullmatch(rf"doctor: {SIZE}, \d+ files(, {SIZE}/s)?", lines[0])


def test_doctor_says_it_checks_and_its_findings_take_lines_of_their_own(archive):
    """Nothing measured (no --deep): the line says what it does, never "0 B"; each finding
    starts a line of its own, not glued to the progress line."""
    root, _ = archive
    frames, lines = on_a_terminal("doctor", "--db", root / "aviary.db", "--storage", root / "data")
    assert frames[0] == "doctor: checking"
    assert "doctor: checking, done" in lines and not any("0 B" in line for line in lines), lines
    assert all(line.startswith(("doctor: checking", "aviary doctor: ")) for line in lines), lines


def test_no_progress_draws_nothing_even_on_a_terminal(archive):
    _, path = archive
    frames, lines = on_a_terminal("verify", "--no-progress", path)
    assert len(lines) == 2 and lines[-1].startswith("aviary verify: ok")  # the kind, the verdict


def test_nothing_is_drawn_when_stderr_is_not_a_terminal(archive):
    _, path = archive
    done = subprocess.run([*AVIARY, "verify", str(path)], capture_output=True)
    assert b"\r" not in done.stderr and b"\x1b" not in done.stderr
