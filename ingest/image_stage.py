"""The stage of `ingest images`: embedding models and scorers on one device.

One :class:`ModelStage` runs every model and scorer a shard still lacks on a batch of good
images and returns plain arrays: ``image:<spec>`` / ``text:<spec>`` (N, dim) float32 vectors and
``score:<spec>:<column>`` arrays of N values. The local engine calls the instance the job built;
each Ray actor builds its own from the specs, on its own device.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from coyo_db.ingest.image_outputs import ModelOutput, ScorerOutput, model_output
from coyo_db.ingest.image_types import EmbeddingScorer, ImageScorer, Preprocess, TextScorer

log = logging.getLogger(__name__)


def image_key(spec: str) -> str:
    return f"image:{spec}"


def text_key(spec: str) -> str:
    return f"text:{spec}"


def score_prefix(spec: str) -> str:
    return f"score:{spec}:"


def preprocess_specs(models: list[ModelOutput], scorers: list[ScorerOutput]) -> list[Preprocess]:
    """The pixel arrays the decoders must make for these models and scorers."""
    specs = [m.model.preprocess for m in models if m.images]
    specs += [s.scorer.preprocess for s in scorers if isinstance(s.scorer, ImageScorer)]
    return list(dict.fromkeys(specs))


class ModelStage:
    """Models and scorers already loaded and placed on their device."""

    def __init__(self, models: list[ModelOutput], scorers: list[ScorerOutput]) -> None:
        self.models, self.scorers = models, scorers

    @classmethod
    def load(
        cls, embed: list[str], scores: list[str], device: str = "cpu", threads: int = 0
    ) -> ModelStage:
        """Models and scorers by spec, loaded on `device` (`threads` CPU threads on a CPU)."""
        from coyo_db.ingest.models.common import cpu_threads
        from coyo_db.ingest.registry import load_model, load_scorer

        cpu_threads(device, threads)
        scorers = [ScorerOutput(spec, load_scorer(spec)) for spec in scores]
        models = [model_output(spec, load_model(spec)) for spec in embed]
        for output in models:
            output.model.to(device)
        return cls(models, scorers)

    def __call__(
        self, pixels: dict[Preprocess, np.ndarray], texts: list[str | None]
    ) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = {}
        timings: dict[str, float] = {}
        for output in self.models:
            tick = time.perf_counter()
            if output.images:
                tensor = _tensor(pixels[output.model.preprocess], output.model)
                image = output.model.embed_images(tensor).float().cpu().numpy()
                outputs[image_key(output.spec)] = image
            if output.texts:
                text = output.model.embed_texts([t or "" for t in texts])
                outputs[text_key(output.spec)] = text.float().cpu().numpy()
            timings[output.spec] = time.perf_counter() - tick
        for output in self.scorers:
            tick = time.perf_counter()
            scorer = output.scorer
            if isinstance(scorer, ImageScorer):
                values = scorer.score_images(pixels[scorer.preprocess])
            elif isinstance(scorer, TextScorer):
                values = scorer.score_texts(texts)
            elif isinstance(scorer, EmbeddingScorer):
                values = scorer.score_embeddings(outputs[image_key(scorer.embedder)])
            else:  # pragma: no cover - the registry only builds the three kinds
                raise TypeError(f"{output.spec}: not a scorer")
            for name, value in values.items():
                outputs[score_prefix(output.spec) + name] = np.asarray(value)
            timings[output.spec] = time.perf_counter() - tick
        if timings:
            log.debug(
                "batch of %d: %s",
                len(texts),
                ", ".join(f"{name} {seconds:.3f}s" for name, seconds in timings.items()),
            )
        return outputs


def _tensor(array: np.ndarray, model: Any) -> Any:
    """uint8 pixels as a tensor on the model's device (pinned, copied asynchronously on CUDA)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    device = getattr(model, "device", "cpu")
    if str(device).startswith("cuda"):
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor
