"""Running the real `aviary` command, and sample installations to run it on."""

import json
import os
import subprocess
import sys

from aviarytools import sample
from aviarytools.db import connect

AVIARY = [sys.executable, "-m", "aviarytools"]
DATA_TABLES = ("users", "api_keys", "user_sessions", "user_folders_cache", "documents",
               "system_settings", "login_attempts")


def aviary(*args, input=None, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Run `aviary ARGS...` and capture its stdout and stderr (bytes)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AVIARY_", "DB_", "S3_", "DATA_DIR", "STORAGE_"))}
    full_env.update(env or {})
    return subprocess.run(AVIARY + [str(a) for a in args], input=input, env=full_env,
                          capture_output=True, **kwargs)


def ok(*args, **kwargs) -> bytes:
    """stdout of a command that must succeed."""
    result = aviary(*args, **kwargs)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def make_db(url: str, *, populate: bool = True, **options) -> str:
    """Create Aviary's schema at `url` and fill it with sample rows."""
    db = connect(url, create=True)
    with db.transaction():
        db.create_schema()
    if populate:
        sample.populate(db, **options)
    db.close()
    return url


def dump_all(url: str, tables=DATA_TABLES) -> dict[str, bytes]:
    return {t: ok("dump-table", t, "--db", url) for t in tables}


def ndjson(*rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def one_line_error(result) -> str:
    """The single stderr line of a failed command (asserting there is exactly one)."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
