"""The manual holds to the commands: every page's OPTIONS section names exactly the options
`--help` shows, each with the same metavar (as sqlite-utils keeps its docs true to --help)."""

import shlex
from pathlib import Path

import click
import pytest

from aviarytools.cli import COMMANDS, cli

MAN = Path(__file__).resolve().parent.parent / "man"
_ESCAPES = [(r"\-", "-"), (r"\fR", ""), (r"\fI", ""), (r"\fB", ""), (r"\fP", ""), (r"\&", ""),
            (r"\(aq", "'"), (r"\e", "\\")]


def roff_text(line: str) -> str:
    """What a font macro line (.B, .BI, .BR, .I, .IR) prints, as plain text."""
    macro, _, rest = line.partition(" ")
    words = shlex.split(rest.replace("\\", "\\\\"), posix=True)
    text = ("" if macro in (".BI", ".BR", ".IB", ".IR", ".RB", ".RI") else " ").join(words)
    for escape, plain in _ESCAPES:
        text = text.replace(escape, plain)
    return text


def documented(page: Path) -> dict[str, str | None]:
    """option name -> the metavar the OPTIONS section gives it (None for a flag)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    start = lines.index(".SH OPTIONS")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(".SH "))
    found = {}
    for i in range(start, end):
        if lines[i] != ".TP":
            continue
        # "-o, --output FILE", "--progress, --no-progress", "--s3-region NAME, --s3-path-style"
        following = None
        for entry in reversed(roff_text(lines[i + 1]).split(", ")):
            name, _, metavar = entry.strip().partition(" ")
            assert name.startswith("-"), (page.name, entry)
            if not metavar and not name.startswith("--"):
                metavar = following  # a short alias takes the metavar of the long name after it
            found[name] = metavar or None
            following = metavar or None
    return found


def declared(command: click.Command) -> dict[str, str | None]:
    """option name -> its metavar as --help shows it (None for a flag)."""
    found = {"-h": None, "--help": None}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if param.is_flag:
            metavar = None
        elif isinstance(param.type, click.Choice):
            metavar = "|".join(param.type.choices)
        else:
            metavar = param.metavar
        for name in (*param.opts, *param.secondary_opts):
            found[name] = metavar
    return found


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_options_section_is_the_commands_options(name):
    command = cli.get_command(click.Context(cli), name)
    assert documented(MAN / f"aviary-{name}.1") == declared(command)


def test_every_command_has_its_page_and_the_main_page_names_it():
    main = (MAN / "aviary.1").read_text(encoding="utf-8")
    for name in COMMANDS:
        assert (MAN / f"aviary-{name}.1").exists()
        assert "aviary\\-" + name.replace("-", "\\-") in main, name
