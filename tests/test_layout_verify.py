"""The layout verification (coyo_db.audit.layout) on plain images: copies confirmed, look-alikes
rejected, at the module's own threshold, on images from coyo_db.synth.plain_images."""

from __future__ import annotations

import io

import numpy as np
import pytest

from coyo_db.audit.layout import (
    LAYOUT_MIN_SIMILARITY,
    Layout,
    compare,
    layout_from_rgb,
    layout_of,
)
from coyo_db.synth.plain_images import KINDS, TRANSFORMS, plain_set

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def plain():  # type: ignore[no-untyped-def]
    """Two references of each kind, their 98 copies, 56 distractors (a seed the benchmark and
    the threshold's tuning never used), all as layouts."""
    refs, copies, distractors = plain_set("dev", n_references=14, n_distractors=56, seed=7)
    return (
        refs,
        [layout_of(r.data) for r in refs],
        [(c, layout_of(c.data)) for c in copies],
        [(d, layout_of(d.data)) for d in distractors],
    )


def _png(rgb: np.ndarray, mode: str = "RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb, mode).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _gradient(w: int, h: int, start, end, angle: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    t = (x - w / 2) * np.cos(np.radians(angle)) + (y - h / 2) * np.sin(np.radians(angle))
    t = ((t - t.min()) / np.ptp(t))[..., None]
    return (np.array(start) * (1 - t) + np.array(end) * t).astype(np.uint8)


def _mark(w: int, h: int, at: tuple[int, int], colour, background=(255, 255, 255)):  # type: ignore[no-untyped-def]
    """A house-like mark (a square under a triangle) on a plain background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    x, y = at
    draw.rectangle((x, y, x + 60, y + 50), fill=colour)
    draw.polygon([(x - 10, y), (x + 30, y - 40), (x + 70, y)], fill=colour)
    return np.asarray(image)


def test_every_transform_of_every_kind_is_confirmed(plain) -> None:  # type: ignore[no-untyped-def]
    refs, ref_layouts, copies, _ = plain
    missed = [
        (refs[c.ref].kind, c.transform, round(compare(q, ref_layouts[c.ref]).similarity, 3))
        for c, q in copies
        if compare(q, ref_layouts[c.ref]).similarity < LAYOUT_MIN_SIMILARITY
    ]
    assert {c.transform for c, _ in copies} == set(TRANSFORMS)
    assert {r.kind for r in refs} == set(KINDS)
    assert not missed, missed


def test_mirror_copies_are_found_flipped(plain) -> None:  # type: ignore[no-untyped-def]
    _, ref_layouts, copies, _ = plain
    mirrored = [compare(q, ref_layouts[c.ref]) for c, q in copies if c.transform == "mirror"]
    assert all(v.flipped and v.crop > 0.9 for v in mirrored), mirrored
    # an asymmetric picture: its copy as it is is not flipped, its mirror image is
    picture = _mark(320, 240, (40, 120), (200, 30, 30), background=(40, 90, 200))
    plain_copy, mirror = layout_from_rgb(picture), layout_from_rgb(picture[:, ::-1].copy())
    ref = layout_of(_png(picture))
    assert ref is not None
    assert not compare(plain_copy, ref).flipped
    assert compare(mirror, ref).flipped
    assert compare(mirror, ref).similarity >= LAYOUT_MIN_SIMILARITY


def test_distractors_and_hard_variants_are_rejected(plain) -> None:  # type: ignore[no-untyped-def]
    refs, ref_layouts, _, distractors = plain
    hits = [
        (d.kind, refs[i].kind, d.hard_of == i, round(v.similarity, 3))
        for d, q in distractors
        for i, ref in enumerate(ref_layouts)
        if (v := compare(q, ref)).similarity >= LAYOUT_MIN_SIMILARITY
    ]
    assert sum(d.hard_of is not None for d, _ in distractors) >= 10  # the hard ones are there
    assert not hits, hits


def _disc(colour, at: tuple[int, int] = (150, 150), square: bool = False) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (300, 300), (255, 255, 255))
    box = (at[0] - 50, at[1] - 50, at[0] + 50, at[1] + 50)
    (ImageDraw.Draw(image).rectangle if square else ImageDraw.Draw(image).ellipse)(box, colour)
    return np.asarray(image)


@pytest.mark.parametrize(
    "case",
    [
        "another gradient, same direction",  # the shared gain cannot swap channels
        "same colours, a quarter-turn away",
        "same ramp, a fifth of the contrast",  # the gain is bounded
        "same ramp, 150 levels brighter",  # so is the offset
        "same icon, another colour",
        "same disc, orange for red",  # the colour term: the shading and the outline agree
        "same disc, moved by 8%",  # the edge term: the intensities agree at 0.90
        "a square for a disc",
        "same logo, another place",
    ],
)
def test_hard_look_alikes_drawn_by_hand_are_rejected(case: str) -> None:
    red_blue = _gradient(400, 300, (220, 20, 20), (20, 20, 220), 0)
    grey = _gradient(400, 300, (0, 0, 0), (255, 255, 255), 0)
    red = _disc((200, 60, 60))
    pairs = {
        "another gradient, same direction": (
            _gradient(400, 300, (20, 200, 20), (230, 230, 20), 0), red_blue
        ),
        "same colours, a quarter-turn away": (
            _gradient(400, 300, (220, 20, 20), (20, 20, 220), 90), red_blue
        ),
        "same ramp, a fifth of the contrast": (
            grey, _gradient(400, 300, (100, 100, 100), (150, 150, 150), 0)
        ),
        "same ramp, 150 levels brighter": (
            _gradient(400, 300, (150, 150, 150), (255, 255, 255), 0),
            _gradient(400, 300, (0, 0, 0), (105, 105, 105), 0),
        ),
        "same icon, another colour": (
            _mark(300, 300, (120, 140), (30, 60, 200)), _mark(300, 300, (120, 140), (200, 30, 30))
        ),
        "same disc, orange for red": (_disc((230, 140, 30)), _disc((200, 50, 50))),
        "same disc, moved by 8%": (_disc((200, 60, 60), at=(175, 150)), red),
        "a square for a disc": (_disc((200, 60, 60), square=True), red),
        "same logo, another place": (
            _mark(480, 320, (330, 220), (200, 30, 30), (240, 240, 230)),
            _mark(480, 320, (40, 80), (200, 30, 30), (240, 240, 230)),
        ),
    }  # fmt: skip
    query, ref = pairs[case]
    v = compare(layout_from_rgb(query), layout_from_rgb(ref))
    assert v.similarity < LAYOUT_MIN_SIMILARITY, v


def test_a_caption_over_a_logo_is_allowed() -> None:
    from PIL import Image, ImageDraw, ImageFont

    logo = _mark(400, 300, (60, 140), (200, 60, 60))
    captioned = Image.fromarray(logo)
    font = ImageFont.load_default(size=22)
    ImageDraw.Draw(captioned).text((200, 250), "photo sale", fill=(0, 0, 0), font=font)
    v = compare(layout_from_rgb(np.asarray(captioned)), layout_from_rgb(logo))
    assert v.similarity >= LAYOUT_MIN_SIMILARITY and v.crop > 0.9


def test_crops_brightness_and_jpeg_of_smooth_images_are_confirmed() -> None:
    smooth = _gradient(480, 360, (230, 120, 30), (40, 30, 160), 30)
    ref = layout_of(_png(smooth))
    assert ref is not None
    crop = smooth[60:300, 100:380]  # 58% x 67%, off centre
    brighter = np.clip((smooth.astype(np.float64) - 128) * 1.2 + 150, 0, 255).astype(np.uint8)
    for name, query in {
        "crop": layout_of(_png(crop)),
        "brighter": layout_from_rgb(brighter),
        "jpeg 30": layout_of(_jpeg(smooth, 30)),
        "crop, half size, jpeg 40": layout_of(_jpeg(crop[::2, ::2].copy(), 40)),
    }.items():
        assert query is not None
        v = compare(query, ref)
        assert v.similarity >= LAYOUT_MIN_SIMILARITY, (name, v)
    # (a window of a linear gradient slides along its iso-lines; a mark pins it down)
    marked = _mark(480, 360, (200, 150), (250, 250, 250), background=(0, 0, 0))
    marked = np.where(marked.sum(axis=2, keepdims=True) > 0, marked, smooth).astype(np.uint8)
    v = compare(layout_from_rgb(marked[60:300, 100:380].copy()), layout_from_rgb(marked))
    assert v.similarity >= LAYOUT_MIN_SIMILARITY and not v.flipped
    assert 0.34 < v.crop < 0.44  # 0.58 x 0.67 of the reference shown
    assert abs(v.box[0] - 100 / 480) < 0.02 and abs(v.box[1] - 60 / 360) < 0.02


def test_compare_is_symmetric_for_uncropped_copies(plain) -> None:  # type: ignore[no-untyped-def]
    _, ref_layouts, copies, _ = plain
    for c, q in copies:
        if c.transform in ("jpeg", "resize", "brightness"):
            forward = compare(q, ref_layouts[c.ref]).similarity
            backward = compare(ref_layouts[c.ref], q).similarity
            assert backward >= LAYOUT_MIN_SIMILARITY, (c.transform, forward, backward)
            # clipping makes a brightness change one-way: the query's saturation is modelled
            tolerance = 0.1 if c.transform == "brightness" else 0.03
            assert abs(forward - backward) < tolerance, (c.transform, forward, backward)


def test_identical_is_one_and_flat_verifies_nothing() -> None:
    picture = _mark(256, 256, (90, 120), (20, 150, 60), (250, 240, 200))
    same = layout_from_rgb(picture)
    v = compare(same, same)
    assert v.similarity > 0.99 and v.crop > 0.99 and not v.flipped
    grey = layout_from_rgb(np.full((200, 300, 3), 128, np.uint8))
    assert compare(grey, grey).similarity == 0.0
    assert compare(layout_from_rgb(np.full((200, 300, 3), 60, np.uint8)), grey).similarity == 0.0


def test_layout_bytes_round_trip_and_size() -> None:
    layout = layout_from_rgb(_gradient(333, 222, (10, 200, 30), (250, 10, 90), 45))
    data = layout.to_bytes()
    assert len(data) <= 12_400
    back = Layout.from_bytes(data)
    assert back == layout and hash(back) == hash(layout)
    assert (back.width, back.height) == (333, 222)
    assert np.array_equal(back.pixels, layout.pixels)
    with pytest.raises(ValueError):
        Layout.from_bytes(data[:-1])
    with pytest.raises(ValueError):
        Layout.from_bytes(b"XXXX" + data[4:])


def test_unreadable_bytes_have_no_layout() -> None:
    jpeg = _jpeg(_gradient(300, 200, (0, 0, 0), (255, 255, 255), 0), 80)
    assert layout_of(b"") is None
    assert layout_of(b"not an image at all") is None
    assert layout_of(jpeg[: len(jpeg) // 3]) is None
    assert layout_of(jpeg) is not None


def test_alpha_is_composited_on_white_and_bytes_match_pixels() -> None:
    picture = _mark(240, 240, (80, 110), (200, 30, 30))
    rgba = np.dstack([picture, np.where(picture.sum(axis=2) < 765, 255, 0).astype(np.uint8)])
    rgba[..., :3][rgba[..., 3] == 0] = (0, 0, 0)  # transparent black, shown on white
    transparent = layout_of(_png(rgba, "RGBA"))
    on_white = layout_of(_png(picture))
    assert transparent is not None and on_white is not None
    assert np.abs(transparent.pixels.astype(int) - on_white.pixels.astype(int)).max() <= 2
    assert np.array_equal(on_white.pixels, layout_from_rgb(picture).pixels)
    assert (on_white.width, on_white.height) == (240, 240)
