"""One way to read an archive: what `verify` rejects, restore, `--dry-run` and `-C` refuse.

Each damaged archive below is still a well-formed tar whose checksums.xxh128 agrees with its
members, so only the rules that verify holds (metadata, totals, references, keys, the list of
members) can catch it.  Each goes through all four readers, with the same verdict.
"""

import io
import json
import tarfile

import pytest
import xxhash

from archive_helpers import aviary_made_archive, installation, refused_by_every_reader
from aviarytools.archive import layout
from aviarytools.archive.extract import Extraction
from aviarytools.archive.restore import Restore
from aviarytools.archive.verify import _Checks
from aviarytools.archive.walk import Consumer
from aviarytools.doctor.against import Comparison
from helpers import aviary, ok

CONSUMERS = [Restore, Extraction, _Checks, Comparison]


@pytest.mark.parametrize("consumer", CONSUMERS, ids=lambda c: c.__name__)
def test_every_consumer_says_what_it_does_with_every_kind_of_member(consumer):
    handled = {kind for kind in layout.KINDS if callable(getattr(consumer, f"on_{kind}", None))}
    assert handled | consumer.ignores == set(layout.KINDS)
    assert not handled & consumer.ignores, "a kind both handled and ignored"
    assert set(consumer.ignores) <= set(layout.KINDS)


def test_a_kind_a_consumer_does_not_handle_stops_the_walk_loudly():
    from aviarytools.archive.walk import Walk

    class Forgetful(Consumer):
        ignores = frozenset(set(layout.KINDS) - {"table"})

    archive = aviary_made_archive()[0]
    with pytest.raises(TypeError, match="Forgetful does not say what to do with a table member"):
        list(Walk(io.BytesIO(archive), "-", Forgetful()))


# -- damaged archives that still look whole ------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    tables = installation(str(root / "aviary.db"), root / "data", users=2)
    archive = ok("pack", "--db", root / "aviary.db", "--storage", root / "data")
    return archive, tables


def members_of(archive: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]


def rebuilt(members, unlisted=()) -> bytes:
    """The members written again, with a checksums.xxh128 that agrees with them (but for
    `unlisted` names, left out of it)."""
    out = io.BytesIO()
    sums = []
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.name == layout.CHECKSUMS:
                continue
            info = tarfile.TarInfo(info.name) if data is not None else info
            if data is None:
                tar.addfile(info)
                continue
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            if info.name not in unlisted:
                sums.append(f"{xxhash.xxh3_128_hexdigest(data)}  {info.name}\n")
        listing = "".join(sums).encode()
        info = tarfile.TarInfo(layout.CHECKSUMS)
        info.size = len(listing)
        tar.addfile(info, io.BytesIO(listing))
    return out.getvalue()


def edited(members, name, change):
    """`members` with the content of `name` replaced by change(content)."""
    return [(info, change(data) if info.name == name else data) for info, data in members]


def metadata_edit(change):
    def edit(data: bytes) -> bytes:
        metadata = json.loads(data)
        change(metadata)
        return json.dumps(metadata, indent=2).encode()
    return lambda members: edited(members, layout.METADATA, edit)


def with_member(name: str, data: bytes, *, before: str = layout.CHECKSUMS, unlisted=False):
    def add(members):
        at = next(i for i, (info, _) in enumerate(members) if info.name == before)
        return members[:at] + [(tarfile.TarInfo(name), data)] + members[at:], ({name} if unlisted else ())
    return add


def table_edit(table: str, change):
    def edit(data: bytes) -> bytes:
        rows = json.loads(data)
        change(rows)
        return json.dumps(rows).encode()
    return lambda members: edited(members, layout.table_member(table), edit)


def bump(field):
    def change(metadata):
        metadata[field] += 1
    return change


def counted(size: int):
    """The totals with one more document of `size` bytes."""
    def change(metadata):
        metadata["total_documents"] += 1
        metadata["total_size_bytes"] += size
    return change


STRANGER = "77777777-7777-4777-8777-777777777777"

DAMAGES = {
    "a member the checksums do not list": (with_member(f"filesystem/documents/{STRANGER}/x.pdf", b"%PDF",
                                                       unlisted=True), "not listed in checksums.xxh128"),
    "total_documents off by one": (metadata_edit(bump("total_documents")), "metadata says total_documents"),
    "total_size_bytes off by one": (metadata_edit(bump("total_size_bytes")), "metadata says total_size_bytes"),
    "a table's row count off": (metadata_edit(lambda m: m["aviarytools"]["table_rows"].update(users=9)),
                                "metadata says 9 rows, the archive holds 2"),
    "a field missing from metadata": (metadata_edit(lambda m: m.pop("total_users")), "missing field total_users"),
    "a malformed schema": (metadata_edit(lambda m: m["aviarytools"]["schema"]["users"].update(columns=[])),
                           "aviarytools.schema.users: malformed declaration"),
    "a key twice in a table": (table_edit("login_attempts", lambda rows: rows.append(rows[0])),
                               "duplicate key id="),
    "a row that is not an object": (table_edit("system_settings", lambda rows: rows.append(7)),
                                    "is not a JSON object"),
    "a folder of a user not in users.json": (
        lambda members: metadata_edit(counted(4))(with_member(f"filesystem/documents/{STRANGER}/x.pdf", b"%PDF")(
            members)[0]), f"user {STRANGER} is not in database/users.json"),
    "a broken vanished.ndjson": (with_member(layout.VANISHED, b"{not json}\n"), "line 1: not a"),
    "an rmapi.conf of more than a MiB": (with_member(f"filesystem/configs/{STRANGER}/rmapi.conf", b"x" * (1 << 21)),
                                         "is too large for an rmapi.conf"),
    "metadata.json not first": (lambda members: [members[1], members[0], *members[2:]],
                                "an aviarytools archive, whose metadata.json must be the first member"),
}


def damaged(archive: bytes, damage) -> bytes:
    members = members_of(archive)
    changed = damage(members)
    members, unlisted = changed if isinstance(changed, tuple) else (changed, ())
    return rebuilt(members, unlisted)


@pytest.mark.parametrize("case", DAMAGES)
def test_what_verify_rejects_no_reader_accepts(source, tmp_path, case):
    damage, expected = DAMAGES[case]
    refused_by_every_reader(damaged(source[0], damage), expected, tmp_path)


def test_an_archive_aviary_itself_wrote_passes_every_reader(tmp_path):
    archive = aviary_made_archive()[0]
    assert aviary("verify", input=archive).returncode == 0
    assert aviary("unpack", "-C", tmp_path / "out", input=archive).returncode == 0
    restored = aviary("unpack", "--db", tmp_path / "aviary.db", "--storage", tmp_path / "data",
                      "--create-schema", input=archive)
    assert restored.returncode == 0, restored.stderr.decode()
