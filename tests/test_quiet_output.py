"""Output a user reads: histograms with whole-number count ticks and a log axis where a score
is skewed, Ray's own log lines kept off the terminal, and one line for an open_clip tag that
cannot be fetched offline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coyo_db.catalog import Catalog, schemas
from coyo_db.errors import InputError
from coyo_db.stats.card import Histogram, histograms
from coyo_db.stats.plots import draw_histogram, is_skewed, write_histograms
from coyo_db.synth.metadata import synth_table

# --- histograms -----------------------------------------------------------------------------


def test_skew_is_the_tallest_bin_against_the_median_bin():
    assert is_skewed([9000, 400, 120, 60, 30, 15, 8, 4, 2, 1])
    assert not is_skewed([10, 12, 9, 11, 14, 8])
    assert not is_skewed([5000, 1])  # too few bins to call it skewed
    assert not is_skewed([])


def test_a_skewed_score_gets_a_log_count_axis():
    edges = tuple(i / 10 for i in range(11))
    figure = draw_histogram(Histogram("nsfw", edges, (9000, 400, 120, 60, 30, 0, 8, 4, 2, 1), 0))
    ax = figure.axes[0]
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()
    figure = draw_histogram(Histogram("clip", edges, (10, 30, 50, 70, 90, 80, 60, 40, 20, 5), 0))
    assert figure.axes[0].get_yscale() == "linear"


def test_small_counts_get_whole_number_ticks_only():
    figure = draw_histogram(Histogram("num_faces", (0, 1, 2, 3, 4), (1, 3, 2, 1), 0))
    ax = figure.axes[0]
    ax.figure.canvas.draw()
    visible = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert visible and all(float(t).is_integer() for t in visible)
    labels = [label.get_text() for label in ax.get_yticklabels() if label.get_text()]
    assert len(labels) == len(set(labels))  # no "0, 0, 1, 2, 2" from rounded fractions
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_stats_plots_of_coyo_shaped_scores(tmp_path):
    catalog = Catalog(tmp_path / "home", create=True)
    catalog.ensure_table("pairs", schemas.PAIRS)
    catalog.append("pairs", synth_table(3000, seed=0))
    found = histograms(catalog)
    assert is_skewed(found["nsfw_score_opennsfw2"].counts)
    assert not is_skewed(found["clip_similarity_vitb32"].counts)
    written = write_histograms(found.values(), tmp_path / "plots")
    assert len(written) == len(found)


# --- Ray's log lines ------------------------------------------------------------------------

REDIRECTED = textwrap.dedent(
    """
    import logging, os, sys
    from coyo_db.ingest.ray_logs import ray_output_to_file

    with ray_output_to_file() as path:
        os.write(2, b"[2026-01-01 00:00:00,000 E 1 1] core_worker.cc:2465: from C++\\n")
        logging.getLogger("ray._private.something").warning("from Ray's Python side")
        sys.stderr.write("coyo-db's own line\\n")
    sys.stderr.write("after\\n")
    print(path)
    """
)


def test_ray_lines_go_to_a_file_and_coyo_lines_to_the_terminal(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("RAY_BACKEND_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "-c", REDIRECTED], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "coyo-db's own line\nafter\n"
    log_file = result.stdout.strip()
    assert log_file.startswith(str(tmp_path))
    text = Path(log_file).read_text(encoding="utf-8")
    assert "core_worker.cc:2465: from C++" in text and "from Ray's Python side" in text


def test_ray_backend_log_level_keeps_ray_lines_on_the_terminal(tmp_path):
    env = {**os.environ, "RAY_BACKEND_LOG_LEVEL": "info", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", REDIRECTED], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "core_worker.cc:2465: from C++" in result.stderr
    assert result.stdout.strip() == "None"


@pytest.mark.slow
def test_a_ray_ingest_prints_only_coyo_db_lines(tmp_path):
    pytest.importorskip("ray")
    from imagedata import make_samples, write_webdataset

    write_webdataset(tmp_path / "shards" / "00000.tar", make_samples(4, seed=2))
    home = str(tmp_path / "home")
    Catalog(home, create=True)
    command = [sys.executable, "-m", "coyo_db.cli.entry", "ingest", "images"]
    result = subprocess.run(
        [*command, str(tmp_path / "shards"), "--engine", "ray", "--home", home],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "4 images read" in result.stdout
    assert ".cc:" not in result.stderr and "Token authentication" not in result.stderr
    assert "WARNING" not in result.stderr, result.stderr


# --- open_clip offline ----------------------------------------------------------------------


def test_an_uncached_tag_offline_is_one_line_at_once(monkeypatch, caplog):
    import huggingface_hub.constants as hub_constants
    import open_clip.pretrained as pretrained

    from coyo_db.ingest import registry
    from coyo_db.ingest.models import hub

    modes = []

    def offline(*args, **kwargs):
        modes.append(hub_constants.HF_HUB_OFFLINE)
        logging.error("Failed to download weights for tag 'x': no network")  # as open_clip
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(pretrained, "download_pretrained_from_hf", offline)
    monkeypatch.setattr(pretrained, "download_pretrained_from_url", offline)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: False)
    before = (hub_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    with caplog.at_level(logging.WARNING), pytest.raises(InputError) as error:
        registry.load_model("open_clip:ViT-B-32:laion2b_s34b_b79k")
    message = str(error.value)
    assert "not in the local cache" in message and "\n" not in message
    assert "open_clip:ViT-B-32:/path/to/checkpoint.pt" in message
    assert "Failed to download" not in caplog.text  # no error log before the error
    assert modes and all(modes)  # tried offline (the cache) only: no network retries
    assert (hub_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")) == before


def test_a_cached_tag_loads_without_asking_the_network(monkeypatch):
    from coyo_db.ingest.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: pytest.fail("probed"))
    import huggingface_hub.constants as hub_constants

    assert hub.cached_or_online(lambda: hub_constants.HF_HUB_OFFLINE) is True
    calls = []

    def flaky():
        calls.append(hub_constants.HF_HUB_OFFLINE)
        if len(calls) == 1:
            raise OSError("not cached")
        return "downloaded"

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: True)
    assert hub.cached_or_online(flaky) == "downloaded"
    assert calls[0] is True and calls[1] is not True


def test_hub_offline_in_the_environment_is_not_probed(monkeypatch):
    from coyo_db.ingest.models import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: pytest.fail("probed"))
    assert hub.hub_reachable() is False
