"""The `aviary` command: one small module per subcommand over the library."""

import click

from .. import __version__
from . import cat, doctor, dump_table, info, init_schema, load_table, ls, pack, tables, unpack, verify
from .common import Group, run_main

COMMANDS = (dump_table, load_table, tables, init_schema, pack, unpack, verify, ls, cat, info, doctor)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


for module in COMMANDS:
    cli.add_command(module.command)


def main() -> None:
    run_main(cli)
