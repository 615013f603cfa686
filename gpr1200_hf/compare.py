"""Is run B better than run A? Paired statistics over categories, from per-query APs.

Categories are the units (GPR1200 samples categories, then images): the mAP difference gets a
bootstrap confidence interval over categories and a paired permutation test (swapping A and B
inside each category, i.e. flipping the sign of its AP difference). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import protocol
from .errors import InputError


@dataclass(frozen=True)
class PerQuery:
    """Per-query APs of one run, with the category and file name of each query."""

    ap: np.ndarray
    category_id: np.ndarray
    file_names: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> PerQuery:
        """From a run folder, its results.json, or its per_query.npz."""
        path = Path(path)
        if path.suffix == ".json" or path.is_dir():
            path = (path if path.is_dir() else path.parent) / "per_query.npz"
        if not path.is_file():
            raise InputError(f"{path} not found: compare needs runs saved by gpr1200 evaluate")
        with np.load(path, allow_pickle=False) as z:
            return cls(z["ap"], z["category_id"], z["file_names"])


def category_means(ap: np.ndarray, category_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(category IDs, mean AP of each category's queries)."""
    ids, inverse, counts = np.unique(category_id, return_inverse=True, return_counts=True)
    return ids, np.bincount(inverse, weights=ap) / counts


def paired_difference(
    ap_a: np.ndarray,
    ap_b: np.ndarray,
    category_id: np.ndarray,
    *,
    n_bootstrap: int = 10_000,
    n_permutations: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """mAP of A and B, their difference B - A, its bootstrap CI and a permutation p-value."""
    ids, inverse, counts = np.unique(category_id, return_inverse=True, return_counts=True)
    d = np.bincount(inverse, weights=ap_b - ap_a)  # per-category sum of differences
    w = counts.astype(np.float64)
    diff = d.sum() / w.sum()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, ids.size, (n_bootstrap, ids.size))
    boot = d[pick].sum(axis=1) / w[pick].sum(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    signs = rng.choice(np.array([-1.0, 1.0]), (n_permutations, ids.size))
    perm = signs @ d / w.sum()
    p = (1 + np.count_nonzero(np.abs(perm) >= abs(diff) - 1e-15)) / (1 + n_permutations)
    return {
        "map_a": float(ap_a.mean()),
        "map_b": float(ap_b.mean()),
        "difference": float(diff),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p),
        "categories": int(ids.size),
    }


def compare_runs(a: PerQuery, b: PerQuery, **kwargs) -> dict[str, dict[str, float]]:
    """Overall and per-subset paired statistics of B against A (same queries required)."""
    if a.ap.shape != b.ap.shape or not np.array_equal(a.file_names, b.file_names):
        raise InputError("the two runs did not score the same images; compare runs of one dataset")
    if not np.array_equal(a.category_id, b.category_id):
        raise InputError("the two runs disagree on the categories of the images")
    out = {"all": paired_difference(a.ap, b.ap, a.category_id, **kwargs)}
    index = protocol.subset_index(a.category_id)
    for i, subset in enumerate(protocol.SUBSETS):
        mask = index == i
        if mask.any():
            out[subset.key] = paired_difference(
                a.ap[mask], b.ap[mask], a.category_id[mask], **kwargs
            )
    return out


def largest_category_differences(a: PerQuery, b: PerQuery, top: int = 10) -> list[dict]:
    """Categories where B's mean AP differs most from A's (largest |B - A| first)."""
    ids, mean_a = category_means(a.ap, a.category_id)
    _, mean_b = category_means(b.ap, b.category_id)
    order = np.argsort(-np.abs(mean_b - mean_a), kind="stable")[:top]
    return [
        {
            "category_id": int(ids[i]),
            "subset": protocol.subset_of(int(ids[i])).key,
            "ap_a": float(mean_a[i]),
            "ap_b": float(mean_b[i]),
            "difference": float(mean_b[i] - mean_a[i]),
        }
        for i in order
    ]
