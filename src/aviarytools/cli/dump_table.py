"""aviary dump-table: a table as canonical NDJSON on stdout."""

import click

from .. import rows
from ..query import Query
from .common import closing, comma_list, db_option, open_db, stdout_binary, user_option


@click.command("dump-table")
@click.argument("table")
@db_option
@user_option
@click.option("--columns", metavar="A,B", help="Only these columns, in this order.")
@click.option("--where", metavar="SQL", help="Only rows matching this SQL condition.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N rows.")
def command(table, db_url, users, columns, where, limit):
    """Write TABLE's rows to stdout, one canonical JSON object per line.

    Rows come in primary-key order from one consistent snapshot, and are the
    same bytes whichever database they come from: booleans true/false,
    timestamps RFC 3339 in UTC with Z, uuids lowercase, NULL as null.

    \b
      aviary dump-table users | jq -c 'select(.is_admin)'
      aviary dump-table documents --user alice --columns id,document_name
    """
    with closing(open_db(db_url)) as db, db.snapshot():
        query = Query(comma_list(columns), db.user_ids(users) if users else None, where, limit)
        rows.write_lines(rows.dump(db, table, query), stdout_binary())
