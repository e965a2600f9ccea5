"""aviarytools reads installations as Aviary v1.9.0 lays them out (../shared/aviary-format.md):
single-user download copies, the pairing in $HOME, `<NAME>_FILE` variables, and the other
facts the notes changed (the migrations table, uuid folder names, `._*` members, the legacy
users.o_id_c_subject, SQLite's time formats)."""

import io
import tarfile

import pytest

from archive_helpers import bucket_storage, installation, objects
from helpers import aviary

TOKEN = "0123456789abcdef" * 4  # a download link's token: 64 hex digits
PAIRING = b"[auth]\ndevicetoken=in-home\n"


def members(archive: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar}


def stderr_lines(result) -> list[str]:
    return result.stderr.decode().splitlines()


# --- single-user -------------------------------------------------------------------------------


@pytest.fixture
def single(tmp_path):
    """A single-user Aviary with download links on: copies under pdfs/downloads/<token>/."""
    data = tmp_path / "data"
    files = {"a.pdf": b"%PDF a", f"downloads/{TOKEN}/a.pdf": b"%PDF a", f"downloads/{TOKEN}/b.epub": b"PK",
             "downloads/my own folder/c.pdf": b"%PDF c"}
    for path, body in files.items():
        (data / "pdfs" / path).parent.mkdir(parents=True, exist_ok=True)
        (data / "pdfs" / path).write_bytes(body)
    home = tmp_path / "home"
    (home / ".config" / "rmapi").mkdir(parents=True)
    (home / ".config" / "rmapi" / "rmapi.conf").write_bytes(PAIRING)
    return data, home


def test_download_copies_are_left_out_with_one_counted_warning(single):
    data, home = single
    result = aviary("pack", "--single-user", "--storage", data, env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"aviary pack: warning: {data}/pdfs/downloads/: 2 file(s) of Aviary's download links"
        " (downloads/<token>/, transient copies, not documents): left out"]
    documents = sorted(name for name, body in members(result.stdout).items()
                       if name.startswith("single-user/pdfs/") and body is not None)
    assert documents == ["single-user/pdfs/a.pdf", "single-user/pdfs/downloads/my own folder/c.pdf"]
    assert aviary("verify", "-", input=result.stdout).returncode == 0


def test_download_copies_in_pdf_dir_are_left_out_too(single):
    data, home = single
    result = aviary("pack", "--single-user", env={"HOME": str(home), "PDF_DIR": str(data / "pdfs")})
    assert result.returncode == 0, result.stderr
    assert "2 file(s) of Aviary's download links" in result.stderr.decode()
    assert not any("downloads/" + TOKEN in name for name in members(result.stdout))


def test_the_pairing_is_read_from_the_home_of_the_user_running_pack(single):
    data, home = single
    archive = aviary("pack", "--single-user", "--storage", data, env={"HOME": str(home)})
    assert archive.returncode == 0, archive.stderr
    assert members(archive.stdout)["single-user/rmapi.conf"] == PAIRING
    help_text = aviary("pack", "--help").stdout.decode()
    assert "$HOME/.config/rmapi/rmapi.conf" in help_text and "/root/" not in help_text


def test_adopt_leaves_out_download_copies_an_older_pack_took(single, tmp_path):
    data, home = single
    (data / "pdfs" / "downloads").rename(data / "pdfs" / "kept")  # packed as documents, then renamed back
    archive = aviary("pack", "--single-user", "--storage", data, env={"HOME": str(home)})
    assert archive.returncode == 0, archive.stderr
    older = io.BytesIO()  # as aviarytools before v1.9.0's layout wrote it (no checksums list then to match)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar, tarfile.open(fileobj=older, mode="w") as out:
        for member in tar:
            if member.name != "checksums.xxh128":
                body = tar.extractfile(member) if member.isfile() else None
                member.name = member.name.replace("single-user/pdfs/kept", "single-user/pdfs/downloads")
                out.addfile(member, body)
    url, files = tmp_path / "multi" / "aviary.db", tmp_path / "multi"
    installation(str(url), files, users=1)
    result = aviary("unpack", "--adopt", "admin", "--db", url, "--storage", files, input=older.getvalue())
    assert result.returncode == 0, result.stderr
    assert "single-user/pdfs/downloads/: 2 file(s) of Aviary's download links (downloads/<token>/, transient" \
           " copies, not documents): not adopted" in result.stderr.decode()
    adopted = {key.split("/pdfs/", 1)[1] for key in objects(files) if "/pdfs/" in key}
    assert "a.pdf" in adopted and "downloads/my own folder/c.pdf" in adopted
    assert not any(path.startswith(f"downloads/{TOKEN}/") for path in adopted)


# --- <NAME>_FILE -------------------------------------------------------------------------------


def test_every_aviary_variable_also_works_as_name_file(tmp_path, pg_server, pg_url, s3_server, s3_bucket):
    """A Docker-secrets deployment: the password, the S3 keys and the settings in files."""
    storage = bucket_storage(s3_server, s3_bucket)
    installation(pg_url, storage, users=1)
    values = {"DB_TYPE": "postgres", "DB_HOST": "127.0.0.1", "DB_PORT": str(pg_server.port),
              "DB_USER": pg_server.user, "DB_PASSWORD": pg_server.password, "DB_NAME": pg_url.rsplit("/", 1)[1],
              "STORAGE_BACKEND": "s3", "S3_BUCKET": s3_bucket, "S3_ENDPOINT": s3_server.endpoint,
              "S3_FORCE_PATH_STYLE": "true", "S3_ACCESS_KEY_ID": s3_server.access_key,
              "S3_SECRET_ACCESS_KEY": s3_server.secret_key}
    env = {}
    for name, value in values.items():
        (tmp_path / name).write_text(f"{value}\n")  # as `echo value > secret` writes it: trimmed
        env[f"{name}_FILE"] = str(tmp_path / name)
    result = aviary("pack", env=env)
    assert result.returncode == 0, result.stderr
    assert aviary("verify", "-", input=result.stdout).returncode == 0
    assert sum(1 for name, body in members(result.stdout).items()
               if name.startswith("filesystem/documents/") and body is not None) == 3
    # The variable itself, when set and not empty, wins over its file (as in Aviary).
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    assert aviary("pack", "-o", tmp_path / "b.tar", env={**env, "DB_PASSWORD": pg_server.password,
                                                         "DB_PASSWORD_FILE": str(wrong)}).returncode == 0
    # A file that cannot be read is said, naming the variable; the secret never shows.
    failed = aviary("pack", "-o", tmp_path / "c.tar", env={**env, "S3_SECRET_ACCESS_KEY_FILE": str(tmp_path / "nope")})
    assert failed.returncode == 1
    assert stderr_lines(failed) == [
        f"aviary pack: S3_SECRET_ACCESS_KEY_FILE={tmp_path / 'nope'}: No such file or directory:"
        " give a readable file holding the value"]


def test_pdf_dir_and_data_dir_as_files(tmp_path):
    data = tmp_path / "data"
    installation(str(data / "aviary.db"), data, users=1)
    (tmp_path / "data_dir").write_text(f"  {data}\n")
    assert aviary("tables", env={"DATA_DIR_FILE": str(tmp_path / "data_dir")}).returncode == 0
    (data / "single" / "a.pdf").parent.mkdir()
    (data / "single" / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "pdf_dir").write_text(f"{data / 'single'}\n")
    packed = aviary("pack", "--single-user", "--rmapi-conf", tmp_path / "none",
                    env={"PDF_DIR_FILE": str(tmp_path / "pdf_dir")})
    assert packed.returncode == 0, packed.stderr
    assert members(packed.stdout)["single-user/pdfs/a.pdf"] == b"%PDF"
