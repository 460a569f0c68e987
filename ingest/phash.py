"""Perceptual hashes (pHash) bit-identical to ``imagehash.phash``, batched, plus a fast mode.

COYO's ``image_phash`` is ``str(imagehash.phash(img))``: the image converted to grayscale
("L"), resized to 32x32 with Lanczos, a type-II DCT (unnormalised, scipy's) along axis 0 then
axis 1, the top-left 8x8 coefficients compared with their median, the 64 booleans read row-major
as a 16-hex-digit number (first coefficient = most significant bit).

Two modes turn encoded bytes into the 32x32 grayscale thumbnail the hash is computed from:

- ``exact`` (default) decodes fully and runs the very same Pillow calls as imagehash, so the
  thumbnail is the same to the byte;
- ``fast`` lets libjpeg decode a JPEG of 128 pixels a side or more at 1/2, 1/4 or 1/8 scale,
  straight to grayscale (``Image.draft``), then makes the same 32x32 Lanczos thumbnail; a
  progressive JPEG of 256 pixels a side or more is decoded at 1/8 scale from its DC scans
  alone, the same image for a quarter of the time (:func:`progressive_dc_only`). About 6x
  imagehash's speed on web-sized JPEGs; most hashes are identical and nearly all are within a
  Hamming distance of 2 (measured by ``bench/bench_phash.py``, figures in docs/benchmarks.md).
  Other formats and smaller JPEGs are hashed exactly: a full decode is their cost either way.

The DCT runs for a whole batch of thumbnails as two float64 matrix products (only the 8x8 block
that the hash reads). They differ from scipy's FFT-based DCT by rounding only (at most 1.1e-10
measured; coefficients stay below 1.1e6), which can flip a bit only where a coefficient lies
within that rounding of the median. In practice those are exact ties, where several
coefficients equal the median in exact arithmetic: flat images (every AC coefficient is 0),
images constant along one axis, mirror-symmetric ones. There imagehash's bits follow scipy's
rounding, so any thumbnail with a coefficient within :data:`TIE_TOLERANCE` of the median is
hashed again with scipy exactly as imagehash does (scipy is imported only then; on seeded
web-like photos, 1 image in 3,000 takes this path). Every hash therefore equals imagehash's
under the installed scipy and Pillow. EXIF orientation is not applied, as imagehash does not
apply it.

Undecodable bytes raise :class:`ImageDecodeError` (a ``ValueError``) whose ``reason`` is a short
line fit for a quarantine table.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

Mode = Literal["exact", "fast"]

HASH_SIZE = 8
THUMB_SIZE = 32  # imagehash: hash_size * highfreq_factor
# A coefficient this close to the median may compare differently under scipy's rounding; the
# rounding itself is below 1e-10 (worst case about 1e-8), so this margin is ample.
TIE_TOLERANCE = 1e-5
# Fast mode asks libjpeg for at least this many pixels a side before the 32x32 Lanczos.
FAST_DRAFT_SIZE = 64
# A progressive JPEG this large a side decodes at 1/8 scale from its DC scans alone.
DC_ONLY_MIN_SIDE = 8 * THUMB_SIZE
# The marker that ends a scan's entropy-coded data (0xFF00 is a stuffed byte, 0xFFD0-D7 restarts,
# 0xFFFF fill before a marker).
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Start-of-frame markers (0xC4, 0xC8 and 0xCC share the range but are other segments).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

_HEX_RE = re.compile(r"[0-9a-fA-F]{16}")


def _hex_tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte -> its two hex digits, and two hex digits (either case) -> byte, 256 if not hex.

    Two digits read as one little-endian uint16 index a 65,536-entry table, so parsing and
    formatting take one table lookup per byte of the hash.
    """
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(np.uint16)
    octet = np.arange(256)
    encode = digits[octet >> 4] | (digits[octet & 15] << 8)
    nibble = np.full(256, 16, dtype=np.uint16)
    nibble[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
    nibble[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
    pair = np.arange(65536)
    high, low = nibble[pair & 255], nibble[pair >> 8]
    decode = np.where((high < 16) & (low < 16), high * 16 + low, 256).astype(np.uint16)
    return encode.astype(np.uint16), decode


_HEX_ENCODE, _HEX_DECODE = _hex_tables()


def _dct_rows() -> np.ndarray:
    """The first 8 rows of scipy's unnormalised DCT-II matrix for length 32."""
    k = np.arange(HASH_SIZE)[:, None]
    n = np.arange(THUMB_SIZE)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * THUMB_SIZE))


_DCT8 = _dct_rows()


class ImageDecodeError(ValueError):
    """Bytes that Pillow cannot decode; ``reason`` is one line for a quarantine table."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


# --- the hash of 32x32 thumbnails ------------------------------------------------------------


def phash_pixels(pixels: np.ndarray) -> np.ndarray:
    """pHashes of (N, 32, 32) grayscale thumbnails as uint64, the DCT batched in float64."""
    x = np.asarray(pixels)
    if x.ndim != 3 or x.shape[1:] != (THUMB_SIZE, THUMB_SIZE):
        raise InputError(f"phash_pixels wants (N, 32, 32) thumbnails, got shape {x.shape}")
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    xf = x.astype(np.float64)
    # DCT along axis 0 for every image at once: one (8, 32) x (32, N*32) product.
    cols = (_DCT8 @ xf.transpose(1, 0, 2).reshape(THUMB_SIZE, n * THUMB_SIZE)).reshape(
        HASH_SIZE, n, THUMB_SIZE
    )
    # ... then along axis 1: one (N*8, 32) x (32, 8) product.
    low = (cols.transpose(1, 0, 2).reshape(n * HASH_SIZE, THUMB_SIZE) @ _DCT8.T).reshape(
        n, HASH_SIZE * HASH_SIZE
    )
    median = np.median(low, axis=1, keepdims=True)
    bits = low > median
    for i in np.flatnonzero((np.abs(low - median) <= TIE_TOLERANCE).any(axis=1)):
        bits[i] = _scipy_bits(x[i])
    return np.packbits(bits, axis=1).view(">u8").reshape(n).astype(np.uint64)


def _scipy_bits(pixels: np.ndarray) -> np.ndarray:
    """imagehash's own arithmetic, for thumbnails whose bits hinge on rounding."""
    import scipy.fftpack

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    return (low > np.median(low)).ravel()


# --- thumbnails from images and bytes ---------------------------------------------------------


def thumbnail(img: Image.Image, mode: Mode = "exact") -> np.ndarray:
    """The (32, 32) uint8 grayscale thumbnail pHash is computed from.

    ``exact`` is imagehash's ``img.convert("L").resize((32, 32), LANCZOS)``. ``fast`` first asks
    libjpeg to decode a JPEG at 1/2, 1/4 or 1/8 scale, straight to grayscale (its Y channel),
    keeping at least 64 pixels a side, and resizes the area the scaled image covers. That draft
    changes `img` in place (its size and mode), so hand ``fast`` an image opened for the hash
    alone; an image already loaded, and every other format, gets the ``exact`` thumbnail.
    """
    from PIL import Image

    if mode not in ("exact", "fast"):
        raise InputError(f"unknown pHash mode {mode!r}: use 'exact' or 'fast'")
    box = None
    width, height = img.size
    if mode == "fast" and min(width // FAST_DRAFT_SIZE, height // FAST_DRAFT_SIZE) >= 2:
        drafted = img.draft("L", (FAST_DRAFT_SIZE, FAST_DRAFT_SIZE))
        if drafted is not None:
            # libjpeg rounds the scaled size up; the box keeps the original image's extent.
            box = drafted[1]
    gray = img if img.mode == "L" else img.convert("L")
    return np.asarray(gray.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS, box=box))


def open_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """Open encoded bytes with Pillow (lazily: pixels are decoded on first use).

    Raises :class:`ImageDecodeError` for bytes Pillow cannot identify and for images with more
    than `max_pixels` pixels (Pillow's own decompression-bomb limit applies otherwise).
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises many types on hostile bytes
        raise ImageDecodeError(_reason(exc)) from exc
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"decompression bomb: {width}x{height} is more than {max_pixels} pixels"
        )
    return img


def thumbnail_bytes(data: bytes, mode: Mode = "exact", max_pixels: int | None = None) -> np.ndarray:
    """Decode `data` and return its (32, 32) uint8 pHash thumbnail; see :func:`thumbnail`.

    In ``fast`` mode a progressive JPEG of 256 pixels a side or more is decoded from its DC
    scans alone (see :func:`progressive_dc_only`): the same 1/8-scale image for a quarter of
    the decoding time.
    """
    if mode == "fast":
        dc_only = progressive_dc_only(data)
        if dc_only is not None and (max_pixels is None or dc_only[1] <= max_pixels):
            thumb = _dc_thumbnail(dc_only[0])
            if thumb is not None:
                return thumb
    img = open_image(data, max_pixels)
    try:
        return thumbnail(img, mode)
    except InputError:
        raise
    except Exception as exc:  # truncated data, corrupt scans, unsupported modes
        raise ImageDecodeError(_reason(exc)) from exc


def progressive_dc_only(data: bytes) -> tuple[bytes, int] | None:
    """A progressive JPEG cut down to what a 1/8-scale decode reads, and its pixel count.

    At 1/8 scale libjpeg turns each 8x8 block into one pixel from its DC coefficient alone.
    A progressive JPEG sends the DC coefficients in scans of their own, ahead of the AC scans
    that make up most of the file and of its decoding time, so the header segments and the DC
    scans, with an end-of-image marker, decode to the same 1/8-scale image. One change makes
    that hold: libjpeg would otherwise guess the missing AC coefficients from neighbouring
    blocks ("block smoothing", which also moves the DC values), and it smooths only when the
    quantisation steps it divides by are non-zero, so the first AC step of every quantisation
    table is set to 0 (it multiplies AC coefficients that are all zero here).

    None unless the bytes are a complete 8-bit Huffman progressive JPEG (SOF2, ending in an
    end-of-image marker, so that truncated files still fail the full decode) of at least 256
    pixels a side whose colour components needed for a grayscale decode are at full resolution
    (at 1/8 scale libjpeg decodes subsampled components from more than the DC coefficient).
    Damage inside the AC scans goes unnoticed, as they are never decoded.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    n, pos = len(data), 2
    keep = [data[:2]]
    frame = b""
    adobe_rgb = False
    while True:
        if pos + 2 > n or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            break
        end = pos + 2 + (data[pos + 2] << 8 | data[pos + 3]) if pos + 4 <= n else n + 1
        if end > n:
            return None
        if marker == 0xDA:
            spectral_start = pos + 5 + 2 * data[pos + 4]
            found = _SCAN_END.search(data, end)
            if not frame or spectral_start >= end or found is None:
                return None
            if data[spectral_start] == 0:  # a DC scan
                keep.append(data[pos : found.start()])
            pos = found.start()
            continue
        segment = data[pos:end]
        if marker in _SOF_MARKERS:
            if marker != 0xC2 or frame:
                return None
            frame = segment
        elif marker == 0xDB:
            segment = _without_first_ac_step(segment)
            if segment is None:
                return None
        elif marker == 0xEE and segment[4:9] == b"Adobe" and len(segment) >= 16:
            adobe_rgb = segment[15] == 0
        keep.append(segment)
        pos = end
    if not frame or len(frame) < 10 or frame[4] != 8:
        return None
    height, width, count = frame[5] << 8 | frame[6], frame[7] << 8 | frame[8], frame[9]
    if min(width, height) < DC_ONLY_MIN_SIDE or len(frame) < 10 + 3 * count:
        return None
    ids = bytes(frame[10 + 3 * i] for i in range(count))
    sampling = [frame[11 + 3 * i] for i in range(count)]
    if len(set(sampling)) > 1:
        # Only a YCbCr image's Y component is decoded for grayscale; it must be full size.
        largest = (max(s >> 4 for s in sampling), max(s & 15 for s in sampling))
        ycbcr = count == 3 and not adobe_rgb and ids != b"RGB"
        if not ycbcr or (sampling[0] >> 4, sampling[0] & 15) != largest:
            return None
    keep.append(b"\xff\xd9")
    return b"".join(keep), width * height


def _without_first_ac_step(segment: bytes) -> bytes | None:
    """A DQT segment with every table's first AC quantisation step set to 0."""
    table = bytearray(segment)
    i = 4
    while i < len(table):
        wide = table[i] >> 4  # 16-bit steps
        if i + 1 + 64 * (1 + wide) > len(table):
            return None
        table[i + 1 + (1 + wide) * 1 : i + 1 + (1 + wide) * 2] = bytes(1 + wide)
        i += 1 + 64 * (1 + wide)
    return bytes(table)


def _dc_thumbnail(stream: bytes) -> np.ndarray | None:
    """The fast thumbnail of :func:`progressive_dc_only`'s stream; None if it does not decode."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(stream), formats=("JPEG",))
        width, height = img.size
        drafted = img.draft("L", (THUMB_SIZE, THUMB_SIZE))
        if drafted is None or img.size != (-(-width // 8), -(-height // 8)):
            return None
        gray = img if img.mode == "L" else img.convert("L")
        return np.asarray(
            gray.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS, box=drafted[1])
        )
    except Exception:  # the full decode reports the error
        return None


def _reason(exc: BaseException) -> str:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb: {exc}"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "undecodable image: not an image format Pillow knows"
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"undecodable image: {message}"


# --- public one-image and batch entry points --------------------------------------------------


def phash_image(img: Image.Image) -> str:
    """``str(imagehash.phash(img))``, bit for bit."""
    return uint64_to_phash(int(phash_pixels(thumbnail(img, "exact")[None])[0]))


def phash_bytes(data: bytes, mode: Mode = "exact", max_pixels: int | None = None) -> str:
    """The pHash of an encoded image as 16 lowercase hex digits.

    ``exact`` equals ``str(imagehash.phash(Image.open(BytesIO(data))))``; ``fast`` trades a few
    bits for speed. Raises :class:`ImageDecodeError` when the bytes do not decode.
    """
    return uint64_to_phash(int(phash_pixels(thumbnail_bytes(data, mode, max_pixels)[None])[0]))


def phash_bytes_many(
    datas: Iterable[bytes], mode: Mode = "exact", max_pixels: int | None = None
) -> np.ndarray:
    """pHashes of many encoded images as uint64, the DCTs done in one batch.

    Raises :class:`ImageDecodeError` on the first image that does not decode; callers that
    quarantine per image call :func:`thumbnail_bytes` per image and :func:`phash_pixels` once.
    """
    thumbs = [thumbnail_bytes(data, mode, max_pixels) for data in datas]
    if not thumbs:
        return np.zeros(0, dtype=np.uint64)
    return phash_pixels(np.stack(thumbs))


# --- hex strings <-> unsigned 64-bit integers -------------------------------------------------


def phash_to_int(value: str) -> int:
    """A 16-hex-digit pHash as an unsigned 64-bit Python int."""
    if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
        raise InputError(f"not a pHash (16 hex digits): {value!r}")
    return int(value, 16)


def uint64_to_phash(value: int) -> str:
    """An unsigned 64-bit integer as COYO's 16 lowercase hex digits."""
    value = int(value)
    if not 0 <= value < 1 << 64:
        raise InputError(f"a pHash is an unsigned 64-bit integer, got {value}")
    return f"{value:016x}"


def phash_hex_to_uint64(
    values: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray,
) -> np.ndarray:
    """Many 16-hex-digit pHashes (either case) as a uint64 array, without a per-row loop.

    Raises :class:`~coyo_db.errors.InputError` naming the first null or malformed value.
    """
    out = np.empty(len(values), dtype=np.uint64)
    at = 0
    for chunk in _string_chunks(values):
        # a slice at a time: the decode table and the slice's temporaries stay in cache
        for start in range(0, len(chunk), _PARSE_ROWS):
            part = chunk.slice(start, _PARSE_ROWS)
            out[at : at + len(part)] = _parse_hex(part, at)
            at += len(part)
    return out


# rows parsed per step of phash_hex_to_uint64
_PARSE_ROWS = 1 << 15


def _parse_hex(arr: pa.Array, first_row: int) -> np.ndarray:
    """:func:`phash_hex_to_uint64` of one string slice whose first row is `first_row`."""
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count:
        first = int(pc.index(pc.is_null(arr), True).as_py())
        raise InputError(f"null pHash at row {first_row + first}")
    try:
        fixed = arr.cast(pa.binary(16))
    except pa.ArrowInvalid:
        first = int(pc.index(pc.not_equal(pc.binary_length(arr), 16), True).as_py())
        raise InputError(
            f"not a pHash (16 hex digits) at row {first_row + first}: {arr[first]}"
        ) from None
    pairs = np.frombuffer(fixed.buffers()[1], np.uint16, count=8 * n, offset=16 * fixed.offset)
    octets = _HEX_DECODE[pairs]
    bad = octets > 255
    if bad.any():
        first = int(np.argmax(bad)) // 8
        raise InputError(f"not a pHash (16 hex digits) at row {first_row + first}: {arr[first]}")
    return octets.astype(np.uint8).view(">u8").reshape(n)


def uint64_to_phash_hex(values: np.ndarray | Sequence[int]) -> pa.StringArray:
    """uint64 pHashes as an Arrow string array of 16 lowercase hex digits, without a loop."""
    v = np.asarray(values)
    if v.dtype != np.uint64:
        if v.size and (v.dtype.kind not in "iu" or v.min() < 0):
            raise InputError("pHashes must be unsigned 64-bit integers")
        v = v.astype(np.uint64)
    n = v.size
    text = _HEX_ENCODE[v.reshape(n).astype(">u8").view(np.uint8)].tobytes()
    large = 16 * n >= 2**31
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int64 if large else np.int32)
    kind = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def _string_chunks(
    values: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray,
) -> list[pa.Array]:
    """`values` as Arrow string (or binary) arrays: a chunked array's chunks as they are."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    return [_string_array(chunk) for chunk in chunks]


def _string_array(values: Sequence[str] | np.ndarray | pa.Array) -> pa.Array:
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.string())
    if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)):
        values = values.cast(pa.string())
    return values
