"""The S3 rows of bench/run.py: our restore into S3 and pack from S3 against the AWS
CLI (`aws s3 cp --recursive`) and rclone (`rclone copy`), on the same documents.

A SeaweedFS server stands in for S3, behind a latency proxy (tests/latency_proxy.py)
that adds the round trip a real link has.  Every tool runs at its defaults; each has
its own bucket to upload into, emptied before every run, and all download from one
bucket filled beforehand.  Setup (documents, our archive, the source bucket) is
not timed.  The peer tools come from scripts/install-bench-tools.
"""

import random
import shutil
import subprocess
import uuid
from pathlib import Path

from latency_proxy import LatencyProxy
from servers import SeaweedS3Server, weed_binary

ROOT = Path(__file__).resolve().parent.parent
AWS = ROOT / ".venv" / "tools" / "awscli" / "bin" / "aws"
ROUND_TRIPS_MS = [0, 20]
DATA_SETS = [(300, 16 << 10), (24, 4 << 20)]  # documents, bytes each
# Shown, not judged: enough data that start-up (0.25 s before our first request, 0.16-0.18 s of it
# botocore importing and making its client) stops deciding it.
SHOWN_SETS = [(100, 4 << 20)]
USERS = 4
MEMORY_LIMIT_MB = 150
TARGET_ROUND_TRIP_MS = 20  # judged there; at 0 ms the ratios are shown only
OURS, AWS_BUCKET, RCLONE_BUCKET, SOURCE = "bench-ours", "bench-aws", "bench-rclone", "bench-source"


def row_names(docs: int, size: int, round_trip: int) -> tuple[str, str]:
    data = f"{docs} x {size >> 20} MiB" if size >= 1 << 20 else f"{docs} x {size >> 10} KiB"
    return f"restore to S3, {round_trip} ms, {data}", f"pack from S3, {round_trip} ms, {data}"


def section(bench) -> None:
    plan = [(docs, size, rt) for docs, size in DATA_SETS for rt in ROUND_TRIPS_MS]
    plan += [(docs, size, TARGET_ROUND_TRIP_MS) for docs, size in SHOWN_SETS]
    wanted = [row for row in plan if any(bench.only in name for name in row_names(*row))]
    if not wanted:
        return
    missing = [tool for tool, found in (("aws", AWS.exists()), ("rclone", shutil.which("rclone"))) if not found]
    if missing:
        raise bench.Failed(f"{' and '.join(missing)} not installed: run scripts/install-bench-tools")
    # Volumes of 1 GiB: with the tests' 64 MiB, SeaweedFS grows new volumes every few runs, in
    # the middle of whichever tool is uploading (the same restore spread from 0.9 to 1.8 s).
    server = SeaweedS3Server(bench.dir / "seaweedfs", volume_mb=1024)
    # Half the round trip each way.
    proxies = {rt: LatencyProxy(server.ports["s3"], rt / 2) for rt in ROUND_TRIPS_MS}
    saved_env = bench.env
    try:
        server.start()
        for proxy in proxies.values():
            proxy.start()
        client = server.client()
        for bucket in (OURS, AWS_BUCKET, RCLONE_BUCKET, SOURCE):
            client.create_bucket(Bucket=bucket)
        bench.env = tool_environment(bench.env, bench.dir, server)
        bench.section(f"S3: {versions()}; best of {bench.repeat} runs;"
                      f" targets at {TARGET_ROUND_TRIP_MS} ms: ours <= 1.0x aws, < 1.0x rclone,"
                      f" peak < {MEMORY_LIMIT_MB} MB", peers=("aws", "rclone"))
        made = None
        for docs, size, rt in wanted:
            if made != (docs, size):
                documents, made = make_documents(bench, client, docs, size), (docs, size)
            bench.env["S3"] = bench.env["RCLONE_CONFIG_BENCH_ENDPOINT"] = proxies[rt].endpoint
            judged = rt == TARGET_ROUND_TRIP_MS and (docs, size) in DATA_SETS
            rows(bench, client, documents, row_names(docs, size, rt), judged=judged)
    finally:
        bench.env = saved_env
        for proxy in proxies.values():
            proxy.stop()
        server.stop()


def versions() -> str:
    def words(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    return (f"SeaweedFS {words(weed_binary(), 'version')[2]} behind a latency proxy; {words(AWS, '--version')[0]},"
            f" rclone {words('rclone', 'version')[1]}")


def tool_environment(env: dict, folder: Path, server: SeaweedS3Server) -> dict:
    """Credentials each tool's way, and nothing from this machine's AWS or rclone setup."""
    (folder / "no-config").write_text("")
    env = {name: value for name, value in env.items() if not name.startswith(("AWS_", "S3_", "RCLONE_"))}
    keys = {"access_key_id": server.access_key, "secret_access_key": server.secret_key}
    return {
        **env,
        **{f"S3_{name.upper()}": value for name, value in keys.items()},  # ours, as Aviary takes them
        **{f"AWS_{name.upper()}": value for name, value in keys.items()},
        "AWS_DEFAULT_REGION": server.region,
        "AWS_CONFIG_FILE": str(folder / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-config"),
        "AWS": str(AWS),
        "RCLONE_CONFIG": str(folder / "no-config"),
        # The remote `bench:`; its endpoint is set per round trip.
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_BENCH_REGION": server.region,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        **{f"RCLONE_CONFIG_BENCH_{name.upper()}": value for name, value in keys.items()},
    }


def make_documents(bench, client, docs: int, size: int) -> dict[str, int]:
    """`docs` documents of random bytes under documents/users/<uuid>/pdfs/, our archive
    of them (documents.tar) and a copy in the source bucket; returns {key: size}."""
    folder = bench.dir / "documents"
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(docs)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(USERS)]
    empty_bucket(client, SOURCE)
    documents = {}
    for i in range(docs):
        key = f"users/{users[i % USERS]}/pdfs/doc-{i}.pdf"
        body = rng.randbytes(size)
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(body)
        client.put_object(Bucket=SOURCE, Key=key, Body=body)
        documents[key] = size
    bench.run("$AVIARY pack --no-db --storage documents > documents.tar")
    return documents


def rows(bench, client, documents: dict[str, int], names: tuple[str, str], judged: bool) -> None:
    restore, pack = names
    targets = {"aws": lambda ratio: ratio <= 1.0, "rclone": lambda ratio: ratio < 1.0} if judged else {}
    buckets = (OURS, AWS_BUCKET, RCLONE_BUCKET)
    bench.compare_peers(
        restore,
        f'$AVIARY unpack --no-db --storage s3://{OURS} --s3-endpoint "$S3" --s3-path-style < documents.tar',
        {"aws": f'$AWS s3 cp --recursive documents/users s3://{AWS_BUCKET}/users --endpoint-url "$S3"'
                " --only-show-errors",
         "rclone": f"rclone copy documents/users bench:{RCLONE_BUCKET}/users"},
        targets, memory_limit=MEMORY_LIMIT_MB,
        prepare=[lambda bucket=bucket: empty_bucket(client, bucket) for bucket in buckets],
        check=[lambda bucket=bucket: expect(bench, f"s3://{bucket}/users/", listing(client, bucket), documents)
               for bucket in buckets])

    def downloaded():
        folder = bench.dir / "download"
        found = {f"users/{path.relative_to(folder)}": path.stat().st_size
                 for path in folder.rglob("*") if path.is_file()}
        expect(bench, "download/", found, documents)

    bench.compare_peers(
        pack,
        f'$AVIARY pack --no-db --storage s3://{SOURCE} --s3-endpoint "$S3" --s3-path-style > /dev/null',
        {"aws": f'$AWS s3 cp --recursive s3://{SOURCE}/users download --endpoint-url "$S3" --only-show-errors',
         "rclone": f"rclone copy bench:{SOURCE}/users download"},
        targets, memory_limit=MEMORY_LIMIT_MB,
        prepare=lambda: shutil.rmtree(bench.dir / "download", ignore_errors=True),
        check=[None, downloaded, downloaded])


def listing(client, bucket: str) -> dict[str, int]:
    """{key: size} of the documents under users/ (not SeaweedFS's folder entries)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="users/")
    return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")}


def expect(bench, where: str, found: dict[str, int], documents: dict[str, int]) -> None:
    if found != documents:
        raise bench.Failed(f"{where} holds {len(found)} documents of {sum(found.values()):,} bytes,"
                           f" expected {len(documents)} of {sum(documents.values()):,}")


def empty_bucket(client, bucket: str) -> None:
    """Delete every object, then every folder: SeaweedFS keeps emptied folders, and lists
    them (`users/<id>/` as a common prefix, `a/b/` as an object) until they are deleted."""
    objects, folders = [], []

    def walk(prefix):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            for obj in page.get("Contents", []):
                (folders if obj["Key"].endswith("/") else objects).append(obj["Key"])
            for common in page.get("CommonPrefixes", []):
                folders.append(common["Prefix"])
                walk(common["Prefix"])

    walk("")
    for keys in (objects, sorted(set(folders), key=len, reverse=True)):  # deepest folders first
        for start in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                         "Quiet": True})
