"""Scorers: NudeNet NSFW, OpenCV and SCRFD faces, fastText language, better-profanity, and heads
over embeddings (LAION aesthetic / watermark / NSFW), each on inputs whose answer is known.
Everything runs offline on the CPU with the models that ship in the packages; heads are trained
here on tiny data, and SCRFD's decoding runs on a toy ONNX model exported here."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from coyo_db.errors import CoyoDbError, InputError  # noqa: E402
from coyo_db.ingest import registry  # noqa: E402
from coyo_db.ingest.image_types import (  # noqa: E402
    EmbeddingScorer,
    ImageScorer,
    Preprocess,
    TextScorer,
)
from coyo_db.ingest.scorers import common, faces, heads, nsfw, text  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SCORER_MODULES = (
    "coyo_db.ingest.scorers.nsfw",
    "coyo_db.ingest.scorers.faces",
    "coyo_db.ingest.scorers.text",
    "coyo_db.ingest.scorers.heads",
)


def rgb(image: np.ndarray) -> np.ndarray:
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def batch_for(scorer, images: list[np.ndarray]) -> np.ndarray:
    """What the decode workers hand an ImageScorer: each image fitted to its Preprocess."""
    return np.stack([common.fit_image(rgb(image), scorer.preprocess) for image in images])


@pytest.fixture(scope="module")
def no_network():
    def refuse(*args, **kwargs):
        raise AssertionError("a scorer tried to reach the network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {
        "astronaut": skimage_data.astronaut(),  # one frontal face (Eileen Collins)
        "coffee": skimage_data.coffee(),  # no one
        "chelsea": skimage_data.chelsea(),  # a cat
        "camera": rgb(skimage_data.camera()),  # a man, face in three-quarter view
    }


@pytest.fixture(scope="module")
def captions() -> list[str]:
    with (FIXTURES / "coyo700m_rows.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


# ---- registry ------------------------------------------------------------------------------


def test_every_scorer_is_registered() -> None:
    names = set(registry.scorer_names())
    expected = {"nsfw", "nsfw-clip", "faces", "faces-scrfd", "language", "profanity"}
    assert expected | {"aesthetic", "watermark"} <= names
    assert sorted(names) == registry.registered("scorer")["scorer"]
    # scorers live in the same registry as every other model, in the role "scorer"
    found = registry.resolve("scorer", "aesthetic:/ckpt/sac+logos.pth@open_clip:ViT-L-14:/c.pt")
    assert found.entry.factory is heads.load_aesthetic
    assert found.argument == "/ckpt/sac+logos.pth@open_clip:ViT-L-14:/c.pt"
    assert registry.resolve("scorer", "faces").entry.factory is faces.load_faces
    with pytest.raises(InputError, match=r"unknown scorer 'nope'; known: aesthetic, faces"):
        registry.load_scorer("nope")
    with pytest.raises(InputError, match="unknown scorer 'effnet-lite0'"):
        registry.load_scorer("effnet-lite0")  # an embedder is no scorer


def test_scorer_modules_import_nothing_heavy() -> None:
    """Registering scorers (which any model lookup does) must not import their libraries."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in SCORER_MODULES)
        + "heavy = {'torch', 'cv2', 'onnxruntime', 'fasttext', 'better_profanity', 'nudenet'}\n"
        + "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_fit_image_follows_the_preprocess_modes(photos) -> None:
    cat = photos["chelsea"]  # 300 x 451
    for mode in ("crop", "squash", "pad"):
        fitted = common.fit_image(cat, Preprocess(128, mode, "bilinear"))
        assert fitted.shape == (128, 128, 3) and fitted.dtype == np.uint8
    padded = common.fit_image(cat, Preprocess(128, "pad", "bilinear"))
    assert padded[:20].max() == 0 and padded[-20:].max() == 0  # 85 rows of cat, centred
    assert padded[30:100].mean() > 20
    with pytest.raises(InputError, match="uint8"):
        common.pixel_batch(np.zeros((1, 8, 8, 3), np.float32), Preprocess(8))
    with pytest.raises(InputError, match=r"\(N, H, W, 3\)"):
        common.pixel_batch(np.zeros((8, 8, 3), np.uint8), Preprocess(8))


# ---- nsfw: NudeNet ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nudenet_scorer(no_network) -> nsfw.NudeNetScorer:
    return registry.load_scorer("nsfw")


def test_nudenet_labels_are_the_packages(nudenet_scorer) -> None:
    import nudenet.nudenet

    assert list(nsfw.LABELS) == list(vars(nudenet.nudenet)["__labels"])
    assert set(nsfw.EXPOSED) <= set(nsfw.LABELS)
    assert isinstance(nudenet_scorer, ImageScorer)
    assert nudenet_scorer.preprocess == Preprocess(320, "pad", "bilinear")
    assert nudenet_scorer.columns == {"nsfw_nudenet": "float32"}


def test_nudenet_scores_benign_photos_low(nudenet_scorer, photos) -> None:
    batch = batch_for(nudenet_scorer, list(photos.values()))
    scores = nudenet_scorer.score_images(batch)["nsfw_nudenet"]
    assert scores.dtype == np.float32 and scores.shape == (len(photos),)
    assert np.all(scores >= 0.0)
    # Below NudeDetector's own detection threshold: it would report nothing exposed.
    assert np.all(scores < nsfw.DETECTION_THRESHOLD), dict(zip(photos, scores, strict=True))


def test_nudenet_reads_faces_in_the_right_class_order(nudenet_scorer, photos) -> None:
    """The detector sees the astronaut's face as FACE_FEMALE and the cameraman's as FACE_MALE:
    the preprocessing and the class order are NudeNet's."""
    batch = batch_for(nudenet_scorer, [photos["astronaut"], photos["camera"]])
    per_class = nsfw.class_scores(nudenet_scorer.raw_outputs(batch))
    best = [nsfw.LABELS[i] for i in per_class.argmax(axis=1)]
    assert best == ["FACE_FEMALE", "FACE_MALE"]
    assert per_class.max(axis=1).min() > 0.5


def test_nudenet_input_matches_the_librarys(nudenet_scorer, photos) -> None:
    """On an image already 320 x 320, our batch gives NudeDetector's own tensor's outputs.

    NudeDetector swaps channels twice (``cvtColor(RGBA2BGR)`` on 3 channels, then
    ``swapRB``), so an array handed to it reaches the model in its own order: RGB here."""
    import nudenet.nudenet

    image = np.ascontiguousarray(photos["astronaut"][96:416, 96:416])
    blob = vars(nudenet.nudenet)["_read_image"](image, 320)[0]
    np.testing.assert_allclose(blob[0, :, 5, 7] * 255.0, image[5, 7], atol=1e-3)  # RGB, 0..1
    theirs = nudenet_scorer.session.run(None, {nudenet_scorer.input_name: blob})[0]
    ours = nudenet_scorer.raw_outputs(image[None])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def plant(outputs: np.ndarray, image: int, anchor: int, box, classes: dict[str, float]) -> None:
    outputs[image, :4, anchor] = box
    for name, score in classes.items():
        outputs[image, 4 + nsfw.LABELS.index(name), anchor] = score


def test_nsfw_score_mapping_agrees_with_nudenets_postprocess() -> None:
    """Synthetic raw outputs: the score is the best exposed-class detection, as NudeNet's own
    postprocess reports it; an anchor whose best class is a covered one does not count."""
    import nudenet.nudenet

    postprocess = vars(nudenet.nudenet)["_postprocess"]
    outputs = np.zeros((4, 22, 2100), dtype=np.float32)
    # image 0: a face, an exposed part, and a covered part whose exposed score is second best
    plant(outputs, 0, 10, (60, 60, 40, 40), {"FACE_FEMALE": 0.9})
    plant(outputs, 0, 700, (250, 250, 40, 40), {"BUTTOCKS_EXPOSED": 0.6, "BUTTOCKS_COVERED": 0.3})
    plant(
        outputs,
        0,
        1500,
        (160, 60, 30, 30),
        {"FEMALE_BREAST_COVERED": 0.7, "FEMALE_BREAST_EXPOSED": 0.65},
    )
    # image 1: covered parts and a face only
    plant(outputs, 1, 5, (100, 100, 50, 50), {"FEMALE_GENITALIA_COVERED": 0.8})
    plant(outputs, 1, 9, (200, 200, 50, 50), {"FACE_MALE": 0.95, "ANUS_EXPOSED": 0.1})
    # image 2: a weak exposed reading NudeDetector would not report (below 0.2)
    plant(outputs, 2, 42, (100, 100, 50, 50), {"MALE_GENITALIA_EXPOSED": 0.15})
    # image 3: nothing at all
    scores = nsfw.exposed_scores(outputs)
    np.testing.assert_allclose(scores, [0.6, 0.0, 0.15, 0.0], atol=1e-6)
    for i, expected in enumerate([0.6, 0.0, 0.0, 0.0]):
        detections = postprocess([outputs[i : i + 1]], 0, 0, 1, 1, 320, 320, 320, 320)
        exposed = [d["score"] for d in detections if d["class"] in nsfw.EXPOSED]
        assert max(exposed, default=0.0) == pytest.approx(expected, abs=1e-6)


def test_nsfw_errors() -> None:
    with pytest.raises(InputError, match="not found"):
        registry.load_scorer("nsfw:/nonexistent/640m.onnx")
    with pytest.raises(InputError, match="shape"):
        nsfw.exposed_scores(np.zeros((1, 10, 5), dtype=np.float32))


# ---- faces ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def haar() -> faces.HaarFaces:
    return registry.load_scorer("faces")


def test_haar_counts_faces(haar, photos) -> None:
    assert isinstance(haar, ImageScorer)
    batch = batch_for(haar, [photos["astronaut"], photos["coffee"], photos["chelsea"]])
    counts = haar.score_images(batch)["num_faces_opencv"]
    assert counts.dtype == np.int32
    assert counts.tolist() == [1, 0, 0]


def test_haar_fits_other_sizes(haar, photos) -> None:
    """A batch that is not at the scorer's size is letterboxed first (same answer)."""
    counts = haar.score_images(photos["astronaut"][None])["num_faces_opencv"]
    assert counts.tolist() == [1]


def test_haar_refuses_a_bad_cascade(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        registry.load_scorer(f"faces:{tmp_path / 'missing.xml'}")
    bad = tmp_path / "bad.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(InputError, match="not an OpenCV cascade"):
        registry.load_scorer(f"faces:{bad}")


def test_scrfd_anchor_centres_follow_insightface() -> None:
    height = width = 64
    for stride, anchors in ((8, 2), (16, 2), (32, 1)):
        h, w = height // stride, width // stride
        theirs = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32)
        theirs = (theirs * stride).reshape((-1, 2))
        if anchors > 1:
            theirs = np.stack([theirs] * anchors, axis=1).reshape((-1, 2))
        np.testing.assert_array_equal(faces.anchor_centres(height, width, stride, anchors), theirs)


def test_scrfd_decoding_on_planted_outputs() -> None:
    """Two images, 64 x 64 input: scores and distances planted by hand."""
    layout = faces.ScrfdLayout((8, 16, 32), 2, False)
    size = 64
    scores, distances = [], []
    for stride in layout.strides:
        count = (size // stride) ** 2 * 2
        scores.append(np.zeros((2, count, 1), np.float32))
        distances.append(np.full((2, count, 4), 1.0, np.float32))
    # image 0, stride 8: a face at location (x=2, y=1) -> index (1 * 8 + 2) * 2, both anchors,
    # and a weaker overlapping box from stride 16 at (x=1, y=0) -> NMS keeps one
    scores[0][0, (1 * 8 + 2) * 2] = 0.9
    scores[0][0, (1 * 8 + 2) * 2 + 1] = 0.8
    # image 0, stride 32: a second face at (x=1, y=1), far away
    scores[2][0, (1 * 2 + 1) * 2] = 0.7
    distances[2][0, (1 * 2 + 1) * 2] = (0.25, 0.25, 0.5, 0.5)
    # image 1: only a score under the threshold
    scores[1][1, 3] = 0.49
    decoded = faces.decode_scrfd([*scores, *distances], layout, (size, size))
    boxes, found = decoded[0]
    assert sorted(found.tolist(), reverse=True) == pytest.approx([0.9, 0.8, 0.7])
    # centre (16, 8) +- 1 * 8; centre (32, 32) - (8, 8) and + (16, 16)
    assert [8, 0, 24, 16] in boxes.tolist()
    assert [24, 24, 48, 48] in boxes.tolist()
    assert [faces.count_after_nms(b, s) for b, s in decoded] == [2, 0]


def export_toy_scrfd(path: Path, batched: bool) -> None:
    """A toy model in SCRFD's output layout (strides 8/16/32, 2 anchors, no keypoints) that
    reads every bright 16 x 16 cell of the stride-16 grid as a 16 x 16 face."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class ToyScrfd(torch.nn.Module):
        def forward(self, x):
            scores, boxes = [], []
            for stride in (8, 16, 32):
                cells = torch.nn.functional.avg_pool2d(x.mean(dim=1, keepdim=True), stride)
                cells = cells.flatten(1).repeat_interleave(2, dim=1).unsqueeze(-1)
                if stride == 16:  # back from (x - 127.5) / 128 to 0..1
                    score = ((cells * 128.0 + 127.5) / 255.0).clamp(0.0, 1.0)
                else:
                    score = cells * 0.0
                box = (cells * 0.0 + 0.5).expand(-1, -1, 4)  # 0.5 * 16 = 8 px each way
                scores.append(score if batched else score[0])
                boxes.append(box if batched else box[0])
            return (*scores, *boxes)

    axes = {0: "batch", 2: "height", 3: "width"} if batched else {2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ToyScrfd(),
            (torch.zeros(1, 3, 64, 64),),
            str(path),
            dynamo=False,
            input_names=["input.1"],
            dynamic_axes={"input.1": axes},
        )


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-per-call"])
def test_scrfd_scorer_on_a_toy_onnx_model(tmp_path, batched) -> None:
    path = tmp_path / "toy-scrfd.onnx"
    export_toy_scrfd(path, batched)
    scorer = registry.load_scorer(f"faces-scrfd:{path}")
    assert isinstance(scorer, ImageScorer)
    assert scorer.columns == {"num_faces_scrfd": "int32"}
    assert scorer.batched is batched
    pixels = np.zeros((3, 640, 640, 3), dtype=np.uint8)
    pixels[1, 32:48, 64:80] = 255
    pixels[2, 32:48, 64:80] = 255
    pixels[2, 320:336, 480:496] = 255
    counts = scorer.score_images(pixels)["num_faces_scrfd"]
    assert counts.dtype == np.int32
    assert counts.tolist() == [0, 1, 2]


def test_scrfd_refuses_missing_and_invalid_models(tmp_path) -> None:
    with pytest.raises(InputError, match="needs a model file"):
        registry.load_scorer("faces-scrfd")
    with pytest.raises(InputError, match="not found"):
        registry.load_scorer(f"faces-scrfd:{tmp_path / 'det_10g.onnx'}")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"<html>not a model</html>")
    with pytest.raises(InputError, match=r"junk\.onnx: not an ONNX model"):
        registry.load_scorer(f"faces-scrfd:{junk}")
    nudenet_model = nsfw.shipped_model_path()  # a real ONNX model, but a different layout
    with pytest.raises(InputError, match="not an SCRFD model"):
        registry.load_scorer(f"faces-scrfd:{nudenet_model}")


# ---- language ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def language(no_network) -> text.LanguageScorer:
    return registry.load_scorer("language")


def test_language_of_known_captions(language) -> None:
    assert isinstance(language, TextScorer)
    texts = [
        "A golden retriever puppy playing in the snow",
        "Ein kleiner Hund spielt im Schnee vor dem Haus",
        "눈 속에서 놀고 있는 강아지 사진",
        "雪の中で遊んでいる子犬の写真",
        "Line one of a caption\nand line two, in English",
        "A VERY LOUD CAPTION ABOUT A DOG IN THE PARK",
    ]
    result = language.score_texts(texts)
    assert result["language"].tolist() == ["en", "de", "ko", "ja", "en", "en"]
    assert result["language_prob"].dtype == np.float32
    assert np.all(result["language_prob"] > 0.5)
    assert np.all(result["language_prob"] <= 1.0)


def test_language_of_missing_captions_is_null(language) -> None:
    result = language.score_texts([None, "", "   \n ", "A cat on a sofa"])
    assert result["language"].tolist() == [None, None, None, "en"]
    assert np.isnan(result["language_prob"][:3]).all()
    assert not np.isnan(result["language_prob"][3])


def test_language_of_real_coyo_captions(language, captions) -> None:
    languages = language.score_texts(captions)["language"].tolist()
    assert len(languages) == len(captions)
    assert languages.count("en") >= len(captions) - 2


def test_language_uses_the_model_in_the_wheel(tmp_path) -> None:
    path = text.shipped_lid_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size < 2_000_000
    with pytest.raises(InputError, match="not found"):
        registry.load_scorer(f"language:{tmp_path / 'lid.176.bin'}")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="not a fastText model"):
        registry.load_scorer(f"language:{junk}")


# ---- profanity -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profanity() -> text.ProfanityScorer:
    return registry.load_scorer("profanity")


@pytest.fixture(scope="module")
def library():
    from better_profanity import Profanity

    return Profanity()


def test_profanity_of_known_words(profanity, library, captions) -> None:
    assert isinstance(profanity, TextScorer)
    words = sorted(str(w) for w in library.CENSOR_WORDSET if str(w).isalpha())
    profane = [f"look at this {word} here" for word in words[::40]]
    clean = [
        "a nice cat on the sofa",
        "class act at the classic assassination museum",  # list words inside longer words
        "Scunthorpe United",
        None,
        "",
    ]
    result = profanity.score_texts([*profane, *clean, *captions])["profanity"]
    assert result.dtype == np.bool_
    assert result[: len(profane)].all()
    assert not result[len(profane) :].any()
    assert not any(library.contains_profanity(c) for c in captions)


def test_profanity_catches_the_librarys_variants(profanity) -> None:
    texts = ["sh1t happens", "what the FUCK", "f u c k this", "a$$hole", "blow job", "ass-fucker"]
    assert profanity.score_texts(texts)["profanity"].all()


def test_profanity_agrees_with_contains_profanity(profanity, library) -> None:
    """Seeded captions mixing list words (with substitutions, capitals, splits, non-Latin
    neighbours) and clean words: the same answer as the library on each. Captions end in
    " ." to stay clear of the library's end-of-text quirk (see the module docstring)."""
    rng = random.Random(7)
    words = [str(w) for w in library.CENSOR_WORDSET]
    filler = ["a", "photo", "of", "the", "cat", "on", "sofa", "class", "glass", "therapist"]
    filler += ["Привет", "Ünïcødé", "2024"]
    separators = [" ", "-", ".", "_", "!", ", ", "你", "é", "\n", "'"]

    def disguise(word: str) -> str:
        out = []
        for char in word:
            if char in library.CHARS_MAPPING and rng.random() < 0.2:
                char = rng.choice(library.CHARS_MAPPING[char])
            out.append(char.upper() if rng.random() < 0.2 else char)
            if rng.random() < 0.05:
                out.append(rng.choice(separators))
        return "".join(out)

    texts = []
    for _ in range(800):
        parts = [rng.choice(filler) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            parts.insert(rng.randint(0, len(parts)), disguise(rng.choice(words)))
        texts.append("".join(p + rng.choice([" ", " ", " ", ", ", "-"]) for p in parts) + " .")
    ours = profanity.score_texts(texts)["profanity"].tolist()
    theirs = [library.contains_profanity(t) for t in texts]
    assert 200 < sum(theirs) < 600
    assert [t for t, a, b in zip(texts, ours, theirs, strict=True) if a != b] == []


def test_profanity_with_a_word_list(tmp_path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("kumquat\nred herring\n", encoding="utf-8")
    scorer = registry.load_scorer(f"profanity:{words}")
    result = scorer.score_texts(["a KUMQU4T tree", "a red herring", "a redherring", "fuck"])
    assert result["profanity"].tolist() == [True, True, False, False]
    with pytest.raises(InputError, match="not found"):
        registry.load_scorer(f"profanity:{tmp_path / 'none.txt'}")


# ---- heads over embeddings -----------------------------------------------------------------


def embeddings(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n L2-normalised random embeddings and a label separable by a random direction."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    direction = rng.standard_normal(dim).astype(np.float32)
    return x, (x @ direction > 0).astype(np.int64)


def train(model, x: np.ndarray, target, loss_fn, steps: int = 100, lr: float = 1e-3):
    """Full-batch Adam, on one thread (tiny matrices; more threads only contend)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    inputs = torch.from_numpy(x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            optimiser.zero_grad()
            loss = loss_fn(model(inputs), target)
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


class AestheticV2:
    """LAION's improved aesthetic predictor, as its code defines it."""

    @staticmethod
    def build(dim: int = 768):
        torch = pytest.importorskip("torch")
        nn = torch.nn

        class MLP(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.layers = nn.Sequential(
                    nn.Linear(dim, 1024),
                    nn.Dropout(0.2),
                    nn.Linear(1024, 128),
                    nn.Dropout(0.2),
                    nn.Linear(128, 64),
                    nn.Dropout(0.1),
                    nn.Linear(64, 16),
                    nn.Linear(16, 1),
                )

            def forward(self, x):
                return self.layers(x)

        torch.manual_seed(0)
        return MLP()


@pytest.fixture(scope="module")
def aesthetic_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    x, label = embeddings(64, 768, seed=1)
    rating = torch.from_numpy(np.where(label == 1, 7.0, 3.0).astype(np.float32))[:, None]
    model = train(AestheticV2.build(), x, rating, torch.nn.functional.mse_loss)
    path = tmp_path_factory.mktemp("heads") / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(model.state_dict(), path)
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[:, 0].numpy()
    return path, x, label, expected


def test_aesthetic_head_loads_laion_v2_layout(aesthetic_checkpoint) -> None:
    path, x, label, expected = aesthetic_checkpoint
    torch = pytest.importorskip("torch")
    keys = list(torch.load(path, weights_only=True))
    assert keys == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    scorer = registry.load_scorer(f"aesthetic:{path}")
    assert isinstance(scorer, EmbeddingScorer)
    assert scorer.embedder == heads.DEFAULT_EMBEDDER
    assert scorer.columns == {"aesthetic_laion_v2": "float32"}
    assert len(scorer.layers) == 1  # no activations: folded into one affine map
    rating = scorer.score_embeddings(x)["aesthetic_laion_v2"]
    assert rating.dtype == np.float32 and rating.shape == (64,)
    np.testing.assert_allclose(rating, expected, atol=1e-4)
    assert ((rating > 5.0) == (label == 1)).all()


def test_watermark_head_with_another_embedder(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    x, label = embeddings(64, 512, seed=2)
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))
    watermarked = label == 1
    # LAION's order: class 0 is "watermark", class 1 "clear"
    target = torch.from_numpy(np.where(watermarked, 0, 1))
    head = train(head, x, target, nn.functional.cross_entropy, lr=1e-2)
    path = tmp_path / "watermark-head.pt"
    torch.save({"state_dict": head.state_dict()}, path)
    scorer = registry.load_scorer(f"watermark:{path}@open_clip:ViT-B-32:random")
    assert isinstance(scorer, EmbeddingScorer)
    assert scorer.embedder == "open_clip:ViT-B-32:random"
    probability = scorer.score_embeddings(x)["watermark_laion"]
    with torch.no_grad():
        expected = head(torch.from_numpy(x)).softmax(dim=1)[:, 0].numpy()
    np.testing.assert_allclose(probability, expected, atol=1e-5)
    assert ((probability > 0.5) == watermarked).all()
    with pytest.raises(InputError, match="512-d embeddings"):
        scorer.score_embeddings(np.zeros((2, 768), np.float32))


def test_nsfw_clip_head(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    x, label = embeddings(64, 768, seed=3)
    torch.manual_seed(0)
    # LAION's NSFW heads end in two Linear layers with nothing between them
    head = nn.Sequential(
        nn.Linear(768, 64),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 16),
        nn.Linear(16, 1),
    )
    target = torch.from_numpy(label.astype(np.float32))[:, None]
    head = train(head, x, target, nn.functional.binary_cross_entropy_with_logits, lr=1e-2)
    path = tmp_path / "clip-l14-nsfw-head.pth"
    torch.save(head.state_dict(), path)
    scorer = registry.load_scorer(f"nsfw-clip:{path}")
    assert [w.shape for w, _ in scorer.layers] == [(64, 768), (32, 64), (1, 32)]  # 16 folded
    score = scorer.score_embeddings(x)["nsfw_clip"]
    with torch.no_grad():
        expected = torch.sigmoid(head(torch.from_numpy(x)))[:, 0].numpy()
    np.testing.assert_allclose(score, expected, atol=1e-5)
    assert ((score > 0.5) == (label == 1)).all()
    assert ((score >= 0.0) & (score <= 1.0)).all()


def test_activation_between_linear_layers() -> None:
    assert not heads.activation_between("layers.15", "layers.16")
    assert not heads.activation_between("6", "7")
    assert heads.activation_between("layers.0", "layers.2")  # a Dropout or ReLU between
    assert heads.activation_between("classifier.0", "classifier.3")
    assert heads.activation_between("fc1", "fc2")
    assert heads.activation_between("a.1", "b.2")


def test_heads_refuse_wrong_checkpoints(tmp_path, aesthetic_checkpoint) -> None:
    torch = pytest.importorskip("torch")
    aesthetic_path = aesthetic_checkpoint[0]

    def refused(spec: str, *fragments: str) -> None:
        with pytest.raises(CoyoDbError) as caught:
            registry.load_scorer(spec)
        message = str(caught.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message, message

    refused("aesthetic", "needs a checkpoint", "aesthetic:/path/")
    refused(f"aesthetic:{tmp_path / 'none.pth'}", "checkpoint not found", "none.pth")
    # an aesthetic head (1 output) is not a watermark head (2 outputs)
    refused(f"watermark:{aesthetic_path}", str(aesthetic_path), "1 outputs", "expected")
    conv = tmp_path / "conv.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), conv)
    refused(f"aesthetic:{conv}", str(conv), "(out, in)", "layers.{0,2,4,6,7}")
    batchnorm = tmp_path / "bn.pth"
    torch.save(
        torch.nn.Sequential(torch.nn.Linear(8, 1), torch.nn.BatchNorm1d(1)).state_dict(), batchnorm
    )
    refused(f"aesthetic:{batchnorm}", str(batchnorm), "unexpected tensor")
    broken = tmp_path / "broken.pth"
    torch.save({"0.weight": torch.zeros(16, 8), "1.weight": torch.zeros(1, 32)}, broken)
    refused(f"nsfw-clip:{broken}", str(broken), "takes 32 inputs after a layer of 16 outputs")
    text_file = tmp_path / "notes.pth"
    text_file.write_text("not weights")
    refused(f"aesthetic:{text_file}", str(text_file), "not a loadable weights file")
    pickled = tmp_path / "object.pth"
    torch.save({"layers": torch.nn.Linear(768, 1)}, pickled)  # a module, not a state dict
    refused(f"aesthetic:{pickled}", str(pickled))


def test_split_head_argument(tmp_path) -> None:
    default = heads.DEFAULT_EMBEDDER
    assert common.split_head_argument(None, default) == (None, default)
    assert common.split_head_argument("/c/a.pth", default) == ("/c/a.pth", default)
    assert common.split_head_argument("/c/a.pth@effnet-lite0", default) == (
        "/c/a.pth",
        "effnet-lite0",
    )
    odd = tmp_path / "user@host"
    odd.mkdir()
    (odd / "a.pth").write_bytes(b"")
    spec = f"{odd / 'a.pth'}@open_clip:ViT-B-32:random"
    assert common.split_head_argument(spec, default) == (
        str(odd / "a.pth"),
        "open_clip:ViT-B-32:random",
    )
    assert common.split_head_argument(str(odd / "a.pth"), default) == (str(odd / "a.pth"), default)
    with pytest.raises(InputError):
        common.split_head_argument("/c/a.pth@", default)
