"""aviary info: an archive's metadata, reading only its first member (where it is)."""

import json

import click

from ..archive.inspect import info
from ..tar.compression import GZIP, sniff
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
    compression, stream = sniff(archive)
    click.echo(json.dumps(info(stream, input_name(archive), warn), indent=2, ensure_ascii=False))
    if compression is not None and compression is not GZIP:
        warn(f"{compression.described}: Aviary's admin page reads only gzip archives"
             f" (pack -z, or '{compression.decode} | gzip')")
