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


# -- fast paths: the common forms skip the general parser, to the same result --

EDGE_TIMESTAMPS = [
    "2025-07-27T10:11:12Z", "2025-07-27T10:11:12.1Z", "2025-07-27T10:11:12.123456Z",
    "2025-07-27T10:11:12.1234567Z", "2025-07-27T10:11:12.123456789Z", "2025-07-27T10:11:12.000000Z",
    "2025-07-27T10:11:12.120000000Z", "2025-07-27 10:11:12+00:00", "2025-07-27 10:11:12.5+00:00",
    "2024-02-29T23:59:59.999999Z", "2023-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-00-10T00:00:00Z",
    "2025-13-01T00:00:00Z", "2025-01-00T00:00:00Z", "2025-07-27T24:00:00Z", "2025-07-27T23:60:00Z",
    "2025-07-27T23:59:60Z", "0000-01-01T00:00:00Z", "0000-12-31T23:00:00.5Z", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.999999999Z", "2025-07-27t10:11:12Z",
    "2025-07-27T10:11:12z", "2025-07-27T10:11:12.Z", "2025-07-27T10:11:12.1234567890Z",
    " 2025-07-27T10:11:12Z", "2025-07-27T10:11:12Z ", "2025-07-27T10:11:12+00", "2025-07-27T10:11:12+0000",
    "2025-07-27T10:11:12-00:00", "2025-07-27T10:11:12+01:00", "٢٠٢٥-07-27T10:11:12Z", "2025-07-27T1٠:11:12Z",
    "2025-07-27", "2025-07-27T10:11Z", "12025-07-27T10:11:12Z", "-2025-07-27T10:11:12Z",
]


def _outcome(function, *args):
    try:
        return function(*args)
    except ValueError as e:
        return ("ValueError", str(e))


def _random_timestamps(n, seed=3):
    rng = random.Random(seed)
    for _ in range(n):
        year, month, day = rng.randint(0, 9999), rng.randint(0, 13), rng.randint(0, 32)
        clock = f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}"
        digits = rng.randint(0, 10)
        fraction = "." + "".join(rng.choice("0123456789") for _ in range(digits)) if digits else ""
        yield (f"{year:04d}-{month:02d}-{day:02d}{rng.choice('T ')}{clock}{fraction}"
               f"{rng.choice(['Z', '+00:00', 'z', '+00'])}")


def _check_fast_paths(text):
    general = _outcome(timestamps._parse_general, text)
    assert _outcome(timestamps.parse, text) == general
    for fast, slow in ((timestamps.postgres_text, timestamps.to_postgres),
                       (timestamps.sqlite_text, timestamps.to_sqlite)):
        got = fast(text)
        if got is not None:
            assert isinstance(general, int) and got == slow(general)


@pytest.mark.parametrize("text", EDGE_TIMESTAMPS)
def test_timestamp_fast_paths_agree_with_the_general_path(text):
    _check_fast_paths(text)


def test_timestamp_fast_paths_agree_on_random_text():
    for text in _random_timestamps(20_000):
        _check_fast_paths(text)


def test_canonical_timestamps_take_the_fast_paths():
    day = timestamps.NS_PER_DAY
    for ns in range(-600_000 * day + 1000, 2_900_000 * day, 97 * day + 3_601_001_000):
        text = timestamps.to_rfc3339(ns)
        assert timestamps._UTC(text) and timestamps.sqlite_text(text) == timestamps.to_sqlite(ns)
        assert timestamps.postgres_text(text) == timestamps.to_postgres(ns)


def test_postgres_text_of_years_before_one_and_of_many_days():
    assert timestamps.to_postgres(timestamps.parse("0000-12-31T23:00:00.5Z")) == "0001-12-31 23:00:00.5+00 BC"
    assert timestamps.postgres_text("0000-12-31T23:00:00.5Z") is None
    day = timestamps.NS_PER_DAY
    for ns in range(-800 * day + 123_456_789, 40_000 * day, 7 * day + 3_601_000_999):
        y, mo, d, h, mi, s, nanos = timestamps._split(timestamps.round_to_microseconds(ns))
        era = " BC" if y <= 0 else ""
        expected = (f"{y if y > 0 else 1 - y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
                    f"{timestamps._fraction(nanos // 1000, 6)}+00{era}")
        assert timestamps.to_postgres(ns) == expected


@pytest.mark.parametrize("kind, given", [
    (Kind.UUID, "0f17a300-7e62-4a0a-9df9-fd789c653938"), (Kind.UUID, "0F17A300-7E62-4A0A-9DF9-FD789C653938"),
    (Kind.UUID, "0f17a3007e624a0a9df9fd789c653938"), (Kind.UUID, "0f17a300-7e62-4a0a-9df9-fd789c65393"),
    (Kind.UUID, 5), (Kind.UUID, "0f17a300-7e62-4a0a-9df9-fd789c65393g"),
    (Kind.TEXT, "plain"), (Kind.TEXT, "a\x00b"), (Kind.TEXT, "zoë"), (Kind.TEXT, "\ud800"), (Kind.TEXT, 5),
    (Kind.TEXT, "tab\there"), (Kind.BOOL, True), (Kind.BOOL, 0), (Kind.BOOL, " Yes "), (Kind.BOOL, 2),
    (Kind.TIMESTAMP, "2025-07-27T10:11:12.5Z"), (Kind.TIMESTAMP, "2025-02-30T10:11:12Z"), (Kind.TIMESTAMP, 5),
    (Kind.INT, "42"), (Kind.FLOAT, "1e3"), (Kind.BYTES, "aGk="), (Kind.BYTES, "!"),
])
def test_the_per_column_coercer_is_coerce(kind, given):
    for column in (Column("c", kind), Column("c", kind, max_length=3)):
        assert _outcome(values.coercer(column), given) == _outcome(values.coerce, column, given)


def test_a_float_too_long_for_a_double_is_called_that_not_nan():
    column = Column("page_dpi", Kind.FLOAT)
    with pytest.raises(ValueError, match="number too large for a float column"):
        values.coerce(column, float("1" * 400 + ".5"))  # what the JSON decoder makes of 400 digits
    with pytest.raises(ValueError, match="NaN and infinities are not allowed"):
        values.coerce(column, "inf")


PLAIN_CANDIDATES = ["plain", "", "tab\there", "back\\slash", "new\nline", "zoë", "a\x00b", "\x7f\x01", "~[]{}",
                    "abcd", "0f17a300-7e62-4a0a-9df9-fd789c653938", "0F17A300-7E62-4A0A-9DF9-FD789C653938",
                    "0f17a3007e624a0a9df9fd789c653938", "\ud800", "x" * 300]


@pytest.mark.parametrize("kind", [Kind.TEXT, Kind.UUID])
def test_strings_taken_as_they_are_are_what_coerce_gives(kind):
    # RowConverter inlines `plain` (a string that is its own value) before calling the coercer.
    from aviarytools.db.postgres import _copy_field, _copy_text
    for column in (Column("c", kind), Column("c", kind, max_length=4)):
        internal, copy = values.coercer(column), _copy_field(column, {})
        for text in PLAIN_CANDIDATES:
            expected = _outcome(values.coerce, column, text)
            assert _outcome(internal, text) == expected
            assert _outcome(copy, text) == (expected if not isinstance(expected, str) else _copy_text(expected))
            for function in (internal, copy):
                if function.plain(text):
                    assert function(text) == text
