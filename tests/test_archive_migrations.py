"""Whole installations moved in one pipe, `aviary pack | aviary unpack`, and checked exactly:
every data table dumps to the same bytes, every object has the same XXH128."""

import uuid

import pytest

from archive_helpers import (all_ok, bucket_storage, dump_tables, installation, objects, pipeline, s3_args,
                             s3_env, state)
from helpers import DATA_TABLES


@pytest.fixture
def second_bucket(s3_server):
    name = s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    yield name
    s3_server.client().delete_bucket(Bucket=name)


def test_sqlite_and_folder_to_postgresql_and_s3_and_back(tmp_path, pg_url, s3_server, s3_bucket):
    sqlite = str(tmp_path / "aviary.db")
    installation(sqlite, tmp_path / "data", users=4, nanos=False)
    tables, files = before = state(sqlite, tmp_path / "data")
    assert all(tables[t] for t in DATA_TABLES) and len(files) == 12

    all_ok(pipeline(
        ["aviary", "pack", "--db", sqlite, "--storage", tmp_path / "data"],
        ["aviary", "unpack", "--db", pg_url, *s3_args(s3_server, s3_bucket), "--create-schema"],
        env=s3_env(s3_server)))
    assert dump_tables(pg_url) == tables
    assert objects(bucket_storage(s3_server, s3_bucket)) == files

    back = str(tmp_path / "back.db")
    all_ok(pipeline(
        ["aviary", "pack", "--db", pg_url, *s3_args(s3_server, s3_bucket)],
        ["aviary", "unpack", "--db", back, "--storage", tmp_path / "back", "--create-schema"],
        env=s3_env(s3_server)))
    assert state(back, tmp_path / "back") == before


def test_documents_move_from_one_bucket_to_another(tmp_path, s3_server, s3_bucket, second_bucket):
    old, new = bucket_storage(s3_server, s3_bucket), bucket_storage(s3_server, second_bucket)
    installation(str(tmp_path / "aviary.db"), old, users=3)
    old.write("backups/aviary-backup-2025-07-27.tar.gz", [b"Aviary's own backup: never moved"])
    documents = {k: v for k, v in objects(old).items() if k.startswith("users/")}

    all_ok(pipeline(
        ["aviary", "pack", "--no-db", *s3_args(s3_server, s3_bucket)],
        ["aviary", "unpack", "--no-db", *s3_args(s3_server, second_bucket)],
        env=s3_env(s3_server)))
    assert objects(new) == documents
    assert len(documents) == 9
