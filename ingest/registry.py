"""One registry of models: embedders, copy descriptors, labelers and scorers, found by name.

Every model is named by one spec syntax, ``NAME`` or ``NAME:ARGUMENT``: ``effnet-lite0``,
``minilm``, ``open_clip:ViT-B-32:laion2b_s34b_b79k`` (a pretrained tag, from the hub when online)
or ``open_clip:ViT-B-32:/path/to/checkpoint.pt`` (a local checkpoint always works),
``isc:/ckpt/isc_ft_v107.pth.tar``, ``timm:ARCH:/ckpt/model.safetensors``,
``aesthetic:/ckpt/sac+logos+ava1-l14.pth``. :func:`split_spec` is the one parser.

A name is registered per role (:data:`ROLES`) with one decorator; the same name may serve
several roles with a factory each (``open_clip`` embeds, describes copies and labels zero-shot)::

    @register("effnet-lite0", "embedder")
    def load_effnet_lite0(argument: str | None) -> EffNetLite0: ...

A factory gets the spec's argument (None when there is none) and, for labelers, the options
:func:`coyo_db.ingest.models.classifiers.load_labeler` passes on. The built-in modules register
themselves when imported; :func:`build` imports them lazily, the first time a name is not found,
so nothing heavy is imported until a model is asked for (and registering imports nothing heavy).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coyo_db.errors import InputError

log = logging.getLogger(__name__)

Factory = Callable[..., Any]
# The roles a model plays, with the word its error messages use.
ROLES = {
    "embedder": "model",
    "descriptor": "descriptor",
    "labeler": "labeler",
    "scorer": "scorer",
}

# Built-in modules that register models when imported.
BUILTIN_MODULES = (
    "coyo_db.ingest.models.effnet",
    "coyo_db.ingest.models.minilm",
    "coyo_db.ingest.models.clip",
    "coyo_db.ingest.models.copy_descriptors",
    "coyo_db.ingest.models.classifiers",
    "coyo_db.ingest.scorers.nsfw",
    "coyo_db.ingest.scorers.faces",
    "coyo_db.ingest.scorers.text",
    "coyo_db.ingest.scorers.heads",
)


@dataclass(frozen=True)
class Entry:
    """One registered (role, name): its factory, the first line of the factory's docstring,
    and other names it answers to (deprecated ones log a warning when used)."""

    role: str
    name: str
    factory: Factory = field(repr=False)
    summary: str = ""
    aliases: tuple[str, ...] = ()
    deprecated_aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec resolved to its entry; `spec` is the canonical spelling (aliases replaced)."""

    entry: Entry
    argument: str | None
    spec: str


_ENTRIES: dict[tuple[str, str], Entry] = {}
_ALIASES: dict[tuple[str, str], str] = {}  # (role, alias) -> name
_builtins_loaded = False


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def register(
    name: str,
    *roles: str,
    aliases: Iterable[str] = (),
    deprecated_aliases: Iterable[str] = (),
) -> Callable[[Factory], Factory]:
    """Decorator: `factory(argument, **options)` builds the model for specs ``name[:argument]``
    in each of `roles` (``embedder``, ``descriptor``, ``labeler``, ``scorer``). Registering a
    (role, name) again replaces the earlier factory."""
    if not roles:
        raise ValueError(f"register({name!r}): name at least one role of {', '.join(ROLES)}")
    for role in roles:
        _check_role(role)
    if ":" in name or not name.strip():
        raise ValueError(f"register({name!r}): a name is non-empty and holds no ':'")
    aliases, deprecated = tuple(aliases), tuple(deprecated_aliases)

    def decorate(factory: Factory) -> Factory:
        doc = (factory.__doc__ or "").strip().splitlines()
        for role in roles:
            _ENTRIES[(role, name)] = Entry(
                role, name, factory, doc[0] if doc else "", aliases, deprecated
            )
            for alias in (*aliases, *deprecated):
                _ALIASES[(role, alias)] = name
        return factory

    return decorate


def unregister(name: str, *roles: str) -> None:
    """Forget `name` in `roles` (every role when none is given), with its aliases."""
    for role in roles or tuple(ROLES):
        entry = _ENTRIES.pop((role, name), None)
        if entry is not None:
            for alias in (*entry.aliases, *entry.deprecated_aliases):
                _ALIASES.pop((role, alias), None)


def load_builtins() -> None:
    """Import the built-in modules (once), which registers their models."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not exc.name.startswith("coyo_db"):
                continue  # an optional dependency is missing; its model says so when asked
            raise
    _builtins_loaded = True


def split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME[:ARGUMENT]`` -> (NAME, ARGUMENT or None); the argument may hold more colons."""
    name, _, argument = spec.partition(":")
    return name.strip(), (argument.strip() or None)


def resolve(role: str, spec: str) -> ResolvedSpec:
    """The entry `spec` names in `role`; InputError ("unknown ...; known: ...") if none."""
    _check_role(role)
    name, argument = split_spec(spec)
    if (role, name) not in _ENTRIES and (role, name) not in _ALIASES:
        load_builtins()
    alias = name if (role, name) in _ALIASES else None
    if alias is not None:
        name = _ALIASES[(role, alias)]
    entry = _ENTRIES.get((role, name))
    if entry is None:
        known = ", ".join(registered(role)[role])
        raise InputError(f"unknown {ROLES[role]} {spec!r}; known: {known}")
    canonical = name if argument is None else f"{name}:{argument}"
    if alias is not None and alias in entry.deprecated_aliases:
        log.warning("%s spec %r is deprecated; use %r", ROLES[role], spec, canonical)
    return ResolvedSpec(entry, argument, canonical)


def build(role: str, spec: str, /, **options: Any) -> Any:
    """The model for `spec` in `role`, from its factory (on the CPU)."""
    found = resolve(role, spec)
    return found.entry.factory(found.argument, **options)


def entries(role: str | None = None) -> list[Entry]:
    """Everything registered (in `role`, or in every role), by role then name."""
    if role is not None:
        _check_role(role)
    load_builtins()
    order = list(ROLES)
    found = [e for e in _ENTRIES.values() if role is None or e.role == role]
    return sorted(found, key=lambda e: (order.index(e.role), e.name))


def registered(role: str | None = None) -> dict[str, list[str]]:
    """The registered names per role (only `role`'s when given), for help texts and docs:
    ``{"embedder": ["effnet-lite0", "minilm", "open_clip"], "descriptor": [...], ...}``."""
    roles = [role] if role is not None else list(ROLES)
    listed = entries(role)
    return {r: [e.name for e in listed if e.role == r] for r in roles}


# ---- the entry points of each role ------------------------------------------------------------


def load_model(spec: str) -> Any:
    """The embedding model for `spec` (an ImageEmbedder, a TextEmbedder, or both), on the CPU."""
    return build("embedder", spec)


def load_scorer(spec: str) -> Any:
    """The scorer for `spec` (an ImageScorer, TextScorer or EmbeddingScorer)."""
    return build("scorer", spec)


def model_families() -> list[str]:
    """Names of the registered embedding models."""
    return registered("embedder")["embedder"]


def scorer_names() -> list[str]:
    """Names of the registered scorers."""
    return registered("scorer")["scorer"]


def table_slug(name: str) -> str:
    """A model name as a table-name suffix: ``open_clip:ViT-B-32:laion2b`` ->
    ``open_clip_vit_b_32_laion2b`` (the table registry's rule, :func:`tables.slug`)."""
    from coyo_db.catalog import tables

    return tables.slug(name)
