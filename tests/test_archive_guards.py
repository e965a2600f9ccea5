"""What an archive says it holds bounds what a restore may remove."""

import io
import os
import subprocess
import tarfile

from archive_helpers import installation, objects, pack_here, state
from helpers import AVIARY, aviary, one_line_error, ok


def _live(tmp_path):
    folder = tmp_path / "live"
    url = str(folder / "aviary.db")
    installation(url, folder, users=3)
    return url, folder


def test_a_per_user_archive_restores_only_its_users_even_without_user(tmp_path):
    url, folder = _live(tmp_path)
    archive = ok("pack", "--db", url, "--storage", folder, "--user", "admin")
    before_docs = ok("dump-table", "documents", "--db", url)
    result = aviary("unpack", "--db", url, "--storage", folder, input=archive)
    assert result.returncode == 0, result.stderr
    assert b"a per-user archive: only its 1 user(s) are restored" in result.stderr
    assert ok("dump-table", "documents", "--db", url) == before_docs
    assert len(ok("dump-table", "users", "--db", url).splitlines()) == 3


def test_an_archive_without_documents_removes_no_document(tmp_path):
    url, folder = _live(tmp_path)
    def documents():
        return {k: v for k, v in objects(folder).items() if k.startswith("users/")}

    before = documents()
    archive = ok("pack", "--db", url, "--storage", folder, "--no-files")
    result = aviary("unpack", "--db", url, "--storage", folder, input=archive)
    assert result.returncode == 0, result.stderr
    assert b"packed without documents" in result.stderr
    assert documents() == before


def test_a_target_without_aviarys_tables_is_refused_not_skipped(tmp_path):
    url, folder = _live(tmp_path)
    archive = ok("pack", "--db", url, "--storage", folder)
    empty = tmp_path / "empty.db"
    ok("init-schema", "--db", empty)
    import sqlite3
    with sqlite3.connect(empty) as conn:
        conn.execute("DROP TABLE login_attempts")
    target = tmp_path / "target"
    line = one_line_error(aviary("unpack", "--db", empty, "--storage", target, input=archive))
    assert "database/login_attempts.json: the target database has no table login_attempts" in line
    assert not any(p.is_file() for p in target.rglob("*")) if target.exists() else True


def test_extract_refuses_restore_options_and_unknown_tables(tmp_path):
    url, folder = _live(tmp_path)
    archive = ok("pack", "--db", url, "--storage", folder)
    assert aviary("unpack", "-C", tmp_path / "x", "--db", url, input=archive).returncode == 2
    assert aviary("unpack", "-C", tmp_path / "x", "--no-sync", input=archive).returncode == 2
    assert aviary("unpack", "--db", url, "--tables", "nope", input=archive).returncode == 2


def test_a_pack_cut_short_by_its_reader_fails(tmp_path):
    url, folder = _live(tmp_path)
    # More than the pipe holds (pack widens it to 1 MiB), so the cut is certain to be seen.
    user = next((folder / "users").iterdir())
    (user / "pdfs" / "large.pdf").write_bytes(os.urandom(4 << 20))
    cmd = [*AVIARY, "pack", "--db", url, "--storage", str(folder)]
    run = subprocess.run(f"set -o pipefail; {' '.join(map(repr, cmd))} | head -c 1000 > /dev/null",
                         shell=True, executable="/bin/bash", capture_output=True)
    assert run.returncode == 1
    assert b"the reader closed the output before the archive was complete" in run.stderr


def test_a_document_deleted_while_packing_is_left_out_and_recorded(tmp_path):
    """A user deleting a document during the nightly backup does not fail it:
    the document is left out, named on stderr and in vanished.ndjson, and verify
    reconciles metadata's totals (taken from the listing) with it."""
    import io
    import tarfile

    from aviarytools.storage import FilesystemStorage

    url, folder = _live(tmp_path)

    class DeletedAfterListing(FilesystemStorage):
        """The real folder; the first document disappears once listed, as a concurrent delete does."""

        def list(self, prefix=""):
            listed = list(super().list(prefix))
            self.gone = next(o for o in listed if o.key.endswith(".pdf"))
            self.delete(self.gone.key)
            return iter(listed)

    storage = DeletedAfterListing(folder)
    summary, archive = pack_here(url, storage)
    assert len(summary.vanished) == 1 and summary.vanished[0][1] == storage.gone.size
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert names[-2:] == ["vanished.ndjson", "checksums.xxh128"]
    user_id, path = storage.gone.key.split("/", 3)[1::2]
    assert f"filesystem/documents/{user_id}/{path}" not in names
    verified = aviary("verify", input=archive)
    assert verified.returncode == 0, verified.stderr
    assert b"1 document(s) were deleted while pack ran" in verified.stderr
    assert aviary("unpack", "--db", url, "--storage", folder, input=archive).returncode == 0


def test_pack_into_a_fifo_or_device_writes_into_it_and_never_replaces_it(tmp_path):
    import os
    import stat
    import threading

    url, folder = _live(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert aviary("pack", "--db", url, "--storage", folder, "-o", fifo).returncode == 0
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert ok("verify", input=received[0]) == b""
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    assert aviary("pack", "--db", url, "--storage", folder, "-o", "/dev/null").returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_pack_gives_the_pipe_it_writes_into_a_1_MiB_buffer(tmp_path):
    """Linux pipes hold 64 KiB: a reader such as gzip or ssh would be woken 16
    times per MiB of archive.  Pack widens the pipe; a file is left as it is."""
    import fcntl

    url, folder = _live(tmp_path)
    pack = subprocess.Popen([*AVIARY, "pack", "--db", url, "--storage", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    archive = pack.stdout.read()
    assert fcntl.fcntl(pack.stdout, fcntl.F_GETPIPE_SZ) == 1 << 20
    pack.stdout.close()
    assert pack.wait() == 0
    assert ok("verify", input=archive) == b""


def test_bookkeeping_spilled_to_disk_gives_the_same_answers(tmp_path):
    """Past 20,000 members, pack's listing, and the digests and pending renames a
    reader keeps until the end, move to a temporary file, so memory stays flat
    however many documents there are.  AVIARY_SPILL_AFTER=1 forces that path here."""
    spilled = {"AVIARY_SPILL_AFTER": "1"}
    url, folder = _live(tmp_path)
    archive = ok("pack", "--db", url, "--storage", folder, env=spilled)
    assert members_of(archive) == members_of(ok("pack", "--db", url, "--storage", folder))
    assert ok("verify", input=archive, env=spilled) == b""
    ok("unpack", "-C", tmp_path / "spilled", input=archive, env=spilled)
    ok("unpack", "-C", tmp_path / "kept", input=archive)
    assert objects(tmp_path / "spilled") == objects(tmp_path / "kept")
    restored = tmp_path / "restored"
    ok("unpack", "--db", tmp_path / "restored.db", "--storage", restored, "--create-schema",
       input=archive, env=spilled)
    tables, documents = state(url, folder)
    del documents["aviary.db"]  # the live database sits in its storage folder
    assert state(str(tmp_path / "restored.db"), restored) == (tables, documents)

    document = next(m for m in tarfile.open(fileobj=io.BytesIO(archive)) if m.name.endswith(".pdf"))
    damaged = bytearray(archive)
    damaged[document.offset_data] ^= 1
    for command in (["verify"], ["unpack", "-C", tmp_path / "damaged"]):
        result = aviary(*command, input=bytes(damaged), env=spilled)
        assert result.returncode == 1 and document.name in result.stderr.decode()


def members_of(archive: bytes) -> list[tuple[str, int]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.name, m.size) for m in tar if m.name != "metadata.json"]
