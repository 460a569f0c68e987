"""The view definitions in `sql/*.sql`, loaded by name.

Each file holds one family of views over logical table names. A header line
``-- requires: pairs, labels`` names the tables (or views of other files) the family reads; a
family is created only once everything it requires is registered, so a catalog that holds no
labels yet simply has no label views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from coyo_db.errors import InputError

_REQUIRES = re.compile(r"^--\s*requires:\s*(.*)$", re.MULTILINE)
_PROVIDES = re.compile(
    r"create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+)?(?:view|macro)\s+"
    r"(?:if\s+not\s+exists\s+)?([A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ViewFamily:
    """One `sql/<name>.sql` file: its text, what it needs and what it defines."""

    name: str
    text: str
    requires: frozenset[str]
    provides: tuple[str, ...]


def _parse(name: str, text: str) -> ViewFamily:
    requires: set[str] = set()
    for line in _REQUIRES.findall(text):
        requires.update(part.strip() for part in line.split(",") if part.strip())
    return ViewFamily(name, text, frozenset(requires), tuple(_PROVIDES.findall(text)))


@cache
def view_families() -> tuple[ViewFamily, ...]:
    """Every view family shipped in the package, sorted by file name."""
    root = resources.files("coyo_db.sql")
    files = sorted(p for p in root.iterdir() if p.name.endswith(".sql"))
    return tuple(_parse(p.name.removesuffix(".sql"), p.read_text("utf-8")) for p in files)


def load(name: str) -> str:
    """The text of `sql/<name>.sql`."""
    for family in view_families():
        if family.name == name:
            return family.text
    raise InputError(f"no SQL file named {name!r}")


def creatable(available: set[str]) -> list[ViewFamily]:
    """The families whose requirements are met, in an order where each comes after its needs."""
    have = set(available)
    pending = list(view_families())
    ordered: list[ViewFamily] = []
    progress = True
    while pending and progress:
        progress = False
        for family in list(pending):
            if family.requires <= have:
                ordered.append(family)
                have.update(family.provides)
                pending.remove(family)
                progress = True
    return ordered
