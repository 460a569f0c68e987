"""Named crash points inside the writers, for the test suite's kill tests.

A writer calls :func:`point` at each place where a crash would matter: between a table's commit
and its ledger row, between the steps of a rewrite, mid-export. With the environment variable
``COYO_DB_CRASH_AT`` unset (always, outside tests) a point costs one dictionary lookup. Set to
``<name>`` it kills the process the first time that point is reached; ``<name>:<n>`` the n-th
time. The kill is ``os._exit(137)``: no ``finally`` blocks, no flushed buffers, no `runs`
update, as with ``kill -9``.

    COYO_DB_CRASH_AT=ledger.after_table_commit:2 coyo-db ingest metadata ...

:data:`POINTS` lists every point a writer declares; tests/test_crash_points.py kills each.
"""

from __future__ import annotations

import os
import sys

ENV = "COYO_DB_CRASH_AT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL

#: every crash point, with where it is
POINTS: dict[str, str] = {
    "ledger.after_quarantine": "an input's bad records are committed, its rows are not",
    "ledger.after_table_commit": "an input's rows are committed, its ledger row is not",
    "rewrite.after_stage": "a rewrite's new rows are written, not yet committed",
    "rewrite.after_commit": "a rewrite is committed, the run's row is not completed",
    "export.mid_write": "an export has written its files, not its manifest",
    "export.between_renames": "a replaced export is moved aside, the new one not yet in place",
}

_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Die here, as kill -9 would, when ``COYO_DB_CRASH_AT`` names this point (and count)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    if name not in POINTS:
        raise ValueError(f"undeclared crash point {name!r}")
    target, _, count = wanted.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == (int(count) if count else 1):
        sys.stderr.flush()
        os._exit(EXIT_CODE)
