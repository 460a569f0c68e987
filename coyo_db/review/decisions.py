"""Review decisions: a person accepts or overturns what dedup or the audit decided.

Four decisions, each about one subject:

- ``keeper`` (kind ``duplicate``): image `id` is the one to keep of its group in dedup `method`
  (accepts the keeper, or changes it); the group's other members are left out.
- ``not_duplicate`` (kind ``duplicate``): image `id` is not a duplicate of its group in
  `method`: it stays, whatever the keeper.
- ``copy`` (kind ``contamination``): image `id` copies reference (`refset`, `ref_id`): an audit
  hit accepted, or a near miss marked a copy; the id leaves exports.
- ``not_copy`` (kind ``contamination``): image `id` does not copy that reference: a hit
  overturned (the id stays unless another hit holds).

Each decision is one row of the `reviews` table, appended in one commit under the catalog's
writer lock and logged in `runs` as ``review``. The latest decision on a subject counts, so a
reviewer can change their mind. A keeper decision names the image, not the group number: a
dedup run again regroups, and the reviewed image is still the one kept in its new group.
Exports honour the decisions through the views of ``sql/reviews*.sql``.
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from coyo_db.catalog import tables
from coyo_db.catalog.ledger import now
from coyo_db.errors import InputError

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

#: kind -> the decisions a review of that kind can make
DECISIONS: dict[str, tuple[str, ...]] = {
    "duplicate": ("keeper", "not_duplicate"),
    "contamination": ("copy", "not_copy"),
}
MAX_NOTE = 2000

_GROUP_OF = "SELECT group_id FROM dup_groups WHERE method = $method AND id = $id LIMIT 1"
_PAIR_OF = """
SELECT count(*) AS n FROM (
    SELECT id FROM contamination WHERE id = $id AND refset = $refset AND ref_id = $ref_id
    UNION ALL
    SELECT id FROM contamination_candidates
    WHERE id = $id AND refset = $refset AND ref_id = $ref_id
)
"""


@dataclass(frozen=True)
class Review:
    """One decision as stored in `reviews`."""

    review_id: str
    kind: str
    decision: str
    id: int
    method: str | None
    group_id: int | None
    refset: str | None
    ref_id: int | None
    reviewer: str
    reviewed_at: datetime
    note: str | None

    def line(self) -> str:
        if self.kind == "duplicate":
            subject = f"id {self.id} in {self.method} group {self.group_id}"
        else:
            subject = f"id {self.id} against {self.refset} reference {self.ref_id}"
        return f"review {self.review_id}: {subject}: {self.decision} (by {self.reviewer})"


def kind_of(decision: str) -> str:
    """The kind of review `decision` belongs to; an unknown decision is an :class:`InputError`."""
    for kind, decisions in DECISIONS.items():
        if decision in decisions:
            return kind
    known = ", ".join(d for ds in DECISIONS.values() for d in ds)
    raise InputError(f"unknown review decision {decision!r}; choose one of {known}")


def review(
    catalog: Catalog,
    decision: str,
    id: int,
    *,
    method: str | None = None,
    refset: str | None = None,
    ref_id: int | None = None,
    reviewer: str | None = None,
    note: str | None = None,
) -> Review:
    """Record `decision` on image `id` (with `method` for duplicates, `refset` and `ref_id`
    for contamination); the subject must exist in `dup_groups` or in the audit's tables."""
    from coyo_db.catalog.runs import recorded_run

    kind = kind_of(decision)
    who = (reviewer if reviewer is not None else _user()).strip()
    if not who:
        raise InputError("a review needs a reviewer's name")
    if note is not None and len(note) > MAX_NOTE:
        raise InputError(f"a review note holds at most {MAX_NOTE} characters")
    group_id = _check_subject(catalog, kind, int(id), method, refset, ref_id)
    arguments: dict[str, Any] = {"decision": decision, "id": int(id), "reviewer": who}
    arguments.update(method=method, refset=refset, ref_id=ref_id)
    with recorded_run(catalog, "review", arguments) as run:
        row = Review(
            review_id=uuid.uuid4().hex[:16],
            kind=kind,
            decision=decision,
            id=int(id),
            method=method if kind == "duplicate" else None,
            group_id=group_id,
            refset=refset if kind == "contamination" else None,
            ref_id=int(ref_id) if kind == "contamination" and ref_id is not None else None,
            reviewer=who,
            reviewed_at=now(),
            note=note or None,
        )
        spec = tables.REVIEWS
        catalog.ensure(spec)
        catalog.append(spec.name, spec.from_pylist([asdict(row)]), {"review_id": row.review_id})
        run.counts(rows_written=1)
    return row


def _check_subject(
    catalog: Catalog,
    kind: str,
    id_: int,
    method: str | None,
    refset: str | None,
    ref_id: int | None,
) -> int | None:
    if kind == "duplicate":
        if refset is not None or ref_id is not None:
            raise InputError("a duplicate review takes --method, not --refset/--ref-id")
        if not method:
            raise InputError("a duplicate review needs the dedup --method")
        if not catalog.has_table(tables.DUP_GROUPS.name):
            raise InputError("the catalog has no duplicate groups to review (run coyo-db dedup)")
        found = _rows(catalog, _GROUP_OF, method=method, id=id_)
        if not found:
            raise InputError(f"id {id_} is in no {method!r} duplicate group")
        return int(found[0]["group_id"])
    if method is not None:
        raise InputError("a contamination review takes --refset and --ref-id, not --method")
    if not refset or ref_id is None:
        raise InputError("a contamination review needs --refset and --ref-id")
    names = set(catalog.table_names())
    if not {tables.CONTAMINATION.name, tables.CONTAMINATION_CANDIDATES.name} <= names:
        raise InputError("the catalog has no audit to review (run coyo-db audit)")
    found = _rows(catalog, _PAIR_OF, id=id_, refset=refset, ref_id=int(ref_id))
    if not found or not found[0]["n"]:
        raise InputError(
            f"the audit never compared id {id_} with {refset!r} reference {int(ref_id)}"
        )
    return None


def _rows(catalog: Catalog, sql: str, **params: object) -> list[dict[str, Any]]:
    with catalog.connection() as con:
        return con.sql(sql, params=params).to_arrow_table().to_pylist()


def reviews(catalog: Catalog, *, latest: bool = False) -> pa.Table:
    """The `reviews` table, newest first; with `latest`, only the decision that counts on each
    subject (the view `reviews_latest`). Empty with its schema when nobody reviewed yet."""
    spec = tables.REVIEWS
    if not catalog.has_table(spec.name):
        return spec.empty()
    view = "reviews_latest" if latest else "reviews"
    return catalog.sql(f"SELECT * FROM {view} ORDER BY reviewed_at DESC, review_id DESC")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container
        return "unknown"
