"""The suite holds to the command-line surface, as test_man_pages.py holds the manual: every
option of every command runs end to end, in an `aviary` process, in at least one test.

Every `aviary` command a test starts records the options given on its command line
(cli_surface/sitecustomize.py, set up by conftest.py).  These tests run last and, when the
whole suite ran (`make test`), fail naming each option that no test gave.  An option added
without a test that runs it fails here by name: `unpack --no-files` would have."""

import json

import click
import pytest

from aviarytools.cli import COMMANDS, cli
from helpers import aviary


def options_of(command: click.Command) -> dict[str, str]:
    """param name -> how --help names it (`--progress/--no-progress`)."""
    return {p.name: "/".join((*p.opts, *p.secondary_opts)) for p in command.params if isinstance(p, click.Option)}


def ran(log: str, name: str) -> set[str]:
    with open(log, encoding="utf-8") as lines:
        return {param for line in lines for param in json.loads(line)["params"]
                if json.loads(line)["command"] == name}


def test_a_command_records_the_options_it_was_given(request, tmp_path):
    aviary("tables", "--db", tmp_path / "none.db")
    with open(request.config.cli_surface["log"], encoding="utf-8") as lines:
        assert {"command": "tables", "params": ["db_url"]} in [json.loads(line) for line in lines]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_runs_in_a_test(name, request):
    surface = request.config.cli_surface
    if not surface["whole"]:
        pytest.skip("holds the whole suite only (make test): run with every test file, nothing deselected")
    command = cli.get_command(click.Context(cli), name)
    given = ran(surface["log"], name)
    missing = [shown for param, shown in options_of(command).items() if param not in given]
    assert not missing, (f"aviary {name}: no test runs {', '.join(missing)}: add a test that runs"
                         f" `aviary {name} {missing[0].split('/')[0]} ...` end to end (tests/test_cli_surface.py)")
