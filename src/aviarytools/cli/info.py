"""aviary info: an archive's metadata, reading only its first member (where it is)."""

import json

import click

from .. import errors
from ..archive import admin_page
from ..archive.inspect import info
from ..tar.compression import sniff
from .common import archive_argument, input_name, warn


@click.command("info")
@archive_argument
def command(archive):
    """Print ARCHIVE's metadata.json ({archive}; reads only the first member, where it is).

    Aviary v1.4.0 to v1.5.3 wrote metadata.json last: the whole archive is
    then read to find it, and a warning says so.

    On stderr, one line says what kind of archive it is and whether
    Aviary's admin page can restore it.

    \b
      aviary info < aviary.tar | jq .export_timestamp
    """
    compression, stream = sniff(archive)
    metadata = info(stream, input_name(archive), warn)
    click.echo(json.dumps(metadata, indent=2, ensure_ascii=False))
    click.echo(f"aviary info: {errors.message(admin_page.describe(metadata, compression))}", err=True)
