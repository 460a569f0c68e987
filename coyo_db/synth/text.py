"""Word lists and the vectorised caption builder of the synthetic generator.

Captions are alt-text-like runs of vocabulary tokens joined by single spaces (COYO collapsed
whitespace, so there is no leading, trailing or double space). Tokens are drawn with weights
from a vocabulary of stop words, nouns, adjectives, verbs, names, numbers, punctuation, HTML
entities kept verbatim (``&amp;``, ``&#39;s``) and some non-ASCII words (``café``, ``Zürich``,
``東京``).

Because a space is never a word character and no drawn token contains one (a boilerplate
phrase such as ``thumbnail for`` is only ever a whole text), a caption's word count
(runs of Python's ``\\w+``, Unicode) is the sum of its tokens' counts, and these are measured once
per token with :mod:`re`: exact agreement with ``re.findall(r"\\w+", text)`` by construction,
summed with numpy. Arrow's RE2 ``\\w`` is ASCII-only (``naïve`` is two runs there, one in
Python); ``[\\p{L}\\p{N}_]+`` agrees with Python on these texts. BERT and GPT-2 token counts are
estimated per token the same way (word pieces for long words, one token per punctuation mark).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from coyo_db.synth.counter_random import Streams

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SPREAD = np.uint64(0xD1342543DE82EF95)

_WORD = re.compile(r"\w+")

# (share of drawn tokens, tokens); tokens within a group are weighted 1/rank**0.7.
_GROUPS: tuple[tuple[float, str], ...] = (
    (
        0.18,
        "the of and with in a for on to at by from is an or this your our my new how "
        "near over into out up its as vs all two one",
    ),
    (
        0.40,
        "dog cat house kitchen garden wedding dress beach sunset mountain lake river city "
        "street car bike cake coffee table chair sofa lamp bedroom bathroom living room design "
        "ideas decor art print poster painting photo portrait woman man girl boy child family "
        "couple friends team player game match stadium football basketball soccer tennis golf "
        "shoes shirt jacket bag watch ring necklace earrings jewelry flowers rose tree forest "
        "park bridge tower church castle museum hotel restaurant food recipe chicken salad "
        "pasta pizza bread chocolate fruit apple banana wine beer tea cup mug plate bowl window "
        "door wall floor roof pool boat ship train plane airport road map logo icon vector "
        "illustration pattern background texture wallpaper card invitation gift box toy doll "
        "book cover page magazine album concert festival party christmas halloween holiday "
        "vacation travel trip island ocean sea sky cloud rain snow winter summer spring autumn "
        "morning night light lighting fixtures furniture cabinet shelf mirror rug curtain "
        "pillow blanket quilt fabric yarn knitting craft project tutorial tips guide review "
        "sale price product products collection set kit pack model version series edition "
        "style fashion outfit look hair makeup nails skin face eyes smile hands horse bird "
        "fish butterfly puppy kitten animal wildlife farm field grass stone rock sand wood "
        "metal gold silver leather cotton steel clock vase candle basket jar sign menu truck "
        "motorcycle bus tractor helmet camera phone laptop screen keyboard desk office "
        "building skyline harbor village cottage cabin barn tent lighthouse waterfall canyon "
        "desert valley meadow",
    ),
    (
        0.13,
        "beautiful modern vintage small large big little old white black red blue green yellow "
        "pink purple orange brown grey gray dark bright happy cute funny simple easy best free "
        "classic contemporary expensive cheap luxury rustic elegant minimal minimum "
        "traditional natural organic fresh healthy homemade delicious wooden handmade custom "
        "personalized original premium high quality digital abstract colorful stunning "
        "amazing unique perfect favorite famous historic ancient tropical sunny cozy golden "
        "romantic floral geometric wild young",
    ),
    (
        0.04,
        "sitting standing walking running playing holding wearing looking smiling cooking "
        "eating drinking reading painting dancing swimming flying driving working shopping "
        "featuring showing displayed made decorated inspired designed built painted covered",
    ),
    (
        0.14,
        "The A New York London Paris California Texas Florida Tokyo Berlin Sydney Canada "
        "Australia America Europe Christmas Disney Nike Samsung Amazon Instagram Nintendo "
        "Mario John David Michael Sarah Emma Art Riley Smith Johnson Williams Brown Street Park "
        "Lake Mount River Island Bay Beach Hotel Museum Church University School Monday Friday "
        "Saturday January May July December U.S. UK Inc. Co.'s Home Design Photo Image Wedding "
        "Kitchen Modern Beautiful Free Best DIY Gallery Collection Set Shop",
    ),
    (
        0.045,
        "1 2 3 4 5 10 12 20 50 100 2013 2016 2017 2018 2019 2020 2021 #1 4K 3D HD 5x7 8x10 "
        "100% $19.99 No. Vol. Part x 2pcs 1:1",
    ),
    (0.03, "- | & : / ... (2019) (Monterey), Photo: FILE PHOTO: etc. (B-25 (42 ! ?"),
    (0.003, "&amp; &quot; &#39;s valentine&amp;#39;s &nbsp; &lt;3 R&amp;B"),
    (
        0.004,
        "café naïve Zürich São Paulo México Québec résumé crème brûlée piñata jalapeño Köln "
        "Málaga Beyoncé Pokémon façade entrée über Kraków Straße 東京 – — ™ © °C ½ €50 × ♥ …",
    ),
)

# Texts that many pages use as alt text; COYO dropped texts appearing more than 10 times.
BOILERPLATE_TEXTS: tuple[str, ...] = (
    "thumbnail for",
    "image for",
    "picture of",
    "Click to enlarge",
    "View larger image",
    "Product image 1",
    "image 1 of 5",
    "No image available",
    "Loading image, please wait",
    "placeholder image for product",
    "Photo gallery image",
    "Image may contain: 1 person, smiling",
)

# Lowercase ASCII words for URL slugs and generated host names.
SLUG_WORDS: tuple[str, ...] = tuple(
    word
    for word in " ".join(text for _, text in _GROUPS[1:4]).split()
    if word.isascii() and word.isalpha() and word.islower()
)


@dataclass(frozen=True)
class Vocabulary:
    """Tokens with their per-token counts and a 2**16-entry table for weighted draws."""

    tokens: pa.StringArray
    words: np.ndarray
    bert: np.ndarray
    gpt: np.ndarray
    table: np.ndarray
    phrases_start: int  # tokens from here on are whole phrases, never drawn

    @property
    def packed(self) -> np.ndarray:
        """The three counts in one int64 per token (16 bits each), to sum them in one pass."""
        return (
            self.words.astype(np.int64)
            | self.bert.astype(np.int64) << 16
            | (self.gpt.astype(np.int64) << 32)
        )

    def draw(self, bits: np.ndarray) -> np.ndarray:
        """Token indices from 64 random bits each (the top 16 bits index the table)."""
        return self.table[(bits >> np.uint64(48)).astype(np.int64)]


def _token_counts(token: str) -> tuple[int, int, int]:
    runs = _WORD.findall(token)
    punctuation = len(_WORD.sub("", token))
    # Word pieces: long or capitalised words split into more pieces; GPT-2 splits digits.
    bert = punctuation + sum(1 + (len(r) - 1) // 5 + (not r.isascii()) for r in runs)
    gpt = punctuation + sum(
        1 + (len(r) - 1) // 5 + (r[:1].isupper()) + (not r.isascii()) + r.isdigit() for r in runs
    )
    return len(runs), max(bert, 1), max(gpt, 1)


def _build(
    groups: tuple[tuple[float, tuple[str, ...]], ...], phrases: tuple[str, ...] = ()
) -> Vocabulary:
    tokens: list[str] = []
    weights: list[float] = []
    for share, words in groups:
        ranks = 1.0 / np.arange(1, len(words) + 1) ** 0.7
        tokens.extend(words)
        weights.extend(share * ranks / ranks.sum())
    counts = [_token_counts(t) for t in tokens]
    # Phrases are never drawn, only forced as a whole string; their counts sum their words.
    counts += [tuple(np.sum([_token_counts(w) for w in p.split(" ")], axis=0)) for p in phrases]
    cdf = np.cumsum(weights) / np.sum(weights)
    grid = (np.arange(1 << 16) + 0.5) / (1 << 16)
    table = np.minimum(np.searchsorted(cdf, grid), len(tokens) - 1).astype(np.int32)
    columns = np.array(counts, dtype=np.int32).reshape(-1, 3).T.copy()
    return Vocabulary(pa.array(tokens + list(phrases), pa.string()), *columns, table, len(tokens))


@cache
def caption_vocabulary() -> Vocabulary:
    """The weighted vocabulary captions are drawn from, then the boilerplate texts."""
    groups = tuple((share, tuple(text.split())) for share, text in _GROUPS)
    return _build(groups, BOILERPLATE_TEXTS)


@cache
def slug_vocabulary() -> Vocabulary:
    """Lowercase ASCII words for URL slugs, equally weighted by rank."""
    return _build(((1.0, SLUG_WORDS),))


@dataclass(frozen=True)
class Joined:
    """Strings built from tokens, with the summed per-token counts of each."""

    text: pa.StringArray
    words: np.ndarray
    bert: np.ndarray
    gpt: np.ndarray


def join_tokens(
    streams: Streams,
    stream: str,
    keys: np.ndarray,
    lengths: np.ndarray,
    vocabulary: Vocabulary,
    separator: str = " ",
    forced: np.ndarray | None = None,
) -> Joined:
    """For each key, `lengths` (>= 1) tokens drawn from `vocabulary`, joined by `separator`.

    Token j of key k depends only on (seed, stream, k, j): the same key gives the same string.
    Where `forced` (one token index per key, or -1) is set, that key's string is that one
    token (its length must be 1).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and lengths.min() < 1:
        raise ValueError("every string needs at least one token")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1]) if ends.size else 0
    # Token j of a row: a Weyl step from the row's random bits, then one xorshift-multiply
    # round (a cheap half of SplitMix64; its top 16 bits pick the token).
    position = np.arange(total, dtype=np.uint64) - np.repeat(starts.astype(np.uint64), lengths)
    token_bits = np.repeat(streams.bits(stream, keys), lengths)
    position *= _GOLDEN
    token_bits += position
    token_bits ^= token_bits >> np.uint64(31)
    token_bits *= _SPREAD
    index = vocabulary.draw(token_bits)
    if forced is not None:
        rows = np.flatnonzero(forced >= 0)
        index[starts[rows]] = forced[rows]
    # Every token but a row's last carries the separator after it, so the buffer `take` builds
    # already holds the joined strings back to back; cutting it at row boundaries gives them.
    size = len(vocabulary.tokens)
    index[ends - 1] += size
    spaced = pa.concat_arrays(
        [pc.binary_join_element_wise(vocabulary.tokens, separator, ""), vocabulary.tokens]
    )
    tokens = spaced.take(pa.array(index))
    token_offsets = np.frombuffer(
        tokens.buffers()[1], dtype=np.int32, count=total + 1, offset=4 * tokens.offset
    )
    row_offsets = np.ascontiguousarray(token_offsets[np.concatenate([[0], ends])])
    text = pa.StringArray.from_buffers(len(lengths), pa.py_buffer(row_offsets), tokens.buffers()[2])
    # Sums stay below 2**16 per field: at most a few hundred tokens of a few pieces each.
    packed = np.tile(vocabulary.packed, 2)
    cumulative = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(packed[index], out=cumulative[1:])
    sums = cumulative[ends] - cumulative[starts]
    mask = np.int64(0xFFFF)
    return Joined(
        text,
        (sums & mask).astype(np.int32),
        (sums >> 16 & mask).astype(np.int32),
        (sums >> 32 & mask).astype(np.int32),
    )
