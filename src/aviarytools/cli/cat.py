"""aviary cat: one member's bytes, or a table member's rows."""

import click

from .. import rows
from ..archive.inspect import member_chunks, table_rows
from .common import archive_argument, input_name, stdout_binary


@click.command("cat")
@click.argument("member")
@archive_argument
@click.option("--ndjson", is_flag=True, help="A database/<table>.json member as canonical rows, one per line.")
def command(member, archive, ndjson):
    """Write MEMBER of ARCHIVE ({archive}) to stdout.

    \b
      aviary cat metadata.json < aviary.tar | jq .
      gunzip -c aviary.tar.gz | aviary cat database/users.json --ndjson | jq -r .username
    """
    out = stdout_binary()
    if ndjson:
        rows.write_lines(table_rows(archive, member, input_name(archive)), out)
        return
    for chunk in member_chunks(archive, member, input_name(archive)):
        out.write(chunk)
    out.flush()
