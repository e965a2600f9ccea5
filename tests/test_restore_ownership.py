"""A restore run as root into the data folder of an Aviary that runs as another user
(compose `user: 1000:1000`): everything it creates must be that user's, with Aviary's modes,
and that user must be able to read every document and write the database afterwards."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from archive_helpers import all_ok, installation, objects, pipeline
from helpers import AVIARY

AVIARY_UID = AVIARY_GID = 1000
OTHER_UID = 1001

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")


def as_aviary(*command: str) -> subprocess.CompletedProcess:
    """`command` run as the user Aviary runs as, with no group of root's."""
    return subprocess.run(["setpriv", f"--reuid={AVIARY_UID}", f"--regid={AVIARY_GID}", "--clear-groups",
                           *command], capture_output=True)


@pytest.fixture
def tmp_path():
    """A folder another user can reach (pytest's own is private to root)."""
    folder = tempfile.mkdtemp(prefix="aviary-owners-")
    os.chmod(folder, 0o755)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_restore_as_root_belongs_to_the_user_who_owns_the_data_folder(tmp_path, umask_022):
    source = tmp_path / "source"
    tables = installation(str(source / "aviary.db"), source)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chown(data, AVIARY_UID, AVIARY_GID)
    # A document already there, of another owner and mode: replaced, it keeps both.
    user = tables["users"][0]["id"]
    kept = next(r["local_path"] for r in tables["documents"] if r["user_id"] == user)
    (data / kept).parent.mkdir(parents=True)
    for folder in (data / kept).relative_to(data).parents:
        os.chown(data / folder, AVIARY_UID, AVIARY_GID)  # as Aviary made them
    (data / kept).write_bytes(b"an older copy")
    os.chown(data / kept, OTHER_UID, OTHER_UID)
    os.chmod(data / kept, 0o640)

    all_ok(pipeline(["aviary", "pack", "--db", source / "aviary.db", "--storage", source],
                    ["aviary", "unpack", "--db", data / "aviary.db", "--storage", data, "--create-schema"]))

    seen = []
    for folder, folders, files in os.walk(data):
        for name in folders + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            relative = os.path.relpath(path, data)
            seen.append(relative)
            if relative == kept:
                expected = (OTHER_UID, OTHER_UID, stat.S_IFREG | 0o640)
            elif relative == "aviary.db":
                expected = (AVIARY_UID, AVIARY_GID, stat.S_IFREG | 0o600)  # it holds password hashes
            elif name in files:
                expected = (AVIARY_UID, AVIARY_GID, stat.S_IFREG | 0o644)
            else:
                expected = (AVIARY_UID, AVIARY_GID, stat.S_IFDIR | 0o755)
            assert (st.st_uid, st.st_gid, st.st_mode) == expected, relative
    assert sorted(k for k in seen if k.endswith(".pdf")) == sorted(r["local_path"] for r in tables["documents"])
    assert {k: v for k, v in objects(data).items() if k.endswith(".pdf")} == \
        {k: v for k, v in objects(source).items() if k.endswith(".pdf")}

    # What Aviary does with them, as its own user: read every document, write the database.
    for row in tables["documents"]:
        if row["local_path"] != kept:
            assert as_aviary("cat", str(data / row["local_path"])).returncode == 0, row["local_path"]
    touched = as_aviary(shutil.which("sqlite3"), str(data / "aviary.db"),
                        "UPDATE users SET updated_at = updated_at; SELECT count(*) FROM users;")
    assert touched.returncode == 0, touched.stderr
    assert touched.stdout.strip() == str(len(tables["users"])).encode()


def test_a_new_sqlite_database_and_its_folder_take_the_owner_of_the_folder_above(tmp_path, umask_022):
    above = tmp_path / "srv"
    above.mkdir()
    os.chown(above, AVIARY_UID, AVIARY_GID)
    database = above / "aviary" / "aviary.db"
    done = subprocess.run([*AVIARY, "init-schema", "--db", str(database)], capture_output=True)
    assert done.returncode == 0, done.stderr
    for path, mode in ((database.parent, stat.S_IFDIR | 0o755), (database, stat.S_IFREG | 0o600)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode) == (AVIARY_UID, AVIARY_GID, mode)
    assert as_aviary(shutil.which("sqlite3"), str(database), "INSERT INTO system_settings (key) VALUES ('x');"
                     ).returncode == 0


def test_extraction_and_pack_output_stay_private(tmp_path, umask_022):
    source = tmp_path / "source"
    installation(str(source / "aviary.db"), source)
    archive = tmp_path / "backup.tar"
    done = subprocess.run([*AVIARY, "pack", "--db", str(source / "aviary.db"), "--storage", str(source),
                           "-o", str(archive)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    out = tmp_path / "look"
    with open(archive, "rb") as stream:
        assert subprocess.run([*AVIARY, "unpack", "-C", str(out)], stdin=stream).returncode == 0
    modes = {stat.S_IMODE(os.lstat(os.path.join(folder, name)).st_mode)
             for folder, folders, files in os.walk(out) for name in folders + files}
    assert modes == {0o600, 0o700}
