"""Errors a user can act on.

Every command prints an AviaryError as one line on stderr and exits 1.  The
message says where the problem is (file, line, column, member) and never
contains a secret: `redact` scrubs every password or key the process has seen.
"""


class AviaryError(Exception):
    """An error the user can act on: printed as one line, exit status 1."""

    def lines(self) -> list[str]:
        """What is printed: one line, but for a few errors that need more (at most three)."""
        return [str(self)]


class ConfigError(AviaryError):
    """The database or storage location is missing or malformed."""


class DatabaseError(AviaryError):
    """Talking to the database failed."""


class MissingDatabase(DatabaseError):
    """The SQLite file named is not there (and nothing asked to create it)."""


class InputError(AviaryError):
    """A row or document read from the input is invalid."""


class StorageError(AviaryError):
    """Reading or writing documents failed."""


class MissingObject(StorageError):
    """The object is not (or no longer) there."""


class UnreadableObject(StorageError):
    """The object is there but cannot be read (no permission): a pack leaves it out."""


class ArchiveError(AviaryError):
    """The archive is malformed, truncated, corrupt or unsafe."""


_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that no message printed by this process shows it."""
    if value and len(value) >= 3:
        _secrets.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in `text` with ***."""
    from urllib.parse import quote

    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def printable(text: str) -> str:
    """`text` with control characters (a newline or NUL inside a member name) escaped,
    so that one message stays one line on a terminal or in a log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)


def message(text: str) -> str:
    """What may be printed of `text`: no secret, one line."""
    return printable(redact(text))


# The exception a signal handler raised (KeyboardInterrupt for SIGINT, the command's
# Terminated for SIGTERM; cli/common.py installs the handlers).  SQLite swallows one raised
# inside its callbacks (its progress handler, a user-defined function) and reports an error
# of its own instead ("interrupted", "user-defined function raised exception"): the database
# layer raises this one in its place.
_stops: list[BaseException] = []


def stopping(stop: BaseException) -> BaseException:
    """Note `stop`, which a signal handler is about to raise; returns it."""
    _stops[:] = [stop]
    return stop


def stop_requested() -> BaseException | None:
    """The exception a signal raised in this process, if one did."""
    return _stops[0] if _stops else None
