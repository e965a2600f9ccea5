"""The README's "Encrypted backups" recipes, run with the real age and gpg and keys made here:
pack --zstd | age -r RECIPIENT, and back through age -d -i KEY | aviary unpack; verify of an
encrypted archive without a decrypted file on disk; the same with gpg; --redact beside it.
A local file stands in for `aws s3 cp - s3://...`: aviary sees the same pipe."""

import subprocess

import pytest

from archive_helpers import dump_tables, installation, objects
from helpers import AVIARY, aviary, ok


@pytest.fixture
def site(tmp_path):
    url, data = str(tmp_path / "live" / "aviary.db"), tmp_path / "live"
    installation(url, data, users=2, docs_per_user=2)
    return {"url": url, "data": data, "root": tmp_path, "args": f"--db '{url}' --storage '{data}'"}


def sh(script: str, cwd, env=None) -> subprocess.CompletedProcess:
    """`script` run as the README runs it: bash with pipefail, `aviary` this aviarytools."""
    aviary_fn = f"aviary() {{ {' '.join(AVIARY)} \"$@\"; }}\n"
    return subprocess.run(["bash", "-o", "pipefail", "-c", aviary_fn + script], cwd=cwd, capture_output=True,
                          env=env)


def must(result: subprocess.CompletedProcess) -> bytes:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def age_key(folder) -> str:
    """A new age identity in folder/key.txt; its recipient (the public half)."""
    must(sh("age-keygen -o key.txt 2>/dev/null", folder))
    return must(sh("age-keygen -y key.txt", folder)).decode().strip()


def restored_equals_live(site, db, files):
    assert dump_tables(str(db)) == dump_tables(site["url"])
    assert {k: v for k, v in objects(files).items() if k.startswith("users/")} == \
        {k: v for k, v in objects(site["data"]).items() if k.startswith("users/")}


def test_age_there_and_back(site, tmp_path):
    keys = tmp_path / "keys"  # where the key lives: not on the server, not beside the backup
    keys.mkdir()
    recipient = age_key(keys)
    backups = tmp_path / "backups"
    backups.mkdir()
    # On the server: only the recipient, which cannot decrypt.
    must(sh(f"aviary pack --zstd {site['args']} | age -r {recipient} > backups/aviary.tar.zst.age", tmp_path))
    encrypted = (backups / "aviary.tar.zst.age").read_bytes()
    assert encrypted.startswith(b"age-encryption.org/v1\n")
    assert b"database/users.json" not in encrypted
    # Where the key is.
    must(sh("age -d -i keys/key.txt backups/aviary.tar.zst.age | aviary unpack --db t.db --storage t"
            " --create-schema", tmp_path))
    restored_equals_live(site, tmp_path / "t.db", tmp_path / "t")
    # Without the key: a reader names the command, and nothing is restored.
    refused = aviary("unpack", "--db", tmp_path / "u.db", "--storage", tmp_path / "u", "--create-schema",
                     backups / "aviary.tar.zst.age")
    assert refused.returncode == 1
    assert refused.stderr.decode() == ("aviary unpack: input is age-encrypted: pipe it through"
                                       " 'age -d -i KEYFILE' first\n")
    assert not (tmp_path / "u.db").exists()


def test_verify_an_age_archive_without_a_decrypted_file(site, tmp_path):
    recipient = age_key(tmp_path)
    must(sh(f"aviary pack --zstd {site['args']} | age -r {recipient} > a.tar.zst.age", tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    checked = sh("age -d -i key.txt a.tar.zst.age | aviary verify", tmp_path)
    assert checked.returncode == 0, checked.stderr.decode()
    assert checked.stderr.decode().splitlines()[-1].startswith("aviary verify: ok (")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing decrypted was written
    # A cut copy: age says so and so does verify; the pipe fails.
    data = (tmp_path / "a.tar.zst.age").read_bytes()
    (tmp_path / "cut.age").write_bytes(data[: len(data) * 2 // 3])
    cut = sh("age -d -i key.txt cut.age | aviary verify", tmp_path)
    assert cut.returncode != 0
    assert "aviary verify: problem: structure:" in cut.stderr.decode()


def test_gpg_there_and_back(site, tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = f"gpg --homedir '{home}' --batch --quiet --trust-model always"
    must(sh(f"{gpg} --pinentry-mode loopback --passphrase '' --quick-gen-key backup@example.org default default"
            " never", tmp_path))
    must(sh(f"aviary pack --zstd {site['args']} | {gpg} --encrypt -r backup@example.org > a.tar.zst.gpg",
            tmp_path))
    refused = aviary("verify", tmp_path / "a.tar.zst.gpg")
    assert "input is OpenPGP-encrypted: pipe it through 'gpg -d' first" in refused.stderr.decode()
    must(sh(f"{gpg} -d a.tar.zst.gpg | aviary verify", tmp_path))
    must(sh(f"{gpg} -d a.tar.zst.gpg | aviary unpack --db t.db --storage t --create-schema", tmp_path))
    restored_equals_live(site, tmp_path / "t.db", tmp_path / "t")


def test_redact_and_encryption_side_by_side(site, tmp_path):
    recipient = age_key(tmp_path)
    hashes = [row for row in dump_tables(site["url"])["users"].splitlines()]
    assert all(b'"password":"$2' in row for row in hashes)
    # --redact: no secret in the archive at all, encrypted or not.
    must(sh(f"aviary pack --redact {site['args']} -o redacted.tar", tmp_path))
    redacted = ok("cat", "--ndjson", "database/users.json", tmp_path / "redacted.tar")
    assert b'"password":"$2' not in redacted
    # Encryption: every secret kept, readable only with the key.
    must(sh(f"aviary pack --zstd {site['args']} | age -r {recipient} > full.age", tmp_path))
    full = must(sh("age -d -i key.txt full.age | aviary cat --ndjson database/users.json > users.ndjson;"
                   " cat users.ndjson", tmp_path))
    assert full.splitlines() == ok("dump-table", "users", "--db", site["url"]).splitlines()
