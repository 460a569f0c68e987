"""Plausible image URLs for the synthetic generator, built column-wise with Arrow.

Six URL shapes seen in COYO-700M, each filled from per-key random draws: WordPress uploads
(``/wp-content/uploads/2017/12/slug-300x200.jpg``), Shopify product images
(``cdn.shopify.com/s/files/1/0190/8574/products/Slug_grande.jpg?v=1479962684``), Pinterest
(``i.pinimg.com/564x/ab/cd/ef/abcdef....jpg``), hashed CDN paths with query strings
(``?w=800&h=600&fit=crop``, ``?itok=...``), YouTube thumbnails and generic sites with
generated host names. Extensions are .jpg, .jpeg, .png, .webp (and some .JPG). A URL depends
only on its key, so a row that repeats another row's URL passes that row's key.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.synth.counter_random import Streams, alphabet_strings, hex_strings
from coyo_db.synth.text import join_tokens, slug_vocabulary

_EXTENSIONS = (("jpg", 0.68), ("jpeg", 0.08), ("png", 0.15), ("webp", 0.05), ("JPG", 0.04))
_WP_HOSTS = (
    "homesfeed.com",
    "www.boredart.com",
    "blog.dogsof.com",
    "www.thespruce.com",
    "i0.wp.com",
    "www.decorpad.com",
    "cdn.trendir.com",
    "www.dreamhomeideas.net",
    "www.craftaholicsanonymous.net",
    "www.lovethispic.com",
    "www.homedit.com",
    "www.recipetineats.com",
    "www.onekindesign.com",
    "www.brit.co",
    "www.travelandleisure.com",
    "www.weddingforward.com",
)
_CDN_HOSTS = (
    "images.squarespace-cdn.com/content/v1",
    "static.wixstatic.com/media",
    "media.istockphoto.com/photos",
    "i.imgur.com",
    "s3.amazonaws.com/media-bucket",
    "images-na.ssl-images-amazon.com/images/I",
    "upload.wikimedia.org/wikipedia/commons",
    "res.cloudinary.com/demo/image/upload",
    "live.staticflickr.com/65535",
    "cdn.pixabay.com/photo",
    "ae01.alicdn.com/kf",
    "i.ebayimg.com/images/g",
    "www.ephotozine.com/resize",
    "static.straitstimes.com.sg/s3fs-public",
    "api.time.com/wp-content/uploads",
    "s.yimg.com/ny/api/res/1.2",
)
_TLDS = (".com", ".net", ".org", ".co.uk", ".de", ".com.au", ".ca", ".fr", ".info", ".co")
_DIRS = (
    "images",
    "uploads",
    "files/store/product",
    "media/catalog/product",
    "assets/img",
    "photos",
    "content",
    "gallery",
    "wp-content/gallery",
    "img/products",
)
_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_YOUTUBE = _ALNUM + b"-_"


class _Builder:
    """String pieces keyed per URL: every piece is a pure function of (seed, name, key)."""

    def __init__(self, streams: Streams, keys: np.ndarray) -> None:
        self.streams = streams
        self.keys = keys

    def pick(self, name: str, options: tuple, weights: tuple | None = None) -> pa.Array:
        if weights is None:
            index = self.streams.integers(name, self.keys, len(options))
        else:
            index = self.streams.choice(name, self.keys, np.asarray(weights))
        return pa.array(options, pa.string()).take(pa.array(index))

    def extension(self) -> pa.Array:
        names, weights = zip(*_EXTENSIONS, strict=True)
        return self.pick("url.ext", names, weights)

    def number(self, name: str, low: int, high: int, width: int = 0) -> pa.Array:
        values = low + self.streams.integers(name, self.keys, high - low + 1)
        text = pc.cast(pa.array(values), pa.string())
        return pc.utf8_lpad(text, width, padding="0") if width else text

    def hex(self, name: str, digits: int = 16) -> pa.Array:
        return hex_strings(self.streams.bits(name, self.keys), digits)

    def slug(self, name: str, low: int, high: int, separator: str = "-") -> pa.Array:
        lengths = low + self.streams.integers(name + ".n", self.keys, high - low + 1)
        vocabulary = slug_vocabulary()
        return join_tokens(self.streams, name, self.keys, lengths, vocabulary, separator).text

    def one_of(self, name: str, variants: list, weights: tuple) -> pa.Array:
        index = self.streams.choice(name, self.keys, np.asarray(weights)).astype(np.int8)
        arrays = [
            v if isinstance(v, pa.Array) else pa.repeat(pa.scalar(v, pa.string()), len(self.keys))
            for v in variants
        ]
        return pc.choose(pa.array(index), *arrays)


def _cat(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _wordpress(b: _Builder) -> pa.Array:
    size = _cat("-", b.number("wp.w", 150, 1200), "x", b.number("wp.h", 150, 1200))
    stamp = _cat("-e", b.number("wp.e", 1_400_000_000_000, 1_640_000_000_000))
    suffix = b.one_of(
        "wp.suffix", ["", _cat("-", b.number("wp.n", 1, 999)), size, "-scaled", stamp],
        (0.40, 0.25, 0.20, 0.05, 0.10),
    )  # fmt: skip
    return _cat(
        "https://", b.pick("wp.host", _WP_HOSTS), "/wp-content/uploads/",
        b.number("wp.year", 2010, 2021), "/", b.number("wp.month", 1, 12, width=2), "/",
        b.slug("wp.slug", 3, 8), suffix, ".", b.extension(),
    )  # fmt: skip


def _shopify(b: _Builder) -> pa.Array:
    deep = b.one_of("shop.deep", ["", _cat(b.number("shop.c", 0, 9999, width=4), "/")], (0.5, 0.5))
    size = b.pick("shop.size", ("grande", "large", "1024x1024", "800x", "600x600", "medium"))
    return _cat(
        "https://cdn.shopify.com/s/files/1/", b.number("shop.a", 0, 9999, width=4), "/",
        b.number("shop.b", 0, 9999, width=4), "/", deep, "products/",
        pc.utf8_title(b.slug("shop.slug", 2, 6, "_")), "_", size, ".", b.extension(),
        "?v=", b.number("shop.v", 1_400_000_000, 1_640_000_000),
    )  # fmt: skip


def _pinterest(b: _Builder) -> pa.Array:
    digest = _cat(b.hex("pin.a"), b.hex("pin.b"))
    parts = [pc.utf8_slice_codeunits(digest, i, i + 2) for i in (0, 2, 4)]
    size = b.pick("pin.size", ("236x", "474x", "564x", "736x", "originals"))
    return _cat(
        "https://i.pinimg.com/", size, "/", parts[0], "/", parts[1], "/", parts[2], "/",
        digest, ".", b.pick("pin.ext", ("jpg", "jpg", "jpg", "png")),
    )  # fmt: skip


def _cdn(b: _Builder) -> pa.Array:
    query = b.one_of(
        "cdn.query",
        [
            "",
            _cat("?w=", b.number("cdn.w", 200, 2000), "&h=", b.number("cdn.h", 200, 2000),
                 "&fit=crop"),
            _cat("?itok=", alphabet_strings(b.streams.bits("cdn.itok", b.keys), _ALNUM, 8)),
            _cat("?v=", b.number("cdn.v", 1_400_000_000, 1_640_000_000)),
            "?format=1500w",
            _cat("?width=", b.number("cdn.width", 200, 2000), "&quality=80"),
        ],
        (0.55, 0.15, 0.10, 0.10, 0.05, 0.05),
    )  # fmt: skip
    return _cat(
        "https://", b.pick("cdn.host", _CDN_HOSTS), "/", b.hex("cdn.dir", 2), "/",
        b.hex("cdn.name"), ".", b.extension(), query,
    )  # fmt: skip


def _youtube(b: _Builder) -> pa.Array:
    video = alphabet_strings(b.streams.bits("yt.id", b.keys), _YOUTUBE, 11)
    name = b.pick("yt.name", ("0", "hqdefault", "maxresdefault", "mqdefault", "sddefault"))
    return _cat("https://img.youtube.com/vi/", video, "/", name, ".jpg")


def _generic(b: _Builder) -> pa.Array:
    sub = b.pick("gen.sub", ("www.", "", "images.", "blog.", "shop.", "cdn."))
    return _cat(
        "https://", sub, b.slug("gen.host", 1, 2, ""), b.pick("gen.tld", _TLDS), "/",
        b.pick("gen.dir", _DIRS), "/", b.number("gen.id", 1, 999_999), "/",
        b.slug("gen.slug", 2, 6), ".", b.extension(),
    )  # fmt: skip


_TEMPLATES: tuple[tuple[Callable[[_Builder], pa.Array], float], ...] = (
    (_wordpress, 0.28),
    (_shopify, 0.14),
    (_pinterest, 0.14),
    (_cdn, 0.18),
    (_youtube, 0.03),
    (_generic, 0.23),
)


def image_urls(streams: Streams, keys: np.ndarray) -> pa.StringArray:
    """One URL per key (int64 keys; equal keys give equal URLs)."""
    builders, weights = zip(*_TEMPLATES, strict=True)
    template = streams.choice("url.template", keys, np.asarray(weights))
    positions: list[np.ndarray] = []
    pieces: list[pa.Array] = []
    for code, build in enumerate(builders):
        rows = np.flatnonzero(template == code)
        if rows.size:
            positions.append(rows)
            pieces.append(build(_Builder(streams, keys[rows])))
    return scatter(len(keys), positions, pieces)


def scatter(n: int, positions: list[np.ndarray], pieces: list[pa.Array]) -> pa.Array:
    """One array of length `n` whose rows `positions[i]` hold `pieces[i]`, in that order."""
    if not pieces:
        return pa.array([], pa.string())
    if len(pieces) == 1:
        return pieces[0]
    order = np.concatenate(positions)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n, dtype=np.int64)
    return pa.concat_arrays(pieces).take(pa.array(inverse))
