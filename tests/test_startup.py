"""A command starts with the garbage collector waiting (aviarytools/startup.py): it makes many
objects then and no garbage, botocore's models above all."""

import gc

import pytest

from aviarytools import startup
from aviarytools.storage import open_storage


@pytest.fixture(autouse=True)
def collection_as_it_was():
    yield
    gc.unfreeze()  # what a test froze is collectable again
    gc.enable()


def test_collection_waits_while_a_storage_opens_and_resumes_past_what_it_made(tmp_path):
    assert gc.isenabled()
    with startup.paused():
        assert not gc.isenabled()
        made = [object() for _ in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() >= len(made)
    open_storage(str(tmp_path))  # opens its backend so
    assert gc.isenabled()


def test_during_a_commands_start_opening_a_storage_keeps_collection_paused(tmp_path):
    startup.pause()  # as main() does, until the command runs
    open_storage(str(tmp_path))
    assert not gc.isenabled()
    startup.resume()  # as the command starts
    assert gc.isenabled()
