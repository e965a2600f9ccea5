"""The checksums.xxh128 member: one XXH128 digest per regular member.

Lines are written the way `xxhsum -H2` prints them (GNU style), so that after
a plain `tar -x`, `xxhsum -c checksums.xxh128` checks every file:

    <32 hex digits><space><space><path>

Names holding a newline or carriage return cannot sit on one line.  xxhsum
0.8.2 and later escape such a line: it starts with a backslash, and in the
path `\\n`, `\\r` and `\\\\` stand for newline, carriage return and backslash.
We do the same.  A name with a backslash but no line break is written as it
is: xxhsum 0.8.1 (Debian 12) cannot read escaped lines but checks such a name
fine, and newer versions read an unescaped line literally too.

Reading accepts that format, the binary marker `<hex> *<path>`, and the BSD
style `xxhsum --tag` prints: `XXH128 (<path>) = <hex>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from aviarytools.errors import ArchiveError

CHECKSUMS_NAME = "checksums.xxh128"
# xxhsum itself stops at 32 KiB; a path is at most 4096 bytes.
MAX_LINE = 64 * 1024

_HEX = re.compile(r"[0-9a-f]{32}")
_BSD = re.compile(r"XXH128 \((?P<name>.*)\) = (?P<digest>[0-9a-fA-F]{32})")
_GNU = re.compile(r"(?P<digest>[0-9a-fA-F]{32}) [ *](?P<name>.*)")
_ESCAPES = {"n": "\n", "r": "\r", "\\": "\\"}
_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)


def format_line(digest: str, name: str) -> str:
    """One GNU-style line, newline included, as `xxhsum -H2` prints it."""
    if not _HEX.fullmatch(digest):
        raise ValueError(f"not an XXH128 hex digest: {digest!r}")
    if "\n" in name or "\r" in name:
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}\n"
    return f"{digest}  {name}\n"


def parse_line(line: str, lineno: int, *, source: str = CHECKSUMS_NAME) -> tuple[str, str]:
    """(digest in lower case, path) from one line without its line break."""
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    match = _GNU.fullmatch(body) or _BSD.fullmatch(body)
    if not match or not match["name"]:
        raise ArchiveError(f"{source} line {lineno}: not an XXH128 checksum line: {line[:80]!r}")
    name = match["name"]
    if escaped:
        name = _unescape(name, lineno, source)
    return match["digest"].lower(), name


def parse_checksums(
    chunks: Iterable[bytes], *, source: str = CHECKSUMS_NAME
) -> Iterator[tuple[str, str]]:
    """(digest, path) for every line of a checksums file given as byte chunks.

    Empty lines and `#` comments are skipped; only one line is held at a time.
    """
    for lineno, raw in enumerate(_lines(chunks, source), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(f"{source} line {lineno}: not valid UTF-8") from None
        # A name really ending in CR is escaped, so a bare CR here is a CRLF file.
        line = line.removesuffix("\r")
        if line and not line.startswith("#"):
            yield parse_line(line, lineno, source=source)


def _lines(chunks: Iterable[bytes], source: str) -> Iterator[bytes]:
    rest = b""
    lineno = 1
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        lineno += len(lines)
        if len(rest) > MAX_LINE:
            raise ArchiveError(f"{source} line {lineno}: longer than {MAX_LINE} bytes")
        yield from lines
    if rest:
        yield rest


def _unescape(name: str, lineno: int, source: str) -> str:
    def one(match: re.Match) -> str:
        if match[1] not in _ESCAPES:
            raise ArchiveError(f"{source} line {lineno}: bad escape in path {name[:80]!r}")
        return _ESCAPES[match[1]]

    return _ESCAPE.sub(one, name)
