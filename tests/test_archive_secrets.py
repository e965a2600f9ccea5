"""No output of an archive command, stdout or stderr, success or failure, shows the database
password given in --db or the S3 secret key given in the environment."""

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from archive_helpers import bucket_storage, installation, s3_args, s3_env
from helpers import aviary
from servers import PostgresServer, SeaweedS3Server

SECRETS = [PostgresServer.password, SeaweedS3Server.secret_key, "wrong-S3cret-key"]
SHOWN_AS = {form.encode() for s in SECRETS for form in (s, quote(s, safe=""), quote(s))} | {b"S3cret"}


def leaked(result) -> set[bytes]:
    output = result.stdout + result.stderr
    return {form for form in SHOWN_AS if form in output}


@pytest.fixture
def site(pg_url, s3_server, s3_bucket):
    installation(pg_url, bucket_storage(s3_server, s3_bucket), users=2, nanos=False)
    assert PostgresServer.password not in pg_url and quote(PostgresServer.password, safe="") in pg_url
    return pg_url, s3_args(s3_server, s3_bucket), s3_env(s3_server)


def run_all(commands, env, input=None):
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: aviary(*args, env=env, input=input), commands))


def test_no_output_shows_a_secret(site):
    url, storage, env = site
    packed = aviary("pack", "--db", url, *storage, "--progress", env=env)
    assert packed.returncode == 0, packed.stderr.decode()
    archive = packed.stdout
    damaged = archive[: len(archive) // 2]
    elsewhere = url.rsplit("/", 1)[0]
    succeed = [
        ["unpack", "--db", url, *storage, "--dry-run", "--progress"],
        ["unpack", "--db", url, *storage],
        ["verify", "--json"], ["ls"], ["cat", "database/users.json", "--ndjson"], ["info"],
    ]
    fail = [
        ["pack", "--db", url, *storage, "--tables", "nosuch"],
        ["pack", "--db", f"{elsewhere}/nosuchdb", *storage],
        ["pack", "--db", url.replace(url.split("@")[1].split("/")[0], "127.0.0.1:1"), *storage],
        ["pack", "--db", url, "--storage", "s3://no-such-bucket", *storage[2:]],
        ["pack", "--db", url, "--storage", "s3://bucket", "--s3-endpoint", "ftp://example.org"],
        ["unpack", "--db", url, *storage, "--user", "nobody"],
        ["verify"], ["ls"], ["info", "--nope"],
    ]
    results = run_all(succeed, env, archive) + run_all(fail, env, damaged)
    wrong_key = {**env, "S3_SECRET_ACCESS_KEY": "wrong-S3cret-key"}
    results += run_all([["pack", "--db", url, *storage], ["unpack", "--db", url, *storage]],
                       wrong_key, archive)
    statuses = [r.returncode for r in results]
    # --tables nosuch is a usage error (2) listing the tables; info --nope too.
    assert statuses == [0] * len(succeed) + [2] + [1] * (len(fail) - 2) + [2, 1, 1], [
        (r.args[3:6], r.stderr.decode()) for r in results]
    for result in [packed, *results]:
        assert leaked(result) == set(), (result.args, result.stderr.decode())
