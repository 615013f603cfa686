"""Public scoring API: per-query APs, the GPR1200 score dict, and precomputed rankings."""

from __future__ import annotations

import numpy as np

from . import protocol
from .ranking import (
    DEFAULT_BLOCK,
    NORMALIZE,
    InputError,
    Metric,
    Normalize,
    RankingResult,
    Ties,
    _check_choice,
    as_array,
    rank_metrics,
    resolve_labels,
)

EXTRA_KEYS = ("map_at_r", "precision_at_1", "r_precision")


def average_precisions(
    embeddings,
    labels=None,
    *,
    metric: Metric = "cosine",
    ties: Ties = "expected",
    include_self: bool = True,
    block_size: int = DEFAULT_BLOCK,
    device: str | None = None,
) -> np.ndarray:
    """Per-query average precision (float64, input order).

    ``labels=None`` means canonical GPR1200 labels (then N must be 12000). See
    ``gpr1200_hf.ranking`` for the exact definitions of scores, self-match and ties.
    """
    return rank_metrics(
        embeddings,
        labels,
        metric=metric,
        ties=ties,
        include_self=include_self,
        block_size=block_size,
        device=device,
    ).ap


def subset_keys_present(labels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(subset key, query mask) for each GPR1200 subset present in integer category labels."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.size == 0:
        return []
    if y.min() < 0 or y.max() >= protocol.NUM_CATEGORIES:
        return []
    index = protocol.subset_index(y)
    return [(s.key, index == i) for i, s in enumerate(protocol.SUBSETS) if np.any(index == i)]


def summarize(result: RankingResult, labels: np.ndarray) -> dict[str, float]:
    """The score dict: ``map``, ``map_<subset>`` for subsets present, and the extras."""
    out = {"map": float(np.mean(result.ap))}
    for key, mask in subset_keys_present(labels):
        out[f"map_{key}"] = float(np.mean(result.ap[mask]))
    out["map_at_r"] = float(np.mean(result.map_at_r))
    out["precision_at_1"] = float(np.mean(result.precision_at_1))
    out["r_precision"] = float(np.mean(result.r_precision))
    return out


def score(
    embeddings,
    labels=None,
    *,
    metric: Metric = "cosine",
    ties: Ties = "expected",
    include_self: bool = True,
    block_size: int = DEFAULT_BLOCK,
    device: str | None = None,
) -> dict[str, float]:
    """GPR1200 scores of embeddings: ``map``, per-subset ``map_*``, ``map_at_r``,
    ``precision_at_1`` and ``r_precision`` (all in [0, 1]). ``device`` (e.g. ``"cuda"``) scores
    on that torch device instead of numpy."""
    result = rank_metrics(
        embeddings,
        labels,
        metric=metric,
        ties=ties,
        include_self=include_self,
        block_size=block_size,
        device=device,
    )
    y = resolve_labels(labels, result.ap.shape[0])
    return summarize(result, y)


def validate_indices(indices, n_items: int | None = None) -> np.ndarray:
    """Ranked index lists as an (N, K) int64 array, or ``InputError`` naming the problem."""
    idx = as_array(indices, "indices")
    if idx.ndim != 2:
        raise InputError(f"indices must be 2-D (N queries x K ranked positions), got {idx.shape}")
    if idx.dtype.kind == "f":
        if not np.isfinite(idx).all() or np.any(idx != np.round(idx)):
            raise InputError("indices must be whole numbers (dataset positions)")
    elif idx.dtype.kind not in "iu":
        raise InputError(f"indices must be integers, got dtype {idx.dtype}")
    n = idx.shape[0] if n_items is None else n_items
    if idx.shape[1] == 0:
        raise InputError("indices have no columns: each query needs at least one ranked item")
    if idx.shape[1] > n:
        raise InputError(f"each row ranks {idx.shape[1]} items but there are only {n}")
    bad = (idx < 0) | (idx >= n)  # before the cast to int64, which could wrap or saturate
    if bad.any():
        r, c = np.argwhere(bad)[0]
        value = idx[r, c].item()
        if isinstance(value, float) and abs(value) < 2**53:
            value = int(value)
        raise InputError(
            f"index {value} at row {r}, column {c} is out of range 0-{n - 1}; "
            "indices are 0-based dataset positions"
        )
    idx = idx.astype(np.int64)
    srt = np.sort(idx, axis=1)
    dup = srt[:, 1:] == srt[:, :-1]
    if dup.any():
        r = int(np.flatnonzero(dup.any(axis=1))[0])
        value = srt[r, 1:][dup[r]][0]
        raise InputError(f"row {r} lists dataset position {value} more than once")
    return idx


def rank_metrics_from_indices(
    indices, labels=None, *, normalize: Normalize = "relevant"
) -> RankingResult:
    """Per-query metrics from precomputed rankings (row i: ranked dataset positions for query i).

    AP@K counts the query itself where it appears (the official lists include it) and divides by
    all items with the query's label (``relevant``, the true AP@K) or by the relevant items found
    in the K (``retrieved``, what the official script does; 0 when none is found). The extras
    drop the query from its list first, like the embedding path.
    """
    _check_choice("normalize", normalize, NORMALIZE)
    idx = validate_indices(indices)
    n, k = idx.shape
    y = resolve_labels(labels, n)
    _, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    size = np.bincount(codes)[codes]
    rel = codes[idx] == codes[:, None]
    rank = np.arange(1, k + 1)
    relc = np.cumsum(rel, axis=1)
    ap_sum = np.where(rel, relc / rank, 0.0).sum(axis=1)
    if normalize == "relevant":
        ap = ap_sum / size
    else:
        found = relc[:, -1]
        ap = np.divide(ap_sum, found, out=np.zeros(n), where=found > 0)
    # Extras: the query removed from its own list.
    is_self = idx == np.arange(n)[:, None]
    rel_ns = rel & ~is_self
    rank_ns = np.cumsum(~is_self, axis=1)
    relc_ns = np.cumsum(rel_ns, axis=1)
    r_prime = np.maximum(size - 1, 1)
    within = rel_ns & (rank_ns <= r_prime[:, None])
    map_at_r = np.where(within, relc_ns / np.maximum(rank_ns, 1), 0.0).sum(axis=1) / r_prime
    p1 = (rel_ns & (rank_ns == 1)).sum(axis=1).astype(np.float64)
    r_precision = within.sum(axis=1) / r_prime
    return RankingResult(ap, map_at_r, p1, r_precision)


def score_indices(indices, labels=None, *, normalize: Normalize = "relevant") -> dict[str, float]:
    """The score dict for precomputed rankings (see ``rank_metrics_from_indices``)."""
    result = rank_metrics_from_indices(indices, labels, normalize=normalize)
    return summarize(result, resolve_labels(labels, result.ap.shape[0]))
