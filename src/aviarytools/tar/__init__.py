"""The tar layer: one tar stream out, one tar stream in, never staged on disk."""

from aviarytools.tar.checksums import (
    CHECKSUMS_NAME,
    format_line,
    parse_checksums,
    parse_line,
)
from aviarytools.tar.compression import (
    FORMATS,
    Format,
    GunzipReader,
    GzipWriter,
    by_suffix,
    compressed_output,
    gzip_output,
    open_input,
    sniff,
)
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
    "FORMATS",
    "Format",
    "GunzipReader",
    "GzipWriter",
    "Member",
    "NameSet",
    "TarWriter",
    "by_suffix",
    "compressed_output",
    "format_line",
    "gzip_output",
    "member_name_problem",
    "name_problem",
    "open_input",
    "parse_checksums",
    "parse_line",
    "sniff",
    "read_members",
]
