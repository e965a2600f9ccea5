"""Aviary's facts as `../shared/aviary-format.md` describes them: an oracle outside our code.

The tests read them from `aviary_facts.json`, beside this module: the project carries the facts
it checks against, so that `make test` runs on a clone alone.  That file is the notes' facts in a
stable form, written by this module from the notes (`python tests/format_notes.py`), and
test_format_facts.py holds it to the notes wherever they sit beside the checkout.

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

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

NOTES = Path(__file__).resolve().parent.parent.parent / "shared" / "aviary-format.md"
FACTS = Path(__file__).resolve().parent / "aviary_facts.json"

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


def read_facts(path: Path = FACTS) -> dict:
    """The facts the project carries (aviary_facts.json), as plain data."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_tables(path: Path = FACTS) -> dict[str, NotedTable]:
    """Every table of the notes' column table, by name (from the facts the project carries)."""
    return {name: _table_of(name, data) for name, data in read_facts(path)["tables"].items()}


def users_column_releases() -> dict[str, str]:
    """users columns that came after v1.4.0 (the first release with a database) -> their release."""
    return read_facts()["users_column_releases"]


def before(release: str, version: str) -> bool:
    """Whether a column of `release` is missing from an Aviary of `version` (v1.5.3 < v1.6.0)."""
    def numbers(v):
        core, _, rc = v.lstrip("v").partition("-rc")
        return (*map(int, core.split(".")), int(rc) if rc else 1 << 30)
    return numbers(version) < numbers(release)


# --- the notes' text read into facts ---------------------------------------------------------


def facts_of_notes(path: Path = NOTES) -> dict:
    """What the tests use of the notes, as plain data (what aviary_facts.json holds)."""
    text = path.read_text(encoding="utf-8")
    old = re.search(r"Archives from (v[\d.]+) to (v[\d.]+) have it LAST\*\*.*?without `(\w+)` and `(\w+)`",
                    text, re.S)
    return {
        "source": "../shared/aviary-format.md: facts read from Aviary's source (v1.9.0)",
        "tables": {name: _data_of(table) for name, table in notes_tables(text).items()},
        "users_column_releases": _column_releases(text),
        "metadata_fields": _metadata_fields(text),
        "metadata_last": {"from": old[1], "to": old[2], "lacks": [old[3], old[4]]},
    }


def _column_releases(text: str) -> dict[str, str]:
    bullet = re.search(r"^- Releases: (.*?)(?=^\S|^- |\Z)", text, re.S | re.M)[1]
    releases = {}
    for part in " ".join(bullet.split()).split(";"):
        match = re.fullmatch(r"\s*([a-z_]+(?:, [a-z_]+)*(?: and [a-z_]+)?) in (v[\d.]+(?:-rc\d+)?)(?: \(.*\))?\.?",
                             part)
        if match:
            for column in re.split(r", | and ", match[1]):
                releases[column] = match[2]
    return releases


def _metadata_fields(text: str) -> list[str]:
    paragraph = re.search(r"^`metadata.json` fields, in this order:(.*?)\n\n", text, re.S | re.M)[1]
    return list(dict.fromkeys(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", paragraph)))


def notes_tables(text: str) -> dict[str, NotedTable]:
    """Every table of the notes' column table, by name."""
    tables: dict[str, NotedTable] = {}
    inside = False
    for line in text.splitlines():
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


def _data_of(table: NotedTable) -> dict:
    """A table as JSON data: each column with only what differs from NotedColumn's defaults."""
    defaults = NotedColumn("", "")
    columns = [{f.name: getattr(c, f.name) for f in dataclasses.fields(c)
                if f.name in ("name", "kind") or getattr(c, f.name) != getattr(defaults, f.name)}
               for c in table.columns]
    return {"columns": columns, "unique_sets": [list(u) for u in table.unique_sets], "prose": table.prose}


def _table_of(name: str, data: dict) -> NotedTable:
    columns = [NotedColumn(**dict(c, references=tuple(c["references"]) if c.get("references") else None))
               for c in data["columns"]]
    return NotedTable(name, columns, [tuple(u) for u in data["unique_sets"]], list(data["prose"]))


def facts_text(facts: dict) -> str:
    """aviary_facts.json's text: indented, each column on a line of its own."""
    text = json.dumps(facts, indent=1, ensure_ascii=False)
    return re.sub(r"\{[^{}]*\}", lambda m: re.sub(r"\n\s*", " ", m[0]), text) + "\n"


if __name__ == "__main__":  # the facts from the notes, to write aviary_facts.json again when they change
    sys.stdout.write(facts_text(facts_of_notes(Path(sys.argv[1]) if len(sys.argv) > 1 else NOTES)))
