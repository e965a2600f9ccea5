"""Which rows of a table a command reads: --columns, --user, --where, --limit."""

from dataclasses import dataclass

from .model import ForeignKey


@dataclass(frozen=True)
class Query:
    columns: tuple[str, ...] | None = None  # None: every column, in table order
    user_ids: tuple[str, ...] | None = None  # canonical uuids; None: every user
    where: str | None = None  # an SQL condition, as the operator wrote it
    limit: int | None = None
    redact: frozenset[str] = frozenset()  # columns written as "" (or null where allowed)
    # References held against their parent rows (pack): a row whose reference names no
    # parent row is left out where the reference cascades (Aviary's cascade would have
    # deleted it), else the reference reads as null (as Aviary's own restore sets it).
    parents: tuple[ForeignKey, ...] = ()


EVERYTHING = Query()


def quote_ident(name: str) -> str:
    """An SQL identifier, quoted so that any name is taken literally."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
