"""Column values: coercion from JSON input and the canonical JSON encoding.

A value travels in three forms:
- JSON, as read from input (0/1 or true/false, any timestamp text, ...);
- internal, after `coerce`: bool, int, float, str, bytes, and timestamps as
  integer nanoseconds since the epoch (see timestamps.py);
- canonical JSON text, from `encode`: the same bytes whichever database the
  row came from (the databases produce the same text themselves in SQL, see
  db/sqlite.py and db/postgres.py; tests hold the three to each other).
"""

import base64
import binascii
import json
import math
import re

from . import timestamps
from .model import Column, Kind

MAX_VALUE_BYTES = 8 * 1024 * 1024

_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_TRUE = frozenset(("true", "t", "1", "yes", "y", "on"))
_FALSE = frozenset(("false", "f", "0", "no", "n", "off"))


def describe(value: object) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value if abs(value) < 1e16 else '(huge)'}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _bool(value: object, column: Column) -> bool:
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected a boolean (true/false or 0/1), got {describe(value)}")


def _int(value: object, column: Column) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
        value = int(value)
    if type(value) is not int:
        raise ValueError(f"expected an integer, got {describe(value)}")
    limit = 1 << (column.int_bits - 1)
    if not -limit <= value < limit:
        raise ValueError(f"integer out of range for a {column.int_bits}-bit column")
    return value


def _float(value: object, column: Column) -> float:
    given = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {describe(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {describe(value)}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError("number too large for a float column") from None
    if not math.isfinite(result):
        # JSON has no NaN or Infinity token (the decoder refuses them): a number
        # that became infinite was too long; a string may have spelled "inf".
        if isinstance(given, str) or math.isnan(result):
            raise ValueError("NaN and infinities are not allowed")
        raise ValueError("number too large for a float column")
    return result


def _text(value: object, column: Column) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if len(value) > MAX_VALUE_BYTES // 4 and len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
        raise ValueError(
            f"string of {len(value.encode('utf-8', 'surrogatepass'))} bytes is over the "
            f"{MAX_VALUE_BYTES // (1024 * 1024)} MiB limit for one value"
        )
    if "\x00" in value:
        raise ValueError("strings cannot contain NUL (\\u0000)")
    if column.max_length is not None and len(value) > column.max_length:
        raise ValueError(f"string of {len(value)} characters is longer than {column.max_length}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string is not valid Unicode (lone surrogate)") from None
    return value


def _uuid(value: object, column: Column) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ValueError(f"expected a uuid, got {describe(value)}")
    hex32 = value.replace("-", "").lower()
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def canonical_uuid(value: object) -> str:
    """A uuid as canonical rows write it (lower case, with dashes); ValueError if it is none."""
    return _uuid(value, None)


def _timestamp(value: object, column: Column) -> int:
    if not isinstance(value, str):
        raise ValueError(f"expected a timestamp string, got {describe(value)}")
    return timestamps.parse(value)


def _bytes(value: object, column: Column) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected base64 text, got {describe(value)}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None


_COERCE = {
    Kind.BOOL: _bool,
    Kind.INT: _int,
    Kind.FLOAT: _float,
    Kind.TEXT: _text,
    Kind.UUID: _uuid,
    Kind.TIMESTAMP: _timestamp,
    Kind.BYTES: _bytes,
}


def coerce(column: Column, value: object) -> object:
    """The internal value of a JSON value for `column`; ValueError says why not."""
    if value is None:
        if not column.nullable:
            raise ValueError("cannot be null")
        return None
    return _COERCE[column.kind](value, column)


# Per-column coercers for loading many rows: one call per value, the common
# case first, everything else (and every error) by the functions above, so
# the result is the same.  A coercer may carry `plain`: a test (in C) of
# string values that are their own result, which a caller can make inline.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def text_bound(column: Column) -> int:
    """The most characters of a text value for `column` that can never be over a limit
    when the text is ASCII (one byte each)."""
    return MAX_VALUE_BYTES if column.max_length is None else min(column.max_length, MAX_VALUE_BYTES)


def _string_fast_path(plain, slow, column: Column):
    """A coercer taking a string that `plain` matches as it is, else `slow(value, column)`;
    `.plain` exposes the test to callers that skip coercion for such strings."""
    def coerce(value):
        if type(value) is str and plain(value):
            return value
        return slow(value, column)
    coerce.plain = plain
    return coerce


def coercer(column: Column):
    """`coerce` of a non-null value for one column, as a one-argument function."""
    kind = column.kind
    if kind is Kind.UUID:
        return _string_fast_path(_CANONICAL_UUID, _uuid, column)
    if kind is Kind.TEXT:
        # ASCII without NUL is valid Unicode whose UTF-8 is as long as the text.
        plain = re.compile(f"[\x01-\x7f]{{0,{text_bound(column)}}}").fullmatch
        return _string_fast_path(plain, _text, column)
    if kind is Kind.BOOL:
        def coerce_bool(value):
            if value is True or value is False:
                return value
            return _bool(value, column)
        return coerce_bool
    if kind is Kind.TIMESTAMP:
        parse = timestamps.parse

        def coerce_timestamp(value):
            if type(value) is str:
                return parse(value)
            return _timestamp(value, column)
        return coerce_timestamp
    function = _COERCE[kind]
    return lambda value: function(value, column)


def format_float(value: float) -> str:
    """Shortest round-trip digits, laid out as PostgreSQL's float8 output does.

    Fixed notation when the decimal exponent is in [-4, 15), otherwise
    `d.ddde+XX`; no trailing `.0`.  PostgreSQL's row_to_json produces exactly
    this, so dumps from either database agree byte for byte.
    """
    if not math.isfinite(value):
        raise ValueError("NaN and infinities have no JSON form")
    text = repr(value)
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent or 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0"
    power = point - 1
    if -4 <= power < 15:
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits))
        return f"{sign}{digits[:point]}.{digits[point:]}"
    tail = "." + digits[1:] if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{tail}e{'+' if power >= 0 else '-'}{abs(power):02d}"


def _json_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


_ENCODE = {
    Kind.BOOL: lambda v: "true" if v else "false",
    Kind.INT: str,
    Kind.FLOAT: format_float,
    Kind.TEXT: _json_string,
    Kind.UUID: _json_string,
    Kind.TIMESTAMP: lambda v: '"' + timestamps.to_rfc3339(v) + '"',
    Kind.BYTES: lambda v: '"' + base64.b64encode(v).decode("ascii") + '"',
}


def encode(column: Column, value: object) -> str:
    """The canonical JSON text of an internal value."""
    return "null" if value is None else _ENCODE[column.kind](value)


def encode_untyped(value: object) -> str:
    """The canonical JSON text of a value whose column is not known (floats shortest)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, int):
        return str(value)
    return _json_string(value)


def _int_or_negative_zero(text: str) -> int | float:
    return -0.0 if text == "-0" else int(text)


def reencode_floats(line: bytes) -> bytes:
    """A canonical line whose numbers another engine laid out: floats redone.

    PostgreSQL's float8 output is not always the shortest round-trip form, so
    rows with float columns pass through here; every other value re-encodes
    to the very bytes it had.
    """
    row = json.loads(bytes(line), parse_int=_int_or_negative_zero)
    return ("{" + ",".join(_json_string(k) + ":" + encode_untyped(v) for k, v in row.items()) + "}").encode()


def row_encoder(columns: tuple[Column, ...]):
    """A function turning a tuple of internal values into a canonical JSON line."""
    parts = [(_json_string(c.name) + ":", _ENCODE[c.kind]) for c in columns]

    def encode_row(values) -> str:
        return "{" + ",".join(
            key + ("null" if v is None else enc(v)) for (key, enc), v in zip(parts, values)
        ) + "}"

    return encode_row
