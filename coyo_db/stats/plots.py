"""Histogram PNGs of binned counts (from :func:`coyo_db.stats.card.histograms`).

Counts are whole numbers, so the count axis has whole-number ticks only (and so does the value
axis of a column binned on whole numbers, such as a face count). A heavily skewed histogram,
whose tallest bin holds at least :data:`SKEW_RATIO` times the median non-empty bin (NSFW
scores: nearly every image near 0), gets a log count axis, so that its tail stays visible.

matplotlib comes with the `plots` extra and is imported only here, when a plot is drawn; the
figures are rendered with the Agg canvas, so no display is needed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from coyo_db.errors import InputError, MissingExtraError
from coyo_db.stats.card import Histogram

log = logging.getLogger(__name__)

FIGSIZE = (6.4, 4.0)  # inches
DPI = 100  # so a PNG is 640 x 400 pixels
SKEW_RATIO = 50


def is_skewed(counts: Iterable[int]) -> bool:
    """Whether the tallest bin holds at least :data:`SKEW_RATIO` times the median non-empty
    bin (three non-empty bins at least): such a histogram reads on a log count axis."""
    filled = sorted(c for c in counts if c > 0)
    if len(filled) < 3:
        return False
    return filled[-1] >= SKEW_RATIO * filled[len(filled) // 2]


def require_matplotlib() -> type:
    """matplotlib's Figure class, or :class:`MissingExtraError` naming the `plots` extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "plots") from None
    return Figure


def plot_histogram(histogram: Histogram, path: str | Path, *, title: str | None = None) -> Path:
    """Draw one histogram as a PNG at `path`."""
    figure = draw_histogram(histogram, title=title)
    path = Path(path)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def draw_histogram(histogram: Histogram, *, title: str | None = None) -> Any:
    """One histogram as a matplotlib Figure (whole-number ticks, a log count axis when
    skewed: see the module docstring)."""
    from matplotlib.ticker import MaxNLocator

    figure_class = require_matplotlib()
    figure = figure_class(figsize=FIGSIZE, dpi=DPI)
    ax = figure.add_subplot()
    log_scale = is_skewed(histogram.counts)
    if histogram.counts:
        baseline = 0.5 if log_scale else 0  # a log axis has no 0
        ax.stairs(histogram.counts, histogram.edges, fill=True, alpha=0.8, baseline=baseline)
        ax.set_xlim(histogram.edges[0], histogram.edges[-1])
        if all(float(edge).is_integer() for edge in histogram.edges):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(histogram.column)
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        ax.set_ylabel("rows (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("rows")
    ax.yaxis.set_major_formatter(lambda value, _pos: f"{value:,.0f}")
    note = f"{histogram.total:,} values"
    if histogram.nulls:
        note += f", {histogram.nulls:,} NULL/NaN left out"
    ax.set_title(f"{title or histogram.column}\n{note}", fontsize=10)
    figure.tight_layout()
    return figure


def write_histograms(
    histograms: Iterable[Histogram], out_dir: str | Path, *, prefix: str = ""
) -> list[Path]:
    """One `<prefix><column>.png` per histogram in `out_dir` (created if missing)."""
    require_matplotlib()  # fail before creating anything when matplotlib is missing
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder for plots")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for histogram in histograms:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{prefix}{histogram.column}")
        written.append(plot_histogram(histogram, out / f"{name}.png"))
        log.info("wrote %s", written[-1])
    return written
