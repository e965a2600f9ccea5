"""What a table looks like to aviarytools: columns with a logical kind.

Both databases are described in these terms, whether the description comes
from introspecting a live database or from Aviary's own models (schema.py).
"""

from dataclasses import dataclass, field
from enum import Enum


class Kind(str, Enum):
    """How a column's values are written in a canonical row."""

    UUID = "uuid"
    TEXT = "text"
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    TIMESTAMP = "timestamp"
    BYTES = "bytes"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = True
    max_length: int | None = None  # characters, where the database enforces it
    int_bits: int = 64
    default_sql: str | None = None  # the column's DEFAULT, as SQL text
    declared: str | None = None  # the SQL type the database declares, for the reader
    # A default recorded in an archive that has no portable form (declared.py): never executed.
    source_default: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete_cascade: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[tuple[str, ...], ...] = field(default=())  # plain (not unique) indexes

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def has_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    def project(self, names: tuple[str, ...]) -> "Table":
        """The same table seen through only `names`, in that order."""
        return Table(self.name, tuple(self.column(n) for n in names), self.primary_key)
