"""A chain of archives: a level 0 and the incrementals after it (pack -g), in order.

Each archive's metadata.json says where it stands (aviarytools.incremental:
its id, level, parent and base).  A chain fits when its first archive is a
level 0, each next one's parent is the one before it (no gap, none out of
order or twice), all share one base (not another installation's or another
chain's), and all were packed for the same selection (--user or not).
Differentials fit too: a level 0 and the latest level 1 (whose parent is the
level 0).  `verify BASE INC...` checks the links here; so can a restore of a
chain, before it writes anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ArchiveError, AviaryError


class ChainError(AviaryError):
    """The archives given do not make one chain: the message names the first link that does not fit."""


@dataclass(frozen=True)
class Link:
    """One archive's place in its chain, as its metadata.json records it."""

    source: str  # the archive's name, as given
    archive: str
    level: int
    parent: str | None
    base: str
    users_only: bool

    def __str__(self) -> str:
        return f"{self.source} (archive {self.archive}, level {self.level})"


def link_of(metadata: dict, source: str) -> Link:
    """The Link of an archive from its metadata.json; ChainError if it is not of pack -g."""
    ours = metadata.get("aviarytools") if isinstance(metadata, dict) else None
    found = ours.get("incremental") if isinstance(ours, dict) else None
    if not isinstance(found, dict) or not isinstance(found.get("archive"), str) \
            or type(found.get("level")) is not int or not isinstance(found.get("base"), str):
        raise ChainError(f"{source}: not an archive of pack -g (no aviarytools.incremental in metadata.json):"
                         " a chain is a level 0 and the incrementals after it")
    parent = found.get("parent")
    return Link(source, found["archive"], found["level"], parent if isinstance(parent, str) else None,
                found["base"], bool(ours.get("users_only")))


def read_link(path: str) -> Link | None:
    """The Link of the archive file at `path`, reading only its metadata.json (None if that
    cannot be read: the full check of the archive says why)."""
    try:
        return file_link(path)[0]
    except ArchiveError:
        return None


def is_file(name: str) -> bool:
    """Whether the archive named so is a regular file, whose metadata.json can be read ahead (not
    `-`, nor a pipe such as bash's `<(ssh host cat x.tar)`, which can be read once only)."""
    return name != "-" and os.path.isfile(name)


def file_link(path: str) -> tuple[Link, dict]:
    """The Link of the archive file at `path` and its metadata.json, reading only that;
    ArchiveError or ChainError saying why not."""
    from .inspect import info

    try:
        with open(path, "rb") as file:
            metadata = info(file, path)
    except OSError as e:
        raise ArchiveError(f"{path}: {e.strerror or e}") from None
    except ArchiveError as e:
        raise ArchiveError(str(e) if str(e).startswith(path) else f"{path}: {e}") from None
    return link_of(metadata, path), metadata


class Chain:
    """The links seen so far; add() refuses the first that does not fit."""

    def __init__(self):
        self.links: list[Link] = []

    def add(self, link: Link) -> None:
        problem = self._misfit(link)
        if problem:
            raise ChainError(f"{link}: {problem}")
        self.links.append(link)

    def _misfit(self, link: Link) -> str | None:
        if not self.links:
            if link.level != 0 or link.parent is not None:
                return (f"a chain starts with its level 0; expected first the level 0 {link.base}"
                        " (this archive's base)")
            return None
        first, before = self.links[0], self.links[-1]
        if link.base != first.base:
            return (f"of the chain whose level 0 is {link.base}, expected {first.base} ({first.source}'s):"
                    " an archive of another chain or installation")
        if link.users_only != first.users_only:
            packed = "with --user" if link.users_only else "without --user"
            return f"packed {packed}, unlike {first.source}: one chain per selection"
        if any(seen.archive == link.archive for seen in self.links):
            return "given twice"
        earlier = next((seen for seen in self.links[:-1] if seen.archive == link.parent), None)
        if earlier is not None:
            return (f"follows archive {link.parent} ({earlier.source}), expected {before.archive} ({before.source}):"
                    " two archives follow the same one (differentials: give the level 0 and the latest level 1)")
        if link.parent != before.archive:
            why = "out of order" if link.level <= before.level else "an archive missing between them, or out of order"
            return f"follows archive {link.parent}, expected {before.archive} ({before.source}): {why}"
        return None

    @property
    def last(self) -> Link | None:
        return self.links[-1] if self.links else None


def check(links: list[Link]) -> Chain:
    """The chain the links make, in order; ChainError naming the first that does not fit."""
    chain = Chain()
    for link in links:
        chain.add(link)
    return chain
