"""Decode image records safely: size, format, pHash and model-ready uint8 pixels, never a raise.

:func:`decode_record` turns one :class:`ImageRecord` into a :class:`DecodedImage`;
:func:`decode_batch` does a list of them and is what worker processes run. Anything wrong with
an image ends up in ``DecodedImage.error`` as one line fit for the quarantine table:

- ``zero-byte image``, ``no image data``;
- ``not an image: an HTML page`` (and the like), ``unrecognised image format``,
  ``unsupported image format: EPS`` (only the raster formats in :data:`FORMATS` are decoded:
  the web's formats, not PostScript, PDF or exotic decoders);
- ``decompression bomb: W x H pixels, over the limit of N``: width x height is read from the
  header and checked before any pixel is decoded. The default limit, :data:`DEFAULT_MAX_PIXELS`,
  is Pillow's own error threshold (about 179 MP): whatever COYO could hash with Pillow passes,
  and one image stays under ~540 MB of RGB in a worker. ``max_pixels=None`` lifts it;
- ``truncated image data``, ``corrupt image: <Pillow's reason>``.
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone: a cut file is an error, not grey pixels.

What is recorded, and on what:

- ``width``, ``height``: the stored size, as COYO's columns hold it (EXIF orientation not
  applied); ``format`` as Pillow names it (``JPEG``, ``PNG``, ``WEBP``, ``GIF``...; a camera's
  multi-picture JPEG, which Pillow calls ``MPO``, is reported as ``JPEG``); ``nbytes``.
- ``phash``: :func:`coyo_db.ingest.phash.phash_image` on the image exactly as ``Image.open``
  gives it,
  fully decoded and not transposed, which is how COYO computed ``image_phash`` with imagehash.
- ``pixels``: one (size, size, 3) uint8 RGB array per :class:`Preprocess`. These are what a
  person sees: EXIF orientation applied (as browsers and img2dataset's resizer do), and
  transparency composited on white (a transparent logo shows as on a white page; the colours
  hidden under alpha 0 are often garbage). CMYK JPEGs (Adobe's inverted ones too) convert with
  Pillow's plain formula, 16-bit greyscale keeps its top 8 bits. Crop takes the centred square
  of the shorter side, squash ignores the aspect ratio, pad letterboxes on black; Pillow resizes
  with ``reducing_gap`` (:data:`REDUCING_GAP`), which averages big images down by an integer
  factor before the bicubic / bilinear filter. Without pHash, a big JPEG is also decoded at 1/2,
  1/4 or 1/8 scale by libjpeg (``draft``) when that still leaves twice the pixels a spec needs.

Results that cross a process boundary are kept cheap: :func:`decode_batch` returns each record
without its encoded bytes (``nbytes`` says how many there were).
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
from PIL import Image

from coyo_db.ingest.image_types import DecodedImage, ImageRecord, Preprocess

# Pillow's error threshold: 2 * Image.MAX_IMAGE_PIXELS as Pillow ships it.
PhashMode = Literal["exact", "fast"]

DEFAULT_MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)
# Raster formats decoded; Pillow identifies more (EPS runs Ghostscript, for one).
FORMATS = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "ICO", "AVIF", "JPEG2000", "PPM"}
)
REDUCING_GAP = 3.0  # Pillow: at 3 the result is nearly indistinguishable from a plain resize
DRAFT_GAP = 2.0  # a JPEG draft keeps at least this many times the pixels a spec asks for
BACKGROUND = (255, 255, 255)  # under transparent pixels

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Pillow's bomb check reads a module global; it is lifted only while a header is read (our own
# check follows at once, and it names the size), under a lock so that threads cannot leave it
# lifted.
_OPEN_LOCK = threading.Lock()


class _Refused(Exception):
    """An image decode gives up on; the message is the quarantine reason."""


def decode_record(
    record: ImageRecord,
    specs: Sequence[Preprocess],
    *,
    phash: PhashMode | bool = "exact",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode one record: size, format, pHash and a pixel array per spec; never raises.

    A record the reader already failed comes back with its own error. `max_pixels` caps
    width x height (None: no cap). `phash` is "exact" (identical to imagehash, on the image as
    opened), "fast" (:mod:`coyo_db.ingest.phash`'s reduced-scale JPEG decode; the model pixels may
    then come from a draft decode too) or False (no pHash).
    """
    phash = "exact" if phash is True else phash
    data = record.data
    result = DecodedImage(record=record, nbytes=len(data) if data else 0)
    if record.error is not None:
        result.error = record.error
        return result
    if data is None:
        result.error = "no image data"
        return result
    if not data:
        result.error = "zero-byte image"
        return result
    try:
        with warnings.catch_warnings():
            # EXIF and palette complaints from Pillow; real problems raise.
            warnings.simplefilter("ignore")
            _decode(data, specs, phash, max_pixels, result)
    except _Refused as exc:
        result.error = str(exc)
    except Exception as exc:  # hostile bytes raise anything; nothing may escape a worker
        result.error = _reason(exc)
    if result.error is not None:
        result.phash = None
        result.pixels = {}
    return result


def decode_batch(
    records: Sequence[ImageRecord],
    specs: Sequence[Preprocess],
    *,
    phash: PhashMode | bool = "exact",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> list[DecodedImage]:
    """:func:`decode_record` for each record, the results without the encoded bytes.

    The entry point for decode worker processes: it and its arguments pickle.
    """
    results = []
    for record in records:
        decoded = decode_record(record, specs, phash=phash, max_pixels=max_pixels)
        if record.data is not None:
            decoded.record = replace(record, data=None)
        results.append(decoded)
    return results


def _decode(
    data: bytes,
    specs: Sequence[Preprocess],
    phash: PhashMode | bool,
    max_pixels: int | None,
    result: DecodedImage,
) -> None:
    img = _open(data)
    try:
        fmt = img.format or "unknown"
        if fmt not in FORMATS:
            raise _Refused(f"unsupported image format: {fmt}")
        width, height = img.size
        result.width, result.height = width, height
        result.format = "JPEG" if fmt == "MPO" else fmt
        if max_pixels is not None and width * height > max_pixels:
            raise _Refused(
                f"decompression bomb: {width} x {height} pixels, over the limit of {max_pixels}"
            )
        if phash != "exact" and specs and fmt in ("JPEG", "MPO"):
            img.draft(None, _draft_size(width, height, specs))
        img.load()
        if phash == "exact":
            from coyo_db.ingest.phash import phash_image

            result.phash = phash_image(img)
        elif phash == "fast":
            from coyo_db.ingest.phash import phash_bytes

            result.phash = phash_bytes(data, "fast", max_pixels)
        if specs:
            orientation = _orientation(img)
            rgb = _to_rgb(img)
            for spec in dict.fromkeys(specs):
                out = _preprocess(rgb, spec)
                if orientation in _TRANSPOSE:
                    out = out.transpose(_TRANSPOSE[orientation])
                result.pixels[spec] = np.asarray(out, dtype=np.uint8)
    finally:
        img.close()


def _open(data: bytes) -> Image.Image:
    """Read the header (lazily: no pixels yet); refuse what is not a known image."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError:
            raise _Refused(_what_it_is(data)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _what_it_is(data: bytes) -> str:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "not an image: an HTML page"
    if head.startswith(b"<svg") or b"<svg" in head:
        return "unsupported image format: SVG"
    if head.startswith((b"<?xml", b"<")):
        return "not an image: an XML document"
    if head.startswith((b"{", b"[")):
        return "not an image: JSON text"
    return "unrecognised image format"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb: {_one_line(exc)}"
    message = _one_line(exc)
    if "truncated" in message.lower():
        return "truncated image data"
    if isinstance(exc, MemoryError):
        return "corrupt image: out of memory while decoding"
    return f"corrupt image: {message or type(exc).__name__}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # malformed EXIF: treat as upright
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            grey = (values.astype(np.uint32) >> 8).clip(0, 255)
        else:
            grey = values.clip(0, 255)
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError:
        raise _Refused(f"unsupported colour mode: {mode}") from None


def _preprocess(img: Image.Image, spec: Preprocess) -> Image.Image:
    size = spec.size
    resample = _RESAMPLE[spec.resample]
    width, height = img.size
    if spec.mode == "crop":
        side = min(width, height)
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
        return img.resize((size, size), resample, box=box, reducing_gap=REDUCING_GAP)
    if spec.mode == "squash":
        return img.resize((size, size), resample, reducing_gap=REDUCING_GAP)
    if spec.mode == "pad":
        scale = size / max(width, height)
        inner = (max(1, round(width * scale)), max(1, round(height * scale)))
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(
            img.resize(inner, resample, reducing_gap=REDUCING_GAP),
            ((size - inner[0]) // 2, (size - inner[1]) // 2),
        )
        return canvas
    raise _Refused(f"unknown preprocess mode {spec.mode!r}")


def _draft_size(width: int, height: int, specs: Sequence[Preprocess]) -> tuple[int, int]:
    """The smallest decode size that leaves DRAFT_GAP times the pixels every spec needs."""
    need_w = need_h = 1
    for spec in specs:
        if spec.mode == "pad":
            scale = spec.size / max(width, height)
            w, h = width * scale, height * scale
        else:  # crop and squash need `size` pixels along both sides
            w = h = spec.size
        need_w = max(need_w, int(np.ceil(w * DRAFT_GAP)))
        need_h = max(need_h, int(np.ceil(h * DRAFT_GAP)))
    return need_w, need_h
