"""The `aviary` command: one small module per subcommand over the library."""

import click

from .. import __version__, startup
from .common import Group, run_main

# Each command's module, imported only when the command runs (or --help lists them).
COMMANDS = {
    "dump-table": ".dump_table",
    "load-table": ".load_table",
    "tables": ".tables",
    "init-schema": ".init_schema",
    "pack": ".pack",
    "unpack": ".unpack",
    "verify": ".verify",
    "ls": ".ls",
    "cat": ".cat",
    "info": ".info",
    "doctor": ".doctor",
}


@click.group(cls=Group, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aviary")
def cli():
    """Back up, restore and migrate Aviary with composable streams.

    Rows travel as newline-delimited JSON, installations as tar streams, so
    backups, restores and migrations are pipelines:

    \b
      aviary dump-table users | jq -c 'select(.is_admin)'
      aviary dump-table documents --db a.db | aviary load-table documents --db postgresql://...

    See aviary(1) and aviary-COMMAND(1).
    """


def main() -> None:
    startup.pause()  # until the command runs (the command's module imported): see startup.py
    run_main(cli)
