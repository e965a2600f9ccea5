"""Compressed and encrypted archives: zstd written and read as gzip is, through every reader,
from a file and from a pipe; the formats we do not read named at their first bytes, with the
command to pipe them through.  The oracles are the real tools: zstd, GNU tar, xz, bzip2,
lz4, gzip, age and gpg (scripts/install-system-packages installs them: nothing is skipped)."""

import io
import json
import os
import subprocess
import tarfile

import pytest

from archive_helpers import all_ok, dump_tables, installation, objects, pipeline
from aviarytools.errors import ArchiveError
from aviarytools.tar.compression import FORMATS, open_input, recognise
from helpers import aviary, ok, one_line_error


@pytest.fixture
def site(tmp_path):
    url, data = str(tmp_path / "live" / "aviary.db"), tmp_path / "live"
    installation(url, data, users=2, docs_per_user=3)
    return {"url": url, "data": data, "root": tmp_path, "args": ["--db", url, "--storage", data]}


def run(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, **kwargs)


def plain_archive(site) -> bytes:
    return ok("pack", *site["args"])


def reader_output(*args, source, archive) -> subprocess.CompletedProcess:
    """A reader given `archive` as a file argument or on stdin."""
    if source == "file":
        return aviary(*args, archive)
    return aviary(*args, input=archive.read_bytes())


# --- zstd, written -----------------------------------------------------------------------------


def test_pack_zstd_is_a_zstd_stream_that_zstd_and_gnu_tar_read(site):
    archive = site["root"] / "aviary.tar.zst"
    ok("pack", "--zstd", *site["args"], "-o", archive)
    assert run(["zstd", "-t", str(archive)]).returncode == 0
    listed = run(["tar", "--zstd", "-tf", str(archive)])
    assert listed.returncode == 0, listed.stderr
    plain = plain_archive(site)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert listed.stdout.decode().splitlines() == tar.getnames()
    unzstd = run(["zstd", "-dc", str(archive)]).stdout
    assert tarfile.open(fileobj=io.BytesIO(unzstd)).getnames() == tarfile.open(fileobj=io.BytesIO(plain)).getnames()


def test_the_file_name_chooses_the_compression_as_gnu_tar_a_does(site):
    root = site["root"]
    ok("pack", *site["args"], "-o", root / "a.tar.gz")
    ok("pack", *site["args"], "-o", root / "a.tgz")
    ok("pack", *site["args"], "-o", root / "a.tar.zst")
    ok("pack", *site["args"], "-o", root / "a.tar")
    assert (root / "a.tar.gz").read_bytes()[:2] == (root / "a.tgz").read_bytes()[:2] == b"\x1f\x8b"
    assert (root / "a.tar.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert (root / "a.tar").read_bytes()[:13] == b"metadata.json"
    assert run(["tar", "-xzf", str(root / "a.tar.gz"), "-C", str(root), "metadata.json"]).returncode == 0


@pytest.mark.parametrize("args, says", [
    (["--zstd", "-o", "x.tar.gz"], "x.tar.gz: the name says gzip, not zstd: rename it or drop --zstd"),
    (["-z", "-o", "x.tar.zst"], "x.tar.zst: the name says zstd, not gzip: rename it or drop -z"),
    (["-o", "x.tar.xz"], "x.tar.xz: pack writes plain, gzip (-z) or zstd (--zstd): for xz, write to stdout"
                         " and pipe it through 'xz'"),
    (["-o", "x.tar.age"], "for age, write to stdout and pipe it through 'age -r RECIPIENT'"),
    (["-z", "--zstd"], "-z and --zstd: choose one"),
    (["--compression-level", "3"], "--compression-level applies with -z or --zstd"),
    (["-z", "--compression-level", "10"], "--compression-level 10: gzip levels are 1 to 9"),
    (["--zstd", "--compression-level", "0"], "--compression-level 0: zstd levels are 1 to 19"),
])
def test_a_compression_the_command_line_contradicts_is_a_usage_error(site, args, says):
    result = aviary("pack", *site["args"], *args, cwd=site["root"])
    assert result.returncode == 2
    assert says in result.stderr.decode()
    assert not list(site["root"].glob("x.tar*"))


def test_the_compression_level_is_the_one_asked_for(site):
    for how, tool, low, high in (("--zstd", "zstd", "1", "19"), ("-z", "gzip", "1", "9")):
        fast, best = (ok("pack", how, "--compression-level", level, *site["args"]) for level in (low, high))
        assert len(best) < len(fast)
        assert [run([tool, "-t"], input=data).returncode for data in (fast, best)] == [0, 0]


# --- zstd, read by every reader ----------------------------------------------------------------


@pytest.fixture
def zstd_archive(site):
    archive = site["root"] / "aviary.tar.zst"
    ok("pack", "--zstd", *site["args"], "-o", archive)
    plain = site["root"] / "aviary.tar"  # the same archive, decompressed by zstd itself
    plain.write_bytes(run(["zstd", "-dc", str(archive)], check=True).stdout)
    return archive, plain


@pytest.mark.parametrize("source", ["file", "pipe"])
@pytest.mark.parametrize("args", [["verify"], ["ls"], ["cat", "database/users.json"],
                                  ["cat", "--ndjson", "database/documents.json"], ["info"]])
def test_every_reader_reads_zstd_as_it_reads_a_plain_tar(zstd_archive, source, args):
    archive, plain = zstd_archive
    got = reader_output(*args, source=source, archive=archive)
    want = aviary(*args, plain)
    assert got.returncode == 0, got.stderr.decode()
    out_of = (lambda r: r.stdout) if args[0] != "info" else (lambda r: json.loads(r.stdout))
    assert out_of(got) == out_of(want)


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_info_says_aviarys_admin_page_refuses_zstd(zstd_archive, source):
    archive, plain = zstd_archive
    said = reader_output("info", source=source, archive=archive).stderr.decode()
    assert said == ("aviary info: full; Aviary's admin page refuses it: zstd-compressed: it reads only gzip"
                    " archives (pack -z, or 'zstd -dc | gzip')\n")
    assert b"admin page restores it" in aviary("info", plain).stderr


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_unpack_dry_run_and_into_a_folder_read_zstd(zstd_archive, site, source):
    archive, plain = zstd_archive
    dry = reader_output("unpack", "--dry-run", "--db", site["root"] / "new.db", "--storage", site["root"] / "new",
                        "--create-schema", source=source, archive=archive)
    assert dry.returncode == 0, dry.stderr.decode()
    assert not (site["root"] / "new.db").exists()
    out = site["root"] / f"folder-{source}"
    got = reader_output("unpack", "-C", out, source=source, archive=archive)
    assert got.returncode == 0, got.stderr.decode()
    ok("unpack", "-C", site["root"] / "from-plain", plain)
    assert objects(out) == objects(site["root"] / "from-plain")


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_a_zstd_archive_restores_and_doctor_against_finds_nothing(zstd_archive, site, source):
    archive, _ = zstd_archive
    target, files = site["root"] / f"target-{source}.db", site["root"] / f"target-{source}"
    got = reader_output("unpack", "--db", target, "--storage", files, "--create-schema", source=source,
                        archive=archive)
    assert got.returncode == 0, got.stderr.decode()
    assert dump_tables(str(target)) == dump_tables(site["url"])
    assert {k: v for k, v in objects(files).items() if k.startswith("users/")} == \
        {k: v for k, v in objects(site["data"]).items() if k.startswith("users/")}
    against = ["doctor", "--db", target, "--storage", files, "--against"]
    checked = aviary(*against, archive) if source == "file" else aviary(*against, "-", input=archive.read_bytes())
    assert checked.returncode == 0, checked.stderr.decode()


def test_an_incremental_chain_in_zstd_restores_the_live_installation(site):
    root, snapshot = site["root"], site["root"] / "snapshot.ndjson"
    level_0 = root / "level0.tar.zst"
    ok("pack", *site["args"], "-g", snapshot, "-o", level_0)
    key = next(k for k in objects(site["data"]) if k.startswith("users/"))
    (site["data"] / key).write_bytes(b"%PDF changed after level 0")
    target = ["--db", root / "t.db", "--storage", root / "t"]
    ok("unpack", *target, "--create-schema", level_0)
    all_ok(pipeline(["aviary", "pack", *site["args"], "-g", snapshot, "--zstd"], ["aviary", "unpack", *target]))
    assert objects(root / "t")[key] == objects(site["data"])[key]
    assert dump_tables(str(root / "t.db")) == dump_tables(site["url"])


# --- formats we do not read: named at their first bytes ----------------------------------------


def refusal(archive: bytes) -> str:
    """The one line `unpack --dry-run` (any reader) says of `archive` on stdin, and its exit 1."""
    return one_line_error(aviary("ls", input=archive))


@pytest.mark.parametrize("tool, says", [
    ("xz", "input is xz-compressed: pipe it through 'xz -dc' first"),
    ("bzip2", "input is bzip2-compressed: pipe it through 'bzip2 -dc' first"),
    ("lz4", "input is lz4-compressed: pipe it through 'lz4 -dc' first"),
])
def test_other_compressions_are_named_with_the_tool_to_pipe_through(site, tool, says):
    compressed = run([tool, "-c"], input=plain_archive(site), check=True).stdout
    assert refusal(compressed) == f"aviary ls: {says}"


@pytest.mark.parametrize("armor", [[], ["--armor"]])
def test_an_age_stream_is_named_with_the_command_to_pipe_through(site, tmp_path, armor):
    key = tmp_path / "key.txt"
    run(["age-keygen", "-o", str(key)], check=True)
    recipient = run(["age-keygen", "-y", str(key)], check=True).stdout.decode().strip()
    encrypted = run(["age", *armor, "-r", recipient], input=plain_archive(site), check=True).stdout
    assert refusal(encrypted) == "aviary ls: input is age-encrypted: pipe it through 'age -d -i KEYFILE' first"


@pytest.mark.parametrize("how", [["--passphrase", "a long passphrase", "--symmetric"],
                                 ["--passphrase", "a long passphrase", "--symmetric", "--armor"],
                                 ["--encrypt", "-r", "backup@example.org"], ["--passphrase", "", "--sign"]])
def test_an_openpgp_stream_is_named_with_the_command_to_pipe_through(site, tmp_path, how):
    gpg = gpg_home(tmp_path)
    encrypted = run([*gpg, *how, "-o", "-"], input=plain_archive(site), check=True).stdout
    assert refusal(encrypted) == "aviary ls: input is OpenPGP-encrypted: pipe it through 'gpg -d' first"


def gpg_home(tmp_path) -> list[str]:
    """gpg with a home of its own holding one key without a passphrase (backup@example.org)."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback", "--trust-model", "always",
           "--quiet"]
    run([*gpg, "--passphrase", "", "--quick-gen-key", "backup@example.org", "default", "default", "never"],
        check=True)
    return gpg


def test_a_doubly_gzipped_archive_says_so(site):
    twice = run(["gzip", "-c"], input=ok("pack", "-z", *site["args"]), check=True).stdout
    assert refusal(twice) == "aviary ls: input is gzip-compressed twice: pipe it through 'gzip -dc' first"


def test_zstd_inside_gzip_says_so(site):
    nested = run(["gzip", "-c"], input=ok("pack", "--zstd", *site["args"]), check=True).stdout
    assert refusal(nested) == "aviary ls: input is zstd-compressed inside gzip: pipe it through 'gzip -dc' first"


def test_a_tar_starting_with_any_utf8_name_is_no_openpgp_message():
    for first in range(0x80, 0x100):
        head = bytes([first]) + "é-notes.pdf".encode() + bytes(52)
        assert recognise(head) is None, hex(first)


def test_every_format_but_ours_is_refused_naming_its_decoder():
    for fmt in FORMATS:
        if fmt.reader is None:
            with pytest.raises(ArchiveError, match=f"pipe it through '{fmt.decode}' first"):
                open_input(io.BytesIO(fmt.magics[-1] + b"9" + bytes(80)))


@pytest.mark.parametrize("how", ["-z", "--zstd"])
def test_a_compressed_pack_whose_reader_goes_away_fails_in_one_line(site, how):
    key = next(k for k in objects(site["data"]) if k.startswith("users/"))
    (site["data"] / key).write_bytes(os.urandom(8 << 20))  # more than a pipe holds, compressed or not
    cut = pipeline(["aviary", "pack", how, *site["args"]], ["head", "-c", "100"])
    assert cut[0].returncode == 1
    assert cut[0].stderr.decode() == "aviary pack: the reader closed the output before the archive was complete\n"
    full = aviary("pack", how, *site["args"], "-o", "/dev/full")
    assert one_line_error(full) == "aviary pack: /dev/full: No space left on device"
