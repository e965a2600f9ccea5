"""Incremental backups (pack -g FILE): a level 0, then only what changed since, restored as a
chain into a target equal to the live installation, on real folders, SQLite, PostgreSQL and S3."""

import io
import json
import os
import tarfile

import pytest

from archive_helpers import (all_ok, bucket_storage, decodes_into_aviarys_struct, dump_tables, installation,
                             objects, pipeline, s3_args, s3_env)
from aviarytools.archive import layout
from helpers import aviary, ok, one_line_error


def members(archive) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes() if hasattr(archive, "read_bytes") else archive)) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else None for m in tar}


def metadata_of(archive) -> dict:
    return json.loads(members(archive)["metadata.json"])


def manifest_of(archive) -> list[dict]:
    return [json.loads(line) for line in members(archive)["manifest.ndjson"].splitlines()]


def documents(folder) -> dict[str, str]:
    return {k: v for k, v in objects(folder).items() if k.startswith("users/")}


@pytest.fixture
def live(tmp_path):
    url, data = str(tmp_path / "live" / "aviary.db"), tmp_path / "live"
    tables = installation(url, data, users=3, docs_per_user=4)
    keys = sorted(documents(data))
    return {"url": url, "data": data, "tables": tables, "keys": keys, "snapshot": tmp_path / "snapshot.ndjson",
            "root": tmp_path}


def pack_g(site, name, *extra) -> "os.PathLike":
    out = site["root"] / name
    ok("pack", "--db", site["url"], "--storage", site["data"], "-g", site["snapshot"], "-o", out, *extra)
    return out


def change(site) -> dict[str, str]:
    """New, changed at the same size, changed at another size, deleted; and a table row."""
    data, keys = site["data"], site["keys"]
    user = keys[0].split("/")[1]
    (data / layout.storage_key(user, "brand new.pdf")).write_bytes(b"%PDF new")
    same = data / keys[1]
    body = bytearray(same.read_bytes())
    body[100] ^= 0xFF
    same.write_bytes(bytes(body))
    os.utime(same, ns=(same.stat().st_atime_ns, same.stat().st_mtime_ns + 1))
    (data / keys[2]).write_bytes(b"%PDF grown " * 500)
    (data / keys[3]).unlink()
    import sqlite3

    with sqlite3.connect(site["url"]) as conn:
        conn.execute("UPDATE system_settings SET value = 'changed' WHERE key = 'smtp_host'")
    return {"new": layout.storage_key(user, "brand new.pdf"), "same size": keys[1], "other size": keys[2],
            "deleted": keys[3]}


def restored_equals_live(site, url, data):
    assert dump_tables(url) == dump_tables(site["url"])
    assert documents(data) == documents(site["data"])


def test_level_1_carries_exactly_what_changed_and_the_chain_restores_the_live_installation(live):
    level_0 = pack_g(live, "level0.tar")
    assert metadata_of(level_0)["aviarytools"]["incremental"]["level"] == 0
    changed = change(live)
    level_1 = pack_g(live, "level1.tar")
    info = metadata_of(level_1)["aviarytools"]["incremental"]
    assert (info["level"], info["parent"], info["base"]) == (1, metadata_of(level_0)["aviarytools"]["incremental"]
                                                              ["archive"], info["parent"])
    carried = {n for n in members(level_1) if n.startswith(layout.CARRIED_PREFIX) and members(level_1)[n] is not None}
    expected = {changed["new"], changed["same size"], changed["other size"]}
    assert carried == {layout.carried_member(*layout.document_of_key(k)) for k in expected}
    manifest = manifest_of(level_1)
    assert [e["key"] for e in manifest] == sorted(documents(live["data"]))  # every document as it is now
    assert {e["key"] for e in manifest if e["carried"]} == expected
    assert changed["deleted"] not in {e["key"] for e in manifest}
    assert aviary("verify", level_1).returncode == 0

    target, files = str(live["root"] / "t" / "aviary.db"), live["root"] / "t"
    ok("unpack", "--db", target, "--storage", files, "--create-schema", level_0)
    ok("unpack", "--db", target, "--storage", files, level_1)
    restored_equals_live(live, target, files)
    assert aviary("doctor", "--db", target, "--storage", files, "--against", level_1).returncode == 0

    (live["data"] / changed["new"]).write_bytes(b"%PDF newer")  # level 2, after level 1
    level_2 = pack_g(live, "level2.tar")
    assert metadata_of(level_2)["aviarytools"]["incremental"]["level"] == 2
    ok("unpack", "--db", target, "--storage", files, level_2)
    restored_equals_live(live, target, files)


def test_an_incremental_without_its_base_is_refused_and_writes_nothing(live):
    pack_g(live, "level0.tar")
    change(live)
    level_1 = pack_g(live, "level1.tar")
    fresh = live["root"] / "fresh"
    result = aviary("unpack", "--db", fresh / "aviary.db", "--storage", fresh, "--create-schema", level_1)
    error = one_line_error(result)
    assert "relies on it, and the target does not have it: restore the archive it follows first" in error
    assert metadata_of(level_1)["aviarytools"]["incremental"]["parent"] in error
    assert not fresh.exists()

    other = live["root"] / "other"  # a target with the base's documents, one of them since changed
    ok("unpack", "--db", other / "aviary.db", "--storage", other, "--create-schema",
       live["root"] / "level0.tar")
    kept = next(e["key"] for e in manifest_of(level_1) if not e["carried"])
    (other / kept).write_bytes(b"X" * (other / kept).stat().st_size)
    before = (dump_tables(str(other / "aviary.db")), documents(other))
    assert "has other content there" in one_line_error(
        aviary("unpack", "--db", other / "aviary.db", "--storage", other, level_1))
    assert (dump_tables(str(other / "aviary.db")), documents(other)) == before


def test_touched_but_unchanged_is_not_carried_and_checksum_finds_a_same_size_same_mtime_change(live):
    pack_g(live, "level0.tar")
    first, second = live["data"] / live["keys"][0], live["data"] / live["keys"][1]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 5))  # touched only
    stamp = second.stat()
    body = bytearray(second.read_bytes())
    body[10] ^= 1
    second.write_bytes(bytes(body))
    os.utime(second, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # content changed, size and mtime kept
    level_1 = pack_g(live, "level1.tar")
    assert {e["key"] for e in manifest_of(level_1) if e["carried"]} == set()
    level_2 = pack_g(live, "level2.tar", "--checksum")
    assert {e["key"] for e in manifest_of(level_2) if e["carried"]} == {live["keys"][1]}


def test_level_0_forces_a_full_archive_and_a_new_chain(live):
    level_0 = pack_g(live, "level0.tar")
    change(live)
    again = pack_g(live, "again.tar", "--level", "0")
    link = metadata_of(again)["aviarytools"]["incremental"]
    assert link["level"] == 0 and link["base"] == link["archive"] != metadata_of(level_0)["aviarytools"][
        "incremental"]["archive"]
    assert "manifest.ndjson" not in members(again)


def test_a_failed_pack_leaves_the_snapshot_as_it_was_and_a_bad_one_is_refused(live, tmp_path):
    pack_g(live, "level0.tar")
    before = live["snapshot"].read_bytes()
    change(live)
    (live["data"] / live["keys"][0]).write_bytes(os.urandom(4 << 20))  # more than a pipe holds
    import subprocess

    from helpers import AVIARY
    cmd = [*AVIARY, "pack", "--db", live["url"], "--storage", str(live["data"]), "-g", str(live["snapshot"])]
    cut = subprocess.run(f"set -o pipefail; {' '.join(map(repr, cmd))} | head -c 1000 > /dev/null", shell=True,
                         executable="/bin/bash", capture_output=True)
    assert cut.returncode == 1 and b"the reader closed the output" in cut.stderr
    assert live["snapshot"].read_bytes() == before
    assert not [p for p in live["snapshot"].parent.iterdir() if ".partial-" in p.name]

    damaged = tmp_path / "damaged.ndjson"
    damaged.write_bytes(before[:-40])
    lines = before.count(b"\n")
    assert f"{damaged} line {lines}: not a snapshot record" in one_line_error(aviary(
        "pack", "--db", live["url"], "--storage", live["data"], "-g", damaged, "-o", tmp_path / "y.tar"))
    elsewhere = tmp_path / "elsewhere.ndjson"
    elsewhere.write_bytes(before.replace(str(live["data"]).encode(), b"/srv/another"))
    assert "the snapshot of /srv/another, not of" in one_line_error(aviary(
        "pack", "--db", live["url"], "--storage", live["data"], "-g", elsewhere, "-o", tmp_path / "z.tar"))
    alice = aviary("pack", "--db", live["url"], "--storage", live["data"], "-g", live["snapshot"], "--user",
                   "admin", "-o", tmp_path / "w.tar")
    assert "one snapshot file per selection" in one_line_error(alice)
    assert live["snapshot"].read_bytes() == before


def test_aviarys_admin_page_refuses_an_incremental_and_takes_a_level_0(live):
    level_0 = pack_g(live, "level0.tar")
    change(live)
    level_1 = pack_g(live, "level1.tar")
    assert decodes_into_aviarys_struct(metadata_of(level_0))
    assert any(n.startswith("filesystem/documents/") for n in members(level_0))
    assert not decodes_into_aviarys_struct(metadata_of(level_1))
    assert not [n for n in members(level_1) if n == "filesystem" or n.startswith("filesystem/")]


def test_verify_holds_an_incremental_to_its_manifest(live):
    pack_g(live, "level0.tar")
    change(live)
    level_1 = pack_g(live, "level1.tar")
    data = bytearray(level_1.read_bytes())
    at = data.index(b'"carried": true')
    data[at:at + 15] = b'"carried":false'  # a carried document the manifest now says is not
    damaged = live["root"] / "damaged.tar"
    damaged.write_bytes(bytes(data))
    found = aviary("verify", damaged).stderr.decode()
    assert "not carried, says manifest.ndjson" in found


def test_an_incremental_chain_on_s3_and_postgresql(tmp_path, pg_url, s3_server, s3_bucket):
    store = bucket_storage(s3_server, s3_bucket)
    installation(pg_url, store, users=2)
    snapshot = tmp_path / "s3.ndjson"
    args = ["--db", pg_url, *s3_args(s3_server, s3_bucket), "-g", snapshot]
    level_0 = tmp_path / "level0.tar.gz"
    all_ok(pipeline(["aviary", "pack", *args, "-z"], ["tee", level_0], ["gzip", "-dc"], ["aviary", "unpack", "--db",
                    tmp_path / "t.db", "--storage", tmp_path / "t", "--create-schema"], env=s3_env(s3_server)))
    ok("verify", "-g", snapshot, level_0)  # it arrived: the pending state becomes FILE's
    key = next(info.key for info in store.list("users/"))
    store.write(key, [b"%PDF changed on S3"])
    store.write(key.rsplit("/", 1)[0] + "/added.pdf", [b"%PDF added"])
    level_1 = all_ok(pipeline(["aviary", "pack", *args], env=s3_env(s3_server)))
    assert {e["key"] for e in manifest_of(level_1) if e["carried"]} == {key, key.rsplit("/", 1)[0] + "/added.pdf"}
    ok("unpack", "--db", tmp_path / "t.db", "--storage", tmp_path / "t", input=level_1)
    assert documents(tmp_path / "t") == {k: v for k, v in objects(store).items() if k.startswith("users/")}
    assert dump_tables(str(tmp_path / "t.db"))["users"] == dump_tables(pg_url)["users"]


def test_snapshot_lines_are_json_as_jq_reads_it():
    from dataclasses import replace

    from aviarytools.archive.incremental import Entry, entry_of

    user = "0f17a300-7e62-4a0a-9df9-fd789c653938"
    for entry in (Entry(f"users/{user}/pdfs/ñ \"q\"\\\t\x1f.pdf", 3, "a" * 32, 17, None, False),
                  Entry(f"users/{user}/pdfs/a", 0, "b" * 32, None, 'e"t', True)):
        for manifest in (False, True):
            record = json.loads(entry.line(manifest))
            assert entry.line(manifest) == json.dumps(record, ensure_ascii=False).encode() + b"\n"
            assert ("carried" in record) == manifest
            assert entry_of(record, manifest) == (entry if manifest else replace(entry, carried=True))


def test_an_empty_snapshot_file_means_a_level_0_as_for_gnu_tar(live):
    live["snapshot"].write_bytes(b"")
    assert metadata_of(pack_g(live, "level0.tar"))["aviarytools"]["incremental"]["level"] == 0
    assert live["snapshot"].read_bytes().startswith(b'{"aviarytools_snapshot": 1')


def test_a_snapshot_respelled_as_jq_would_gives_the_same_level_1(live):
    """pack takes a line it wrote, as it wrote it, without parsing it; a line spelled otherwise
    (here as `jq -c` spells it, which an operator's script might leave) is parsed, to the same plan."""
    pack_g(live, "level0.tar")
    as_written = live["snapshot"].read_bytes()
    respelled = b"".join(json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                         for line in as_written.splitlines())
    assert respelled != as_written and [json.loads(x) for x in respelled.splitlines()] == \
        [json.loads(x) for x in as_written.splitlines()]
    changed = change(live)
    level_1 = manifest_of(pack_g(live, "level1.tar"))
    live["snapshot"].write_bytes(respelled)
    assert manifest_of(pack_g(live, "level1-respelled.tar")) == level_1
    assert {e["key"] for e in level_1 if e["carried"]} == {changed["new"], changed["same size"], changed["other size"]}


def test_a_pipe_whose_far_end_fails_leaves_the_chain_where_it_was_until_verify_confirms(live, tmp_path):
    """`pack -g FILE | aws s3 cp - ...` with aws failing: a small incremental fits in the pipe's
    buffer, so pack ends well, but its state stays pending (FILE.pending) and FILE does not
    move until `verify -g FILE` sees the archive that arrived."""
    import subprocess

    from helpers import AVIARY

    level_0 = pack_g(live, "level0.tar")
    base = metadata_of(level_0)["aviarytools"]["incremental"]["archive"]
    before = live["snapshot"].read_bytes()
    pending = tmp_path / "snapshot.ndjson.pending"
    change(live)
    pack = " ".join(map(repr, [*AVIARY, "pack", "--db", live["url"], "--storage", str(live["data"]),
                               "-g", str(live["snapshot"])]))

    def piped(far_end: str) -> subprocess.CompletedProcess:
        return subprocess.run(f"set -o pipefail; {pack} | {far_end}", shell=True, executable="/bin/bash",
                              capture_output=True, cwd=tmp_path)

    # The far end reads nothing and fails once pack is done (its state written): as aws after pack
    # wrote a small archive into the pipe's buffer.
    failed = piped(f"sh -c 'for i in $(seq 600); do [ -e {pending} ] && break; sleep 0.1; done;"
                   " echo Unable to locate credentials >&2; exit 1'")
    assert failed.returncode == 1 and b"Unable to locate credentials" in failed.stderr
    assert live["snapshot"].read_bytes() == before and pending.exists()
    first = json.loads(pending.read_bytes().splitlines()[0])
    assert (first["level"], first["base"]) == (1, base)

    arrived = tmp_path / "arrived.tar"
    again = piped(f"cat > {arrived}")
    assert again.returncode == 0
    assert f"was never confirmed (`aviary verify -g {live['snapshot']}` of what arrived): this archive " \
           f"follows archive {base} instead" in again.stderr.decode()
    link = metadata_of(arrived)["aviarytools"]["incremental"]
    assert (link["level"], link["parent"]) == (1, base) and link["archive"] != first["archive"]
    assert live["snapshot"].read_bytes() == before

    wrong = aviary("verify", "-g", live["snapshot"], level_0)
    assert wrong.returncode == 1 and f"awaits archive {link['archive']}" in wrong.stderr.decode()
    assert live["snapshot"].read_bytes() == before
    cut = tmp_path / "cut.tar"
    cut.write_bytes(arrived.read_bytes()[:-2048 * 4])
    assert aviary("verify", "-g", live["snapshot"], cut).returncode == 1
    assert live["snapshot"].read_bytes() == before

    confirmed = aviary("verify", "-g", live["snapshot"], input=arrived.read_bytes())
    assert confirmed.returncode == 0, confirmed.stderr
    assert json.loads(live["snapshot"].read_bytes().splitlines()[0])["archive"] == link["archive"]
    assert not pending.exists()
    level_2 = pack_g(live, "level2.tar")
    assert metadata_of(level_2)["aviarytools"]["incremental"]["parent"] == link["archive"]

    target = tmp_path / "target"
    for archive in (level_0, arrived, level_2):
        ok("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", archive)
    restored_equals_live(live, str(target / "aviary.db"), target)


def chain_of_four(site) -> list:
    """A level 0 and 3 incrementals: new, changed and deleted documents, and one deleted then
    brought back."""
    level_0 = pack_g(site, "level0.tar")
    change(site)
    level_1 = pack_g(site, "level1.tar")
    data, back = site["data"], site["keys"][3]  # deleted by change()
    (data / back).write_bytes(b"%PDF brought back")
    (data / site["keys"][4]).unlink()
    level_2 = pack_g(site, "level2.tar")
    (data / site["keys"][5]).write_bytes(b"%PDF changed on night 3")
    return [level_0, level_1, level_2, pack_g(site, "level3.tar")]


def link(archive) -> dict:
    return metadata_of(archive)["aviarytools"]["incremental"]


def test_verify_checks_a_chain_and_names_the_first_link_that_does_not_fit(live, tmp_path):
    chain = chain_of_four(live)
    whole = aviary("verify", *chain, "--report", tmp_path / "report.json")
    assert whole.returncode == 0, whole.stderr
    last = whole.stderr.decode().splitlines()[-1]
    assert last.startswith(f"aviary verify: chain of 4 archives, levels 0 to 3, level 0 {link(chain[0])['archive']}: ok")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["archive"]["id"] == link(chain[3])["archive"] and report["archive"]["level"] == 3
    assert report["bytes_read"] == sum(a.stat().st_size for a in chain)
    assert aviary("verify", chain[0], chain[1], "-", input=chain[2].read_bytes()).returncode == 0

    level_0, level_1, level_2, level_3 = chain
    gap = aviary("verify", level_0, level_1, level_3)
    assert one_line_error(gap) == (
        f"aviary verify: {level_3} (archive {link(level_3)['archive']}, level 3): follows archive "
        f"{link(level_2)['archive']}, expected {link(level_1)['archive']} ({level_1}): an archive missing between "
        "them, or out of order")
    assert "out of order" in one_line_error(aviary("verify", level_0, level_2, level_1))
    assert "a chain starts with its level 0" in one_line_error(aviary("verify", level_1, level_2))
    assert "given twice" in one_line_error(aviary("verify", level_0, level_1, level_1))
    plain = tmp_path / "plain.tar"
    ok("pack", "--db", live["url"], "--storage", live["data"], "-o", plain)
    assert "not an archive of pack -g" in one_line_error(aviary("verify", plain, level_1))

    other = {"url": str(tmp_path / "other" / "aviary.db"), "data": tmp_path / "other",
             "snapshot": tmp_path / "other.ndjson", "root": tmp_path}
    installation(other["url"], other["data"], users=1, docs_per_user=1)
    theirs = pack_g(other, "other0.tar")
    assert "an archive of another chain or installation" in one_line_error(aviary("verify", theirs, level_1))

    cut = tmp_path / "level1-cut.tar"
    cut.write_bytes(level_1.read_bytes()[: level_1.stat().st_size // 2])
    broken = aviary("verify", level_0, cut, level_2)
    assert broken.returncode == 1
    assert f"aviary verify: {cut}: " in broken.stderr.decode() and "problem(s)" in broken.stderr.decode()


def test_differentials_are_a_chain_of_the_level_0_and_the_latest_level_1(live, tmp_path):
    level_0 = pack_g(live, "level0.tar")
    kept = live["snapshot"].read_bytes()
    change(live)
    pack_g(live, "monday.tar")
    live["snapshot"].write_bytes(kept)
    (live["data"] / live["keys"][5]).write_bytes(b"%PDF tuesday")
    tuesday = pack_g(live, "tuesday.tar")
    assert link(tuesday)["level"] == 1
    assert aviary("verify", level_0, tuesday).returncode == 0
    assert "two archives follow the same one" in one_line_error(aviary("verify", level_0, live["root"] / "monday.tar", tuesday))

    target = tmp_path / "t"  # unpack takes them as verify does
    ok("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", level_0, tuesday)
    restored_equals_live(live, str(target / "aviary.db"), target)
    error = one_line_error(aviary("unpack", "--db", target / "aviary.db", "--storage", target, level_0,
                                  live["root"] / "monday.tar", tuesday))
    assert "two archives follow the same one" in error


def test_unpack_restores_a_chain_in_one_step_and_refuses_a_broken_one_before_writing(live, tmp_path):
    chain = chain_of_four(live)
    target = tmp_path / "one-step"
    result = aviary("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", *chain,
                    "--report", tmp_path / "report.json", "--progress")
    assert result.returncode == 0, result.stderr
    shown = result.stderr.decode()  # the last first, each named
    assert shown.index(f"unpack: reading 1/4 {chain[3]}") < shown.index(f"unpack: reading 4/4 {chain[0]}")
    restored_equals_live(live, str(target / "aviary.db"), target)
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["archive"]["id"], report["archive"]["level"]) == (link(chain[3])["archive"], 3)
    assert report["bytes_read"] == sum(a.stat().st_size for a in chain)

    level_0, level_1, level_2, level_3 = chain
    for broken, expected in (((level_0, level_1, level_3), "an archive missing between them, or out of order"),
                             ((level_0, level_2, level_1), "out of order"),
                             ((level_1, level_2), "a chain starts with its level 0")):
        fresh = tmp_path / "refused"
        error = one_line_error(aviary("unpack", "--db", fresh / "aviary.db", "--storage", fresh, "--create-schema",
                                      *broken))
        assert error.startswith("aviary unpack: ") and expected in error
        assert not fresh.exists()


def flipped_in_a_document(archive, tmp_path) -> "os.PathLike":
    """A copy of the (plain) archive with one byte flipped inside its first document member."""
    with tarfile.open(archive) as tar:
        member = next(m for m in tar if m.isfile() and m.name.startswith((layout.CARRIED_PREFIX, "filesystem/")))
    data = bytearray(archive.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01
    damaged = tmp_path / f"damaged-{archive.name}"
    damaged.write_bytes(bytes(data))
    return damaged


def test_a_chain_mixes_compressions_reads_stdin_anywhere_and_writes_each_document_once(live, tmp_path):
    import subprocess

    level_0, level_1, level_2, level_3 = chain_of_four(live)
    subprocess.run(["gzip", "-k", level_1], check=True)
    subprocess.run(["zstd", "-q", level_2], check=True)
    mixed = [level_0, tmp_path / "level1.tar.gz", tmp_path / "level2.tar.zst", level_3]
    live_documents = len(documents(live["data"]))
    for n, stdin in enumerate((None, 3, 1, 0)):
        target = tmp_path / f"t{n}"
        given = ["-" if i == stdin else a for i, a in enumerate(mixed)]
        result = aviary("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", *given,
                        "--report", tmp_path / f"report{n}.json",
                        input=mixed[stdin].read_bytes() if stdin is not None else None)
        assert result.returncode == 0, (stdin, result.stderr)
        restored_equals_live(live, str(target / "aviary.db"), target)
        assert json.loads((tmp_path / f"report{n}.json").read_text())["documents"] == live_documents  # each once


def test_a_chain_dry_run_writes_nothing_and_damage_anywhere_restores_nothing(live, tmp_path):
    chain = chain_of_four(live)
    target = tmp_path / "t"
    ok("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", chain[0])
    before = (dump_tables(str(target / "aviary.db")), objects(target))
    dry = aviary("unpack", "--db", target / "aviary.db", "--storage", target, "--dry-run", *chain)
    assert dry.returncode == 0, dry.stderr
    assert "would be deleted (not in the archive; dry run)" in dry.stderr.decode()
    assert (dump_tables(str(target / "aviary.db")), objects(target)) == before

    for damaged in (flipped_in_a_document(chain[3], tmp_path), flipped_in_a_document(chain[1], tmp_path),
                    flipped_in_a_document(chain[0], tmp_path)):
        given = [damaged if a.name in damaged.name else a for a in chain]
        error = one_line_error(aviary("unpack", "--db", target / "aviary.db", "--storage", target, *given))
        assert "XXH128" in error and str(damaged) in error, error
        assert (dump_tables(str(target / "aviary.db")), objects(target)) == before

    ok("unpack", "--db", target / "aviary.db", "--storage", target, *chain)  # over the level 0: the live state
    restored_equals_live(live, str(target / "aviary.db"), target)


def test_a_chain_refuses_the_options_of_one_archive(live, tmp_path):
    level_0, level_1 = pack_g(live, "level0.tar"), pack_g(live, "level1.tar")
    target = tmp_path / "t"
    for options in (["-C", tmp_path / "x"], ["--adopt", "admin"], ["--finish"]):
        refused = aviary("unpack", *options, level_0, level_1)
        assert refused.returncode == 2, (options, refused.stderr)
    twice = aviary("unpack", "--db", target / "aviary.db", "-", "-", input=b"")
    assert twice.returncode == 2 and b"at most one ARCHIVE can be -" in twice.stderr


def test_a_chain_from_sqlite_and_a_folder_restores_in_one_step_into_postgresql_and_s3(live, tmp_path, pg_url, pg_reference,
                                                                                        s3_server, s3_bucket):
    """The acceptance: level 0 + 3 incrementals (documents new, changed, deleted, one deleted and
    brought back) in one step = the live installation (dump-table's dumps, every document's XXH128
    by the xxhash library); a gap, the wrong order or a damaged last archive writes nothing."""
    chain = chain_of_four(live)
    store = bucket_storage(s3_server, s3_bucket)
    target = ["--db", pg_url, *s3_args(s3_server, s3_bucket)]
    env = s3_env(s3_server)

    def target_state():
        return dump_tables(pg_url), objects(store)

    level_0, level_1, level_2, level_3 = chain
    ok("unpack", *target, "--create-schema", level_0, env=env)
    before = target_state()
    damaged = flipped_in_a_document(level_3, tmp_path)
    for refused, expected in (((level_0, level_1, level_3), "an archive missing between them"),
                              ((level_0, level_2, level_1, level_3), "out of order"),
                              ((level_0, level_1, level_2, damaged), "manifest.ndjson says")):
        error = one_line_error(aviary("unpack", *target, *refused, env=env))
        assert expected in error, error
        assert target_state() == before

    result = aviary("unpack", *target, *chain, env=env)
    assert result.returncode == 0, result.stderr
    tables, restored = target_state()
    assert {k: v for k, v in restored.items() if k.startswith("users/")} == documents(live["data"])
    assert (live["data"] / live["keys"][3]).read_bytes() == b"%PDF brought back"
    # The tables (each backend spells timestamps its own way): as the loop of single restores leaves them.
    for archive in chain:
        ok("unpack", "--db", pg_reference, "--storage", tmp_path / "loop", "--create-schema", archive)
    assert tables == dump_tables(pg_reference)
    assert documents(tmp_path / "loop") == documents(live["data"])


def test_a_chain_of_postgresql_and_s3_restored_in_one_step_equals_the_live_installation(tmp_path, pg_reference, pg_url,
                                                                                       s3_server, s3_bucket):
    """The acceptance on real servers: level 0 + 3 incrementals of a PostgreSQL + S3 installation
    (documents new, changed, deleted, one deleted and brought back; a row changed), restored in
    one step into another database and bucket = the live installation (dump-table's dumps, the
    XXH128 of every document by the xxhash library); gzip, zstd and plain archives mixed."""
    import subprocess

    import psycopg

    live = bucket_storage(s3_server, s3_bucket)
    installation(pg_reference, live, users=2, docs_per_user=4)
    keys = sorted(info.key for info in live.list("users/"))
    env = s3_env(s3_server)
    source = ["--db", pg_reference, *s3_args(s3_server, s3_bucket), "-g", tmp_path / "snap.ndjson"]

    def pack(name, *extra):
        ok("pack", *source, "-o", tmp_path / name, *extra, env=env)
        return tmp_path / name

    def setting(value):
        with psycopg.connect(pg_reference) as conn:
            conn.execute("UPDATE system_settings SET value = %s WHERE key = 'smtp_host'", (value,))

    chain = [pack("level0.tar")]
    live.write(keys[0].rsplit("/", 1)[0] + "/new.pdf", [b"%PDF new on night 1"])
    live.write(keys[1], [b"%PDF changed on night 1"])
    live.delete(keys[2])
    setting("night-1")
    chain.append(pack("level1.tar.gz", "-z"))
    live.write(keys[2], [b"%PDF brought back on night 2"])
    live.delete(keys[3])
    chain.append(pack("level2.tar.zst", "--zstd"))
    live.write(keys[4], [b"%PDF changed on night 3"])
    setting("night-3")
    chain.append(pack("level3.tar"))

    target_bucket = s3_server.create_bucket(f"chain-{os.urandom(6).hex()}")
    try:
        target = bucket_storage(s3_server, target_bucket)
        result = aviary("unpack", "--db", pg_url, *s3_args(s3_server, target_bucket), "--create-schema", *chain,
                        env=env)
        assert result.returncode == 0, result.stderr
        assert dump_tables(pg_url) == dump_tables(pg_reference)
        assert objects(target) == {k: v for k, v in objects(live).items() if k.startswith("users/")}
        assert b"".join(target.read(keys[2])) == b"%PDF brought back on night 2"
        dumped = subprocess.run(["xxhsum", "-H2", "-"], input=b"".join(target.read(keys[4])), capture_output=True)
        assert dumped.stdout.split()[0].decode() == objects(live)[keys[4]]  # the xxhsum tool agrees
    finally:
        s3_server.client().delete_bucket(Bucket=target_bucket)


def test_a_document_an_earlier_archive_gives_is_held_to_the_last_manifest(live, tmp_path):
    """A level 0 re-packed with one document's bytes changed (its checksums made to match: verify
    passes it) does not hold the state the last manifest records: refused, nothing written."""
    import xxhash

    level_0 = pack_g(live, "level0.tar")
    (live["data"] / live["keys"][0]).write_bytes(b"%PDF changed")
    level_1 = pack_g(live, "level1.tar")
    kept = next(e["key"] for e in manifest_of(level_1) if not e["carried"])
    user, path = layout.document_of_key(kept)
    contents = members(level_0)
    name = next(n for n in contents if n.startswith("filesystem/") and n.endswith(f"{user}/{path}"))
    body = bytearray(contents[name])
    body[0] ^= 0x01
    contents[name] = bytes(body)
    contents["checksums.xxh128"] = b"".join(
        (xxhash.xxh3_128_hexdigest(contents[n]).encode() + b"  " + n.encode() + b"\n")
        if line.endswith(b"  " + n.encode()) else line + b"\n"
        for line in contents["checksums.xxh128"].splitlines() for n in [line.split(b"  ", 1)[1].decode()])
    forged = tmp_path / "forged0.tar"
    with tarfile.open(level_0) as source, tarfile.open(forged, "w", format=tarfile.PAX_FORMAT) as out:
        for member in source:
            data = contents[member.name]
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    assert aviary("verify", forged).returncode == 0
    target = tmp_path / "t"
    error = one_line_error(aviary("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema",
                                  forged, level_1))
    assert f"{forged}: {kept}: " in error and "are not the states of one chain" in error
    assert not target.exists()


def test_a_pipe_in_a_chain_is_read_as_it_comes_and_one_only(live, tmp_path):
    """bash's `<(cat x.tar)` is a pipe: read once, first (as `-` is), never ahead."""
    import subprocess

    from helpers import AVIARY

    chain = chain_of_four(live)
    target = tmp_path / "t"
    unpack = " ".join(map(repr, [*AVIARY, "unpack", "--db", str(target / "aviary.db"), "--storage", str(target),
                                 "--create-schema"]))

    def run(arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(f"{unpack} {arguments}", shell=True, executable="/bin/bash", capture_output=True)

    piped = run(f"{chain[0]} <(cat {chain[1]}) {chain[2]} {chain[3]}")
    assert piped.returncode == 0, piped.stderr
    restored_equals_live(live, str(target / "aviary.db"), target)
    twice = run(f"<(cat {chain[0]}) {chain[1]} <(cat {chain[2]}) {chain[3]} 2>&1 < /dev/null")
    assert twice.returncode == 1 and b"at most one archive of a chain can be read as a stream" in twice.stdout
