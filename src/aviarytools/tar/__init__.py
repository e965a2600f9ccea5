"""The tar layer: one tar stream out, one tar stream in, never staged on disk."""

from aviarytools.tar.checksums import (
    CHECKSUMS_NAME,
    format_line,
    parse_checksums,
    parse_line,
)
from aviarytools.tar.compression import GunzipReader, GzipWriter, gzip_output, open_input
from aviarytools.tar.reader import (
    Member,
    NameSet,
    member_name_problem,
    name_problem,
    read_members,
)
from aviarytools.tar.writer import TarWriter

__all__ = [
    "CHECKSUMS_NAME",
    "GunzipReader",
    "GzipWriter",
    "Member",
    "NameSet",
    "TarWriter",
    "format_line",
    "gzip_output",
    "member_name_problem",
    "name_problem",
    "open_input",
    "parse_checksums",
    "parse_line",
    "read_members",
]
