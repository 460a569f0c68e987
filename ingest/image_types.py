"""The shapes image ingest passes between its stages: records, decoded images, models, scorers.

reader (:class:`ImageRecord`) -> decode workers (:class:`DecodedImage`, uint8 pixels per
:class:`Preprocess`) -> batches -> models (:class:`ImageEmbedder`, :class:`TextEmbedder`) and
scorers (:class:`ImageScorer`, :class:`TextScorer`, :class:`EmbeddingScorer`) -> Arrow.

Pixels cross process and device boundaries as uint8 (N, H, W, 3) arrays: four times smaller
than float32, and each model normalises them on its own device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class ImageRecord:
    """One image as a reader found it, before decoding."""

    shard: str  # the shard's path: a .tar, a .parquet, a folder
    member: str  # where in the shard: tar member name, parquet row number, relative file path
    key: str  # img2dataset's key (or the file's stem)
    data: bytes | None  # the encoded image; None when the reader could not get it
    url: str | None = None
    caption: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # img2dataset's .json, parsed
    error: str | None = None  # why the reader could not get the image (quarantine reason)
    data_offset: int | None = None  # where `data` starts in the shard file (tar members only)


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its pixels, produced in the decode workers as uint8 RGB.

    - ``crop``: resize the shorter side to `size`, then centre-crop `size` x `size` (CLIP,
      ImageNet classifiers);
    - ``squash``: resize to `size` x `size`, ignoring the aspect ratio;
    - ``pad``: resize the longer side to `size` and pad to a square with black (detectors).
    """

    size: int
    mode: Literal["crop", "squash", "pad"] = "crop"
    resample: Literal["bicubic", "bilinear"] = "bicubic"


@dataclass
class DecodedImage:
    """What a decode worker returns for one record (`error` set when it failed)."""

    record: ImageRecord
    error: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    nbytes: int = 0
    phash: str | None = None  # 16 lowercase hex digits, identical to imagehash.phash
    pixels: dict[Preprocess, np.ndarray] = field(default_factory=dict)  # (H, W, 3) uint8


@runtime_checkable
class ImageEmbedder(Protocol):
    """A model turning images into vectors (an image tower)."""

    name: str  # registry name, also the table suffix: embeddings__<slug(name)>
    dim: int
    preprocess: Preprocess

    def to(self, device: str) -> None:
        """Move the weights to `device` ("cpu", "cuda", "cuda:1")."""

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 on the model's device -> (N, dim) float, L2-normalised."""


@runtime_checkable
class TextEmbedder(Protocol):
    """A model turning captions into vectors (a text tower)."""

    name: str
    dim: int

    def to(self, device: str) -> None: ...

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """N captions -> (N, dim) float, L2-normalised (empty text: a zero-information vector)."""


@runtime_checkable
class ImageScorer(Protocol):
    """Scores computed from pixels (NSFW, faces)."""

    name: str
    preprocess: Preprocess
    columns: dict[str, str]  # score column -> Arrow type name ("float32", "int32", "string")

    def score_images(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """(N, H, W, 3) uint8 -> one array of N values per column."""


@runtime_checkable
class TextScorer(Protocol):
    """Scores computed from captions (language, profanity)."""

    name: str
    columns: dict[str, str]

    def score_texts(self, texts: list[str | None]) -> dict[str, np.ndarray]: ...


@runtime_checkable
class EmbeddingScorer(Protocol):
    """Heads over another model's image embedding (LAION aesthetic, watermark)."""

    name: str
    embedder: str  # the registry name of the model whose image embedding it reads
    columns: dict[str, str]

    def score_embeddings(self, embeddings: np.ndarray) -> dict[str, np.ndarray]: ...
