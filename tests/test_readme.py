"""The README's recipes run: every ```sh block is run, as an operator would type it, beside a sample
installation, so that a pipeline the README recommends cannot rot (as test_man_pages.py holds the
man pages to --help).

A block that needs what a test cannot have here (ssh, AWS, a crontab, remote PostgreSQL or S3
hosts) says so in the README, on the line before it: `<!-- not run: REASON -->`. Skipping is a
visible decision there, never a guess here: every fenced block has a language, and every `sh` or
`cron` block is either run or marked.

Where a block runs: a fresh temporary folder per block holding
  data/                  an installation as `make demo` makes it (aviary.db + users/<uuid>/pdfs/),
                         which is also $DATA_DIR, so commands find it as they would beside Aviary;
  backups/               today's backup, aviary-YYYY-MM-DD.tar.gz;
  srv/                   empty;
  work/                  the current folder, holding aviary.tar.gz (the same backup).
The README's absolute paths /data, /backups and /srv are read as these folders. Each block runs
under `bash -e -o pipefail` with the package's `aviary` first on PATH, and must exit 0.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
RUN = {"sh"}  # languages whose blocks are commands
COMMANDS = RUN | {"cron"}
_FENCE = re.compile(r"^```(\S*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (\S.*?) -->$")
_ROOTS = re.compile(r"(?<![\w.])/(data|backups|srv)(?=/|\b)")
# Settings of the machine the test runs on that would point the commands elsewhere.
_SETTINGS = re.compile(r"^(AVIARY_.*|DB_.*|DATA_DIR|STORAGE_BACKEND|S3_.*|PDF_DIR|PG.*)$")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    not_run: str | None  # the marker's reason


def readme_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j] == "```")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _NOT_RUN.match(before)
        blocks.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n",
                            marker.group(1) if marker else None))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [b for b in BLOCKS if b.language in RUN and b.not_run is None]


def test_every_block_is_run_or_marked_not_run():
    assert BLOCKS, "no code blocks found in README.md"
    for block in BLOCKS:
        assert block.language, f"README.md:{block.line}: give the block a language (sh, cron, text, ...)"
        if block.language in COMMANDS and block.language not in RUN:
            assert block.not_run, f"README.md:{block.line}: a {block.language} block needs <!-- not run: REASON -->"
        if block.not_run:
            assert block.language in COMMANDS, f"README.md:{block.line}: only command blocks take a not-run marker"
    # The marker is for what cannot run here, not a way out: most recipes run.
    assert len(RUNNABLE) >= 8, [b.line for b in RUNNABLE]


@pytest.fixture
def installation(tmp_path):
    """A sample installation backed up today, and the environment an operator beside it has."""
    data, backups, work = tmp_path / "data", tmp_path / "backups", tmp_path / "work"
    for folder in (backups, work, tmp_path / "srv"):
        folder.mkdir()
    environ = {k: v for k, v in os.environ.items() if not _SETTINGS.match(k)}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    environ["DATA_DIR"] = str(data)
    subprocess.run([sys.executable, "-m", "aviarytools.sample", "--db", str(data / "aviary.db"),
                    "--storage", str(data), "--users", "4", "--docs", "3"], check=True, env=environ)
    backup = backups / f"aviary-{date.today():%Y-%m-%d}.tar.gz"
    subprocess.run(["aviary", "pack", "-z", "-o", str(backup)], check=True, env=environ)
    shutil.copy(backup, work / "aviary.tar.gz")
    return tmp_path, environ


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}" for b in RUNNABLE])
def test_readme_block_runs(block, installation):
    root, environ = installation
    script = _ROOTS.sub(lambda m: f"{root}/{m.group(1)}", block.text)
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=root / "work", env=environ,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (
        f"README.md:{block.line}: exit {done.returncode}\n{script}\nstdout:\n{done.stdout[-2000:]}\n"
        f"stderr:\n{done.stderr[-2000:]}")
