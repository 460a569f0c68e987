"""Which finished units of an audit still hold their candidates.

An audit's units are done once their candidates are committed with their ledger row, and the
same audit run again skips them. But an audit of the same reference sets under another key (at
another operating point, say) deletes, when it finishes, every candidate of those sets that it
did not write itself. The first audit's ledger rows then name units whose candidates are gone:
skipping them would leave its re-run with no hits. A unit counts as done only when it was
committed after the last such finish.

A finish that deletes candidates records itself in the ledger of ``contamination_candidates``
like a unit: fingerprint ``finish-<key>-<run_id>``, its sets (as JSON) for ``input``, the
table version of its commit. Its commit carries the same properties, so a finish killed
before its ledger row is recovered by the ledger. Which units still hold their candidates is
then read from the ledger alone (already loaded to find the units done), however long the
table's history: a resumed audit of 100,000 shards reads no transaction files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow.compute as pc

from coyo_db.catalog import tables
from coyo_db.catalog.lance_tables import sql_string
from coyo_db.catalog.ledger import LedgerEntry, commit_properties

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog
    from coyo_db.catalog.ledger import Ledger

FINISH_PREFIX = "finish-"


def unit_prefix(key: str) -> str:
    """The start of the ledger fingerprints of audit `key`'s units."""
    return f"audit-{key}-"


def finish_entry(run_id: str, key: str, refsets: Sequence[str]) -> LedgerEntry:
    """The ledger entry of audit `key`'s finish in run `run_id`."""
    sets = json.dumps(sorted(set(refsets)))
    return LedgerEntry(sets, f"{FINISH_PREFIX}{key}-{run_id}", 0, 0, 0)


def finish_properties(entry: LedgerEntry, run_id: str, key: str) -> dict[str, str]:
    """The properties an audit's finish (ledger `entry`) commits with: the ledger's, and the
    audit's key."""
    return commit_properties(entry, run_id) | {"audit_key": key}


def audit_runs(catalog: Catalog, key: str) -> list[str]:
    """The runs that committed units of the audit `key` (a killed one and its resumption)."""
    if not catalog.has_table(tables.LEDGER.name):
        return []
    rows = catalog.dataset(tables.LEDGER.name).to_table(
        columns=["fingerprint", "run_id"],
        filter=f"table_name = {sql_string(tables.CONTAMINATION_CANDIDATES.name)}",
    )
    mine = pc.starts_with(rows["fingerprint"], unit_prefix(key))
    return sorted(set(rows.filter(mine)["run_id"].to_pylist()))


def units_still_held(ledger: Ledger, key: str, refsets: Sequence[str]) -> set[str]:
    """Fingerprints of the units of audit `key` committed since another audit of any of
    `refsets` last finished (all of them when none did)."""
    wanted, own = set(refsets), f"{FINISH_PREFIX}{key}-"
    last_finish = max(
        (
            version
            for entry, version in ledger.committed(FINISH_PREFIX)
            if not entry.fingerprint.startswith(own) and _touches(entry.input, wanted)
        ),
        default=-1,
    )
    return {
        entry.fingerprint
        for entry, version in ledger.committed(unit_prefix(key))
        if version > last_finish
    }


def _touches(recorded: str, wanted: set[str]) -> bool:
    try:
        return bool(wanted & set(json.loads(recorded)))
    except (ValueError, TypeError):  # not a list of names: assume it touched them
        return True
