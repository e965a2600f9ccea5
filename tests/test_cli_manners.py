"""The first hour at the terminal: what a new user meets around the data.

A checking command keeps its verdict when its reader goes away; a reader refuses a
terminal instead of waiting on it; a missing file is one line and exit 1; an archive cut
short is said once; help and messages say what they mean."""

import io
import os
import pty
import select
import sqlite3
import subprocess
import tarfile
import time

import pytest

from archive_helpers import installation
from helpers import AVIARY, aviary, ok, one_line_error


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small installation (SQLite + folder) and its archive."""
    root = tmp_path_factory.mktemp("site")
    db, data = str(root / "aviary.db"), root / "data"
    installation(db, data, users=2)
    archive = root / "aviary.tar"
    archive.write_bytes(ok("pack", "--db", db, "--storage", data))
    return {"root": root, "db": db, "data": data, "archive": archive}


def into_closed_pipe(*args) -> subprocess.CompletedProcess:
    """Run `aviary ARGS` with stdout a pipe nobody reads any more (`| head -0`, at once)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(AVIARY + [str(a) for a in args], stdout=write, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=120)
    finally:
        os.close(write)


# --- 1. a checking command's exit status is its verdict, even through `| head` ---------------------


def test_verify_json_into_a_closed_pipe_still_fails_a_corrupt_archive(site, tmp_path):
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(site["archive"].read_bytes()[:30000])
    result = into_closed_pipe("verify", "--json", corrupt)
    assert result.returncode == 1, result.stderr
    assert b"Traceback" not in result.stderr and b"Exception ignored" not in result.stderr


def test_doctor_against_into_a_closed_pipe_still_reports_problems(site, tmp_path):
    other = tmp_path / "other.db"
    other.write_bytes(open(site["db"], "rb").read())
    with sqlite3.connect(other) as db:
        db.execute("DELETE FROM api_keys")
    result = into_closed_pipe("doctor", "--db", other, "--storage", site["data"], "--against", site["archive"],
                              "--json")
    assert result.returncode == 1, result.stderr
    assert b"Exception ignored" not in result.stderr and b"Traceback" not in result.stderr
    assert result.stderr.decode().strip().splitlines()[-1].startswith("aviary doctor: ")
    assert "problem(s) found" in result.stderr.decode()


def test_a_data_command_into_a_closed_pipe_stops_quietly(site):
    result = into_closed_pipe("ls", site["archive"])
    assert result.returncode == 0 and result.stderr == b""


# --- 2. a reader never waits on a terminal ------------------------------------------------------------


READERS = [["verify"], ["info"], ["ls"], ["cat", "metadata.json"], ["unpack", "-C", "out"],
           ["unpack", "--db", "x.db"], ["doctor", "--db", "x.db", "--storage", ".", "--against", "-"],
           ["load-table", "users", "--db", "x.db"]]


def on_a_terminal(args, cwd) -> tuple[int, str]:
    """Run `aviary ARGS` with stdin (and stdout, stderr) on a pseudo-terminal, as a person at
    one would; (exit status, what it printed).  A command waiting for input is killed after
    60 s (a slow start on a loaded machine is not a wait), and fails the test."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(AVIARY + args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                            env={k: v for k, v in os.environ.items() if not k.startswith(("AVIARY_", "DB_"))})
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    try:
        status = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"aviary {' '.join(args)} waited on the terminal: {out!r}")
    return status, out.decode().replace("\r\n", "\n")


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_reader_refuses_a_terminal_on_stdin(args, tmp_path):
    status, said = on_a_terminal(args, tmp_path)
    assert status == 2, said
    [line] = said.strip().splitlines()
    assert line.startswith(f"aviary {args[0]}: refusing to read ")
    assert "from a terminal: name a file or redirect stdin" in line
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "out").exists()


def test_an_archive_named_on_a_terminal_is_read(site, tmp_path):
    status, said = on_a_terminal(["ls", str(site["archive"])], tmp_path)
    assert status == 0 and '"path": "metadata.json"' in said


# --- 3. a missing file: one line, exit 1 -------------------------------------------------------------


@pytest.mark.parametrize("args", [["verify", "{}"], ["info", "{}"], ["ls", "{}"], ["cat", "metadata.json", "{}"],
                                  ["unpack", "-C", "out", "{}"], ["unpack", "{}", "--db", "x.db"],
                                  ["doctor", "--db", "x.db", "--against", "{}"],
                                  ["load-table", "users", "{}", "--db", "x.db"]], ids=lambda a: a[0])
def test_a_missing_file_is_one_line_and_exit_1(args, tmp_path):
    missing = tmp_path / "no-such.tar"
    result = aviary(*[str(missing) if a == "{}" else a for a in args], cwd=tmp_path)
    assert one_line_error(result) == f"aviary {args[0]}: {missing}: No such file or directory"


def test_a_folder_given_as_an_archive_is_one_line_and_exit_1(tmp_path):
    assert one_line_error(aviary("verify", tmp_path)) == f"aviary verify: {tmp_path}: Is a directory"


# --- 5. an archive cut short inside metadata.json is said once -------------------------------------


def test_an_archive_cut_short_in_its_metadata_is_reported_once(site, tmp_path):
    cut = tmp_path / "trunc.tar"
    cut.write_bytes(site["archive"].read_bytes()[:600])
    result = aviary("verify", cut)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [f"aviary verify: problem: structure: {cut}: metadata.json (offset 0): archive truncated"
                     f" inside member data (got 88 of {lines[0].split(' of ')[1]}", lines[1]]
    assert lines[1] == "aviary verify: 1 problem(s) in 600 B read"
    target = tmp_path / "target.db"
    target.write_bytes(open(site["db"], "rb").read())
    for command in (["unpack", "-C", tmp_path / "out"], ["unpack", "--db", target, "--no-files"]):
        line = one_line_error(aviary(*command, cut))
        assert line.startswith(f"aviary unpack: {cut}: metadata.json (offset 0): archive truncated"), line


def test_invalid_metadata_names_the_member_once(tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("metadata.json")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"{nope"))
    result = aviary("verify", bad)
    assert result.returncode == 1
    assert result.stderr.decode().count("metadata.json") == 1, result.stderr
    line = one_line_error(aviary("unpack", "-C", tmp_path / "out", bad))
    assert line.count("metadata.json") == 1 and "invalid JSON" in line, line


def test_a_restore_into_postgresql_says_the_rounded_timestamps_in_one_line(site, pg_url):
    result = aviary("unpack", site["archive"], "--db", pg_url, "--create-schema", "--no-files")
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith("aviary unpack: warning: ") and " timestamp(s) rounded from nanoseconds to" \
        " microseconds (PostgreSQL keeps microseconds): " in line
    counts = dict(pair.rsplit(" ", 1) for pair in line.split("): ", 1)[1].split(", "))
    assert {"users", "documents"} <= set(counts) and sorted(counts) == list(counts)
    assert int(line.split("warning: ")[1].split(" ")[0]) == sum(int(n) for n in counts.values())


def test_load_table_says_the_rounded_timestamps_in_one_line(site, pg_url):
    ok("init-schema", "--db", pg_url)
    result = aviary("load-table", "users", "--db", pg_url, input=ok("dump-table", "users", "--db", site["db"]))
    assert result.returncode == 0, result.stderr
    [line] = result.stderr.decode().strip().splitlines()
    assert "timestamp(s) rounded" in line and "users.created_at " in line


def test_rows_loaded_into_the_wrong_table_fail_without_a_warning_per_column(site, tmp_path):
    target = tmp_path / "target.db"
    target.write_bytes(open(site["db"], "rb").read())
    users = ok("dump-table", "users", "--db", site["db"])
    line = one_line_error(aviary("load-table", "documents", "--db", target, input=users))
    assert line == "aviary load-table: line 1, column user_id: missing, and it cannot be null"


def test_keys_a_table_lacks_are_dropped_with_one_warning_in_the_rows_order(site, tmp_path):
    target = tmp_path / "target.db"
    target.write_bytes(open(site["db"], "rb").read())
    rows = b'{"key":"a","value":"1","zz":1,"aa":2}\n{"key":"b","value":"2","zz":1,"bb":2}\n'
    result = aviary("load-table", "system_settings", "--db", target, input=rows)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [
        "aviary load-table: warning: line 1: columns 'zz', 'aa' are not in table system_settings: dropped",
        "aviary load-table: warning: line 2: column 'bb' is not in table system_settings: dropped"]


# --- 6. help and messages ---------------------------------------------------------------------------


def test_max_age_is_said_in_the_unit_it_was_given(site, tmp_path):
    from aviarytools.timestamps import Duration

    assert str(Duration("7d")) == "7 days" and str(Duration("1h")) == "1 hour" and str(Duration("1.5w")) == "1.5 weeks"
    assert Duration("26h").describe(30 * 3600) == "30.0 hours"
    assert Duration("7d").describe(8 * 86400) == "8.0 days"
    assert Duration("1s").describe(400 * 86400) == "400.0 days"  # not 9,600 hours, nor 34,560,000 seconds
    with pytest.raises(ValueError):
        Duration("soon")


def test_pack_level_says_only_level_0_can_be_asked_for(site, tmp_path):
    helped = ok("pack", "--help").decode()
    assert "0<=x<=0" not in helped and "--level 0" in helped
    result = aviary("pack", "--db", site["db"], "--no-files", "-g", tmp_path / "state", "--level", "1",
                    "-o", tmp_path / "x.tar")
    assert result.returncode == 2
    assert "'1': only --level 0 (a full archive) can be asked for" in result.stderr.decode()
    assert "0<=x<=0" not in result.stderr.decode() and not (tmp_path / "x.tar").exists()
    ok("pack", "--db", site["db"], "--storage", site["data"], "-g", tmp_path / "state", "--level", "0",
       "-o", tmp_path / "x.tar")


@pytest.mark.parametrize("command", ["verify", "unpack", "ls", "info", "cat"])
def test_every_reader_says_what_archive_it_reads(command):
    assert "(default: stdin; plain, gzip or zstd" in " ".join(ok(command, "--help").decode().split())


def test_the_command_list_says_each_first_sentence_whole():
    listed = ok("--help").decode().split("Commands:")[1]
    joined = " ".join(listed.split())
    assert not [line for line in listed.splitlines() if line.endswith("...")]  # click's cut
    assert "doctor Check the live database and documents; exit 0 healthy, 1 problems." in joined


def test_the_default_database_that_is_not_there_says_it_is_the_default(tmp_path):
    line = one_line_error(aviary("tables", cwd=tmp_path))
    assert line == ("aviary tables: /data/aviary.db: no such SQLite database (the default: nothing names a"
                    " database and DATA_DIR is unset; name it with --db URL, $AVIARY_DB or DATA_DIR)")
    line = one_line_error(aviary("unpack", "--no-files", input=b"", env={"DATA_DIR": str(tmp_path)}))
    assert line.endswith(f"{tmp_path}/aviary.db: no such SQLite database ($DATA_DIR/aviary.db: name another"
                         " with --db URL or $AVIARY_DB)")
    assert one_line_error(aviary("tables", "--db", tmp_path / "x.db")).endswith("x.db: no such SQLite database")


def test_a_dry_run_names_the_rows_it_would_remove_and_counts_unchanged_rows_apart(site, tmp_path):
    target = tmp_path / "target.db"
    target.write_bytes(open(site["db"], "rb").read())
    with sqlite3.connect(target) as db:
        db.execute("INSERT INTO system_settings (key, value) VALUES ('zz-extra', '1'), ('aa-extra', '2')")
        db.execute("UPDATE users SET email = 'changed@example.org' WHERE rowid = 1")
    result = aviary("unpack", "--dry-run", "--db", target, "--storage", site["data"], site["archive"])
    assert result.returncode == 0, result.stderr
    lines = {line.split(": ")[1]: line for line in result.stderr.decode().splitlines()}
    settings = ok("dump-table", "system_settings", "--db", site["db"]).count(b"\n")
    assert lines["system_settings"] == (f"aviary unpack: system_settings: {settings} row(s) in the archive, 0 written,"
                                        f" {settings} unchanged, 2 removed (key=aa-extra; key=zz-extra) (dry run)")
    assert lines["users"] == "aviary unpack: users: 2 row(s) in the archive, 1 written, 1 unchanged, 0 removed (dry run)"


def test_a_dry_run_names_five_stale_rows_and_counts_the_rest(site, tmp_path):
    target = tmp_path / "target.db"
    target.write_bytes(open(site["db"], "rb").read())
    with sqlite3.connect(target) as db:
        db.executemany("INSERT INTO system_settings (key, value) VALUES (?, '1')", [(f"k{i}",) for i in range(8)])
    result = aviary("unpack", "--dry-run", "--db", target, "--no-files", site["archive"])
    assert "8 removed (key=k0; key=k1; key=k2; key=k3; key=k4; 3 more) (dry run)" in result.stderr.decode()


def test_a_restore_into_postgresql_leaves_equal_rows_alone(site, pg_url):
    ok("unpack", site["archive"], "--db", pg_url, "--create-schema", "--no-files")
    result = aviary("unpack", "--dry-run", site["archive"], "--db", pg_url, "--no-files")
    tables = [line for line in result.stderr.decode().splitlines() if "row(s) in the archive" in line]
    assert len(tables) == 7 and all(", 0 written, " in line for line in tables), tables


def test_a_bucket_that_does_not_exist_is_refused_before_anything_is_written(site, s3_server, tmp_path):
    env = {"S3_ACCESS_KEY_ID": s3_server.access_key, "S3_SECRET_ACCESS_KEY": s3_server.secret_key}
    misspelt = ["--storage", "s3://aviary-misspelt", "--s3-endpoint", s3_server.endpoint, "--s3-path-style"]
    expected = ("s3://aviary-misspelt: no such bucket 'aviary-misspelt': check the name, or create the bucket"
                " first (aviary creates none)")
    target = tmp_path / "new.db"
    line = one_line_error(aviary("unpack", site["archive"], "--db", target, "--create-schema", *misspelt, env=env))
    assert line == f"aviary unpack: {expected}"
    assert not target.exists()
    assert "aviary-misspelt" not in [b["Name"] for b in s3_server.client().list_buckets().get("Buckets", [])]
    line = one_line_error(aviary("pack", "--db", site["db"], *misspelt, "-o", tmp_path / "x.tar", env=env))
    assert line == f"aviary pack: {expected}" and not (tmp_path / "x.tar").exists()
