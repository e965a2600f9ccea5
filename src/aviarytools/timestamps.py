"""Timestamps as integer nanoseconds since 1970-01-01T00:00:00Z.

Python's datetime stops at microseconds and at year 1, but Aviary's SQLite
databases hold Go's nanoseconds, and a Go zero time (year 1) written with a
positive UTC offset lands in year 0.  An integer count of nanoseconds has
neither limit, and converting between the forms each database wants is
integer arithmetic on a proleptic Gregorian calendar.
"""

import re

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND

_TEXT = re.compile(
    r"(-?\d{4,})-(\d\d)-(\d\d)"
    r"(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d{1,9}))?)?)?"
    r" ?(Z|z|UTC|[+-]\d\d(?::?\d\d(?::?\d\d)?)?)?"
    r"(?: [A-Z]{3,5})?"
)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) that is `days` days after 1970-01-01."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    mp = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def _offset_seconds(text: str | None) -> int:
    if text is None or text in ("Z", "z", "UTC"):
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"bad UTC offset {text!r}")
    return sign * (hours * 3600 + minutes * 60 + seconds)


# The common forms, UTC with a whole-second clock: canonical rows
# (`2025-07-27T10:11:12.123456789Z`) and Go's SQLite text (`... +00:00`).
# ASCII digits only; anything else takes the general path, which decides.
_CLOCK = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_UTC = re.compile(rf"([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})[T ]{_CLOCK}(?:\.([0-9]{{1,9}}))?(?:Z|\+00:00)").fullmatch
# ... with at most microseconds, from year 1: PostgreSQL takes the same text.
_UTC_MICROS = re.compile(
    rf"((?!0000)[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})[T ]({_CLOCK})(?:\.([0-9]{{1,6}}))?(?:Z|\+00:00)"
).fullmatch
_DAY_SECONDS: dict[str, int] = {}  # "YYYY-MM-DD" of a real date -> its midnight, seconds since the epoch
_FRACTION_SCALE = tuple(10 ** (9 - n) for n in range(10))


def _day_seconds(date: str) -> int | None:
    """Seconds since the epoch of midnight UTC on `date` (`YYYY-MM-DD`), None if no such day."""
    seconds = _DAY_SECONDS.get(date)
    if seconds is None:
        year, month, day = int(date[:4]), int(date[5:7]), int(date[8:10])
        if not 1 <= month <= 12 or civil_from_days(days_from_civil(year, month, day))[2] != day:
            return None
        if len(_DAY_SECONDS) >= 8192:  # a cache of days, not of every row
            _DAY_SECONDS.clear()
        seconds = _DAY_SECONDS[date] = days_from_civil(year, month, day) * 86400
    return seconds


def parse(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339, SQLite or PostgreSQL timestamp.

    Accepts `2025-07-27T10:11:12.123456789Z`, `2025-07-27 10:11:12+00:00`,
    `2025-07-27 10:11:12.5+13:45`, `0001-01-01 00:00:00+00:00`, a bare date;
    text without an offset is UTC.  Raises ValueError saying why otherwise.
    """
    match = _UTC(text)
    if match is not None:
        date, fraction = match.groups()
        midnight = _DAY_SECONDS.get(date)
        if midnight is None:
            midnight = _day_seconds(date)
        if midnight is not None:
            ns = (midnight + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])) * NS_PER_SECOND
            return ns if fraction is None else ns + int(fraction) * _FRACTION_SCALE[len(fraction)]
    return _parse_general(text)


def _parse_general(text: str) -> int:
    match = _TEXT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a timestamp: {_clip(text)!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    year, month, day = int(year), int(month), int(day)
    hour, minute, second = int(hour or 0), int(minute or 0), int(second or 0)
    if not 1 <= month <= 12 or civil_from_days(days_from_civil(year, month, day))[2] != day:
        raise ValueError(f"no such date: {_clip(text)!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"no such time of day: {_clip(text)!r}")
    nanos = int((fraction or "0").ljust(9, "0"))
    seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return (seconds - _offset_seconds(offset)) * NS_PER_SECOND + nanos


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _split(ns: int) -> tuple[int, int, int, int, int, int, int]:
    days, rest = divmod(ns, NS_PER_DAY)
    year, month, day = civil_from_days(days)
    seconds, nanos = divmod(rest, NS_PER_SECOND)
    hour, seconds = divmod(seconds, 3600)
    minute, second = divmod(seconds, 60)
    return year, month, day, hour, minute, second, nanos


def _fraction(nanos: int, digits: int = 9) -> str:
    if not nanos:
        return ""
    return "." + str(nanos).rjust(digits, "0").rstrip("0")


def _year(year: int) -> str:
    return f"{year:04d}" if year >= 0 else f"-{-year:04d}"


def to_rfc3339(ns: int) -> str:
    """The canonical form: UTC, `Z`, the stored fraction without trailing zeros."""
    year, month, day, hour, minute, second, nanos = _split(ns)
    return (
        f"{_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        f"{_fraction(nanos)}Z"
    )


def to_sqlite(ns: int) -> str:
    """The text Go's SQLite driver writes: `2025-07-27 10:11:12.123456789+00:00`."""
    year, month, day, hour, minute, second, nanos = _split(ns)
    return (
        f"{_year(year)}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
        f"{_fraction(nanos)}+00:00"
    )


def sqlite_text(text: str) -> str | None:
    """to_sqlite(parse(text)) without the arithmetic, for UTC text in the
    common forms; None for anything else (the caller takes the general path)."""
    match = _UTC(text)
    if match is not None:
        date, fraction = match.groups()
        if date in _DAY_SECONDS or _day_seconds(date) is not None:
            fraction = fraction.rstrip("0") if fraction else ""
            return f"{date} {text[11:19]}{'.' if fraction else ''}{fraction}+00:00"
    return None


def round_to_microseconds(ns: int) -> int:
    """`ns` rounded half to even at the microsecond, as PostgreSQL keeps it."""
    micros, rest = divmod(ns, 1000)
    if rest > 500 or (rest == 500 and micros % 2):
        micros += 1
    return micros * 1000


def to_postgres(ns: int) -> str:
    """PostgreSQL timestamptz input text, rounded to microseconds, in UTC.

    Years before 1 AD are written the way PostgreSQL reads them (`... BC`).
    """
    days, rest = divmod(round_to_microseconds(ns), NS_PER_DAY)
    date = _POSTGRES_DATES.get(days)
    if date is None:
        year, month, day = civil_from_days(days)
        era = ""
        if year <= 0:
            year, era = 1 - year, " BC"
        if len(_POSTGRES_DATES) >= 8192:
            _POSTGRES_DATES.clear()
        date = _POSTGRES_DATES[days] = (f"{year:04d}-{month:02d}-{day:02d} ", era)
    seconds, nanos = divmod(rest, NS_PER_SECOND)
    hour, seconds = divmod(seconds, 3600)
    minute, second = divmod(seconds, 60)
    return f"{date[0]}{hour:02d}:{minute:02d}:{second:02d}{_fraction(nanos // 1000, 6)}+00{date[1]}"


_POSTGRES_DATES: dict[int, tuple[str, str]] = {}  # day -> ("YYYY-MM-DD ", era) as to_postgres writes them


def postgres_text(text: str) -> str | None:
    """to_postgres(parse(text)) without the arithmetic, where that is plain:
    UTC text in the common forms with at most microseconds and a year from 1.
    None for anything else (the caller takes the general path)."""
    match = _UTC_MICROS(text)
    if match is not None:
        date, clock, fraction = match.groups()
        if date in _DAY_SECONDS or _day_seconds(date) is not None:
            fraction = fraction.rstrip("0") if fraction else ""
            return f"{date} {clock}{'.' if fraction else ''}{fraction}+00"
    return None


# -- durations (verify --max-age) -------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": ("second", 1), "m": ("minute", 60), "h": ("hour", 3600), "d": ("day", 86_400),
          "w": ("week", 604_800)}


class Duration:
    """A span of time as a person gave it (`26h`, `90m`, `7d`), and said back in their unit."""

    def __init__(self, text: str):
        match = _DURATION.fullmatch(text.strip())
        if not match:
            raise ValueError(f"{text!r}: expected a duration like 26h, 90m or 7d")
        self.number, self.unit = float(match.group(1)), match.group(2)
        self.seconds = self.number * _UNITS[self.unit][1]

    def __str__(self) -> str:
        name = _UNITS[self.unit][0]
        return f"{self.number:g} {name}" + ("" if self.number == 1 else "s")

    def describe(self, seconds: float) -> str:
        """`seconds` in this duration's unit, or a larger one where it is at least two of
        those: `30.2 hours` beside a limit of 26 hours, `400.1 days` rather than 9,602 hours."""
        unit = max((u for u in "smhd" if seconds >= 2 * _UNITS[u][1]), key=lambda u: _UNITS[u][1], default="s")
        name, size = max(_UNITS[unit], _UNITS[self.unit], key=lambda named: named[1])
        return f"{seconds / size:.1f} {name}s"
