"""coyo-db: columnar analytics and curation for COYO-700M-shaped image-text datasets.

The Python API: :class:`Catalog` and one function per command, everything the command line
does one import away::

    >>> import coyo_db
    >>> cat = coyo_db.Catalog.init("coyo-db-home")  # creates; Catalog(home) opens  # doctest: +SKIP
    >>> coyo_db.ingest_metadata(cat, ["coyo-700m/*.parquet"])     # doctest: +SKIP
    >>> cat.pl("SELECT count(*) FROM pairs_filtered")             # doctest: +SKIP
    >>> coyo_db.dedup_phash(cat, radius=4)                        # doctest: +SKIP
    >>> coyo_db.export_subset(cat, where="watermark_score < 0.5", to="out/")  # doctest: +SKIP

Names resolve on first use, so ``import coyo_db`` stays cheap (no DuckDB, Arrow or torch until
a function needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from coyo_db.errors import CoyoDbError
from coyo_db.version import __version__

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog as Catalog

#: command -> (module, function): the Python face of every `coyo-db` command
API: dict[str, tuple[str, str]] = {
    "Catalog": ("coyo_db.catalog", "Catalog"),  # coyo-db init: Catalog.init(home)
    "ingest_metadata": ("coyo_db.ingest.metadata", "ingest_metadata"),
    "ingest_labels": ("coyo_db.labels.coyo_labeled", "ingest_labels"),
    "ingest_images": ("coyo_db.ingest.images", "ingest_images"),
    "query": ("coyo_db.results.output", "query"),
    "describe_tables": ("coyo_db.catalog.describe", "describe_catalog"),
    "dataset_stats": ("coyo_db.stats.card", "stats"),
    "funnel": ("coyo_db.stats.funnel", "funnel"),
    "dedup_phash": ("coyo_db.dedup.groups", "dedup_phash"),
    "dedup_text": ("coyo_db.dedup.rules", "dedup_rule"),
    "dedup_semantic": ("coyo_db.dedup.semantic", "dedup_semantic"),
    "dedup_report": ("coyo_db.dedup.groups", "dedup_report"),
    "label_images": ("coyo_db.labels.labeling", "label_images"),
    "add_taxonomy": ("coyo_db.labels.taxonomy", "add_taxonomy"),
    "list_taxonomies": ("coyo_db.labels.taxonomy", "list_taxonomies"),
    "add_refset": ("coyo_db.audit.refset_job", "add_refset"),
    "list_refsets": ("coyo_db.audit.refsets", "list_refsets"),
    "audit_contamination": ("coyo_db.audit.contamination", "audit"),
    "write_audit_report": ("coyo_db.audit.report", "write_report"),
    "write_removal_list": ("coyo_db.audit.removal", "write_removal_list"),
    "export_subset": ("coyo_db.export.subset", "export"),
    "replay_export": ("coyo_db.export.replay", "replay_export"),
    "build_index": ("coyo_db.search.vector_index", "build_index"),
    "nearest_neighbours": ("coyo_db.search.nearest", "search"),
    "write_synth": ("coyo_db.synth.metadata", "write_synth"),
    "run_demo": ("coyo_db.synth.demo", "run_demo"),
    "record_review": ("coyo_db.review.decisions", "review"),
    "list_reviews": ("coyo_db.review.decisions", "reviews"),
    "serve_catalog": ("coyo_db.serve.server", "serve"),
}

__all__ = ["API", "CoyoDbError", "__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        module, attribute = API[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'coyo_db' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
