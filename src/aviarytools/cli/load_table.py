"""aviary load-table: NDJSON or a JSON array from stdin into a table."""

import click

from .. import rows
from ..db import MODES
from ..rowinput import RowSource
from .common import InputFile, closing, db_option, info, input_name, open_db, user_option, warn


@click.command("load-table")
@click.argument("table")
@click.argument("input", type=InputFile("rows"), default="-")
@db_option
@user_option
@click.option("--mode", type=click.Choice(MODES), default="append", show_default=True,
              help="append: fail on a key conflict; replace: make the table (or the --user "
              "rows) equal to the input; upsert: update rows whose key exists; skip: keep them.")
@click.option("--strict", is_flag=True, help="Unknown columns are an error, not a warning.")
def command(table, input, db_url, users, mode, strict):
    """Load rows into TABLE from INPUT (default: stdin), all or nothing.

    INPUT is newline-delimited JSON or a JSON array (an Aviary
    database/<table>.json loads as it is).  Values are coerced by the target
    column's type: 0/1 and true/false to booleans, any RFC 3339 or SQLite
    datetime text to timestamps.  Any bad row stops the load with
    `line N, column X: why`, and nothing is committed.

    \b
      aviary dump-table documents --db a.db | aviary load-table documents --db postgresql://...
      aviary load-table users --mode upsert < users.ndjson
    """
    source = RowSource(input, input_name(input))
    with closing(open_db(db_url)) as db:
        user_ids = db.user_ids(users) if users else None
        result = rows.load(db, table, source, mode=mode, user_ids=user_ids, strict=strict, warn=warn)
    info(
        f"{table}: {result.written} row(s) written, {result.removed} removed"
        + (f", {result.skipped_users} of other users skipped" if result.skipped_users else "")
    )
