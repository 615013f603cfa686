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

PER_QUERY_FILE = "per_query.npz"
MAX_RESAMPLES = 1_000_000  # bootstrap resamples and permutation draws, each
_CHUNK_ELEMENTS = 1 << 20  # random draws held in memory at once
# results.json fields that must agree for two runs' APs to be comparable.
DATA_FIELDS = ("num_images", "num_categories", "full_benchmark", "fingerprint")
_MISSING = object()


@dataclass(frozen=True)
class PerQuery:
    """Per-query APs of one run, with the category and file name of each query.

    ``results`` is the run's results.json when it was found beside per_query.npz (its protocol
    and data fields are what ``protocol_differences`` compares); ``source`` names the run.
    """

    ap: np.ndarray
    category_id: np.ndarray
    file_names: np.ndarray
    results: dict | None = None
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> PerQuery:
        """From a run folder, its results.json, or its per_query.npz."""
        from .io import RESULTS_FILE, read_npz_arrays, read_results

        path = Path(path)
        if path.is_dir():
            folder, results_path = path, path / RESULTS_FILE
        elif path.suffix == ".json":
            folder, results_path = path.parent, path
        else:
            folder, results_path = path.parent, path.parent / RESULTS_FILE
        npz = path if path.suffix == ".npz" else folder / PER_QUERY_FILE
        if not npz.exists() and not npz.is_dir():
            raise InputError(
                f"{npz}: no such file; compare needs run folders written by gpr1200 evaluate "
                "(results.json and per_query.npz)"
            )
        arrays = read_npz_arrays(npz, ("ap", "category_id", "file_names"))
        results = read_results(results_path) if results_path.exists() else None
        run = cls(arrays["ap"], arrays["category_id"], arrays["file_names"], results, str(folder))
        run.check(str(npz))
        return run

    def check(self, where: str) -> None:
        """Refuse per-query arrays that cannot come from a GPR1200 run."""
        ap, cat, names = self.ap, self.category_id, self.file_names
        if ap.ndim != 1 or ap.size == 0 or ap.dtype.kind != "f":
            raise InputError(f"{where}: 'ap' must be a non-empty 1-D float array")
        if not np.all((ap >= 0) & (ap <= 1)):  # also false for NaN
            raise InputError(f"{where}: 'ap' holds values outside [0, 1] or NaN")
        if cat.shape != ap.shape or cat.dtype.kind not in "iu":
            raise InputError(f"{where}: 'category_id' must be integers, one per AP")
        if cat.min() < 0 or cat.max() >= protocol.NUM_CATEGORIES:
            raise InputError(
                f"{where}: 'category_id' outside GPR1200's 0-{protocol.NUM_CATEGORIES - 1}"
            )
        if names.shape != ap.shape or names.dtype.kind not in "US":
            raise InputError(f"{where}: 'file_names' must be strings, one per AP")
        from .io import check_unique_names

        check_unique_names(names.tolist(), where)
        if self.results is not None:
            stored = self.results["metrics"]["map"]
            if abs(stored - float(ap.mean())) > 1e-9:
                raise InputError(
                    f"{where}: per-query APs (mAP {ap.mean():.6f}) and results.json (mAP "
                    f"{stored:.6f}) come from different runs; rerun gpr1200 evaluate"
                )


def protocol_differences(a: PerQuery, b: PerQuery) -> list[str]:
    """The protocol and data fields in which two runs differ (empty when comparable).

    A run without results.json has an unknown protocol, which is reported as a difference.
    """
    unknown = [r.source or "a run" for r in (a, b) if r.results is None]
    if unknown:
        return [f"{u} has no results.json, so its protocol is unknown" for u in unknown]
    out = []
    for section, keys in (("protocol", None), ("data", DATA_FIELDS)):
        sa, sb = a.results.get(section) or {}, b.results.get(section) or {}
        for key in keys or sorted(set(sa) | set(sb)):
            va, vb = sa.get(key, _MISSING), sb.get(key, _MISSING)
            if va != vb:
                out.append(f"{section}.{key} ({_show(va)} vs {_show(vb)})")
    return out


def _show(value) -> str:
    return "missing" if value is _MISSING else repr(value)


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_RESAMPLES:
        raise InputError(f"{name} must be an integer from 1 to {MAX_RESAMPLES}, got {n!r}")
    return int(n)


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
    """mAP of A and B, their difference B - A, its bootstrap CI and a permutation p-value.

    Resampling runs in chunks, so memory stays bounded for any count up to ``MAX_RESAMPLES``;
    the bootstrap and the permutations draw from independent streams of ``seed``.
    """
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap)
    n_permutations = _check_count("n_permutations", n_permutations)
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    ids, inverse, counts = np.unique(category_id, return_inverse=True, return_counts=True)
    d = np.bincount(inverse, weights=ap_b - ap_a)  # per-category sum of differences
    w = counts.astype(np.float64)
    diff = d.sum() / w.sum()
    boot_rng, perm_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    rows = max(1, _CHUNK_ELEMENTS // ids.size)
    boot = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, rows):
        k = min(rows, n_bootstrap - start)
        pick = boot_rng.integers(0, ids.size, (k, ids.size))
        boot[start : start + k] = d[pick].sum(axis=1) / w[pick].sum(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    hits = 0
    for start in range(0, n_permutations, rows):
        k = min(rows, n_permutations - start)
        signs = perm_rng.choice(np.array([-1.0, 1.0]), (k, ids.size))
        perm = signs @ d / w.sum()
        hits += int(np.count_nonzero(np.abs(perm) >= abs(diff) - 1e-15))
    p = (1 + hits) / (1 + n_permutations)
    return {
        "map_a": float(ap_a.mean()),
        "map_b": float(ap_b.mean()),
        "difference": float(diff),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p),
        "categories": int(ids.size),
    }


def compare_runs(
    a: PerQuery, b: PerQuery, *, allow_protocol_mismatch: bool = False, **kwargs
) -> dict[str, dict[str, float]]:
    """Overall and per-subset paired statistics of B against A (same queries required).

    Runs whose protocol or data differ (``protocol_differences``) are refused unless
    ``allow_protocol_mismatch=True``.
    """
    if a.ap.shape != b.ap.shape or not np.array_equal(a.file_names, b.file_names):
        raise InputError("the two runs did not score the same images; compare runs of one dataset")
    if not np.array_equal(a.category_id, b.category_id):
        raise InputError("the two runs disagree on the categories of the images")
    diffs = protocol_differences(a, b)
    if diffs and not allow_protocol_mismatch:
        raise InputError(
            f"the runs are not comparable: {'; '.join(diffs)}; score both with the same "
            "protocol and data (or pass allow_protocol_mismatch=True)"
        )
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
