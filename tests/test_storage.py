"""The storage layer, on a real folder and a real S3 server (SeaweedFS), with the same tests."""

import hashlib
import os
import random
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aviarytools.errors import ConfigError, StorageError
from aviarytools.storage import (
    FilesystemStorage, S3Storage, Staged, open_storage, resolve_storage, storage_from_env,
)

MiB = 1 << 20


def s3_options(server):
    return dict(s3_endpoint=server.endpoint, s3_path_style=True,
                s3_access_key=server.access_key, s3_secret_key=server.secret_key)


def a_folder(request, tmp_path):
    return open_storage(str(tmp_path))


def a_bucket(request, tmp_path):
    server = request.getfixturevalue("s3_server")
    return open_storage(f"s3://{request.getfixturevalue('s3_bucket')}", **s3_options(server))


# The shared suite: every test taking `storage` runs against each backend here.  A new
# backend (storage/<name>.py, named in storage.SCHEMES) adds its maker, on a real server.
BACKENDS = {"filesystem": a_folder, "s3": a_bucket}


@pytest.fixture(params=sorted(BACKENDS))
def storage(request, tmp_path):
    store = BACKENDS[request.param](request, tmp_path)
    yield store
    store.close()


def content(store, key):
    return b"".join(store.read(key))


def keys(store, prefix=""):
    return [info.key for info in store.list(prefix)]


def pattern(size, seed=0):
    """`size` bytes that are not all alike, in 1 MiB chunks, made as they are read."""
    block = random.Random(seed).randbytes(MiB)
    for start in range(0, size, MiB):
        yield block[: min(MiB, size - start)]


# --- the same behaviour on both backends -------------------------------------------------


def test_a_document_goes_in_comes_out_and_goes_away(storage):
    key = "users/0b6e8c1c-5a52-4d0c-9d0b-1f7a3c2e9a10/pdfs/notes.pdf"
    storage.write(key, [b"%PDF-1.7\n", b"hello"], size=14)

    info = storage.stat(key)
    assert (info.key, info.size) == (key, 14)
    assert abs(info.mtime - time.time()) < 60
    assert content(storage, key) == b"%PDF-1.7\nhello"
    assert keys(storage) == [key]

    storage.delete(key)
    assert storage.stat(key) is None
    assert keys(storage) == []
    storage.delete(key)  # already gone: fine


def test_listing_is_in_bytewise_key_order(storage):
    wanted = ["Z", "a-b", "a.c", "a/b", "a/c-d", "a/c/d", "a/ä", "a0", "e x", "é/x"]
    for key in random.Random(1).sample(wanted, len(wanted)):
        storage.write(key, [key.encode()])
    assert keys(storage) == sorted(wanted, key=str.encode) == wanted


def test_listing_under_a_prefix(storage):
    for key in ["users/u1/pdfs/a.pdf", "users/u1/pdfs/sub/deeper/b.pdf", "users/u10/pdfs/c.pdf",
                "users/u2/pdfs/d.pdf", "backups/x.tar.gz"]:
        storage.write(key, [b"x"])

    assert keys(storage, "users/u1/") == ["users/u1/pdfs/a.pdf", "users/u1/pdfs/sub/deeper/b.pdf"]
    assert keys(storage, "users/u1") == ["users/u1/pdfs/a.pdf", "users/u1/pdfs/sub/deeper/b.pdf",
                                         "users/u10/pdfs/c.pdf"]
    assert keys(storage, "users/u1/pdfs/sub/") == ["users/u1/pdfs/sub/deeper/b.pdf"]
    assert keys(storage, "users/u2/pdfs/d.pdf") == ["users/u2/pdfs/d.pdf"]
    assert keys(storage, "users/nobody/") == []


def test_names_with_spaces_and_non_ascii_letters(storage):
    names = ["users/ü 1/pdfs/Résumé final (2).pdf", "pdfs/日本語/ノート #1.pdf", "pdfs/a+b=c&d.pdf"]
    for name in names:
        storage.write(name, [name.encode()])
    assert keys(storage) == sorted(names, key=str.encode)
    assert all(content(storage, name) == name.encode() for name in names)


def test_an_empty_document(storage):
    storage.write("pdfs/empty.pdf", [])
    assert storage.stat("pdfs/empty.pdf").size == 0
    assert content(storage, "pdfs/empty.pdf") == b""
    assert keys(storage) == ["pdfs/empty.pdf"]


def test_writing_again_replaces_the_document(storage):
    storage.write("pdfs/a.pdf", [b"old version"])
    storage.write("pdfs/a.pdf", [b"new"])
    assert content(storage, "pdfs/a.pdf") == b"new"


def test_a_large_document_is_streamed_in_parts(storage):
    size = 20 * MiB + 123
    storage.write("pdfs/big.pdf", pattern(size), size=size)

    expected = hashlib.sha256(b"".join(pattern(size))).hexdigest()
    assert storage.stat("pdfs/big.pdf").size == size
    chunks = list(storage.read("pdfs/big.pdf", chunk_size=3 * MiB))
    assert max(len(chunk) for chunk in chunks) <= 3 * MiB
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == expected


@pytest.mark.parametrize("fails_after", [MiB, 12 * MiB], ids=["one-put", "multipart"])
def test_a_write_that_fails_midway_leaves_nothing(storage, fails_after):
    storage.write("pdfs/kept.pdf", [b"old"])

    def broken_source():
        yield from pattern(fails_after)
        raise ValueError("source broke")

    with pytest.raises(ValueError, match="source broke"):
        storage.write("pdfs/new.pdf", broken_source())
    with pytest.raises(ValueError, match="source broke"):
        storage.write("pdfs/kept.pdf", broken_source())

    assert keys(storage) == ["pdfs/kept.pdf"]
    assert content(storage, "pdfs/kept.pdf") == b"old"
    assert leftovers(storage) == []


def test_a_size_that_does_not_match_is_an_error(storage):
    with pytest.raises(StorageError, match="pdfs/a.pdf: expected 4 bytes, got 3"):
        storage.write("pdfs/a.pdf", [b"abc"], size=4)
    assert storage.stat("pdfs/a.pdf") is None


def test_a_missing_document(storage):
    assert storage.stat("users/u1/pdfs/missing.pdf") is None
    with pytest.raises(StorageError) as caught:
        content(storage, "users/u1/pdfs/missing.pdf")
    assert str(caught.value).startswith(f"{storage.url}: users/u1/pdfs/missing.pdf: ")


def test_listing_thousands_of_documents(storage):
    wanted = [f"users/u1/pdfs/{i:05d}.pdf" for i in range(1503)] + ["users/u1/pdfs/sub/z.pdf"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: storage.write(key, [b"x"]), wanted))
    assert keys(storage) == wanted


def leftovers(storage):
    """Temp files or unfinished multipart uploads."""
    if isinstance(storage, FilesystemStorage):
        return [name for _, _, names in os.walk(storage.root) for name in names
                if name.startswith(".aviary-tmp-")]
    return storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])


def test_what_a_backend_declares_it_can_do_it_does(storage):
    body = b"%PDF-1.7 declared"
    storage.write("users/u1/pdfs/a.pdf", [body], len(body))
    can = storage.capabilities
    assert can.connections >= 1 and can.batch_delete >= 1
    assert storage.exists()
    if can.reads_into:
        assert b"".join(bytes(v) for v in storage.read_into("users/u1/pdfs/a.pdf", bytearray(4))) == body
    if can.md5_etags:
        assert storage.stat("users/u1/pdfs/a.pdf").etag == hashlib.md5(body).hexdigest()
    storage.write(".staged/users/u2/pdfs/b.pdf", [body], len(body))
    if can.moves_folders:
        assert storage.promote_folder(".staged/users/u2/", "users/u2/")
    else:
        storage.promote(Staged(".staged/users/u2/pdfs/b.pdf"), "users/u2/pdfs/b.pdf")
    assert keys(storage) == ["users/u1/pdfs/a.pdf", "users/u2/pdfs/b.pdf"]
    assert list(storage.irregular_entries(lambda key: False)) == []


def test_a_staging_prefix_is_swept_whole(storage):
    """A failed restore gives up its staged documents in one sweep; one out of time leaves what
    is left set aside, out of every listing, until sweep_leftovers (the next restore)."""
    assert storage.capabilities.sweeps  # both backends: a folder renamed aside, DeleteObjects by 1,000
    storage.write("users/u1/pdfs/kept.pdf", [b"kept"])

    def stage():
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: storage.write(f".aviary-restore-0a/users/u{n % 3}/pdfs/{n}.pdf", [b"x"]),
                          range(60)))

    stage()
    assert storage.sweep(".aviary-restore-0a/") is None
    assert keys(storage) == ["users/u1/pdfs/kept.pdf"]
    assert storage.sweep_leftovers() == []

    stage()
    aside = storage.sweep(".aviary-restore-0a/", seconds=0)  # out of time at once: all is left
    assert aside is not None
    if isinstance(storage, FilesystemStorage):
        assert keys(storage) == ["users/u1/pdfs/kept.pdf"]  # set aside: no listing shows it
    else:  # the objects stay where they were, an object names their prefix
        assert aside == ".aviary-restore-0a/" and len(keys(storage, aside)) == 60
    assert storage.sweep_leftovers() == [aside]
    assert storage.sweep_leftovers() == []
    assert keys(storage) == ["users/u1/pdfs/kept.pdf"]
    if isinstance(storage, FilesystemStorage):
        assert os.listdir(storage.root) == ["users"]
    else:
        assert storage.client.list_objects_v2(Bucket=storage.bucket).get("KeyCount") == 1  # no folder marker

    storage.write(".aviary-tmp-swept-0b", [b"users/"])  # a marker naming what is not a staging prefix
    assert storage.sweep_leftovers() == [] and keys(storage) == ["users/u1/pdfs/kept.pdf"]


# --- a folder ------------------------------------------------------------------------------


@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_new_files_and_folders_are_made_as_aviary_makes_them(tmp_path, umask, file_mode, folder_mode):
    """A live installation's folder: documents 0644 and folders 0755, less the umask, as Go's
    os.Create and os.MkdirAll make them (a restore is not a private copy)."""
    (tmp_path / "users").mkdir(mode=0o750)
    old_umask = os.umask(umask)
    try:
        FilesystemStorage(tmp_path).write("users/u1/pdfs/a.pdf", [b"x"])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "users/u1/pdfs/a.pdf").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "users/u1/pdfs").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "users/u1").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "users").stat().st_mode) == 0o750  # not ours: untouched


def test_a_document_written_or_moved_over_another_keeps_its_mode(tmp_path):
    storage = FilesystemStorage(tmp_path)
    for key in ("users/u1/pdfs/a.pdf", "users/u1/pdfs/b.pdf"):
        storage.write(key, [b"old"])
        os.chmod(tmp_path / key, 0o640)
    storage.write("users/u1/pdfs/a.pdf", [b"new"])
    storage.write(".staged/b.pdf", [b"new"])
    storage.promote(Staged(".staged/b.pdf"), "users/u1/pdfs/b.pdf")
    for name in ("a.pdf", "b.pdf"):
        path = tmp_path / "users/u1/pdfs" / name
        assert (path.read_bytes(), stat.S_IMODE(path.stat().st_mode)) == (b"new", 0o640)


def test_writes_that_a_sync_follows(storage):
    """A restore writes its documents, then waits once for all of them to be on disk."""
    for n in range(3):
        storage.write(f"users/u1/pdfs/{n}.pdf", [b"%PDF-1.7 ", str(n).encode()], sync_follows=True)
    storage.sync()
    assert [content(storage, f"users/u1/pdfs/{n}.pdf") for n in range(3)] == [b"%PDF-1.7 0", b"%PDF-1.7 1", b"%PDF-1.7 2"]


def test_a_staged_folder_moves_whole_only_where_nothing_is_there_yet(tmp_path):
    store = FilesystemStorage(tmp_path)
    store.write(".stage/users/u1/pdfs/a.pdf", [b"a"])
    store.write(".stage/users/u1/pdfs/sub/b.pdf", [b"b"])
    assert store.promote_folder(".stage/users/u1/pdfs/", "users/u1/pdfs/")
    assert keys(store) == ["users/u1/pdfs/a.pdf", "users/u1/pdfs/sub/b.pdf"]
    assert os.listdir(tmp_path) == ["users"]  # the emptied staging folders are gone

    store.write(".stage/users/u1/pdfs/c.pdf", [b"c"])
    assert not store.promote_folder(".stage/users/u1/pdfs/", "users/u1/pdfs/")  # one by one, then
    assert keys(store, ".stage/") == [".stage/users/u1/pdfs/c.pdf"]


def test_deleting_removes_the_folders_it_empties_but_not_the_root(tmp_path):
    store = FilesystemStorage(tmp_path)
    store.write("users/u1/pdfs/sub/a.pdf", [b"x"])
    store.write("users/u1/pdfs/b.pdf", [b"x"])
    store.delete("users/u1/pdfs/sub/a.pdf")
    assert sorted(os.listdir(tmp_path / "users/u1/pdfs")) == ["b.pdf"]
    store.delete("users/u1/pdfs/b.pdf")
    assert os.listdir(tmp_path) == []


def test_only_regular_files_are_listed(tmp_path):
    store = FilesystemStorage(tmp_path)
    store.write("pdfs/a.pdf", [b"x"])
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret.pdf").write_bytes(b"x")
    os.symlink(tmp_path / "outside", tmp_path / "pdfs/linked-folder")
    os.symlink(tmp_path / "pdfs/a.pdf", tmp_path / "pdfs/linked.pdf")
    os.mkfifo(tmp_path / "pdfs/fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "pdfs/sock"))
        (tmp_path / "pdfs/.aviary-tmp-0123").write_bytes(b"half written")
        assert keys(store, "pdfs/") == ["pdfs/a.pdf"]
        assert store.stat("pdfs/linked.pdf") is None


@pytest.mark.parametrize("key", ["../escape.pdf", "/etc/passwd", "a//b.pdf", "a/./b.pdf", "", "a/"])
def test_keys_cannot_leave_the_root(tmp_path, key):
    store = FilesystemStorage(tmp_path / "root")
    with pytest.raises(StorageError, match="invalid key"):
        store.write(key, [b"x"])
    assert not (tmp_path / "escape.pdf").exists()


def test_a_missing_root_is_an_error_when_listing(tmp_path):
    with pytest.raises(StorageError, match="no such directory"):
        list(FilesystemStorage(tmp_path / "nope").list())


# --- a bucket ------------------------------------------------------------------------------


def test_etags_are_md5_for_one_put_and_counted_parts_for_multipart(s3_server, s3_bucket):
    store = open_storage(f"s3://{s3_bucket}", **s3_options(s3_server))
    store.write("small.pdf", [b"abc"])
    store.write("big.pdf", pattern(17 * MiB))
    assert store.stat("small.pdf").etag == hashlib.md5(b"abc").hexdigest()
    assert store.stat("big.pdf").etag.endswith("-3")
    assert [info.etag for info in store.list()] == [store.stat("big.pdf").etag, store.stat("small.pdf").etag]


def test_a_prefix_in_the_url_roots_the_keys(s3_server, s3_bucket):
    nested = open_storage(f"s3://{s3_bucket}/aviary/prod/", **s3_options(s3_server))
    whole = open_storage(f"s3://{s3_bucket}", **s3_options(s3_server))
    nested.write("users/u1/pdfs/a.pdf", [b"x"])
    whole.write("elsewhere.pdf", [b"y"])
    assert nested.url == f"s3://{s3_bucket}/aviary/prod"
    assert keys(nested) == ["users/u1/pdfs/a.pdf"]
    assert keys(whole) == ["aviary/prod/users/u1/pdfs/a.pdf", "elsewhere.pdf"]


def test_errors_name_the_bucket_and_key_but_never_the_secret(s3_server, s3_bucket):
    secret = s3_server.secret_key
    wrong = dict(s3_options(s3_server), s3_secret_key="wrong-" + secret)
    cases = [
        (open_storage(f"s3://{s3_bucket}", **s3_options(s3_server)), "users/x/pdfs/a.pdf", "NoSuchKey"),
        (open_storage("s3://no-such-bucket", **s3_options(s3_server)), "a.pdf", "NoSuchBucket"),
        (open_storage(f"s3://{s3_bucket}", **wrong), "a.pdf", "SignatureDoesNotMatch"),
        (open_storage(f"s3://{s3_bucket}", **dict(s3_options(s3_server), s3_endpoint=closed_port_url())),
         "a.pdf", "Could not connect"),
    ]
    for store, key, problem in cases:
        with pytest.raises(StorageError) as caught:
            content(store, key)
        message = str(caught.value)
        assert message.startswith(f"{store.url}: {key}: ") and problem in message
        for text in (message, str(caught.value.__cause__)):
            assert secret not in text and "wrong-" not in text


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- choosing the storage ------------------------------------------------------------------


def test_urls_name_a_folder_or_a_bucket(tmp_path):
    assert open_storage(str(tmp_path)).root == tmp_path
    assert open_storage(f"file://{tmp_path}/my%20data").root == tmp_path / "my data"
    bucket = open_storage("s3://bucket/some/prefix", s3_endpoint="http://127.0.0.1:9")
    assert (bucket.bucket, bucket.prefix, bucket.url) == ("bucket", "some/prefix/", "s3://bucket/some/prefix")
    for bad in ["http://example.com/x", "s3://", "s3://key:secret@bucket", "file://host/path"]:
        with pytest.raises(ConfigError):
            open_storage(bad)


def test_aviary_settings_choose_the_storage(tmp_path, s3_server, s3_bucket):
    assert storage_from_env({}).root.as_posix() == "/data"
    assert storage_from_env({"DATA_DIR": str(tmp_path)}).root == tmp_path

    aviary_env = {
        "STORAGE_BACKEND": "s3", "S3_BUCKET": s3_bucket, "S3_ENDPOINT": s3_server.endpoint,
        "S3_FORCE_PATH_STYLE": "true", "S3_ACCESS_KEY_ID": s3_server.access_key,
        "S3_SECRET_ACCESS_KEY": s3_server.secret_key, "DATA_DIR": str(tmp_path),
    }
    store = storage_from_env(aviary_env)
    store.write("users/u1/pdfs/a.pdf", [b"x"])
    assert isinstance(store, S3Storage) and keys(store) == ["users/u1/pdfs/a.pdf"]

    with_override = dict(aviary_env, AVIARY_STORAGE=str(tmp_path / "copy"))
    assert resolve_storage(None, with_override).root == tmp_path / "copy"
    assert resolve_storage(str(tmp_path / "option"), with_override).root == tmp_path / "option"
    # S3 settings for an s3:// URL still come from Aviary's variables.
    assert keys(resolve_storage(f"s3://{s3_bucket}/users", aviary_env)) == ["u1/pdfs/a.pdf"]


@pytest.mark.parametrize("env, problem", [
    ({"STORAGE_BACKEND": "s3"}, "S3_BUCKET"),
    ({"STORAGE_BACKEND": "gcs"}, "expected filesystem or s3"),
    ({"STORAGE_BACKEND": "s3", "S3_BUCKET": "b", "S3_ENDPOINT": "minio:9000"}, "http://"),
    ({"STORAGE_BACKEND": "s3", "S3_BUCKET": "b", "S3_ACCESS_KEY_ID": "AKIA"}, "both"),
])
def test_incomplete_settings_are_config_errors(env, problem):
    with pytest.raises(ConfigError, match=problem):
        storage_from_env(env)
