"""aviary info: an archive's metadata, reading only its first member."""

import json

import click

from ..archive.inspect import info
from .common import archive_argument, input_name


@click.command("info")
@archive_argument
def command(archive):
    """Print ARCHIVE's metadata.json (reads only the first member).

    \b
      aviary info < aviary.tar | jq .export_timestamp
    """
    click.echo(json.dumps(info(archive, input_name(archive)), indent=2, ensure_ascii=False))
