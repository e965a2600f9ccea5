"""Rows arriving as newline-delimited JSON or as one JSON array.

The first non-space byte decides: `[` is an array (an Aviary
`database/<table>.json`, streamed with ijson, never loaded whole), `null` is
Aviary's way of writing an empty table, anything else is NDJSON.  Each row
comes with its position, so errors can say `line 12` or `item 12`.
"""

import json
from typing import BinaryIO, Iterator

import ijson

from .errors import InputError

MAX_LINE_BYTES = 16 * 1024 * 1024


def ijson_reason(error: Exception) -> str:
    """ijson's complaint on one line (yajl's spans three, sometimes as bytes)."""
    reason = error.args[0] if error.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    lines = str(reason).strip().splitlines()
    return lines[0].strip() if lines else "incomplete JSON"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
_scan = _decoder.scan_once  # raw_decode without its checks, for the common case


def _skip_space(stream: BinaryIO) -> tuple[bytes, int]:
    """The first non-whitespace byte (left unread) and the newlines skipped."""
    newlines = 0
    while True:
        head = stream.peek(1)
        if not head:
            return b"", newlines
        stripped = head.lstrip(b" \t\r\n")
        skipped = stream.read(len(head) - len(stripped))
        newlines += skipped.count(b"\n")
        if stripped:
            return stripped[:1], newlines


class RowSource:
    """An iterator of (position, row) read from a binary stream."""

    def __init__(self, stream: BinaryIO, name: str = "-"):
        if not hasattr(stream, "peek"):
            import io

            stream = io.BufferedReader(stream, 1 << 16)
        self.stream = stream
        self.name = name
        first, self.first_line = _skip_space(stream)
        self.is_array = first == b"["
        self.is_null = first == b"n"
        self.unit = "item" if self.is_array else "line"

    def where(self, position: int) -> str:
        prefix = "" if self.name in ("-", "") else f"{self.name}: "
        return f"{prefix}{self.unit} {position}"

    def __iter__(self) -> Iterator[tuple[int, object]]:
        if self.is_null:
            return self._null()
        return self._array() if self.is_array else self._lines()

    def _null(self):
        if self.stream.read().strip() != b"null":
            raise InputError(f"{self.where(1)}: expected a JSON array, an object per line, or null")
        return iter(())

    def _lines(self) -> Iterator[tuple[int, object]]:
        number = self.first_line
        while True:
            raw = self.stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"{self.where(number)}: line longer than {MAX_LINE_BYTES >> 20} MiB")
            if raw.isspace():
                continue
            yield number, self._decode(raw, number)

    def _decode(self, raw: bytes, number: int) -> object:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{self.where(number)}: invalid UTF-8 at byte {e.start + 1}") from None
        if text[:1] == "{":  # the common line, `{...}\n`, parsed with no copies
            try:
                value, end = _scan(text, 0)
            except (StopIteration, ValueError, RecursionError):
                pass  # said below
            else:
                if end == len(text) - 1 and text[end] == "\n":
                    return value
        try:
            value, end = _decoder.raw_decode(text, len(text) - len(text.lstrip()))
        except json.JSONDecodeError as e:
            raise InputError(f"{self.where(number)}: invalid JSON at character {e.colno}: {e.msg}") from None
        except ValueError as e:
            raise InputError(f"{self.where(number)}: {e}") from None
        except RecursionError:
            raise InputError(f"{self.where(number)}: JSON nested too deeply") from None
        if text[end:].strip():
            raise InputError(
                f"{self.where(number)}: invalid JSON at character {end + 1}: extra data after the row"
            )
        return value

    def _array(self) -> Iterator[tuple[int, object]]:
        number = 0
        try:
            for number, row in enumerate(ijson.items(self.stream, "item", use_float=True), 1):
                yield number, row
        except ijson.JSONError as e:
            raise InputError(f"{self.where(number + 1)}: invalid JSON: {ijson_reason(e)}") from None
        except UnicodeDecodeError as e:
            raise InputError(f"{self.where(number + 1)}: invalid UTF-8 ({e.reason})") from None
        except RecursionError:
            raise InputError(f"{self.where(number + 1)}: JSON nested too deeply") from None
