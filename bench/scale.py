"""The scale section of `make bench` (alone: `make bench-scale`): every documented command and
mode on an installation at N and at 4N, each time shown at both sizes with their ratio.

    .venv/bin/python bench/scale.py                 # N = 50,000 login_attempts (and 4N)
    .venv/bin/python bench/scale.py --n 10000       # a smaller N, for a quick look
    .venv/bin/python bench/scale.py --only sqlite

N is 50,000 login_attempts rows, 20,000 documents rows, 5,000 documents of 4 KiB and 10 users;
4N four times each.  Work that grows linearly takes about 4x as long at 4N: a ratio over 5 is
flagged SUPER-LINEAR.  Two installations: SQLite with its documents in a folder, PostgreSQL
with them in S3 (SeaweedFS).  Each command runs once per size (setup untimed); the peak is
our process tree's largest RSS; the CPU seconds (user + system, the command and its children)
grow with the work alone where the wall time also grows with the machine's other load.  At 4N it also measures what issue 19 asked of a restore over
an existing installation: its time against the restore into an empty one, and a SIGINT while
it applies login_attempts (exit 130 within a second, the table as before).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from servers import PostgresServer, SeaweedS3Server  # noqa: E402

N = 50_000  # login_attempts rows at N; the rest scale with it
SUPER_LINEAR = 5.0  # 4x the work in more than 5x the time
DOC_SIZE = 4 << 10


def build_source(folder: Path, n: int) -> None:
    """An installation in folder/aviary.db and folder/data at scale n (N = 50,000): n
    login_attempts, 2n/5 documents rows, n/10 documents of 4 KiB, 10 users."""
    from run import generate

    from aviarytools import rows, sample
    from aviarytools.db import connect
    from aviarytools.rowinput import RowSource

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = connect(str(folder / "aviary.db"), create=True)
    with db.transaction():
        db.create_schema()
    tables = sample.sample_rows(users=10, docs_per_user=2 * n // 5 // 10)
    files = n // 10
    for i, row in enumerate(tables["documents"]):
        row["local_path"] = f"users/{row['user_id']}/pdfs/folder {i % 50}/doc-{i}.pdf"
        row["file_size"] = DOC_SIZE if i < files else 1000
    tables.pop("login_attempts")
    for name, table_rows in tables.items():
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in table_rows).encode()
        rows.load(db, name, RowSource(io.BytesIO(data)), mode="append")
    generate(n, folder)
    with open(folder / "rows.ndjson", "rb") as attempts:
        rows.load(db, "login_attempts", RowSource(attempts), mode="append")
    db.close()
    block = random.Random(n).randbytes(DOC_SIZE + 4096)
    for i, row in enumerate(tables["documents"][:files]):
        path = folder / "data" / row["local_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block[i % 4096:i % 4096 + DOC_SIZE])
    os.replace(folder / "rows.ndjson", folder / "attempts.ndjson")
    for name in ("rows.csv", "rows-sqlite.csv"):
        (folder / name).unlink()


class Target:
    """Where the commands restore into and read from: SQLite + folder, or PostgreSQL + S3."""

    def __init__(self, name: str, workdir: Path, pg: PostgresServer | None = None, s3: SeaweedS3Server | None = None):
        self.name, self.dir, self.pg, self.s3 = name, workdir, pg, s3
        self.db = self.storage = ""

    def fresh(self) -> None:
        """An empty database and storage (the restore into an empty target)."""
        if self.pg is None:
            shutil.rmtree(self.dir / "t", ignore_errors=True)
            self.db, self.storage = "t/aviary.db", "--storage t/data"
            return
        self.pg.drop_database("scale")
        self.db = self.pg.create_database("scale")
        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        self.s3.create_bucket(bucket)
        self.storage = f"--storage s3://{bucket} --s3-endpoint {self.s3.endpoint} --s3-path-style"

    @property
    def args(self) -> str:
        return f'--db "{self.db}" {self.storage}'

    def count(self) -> int:
        if self.pg is None:
            import sqlite3
            with sqlite3.connect(self.dir / self.db) as conn:
                return conn.execute("SELECT count(*) FROM login_attempts").fetchone()[0]
        import psycopg
        with psycopg.connect(self.db) as conn:
            return conn.execute("SELECT count(*) FROM login_attempts").fetchone()[0]


def rows_of(target: Target) -> list[tuple[str, str, object]]:
    """(name, command, prepare) in the order they run: each leaves what the next needs."""
    a, db = "{a}", "{db}"  # filled in once `prepare` made the target
    return [
        ("unpack into an empty target", f"$AVIARY unpack {a} --create-schema < source.tar", target.fresh),
        ("unpack over itself (replace)", f"$AVIARY unpack {a} < source.tar", None),
        ("unpack over itself (merge)", f"$AVIARY unpack {a} --mode merge < source.tar", None),
        ("unpack --dry-run over itself", f"$AVIARY unpack {a} --dry-run < source.tar 2> /dev/null", None),
        ("pack", f"$AVIARY pack {a} -o packed.tar", None),
        ("verify", "$AVIARY verify packed.tar", None),
        ("load-table --mode replace", f'$AVIARY load-table login_attempts --db "{db}" --mode replace'
         " < src/attempts.ndjson", None),
        ("load-table --mode upsert", f'$AVIARY load-table login_attempts --db "{db}" --mode upsert'
         " < src/attempts.ndjson", None),
        ("load-table --mode skip", f'$AVIARY load-table login_attempts --db "{db}" --mode skip'
         " < src/attempts.ndjson", None),
        ("dump-table login_attempts", f'$AVIARY dump-table login_attempts --db "{db}" > /dev/null', None),
        # Findings (the documents rows without a file) are exit 1: the bench wants no crash (2+).
        ("doctor", f"$AVIARY doctor {a} > /dev/null 2>&1 || [ $? -eq 1 ]", None),
        ("doctor --against", f"$AVIARY doctor {a} --against packed.tar > /dev/null 2>&1 || [ $? -eq 1 ]", None),
        ("pack -g, level 0", f"rm -f snap && $AVIARY pack {a} -g snap -o level0.tar", None),
        ("pack -g, level 1 (nothing changed)", f"$AVIARY pack {a} -g snap -o level1.tar", None),
    ]


def run(cmd: str, workdir: Path, env: dict) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB of the command's largest process, CPU seconds of the command
    and its children: on a machine shared with other work, the steadier measure of growth)."""
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", rss.name, "/bin/bash", "-o", "pipefail", "-c", cmd],
                              env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wall = time.perf_counter() - start
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"exit {proc.returncode}: {cmd}\n{err.read().decode(errors='replace')[-2000:]}")
        peak, user, system = rss.read().split()[-3:]
        return wall, int(peak) / 1024, float(user) + float(system)


def interrupt_while_applying(target: Target, workdir: Path, env: dict) -> str:
    """SIGINT once a restore over the target says it applies login_attempts: how soon it
    ends, its status, and whether the table is as before."""
    before = target.count()
    err = open(workdir / "sigint.err", "w+b")
    with open(workdir / "source.tar", "rb") as source:
        proc = subprocess.Popen(["/bin/bash", "-c", f"exec $AVIARY unpack {target.args} --progress"], env=env,
                                cwd=workdir, stdin=source, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 300
    phase = ""
    while time.monotonic() < deadline and proc.poll() is None:
        frames = os.pread(err.fileno(), 1 << 20, 0).decode(errors="replace").replace("\x1b[K", "").split("\r")
        phase = frames[-1].strip().removeprefix("unpack: ")
        if "login_attempts" in phase:
            break
        time.sleep(0.005)
    struck = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait()
    took = time.monotonic() - struck
    same = target.count() == before
    verdict = "PASS" if rc == 130 and took <= 1.0 and same else "MISS"
    return (f"SIGINT in '{phase}': exit {rc} after {took:.2f} s, login_attempts"
            f" {'as before' if same else 'CHANGED'}  {verdict}")


def section(workdir: Path, n: int, only: str = "") -> int:
    """Build, run and print; the number of rows flagged."""
    env = {**os.environ, "AVIARY": f"{sys.executable} -m aviarytools"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    pg = PostgresServer(workdir / "pg")
    (workdir / "pg").mkdir(exist_ok=True)
    s3 = SeaweedS3Server(workdir / "seaweedfs", volume_mb=1024)
    env.update({"S3_ACCESS_KEY_ID": s3.access_key, "S3_SECRET_ACCESS_KEY": s3.secret_key})
    targets = [Target("SQLite + folder", workdir), Target("PostgreSQL + S3", workdir, pg, s3)]
    targets = [t for t in targets if only.lower() in t.name.lower()]
    sizes = [n, 4 * n]
    times: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
    notes: list[str] = []
    try:
        if any(t.pg for t in targets):
            pg.start()
            s3.start()
        for size in sizes:
            build_source(workdir / "src", size)
            run("$AVIARY pack --db src/aviary.db --storage src/data -o source.tar", workdir, env)
            for target in targets:
                for name, cmd, prepare in rows_of(target):
                    if prepare:
                        prepare()
                    cmd = cmd.replace("{a}", target.args).replace("{db}", target.db)
                    times.setdefault((target.name, name), {})[size] = run(cmd, workdir, env)
                    print(f"  {target.name:16} {name:36} {size:>9,} {times[(target.name, name)][size][0]:7.2f}s",
                          file=sys.stderr, flush=True)
                if size == sizes[-1]:
                    notes.append(f"{target.name}: {interrupt_while_applying(target, workdir, env)}")
    finally:
        pg.stop()
        s3.kill()
    return report(times, sizes, notes)


def report(times, sizes, notes) -> int:
    n, n4 = sizes
    print(f"\nscale: N = {n:,} login_attempts, {2 * n // 5:,} documents rows, {n // 10:,} documents of 4 KiB,"
          f" 10 users; 4N four times each (one run each, {os.cpu_count()} CPUs,"
          f" load average {os.getloadavg()[0]:.1f})")
    print(f"  {'':17} {'':36} {'N':>8} {'4N':>8} {'ratio':>6} {'CPU N':>7} {'CPU 4N':>7} {'ratio':>6}"
          f" {'peak N':>7} {'peak 4N':>7}  growth")
    flagged = 0
    for (target, name), by_size in times.items():
        (t1, p1, c1), (t4, p4, c4) = by_size[n], by_size[n4]
        ratio, cpu_ratio = t4 / t1, c4 / max(c1, 0.01)
        super_linear = ratio > SUPER_LINEAR
        flagged += super_linear
        # Wall time over 5x while the CPU time is not: other work on the machine, most likely.
        verdict = ("SUPER-LINEAR" + (" (wall only: load?)" if cpu_ratio <= SUPER_LINEAR else "")
                   if super_linear else "ok")
        print(f"  {target:17} {name:36} {t1:7.2f}s {t4:7.2f}s {ratio:5.2f}x {c1:6.2f}s {c4:6.2f}s {cpu_ratio:5.2f}x"
              f" {p1:4.0f} MB {p4:4.0f} MB  {verdict}")
    for target in dict.fromkeys(t for t, _ in times):
        empty, over = times.get((target, "unpack into an empty target")), times.get((target, "unpack over itself (replace)"))
        if empty and over:
            ratio = over[n4][0] / empty[n4][0]
            print(f"  {target}: restore over an existing installation at 4N {over[n4][0]:.2f} s, into an empty one"
                  f" {empty[n4][0]:.2f} s: {ratio:.2f}x (target <= 2x)  {'PASS' if ratio <= 2 else 'MISS'}")
    for note in notes:
        print(f"  {note}")
    return flagged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N, help="login_attempts rows at N (the rest scale with it)")
    parser.add_argument("--only", default="", help="only the target whose name contains this (sqlite, postgresql)")
    args = parser.parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="aviary-scale-"))
    workdir.chmod(0o755)  # the PostgreSQL server (user postgres) lives in a sub-folder
    try:
        section(workdir, args.n, args.only)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
