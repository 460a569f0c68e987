"""Models and scorers found by name: a new one is one small class and one decorator.

Model specs are ``family`` or ``family:argument``: ``effnet-lite0``, ``minilm``,
``open_clip:ViT-B-32:laion2b_s34b_b79k`` (pretrained tag, from the hub when online) or
``open_clip:ViT-B-32:/path/to/checkpoint.pt`` (a local checkpoint always works). Scorer specs
are ``name`` or ``name:/path/to/checkpoint`` (``aesthetic:/ckpt/sac+logos+ava1-l14.pth``).

Families register themselves when their module is imported; :func:`load_model` imports the
built-in modules lazily, so nothing heavy is imported until a model is asked for.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from coyo_db.errors import InputError

ModelFactory = Callable[[str | None], Any]
ScorerFactory = Callable[[str | None], Any]

_MODELS: dict[str, ModelFactory] = {}
_SCORERS: dict[str, ScorerFactory] = {}

# Built-in modules that register families and scorers when imported.
_BUILTIN_MODULES = (
    "coyo_db.ingest.models.effnet",
    "coyo_db.ingest.models.minilm",
    "coyo_db.ingest.models.clip",
    "coyo_db.ingest.scorers.nsfw",
    "coyo_db.ingest.scorers.faces",
    "coyo_db.ingest.scorers.text",
    "coyo_db.ingest.scorers.heads",
)


def register_model(family: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: `factory(argument)` builds the model for specs ``family[:argument]``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        _MODELS[family] = factory
        return factory

    return decorate


def register_scorer(name: str) -> Callable[[ScorerFactory], ScorerFactory]:
    """Decorator: `factory(checkpoint)` builds the scorer for specs ``name[:checkpoint]``."""

    def decorate(factory: ScorerFactory) -> ScorerFactory:
        _SCORERS[name] = factory
        return factory

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not exc.name.startswith("coyo_db"):
                continue  # an optional dependency is missing; its family says so when asked
            raise


def split_spec(spec: str) -> tuple[str, str | None]:
    family, _, argument = spec.partition(":")
    return family.strip(), (argument.strip() or None)


def _build(registry: dict[str, Callable[[str | None], Any]], spec: str, what: str) -> Any:
    name, argument = split_spec(spec)
    if name not in registry:
        _load_builtins()
    if name not in registry:
        raise InputError(f"unknown {what} {spec!r}; known: {', '.join(sorted(registry))}")
    return registry[name](argument)


def load_model(spec: str) -> Any:
    """The model for `spec` (an ImageEmbedder, a TextEmbedder, or both), on the CPU."""
    return _build(_MODELS, spec, "model")


def load_scorer(spec: str) -> Any:
    """The scorer for `spec` (an ImageScorer, TextScorer or EmbeddingScorer)."""
    return _build(_SCORERS, spec, "score")


def model_families() -> list[str]:
    _load_builtins()
    return sorted(_MODELS)


def scorer_names() -> list[str]:
    _load_builtins()
    return sorted(_SCORERS)


def table_slug(name: str) -> str:
    """A model name as a table-name suffix: ``open_clip:ViT-B-32:laion2b`` ->
    ``open_clip_vit_b_32_laion2b``; a checkpoint path contributes its file stem only."""
    family, argument = split_spec(name)
    parts = [family]
    if argument:
        for part in argument.split(":"):
            if "/" in part or "\\" in part:
                part = re.split(r"[/\\]", part)[-1].rsplit(".", 1)[0]
            parts.append(part)
    return re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_")
