"""Heads over image embeddings: LAION aesthetic v2, LAION watermark, LAION CLIP-based NSFW.

Each is an EmbeddingScorer: it reads the L2-normalised image embedding of another model (its
``embedder``, loaded and run by the pipeline) and needs a checkpoint:

- ``aesthetic:/ckpt/sac+logos+ava1-l14-linearMSE.pth`` -> ``aesthetic_laion_v2`` (float32, the
  predictor's 1..10 rating). LAION's improved aesthetic predictor v2 is an MLP over CLIP ViT-L/14
  embeddings, ``layers.{0,2,4,6,7}.weight/bias``: Linear(768, 1024), Dropout, Linear(1024, 128),
  Dropout, Linear(128, 64), Dropout, Linear(64, 16), Linear(16, 1), with no activations (they
  are commented out in LAION's code), so at inference it is one affine map and is folded into
  one at load time. v1's single ``weight``/``bias`` Linear(768, 1) loads as well.
- ``watermark:/ckpt/head.pth`` -> ``watermark_laion`` (float32 in [0, 1]). A head of Linear
  layers with ReLU between them and 2 outputs; the score is ``softmax(logits)[:, 0]``, the
  watermark probability in LAION's (watermark, clear) order. LAION's released watermark model
  is a timm ``efficientnet_b3a`` whose classifier (Linear(1536, 625), ReLU, Dropout,
  Linear(625, 256), ReLU, Linear(256, 2)) reads EfficientNet features, not CLIP; what loads here
  is a head of that form over the embedder's vectors, e.g. one trained on CLIP embeddings.
- ``nsfw-clip:/ckpt/head.pth`` -> ``nsfw_clip`` (float32 in [0, 1]). LAION's CLIP-based NSFW
  detector for ViT-L/14 is a small Keras MLP (768 -> 64 -> 512 -> 256 -> 1, ReLU between,
  sigmoid at the end) behind a Normalization layer; what loads is a torch state dict of Linear
  layers with ReLU between them and 1 output, read through a sigmoid. To port the Keras model,
  fold its Normalization into the first layer (``W' = W / std``, ``b' = b - W' @ mean``) and
  save the Dense kernels transposed, as ``Linear`` weights are (out, in).

Checkpoints load through ``torch.load(weights_only=True)`` (or safetensors) and must hold only
``weight`` / ``bias`` tensors of Linear layers, in order (any module names: ``layers.0``,
``fc1``, ``classifier.3``); each layer's input must be the previous one's output. Anything else
is one InputError naming the file and the expected layout. Heads with an activation apply it
between two Linear layers unless they are adjacent entries of one ``nn.Sequential``
(``layers.6`` then ``layers.7``: nothing between them, as in the last two layers of LAION's
MLP heads); layers with nothing between them are folded into one at load time. The forward
pass is NumPy.

The embedder defaults to ``open_clip:ViT-L-14:openai`` (the model these LAION heads were trained
on); ``aesthetic:/ckpt/head.pth@open_clip:ViT-B-32:laion2b_s34b_b79k`` names another, as does
the ``embedder`` argument of :class:`EmbeddingHead`. The head's input width must match the
embedder's dimension (checked on every batch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from coyo_db.errors import InputError
from coyo_db.ingest.models.common import load_state_dict_file
from coyo_db.ingest.registry import register
from coyo_db.ingest.scorers import common

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "open_clip:ViT-L-14:openai"


@dataclass(frozen=True)
class HeadKind:
    """What one family of heads looks like and how its output becomes a score."""

    name: str  # the scorer's registry name
    title: str  # for messages
    column: str
    outputs: int
    hidden_activation: Literal["relu"] | None
    output: Literal["identity", "sigmoid", "softmax0"]
    expected: str  # the layout a checkpoint must have, for messages
    example: str  # a checkpoint file name, for messages


AESTHETIC = HeadKind(
    "aesthetic",
    "an aesthetic head",
    "aesthetic_laion_v2",
    1,
    None,
    "identity",
    "Linear layers ending in 1 output, like LAION aesthetic v2's "
    "layers.{0,2,4,6,7}.weight/bias (768 -> 1024 -> 128 -> 64 -> 16 -> 1)",
    "sac+logos+ava1-l14-linearMSE.pth",
)
WATERMARK = HeadKind(
    "watermark",
    "a watermark head",
    "watermark_laion",
    2,
    "relu",
    "softmax0",
    "Linear layers (ReLU between them) ending in 2 outputs: (watermark, clear) logits",
    "watermark-head.pth",
)
NSFW_CLIP = HeadKind(
    "nsfw-clip",
    "an NSFW head",
    "nsfw_clip",
    1,
    "relu",
    "sigmoid",
    "Linear layers (ReLU between them) ending in 1 output, an NSFW logit "
    "(LAION's CLIP ViT-L/14 detector: 768 -> 64 -> 512 -> 256 -> 1)",
    "clip-l14-nsfw-head.pth",
)


def linear_layers(
    state: dict[str, Any], path: str | Path, kind: HeadKind
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The state dict's Linear layers as (module name, float32 weight (out, in), bias (out,)),
    in order.

    Raises InputError unless it holds nothing but weights and biases of a chain of Linear
    layers ending in `kind.outputs` outputs."""
    import numpy as np

    def refuse(problem: str) -> InputError:
        return InputError(f"{path}: not {kind.title} ({problem}); expected {kind.expected}")

    modules: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if param not in ("weight", "bias"):
            raise refuse(f"unexpected tensor {key!r}")
        modules.setdefault(module, {})[param] = tensor
    layers = []
    for module, params in modules.items():
        label = f"{module}." if module else ""
        if "weight" not in params:
            raise refuse(f"{label}bias without a weight")
        weight = params["weight"].detach().float().cpu().numpy()
        if weight.ndim != 2:
            raise refuse(f"{label}weight has shape {tuple(weight.shape)}, not (out, in)")
        bias = params.get("bias")
        bias = (
            np.zeros(weight.shape[0], np.float32)
            if bias is None
            else bias.detach().float().cpu().numpy()
        )
        if bias.shape != (weight.shape[0],):
            raise refuse(f"{label}bias has shape {tuple(bias.shape)} for {weight.shape[0]} outputs")
        if layers and layers[-1][1].shape[0] != weight.shape[1]:
            raise refuse(
                f"{label}weight takes {weight.shape[1]} inputs after a layer of "
                f"{layers[-1][1].shape[0]} outputs"
            )
        layers.append((module, weight, bias))
    if not layers:
        raise refuse("no Linear layers")
    if layers[-1][1].shape[0] != kind.outputs:
        raise refuse(f"its last layer has {layers[-1][1].shape[0]} outputs")
    return layers


def _sequential_index(module: str) -> tuple[str, int] | None:
    """``layers.6`` -> ("layers", 6); ``6`` -> ("", 6); ``fc1`` -> None."""
    prefix, _, last = module.rpartition(".")
    return (prefix, int(last)) if last.isdigit() else None


def activation_between(first: str, second: str) -> bool:
    """Whether anything sits between two consecutive Linear layers of a state dict.

    Inside one ``nn.Sequential`` the indices say so: ``layers.6`` then ``layers.7`` are
    adjacent (as in LAION's heads, whose last two Linear layers have nothing between them),
    while a gap holds other modules (ReLU, Dropout). Named modules are taken to have one."""
    a, b = _sequential_index(first), _sequential_index(second)
    return not (a is not None and b is not None and a[0] == b[0] and b[1] == a[1] + 1)


def fold_affine(layers: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Linear layers with nothing between them as one: x @ W.T + b, computed in float64."""
    weight = layers[0][0].astype("float64")
    bias = layers[0][1].astype("float64")
    for next_weight, next_bias in layers[1:]:
        weight = next_weight.astype("float64") @ weight
        bias = next_weight.astype("float64") @ bias + next_bias.astype("float64")
    return weight.astype("float32"), bias.astype("float32")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.exp(-np.logaddexp(0.0, -x))


def fold_runs(
    layers: list[tuple[str, np.ndarray, np.ndarray]], activated: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Linear layers grouped into runs with no activation inside, each run folded into one;
    the head applies its activation between the runs. Without an activation at all (the
    aesthetic MLP) the whole head is one affine map."""
    runs: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for i, (name, weight, bias) in enumerate(layers):
        starts_run = i == 0 or (activated and activation_between(layers[i - 1][0], name))
        if starts_run:
            runs.append([])
        runs[-1].append((weight, bias))
    return [fold_affine(run) if len(run) > 1 else run[0] for run in runs]


class EmbeddingHead:
    """An EmbeddingScorer: an MLP head over another model's image embeddings."""

    def __init__(
        self,
        kind: HeadKind,
        checkpoint: str | Path,
        embedder: str = DEFAULT_EMBEDDER,
        name: str | None = None,
    ) -> None:
        self.kind = kind
        self.path = Path(checkpoint).expanduser()
        self.embedder = embedder
        self.name = name or f"{kind.name}:{checkpoint}"
        self.columns = {kind.column: "float32"}
        layers = linear_layers(load_state_dict_file(self.path), self.path, kind)
        self.layers = fold_runs(layers, kind.hidden_activation is not None)
        self.dim = self.layers[0][0].shape[1]
        log.debug(
            "%s: %d layers over %d-d %s embeddings", self.name, len(self.layers), self.dim, embedder
        )

    def logits(self, embeddings: Any) -> np.ndarray:
        """(N, dim) embeddings -> (N, outputs) float32, before the output function."""
        import numpy as np

        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(
                f"{self.name}: the head takes {self.dim}-d embeddings; {self.embedder} gave "
                f"{tuple(x.shape)}"
            )
        last = len(self.layers) - 1
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if i < last and self.kind.hidden_activation == "relu":
                np.maximum(x, 0.0, out=x)
        return x

    def score_embeddings(self, embeddings: Any) -> dict[str, np.ndarray]:
        """(N, dim) embeddings -> {column: (N,) float32}."""
        import numpy as np

        x = self.logits(embeddings)
        if self.kind.output == "sigmoid":
            values = _sigmoid(x[:, 0])
        elif self.kind.output == "softmax0":
            values = _sigmoid(x[:, 0] - x[:, 1])  # softmax over 2 logits, first entry
        else:
            values = x[:, 0]
        return {self.kind.column: np.asarray(values, dtype=np.float32)}


def load_head(kind: HeadKind, argument: str | None) -> EmbeddingHead:
    """The head for ``kind.name:CHECKPOINT[@MODEL]``."""
    path, embedder = common.split_head_argument(argument, DEFAULT_EMBEDDER)
    if path is None:
        raise InputError(
            f"{kind.name} needs a checkpoint: --scores {kind.name}:/path/{kind.example} "
            f"(append @MODEL to read another model's embeddings than {DEFAULT_EMBEDDER})"
        )
    return EmbeddingHead(kind, path, embedder, name=f"{kind.name}:{argument}")


@register("aesthetic", "scorer")
def load_aesthetic(argument: str | None) -> EmbeddingHead:
    """``aesthetic:/ckpt/sac+logos+ava1-l14-linearMSE.pth[@MODEL]``: LAION aesthetic v2."""
    return load_head(AESTHETIC, argument)


@register("watermark", "scorer")
def load_watermark(argument: str | None) -> EmbeddingHead:
    """``watermark:/ckpt/head.pth[@MODEL]``: a 2-output watermark head over embeddings."""
    return load_head(WATERMARK, argument)


@register("nsfw-clip", "scorer")
def load_nsfw_clip(argument: str | None) -> EmbeddingHead:
    """``nsfw-clip:/ckpt/head.pth[@MODEL]``: LAION's CLIP-based NSFW head, ported to torch."""
    return load_head(NSFW_CLIP, argument)
