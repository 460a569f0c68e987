"""Copy verification without texture: aligned low-resolution colour layouts.

Local features (:mod:`coyo_db.audit.verify`) need texture; a smooth gradient, a few flat
shapes, a small logo on a plain background, a flat icon, a product on white or a simple render
give SIFT few keypoints or none. Their content is their *layout*, which colour lies where.

A :class:`Layout` is the image (EXIF-oriented, alpha on white) squashed to :data:`SIDE` x
:data:`SIDE` RGB pixels by an antialiased resize (12 KB as uint8), with its size in pixels:
the aspect ratios fix the shape of the window of the reference that a crop shows (keeping
``fx`` of the width and ``fy`` of the height, ``fx / fy`` is the ratio of the aspect ratios),
so resizing and cropping leave one scale and a position to find. :func:`compare` asks whether
the query shows a window of the reference (all of it down to :data:`MIN_WINDOW` of each side,
mirrored or not) under the changes copies undergo:

- **Search.** Every window size and position on a :data:`COARSE` grid (the reference beside
  its mirror image), scored in closed form (``cv2.matchTemplate``, integral images); the best
  distinct windows are refined at :data:`SIDE` by Gauss-Newton (Lucas-Kanade) steps.
- **Photometry.** Brightness and contrast are one gain and one offset *shared by the three
  channels*, both bounded (:data:`MAX_GAIN`, :data:`MAX_OFFSET`): unlike a per-channel fit
  (normalised cross-correlation), it cannot turn a red-to-blue gradient into a green-to-yellow
  one, nor a red icon into a blue one.
- **Evidence**, on layouts blurred by :data:`BLUR` (JPEG noise costs little): the least of
  three shares of the reference window that the fitted query reproduces: of its spatial
  variance (around its own mean colour: a shared background explains nothing), of its colour
  variance alone (a red bottle and a green one share their shading), and of its edges' energy
  (ramps excluded: two blobs in one place differ by their outlines). Up to
  :data:`MAX_OCCLUDED` of the pixels may be occluded (a caption) but explain nothing: their loss
  is capped at their own deviation. A logo at another place leaves the reference's logo
  unexplained and scores near 0; a look-alike that differs a little everywhere pays in full.
  A flat window (deviation under :data:`MIN_STD` levels) verifies nothing and scores 0.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SIDE = 64  # layout grid; 64 x 64 x 3 uint8 = 12,288 bytes
COARSE = 16  # the grid every window is searched on (SIDE / 4); the rest happens at SIDE
KEEP = 3  # distinct coarse windows refined and weighed, best first
REFINE_BLUR = (1.5, 0.0)  # one Gauss-Newton step at each extra blur, coarse to fine
MIN_WINDOW = 0.45  # crop windows down to this share of each side (copies keep >= 0.5)
MAX_GAIN = 1.6  # contrast: the gain lies in [1 / MAX_GAIN, MAX_GAIN]
MAX_OFFSET = 64.0  # brightness: offset (levels, at mid-grey) in [-MAX_OFFSET, MAX_OFFSET]
BLUR = 1.0  # Gaussian sigma, in SIDE-grid pixels, applied to both layouts
MIN_STD = 3.0  # spatial standard deviation (levels) under which a window is flat
OCCLUSION = 1.0  # an occluded pixel costs its deviation, at least this times the mean one
MAX_OCCLUDED = 0.15  # the share of a window's pixels that may count as occluded
MIN_HUE_STD = 10.0  # colour variance is measured against at least this much (levels)
EDGE = 12.0  # a step of this many levels per 2 pixels in a channel is an edge, not a ramp
CONFIDENT = 0.95  # evidence at which the other candidate windows are not tried
MIN_COARSE = 0.1  # coarse score under which the search stops (dev copies: >= 0.77)
# Chosen on the dev split only (bench/bench_plain_copies.py --split dev: 490 copies, 58,310
# negative pairs): the middle of the gap (0.783, 0.909), where recall is 0.992 with one false
# hit (a linear gradient matching a quarter of a radial one). Test figures: the bench.
LAYOUT_MIN_SIMILARITY = 0.85

_MAGIC = b"CLAY"
_HEADER = struct.Struct("<4sBBII")  # magic, version, side, width, height
_VERSION = 1
_PIVOT = 128.0  # gain pivots around mid-grey
_ONES3 = np.ones(3, np.float32)  # x @ _ONES3 sums the channels (far faster than .sum(axis=-1) here)
_ONES_PIXELS = np.ones(SIDE * SIDE, np.float32)


@dataclass(frozen=True, eq=False)
class Layout:
    """An image's colour layout: ``pixels`` (SIDE, SIDE, 3) uint8, the image squashed to a
    square, and the image's ``width`` and ``height`` in pixels."""

    pixels: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.pixels.shape != (SIDE, SIDE, 3) or self.pixels.dtype != np.uint8:
            raise ValueError(f"a layout is ({SIDE}, {SIDE}, 3) uint8, got {self.pixels.shape}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"a layout's size is positive, got {self.width}x{self.height}")

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def to_bytes(self) -> bytes:
        """Header (magic, version, side, width, height) and the raw pixels: 12,302 bytes."""
        header = _HEADER.pack(_MAGIC, _VERSION, SIDE, self.width, self.height)
        return header + np.ascontiguousarray(self.pixels).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Layout:
        """The layout :meth:`to_bytes` wrote; ValueError for anything else."""
        if len(data) != _HEADER.size + SIDE * SIDE * 3:
            raise ValueError(f"not a layout: {len(data)} bytes")
        magic, version, side, width, height = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION or side != SIDE:
            raise ValueError("not a layout: bad header")
        pixels = np.frombuffer(data, np.uint8, offset=_HEADER.size).reshape(SIDE, SIDE, 3)
        return cls(pixels.copy(), int(width), int(height))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    @cached_property
    def _fine(self) -> np.ndarray:
        """The blurred layout around mid-grey, float32, at SIDE."""
        import cv2

        return cv2.GaussianBlur(self.pixels.astype(np.float32), (0, 0), BLUR) - _PIVOT

    @cached_property
    def _coarse(self) -> _Level:
        """The blurred layout at the coarse search grid."""
        import cv2

        return _Level(cv2.resize(self._fine, (COARSE, COARSE), interpolation=cv2.INTER_AREA))

    def _blurred(self, sigma: float) -> np.ndarray:
        """:attr:`_fine` blurred by `sigma` more (kept: refinement asks for the same few)."""
        import cv2

        cache = self.__dict__.setdefault("_blur_cache", {})
        if sigma not in cache:
            cache[sigma] = cv2.GaussianBlur(self._fine, (0, 0), sigma) if sigma else self._fine
        return cache[sigma]


class _Level:
    """Layout values on the coarse grid (float32, around mid-grey) beside their mirror image,
    (side, 2 * side, 3), and integral images of them (per channel) and of their squares
    (summed over the channels): one search over both halves tries both orientations."""

    def __init__(self, values: np.ndarray) -> None:
        import cv2

        self.values = values
        self.both = np.ascontiguousarray(np.concatenate([values, values[:, ::-1]], axis=1))
        self.plane = self.both.reshape(len(values), -1)  # the channels side by side
        self.sums = cv2.integral(self.both, sdepth=cv2.CV_64F).reshape(-1, 3).T.copy()
        self.squares = cv2.integral((self.both * self.both) @ _ONES3).astype(np.float64).ravel()


@dataclass(frozen=True)
class LayoutVerdict:
    """``similarity`` 0..1 (1: identical after the best alignment), ``crop`` (the share of the
    reference's area the query shows), ``flipped`` (the query is mirrored) and ``box``, the
    window (x, y, width, height) as shares of the reference's sides."""

    similarity: float
    crop: float
    flipped: bool
    box: tuple[float, float, float, float]

    @property
    def hit(self) -> bool:
        return self.similarity >= LAYOUT_MIN_SIMILARITY


NO_LAYOUT_MATCH = LayoutVerdict(0.0, 0.0, False, (0.0, 0.0, 0.0, 0.0))


def layout_from_rgb(rgb: np.ndarray) -> Layout:
    """The layout of an (H, W, 3) uint8 image."""
    from PIL import Image

    pixels = np.asarray(rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"layout_from_rgb wants (H, W, 3) uint8, got {pixels.shape}")
    height, width = pixels.shape[:2]
    return _layout(Image.fromarray(pixels, "RGB"), width, height)


def layout_of(data: bytes) -> Layout | None:
    """The layout of encoded image bytes (EXIF-oriented, alpha composited on white), or None
    when they do not decode."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated a quarter turn
                width, height = height, width
            img.draft("RGB", (4 * SIDE, 4 * SIDE))  # JPEG: decode at 1/2..1/8 scale
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img.convert("RGBA"))
            return _layout(img.convert("RGB"), width, height)
    except Exception:  # an unreadable image has no layout
        return None


def _layout(img, width: int, height: int) -> Layout:  # type: ignore[no-untyped-def]
    from PIL import Image

    small = img.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return Layout(np.asarray(small, dtype=np.uint8).copy(), int(width), int(height))


Found = tuple[float, int, int, float, float]  # score, w, h, x, y (sub-pixel)
Box = tuple[float, float, float, float]  # x, y, w, h on the SIDE grid


def compare(query: Layout, ref: Layout) -> LayoutVerdict:
    """How well `query` reproduces a window of `ref` (whole image down to about half of each
    side, any position, mirrored or not) under one bounded gain and offset; see the module."""
    ratio = query.aspect / ref.aspect  # = (window width share) / (window height share)
    side = COARSE
    low = math.ceil(MIN_WINDOW * side)
    sizes = [(w, h) for w in range(low, side + 1) if low <= (h := round(w / ratio)) <= side]
    if not sizes:  # no window of the reference has the query's shape
        return NO_LAYOUT_MATCH
    found = _rank(query, ref, sizes)
    if max(found)[0] < MIN_COARSE:
        return NO_LAYOUT_MATCH
    windows: list[tuple[float, float, float, float, float]] = []  # score, w, h, x, y
    for score, w, _, x, y in sorted(found, reverse=True):
        if len(windows) == KEEP:
            break
        if any(abs(w - k[1]) <= 1 and abs(x - k[3]) < 2 and abs(y - k[4]) < 2 for k in windows):
            continue  # the same alignment at a neighbouring size
        windows.append((score, float(w), w / ratio, x, y))
    if abs(math.log(ratio)) < 0.05:  # the whole image too, the commonest copy of all
        for x0 in (0.0, side):  # as it is and mirrored
            if not any(k[1] >= side - 1 and abs(x0 - k[3]) < 2 and k[4] < 2 for k in windows):
                windows.append((-math.inf, side, side, x0, 0.0))
    # refined and weighed in turn, the best ranked first, until one is convincing: the
    # least-squares ranking is not robust to an overlaid caption, which the evidence is
    best = NO_LAYOUT_MATCH
    for _, w, h, x, y in windows:
        flipped = bool(x + w / 2 >= side)
        if flipped:  # the window in the mirror image -> the mirrored window in the reference
            x = 2 * side - x - w
        x, y = min(max(0.0, x), side - w), min(max(0.0, y), side - h)
        box = _refine(query, ref, flipped, (x * 4.0, y * 4.0, w * 4.0, h * 4.0))
        similarity = min(_evidence(query, ref, flipped, box, best.similarity))
        if similarity > best.similarity:
            bx, by, bw, bh = (float(v) / SIDE for v in box)
            best = LayoutVerdict(similarity, bw * bh, flipped, (bx, by, bw, bh))
        if best.similarity >= CONFIDENT:
            break
    return best


def _vertex(left: float, centre: float, right: float) -> float:
    """The parabola's vertex through (-1, left), (0, centre), (1, right), within +-0.5."""
    curve = left - 2 * centre + right
    if not (math.isfinite(left) and math.isfinite(right)) or curve >= 0:
        return 0.0
    return max(-0.5, min(0.5, 0.5 * (left - right) / curve))


def _rank(query: Layout, ref: Layout, sizes: list[tuple[int, int]]) -> list[Found]:
    """For each window size (w, h) on the coarse grid, the window of the reference beside its
    mirror image that the query resized to (w, h) best reproduces under the bounded shared
    gain and offset: (score, w, h, x, y), score = 1 - residual / spatial variance, x and y
    refined to a fraction of a pixel by parabolas through the neighbouring scores.

    One ``cv2.matchTemplate`` per size gives the cross term; the window sums come from the
    integral images, and the closed-form fit runs for every size and position at once.
    """
    import cv2

    grid, values, side = ref._coarse, query._coarse.values, COARSE
    n = len(sizes)
    rows = side - min(h for _, h in sizes) + 1
    cols = 2 * side - min(w for w, _ in sizes) + 1
    cross = np.zeros((n, rows, cols))
    t_sums, t_squares = np.empty((n, 1, 1)), np.empty((n, 1, 1))
    for i, (w, h) in enumerate(sizes):
        t = values if w == h == side else cv2.resize(values, (w, h), interpolation=cv2.INTER_AREA)
        # the channels side by side in one plane: a one-channel correlation whose every third
        # column is the three-channel one, and several times faster
        scores = cv2.matchTemplate(grid.plane, t.reshape(h, -1), cv2.TM_CCORR)[:, ::3]
        cross[i, : scores.shape[0], : scores.shape[1]] = scores
        t_sums[i], t_squares[i] = float(t.sum()), float(np.vdot(t, t))
    w = np.array([s[0] for s in sizes])[:, None, None]
    h = np.array([s[1] for s in sizes])[:, None, None]
    top, left = np.arange(rows)[None, :, None], np.arange(cols)[None, None, :]
    valid = (top + h <= side) & (left + w <= 2 * side) & ((left >= side) | (left + w <= side))
    width = 2 * side + 1  # of the integral images
    corner = np.minimum(top, side - h) * width + np.minimum(left, 2 * side - w)
    below, beside = h * width, w
    corners = np.stack([corner + below + beside, corner + beside, corner + below, corner])
    # np.take: far faster than fancy indexing on these small tables
    sums = np.take(grid.sums, corners, axis=1)  # (3, 4, n, rows, cols)
    sums = sums[:, 0] - sums[:, 1] - sums[:, 2] + sums[:, 3]
    squares = np.take(grid.squares, corners)
    squares = squares[0] - squares[1] - squares[2] + squares[3]
    total = sums[0] + sums[1] + sums[2]
    sums *= sums
    pixels = (w * h).astype(np.float64)
    spatial = squares - (sums[0] + sums[1] + sums[2]) / pixels
    # the gain clipped, then the offset (one path of :func:`_fit`: enough to rank windows)
    count = 3 * pixels
    det = np.maximum(t_squares * count - t_sums * t_sums, 1e-9)
    gain = np.clip((count * cross - t_sums * total) / det, 1 / MAX_GAIN, MAX_GAIN)
    offset = np.clip((total - gain * t_sums) / count, -MAX_OFFSET, MAX_OFFSET)
    sse = squares - 2 * gain * cross - 2 * offset * total + gain * gain * t_squares
    sse += 2 * gain * offset * t_sums + count * offset * offset
    score = np.maximum(1 - sse / np.maximum(spatial, 3 * pixels * MIN_STD**2), -1.0)
    score = np.where(valid, score, -np.inf)
    flat = score.reshape(n, -1)
    best = flat.argmax(axis=1)
    out = []
    for i, (sw, sh) in enumerate(sizes):
        iy, ix = divmod(int(best[i]), cols)
        s = score[i]
        dx = _vertex(s[iy, ix - 1], s[iy, ix], s[iy, ix + 1]) if 0 < ix < cols - 1 else 0.0
        dy = _vertex(s[iy - 1, ix], s[iy, ix], s[iy + 1, ix]) if 0 < iy < rows - 1 else 0.0
        out.append((float(flat[i, best[i]]), sw, sh, ix + dx, iy + dy))
    return out


def _warp(
    query: Layout, ref: Layout, flipped: bool, box: Box, blur: float = 0.0
) -> tuple[np.ndarray, np.ndarray, int, int] | None:
    """The query warped onto the pixels of the reference's grid inside `box` (x, y, w, h, to a
    fraction of a pixel), blurred as sharp as the reference; that window of the reference
    (both blurred by `blur` more); the window's corner. None for a window under 8 pixels."""
    import cv2

    x, y, w, h = box
    bx0, by0 = max(0, math.ceil(x - 1e-3)), max(0, math.ceil(y - 1e-3))
    bx1, by1 = min(SIDE, math.floor(x + w + 1e-3)), min(SIDE, math.floor(y + h + 1e-3))
    if bx1 - bx0 < 8 or by1 - by0 < 8:
        return None
    sx, sy = SIDE / w, SIDE / h  # query pixels per reference pixel
    if blur:  # (an alignment step: the query's own blur, kept, is near enough)
        source = query._blurred(blur * max(sx, sy) // 0.5 * 0.5)
    else:  # shrinking the query sharpens it: blur it as much more first
        source = query._fine
        extra = BLUR * math.sqrt(max(0.0, max(sx, sy) ** 2 - 1))
        if extra > 0.3:
            source = cv2.GaussianBlur(source, (0, 0), extra)
    if flipped:
        source = source[:, ::-1]
    matrix = np.array(
        [[sx, 0, (bx0 + 0.5 - x) * sx - 0.5], [0, sy, (by0 + 0.5 - y) * sy - 0.5]], np.float64
    )
    t = cv2.warpAffine(
        np.ascontiguousarray(source), matrix, (bx1 - bx0, by1 - by0),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    return t, np.ascontiguousarray(ref._blurred(blur)[by0:by1, bx0:bx1]), bx0, by0


def _refine(query: Layout, ref: Layout, flipped: bool, box: Box) -> Box:
    """The window moved and scaled (one scale: the aspect ratio stays) to fit best: one
    Gauss-Newton step (Lucas-Kanade) per blur of :data:`REFINE_BLUR`, coarse to fine, with the
    gain and offset free, the pixels the fit misses by far (a caption) left out."""
    x, y, w, h = box
    for blur in REFINE_BLUR:
        warped = _warp(query, ref, flipped, (x, y, w, h), blur)
        if warped is None:
            break
        t, r, bx0, by0 = warped
        # every other pixel each way: the layouts are blurred, a quarter of them carry the fit
        grad_u = (t[1:-1:2, 2::2] - t[1:-1:2, :-2:2]) * 0.5
        grad_v = (t[2::2, 1:-1:2] - t[:-2:2, 1:-1:2]) * 0.5
        t, r = t[1:-1:2, 1:-1:2], r[1:-1:2, 1:-1:2]
        rows, cols = t.shape[:2]
        u = (bx0 + 1.5 - x + 2 * np.arange(cols, dtype=np.float32))[None, :, None]
        v = (by0 + 1.5 - y + 2 * np.arange(rows, dtype=np.float32))[:, None, None]
        tf, rf = np.ascontiguousarray(t).reshape(-1, 3), np.ascontiguousarray(r).reshape(-1, 3)
        sums = (np.vdot(tf, tf), tf.sum(), np.vdot(tf, rf), rf.sum())
        gain, offset = _fit(*(float(v) for v in sums), count=float(tf.size))
        error = gain * t + offset - r
        residual = (error * error) @ _ONES3
        # occluders: missed by more than they deviate (the evidence's rule) and than most do
        centred = r - _ONES_PIXELS[: len(rf)] @ rf / len(rf)
        deviation = (centred * centred) @ _ONES3
        weight = (residual <= np.maximum(deviation, deviation.mean())).astype(np.float32)
        # d(error) / d(x, y, w, gain, offset): position, scale and photometry in one step
        scaling = -gain * (grad_u * u + grad_v * v) / w
        columns = np.stack([-gain * grad_u, -gain * grad_v, scaling, t, np.ones_like(t)])
        columns = columns.reshape(5, -1)
        weighted = columns * np.repeat(weight.ravel(), 3)
        normal = (weighted @ columns.T).astype(np.float64)
        normal[np.arange(3), np.arange(3)] += 1e-3
        try:
            step = np.linalg.solve(normal, -(weighted @ error.ravel()).astype(np.float64))
        except np.linalg.LinAlgError:
            break
        dx, dy = (float(np.clip(d, -2.0, 2.0)) for d in step[:2])
        dw = float(np.clip(step[2], -0.08 * w, 0.08 * w))
        x, y, w, h = x + dx, y + dy, w + dw, h * (w + dw) / w
        w, h = min(w, SIDE), min(h, SIDE)
        x, y = min(max(0.0, x), SIDE - w), min(max(0.0, y), SIDE - h)
    return x, y, w, h


def _evidence(
    query: Layout, ref: Layout, flipped: bool, box: Box, floor: float = 0.0
) -> tuple[float, float, float]:
    """Shares of the window's spatial variance, of its colour (hue) variance and of its edges'
    energy that the fitted query reproduces, the query warped to `box` (see :func:`_warp`).
    Once one share is at most `floor`, the later ones are not measured (returned as 1)."""
    warped = _warp(query, ref, flipped, box)
    if warped is None:
        return 0.0, 0.0, 0.0
    t, r, _, _ = warped
    tf, rf = t.reshape(-1, 3), r.reshape(-1, 3)
    n = len(rf)
    centred = rf - _ONES_PIXELS[:n] @ rf / n
    deviation = (centred * centred) @ _ONES3
    variance = float(deviation.sum())
    if variance < rf.size * MIN_STD**2:
        return 0.0, 0.0, 0.0
    cap = np.maximum(deviation, OCCLUSION * variance / n)
    sums = np.stack([(tf * tf) @ _ONES3, tf @ _ONES3, (tf * rf) @ _ONES3, rf @ _ONES3])
    # a channel the query saturates (clipped by a brightness change) bounds the reference one way
    high, low = tf >= 254 - _PIVOT, tf <= 1 - _PIVOT
    clear = ((high | low).astype(np.float32) @ _ONES3 == 0).astype(np.float32)
    count = int(clear.sum()) if clear.sum() >= 0.5 * n else n
    totals = sums @ clear if count < n else sums.sum(axis=1, dtype=np.float64)
    for _ in range(2):  # refit on the pixels the fit explains: occluders do not pull the fit
        gain, offset = _fit(*(float(v) for v in totals), count=3.0 * count)
        error = gain * tf + offset - rf
        error[(high & (error < 0)) | (low & (error > 0))] = 0.0
        residual = (error * error) @ _ONES3
        inliers = residual < cap
        if not 0.5 * n <= (count := int(inliers.sum())) < n:
            break
        totals = sums @ inliers.astype(np.float32)
    intensity = max(0.0, 1.0 - _occluded_loss(residual, cap) / variance)
    if intensity <= floor:
        return intensity, 1.0, 1.0
    # the colour alone: a hue change that the shared structure hides (a red bottle, a green one)
    grey_error, grey_deviation = error @ _ONES3, centred @ _ONES3
    hue_residual = residual - grey_error * grey_error / 3
    hue_deviation = deviation - grey_deviation * grey_deviation / 3
    hue_variance = max(float(hue_deviation.sum()), 3 * n * MIN_HUE_STD**2)
    hue_cap = np.maximum(hue_deviation, OCCLUSION * hue_variance / n)
    hue = max(0.0, 1.0 - _occluded_loss(hue_residual, hue_cap) / hue_variance)
    if hue <= floor:
        return intensity, hue, 1.0
    # the edges, with their own gain (clipping by a brightness change biases the intensities'),
    # fitted where the intensities fit (an overlaid caption's edges would pull it down)
    inside = inliers.reshape(t.shape[:2])[1:-1, 1:-1, None]
    r_x, r_y = r[1:-1, 2:] - r[1:-1, :-2], r[2:, 1:-1] - r[:-2, 1:-1]
    t_x, t_y = t[1:-1, 2:] - t[1:-1, :-2], t[2:, 1:-1] - t[:-2, 1:-1]
    t_in_x, t_in_y = t_x * inside, t_y * inside
    along = float(np.vdot(t_in_x, r_x)) + float(np.vdot(t_in_y, r_y))
    power = float(np.vdot(t_in_x, t_x)) + float(np.vdot(t_in_y, t_y))
    slope = min(max(along / max(power, 1e-9), 1 / MAX_GAIN), MAX_GAIN)
    energy = (r_x * r_x) @ _ONES3 + (r_y * r_y) @ _ONES3
    # the reference's edges only: the intensities check ramps, and a caption over one is cheap
    energy = np.where(energy >= 2 * 3 * EDGE**2, energy, 0.0)
    total = float(energy.sum())
    if total <= 0:  # no edge to verify
        return intensity, hue, 1.0
    e_x, e_y = slope * t_x - r_x, slope * t_y - r_y
    missed = np.minimum((e_x * e_x) @ _ONES3 + (e_y * e_y) @ _ONES3, energy)
    return intensity, hue, max(0.0, 1.0 - float(missed.sum()) / total)


def _fit(
    t_squares: float, t_sum: float, cross: float, r_sum: float, count: float
) -> tuple[float, float]:
    """Least-squares gain and offset (both bounded) of reference ~ gain * query + offset, from
    the sums. The residual is convex in (gain, offset): the free optimum clipped along one,
    the other re-optimised and clipped, both ways round, covers the bounds' edges."""
    low, high = 1.0 / MAX_GAIN, MAX_GAIN
    det = t_squares * count - t_sum * t_sum
    free = (count * cross - t_sum * r_sum) / det if det > 1e-9 * max(t_squares * count, 1) else 1
    best = (math.inf, 1.0, 0.0)
    for gain in (min(max(free, low), high), None):
        if gain is None:  # the offset clipped first, the gain re-optimised
            offset = min(max((r_sum - free * t_sum) / count, -MAX_OFFSET), MAX_OFFSET)
            gain = min(max((cross - offset * t_sum) / max(t_squares, 1e-9), low), high)
        else:
            offset = min(max((r_sum - gain * t_sum) / count, -MAX_OFFSET), MAX_OFFSET)
        # the residual up to the window's own sum of squares, the same for every candidate
        sse = -2 * gain * cross - 2 * offset * r_sum + gain * gain * t_squares
        sse += 2 * gain * offset * t_sum + count * offset * offset
        best = min(best, (sse, gain, offset))
    return best[1], best[2]


def _occluded_loss(residual: np.ndarray, cap: np.ndarray) -> float:
    """The summed residual, where at most :data:`MAX_OCCLUDED` of the pixels (those it helps
    most) count as occluded: their loss is capped. A caption is a few pixels; a look-alike
    differs a little everywhere, and capping its every pixel would hide that."""
    saving = np.maximum(residual - cap, 0.0)
    start = len(saving) - max(1, int(MAX_OCCLUDED * len(saving)))
    return float(residual.sum() - np.partition(saving, start)[start:].sum())
