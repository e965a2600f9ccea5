"""SQLite dumps rewrite Go's common UTC text in SQL and leave the rest to Python: both
paths give the same canonical text, or the same refusal, for edge and random timestamps."""

import sqlite3

import pytest

from aviarytools import timestamps
from aviarytools.db.sqlite import _canonical_timestamp, _timestamp_sql
from test_values import EDGE_TIMESTAMPS, _random_timestamps


def as_sqlite(text: str) -> str:
    """The edge cases in the form Aviary's SQLite stores: a space, +00:00."""
    return text.replace("T", " ", 1).replace("Z", "+00:00").replace("z", "+00:00")


def test_the_sql_fast_path_agrees_with_python():
    conn = sqlite3.connect(":memory:")
    took_python = []

    def python(value):
        took_python.append(value)
        try:
            return _canonical_timestamp([], value)
        except ValueError:
            return "refused"

    conn.create_function("aviary_ts", 1, python)
    texts = [as_sqlite(t) for t in EDGE_TIMESTAMPS] + [as_sqlite(t) for t in _random_timestamps(20_000)]
    conn.execute("CREATE TABLE t (c)")
    conn.executemany("INSERT INTO t VALUES (?)", [(t,) for t in texts])
    got = [row[0] for row in conn.execute(f"SELECT {_timestamp_sql('c')} FROM t ORDER BY rowid")]
    assert len(took_python) < len(texts) * 0.9  # the SQL took a good share itself
    for text, sql in zip(texts, got):
        assert sql == python(text), text


@pytest.mark.parametrize("text, canonical", [
    ("2025-07-27 10:11:12+00:00", "2025-07-27T10:11:12Z"),
    ("2025-07-27 10:11:12.120000+00:00", "2025-07-27T10:11:12.12Z"),
    ("2025-07-27 10:11:12.000+00:00", "2025-07-27T10:11:12Z"),
    ("2024-02-29 23:59:59.5+00:00", "2024-02-29T23:59:59.5Z"),
])
def test_common_forms(text, canonical):
    conn = sqlite3.connect(":memory:")
    conn.create_function("aviary_ts", 1, lambda v: timestamps.to_rfc3339(timestamps.parse(v)))
    assert conn.execute(f"SELECT {_timestamp_sql('?1')}", (text,)).fetchone()[0] == canonical


def test_null_and_the_common_forms_never_call_python():
    conn = sqlite3.connect(":memory:")
    took_python = []
    conn.create_function("aviary_ts", 1, lambda v: took_python.append(v) or "python")
    texts = [None, "2025-07-27 10:11:12+00:00", "2025-07-27 10:11:12.123456789+00:00", "2025-02-28 23:59:59.9+00:00",
             "2025-07-27 10:11:12.10+00:00", "2024-02-29 00:00:00+00:00", "2025-07-27 10:11:12"]
    got = [conn.execute(f"SELECT {_timestamp_sql('?1')}", (text,)).fetchone()[0] for text in texts]
    assert got[:4] == [None, "2025-07-27T10:11:12Z", "2025-07-27T10:11:12.123456789Z", "2025-02-28T23:59:59.9Z"]
    # Rare forms: a trailing zero, February 29th, no offset (SQLite's CURRENT_TIMESTAMP).
    assert took_python == texts[4:] and got[4:] == ["python"] * 3
