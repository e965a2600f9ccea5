"""S3 with requests side by side (storage/transfers.py): the same archive and the same restore
whatever the concurrency, nothing left behind, memory bounded by the byte budget."""

import io
import os
import random
import subprocess

import pytest
import xxhash

from archive_helpers import all_ok, bucket_storage, installation, pipeline, s3_args, s3_env, state
from aviarytools import spill
from aviarytools.archive.pack import PackOptions, pack
from aviarytools.errors import ConfigError
from aviarytools.storage import open_storage
from aviarytools.storage.transfers import Budget, Transfers
from helpers import AVIARY

USER = "5a1f0c3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b"


def documents(count: int, size: int, large: int = 0) -> dict[str, bytes]:
    rng = random.Random(count)
    found = {f"users/{USER}/pdfs/{'a-b' if n % 3 else 'a/b'}/doc {n}.pdf": rng.randbytes(size) for n in range(count)}
    if large:
        found[f"users/{USER}/pdfs/large.pdf"] = rng.randbytes(large)
    return found


def storage_at(s3_server, bucket, concurrency):
    return open_storage(f"s3://{bucket}", s3_endpoint=s3_server.endpoint, s3_path_style=True,
                        s3_access_key=s3_server.access_key, s3_secret_key=s3_server.secret_key,
                        s3_concurrency=concurrency)


def test_the_archive_does_not_depend_on_the_concurrency(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setattr(spill, "SPILL_AFTER", 5)  # the flat listing sorted on disk, too
    for key, body in documents(40, 3000, large=20 << 20).items():
        bucket_storage(s3_server, s3_bucket).write(key, [body], len(body))
    archives = []
    for concurrency in (1, 3, 16):
        out = io.BytesIO()
        with storage_at(s3_server, s3_bucket, concurrency) as storage:
            pack(None, storage, out, PackOptions(), now_ns=1_753_600_000 * 10**9)
        archives.append(out.getvalue())
    assert archives[0] == archives[1] == archives[2]


def test_a_restore_into_s3_leaves_no_staging_behind(tmp_path, s3_server, s3_bucket):
    source = tmp_path / "source"
    expected = documents(60, 5000, large=19 << 20)  # a multipart upload among small PUTs
    for key, body in expected.items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(body)
    all_ok(pipeline(["aviary", "pack", "--no-db", "--storage", source],
                    ["aviary", "unpack", "--no-db", *s3_args(s3_server, s3_bucket), "--s3-concurrency", "4"],
                    env=s3_env(s3_server)))
    client = s3_server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
            for o in page.get("Contents", [])]
    assert not [k for k in keys if k.startswith(".aviary-restore-")]  # SeaweedFS keeps folder entries
    stored = {k: xxhash.xxh3_128_hexdigest(client.get_object(Bucket=s3_bucket, Key=k)["Body"].read())
              for k in keys if not k.endswith("/")}
    assert stored == {k: xxhash.xxh3_128_hexdigest(v) for k, v in expected.items()}


def test_the_concurrency_comes_from_the_option_or_the_environment(s3_server, s3_bucket, monkeypatch):
    assert storage_at(s3_server, s3_bucket, None).capabilities.connections == 16
    monkeypatch.setenv("AVIARY_S3_CONCURRENCY", "5")
    assert storage_at(s3_server, s3_bucket, None).capabilities.connections == 5
    assert storage_at(s3_server, s3_bucket, 9).capabilities.connections == 9
    monkeypatch.setenv("AVIARY_S3_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="expected a number of requests from 1 to 256"):
        storage_at(s3_server, s3_bucket, None)


def test_a_budget_lets_a_request_larger_than_itself_through_alone():
    budget = Budget(10)
    assert budget.take(4) and not budget.take(8, block=False)
    budget.give(4)
    assert budget.take(50)  # alone: the whole budget
    assert not budget.take(1, block=False)
    budget.give(50)
    assert budget.free == 10


def test_prefetch_hands_results_over_in_order_within_the_budget():
    transfers = Transfers(4, budget=100)
    seen = []

    def fetch(n):
        seen.append(transfers.budget.free)
        return n * n

    results = [future.result() for _, future in transfers.prefetch(range(20), fetch, lambda n: 30)]
    assert results == [n * n for n in range(20)]
    assert min(seen) >= 0 and transfers.budget.free == 100
    transfers.close()


def test_each_raises_the_first_error_after_the_others_end():
    transfers = Transfers(3)
    done = []

    def work(n):
        if n == 5:
            raise ValueError("five")
        done.append(n)

    with pytest.raises(ValueError, match="five"):
        transfers.each(work, range(50))
    assert len(done) < 50
    transfers.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM")
def test_uploads_hold_at_most_the_budget(s3_server, s3_bucket):
    """40 documents of 4 MiB put side by side hold about 64 MiB at most, not 160."""
    def peak_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    storage = storage_at(s3_server, s3_bucket, 16)
    body = random.Random(1).randbytes(4 << 20)
    before, high = peak_mb(), 0
    for n in range(40):
        storage.put(f"users/{USER}/pdfs/{n}.pdf", [body[:1 << 20], body[1 << 20:]], len(body))
        high = max(high, peak_mb())
    storage.settle()
    storage.close()
    assert high - before < 110


def test_large_documents_go_up_to_their_own_key_and_none_is_left_incomplete(tmp_path, s3_server, s3_bucket):
    """Documents of 1 MiB or more are staged as uploads to their own key, completed after the
    commit (no copy): a failed restore aborts them, a finished one completes them all."""
    source = tmp_path / "source"
    expected = documents(6, 1 << 20, large=9 << 20)
    for key, body in expected.items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        (source / key).write_bytes(body)
    archive = all_ok(pipeline(["aviary", "pack", "--no-db", "--storage", source]))
    client = s3_server.client()
    live = bucket_storage(s3_server, s3_bucket)
    live.write(f"users/{USER}/pdfs/large.pdf", [b"the live copy"])  # replaced only by a restore that commits
    damaged = bytearray(archive)
    damaged[archive.index(b"checksums.xxh128") - 600] ^= 1  # a flipped bit, found at the end
    run = subprocess.run([*AVIARY, "unpack", "--no-db", *s3_args(s3_server, s3_bucket)], input=bytes(damaged),
                         capture_output=True, env={**os.environ, **s3_env(s3_server)})
    assert run.returncode == 1
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert b"".join(live.read(f"users/{USER}/pdfs/large.pdf")) == b"the live copy"
    run = subprocess.run([*AVIARY, "unpack", "--no-db", *s3_args(s3_server, s3_bucket)], input=archive,
                         capture_output=True, env={**os.environ, **s3_env(s3_server)})
    assert run.returncode == 0, run.stderr
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert {k: b"".join(live.read(k)) for k in expected} == expected


def test_an_object_too_large_for_one_copy_is_copied_in_ranged_parts(s3_server, s3_bucket, monkeypatch):
    # S3 copies at most 5 GiB in one request; above that the copy goes part by part.
    from aviarytools.storage import s3
    monkeypatch.setattr(s3, "COPY_PART_SIZE", 5 << 20)
    body = random.Random(7).randbytes((12 << 20) + 3)
    with storage_at(s3_server, s3_bucket, 4) as storage:
        storage.write("staged/big.pdf", [body], len(body))
        storage._copy_in_parts("staged/big.pdf", "users/big.pdf")
        copied = b"".join(storage.read("users/big.pdf"))
        assert not list(storage.irregular_entries(lambda key: False))
    assert xxhash.xxh3_128_hexdigest(copied) == xxhash.xxh3_128_hexdigest(body)


def test_pack_unpack_and_doctor_take_the_s3_region_and_concurrency(tmp_path, s3_server, s3_bucket):
    """The region and the concurrency on the command line, through a whole round trip."""
    db = str(tmp_path / "aviary.db")
    installation(db, bucket_storage(s3_server, s3_bucket), users=2, nanos=False)
    settings = ["--s3-region", "us-east-1", "--s3-concurrency", "3"]
    archive = tmp_path / "a.tar"
    all_ok(pipeline(["aviary", "pack", "--db", db, *s3_args(s3_server, s3_bucket), *settings, "-o", archive],
                    env=s3_env(s3_server)))
    other = s3_server.create_bucket(f"{s3_bucket}-copy")
    target = str(tmp_path / "target.db")
    all_ok(pipeline(["aviary", "unpack", "--db", target, "--create-schema", *s3_args(s3_server, other), *settings,
                     archive], env=s3_env(s3_server)))
    assert state(target, bucket_storage(s3_server, other)) == state(db, bucket_storage(s3_server, s3_bucket))
    all_ok(pipeline(["aviary", "doctor", "--db", target, *s3_args(s3_server, other), *settings, "--no-progress",
                     "--against", archive], env=s3_env(s3_server)))
    s3_server.client().delete_bucket(Bucket=other)
