"""The facts the project carries (tests/aviary_facts.json) say what the format notes say.

The tests check the tool against aviary_facts.json, so that a clone of the repository alone
runs them.  Where the notes sit beside the checkout (../shared/aviary-format.md, as on the
team's machines), the project's copy must match them: when the notes change, write the copy
again (`.venv/bin/python tests/format_notes.py > tests/aviary_facts.json`) and let the tests
say what the tool now gets wrong."""

import pytest

import format_notes


def test_the_projects_facts_say_what_the_notes_say():
    if not format_notes.NOTES.exists():
        pytest.skip(f"{format_notes.NOTES}: no format notes beside the checkout to compare with")
    carried = format_notes.FACTS.read_text(encoding="utf-8")
    noted = format_notes.facts_text(format_notes.facts_of_notes(format_notes.NOTES))
    assert carried == noted, ("tests/aviary_facts.json differs from the format notes: write it again with"
                              " `.venv/bin/python tests/format_notes.py > tests/aviary_facts.json`")


def test_the_facts_hold_what_the_tests_use():
    facts = format_notes.read_facts()
    tables = format_notes.read_tables()
    assert {"users", "api_keys", "user_sessions", "user_folders_cache", "documents", "system_settings",
            "login_attempts"} <= set(tables)
    assert tables["users"].column("conversion_output_format").default == "'epub'"
    assert tables["api_keys"].column("user_id").references == ("users", True)
    assert facts["users_column_releases"]["rmapi_config"] == "v1.6.0"
    assert facts["metadata_fields"][0] == "aviary_version" and facts["metadata_fields"][-1] == "total_api_keys"
    assert facts["metadata_last"] == {"from": "v1.4.0", "to": "v1.5.3", "lacks": ["total_users", "total_api_keys"]}
    assert format_notes.before("v1.6.0", "v1.5.3") and not format_notes.before("v1.5.0", "v1.5.3")
    assert format_notes.before("v1.7.0", "v1.7.0-rc1") and not format_notes.before("v1.7.0-rc1", "v1.7.0")
