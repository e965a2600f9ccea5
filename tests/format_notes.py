"""Aviary's tables as `../shared/aviary-format.md` describes them: an oracle outside our code.

The format notes list every column of every table as the current Aviary source declares it,
one table per row of a markdown table, one `;`-separated item per column:

    id uuid PK; username text NOT NULL unique; is_admin bool (false); ...
    last_used, expires_at timestamps, nullable; user_id uuid NOT NULL (indexed) → users CASCADE

This module reads that text into plain data (no aviarytools types), so the tests can hold
`schema.py` to it and build the DDL GORM would run from it.  A column listed without a kind is
one of GORM's time fields (created_at, updated_at, ...), a timestamp; one with a `→` and no
kind is a uuid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

NOTES = Path(__file__).resolve().parent.parent.parent / "shared" / "aviary-format.md"

KINDS = {"uuid": "uuid", "text": "text", "bool": "bool", "int": "int", "int64": "int",
         "float": "float", "timestamp": "timestamp", "timestamps": "timestamp"}
_ITEM = re.compile(r"(?P<names>[a-z_]+(?:, [a-z_]+)*)(?: (?P<kind>" + "|".join(sorted(KINDS, key=len, reverse=True)) + r"))?(?P<rest>.*)")
_DEFAULT = re.compile(r"'[^']*'|true|false|-?\d+(?:\.\d+)?|CURRENT_TIMESTAMP")
_FOREIGN = re.compile(r"→ (?P<parent>\w+)(?P<cascade> ON DELETE CASCADE| CASCADE)?")
_UNIQUE_SET = re.compile(r"unique \((?P<columns>[a-z_, ]+)\)")


@dataclass
class NotedColumn:
    name: str
    kind: str
    not_null: bool = False
    default: str | None = None  # as SQL text: 'epub', false, 0, CURRENT_TIMESTAMP
    size: int | None = None
    primary_key: bool = False
    unique: bool = False
    indexed: bool = False
    secret: bool = False
    references: tuple[str, bool] | None = None  # (parent table, ON DELETE CASCADE)


@dataclass
class NotedTable:
    name: str
    columns: list[NotedColumn] = field(default_factory=list)
    unique_sets: list[tuple[str, ...]] = field(default_factory=list)
    prose: list[str] = field(default_factory=list)  # items that describe rather than declare

    def column(self, name: str) -> NotedColumn:
        return next(c for c in self.columns if c.name == name)


def read_tables(path: Path = NOTES) -> dict[str, NotedTable]:
    """Every table of the notes' column table, by name."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: the format notes must sit beside the checkout, in ../shared")
    tables: dict[str, NotedTable] = {}
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| table | column:"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if not inside or line.startswith("|---"):
            continue
        names, items = (cell.strip() for cell in line.strip().strip("|").split("|", 1))
        for name in (n.strip() for n in names.split(",")):
            tables[name] = _table(name, items.replace("**", ""))
    return tables


def _table(name: str, items: str) -> NotedTable:
    table = NotedTable(name)
    for item in (i.strip() for i in items.split(";")):
        unique = _UNIQUE_SET.fullmatch(item)
        if unique:
            table.unique_sets.append(tuple(c.strip() for c in unique["columns"].split(",")))
            continue
        columns = _columns(item)
        if columns is None:
            table.prose.append(item)
        else:
            table.columns.extend(columns)
    return table


def _columns(item: str) -> list[NotedColumn] | None:
    """The column(s) one item declares, or None if it is prose."""
    match = _ITEM.fullmatch(item)
    if match is None:
        return None
    rest = match["rest"]
    attributes: dict = {}
    foreign = _FOREIGN.search(rest)
    if foreign:
        attributes["references"] = (foreign["parent"], bool(foreign["cascade"]))
        rest = rest[:foreign.start()] + rest[foreign.end():]
    for note in re.findall(r"\(([^)]*)\)", rest):
        for part in (p.strip() for p in note.split(",")):
            if _DEFAULT.fullmatch(part):
                attributes["default"] = part
            elif part == "indexed":
                attributes["indexed"] = True
            elif part in ("secret", "hash") or part.endswith("a secret"):
                attributes["secret"] = True
            elif part == "no cascade" and "references" in attributes:
                attributes["references"] = (attributes["references"][0], False)
    rest = re.sub(r"\([^)]*\)", "", rest)
    size = re.search(r"\bsize (\d+)", rest)
    if size:
        attributes["size"] = int(size[1])
        rest = rest.replace(size[0], "")
    words = rest.replace(",", " ").replace("NOT NULL", "NOT_NULL").split()
    flags = {"PK": "primary_key", "NOT_NULL": "not_null", "unique": "unique", "nullable": None}
    if any(word not in flags for word in words):
        return None
    for word in words:
        if flags[word]:
            attributes[flags[word]] = True
    kind = KINDS[match["kind"]] if match["kind"] else ("uuid" if "references" in attributes else "timestamp")
    return [NotedColumn(name, kind, **attributes) for name in match["names"].split(", ")]
