"""Seeded plain (low-texture) images with planted copies and distractors.

For the layout verification (:mod:`coyo_db.audit.layout`) and its benchmark: references that
give SIFT little or nothing, drawn with numpy and Pillow alone, of seven kinds (:data:`KINDS`):
linear and radial gradients of 2-3 colour stops; 2-4 flat shapes on a flat or gradient
background; a small logo (a shape and 2-5 letters in Pillow's default font) on a plain
background; a flat pictogram of 2-4 colours, sometimes on a rounded tile; a shaded product
(bottle, box, can, jar, ball, often with a label band) on white with a soft shadow; shaded
spheres and cubes on a plain or gradient background.

One copy of each reference per transform (:data:`TRANSFORMS`): ``resize`` (0.3x-2x), ``crop``
(50-90% of each side, anywhere; for the kinds with an object the window keeps its centre, as a
crop of plain background alone is a blank image), ``mirror``, ``brightness`` (contrast 0.75-1.3
and offset -40..40, clipped), ``jpeg`` (quality 30-90), ``combo`` (crop, resize 0.5x-1.5x, JPEG
30-90) and ``text`` (a caption of 1-3 words, 5-8% of the height). Distractors are other images
of the same kinds; :data:`HARD_SHARE` of them are variants of a reference: a linear gradient's
colours at least 45 degrees from its direction and from its mirror image's, a radial
gradient's colours in reverse order, the same shapes elsewhere, the same logo elsewhere or on
another background, the same icon, product or render in other colours.

:func:`plain_set` is deterministic given its seed; ``split="dev"`` and ``split="test"`` draw from
disjoint seed streams, so thresholds tuned on dev are measured on test.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

KINDS = ("gradient", "radial", "shapes", "logo", "icon", "product", "render")
TRANSFORMS = ("resize", "crop", "mirror", "brightness", "jpeg", "combo", "text")
HARD_SHARE = 0.4
SPLITS = {"dev": 0, "test": 1}
WORDS = ("sale", "new", "photo", "free", "shop", "hello", "best", "2024", "top", "view", "demo")

Params = dict[str, Any]


@dataclass(frozen=True)
class Reference:
    kind: str
    data: bytes


@dataclass(frozen=True)
class PlainCopy:
    """A copy of reference `ref` (its index) made by `transform`."""

    data: bytes
    ref: int
    transform: str


@dataclass(frozen=True)
class Distractor:
    """An unrelated image of `kind`; `hard_of` is the reference it is a hard variant of."""

    data: bytes
    kind: str
    hard_of: int | None


class PlainSet(NamedTuple):
    references: list[Reference]
    copies: list[PlainCopy]
    distractors: list[Distractor]


def plain_set(
    split: str = "dev", n_references: int = 70, n_distractors: int = 350, seed: int = 0
) -> PlainSet:
    """References (kinds in turn), one copy of each per transform, and distractors (kinds in
    turn, :data:`HARD_SHARE` of them hard variants of a reference of their kind)."""
    if split not in SPLITS:
        raise ValueError(f"split is 'dev' or 'test', got {split!r}")
    rng = np.random.default_rng([seed, SPLITS[split]])
    refs: list[Reference] = []
    params: list[Params] = []
    for i in range(n_references):
        kind = KINDS[i % len(KINDS)]
        p = _random_params(kind, rng)
        params.append(p)
        refs.append(Reference(kind, _encode(_draw(p), rng, reference=True)))
    copies = []
    for i, p in enumerate(params):
        image = _draw(p)
        for transform in TRANSFORMS:
            copies.append(PlainCopy(_transform(image, p, transform, rng), i, transform))
    distractors = []
    for j in range(n_distractors):
        kind = KINDS[j % len(KINDS)]
        same = [i for i, r in enumerate(refs) if r.kind == kind]
        hard_of = int(rng.choice(same)) if same and rng.random() < HARD_SHARE else None
        p = _random_params(kind, rng) if hard_of is None else _hard(params[hard_of], rng)
        distractors.append(Distractor(_encode(_draw(p), rng, reference=True), kind, hard_of))
    return PlainSet(refs, copies, distractors)


def _colour(
    rng: np.random.Generator, away: Sequence[tuple[int, ...]] = (), far: float = 0.0
) -> tuple[int, ...]:
    """A random colour at least `far` (RGB distance) from each of `away`."""
    for _ in range(200):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if all(math.dist(c, a) >= far for a in away):
            return c
    return c


def _stops(rng: np.random.Generator) -> list[tuple[int, ...]]:
    colours = [_colour(rng)]
    for _ in range(int(rng.integers(1, 3))):
        colours.append(_colour(rng, [colours[-1]], 140))
    return colours


def _size(rng: np.random.Generator, square: bool = False) -> tuple[int, int]:
    w, h = (int(v) for v in rng.integers(240, 520, 2))
    return (w // 2 + 8, w // 2 + 8) if square else (w, h)


def _random_params(kind: str, rng: np.random.Generator) -> Params:
    p: Params = {"kind": kind}
    p["size"] = _size(rng, square=kind == "icon")
    if kind == "gradient":
        p.update(stops=_stops(rng), angle=float(rng.uniform(0, 360)))
    elif kind == "radial":
        p.update(stops=_stops(rng), centre=tuple(rng.uniform(0.2, 0.8, 2)))
        p["radius"] = float(rng.uniform(0.4, 0.9))
    elif kind == "shapes":
        bg = _colour(rng)
        p["background"] = (bg, _colour(rng, [bg], 60) if rng.random() < 0.5 else bg)
        shapes = rng.choice(["ellipse", "rect", "triangle", "diamond"], int(rng.integers(2, 5)))
        p["shapes"] = [
            (str(kind), tuple(rng.uniform(0.15, 0.85, 2)), tuple(rng.uniform(0.15, 0.4, 2)), colour)
            for kind, colour in ((k, _colour(rng, [bg], 120)) for k in shapes)
        ]
    elif kind == "logo":
        bg = _colour(rng)
        p.update(background=bg, shape=str(rng.choice(["circle", "square", "triangle"])))
        p.update(mark=_colour(rng, [bg], 150), ink=_colour(rng, [bg], 150))
        letters = rng.choice(list("ABCDEFGHKLMNPRSTUXZ"), int(rng.integers(2, 6)))
        p.update(letters="".join(letters), centre=tuple(rng.uniform(0.25, 0.75, 2)))
        p["scale"] = float(rng.uniform(0.12, 0.2))
    elif kind == "icon":
        bg = _colour(rng) if rng.random() < 0.6 else (255, 255, 255)
        colours = [bg, _colour(rng, [bg], 150)]
        for _ in range(int(rng.integers(0, 3))):
            colours.append(_colour(rng, colours, 90))
        p.update(pictogram=str(rng.choice(list(_ICONS))), colours=colours)
        p.update(tile=bool(rng.random() < 0.4), centre=tuple(rng.uniform(0.42, 0.58, 2)))
        p["scale"] = float(rng.uniform(0.5, 0.7))
    elif kind == "product":
        colour = _colour(rng)
        p.update(object=str(rng.choice(["bottle", "box", "can", "ball", "jar"])), colour=colour)
        p.update(centre=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.35, 0.6))))
        p.update(scale=float(rng.uniform(0.3, 0.65)), girth=float(rng.uniform(0.7, 1.4)))
        top, height = float(rng.uniform(-0.2, 0.25)), float(rng.uniform(0.08, 0.25))
        p["label"] = (_colour(rng, [colour], 120), top, height) if rng.random() < 0.7 else None
    elif kind == "render":
        bg = _colour(rng)
        p["background"] = (bg, _colour(rng, [bg], 50))
        p["light"] = (*rng.uniform(-1, 1, 2), float(rng.uniform(0.5, 1.0)))
        n = int(rng.integers(1, 3))
        places = zip(rng.choice(["sphere", "cube"], n), rng.uniform(0.25, 0.75, n), strict=True)
        p["objects"] = [
            (str(o), (float(x), float(rng.uniform(0.35, 0.65))), float(rng.uniform(0.18, 0.32)),
             _colour(rng, [bg], 100))
            for o, x in places
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return p


def _hard(p: Params, rng: np.random.Generator) -> Params:
    """A variant of `p` that is no copy of it (nor of its mirror image, nor of a crop)."""
    q = dict(p)
    kind = p["kind"]
    if kind == "gradient":
        # >= 45 degrees from its direction, its mirror image's and, alike ends, their half-turns
        avoid = [p["angle"], 180.0 - p["angle"]]
        if math.dist(p["stops"][0], p["stops"][-1]) < 120:
            avoid += [p["angle"] + 180.0, -p["angle"]]
        while True:
            angle = float(rng.uniform(0, 360))
            if min(abs((angle - a + 180) % 360 - 180) for a in avoid) >= 45:
                return {**q, "angle": angle}
    if kind == "radial":
        q["stops"] = list(reversed(p["stops"]))
    elif kind == "shapes":
        q["shapes"] = [
            (s, _moved(c, rng, 0.85), size, colour) for s, c, size, colour in p["shapes"]
        ]
    elif kind == "logo":
        if rng.random() < 0.5:
            q["centre"] = _moved(p["centre"], rng, 0.75)
        else:  # the same mark on another background
            q["background"] = _colour(rng, [p["background"], p["mark"], p["ink"]], 120)
    elif kind == "icon":
        colours = list(p["colours"])
        q["colours"] = [_colour(rng, [c], 150) for c in colours]
    elif kind == "product":
        q["colour"] = _colour(rng, [p["colour"]], 150)
        if p["label"] is not None:
            q["label"] = (_colour(rng, [p["label"][0]], 150), *p["label"][1:])
    elif kind == "render":
        q["objects"] = [(o, c, s, _colour(rng, [col], 150)) for o, c, s, col in p["objects"]]
    return q


def _moved(centre: tuple[float, ...], rng: np.random.Generator, high: float) -> tuple[float, ...]:
    """Another centre in [1 - high, high]^2 at least 0.3 away."""
    while True:
        new = tuple(float(v) for v in rng.uniform(1 - high, high, 2))
        if math.dist(new, centre) >= 0.3:
            return new


def _focus(p: Params) -> tuple[float, float] | None:
    """The centre of the image's object, which a crop keeps; None for gradients and shapes."""
    if p["kind"] == "render":
        return p["objects"][0][1]
    return p["centre"] if p["kind"] in ("logo", "icon", "product") else None


def _ramp(t: np.ndarray, stops: list[tuple[int, ...]]) -> np.ndarray:
    xs = np.linspace(0.0, 1.0, len(stops))
    cols = np.asarray(stops, dtype=np.float64)
    out = np.stack([np.interp(t, xs, cols[:, c]) for c in range(3)], axis=-1)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)


def _linear(w: int, h: int, stops: list[tuple[int, ...]], angle: float) -> np.ndarray:
    x, y = _grid(w, h)
    a = math.radians(angle)
    t = (x - w / 2) * math.cos(a) + (y - h / 2) * math.sin(a)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    return _ramp(t, stops)


def _draw(p: Params):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw, ImageFilter

    w, h = p["size"]
    kind = p["kind"]
    if kind == "gradient":
        return Image.fromarray(_linear(w, h, p["stops"], p["angle"]))
    if kind == "radial":
        x, y = _grid(w, h)
        cx, cy = p["centre"]
        dist = np.hypot(x - cx * w, y - cy * h) / max(w, h)
        return Image.fromarray(_ramp(np.clip(dist / p["radius"], 0, 1), p["stops"]))
    if kind == "shapes":
        image = Image.fromarray(_linear(w, h, list(p["background"]), 90.0))
        draw = ImageDraw.Draw(image)
        for shape, (cx, cy), (sw, sh), colour in p["shapes"]:
            _shape(draw, shape, cx * w, cy * h, sw * w / 2, sh * h / 2, colour)
        return image
    if kind == "logo":
        from PIL import ImageFont

        image = Image.new("RGB", (w, h), p["background"])
        draw = ImageDraw.Draw(image)
        s = p["scale"] * min(w, h)
        font = ImageFont.load_default(size=max(8, round(0.7 * s)))
        text_w = draw.textlength(p["letters"], font=font)
        x0 = p["centre"][0] * w - (s + 0.2 * s + text_w) / 2
        cy = p["centre"][1] * h
        _shape(draw, p["shape"], x0 + s / 2, cy, s / 2, s / 2, p["mark"])
        draw.text((x0 + 1.2 * s, cy), p["letters"], fill=p["ink"], font=font, anchor="lm")
        return image
    if kind == "icon":
        return _icon(p, w, h)
    if kind == "product":
        return _product(p, w, h)
    image = Image.fromarray(_linear(w, h, list(p["background"]), 90.0))
    for obj, (cx, cy), size, colour in p["objects"]:
        r = size * min(w, h)
        shadow = Image.new("L", (w, h), 0)
        ImageDraw.Draw(shadow).ellipse(
            (cx * w - r, cy * h + 0.7 * r, cx * w + 1.3 * r, cy * h + 1.1 * r), fill=110
        )
        shadow = shadow.filter(ImageFilter.GaussianBlur(r / 6))
        image.paste((20, 20, 20), mask=shadow)
        shaded, mask = _solid(obj, colour, r, p["light"])
        image.paste(shaded, (round(cx * w - r), round(cy * h - r)), mask)
    return image


def _shape(draw, shape: str, cx: float, cy: float, rx: float, ry: float, fill) -> None:  # type: ignore[no-untyped-def]
    if shape in ("ellipse", "circle"):
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    elif shape in ("rect", "square"):
        draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry)], fill=fill)
    else:
        draw.polygon([(cx, cy - ry), (cx + rx, cy), (cx, cy + ry), (cx - rx, cy)], fill=fill)


def _star(outer: float, inner: float, points: int) -> tuple[float, ...]:
    radii = [outer if k % 2 == 0 else inner for k in range(2 * points)]
    angles = [k * math.pi / points for k in range(2 * points)]
    pairs = zip(radii, angles, strict=True)
    return tuple(c for r, a in pairs for c in (r * math.sin(a), -r * math.cos(a)))


# pictograms: (primitive, colour: 1 the figure, 2 an accent, 3 a third, coordinates in units of
# half the icon's size around its centre; a line's last number is its width)
# fmt: off
_ICONS: dict[str, list[tuple[str, int, tuple[float, ...]]]] = {
    "house": [("rect", 1, (-0.6, -0.1, 0.6, 0.9)), ("rect", 3, (-0.15, 0.35, 0.15, 0.9)),
              ("poly", 2, (-0.85, -0.05, 0, -0.9, 0.85, -0.05))],
    "person": [("ellipse", 1, (-0.3, -0.95, 0.3, -0.35)), ("chord", 2, (-0.75, -0.2, 0.75, 1.3))],
    "star": [("poly", 1, _star(0.95, 0.4, 5))],
    "heart": [("ellipse", 1, (-0.9, -0.7, 0.05, 0.2)), ("ellipse", 1, (-0.05, -0.7, 0.9, 0.2)),
              ("poly", 1, (-0.85, -0.05, 0.85, -0.05, 0, 0.9))],
    "arrow": [("rect", 1, (-0.9, -0.25, 0.2, 0.25)), ("poly", 2, (0.1, -0.7, 0.95, 0, 0.1, 0.7))],
    "check": [("line", 1, (-0.8, 0.0, -0.25, 0.6, 0.85, -0.65, 0.3))],
    "cloud": [("ellipse", 1, (-0.9, -0.1, -0.1, 0.6)), ("ellipse", 1, (-0.5, -0.6, 0.4, 0.3)),
              ("ellipse", 1, (0.0, -0.3, 0.9, 0.6)), ("rect", 1, (-0.5, 0.1, 0.5, 0.6))],
    "sun": [("poly", 2, _star(0.95, 0.55, 8)), ("ellipse", 1, (-0.5, -0.5, 0.5, 0.5))],
    "mail": [("rect", 1, (-0.9, -0.6, 0.9, 0.6)),
             ("line", 2, (-0.9, -0.6, 0, 0.1, 0.9, -0.6, 0.12))],
    "bolt": [("poly", 1, (0.2, -0.95, -0.55, 0.1, -0.05, 0.1, -0.25, 0.95, 0.6, -0.15, 0.1,
                          -0.15))],
}
# fmt: on


def _icon(p: Params, w: int, h: int):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw

    colours = [tuple(c) for c in p["colours"]]
    colours += [colours[-1]] * (4 - len(colours))  # missing accents take the last colour
    image = Image.new("RGB", (w, h), (255, 255, 255) if p["tile"] else colours[0])
    draw = ImageDraw.Draw(image)
    if p["tile"]:
        draw.rounded_rectangle((0.06 * w, 0.06 * h, 0.94 * w, 0.94 * h), 0.18 * w, colours[0])
    s = p["scale"] * min(w, h) / 2
    cx, cy = p["centre"][0] * w, p["centre"][1] * h
    for primitive, index, coords in _ICONS[p["pictogram"]]:
        xy = [(cx + u * s, cy + v * s) for u, v in zip(coords[0::2], coords[1::2], strict=False)]
        if primitive == "rect":
            draw.rectangle(xy, fill=colours[index])
        elif primitive == "ellipse":
            draw.ellipse(xy, fill=colours[index])
        elif primitive == "chord":
            draw.pieslice(xy, 180, 360, fill=colours[index])
        elif primitive == "line":
            draw.line(xy, fill=colours[index], width=round(coords[-1] * s))
        else:
            draw.polygon(xy, fill=colours[index])
    return image


def _product(p: Params, w: int, h: int):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (w, h), (255, 255, 255))
    s = p["scale"] * h
    cx, cy = p["centre"][0] * w, p["centre"][1] * h
    shadow = Image.new("L", (w, h), 0)
    g = p["girth"] * s
    ImageDraw.Draw(shadow).ellipse((cx - 0.45 * g, cy + 0.42 * s, cx + 0.5 * g, cy + 0.56 * s), 120)
    image.paste((60, 60, 60), mask=shadow.filter(ImageFilter.GaussianBlur(s / 14)))
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    obj = p["object"]

    def box(left: float, top: float, right: float, bottom: float) -> tuple[float, ...]:
        return (cx + left * g, cy + top * s, cx + right * g, cy + bottom * s)

    if obj == "bottle":
        draw.rounded_rectangle(box(-0.2, -0.2, 0.2, 0.5), s / 10, 255)
        draw.rectangle(box(-0.07, -0.5, 0.07, -0.15), 255)
    elif obj == "box":
        draw.rectangle(box(-0.35, -0.3, 0.35, 0.5), 255)
    elif obj == "can":
        draw.rounded_rectangle(box(-0.22, -0.4, 0.22, 0.5), s / 16, 255)
    elif obj == "jar":
        draw.rounded_rectangle(box(-0.35, -0.15, 0.35, 0.5), s / 6, 255)
        draw.rectangle(box(-0.3, -0.25, 0.3, -0.12), 255)
    else:
        draw.ellipse(box(-0.45, -0.4, 0.45, 0.5), 255)
    colours = np.full((h, w, 3), p["colour"], np.float64)
    if p["label"] is not None:
        band, top, height = p["label"]
        rows = slice(max(0, round(cy + top * s)), max(0, round(cy + (top + height) * s)))
        colours[rows] = band
    x, _ = _grid(w, h)
    u = np.clip((x - cx) / (0.5 * g), -1, 1)
    shade = 0.75 + 0.35 * np.cos(u * 1.4 + 0.5) + 0.25 * np.exp(-(((u + 0.35) / 0.12) ** 2))
    body = np.clip(colours * shade[..., None] + 10, 0, 255)
    image.paste(Image.fromarray(body.astype(np.uint8)), mask=mask.filter(ImageFilter.SMOOTH))
    return image


def _solid(obj: str, colour: tuple[int, ...], r: float, light: tuple[float, ...]):  # type: ignore[no-untyped-def]
    """A shaded sphere or cube of radius `r` and its mask, lit from `light`."""
    from PIL import Image, ImageDraw

    n = max(2, round(2 * r))
    col = np.asarray(colour, np.float64)
    lx, ly, lz = np.asarray(light) / np.linalg.norm(light)
    if obj == "sphere":
        x, y = _grid(n, n)
        u, v = (x - n / 2) / (n / 2), (y - n / 2) / (n / 2)
        inside = u**2 + v**2 <= 1
        z = np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))
        lambert = np.clip(u * lx + v * ly + z * lz, 0, 1)
        rgb = np.clip(col * (0.25 + 0.8 * lambert[..., None]), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb), Image.fromarray((inside * 255).astype(np.uint8))
    faces = [  # the top, left and right faces: polygon in units of n, normal
        ([(0.5, 0.0), (1.0, 0.25), (0.5, 0.5), (0.0, 0.25)], (0, -1, 0.3)),
        ([(0.0, 0.25), (0.5, 0.5), (0.5, 1.0), (0.0, 0.75)], (-0.8, 0.3, 0.6)),
        ([(0.5, 0.5), (1.0, 0.25), (1.0, 0.75), (0.5, 1.0)], (0.8, 0.3, 0.6)),
    ]
    image, mask = Image.new("RGB", (n, n), (0, 0, 0)), Image.new("L", (n, n), 0)
    for poly, normal in faces:
        nn = np.asarray(normal) / np.linalg.norm(normal)
        k = 0.25 + 0.8 * max(0.0, float(nn @ np.array([lx, ly, lz])))
        fill = tuple(int(v) for v in np.clip(col * k, 0, 255))
        points = [(a * (n - 1), b * (n - 1)) for a, b in poly]
        ImageDraw.Draw(image).polygon(points, fill=fill)
        ImageDraw.Draw(mask).polygon(points, fill=255)
    return image, mask


def _transform(image, p: Params, transform: str, rng: np.random.Generator) -> bytes:  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    w, h = image.size
    if transform == "resize":
        s = float(np.exp(rng.uniform(math.log(0.3), math.log(2.0))))
        size = (max(16, round(w * s)), max(16, round(h * s)))
        resample = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS]
        return _encode(image.resize(size, resample[int(rng.integers(0, 3))]), rng)
    if transform in ("crop", "combo"):
        out = _crop(image, _focus(p), rng)
        if transform == "crop":
            return _encode(out, rng)
        s = float(rng.uniform(0.5, 1.5))
        out = out.resize((max(16, round(out.width * s)), max(16, round(out.height * s))))
        return _bytes(out, "JPEG", quality=int(rng.integers(30, 91)))
    if transform == "mirror":
        return _encode(ImageOps.mirror(image), rng)
    if transform == "brightness":
        gain, offset = float(rng.uniform(0.75, 1.3)), float(rng.uniform(-40, 40))
        pixels = (np.asarray(image, np.float64) - 128) * gain + 128 + offset
        return _encode(Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)), rng)
    if transform == "jpeg":
        return _bytes(image, "JPEG", quality=int(rng.integers(30, 91)))
    if transform == "text":
        out = image.copy()
        draw = ImageDraw.Draw(out)
        font = ImageFont.load_default(size=max(9, round(h * float(rng.uniform(0.05, 0.08)))))
        words = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
        width = draw.textlength(words, font=font)
        x = float(rng.uniform(0.03 * w, max(0.03 * w, 0.97 * w - width)))
        y = float(rng.choice([rng.uniform(0.03, 0.2), rng.uniform(0.8, 0.92)])) * h
        colour = (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0)
        draw.text((x, y), words, fill=colour, font=font)
        return _encode(out, rng)
    raise ValueError(f"unknown transform {transform!r}")


def _crop(image, focus: tuple[float, float] | None, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    w, h = image.size
    cw, ch = round(w * float(rng.uniform(0.5, 0.9))), round(h * float(rng.uniform(0.5, 0.9)))
    if focus is None:
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    else:  # the window holds the object's centre
        fx, fy = focus[0] * w, focus[1] * h
        x = int(rng.integers(max(0, math.ceil(fx - cw)), min(w - cw, int(fx)) + 1))
        y = int(rng.integers(max(0, math.ceil(fy - ch)), min(h - ch, int(fy)) + 1))
    return image.crop((x, y, x + cw, y + ch))


def _bytes(image, format: str, **options: int) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format, **options)
    return buffer.getvalue()


def _encode(image, rng: np.random.Generator, reference: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    """PNG or a good JPEG (quality 95 for references, 75-95 for copies), at random."""
    if rng.random() < 0.5:
        return _bytes(image, "PNG")
    return _bytes(image, "JPEG", quality=95 if reference else int(rng.integers(75, 96)))
