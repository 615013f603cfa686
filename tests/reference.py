"""Brute-force reference for the ranking metrics: sort-based, written from the definitions."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np


def score_matrix(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x)
    if metric == "cosine":
        v = (x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)
        return v @ v.T
    if metric == "ip":
        v = x.astype(np.float32)
        return v @ v.T
    v = x.astype(np.float64)
    return -((v[:, None, :] - v[None, :, :]) ** 2).sum(axis=2)


def _groups(scores: np.ndarray, items: list[int]) -> list[list[int]]:
    """Items grouped by exactly equal score, best score first, dataset order inside."""
    out: dict[float, list[int]] = {}
    for j in items:
        out.setdefault(float(scores[j]), []).append(j)
    return [out[v] for v in sorted(out, reverse=True)]


def _walk(order: list[int], relevant: set[int], limit: int) -> tuple[Fraction, int]:
    """(sum of precision at relevant positions <= limit, relevant hits <= limit)."""
    total, seen, hits = Fraction(0), 0, 0
    for pos, j in enumerate(order, start=1):
        if j in relevant:
            seen += 1
            if pos <= limit:
                total += Fraction(seen, pos)
                hits += 1
    return total, hits


def query_metric(scores_row, labels, i, *, ties, include_self, limit=None):
    """(precision sum, hits) for query i, exact (Fractions) under the given tie rule."""
    n = len(labels)
    items = [j for j in range(n) if include_self or j != i]
    relevant = {j for j in items if labels[j] == labels[i]}
    limit = n + 1 if limit is None else limit
    groups = _groups(scores_row, items)
    if ties in ("stable", "optimistic", "pessimistic"):
        order = []
        for grp in groups:
            if ties == "optimistic":
                grp = sorted(grp, key=lambda j: j not in relevant)
            elif ties == "pessimistic":
                grp = sorted(grp, key=lambda j: j in relevant)
            order += grp
        total, hits = _walk(order, relevant, limit)
        return total, Fraction(hits)
    # expected: average over every placement of the relevant items inside each group,
    # group by group (the expectation is additive over groups).
    total, hits, before, rel_before = Fraction(0), Fraction(0), 0, 0
    for grp in groups:
        r = sum(j in relevant for j in grp)
        size = len(grp)
        if r:
            acc_t, acc_h, count = Fraction(0), Fraction(0), 0
            for places in itertools.combinations(range(1, size + 1), r):
                seen = rel_before
                for p in places:
                    seen += 1
                    if before + p <= limit:
                        acc_t += Fraction(seen, before + p)
                        acc_h += 1
                count += 1
            total += acc_t / count
            hits += acc_h / count
        before += size
        rel_before += r
    return total, hits


def expected_by_permutations(scores_row, labels, i, *, include_self):
    """Mean AP over every ordering consistent with the scores (tiny cases only)."""
    n = len(labels)
    items = [j for j in range(n) if include_self or j != i]
    relevant = {j for j in items if labels[j] == labels[i]}
    groups = _groups(scores_row, items)
    acc, count = Fraction(0), 0
    for perm in itertools.product(*[itertools.permutations(g) for g in groups]):
        order = [j for grp in perm for j in grp]
        acc += _walk(order, relevant, n + 1)[0] / len(relevant)
        count += 1
    return acc / count


def brute_metrics(x, labels, *, metric="cosine", ties="expected", include_self=True):
    """Dict of per-query arrays: ap, map_at_r, precision_at_1, r_precision."""
    s = score_matrix(x, metric)
    labels = list(np.asarray(labels).tolist())
    n = len(labels)
    out = {k: np.zeros(n) for k in ("ap", "map_at_r", "precision_at_1", "r_precision")}
    for i in range(n):
        size = labels.count(labels[i])
        r_all = size if include_self else size - 1
        t, _ = query_metric(s[i], labels, i, ties=ties, include_self=include_self)
        out["ap"][i] = float(t / r_all)
        rp = size - 1
        t, h = query_metric(s[i], labels, i, ties=ties, include_self=False, limit=rp)
        out["map_at_r"][i] = float(t / rp)
        out["r_precision"][i] = float(h / rp)
        _, h = query_metric(s[i], labels, i, ties=ties, include_self=False, limit=1)
        out["precision_at_1"][i] = float(h)
    return out


def official_map(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The official algorithm: float32 similarity, full descending sort, AP over the list."""
    s = x.astype(np.float32) @ x.astype(np.float32).T
    aps = []
    for i in range(len(x)):
        order = np.argsort(s[i])[::-1]
        pos = np.flatnonzero(labels[order] == labels[i])
        aps.append(np.mean(np.arange(1, pos.size + 1) / (pos + 1)))
    return np.asarray(aps)
