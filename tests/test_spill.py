"""The per-member bookkeeping of archive readers: the same answers in memory and spilled to disk."""

import random

import pytest

from aviarytools.spill import SPILL_BLOCK, HashSet, SeenDigests, SpillList, compare_digests

IN_MEMORY_AND_SPILLED = pytest.mark.parametrize("limit", [1000, 2], ids=["in memory", "spilled"])


def test_a_hash_set_says_whether_a_name_is_new():
    names = HashSet()
    assert [names.add(n) for n in ("a", "b", "a", "ü/ñ", "b")] == [True, True, False, True, False]
    assert "ü/ñ" in names and "c" not in names and len(names) == 3


@IN_MEMORY_AND_SPILLED
def test_a_list_reads_back_in_order_and_clears(limit):
    pending = SpillList(limit)
    for n in range(5):
        pending.append((f"temp-{n}", f"final-{n}"))
    assert pending.spilled == (limit == 2)
    assert list(pending) == [(f"temp-{n}", f"final-{n}") for n in range(5)] and len(pending) == 5
    assert list(pending) == list(pending)  # read again, from the start
    pending.clear()
    assert list(pending) == [] and len(pending) == 0


def test_a_long_spilled_list_reads_back_whole_blocks_and_the_rest_in_order():
    pending = SpillList(3)
    items = [(f"users/u/pdfs/{n}.pdf", n, n / 7, None) for n in range(2 * SPILL_BLOCK + 5)]
    for item in items:
        pending.append(item)
    assert pending.spilled and list(pending) == items and len(pending) == len(items)
    pending.append(("last", 0, 0.0, "e"))
    assert list(pending)[-2:] == [items[-1], ("last", 0, 0.0, "e")]


def test_names_that_are_not_utf_8_come_back_as_they_went_in():
    """The tar reader keeps undecodable bytes of a member name as surrogates."""
    name = b"caf\xe9.pdf".decode("utf-8", "surrogateescape")
    pending = SpillList(0)
    pending.append((name, "d"))
    assert list(pending) == [(name, "d")]
    assert HashSet().add(name)


@IN_MEMORY_AND_SPILLED
def test_digests_are_matched_against_the_list(limit):
    listed, read = SpillList(limit), SpillList(limit)
    for name, digest in [("metadata.json", "m"), ("a.pdf", "1"), ("b.pdf", "2"), ("c.pdf", "3")]:
        listed.append((name, digest))
    for name, digest in [("metadata.json", "m"), ("extra.pdf", "9"), ("b.pdf", "X"), ("a.pdf", "1")]:
        read.append((name, digest))
    assert list(compare_digests(listed, read)) == [
        ("b.pdf", "X", "2"),  # read, but not as listed
        ("c.pdf", None, "3"),  # listed, never read
        ("extra.pdf", "9", None),  # read, not listed
    ]


@IN_MEMORY_AND_SPILLED
def test_digests_that_all_match_give_nothing(limit):
    listed, read = SpillList(limit), SpillList(limit)
    for n in range(10):
        listed.append((f"{n}.pdf", f"d{n}"))
    for n in reversed(range(10)):
        read.append((f"{n}.pdf", f"d{n}"))
    assert list(compare_digests(listed, read)) == []


@IN_MEMORY_AND_SPILLED
def test_seen_digests_tell_each_one_seen_before_in_memory_or_spilled(limit):
    """Past `limit` the digests go to a temporary SQLite table a block at a time: the repeats
    (of an earlier block, or twice in one) come out a block later, none lost, none made up."""
    digests = [random.Random(n).getrandbits(64) for n in range(3 * SPILL_BLOCK)]
    again = digests + [digests[3], digests[-1], 7, 7, 2**64 - 1, 0, 2**64 - 1]
    seen, repeated = SeenDigests(limit), []
    for position, digest in enumerate(again):
        repeated += seen.add(digest, position)
    repeated += seen.end()
    n = len(digests)
    assert repeated == [n, n + 1, n + 3, n + 6]
