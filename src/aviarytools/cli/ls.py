"""aviary ls: the members of an archive as NDJSON."""

import json

import click

from .. import rows
from ..archive.inspect import listing
from .common import archive_argument, input_name, stdout_binary


@click.command("ls")
@archive_argument
def command(archive):
    """List ARCHIVE's members ({archive}), one JSON object per line.

    Each line: path, type, size, mtime.

    \b
      aviary ls < aviary.tar | jq -r 'select(.type == "file") | .path'
    """
    lines = (json.dumps(m, ensure_ascii=False).encode() for m in listing(archive, input_name(archive)))
    rows.write_lines(lines, stdout_binary())
