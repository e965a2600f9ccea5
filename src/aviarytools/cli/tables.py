"""aviary tables: every table with its row count."""

import json

import click

from .. import rows
from ..query import EVERYTHING
from .common import closing, db_option, open_db, stdout_binary


@click.command("tables")
@db_option
def command(db_url):
    """List the database's tables as NDJSON: {"table": ..., "rows": ...}.

    \b
      aviary tables | jq -r 'select(.rows > 0) | .table'
    """
    with closing(open_db(db_url)) as db, db.snapshot():
        lines = (
            json.dumps({"table": name, "rows": db.count(db.table(name), EVERYTHING)}, separators=(",", ":")).encode()
            for name in db.table_names()
        )
        rows.write_lines(lines, stdout_binary())
