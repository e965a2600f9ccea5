"""Canonical values: timestamps, floats and strings agree across engines."""

import random
import struct

import psycopg
import pytest

from aviarytools import timestamps, values
from aviarytools.model import Column, Kind


@pytest.mark.parametrize("text, canonical", [
    ("0001-01-01 00:00:00+00:00", "0001-01-01T00:00:00Z"),
    ("2025-07-27 10:11:12.123456789+00:00", "2025-07-27T10:11:12.123456789Z"),
    ("2025-07-27T10:11:12.120Z", "2025-07-27T10:11:12.12Z"),
    ("2025-07-27 10:11:12+13:45", "2025-07-26T20:26:12Z"),
    ("2025-07-27 10:11:12.5-03", "2025-07-27T13:11:12.5Z"),
    ("2025-07-27 10:11:12", "2025-07-27T10:11:12Z"),
    ("2024-02-29", "2024-02-29T00:00:00Z"),
    ("0001-01-01 00:00:00+01:00", "0000-12-31T23:00:00Z"),
    ("2025-07-27 10:11:12.123456789 +0000 UTC", "2025-07-27T10:11:12.123456789Z"),
])
def test_timestamps_read_every_form_aviary_writes(text, canonical):
    assert timestamps.to_rfc3339(timestamps.parse(text)) == canonical


@pytest.mark.parametrize("bad", ["2025-02-30", "2025-13-01", "yesterday", "2025-01-01 25:00:00", ""])
def test_impossible_timestamps_are_refused(bad):
    with pytest.raises(ValueError):
        timestamps.parse(bad)


def test_nanoseconds_round_half_even_to_microseconds():
    base = timestamps.parse("2025-01-01T00:00:00Z")
    assert timestamps.round_to_microseconds(base + 1500) == base + 2000
    assert timestamps.round_to_microseconds(base + 2500) == base + 2000
    assert timestamps.round_to_microseconds(base + 999_999_500) == base + 1_000_000_000
    assert timestamps.to_postgres(base + 999_999_999) == "2025-01-01 00:00:01+00"


def test_sqlite_text_is_what_go_writes():
    ns = timestamps.parse("2025-07-27T10:11:12.1Z")
    assert timestamps.to_sqlite(ns) == "2025-07-27 10:11:12.1+00:00"
    assert timestamps.to_sqlite(timestamps.parse("0001-01-01T00:00:00Z")) == "0001-01-01 00:00:00+00:00"


def _random_floats(n, seed=1):
    rng = random.Random(seed)
    fixed = [0.0, -0.0, 1.0, 300.0, 0.1, 1e15, 1e14, 123456789012345.6, 1e-4, 1e-5, 5e-324,
             1.7976931348623157e308, 2.5e-7, 1234567890123456.8, -42.125]
    randoms = [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(n)]
    scaled = [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 20) for _ in range(n)]
    return [f for f in fixed + randoms + scaled if f == f and abs(f) != float("inf")]


def test_postgresql_float_text_is_redone_to_the_canonical_form(pg_url):
    # PostgreSQL's float8 output is sometimes one digit longer than the
    # shortest round-trip form (-2.9790121177959848e+16 for -2.979012117795985e+16).
    floats = _random_floats(2000)
    with psycopg.connect(pg_url) as conn:
        conn.execute("SET extra_float_digits = 1")
        server = conn.execute(
            "SELECT row_to_json(t)::text FROM unnest(%s::float8[]) WITH ORDINALITY t(f, n) ORDER BY n",
            [floats]).fetchall()
    for f, (text,) in zip(floats, server):
        assert values.reencode_floats(text.encode()) == f'{{"f":{values.format_float(f)},"n":'.encode() + text.split('"n":')[1].encode()


def test_float_text_round_trips():
    for f in _random_floats(2000, seed=2):
        assert float(values.format_float(f)) == f


@pytest.mark.parametrize("kind, given, internal", [
    (Kind.BOOL, 1, True), (Kind.BOOL, 0, False), (Kind.BOOL, "true", True), (Kind.BOOL, False, False),
    (Kind.INT, 5.0, 5), (Kind.INT, "42", 42), (Kind.FLOAT, 3, 3.0),
    (Kind.UUID, "0F17A300-7E62-4A0A-9DF9-FD789C653938", "0f17a300-7e62-4a0a-9df9-fd789c653938"),
    (Kind.TEXT, '{"json": "inside"}', '{"json": "inside"}'),
])
def test_coercion_follows_the_target_column(kind, given, internal):
    assert values.coerce(Column("c", kind), given) == internal


@pytest.mark.parametrize("kind, given", [
    (Kind.BOOL, 2), (Kind.BOOL, "maybe"), (Kind.INT, 1.5), (Kind.INT, True), (Kind.INT, 2 ** 63),
    (Kind.FLOAT, "NaN"), (Kind.FLOAT, 10 ** 400), (Kind.TEXT, 5), (Kind.TEXT, "a\x00b"),
    (Kind.UUID, "not-a-uuid"), (Kind.TIMESTAMP, 1700000000), (Kind.TEXT, {"an": "object"}),
])
def test_wrong_types_are_refused_with_a_reason(kind, given):
    with pytest.raises(ValueError) as e:
        values.coerce(Column("c", kind), given)
    assert str(e.value)
