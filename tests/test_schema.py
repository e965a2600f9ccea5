"""The built-in schema (schema.py) held to the column table of the format notes (as the project
carries it, tests/aviary_facts.json), column by column: the notes are read from Aviary's own
source, our schema is not."""

import pytest

import format_notes
from aviarytools import schema

NOTED = format_notes.read_tables()
DATA_TABLES = [name for name in NOTED if name not in schema.TRANSIENT]


def test_the_notes_name_every_table_we_know_and_no_other():
    assert set(NOTED) == set(schema.BY_NAME)
    assert not [t.prose for t in NOTED.values() if t.name not in schema.TRANSIENT and t.prose]


@pytest.mark.parametrize("name", DATA_TABLES)
def test_every_column_as_the_notes_declare_it(name):
    noted, ours = NOTED[name], schema.BY_NAME[name]
    expected = [(c.name, c.kind, not (c.not_null or c.primary_key), c.default, c.size) for c in noted.columns]
    actual = [(c.name, c.kind.value, c.nullable, c.default_sql, c.max_length) for c in ours.columns]
    assert actual == expected


@pytest.mark.parametrize("name", DATA_TABLES)
def test_keys_and_indexes_as_the_notes_declare_them(name):
    noted, ours = NOTED[name], schema.BY_NAME[name]
    assert ours.primary_key == tuple(c.name for c in noted.columns if c.primary_key)
    assert set(ours.unique) == {(c.name,) for c in noted.columns if c.unique} | set(noted.unique_sets)
    assert set(ours.indexes) == {(c.name,) for c in noted.columns if c.indexed}
    assert {(fk.columns, fk.parent, fk.parent_columns, fk.on_delete_cascade) for fk in ours.foreign_keys} == {
        ((c.name,), *c.references[:1], ("id",), c.references[1]) for c in noted.columns if c.references}


@pytest.mark.parametrize("name", sorted(schema.TRANSIENT))
def test_aviarys_job_tables_have_their_key_and_admin(name):
    noted, ours = NOTED[name], schema.BY_NAME[name]
    assert ours.primary_key == ("id",)
    for column in noted.columns:
        assert ours.column(column.name).kind.value == column.kind
    assert any(fk.columns == ("admin_user_id",) and fk.on_delete_cascade for fk in ours.foreign_keys)


def test_every_secret_the_notes_mark_is_redacted():
    marked = {(t.name, c.name) for t in NOTED.values() for c in t.columns if c.secret}
    redacted = {(table, column) for table, columns in schema.SECRETS.items() for column in columns}
    assert marked <= redacted
