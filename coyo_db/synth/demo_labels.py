"""The labeling part of `coyo-db demo`: label the ingested images with the offline
EfficientNet-Lite0 into ImageNet-21k's index space, then select images by the synset hierarchy
with the same macro for the model's labels and the COYO-Labeled-300M-shaped ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coyo_db.catalog import Catalog

MODEL = "effnet-lite0"
TAXONOMY = "imagenet-21k"
TOP_K = 5
SYNSET = "n00021939"  # artifact, artefact: most ImageNet-1k classes lie under it
SYNSET_NAME = "artifact, artefact"
MIN_PROB = 0.2

TOP1_SQL = f"""
SELECT name, count(*) AS images, round(avg(prob), 3) AS mean_prob
FROM labels_top1(0.0)
WHERE model = '{MODEL}' AND taxonomy = '{TAXONOMY}'
GROUP BY name
ORDER BY images DESC, name
LIMIT 5
"""

UNDER_SQL = f"""
SELECT model, count(*) AS images, round(avg(prob), 3) AS mean_prob,
       count(DISTINCT name) AS classes
FROM labels_under('{SYNSET}', {MIN_PROB})
GROUP BY model
ORDER BY model
"""

EXAMPLES_SQL = f"""
SELECT u.id, u.name, round(u.prob, 3) AS prob, i.key
FROM labels_under('{SYNSET}', {MIN_PROB}) AS u
JOIN images AS i USING (id)
WHERE u.model = '{MODEL}'
ORDER BY u.prob DESC, u.id
LIMIT 3
"""


@dataclass
class LabelsDemoResult:
    """The numbers the labeling step showed."""

    labeled: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    under_synset: int = 0  # images the model labels under SYNSET at >= MIN_PROB
    coyo_labeled_under: int = 0  # COYO-Labeled-shaped rows under SYNSET at >= MIN_PROB


def run_labels_demo(
    catalog: Catalog, data: Path, *, seed: int, emit: Callable[[str], None]
) -> LabelsDemoResult:
    """Label the catalog's `images` with effnet-lite0 (top-5 over ImageNet-21k) and select
    everything under "artifact, artefact" at probability >= 0.2. `data` and `seed` are the
    demo's (nothing here is random)."""
    from coyo_db.labels.labeling import label_images
    from coyo_db.results.output import render_table

    summary = label_images(catalog, MODEL, TAXONOMY, top_k=TOP_K, batch_size=32, workers=0)
    emit(summary.line())
    result = LabelsDemoResult(
        labeled=summary.rows_written,
        quarantined=summary.rows_quarantined,
        seconds=summary.seconds,
        images_per_second=summary.rows_per_second,
    )
    emit("the model's most frequent top-1 labels (synthetic pictures: expect odd classes)")
    emit(render_table(catalog.sql(TOP1_SQL)).rstrip())

    emit(
        f"select by hierarchy: images with a label under '{SYNSET_NAME}' ({SYNSET}) at "
        f"p >= {MIN_PROB}, from the model and from the COYO-Labeled-shaped rows alike:"
    )
    emit(f"  SELECT * FROM labels_under('{SYNSET}', {MIN_PROB})")
    under = catalog.sql(UNDER_SQL)
    emit(render_table(under).rstrip())
    counts = dict(zip(under["model"].to_pylist(), under["images"].to_pylist(), strict=True))
    result.under_synset = counts.get(MODEL, 0)
    result.coyo_labeled_under = counts.get("coyo-labeled-300m", 0)
    examples = catalog.sql(EXAMPLES_SQL)
    if examples.num_rows:
        emit(render_table(examples).rstrip())
    return result
