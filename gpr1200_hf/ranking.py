"""Exact retrieval metrics for GPR1200-style evaluation. Pure: arrays in, arrays out.

Definitions (the single source of truth; the README and the metric card repeat them):

* **Scores.** ``cosine``: dot product of L2-normalised vectors (normalised in float64, rounded
  to float32), in float32. ``ip``: raw inner product, in float32. ``l2``: negative squared
  Euclidean distance, in float64 (ranking by ascending distance). ``hamming``: packed binary
  codes (N x bytes uint8, ``np.packbits`` order), score ``-popcount(a XOR b)``. Integer (and
  boolean) embeddings under ``ip``/``l2`` are scored in exact integer arithmetic (float32 or
  float64 where every score provably is exact, see ``exact_integer_vectors``). Two items *tie*
  when their computed scores are exactly equal (for codes and integers: the exact scores, the
  same on every backend; float scores may differ between backends in the last bits).
* **Scaling** (``prepare_ranking``). Before scoring, the embeddings are multiplied by a power of
  two: per row for ``cosine`` (the normalisation cancels it), one common factor for ``ip`` and
  ``l2``, chosen from the largest absolute value and the dimension so that no score and no
  partial sum can overflow. For ``l2`` a per-column offset (the median of a sample of rows, a
  data value) is subtracted first, so that the expansion ``2 a.b - |a|^2 - |b|^2`` does not
  cancel. Powers of two are exact in binary floating point and an offset leaves distances
  unchanged, so wherever the unscaled scores were representable the computed scores are those
  times a power of two (same ranking, same ties; bit-identical metrics); where they overflowed,
  underflowed or cancelled, the ranking now follows the true values. Rows so much smaller than
  the largest that their scores would still underflow are refused; a NaN or infinite score
  (impossible after scaling) is refused before counting. Every metric is checked to lie in
  [0, 1].
* **Labels.** Integers, strings, or floats that are whole numbers below 2**53 (2**24 for
  float32, 2**11 for float16: above that, distinct IDs may already have merged).
* **Ranked list.** Every query ranks the whole collection. With ``include_self=True`` (the
  official protocol) the query is part of its own list and counts as relevant; with ``False``
  it is removed from the list.
* **Relevant.** Items with the query's label. ``R`` = number of relevant items in the list.
* **AP** = (1/R) * sum over relevant items of (relevant items ranked at or above it) / (its rank).
* **Ties.** ``expected``: the exact expectation over all orderings inside each tie (McSherry &
  Najork 2008, in closed form); ``stable``: ties keep dataset (input) order; ``optimistic``:
  relevant items first; ``pessimistic``: relevant items last. Without ties all four agree.
* **Extras** (always with the query excluded, R' = class size - 1): ``precision_at_1``,
  ``r_precision`` (relevant items among the first R' / R') and ``map_at_r`` (MAP@R, Musgrave
  et al. 2020: (1/R') * sum over the first R' positions of precision at k if item k is relevant).
  Ties follow the same ``ties`` rule (``expected`` gives the exact expectation).

Algorithm: the rank of a relevant item is the count of items scoring above it, so no row is
sorted and the N x N matrix is never held. Items are grouped by label; the similarity matrix is
computed in class-aligned blocks of its upper triangle only (it is symmetric), each block
counted both row-wise and column-wise against the relevant scores of its rows and columns
(``stable``: the items ranked before each relevant item, scoring above it or tied with an
earlier input position).
Memory is O(block^2 + N * class size).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import protocol
from .errors import InputError
from .ranking_common import (
    Counts,
    NonFiniteScores,
    blocks,
    hamming_bits,
    slot_positions,
    tie_side,
)

Metric = Literal["cosine", "ip", "l2", "hamming"]
Ties = Literal["expected", "stable", "optimistic", "pessimistic"]
Normalize = Literal["relevant", "retrieved"]
METRICS: tuple[str, ...] = ("cosine", "ip", "l2", "hamming")
TIES: tuple[str, ...] = ("expected", "stable", "optimistic", "pessimistic")
NORMALIZE: tuple[str, ...] = ("relevant", "retrieved")
DEFAULT_BLOCK = 256


# --------------------------------------------------------------------------- validation


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not supported; choose one of {', '.join(choices)}")


def _torch_to_numpy(t) -> np.ndarray:
    """A torch tensor on any device as numpy; 8/16-bit floats widened to float32 (exact)."""
    t = t.detach()
    if t.device.type == "meta":
        raise InputError("the tensor is on torch's meta device and holds no values")
    if t.is_floating_point() and t.element_size() < 4:
        t = t.float()
    return t.cpu().resolve_conj().resolve_neg().numpy()


def as_array(obj, what: str) -> np.ndarray:
    """``obj`` as a numpy array (lists, numpy arrays, torch tensors on any device).

    Ragged nested lists raise ``InputError`` instead of numpy's message.
    """
    if type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach"):
        obj = _torch_to_numpy(obj)
    try:
        return np.asarray(obj)
    except (ValueError, TypeError) as e:
        raise InputError(
            f"{what} do not form a rectangular array (rows of different lengths or mixed "
            "types?); pass equal-length rows of numbers"
        ) from e


def validate_embeddings(embeddings, metric: str = "cosine") -> np.ndarray:
    """The embeddings as a finite 2-D numeric array, or ``InputError`` naming the problem.

    Floats keep their precision (float16 becomes float32, exactly); integers and booleans stay
    as they are for ``ip``/``l2`` (scored exactly where they can be) and become float64 for
    ``cosine``. ``hamming`` takes packed bits: (N, bytes) uint8. Casting to the metric's score
    precision happens in ``prepare*``.
    """
    _check_choice("metric", metric, METRICS)
    x = as_array(embeddings, "embeddings")
    if metric == "hamming" and x.dtype != np.uint8:
        raise InputError(
            f"metric='hamming' takes packed binary codes, an (N, bytes) uint8 array as "
            f"np.packbits(bits, axis=1) gives; got dtype {x.dtype}"
        )
    if x.dtype == object:
        raise InputError("embeddings must be a numeric array, got Python objects (ragged rows?)")
    if x.ndim != 2:
        raise InputError(
            f"embeddings must be 2-D (N rows x D dims), got shape {x.shape}; "
            "reshape a single vector with x[None, :]"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"embeddings are empty (shape {x.shape})")
    if x.dtype.kind not in "fiub":
        raise InputError(f"embeddings must be numeric (real numbers), got dtype {x.dtype}")
    if x.dtype.kind != "f":
        if metric != "cosine":
            return x  # integers: finite
        x = x.astype(np.float64)
    elif x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"embeddings contain NaN or inf in {bad.size} row(s), first at row {bad[0]}; "
            "fix the extractor output"
        )
    if metric == "cosine":
        zero = ~np.any(x != 0, axis=1)
        if zero.any():
            bad = np.flatnonzero(zero)
            raise InputError(
                f"{bad.size} embedding(s) are all zeros (first at row {bad[0]}); cosine is "
                "undefined for zero vectors; use the ip or l2 metric (metric='ip' in Python, "
                "--metric ip on the command line), or fix the extractor"
            )
    return x


def _float_label_bits(dtype: np.dtype) -> int:
    """Float labels must stay below 2**bits: every whole number under it is exact in ``dtype``
    (and fits int64)."""
    return min(np.finfo(dtype).nmant + 1, 63)


def resolve_labels(labels, n: int) -> np.ndarray:
    """Labels as a 1-D array of length ``n``; ``None`` means canonical GPR1200 labels.

    Refused: labels that may not be what the caller meant (float labels that are not whole
    numbers or too large to be exact in their float type, a list mixing numbers and strings,
    integers beyond 64 bits).
    """
    if labels is None:
        if n != protocol.NUM_IMAGES:
            raise InputError(
                f"without labels the input must hold the {protocol.NUM_IMAGES} GPR1200 images in "
                f"canonical order, got {n} rows; pass labels (one category ID per row)"
            )
        return protocol.canonical_labels()
    y = as_array(labels, "labels")
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D (one per row), got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"got {n} rows but {y.shape[0]} labels; pass one label per row")
    if y.dtype == object:
        raise InputError("labels must be integers (within 64 bits) or strings, got Python objects")
    if y.dtype.kind not in "iubfUS":
        raise InputError(f"labels must be integers or strings, got dtype {y.dtype}")
    if y.dtype.kind in "US" and isinstance(labels, (list, tuple)):
        if len({isinstance(v, (str, bytes)) for v in labels}) > 1:
            raise InputError(
                "labels mix numbers and strings (numpy would turn 1 and '1' into the same "
                "label); pass one kind"
            )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or np.any(y != np.round(y)):
            raise InputError("float labels must be whole numbers (category IDs)")
        bits = _float_label_bits(y.dtype)
        if y.size and np.abs(y).max() >= 2.0**bits:
            raise InputError(
                f"float labels of magnitude 2**{bits} or more are not exact in {y.dtype} "
                "(distinct IDs may have merged); pass integer labels"
            )
        y = y.astype(np.int64)
    return y


def _class_structure(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, class_id in sorted order): a stable sort of the items by label."""
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes)
    if counts.min() < 2:
        lone = np.unique(labels)[np.argmin(counts)].item()
        raise InputError(
            f"label {lone!r} has a single item: its query has no other relevant item, so "
            "AP without self, MAP@R and R-precision are undefined; every label needs >= 2 items"
        )
    order = np.argsort(codes, kind="stable")
    return order, codes[order]


# --------------------------------------------------------------------------- scores


def _row_max_abs(x: np.ndarray) -> np.ndarray:
    """Largest absolute value of each row (no temporary of the array's size)."""
    return np.maximum(x.max(axis=1), -x.min(axis=1))


def _pow2_exponent(value, target: int) -> int:
    """``k`` with ``value * 2**k`` in ``[2**(target-1), 2**target)`` (0 for a zero value)."""
    if value == 0:
        return 0
    return target - int(np.frexp(value)[1])


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


def _ip_target(dims: int) -> int:
    """Largest |value| below 2**t keeps every float32 partial sum under 2**127 (no overflow)."""
    return (127 - _ceil_log2(dims)) // 2


def _l2_target(dims: int) -> int:
    """Below 2**t, |2 a.b - |a|^2 - |b|^2| and every partial sum stay under 2**1021."""
    return (1021 - _ceil_log2(dims)) // 2


def _refuse_underflow(row_max: np.ndarray, k: int, smallest: float, metric: str) -> None:
    """Refuse rows whose largest value, times ``2**k``, is nonzero but below ``smallest``:
    their scores would underflow (the rows span more magnitudes than the format holds)."""
    wide = row_max if row_max.dtype.itemsize > 8 else row_max.astype(np.float64)
    tiny = (row_max > 0) & (np.ldexp(wide, k) < smallest)
    if tiny.any():
        r = int(np.flatnonzero(tiny)[0])
        raise InputError(
            f"row {r} is too small next to the largest rows: its {metric} scores would "
            f"underflow {'float32' if metric == 'ip' else 'float64'} (the rows' magnitudes "
            "differ by more than the format holds); rescale the rows (or use cosine)"
        )


def prepare_ranking(x: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Like ``prepare`` for validated embeddings, in the units the ranking uses.

    The matrix is multiplied by a power of two (per row for ``cosine``, whose normalisation
    cancels it; one common factor for ``ip`` and ``l2``) and, for ``l2``, a per-column offset
    (the median of a row sample, a data value) is subtracted first. Powers of two are exact in
    binary floating point and translations leave Euclidean distances unchanged, so the scores
    rank as before, but they can no longer overflow, underflow or cancel: they are the
    unscaled scores times ``2**(2k)`` wherever those were representable.
    """
    n, d = x.shape
    if metric == "hamming":
        return packed_words(x), None
    if x.dtype.kind in "iub":
        exact = exact_integer_vectors(x, metric)
        if exact is not None:
            return exact
        x = x.astype(np.float64)  # too large for exact scores: scored as floats
    if metric == "cosine":
        if x.dtype != np.float32:  # wider than float32: the cast could overflow or underflow
            k = -np.frexp(_row_max_abs(x))[1]  # each row's largest value to [0.5, 1)
            x = np.ldexp(x, k[:, None].astype(np.int32)).astype(np.float32)
        return _l2_normalized(x), None
    if metric == "ip":
        row_max = _row_max_abs(x)
        k = _pow2_exponent(row_max.max(), _ip_target(d))
        _refuse_underflow(row_max, k, 2.0**-63, "ip")
        if k != 0:
            x = np.ldexp(x, k)
        return np.ascontiguousarray(x, dtype=np.float32), None
    if x.dtype.itemsize < 8:
        x = x.astype(np.float64)
    target = _l2_target(d)
    k = _pow2_exponent(_row_max_abs(x).max(), target)
    v = np.ldexp(x, k) if k != 0 else x.copy()  # |v| < 2**target: v - center cannot overflow
    sample = v[:: max(1, n // 1024)]
    v -= np.partition(sample, sample.shape[0] // 2, axis=0)[sample.shape[0] // 2]
    row_max = _row_max_abs(v)
    k = _pow2_exponent(row_max.max(), target)
    _refuse_underflow(row_max, k, 2.0**-511, "l2")
    if k != 0:
        np.ldexp(v, k, out=v)
    v = np.ascontiguousarray(v, dtype=np.float64)
    return v, np.einsum("ij,ij->i", v, v)


def packed_words(codes: np.ndarray) -> np.ndarray:
    """Packed codes (N x bytes uint8) as N x words uint64, zero-padded (padding adds no
    distance). Longer codes than float32 holds exactly (2**22 bits) are refused."""
    n, nbytes = codes.shape
    if nbytes * 8 >= 2**22:
        raise InputError(
            f"binary codes of {nbytes * 8} bits are too long for exact hamming scores "
            "(at most 4194303 bits)"
        )
    words = np.zeros((n, -(-nbytes // 8) * 8), dtype=np.uint8)
    words[:, :nbytes] = codes
    return words.view(np.uint64)


def exact_integer_vectors(x: np.ndarray, metric: str):
    """``prepare_ranking`` for integer (or boolean) embeddings under ``ip``/``l2``, whose scores
    are then exact integers, the same on every backend; ``None`` where they could exceed what
    float64 holds exactly (2**53). Values of at most 8 bits whose scores stay below 2**24 are
    scored in float32 (exact even where a GPU rounds matmul inputs to TF32 or bfloat16), the
    rest in float64. ``cosine`` is a float metric: ``None``."""
    if metric not in ("ip", "l2"):
        return None
    top = max(abs(int(x.max())), abs(int(x.min())))
    bound = x.shape[1] * top * top * (4 if metric == "l2" else 1)  # |score|, |partial sums|
    if bound < 2**24 and top <= 255:
        v = x.astype(np.float32)
    elif bound < 2**53:
        v = x.astype(np.float64)
    else:
        return None
    v = np.ascontiguousarray(v)
    return v, (np.einsum("ij,ij->i", v, v) if metric == "l2" else None)


def prepare(embeddings, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray | None]:
    """Vectors whose inner products are the scores in their own units, plus a per-item offset.

    ``score(i, j) = v_i . v_j`` for ``cosine``/``ip`` (offset ``None``); for ``l2``
    ``score(i, j) = 2 v_i . v_j - |v_i|^2 - |v_j|^2 = -|v_i - v_j|^2`` with offset ``|v|^2``.
    For showing score values (the explorer); the metrics rank with ``prepare_ranking``.
    """
    x = validate_embeddings(embeddings, metric)
    if metric == "cosine":
        return prepare_ranking(x, metric)
    if metric == "hamming":
        bits = hamming_bits(packed_words(x))
        return bits, bits.sum(axis=1, dtype=np.float32)
    if x.dtype.kind in "iub":
        exact = exact_integer_vectors(x, metric)
        if exact is not None:
            return exact
    v = x.astype(np.float32 if metric == "ip" else np.float64)
    if not np.isfinite(v).all():
        raise InputError(f"embeddings exceed the range of {v.dtype}, in which {metric} is shown")
    if metric == "ip":
        return np.ascontiguousarray(v), None
    return v, np.einsum("ij,ij->i", v, v)


def _l2_normalized(x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Rows over their L2 norm (float64), rounded to float32; in cache-sized chunks."""
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[0], chunk):
        c = x[start : start + chunk].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", c, c))
        np.divide(c, norms[:, None], out=c)
        out[start : start + chunk] = c
    return out


def score_dtype(v: np.ndarray):
    """The dtype of the scores computed from ``v`` (packed codes give float32 integers)."""
    return np.dtype(np.float32) if v.dtype == np.uint64 else v.dtype


def pairwise_scores(
    v: np.ndarray, offset: np.ndarray | None, rows: slice, cols: slice
) -> np.ndarray:
    """The block ``scores[rows, cols]`` (what every ranking in this module compares)."""
    if v.dtype == np.uint64:
        return _hamming_scores(v[rows], v[cols])
    s = v[rows] @ v[cols].T
    if offset is not None:
        s *= 2.0
        s -= offset[rows, None]
        s -= offset[None, cols]
    return s


_M1, _M2, _M4, _H01 = (
    np.uint64(0x5555555555555555),
    np.uint64(0x3333333333333333),
    np.uint64(0x0F0F0F0F0F0F0F0F),
    np.uint64(0x0101010101010101),
)


def _popcount(x: np.ndarray, out: np.ndarray) -> None:
    """Set bits of each uint64 of ``x`` into ``out`` (uint8); ``x`` may be overwritten."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: one instruction per word
        np.bitwise_count(x, out=out)
        return
    x -= (x >> np.uint64(1)) & _M1  # pragma: no cover - numpy 1.x: the classic SWAR count
    x[...] = (x & _M2) + ((x >> np.uint64(2)) & _M2)  # pragma: no cover
    x[...] = (x + (x >> np.uint64(4))) & _M4  # pragma: no cover
    out[...] = (x * _H01) >> np.uint64(56)  # pragma: no cover


def _hamming_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``-popcount(a_i XOR b_j)`` for packed codes (rows of uint64 words), as float32 (exact:
    integers below 2**24)."""
    bt = np.ascontiguousarray(b.T)
    x = np.empty((a.shape[0], b.shape[0]), dtype=np.uint64)
    bits = np.empty(x.shape, dtype=np.uint8)
    dist = np.zeros(x.shape, dtype=np.uint16 if a.shape[1] * 64 < 2**16 else np.uint32)
    for k in range(a.shape[1]):
        np.bitwise_xor(a[:, k, None], bt[k][None, :], out=x)
        _popcount(x, bits)
        dist += bits
    s = dist.astype(np.float32)
    return np.negative(s, out=s)


# --------------------------------------------------------------------------- counting


def _count(
    s: np.ndarray,
    thresholds: np.ndarray,
    axis: int,
    gt: np.ndarray,
    ge: np.ndarray,
    stable: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> None:
    """Count, for each query of ``s``, the scores above and at its thresholds.

    ``axis=1``: queries are the rows of ``s``; ``axis=0``: its columns. Adds #(score > t_k) to
    ``gt[:, k]`` and #(score >= t_k) to ``ge[:, k]``. With ``stable=(slot_pos, other_pos,
    before)`` it adds instead, to ``before[:, k]``, the items ranked before slot k's item in
    stable order: scoring above t_k, or exactly t_k with an earlier input position
    (``other_pos`` of the other axis < ``slot_pos[:, k]``). Where all the others come before
    (or after) every slot item this is one comparison, like ``ge`` (``gt``). Slots whose
    threshold lies above every score of every query here are skipped.
    """
    sum_dtype = np.int16 if s.shape[axis] < 2**15 else np.int64
    buf = np.empty(s.shape, dtype=np.bool_)
    u8 = buf.view(np.uint8)
    best = s.max(axis=axis)  # NaN or +inf anywhere shows here
    if not np.isfinite(best).all():
        raise NonFiniteScores()
    g = np.zeros(thresholds.shape, dtype=np.int64)
    e = np.zeros(thresholds.shape, dtype=np.int64)
    by_slot = np.ascontiguousarray(thresholds.T)
    if stable:
        slot_pos, other_pos, before = stable
        pos_by_slot = np.ascontiguousarray(slot_pos.T)
        other = other_pos[None, :] if axis == 1 else other_pos[:, None]
        earlier = None
    for k in range(thresholds.shape[1]):
        t = by_slot[k]
        if not np.any(t <= best):
            continue
        t = t[:, None] if axis == 1 else t[None, :]
        if not stable:
            np.greater(s, t, out=buf)
            g[:, k] = u8.sum(axis=axis, dtype=sum_dtype)
            np.greater_equal(s, t, out=buf)
            e[:, k] = u8.sum(axis=axis, dtype=sum_dtype)
            continue
        p = pos_by_slot[k]
        side = tie_side(other_pos, p)
        (np.greater_equal if side == "before" else np.greater)(s, t, out=buf)
        e[:, k] = u8.sum(axis=axis, dtype=sum_dtype)
        if side == "mixed":  # ties broken element by element
            if earlier is None:
                earlier = np.empty(s.shape, dtype=np.bool_)
            np.less(other, p[:, None] if axis == 1 else p[None, :], out=earlier)
            np.equal(s, t, out=buf)
            buf &= earlier
            e[:, k] += u8.sum(axis=axis, dtype=sum_dtype)
    if stable:
        before += e
    else:
        gt += g
        ge += e


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def _single_threaded_blas() -> Iterator[bool]:
    """Pin BLAS to one thread so strip workers can run side by side (needs threadpoolctl).

    Yields whether parallel workers are worthwhile: without threadpoolctl, BLAS keeps its own
    threads (which spin after each call and would starve counting threads).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield True


class _StripCounter:
    """Counts strips of the upper triangle into its own accumulators (one per worker).

    Phase 1 (``diagonal``) scores each class-aligned diagonal block, which holds every relevant
    pair of its rows, so it fixes all thresholds; the block is kept so that phase 2 counts the
    very same numbers. Phase 2 (``strip``) scores rows ``blk`` against columns ``[c0, c1)`` at
    or right of the block and counts every element twice: for its row's query and, right of the
    diagonal block, for its column's query. Wide strips keep numpy's inner loops long. For
    ``stable`` it counts ``before`` (``slot_pos`` set between the phases) instead of gt/ge.
    """

    def __init__(self, v, offset, class_ids, input_pos, sizes, c: Counts, diag: dict, ties):
        self.v, self.offset, self.class_ids = v, offset, class_ids
        self.input_pos, self.sizes, self.c, self.diag = input_pos, sizes, c, diag
        self.gt = np.zeros_like(c.gt)
        self.ge = np.zeros_like(c.ge)
        self.before = np.zeros_like(c.before) if ties else None
        self.slot_pos: np.ndarray | None = None

    def diagonal(self, blk: slice) -> None:
        c = self.c
        s = pairwise_scores(self.v, self.offset, blk, blk)
        local = self.class_ids[blk]
        lo = blk.start
        for cls in np.unique(local):
            cs = int(np.searchsorted(local, cls))
            ce = cs + int(self.sizes[cls])
            sub = s[cs:ce, cs:ce]
            order = np.argsort(-sub, axis=1, kind="stable")
            rows = slice(lo + cs, lo + ce)
            c.thresholds[rows, : ce - cs] = np.take_along_axis(sub, order, axis=1)
            c.self_slot[rows] = np.argmax(order == np.arange(ce - cs)[:, None], axis=1)
            c.slot_member[rows, : ce - cs] = lo + cs + order
        self.diag[blk.start] = s

    def strip(self, blk: slice, c0: int, c1: int) -> None:
        c = self.c
        if c0 == blk.start:  # the strip starts with the diagonal block, already scored
            s = np.empty((blk.stop - blk.start, c1 - c0), dtype=score_dtype(self.v))
            width = blk.stop - blk.start
            s[:, :width] = self.diag[blk.start]
            if c1 > blk.stop:
                s[:, width:] = pairwise_scores(self.v, self.offset, blk, slice(blk.stop, c1))
        else:
            s = pairwise_scores(self.v, self.offset, blk, slice(c0, c1))
        if self.before is None:
            _count(s, c.thresholds[blk], 1, self.gt[blk], self.ge[blk])
        else:  # the diagonal block's columns apart: elsewhere the tie side is often uniform
            split = blk.stop - c0 if c0 == blk.start else 0
            for a, b in ((0, split), (split, c1 - c0)):
                if b > a:
                    pos = (self.slot_pos[blk], self.input_pos[c0 + a : c0 + b], self.before[blk])
                    _count(s[:, a:b], c.thresholds[blk], 1, self.gt[blk], self.ge[blk], pos)
        off = max(0, blk.stop - c0)
        if off < c1 - c0:
            cols = slice(c0 + off, c1)
            pos = None
            if self.before is not None:
                pos = (self.slot_pos[cols], self.input_pos[blk], self.before[cols])
            _count(s[:, off:], c.thresholds[cols], 0, self.gt[cols], self.ge[cols], pos)


def _run_all(tasks: list, workers: list[_StripCounter], pool) -> None:
    """Run ``tasks`` (method name, args) spread over the workers, each pulling the next task."""
    if pool is None:
        for name, args in tasks:
            getattr(workers[0], name)(*args)
        return
    it = iter(tasks)
    lock = threading.Lock()

    def drain(worker: _StripCounter) -> None:
        while True:
            with lock:
                task = next(it, None)
            if task is None:
                return
            getattr(worker, task[0])(*task[1])

    for job in [pool.submit(drain, w) for w in workers]:
        job.result()


STRIP_WIDTH = 8192


def _rank_counts(
    v: np.ndarray,
    offset,
    class_ids: np.ndarray,
    input_pos: np.ndarray,
    block: int,
    track_ties: bool,
) -> Counts:
    """Thresholds and counts for every query, from the upper triangle of the score matrix."""
    n = v.shape[0]
    sizes = np.bincount(class_ids)
    counts = Counts.empty(sizes, class_ids, score_dtype(v))
    row_blocks = blocks(class_ids, block)
    diagonal = [("diagonal", (b,)) for b in row_blocks]
    strips = []
    for b in row_blocks:
        width = max(STRIP_WIDTH, b.stop - b.start)
        strips += [("strip", (b, c0, min(c0 + width, n))) for c0 in range(b.start, n, width)]
    strips.sort(key=lambda task: task[1][2] - task[1][1], reverse=True)  # big first: balance
    diag: dict[int, np.ndarray] = {}
    with _single_threaded_blas() as parallel:
        n_workers = min(_workers(), len(strips)) if parallel else 1
        workers = [
            _StripCounter(v, offset, class_ids, input_pos, sizes, counts, diag, track_ties)
            for _ in range(n_workers)
        ]
        pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
        try:
            _run_all(diagonal, workers, pool)  # all thresholds are known after this
            slot_pos = slot_positions(counts.slot_member, input_pos)
            for w in workers:
                w.slot_pos = slot_pos
            _run_all(strips, workers, pool)
        finally:
            if pool is not None:
                pool.shutdown()
    for w in workers:
        counts.gt += w.gt
        counts.ge += w.ge
        if w.before is not None:
            counts.before += w.before
    return counts


# --------------------------------------------------------------------------- AP from counts


def _harmonic(n: int) -> np.ndarray:
    h = np.zeros(n + 1)
    h[1:] = np.cumsum(1.0 / np.arange(1, n + 1))
    return h


@dataclass
class _Slots:
    """Relevant slots of each query's list, with the tie statistics of each slot."""

    value: np.ndarray  # (N, m') score of the relevant item; +inf pads
    valid: np.ndarray  # (N, m') slot holds a relevant item
    g: np.ndarray  # items strictly above
    n: np.ndarray  # items tied (incl. itself)
    rg: np.ndarray  # relevant items strictly above
    r: np.ndarray  # relevant items tied (incl. itself)
    q: np.ndarray  # 1-based position among the tied relevant items (in dataset order)


def _slots(values: np.ndarray, valid: np.ndarray, gt: np.ndarray, ge: np.ndarray) -> _Slots:
    m = values.shape[1]
    k = np.broadcast_to(np.arange(m), values.shape)
    new_run = np.ones(values.shape, dtype=bool)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    run_start = np.maximum.accumulate(np.where(new_run, k, 0), axis=1)
    end_run = np.ones(values.shape, dtype=bool)
    end_run[:, :-1] = values[:, :-1] != values[:, 1:]
    run_end = np.minimum.accumulate(np.where(end_run, k, m - 1)[:, ::-1], axis=1)[:, ::-1] + 1
    return _Slots(values, valid, gt, ge - gt, run_start, run_end - run_start, k - run_start + 1)


def _contributions(
    sl: _Slots,
    limit: np.ndarray,
    ties: str,
    harmonic: np.ndarray,
    before: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: sum over relevant items ranked <= limit of precision, and their count.

    ``limit`` is per query; expectations are exact for ``ties='expected'``; ``stable`` ranks
    each relevant item right after the ``before`` items counted for its slot.
    """
    g, n, rg, r, q = sl.g, sl.n, sl.rg, sl.r, sl.q
    lim = limit[:, None]
    if ties == "pessimistic":
        rank = g + n - r + q
    elif ties == "stable":
        rank = before + 1
    else:
        rank = g + q  # optimistic; also every mode where no non-relevant item ties
    relc = rg + q
    inside = sl.valid & (rank <= lim)
    prec = np.where(inside, relc / np.maximum(rank, 1), 0.0)
    hits = inside.astype(np.float64)
    if ties == "expected":
        mixed = sl.valid & (n > r)
        if mixed.any():
            gm, nm, rgm, rm = g[mixed], n[mixed], rg[mixed], r[mixed]
            length = np.clip(np.broadcast_to(lim, g.shape)[mixed] - gm, 0, nm)
            dh = harmonic[gm + length] - harmonic[gm]
            frac = np.where(nm > 1, (rm - 1) / np.maximum(nm - 1, 1), 0.0)
            prec[mixed] = ((rgm + 1) * dh + frac * (length - (gm + 1) * dh)) / nm
            hits[mixed] = length / nm
    return prec.sum(axis=1), hits.sum(axis=1)


@dataclass(frozen=True)
class RankingResult:
    """Per-query metrics in input order (float64)."""

    ap: np.ndarray
    map_at_r: np.ndarray
    precision_at_1: np.ndarray
    r_precision: np.ndarray


def rank_metrics(
    embeddings,
    labels=None,
    *,
    metric: Metric = "cosine",
    ties: Ties = "expected",
    include_self: bool = True,
    block_size: int = DEFAULT_BLOCK,
    device: str | None = None,
) -> RankingResult:
    """All per-query metrics from one pass over the similarity matrix.

    ``device`` (e.g. ``"cuda"``) scores on that torch device; ``None`` uses numpy.
    """
    _check_choice("ties", ties, TIES)
    if not isinstance(include_self, (bool, np.bool_)):
        raise InputError(
            f"include_self must be True or False, got {include_self!r}; pass a bool "
            "(the string 'False' would count as true)"
        )
    v, offset = prepare_ranking(validate_embeddings(embeddings, metric), metric)
    y = resolve_labels(labels, v.shape[0])
    order, class_ids = _class_structure(y)
    if np.any(order[1:] < order[:-1]):  # not already grouped by label
        v = v[order]
        if offset is not None:
            offset = offset[order]
    if device is None:
        counts = _rank_counts(v, offset, class_ids, order, block_size, ties == "stable")
    else:
        try:
            from .ranking_torch import rank_counts_torch
        except ImportError as e:  # pragma: no cover - torch missing
            raise InputError(f"device={device!r} needs torch: pip install torch ({e})") from e
        counts = rank_counts_torch(
            v, offset, class_ids, order, block_size, ties == "stable", device
        )
    n_items, m = counts.thresholds.shape
    harmonic = _harmonic(n_items + 1)
    slot_pos = slot_positions(counts.slot_member, order)

    valid = np.arange(m)[None, :] < counts.size[:, None]
    self_value = counts.thresholds[np.arange(n_items), counts.self_slot]

    # Without the query: drop its slot and its own counts.
    keep = np.arange(m - 1)[None, :] + (np.arange(m - 1)[None, :] >= counts.self_slot[:, None])
    t_ns = np.take_along_axis(counts.thresholds, keep, axis=1)
    sv = self_value[:, None]
    gt_ns = np.take_along_axis(counts.gt, keep, axis=1) - (sv > t_ns)
    ge_ns = np.take_along_axis(counts.ge, keep, axis=1) - (sv >= t_ns)
    valid_ns = np.arange(m - 1)[None, :] < (counts.size - 1)[:, None]
    # Stable order: the query ranked before a slot's item is no longer there.
    pos_ns = np.take_along_axis(slot_pos, keep, axis=1)
    self_first = (sv > t_ns) | ((sv == t_ns) & (order[:, None] < pos_ns))
    before_ns = np.take_along_axis(counts.before, keep, axis=1) - self_first
    slots_ns = _slots(t_ns, valid_ns, gt_ns, ge_ns)
    r_prime = counts.size - 1
    no_limit = np.full(n_items, n_items + 1)

    def run(sl, limit, before):
        return _contributions(sl, limit, ties, harmonic, before)

    if include_self:
        slots = _slots(counts.thresholds, valid, counts.gt, counts.ge)
        ap_sum, _ = run(slots, no_limit, counts.before)
        ap = ap_sum / counts.size
    else:
        ap_sum, _ = run(slots_ns, no_limit, before_ns)
        ap = ap_sum / r_prime
    mapr_sum, rhits = run(slots_ns, r_prime, before_ns)
    _, p1 = run(slots_ns, np.ones(n_items, dtype=np.int64), before_ns)

    inverse = np.empty_like(order)
    inverse[order] = np.arange(n_items)
    return RankingResult(
        ap=_unit_interval(ap[inverse], "AP"),
        map_at_r=_unit_interval((mapr_sum / r_prime)[inverse], "MAP@R"),
        precision_at_1=_unit_interval(p1[inverse], "P@1"),
        r_precision=_unit_interval((rhits / r_prime)[inverse], "R-precision"),
    )


def _unit_interval(values: np.ndarray, name: str, slack: float = 1e-9) -> np.ndarray:
    """The invariant 0 <= metric <= 1: rounding excess (<= ``slack``) is clipped, anything
    else (or NaN) is a bug and raises instead of returning a wrong number."""
    ok = (values >= -slack) & (values <= 1 + slack)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise RuntimeError(
            f"internal error: {name} of query {i} is {values[i]!r}, outside [0, 1]; "
            "please report this with the input"
        )
    return np.clip(values, 0.0, 1.0)
