"""aviary info: an archive's metadata, reading only its first member (where it is)."""

import json

import click

from ..archive.inspect import info
from .common import archive_argument, input_name, warn


@click.command("info")
@archive_argument
def command(archive):
    """Print ARCHIVE's metadata.json ({archive}; reads only the first member, where it is).

    Aviary v1.4.0 to v1.5.3 wrote metadata.json last: the whole archive is
    then read to find it, and a warning says so.

    \b
      aviary info < aviary.tar | jq .export_timestamp
    """
    click.echo(json.dumps(info(archive, input_name(archive), warn), indent=2, ensure_ascii=False))
