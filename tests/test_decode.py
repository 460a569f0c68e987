"""Safe decoding: sizes, formats, pHash, preprocessing, colour modes, and every way to fail."""

from __future__ import annotations

import io
import pickle
import time

import imagehash
import numpy as np
import pytest
from imagedata import (
    bomb_png,
    corrupt_jpeg,
    encode,
    half_image,
    jpeg_bytes,
    make_images,
    png_bytes,
    truncated_jpeg,
)
from PIL import Image

from coyo_db.ingest.decode import DEFAULT_MAX_PIXELS, decode_batch, decode_record
from coyo_db.ingest.image_types import ImageRecord, Preprocess

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def _record(data: bytes | None, **kw) -> ImageRecord:
    return ImageRecord(shard="s.tar", member="k.jpg", key="k", data=data, **kw)


def _close(pixel, colour, tol=12) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tol))


# --- what is recorded ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_size_format_bytes_and_phash_equal_imagehash(fmt):
    image = make_images(1, seed=3)[0]
    data = encode(image, fmt)
    decoded = decode_record(_record(data), [Preprocess(32)])
    assert decoded.error is None
    assert (decoded.width, decoded.height) == image.size
    assert decoded.format == fmt and decoded.nbytes == len(data)
    assert decoded.phash == str(imagehash.phash(Image.open(io.BytesIO(data))))


def test_phash_over_many_images_and_off_switch():
    for image in make_images(10, seed=8):
        data = jpeg_bytes(image)
        decoded = decode_record(_record(data), [])
        assert decoded.phash == str(imagehash.phash(Image.open(io.BytesIO(data))))
        assert decoded.pixels == {}
    assert decode_record(_record(data), [], phash=False).phash is None


# --- preprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize("resample", ["bicubic", "bilinear"])
def test_crop_keeps_the_centre_square(resample):
    spec = Preprocess(64, "crop", resample)
    decoded = decode_record(_record(png_bytes(half_image(200, 100))), [spec])
    out = decoded.pixels[spec]
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # The centre 100x100 square: its left half red, its right half blue.
    assert _close(out[:, :28], RED) and _close(out[:, 36:], BLUE)


def test_crop_of_a_tall_image_drops_top_and_bottom():
    image = Image.new("RGB", (60, 180), RED)
    image.paste(BLUE, (0, 60, 60, 120))  # red / blue / red bands
    spec = Preprocess(30, "crop")
    out = decode_record(_record(png_bytes(image)), [spec]).pixels[spec]
    # Edge rows see a little of the red outside the square, as resize-then-crop would.
    assert _close(out[2:-2], BLUE) and _close(out, BLUE, 30)


def test_squash_keeps_everything_stretched():
    spec = Preprocess(48, "squash")
    out = decode_record(_record(png_bytes(half_image(300, 60))), [spec]).pixels[spec]
    assert out.shape == (48, 48, 3)
    assert _close(out[:, :22], RED) and _close(out[:, 26:], BLUE)


def test_pad_letterboxes_on_black():
    spec = Preprocess(64, "pad")
    out = decode_record(_record(png_bytes(half_image(200, 100))), [spec]).pixels[spec]
    assert out.shape == (64, 64, 3)
    assert _close(out[:15], BLACK, 0) and _close(out[-15:], BLACK, 0)  # 16 rows each side
    assert _close(out[18:46, :30], RED) and _close(out[18:46, 34:], BLUE)


def test_several_specs_at_once_and_duplicates():
    specs = [Preprocess(32), Preprocess(48, "pad"), Preprocess(32)]
    decoded = decode_record(_record(jpeg_bytes(make_images(1)[0])), specs)
    assert {k: v.shape for k, v in decoded.pixels.items()} == {
        Preprocess(32): (32, 32, 3),
        Preprocess(48, "pad"): (48, 48, 3),
    }


def test_exif_orientation_turns_pixels_not_size_or_phash():
    image = half_image(200, 100)  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown rotated 90 degrees clockwise
    data = jpeg_bytes(image, exif=exif.tobytes())
    spec = Preprocess(40, "squash")
    decoded = decode_record(_record(data), [spec])
    assert (decoded.width, decoded.height) == (200, 100)
    assert decoded.phash == str(imagehash.phash(Image.open(io.BytesIO(data))))
    out = decoded.pixels[spec]
    assert _close(out[:16], RED, 30) and _close(out[24:], BLUE, 30)  # left went to the top


def test_big_jpeg_without_phash_decodes_a_draft_that_looks_the_same():
    image = make_images(1, seed=2, min_side=1600, max_side=1600)[0].resize((1600, 1200))
    data = jpeg_bytes(image)
    spec = Preprocess(96)
    full = decode_record(_record(data), [spec])
    draft = decode_record(_record(data), [spec], phash=False)
    assert (draft.width, draft.height) == (full.width, full.height) == (1600, 1200)
    diff = np.abs(full.pixels[spec].astype(int) - draft.pixels[spec].astype(int))
    assert diff.mean() < 3


# --- colour modes -------------------------------------------------------------------------------


def test_rgba_composites_on_white():
    image = half_image(40, 20, (255, 0, 0, 255), (0, 0, 0, 0), mode="RGBA")
    spec = Preprocess(20, "squash")
    out = decode_record(_record(png_bytes(image)), [spec]).pixels[spec]
    assert _close(out[:, :8], RED) and _close(out[:, 12:], WHITE)


def test_palette_with_transparency_and_la():
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([255, 0, 0, 0, 255, 0])
    palette.paste(1, (20, 0, 40, 40))
    palette.info["transparency"] = 1
    spec = Preprocess(20, "squash")
    out = decode_record(_record(png_bytes(palette)), [spec]).pixels[spec]
    assert _close(out[:, :8], RED) and _close(out[:, 12:], WHITE)
    la = half_image(40, 40, (0, 255), (0, 0), mode="LA")
    out = decode_record(_record(png_bytes(la)), [spec]).pixels[spec]
    assert _close(out[:, :8], BLACK) and _close(out[:, 12:], WHITE)


def test_cmyk_jpeg_and_greyscale():
    cmyk = half_image(64, 32, (0, 255, 255, 0), (255, 255, 0, 0), mode="CMYK")
    spec = Preprocess(32, "squash")
    decoded = decode_record(_record(jpeg_bytes(cmyk)), [spec])
    assert decoded.error is None and decoded.format == "JPEG"
    out = decoded.pixels[spec]
    assert _close(out[:, :12], RED, 20) and _close(out[:, 20:], BLUE, 20)
    grey = decode_record(_record(png_bytes(Image.new("L", (30, 30), 77))), [spec]).pixels[spec]
    assert _close(grey, (77, 77, 77), 0)


def test_sixteen_bit_greyscale_keeps_its_top_bits():
    values = np.full((30, 30), 40_000, dtype=np.uint16)
    data = png_bytes(Image.fromarray(values))
    spec = Preprocess(16, "squash")
    decoded = decode_record(_record(data), [spec])
    assert decoded.error is None
    assert _close(decoded.pixels[spec], (156, 156, 156), 1)  # 40000 >> 8


# --- failures -----------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_from_the_header():
    data = bomb_png(20_000, 12_000)
    assert len(data) < 100_000
    started = time.perf_counter()
    decoded = decode_record(_record(data), [Preprocess(224)])
    assert time.perf_counter() - started < 0.5  # 240 MP decoded would take seconds
    assert decoded.error == (
        f"decompression bomb: 20000 x 12000 pixels, over the limit of {DEFAULT_MAX_PIXELS}"
    )
    assert (decoded.width, decoded.height, decoded.format) == (20_000, 12_000, "PNG")
    assert decoded.pixels == {} and decoded.phash is None
    # Pillow's own limit is back in place afterwards.
    assert Image.MAX_IMAGE_PIXELS is not None


def test_pixel_limit_is_configurable():
    data = png_bytes(Image.new("RGB", (100, 60), RED))
    refused = decode_record(_record(data), [], max_pixels=5_000)
    assert refused.error == "decompression bomb: 100 x 60 pixels, over the limit of 5000"
    assert decode_record(_record(data), [], max_pixels=6_000).error is None
    assert decode_record(_record(data), [], max_pixels=None).error is None


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "zero-byte image"),
        (None, "no image data"),
        (b"\x00\x01garbage" * 20, "unrecognised image format"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not an image: an HTML page"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported image format: SVG"),
    ],
)
def test_not_images(data, error):
    decoded = decode_record(_record(data), [Preprocess(32)])
    assert decoded.error == error and decoded.pixels == {}


def test_truncated_and_corrupt_jpegs():
    truncated = decode_record(_record(truncated_jpeg()), [Preprocess(32)])
    assert truncated.error == "truncated image data"
    assert truncated.width == 128  # the header was read
    corrupt = decode_record(_record(corrupt_jpeg()), [Preprocess(32)])
    assert corrupt.error is not None and corrupt.error.startswith(("corrupt image", "truncated"))
    assert corrupt.phash is None and corrupt.pixels == {}


def test_truncated_png():
    data = png_bytes(make_images(1, seed=6, min_side=120, max_side=120)[0])
    decoded = decode_record(_record(data[: len(data) // 2]), [])
    assert decoded.error == "truncated image data"


def test_formats_outside_the_allowed_list():
    data = encode(make_images(1)[0], "PCX")
    decoded = decode_record(_record(data), [Preprocess(32)])
    assert decoded.error == "unsupported image format: PCX"


def test_reader_errors_pass_through():
    decoded = decode_record(_record(None, error="truncated tar member k.jpg"), [Preprocess(8)])
    assert decoded.error == "truncated tar member k.jpg"


# --- batches and pickling -----------------------------------------------------------------------


def test_decode_batch_drops_the_bytes_and_pickles_cheaply():
    images = make_images(4, seed=11)
    records = [_record(jpeg_bytes(im), url=f"u{i}", meta={"id": i}) for i, im in enumerate(images)]
    records.append(_record(b"", meta={"id": 9}))
    spec = Preprocess(24)
    assert pickle.loads(pickle.dumps(records)) == records
    results = decode_batch(records, [spec])
    assert [r.error for r in results] == [None] * 4 + ["zero-byte image"]
    assert all(r.record.data is None for r in results)
    assert [r.record.meta["id"] for r in results] == [0, 1, 2, 3, 9]
    assert [r.nbytes for r in results] == [len(r.data or b"") for r in records]
    payload = pickle.dumps(results)
    assert len(payload) < 4 * 24 * 24 * 3 + 4_000  # pixels plus a little, no encoded bytes
    again = pickle.loads(payload)
    assert [r.phash for r in again] == [r.phash for r in results]
    assert np.array_equal(again[0].pixels[spec], results[0].pixels[spec])
