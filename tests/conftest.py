import shutil
import signal
import tempfile
import uuid
from contextlib import contextmanager

import pytest

from servers import PostgresServer, SeaweedS3Server

# ---------------------------------------------------------------------------
# Real servers: one PostgreSQL and one SeaweedFS S3 per test session.
# A server that cannot start fails the tests that need it: never skipped.
# ---------------------------------------------------------------------------


def pytest_configure(config):
    # A SIGTERM (a CI timeout, `kill`) would end the session without its teardown and leave
    # both servers running; taken as an interrupt, it stops them as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@contextmanager
def _scratch_folder(name):
    # Not pytest's tmp_path: it is private to root, and PostgreSQL runs as `postgres`.
    folder = tempfile.mkdtemp(prefix=f"aviary-{name}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    with _scratch_folder("postgres") as folder:
        server = PostgresServer(folder)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_server():
    with _scratch_folder("seaweedfs") as folder:
        server = SeaweedS3Server(folder)
        try:
            server.start()
            yield server
        finally:
            server.kill()  # its data goes anyway; a polite stop takes 5 s


@pytest.fixture
def pg_url(pg_server):
    """URL of a new, empty database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


@pytest.fixture
def pg_reference(pg_server):
    """URL of a second new, empty database (a reference to compare a restore with)."""
    name = f"ref_{uuid.uuid4().hex[:12]}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


@pytest.fixture
def s3_bucket(s3_server):
    """Name of a new, empty bucket, deleted with its objects after the test."""
    name = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    yield name
    # SeaweedFS deletes a bucket with everything in it (-s3.allowDeleteBucketNotEmpty).
    s3_server.client().delete_bucket(Bucket=name)
