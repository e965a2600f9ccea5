"""Backups of Aviary v1.4.0 to v1.5.3, the first multi-user releases: metadata.json comes LAST
and lacks the user and API key totals, users.json lacks the columns later releases added, and
each device pairing is only a file under filesystem/configs/.  Aviary still restores them, and
they are what a disaster sends an operator to: every reader here takes them, in one pass from
the front, from a pipe too.  The archives are built from the facts the project carries
(archive_helpers.old_aviary_archive, format_notes)."""

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
import xxhash

import format_notes
from archive_helpers import (all_ok, aviary_tar, dump_tables, installation, load_rows, objects,
                             old_aviary_archive, pipeline, refused_by_every_reader, state)
from helpers import AVIARY, aviary, ok

OLD_INFO = "after the other members, as Aviary v1.4.0 to v1.5.3 wrote it"


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    archive, tables, documents = old_aviary_archive()
    path = tmp_path_factory.mktemp("old") / "aviary_backup_20250810_090807.tar.gz"
    path.write_bytes(archive)
    return {"path": path, "archive": archive, "tables": tables, "documents": documents}


def members_of(archive: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]


def test_the_archive_is_built_as_v1_5_3_wrote_it(old):
    facts = format_notes.read_facts()
    members = members_of(old["archive"])
    names = [m.name for m, _ in members]
    assert names[-1] == "metadata.json" and names[:2] == ["database", "database/api_keys.json"]
    metadata = json.loads(members[-1][1])
    assert set(facts["metadata_last"]["lacks"]) == {"total_users", "total_api_keys"}
    assert not set(metadata) & set(facts["metadata_last"]["lacks"]) and "aviarytools" not in metadata
    users = json.loads(dict((m.name, d) for m, d in members)["database/users.json"])
    later = {"rmapi_config", "folder_depth_limit", "folder_exclusion_list", "conversion_output_format",
             "pdf_background_removal", "experimental_download_link", "contrast_setting"}
    assert all(not later & set(user) for user in users) and all("conflict_resolution" in u for u in users)
    configs = [n for n in names if n.startswith("filesystem/configs/") and n.endswith("/rmapi.conf")]
    assert len(configs) == sum(u["rmapi_config"] is not None for u in old["tables"]["users"]) == 2


# --- verify, from a file and from a pipe -----------------------------------------------------


def test_verify_takes_it_from_a_file_and_from_a_pipe(old):
    checked = aviary("verify", old["path"])
    assert checked.returncode == 0, checked.stderr.decode()
    assert OLD_INFO in checked.stderr.decode()
    piped = pipeline(["gunzip", "-c", old["path"]], ["aviary", "verify"])
    all_ok(piped)
    assert OLD_INFO in piped[-1].stderr.decode() and "aviary verify: ok" in piped[-1].stderr.decode()


def late(metadata_change=None, drop=None, extra=None) -> bytes:
    """The old archive again, its metadata.json changed or a member left out or added."""
    members = members_of(old_aviary_archive()[0])
    files = {m.name: data for m, data in members if data is not None and m.name != "metadata.json"}
    metadata = json.loads(members[-1][1])
    (metadata_change or (lambda m: None))(metadata)
    for name in drop or ():
        del files[name]
    files.update(extra or {})
    return aviary_tar(metadata, files, metadata_last=True) if metadata is not None else None


CHECKS_AT_THE_END = {
    "total_documents off by one": (late(lambda m: m.update(total_documents=m["total_documents"] + 1)),
                                   "metadata says total_documents 10, the archive holds 9"),
    "a field of the wrong type": (late(lambda m: m.update(exported_tables="users")),
                                  "field exported_tables has the wrong type"),
    "an aviarytools archive re-packed": (late(lambda m: m.update(aviarytools={"version": "1"})),
                                         "an aviarytools archive, whose metadata.json must be the first member"),
}


@pytest.mark.parametrize("case", CHECKS_AT_THE_END)
def test_the_checks_that_need_the_metadata_run_before_the_commit(case, tmp_path):
    refused_by_every_reader(*CHECKS_AT_THE_END[case], tmp_path)


def test_a_single_user_archive_re_packed_with_metadata_last_is_refused_at_its_first_member():
    metadata = {"aviary_version": "v1.9.0", "export_timestamp": "2026-05-01T00:00:00Z", "database_type": "none",
                "users_exported": "single-user", "total_documents": 1, "total_size_bytes": 4,
                "exported_tables": [], "total_users": 0, "aviarytools": {"single_user": {}}}
    archive = aviary_tar(metadata, {"single-user/pdfs/a.pdf": b"%PDF"}, metadata_last=True)
    checked = aviary("verify", input=archive)
    assert checked.returncode == 1, checked.stderr.decode()
    assert ("problem: layout: single-user/pdfs/a.pdf: a member of aviarytools' own before metadata.json, which must"
            " then be the first member") in checked.stderr.decode()


def test_a_tar_without_any_metadata_is_refused_after_the_last_member(tmp_path):
    members = members_of(old_aviary_archive()[0])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members[:-1]:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    for command in (["verify"], ["unpack", "-C", tmp_path / "out"],
                    ["unpack", "--db", tmp_path / "a.db", "--storage", tmp_path / "data", "--create-schema"]):
        result = aviary(*command, input=buffer.getvalue())
        assert result.returncode == 1 and "no metadata.json in the archive" in result.stderr.decode(), command
    assert not (tmp_path / "data").exists() or objects(tmp_path / "data") == {}
    assert [f for _, _, names in os.walk(tmp_path / "out") for f in names] == []
    info = aviary("info", input=buffer.getvalue())
    assert info.returncode == 1 and "no metadata.json in the archive" in info.stderr.decode()


# --- a complete restore ------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_unpack_create_schema_restores_it_completely(old, target, tmp_path, request):
    if target == "sqlite":
        url, reference = str(tmp_path / "restored.db"), str(tmp_path / "reference.db")
    else:
        url, reference = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_reference")
    load_rows(reference, old["tables"])  # later columns at their defaults, the pairing from its file

    restored = aviary("unpack", "--db", url, "--storage", tmp_path / "data", "--create-schema", input=old["archive"])
    assert restored.returncode == 0, restored.stderr.decode()
    dumped = dump_tables(url)
    assert dumped == dump_tables(reference)
    assert objects(tmp_path / "data") == old["documents"]
    users = {u["id"]: u for u in map(json.loads, dumped["users"].splitlines())}
    for user in old["tables"]["users"]:
        restored_user = users[user["id"]]
        assert (restored_user["contrast_setting"], restored_user["conversion_output_format"]) == ("none", "epub")
        assert restored_user["rmapi_config"] == user["rmapi_config"]  # from filesystem/configs/, or none
    assert sum(u["rmapi_config"] is not None for u in users.values()) == 2


def test_dry_run_changes_nothing_and_a_replace_from_a_pipe_restores(old, tmp_path):
    target, files = str(tmp_path / "target.db"), tmp_path / "target"
    installation(target, files, users=3, seed=11)
    before = state(target, files)
    dry = aviary("unpack", "--dry-run", "--db", target, "--storage", files, input=old["archive"])
    assert dry.returncode == 0, dry.stderr.decode()
    assert state(target, files) == before

    all_ok(pipeline(["gunzip", "-c", old["path"]], ["aviary", "unpack", "--db", target, "--storage", files]))
    assert objects(files) == old["documents"]
    reference = str(tmp_path / "reference.db")
    load_rows(reference, old["tables"])
    assert dump_tables(target) == dump_tables(reference)

    compared = aviary("doctor", "--db", target, "--storage", files, "--against", old["path"])
    assert compared.returncode == 0, compared.stdout.decode() + compared.stderr.decode()


def test_unpack_C_extracts_every_member(old, tmp_path):
    result = aviary("unpack", "-C", tmp_path / "out", input=old["archive"])
    assert result.returncode == 0, result.stderr.decode()
    for info, data in members_of(old["archive"]):
        path = tmp_path / "out" / info.name
        assert path.is_dir() if data is None else path.read_bytes() == data, info.name


def test_ls_cat_and_info_read_it(old):
    listed = [json.loads(line) for line in ok("ls", old["path"]).splitlines()]
    assert listed[-1]["path"] == "metadata.json"
    named = [m for m in listed if m["path"].startswith("filesystem/documents/") and m["type"] == "file"]
    assert named and all(m["user"] in {"admin", "zoë", "björn"} for m in named)  # users.json came first

    key, digest = next(iter(old["documents"].items()))
    member = "filesystem/documents/" + key.removeprefix("users/").replace("/pdfs/", "/", 1)
    assert xxhash.xxh3_128_hexdigest(ok("cat", member, old["path"])) == digest
    users = [json.loads(line) for line in ok("cat", "--ndjson", "database/users.json", old["path"]).splitlines()]
    assert [u["id"] for u in users] == [u["id"] for u in old["tables"]["users"]]

    shown = aviary("info", input=old["archive"])
    assert shown.returncode == 0, shown.stderr.decode()
    assert json.loads(shown.stdout)["aviary_version"] == "v1.5.3"
    assert shown.stderr.decode() == ("aviary info: warning: metadata.json is not the first member (Aviary v1.4.0 to"
                                     " v1.5.3 wrote it last): reading the whole archive to find it\n"
                                     "aviary info: Aviary's own backup; Aviary's admin page restores it"
                                     " (with Aviary's own losses)\n")


def test_a_metadata_first_archive_without_totals_is_aviarys_too():
    """Aviary's restore page reads any archive lacking the totals as an old one: so does verify."""
    members = members_of(old_aviary_archive()[0])
    files = {m.name: data for m, data in members if data is not None and m.name != "metadata.json"}
    checked = aviary("verify", input=aviary_tar(json.loads(members[-1][1]), files))
    assert checked.returncode == 0 and OLD_INFO not in checked.stderr.decode(), checked.stderr.decode()


# --- flat memory -------------------------------------------------------------------------------

PEAK = ("import resource, subprocess, sys;"
        "subprocess.run(sys.argv[1:], check=True, stdin=sys.stdin, stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)")


def peak_mb(args, archive: bytes) -> int:
    """The peak RSS (MB) of `aviary ARGS` reading `archive` from a pipe."""
    done = subprocess.run([sys.executable, "-c", PEAK, *AVIARY, *map(str, args)], input=archive,
                          capture_output=True, check=True)
    return int(done.stdout)


def test_memory_stays_flat_with_1000_documents(tmp_path):
    """250 and 1,000 documents of 32 KiB, metadata.json last: the peak does not grow with them
    (everything held until the metadata would be 24 MiB more)."""
    peaks = {}
    for documents in (250, 1000):
        archive = old_aviary_archive(users=10, docs_per_user=documents // 10, document_size=32 << 10)[0]
        folder = tmp_path / str(documents)
        peaks[documents] = (
            peak_mb(["verify"], archive),
            peak_mb(["unpack", "--db", folder / "a.db", "--storage", folder / "data", "--create-schema"], archive),
            peak_mb(["unpack", "-C", folder / "out"], archive))
    print("peak RSS MB (verify, unpack, unpack -C) at 250 and 1,000 documents:", peaks)
    for small, large in zip(peaks[250], peaks[1000]):
        assert large <= small + 6, peaks
