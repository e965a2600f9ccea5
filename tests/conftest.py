import os
import shutil
import signal
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

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
    _record_the_cli_surface(config)


# ---------------------------------------------------------------------------
# The command-line surface (test_cli_surface.py): every `aviary` command a test runs records
# the options it was given (cli_surface/sitecustomize.py), and, when the whole suite runs, the
# surface tests, run last, fail naming each option no test gave.
# ---------------------------------------------------------------------------

TESTS = Path(__file__).resolve().parent


def _record_the_cli_surface(config):
    log = tempfile.NamedTemporaryFile(prefix="aviary-cli-surface-", suffix=".ndjson", delete=False)
    log.close()
    os.environ["CLI_SURFACE_LOG"] = log.name
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS / "cli_surface"),
                                                             os.environ.get("PYTHONPATH")]))
    config.cli_surface = {"log": log.name, "whole": False, "deselected": False}


def pytest_unconfigure(config):
    surface = getattr(config, "cli_surface", None)
    if surface is not None:
        os.unlink(surface["log"])


def pytest_deselected(items):
    if items:
        items[0].config.cli_surface["deselected"] = True


def pytest_collection_modifyitems(session, config, items):
    surface = [item for item in items if item.path.name == "test_cli_surface.py"]
    items[:] = [item for item in items if item.path.name != "test_cli_surface.py"] + surface  # last


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """Whether the whole suite runs: every test file, nothing deselected (-k, -m, --lf)."""
    files = {item.path for item in session.items}
    surface = session.config.cli_surface
    surface["whole"] = files == set(TESTS.glob("test_*.py")) and not surface["deselected"]


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
