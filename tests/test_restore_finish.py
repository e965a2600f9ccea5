"""A restore's commit window: a fault after the database committed is said in three lines,
leaves a journal that doctor reports, and `unpack --finish` completes the documents from it.

The command stops itself right after its commit (AVIARY_TEST_STOP_AT: a SIGSTOP, nothing
mocked); the test then strikes as a real fault would (SIGKILL, the S3 link cut) and lets it go
on."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from archive_helpers import bucket_storage, dump_tables, installation, objects, s3_args, s3_env, state
from helpers import AVIARY, aviary, ok
from latency_proxy import LatencyProxy

STAGING = ".aviary-restore-"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An installation with small documents and a few over 1 MiB (S3 stages those as uploads
    to their own key), and its archive."""
    root = tmp_path_factory.mktemp("finish-source")
    db, data = str(root / "aviary.db"), root / "data"
    tables = installation(db, data, users=3, docs_per_user=4, seed=21)
    for n, user in enumerate(tables["users"]):
        big = data / "users" / user["id"] / "pdfs" / "big.pdf"
        big.write_bytes(b"%PDF-1.4\n" + bytes([n]) * (3 << 19))
    return {"db": db, "data": data, "archive": ok("pack", "--db", db, "--storage", data),
            "state": state(db, data)}


def stopped(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the command stopped itself (state T), or fail with what it said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}): {proc.stderr.read().decode()}")
        if Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.01)
    pytest.fail("the command never reached its commit")


def start(args, stop_at: str, archive: bytes, env=None) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AVIARY_", "DB_", "S3_", "STORAGE_"))}
    full_env.update(env or {}, AVIARY_TEST_STOP_AT=stop_at)
    proc = subprocess.Popen(AVIARY + [str(a) for a in args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=full_env)
    proc.stdin.write(archive)
    proc.stdin.close()
    return proc


def staging_left(storage) -> list[str]:
    """Staging entries of any kind: S3 folder markers (keys ending in "/") too."""
    if hasattr(storage, "client"):
        listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=STAGING)
        return [o["Key"] for o in listed.get("Contents", [])]
    return [p.name for p in Path(storage).iterdir() if p.name.startswith(STAGING)]


def test_a_folder_restore_killed_after_its_commit_is_finished_from_its_journal(source, tmp_path):
    db, data = str(tmp_path / "aviary.db"), tmp_path / "data"
    installation(db, data, users=2, docs_per_user=2, seed=5)  # another installation, replaced
    proc = start(["unpack", "--db", db, "--storage", data], "committed", source["archive"])
    stopped(proc)
    proc.kill()
    proc.wait()

    assert dump_tables(db) == source["state"][0]  # committed
    journal = [p for p in data.glob(f"{STAGING}*/journal.ndjson")]
    assert len(journal) == 1
    doctor = aviary("doctor", "--db", db, "--storage", data)
    assert doctor.returncode == 1
    told = [line for line in doctor.stderr.decode().splitlines() if "unfinished-restore" in line]
    assert told and f"aviary unpack --finish --storage {data}" in told[0]

    ok("unpack", "--finish", "--storage", data)
    assert state(db, data) == source["state"]
    assert staging_left(data) == []
    assert aviary("doctor", "--against", "-", "--db", db, "--storage", data, input=source["archive"]).returncode == 0
    ok("unpack", "--finish", "--storage", data)  # nothing left to do: still fine


def test_s3_cut_after_the_commit_says_so_and_finish_completes_it(source, tmp_path, s3_server, s3_bucket):
    """SeaweedFS 25 ms away; the link is cut once the database committed."""
    db = str(tmp_path / "aviary.db")
    storage = bucket_storage(s3_server, s3_bucket)
    installation(db, storage, users=2, docs_per_user=2, seed=5)
    with LatencyProxy(s3_server.ports["s3"], delay_ms=25) as proxy:
        args = ["unpack", "--db", db, "--storage", f"s3://{s3_bucket}", "--s3-endpoint", proxy.endpoint,
                "--s3-path-style"]
        proc = start(args, "committed", source["archive"], env=s3_env(s3_server))
        stopped(proc)
    os.kill(proc.pid, signal.SIGCONT)  # the proxy is gone: nothing answers
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 1
    lines = err.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("aviary unpack: the database holds the archive's data")
    documents = len(source["state"][1])
    assert f"{documents} of {documents} document(s) still to move" in lines[1]
    assert lines[2] == (f"aviary unpack: to finish, once the storage answers: aviary unpack --finish --storage"
                        f" s3://{s3_bucket} --s3-endpoint {proxy.endpoint} --s3-path-style")
    assert s3_server.secret_key not in err
    assert dump_tables(db) == source["state"][0]

    doctor = aviary("doctor", "--db", db, *s3_args(s3_server, s3_bucket), env=s3_env(s3_server))
    assert doctor.returncode == 1 and b"unfinished-restore" in doctor.stderr

    ok("unpack", "--finish", *s3_args(s3_server, s3_bucket), env=s3_env(s3_server))
    assert objects(storage) == source["state"][1]  # key for key
    assert staging_left(storage) == []
    assert not storage.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    against = aviary("doctor", "--against", "-", "--db", db, *s3_args(s3_server, s3_bucket), env=s3_env(s3_server),
                     input=source["archive"])
    assert against.returncode == 0, against.stderr.decode()


def test_a_successful_s3_restore_leaves_no_staging_entry_of_any_kind(source, tmp_path, s3_server, s3_bucket):
    db = str(tmp_path / "aviary.db")
    ok("unpack", "--create-schema", "--db", db, *s3_args(s3_server, s3_bucket), env=s3_env(s3_server),
       input=source["archive"])
    storage = bucket_storage(s3_server, s3_bucket)
    assert objects(storage) == source["state"][1]
    assert staging_left(storage) == []


def test_a_rerun_of_the_restore_finishes_the_earlier_one_first(source, tmp_path):
    db, data = str(tmp_path / "aviary.db"), tmp_path / "data"
    installation(db, data, users=2, docs_per_user=2, seed=5)
    proc = start(["unpack", "--db", db, "--storage", data], "moving", source["archive"])
    stopped(proc)
    proc.kill()
    proc.wait()
    again = aviary("unpack", "--db", db, "--storage", data, input=source["archive"])
    assert again.returncode == 0, again.stderr.decode()
    assert b"an earlier restore is unfinished: finished first" in again.stderr
    assert state(db, data) == source["state"]
    assert staging_left(data) == []


def test_a_failed_restore_or_extraction_removes_the_folders_it_made(source, tmp_path):
    cut = source["archive"][:len(source["archive"]) // 2]
    assert aviary("unpack", "-C", tmp_path / "new" / "out", input=cut).returncode == 1
    assert aviary("unpack", "--create-schema", "--db", tmp_path / "aviary.db", "--storage", tmp_path / "data",
                  input=cut).returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_restore_that_never_reached_s3_names_no_staged_object(source, tmp_path):
    unreachable = ["--storage", "s3://nowhere", "--s3-endpoint", "http://127.0.0.1:9", "--s3-path-style"]
    result = aviary("unpack", "--create-schema", "--db", tmp_path / "aviary.db", *unreachable,
                    input=source["archive"], env={"S3_ACCESS_KEY_ID": "k", "S3_SECRET_ACCESS_KEY": "secret"})
    assert result.returncode == 1
    assert b"staged" not in result.stderr, result.stderr
