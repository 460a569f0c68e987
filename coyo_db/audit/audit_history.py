"""Which finished units of an audit still hold their candidates.

An audit's units are done once their candidates are committed with their ledger row, and the
same audit run again skips them. But an audit of the same reference sets under another key (at
another operating point, say) deletes, when it finishes, every candidate of those sets that it
did not write itself. The first audit's ledger rows then name units whose candidates are gone:
skipping them would leave its re-run with no hits. A unit counts as done only when it was
committed after the last such finish, read from the history of ``contamination_candidates``:
each unit's commit carries its ledger fingerprint, each finish its audit key and sets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from coyo_db.catalog import lance_tables, tables

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

FINISH_KEY = "audit_key"  # the property a finish's commit carries (units carry `fingerprint`)
FINISH_SETS = "refsets"


def finish_properties(run_id: str, key: str, refsets: Sequence[str]) -> dict[str, str]:
    """The properties an audit's finish commits with, read back by :func:`units_still_held`."""
    return {"run_id": run_id, FINISH_KEY: key, FINISH_SETS: json.dumps(sorted(refsets))}


def units_still_held(catalog: Catalog, key: str, refsets: Sequence[str]) -> set[str]:
    """Fingerprints of the units of audit `key` committed since another audit of any of
    `refsets` last finished (all of them when none did)."""
    uri = catalog.table_uri(tables.CONTAMINATION_CANDIDATES.name)
    prefix, mine, wanted = f"audit-{key}-", set(), set(refsets)
    for _, props in lance_tables.committed_properties(uri):  # newest first
        fingerprint = props.get("fingerprint")
        if fingerprint is not None:
            if fingerprint.startswith(prefix):
                mine.add(fingerprint)
        elif props.get(FINISH_KEY, key) != key and _touches(props.get(FINISH_SETS), wanted):
            break
    return mine


class HeldUnits:
    """:func:`units_still_held`, read once and only when a unit is found done."""

    def __init__(self, catalog: Catalog, key: str, refsets: Sequence[str]) -> None:
        self.catalog, self.key, self.refsets = catalog, key, refsets
        self.held: set[str] | None = None

    def __contains__(self, fingerprint: str) -> bool:
        if self.held is None:
            self.held = units_still_held(self.catalog, self.key, self.refsets)
        return fingerprint in self.held


def _touches(recorded: str | None, wanted: set[str]) -> bool:
    if recorded is None:  # a finish written before the sets were recorded: assume it did
        return True
    return bool(wanted & set(json.loads(recorded)))
