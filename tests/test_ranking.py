"""The ranking maths against the brute-force reference, on many small cases."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpr1200_hf as g
from gpr1200_hf.ranking import TIES, InputError
from tests.reference import brute_metrics, expected_by_permutations, official_map, score_matrix

FIELDS = ("ap", "map_at_r", "precision_at_1", "r_precision")


def _labels(rng, n_classes, low=2, high=6):
    sizes = rng.integers(low, high + 1, n_classes)
    y = np.repeat(np.arange(n_classes), sizes)
    return rng.permutation(y)


def _check(x, y, metric, ties, include_self, block_size):
    got = g.rank_metrics(
        x, y, metric=metric, ties=ties, include_self=include_self, block_size=block_size
    )
    want = brute_metrics(x, y, metric=metric, ties=ties, include_self=include_self)
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f), want[f], atol=1e-12, err_msg=f)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_continuous_embeddings_match_reference(metric, include_self, seed):
    rng = np.random.default_rng(seed)
    y = _labels(rng, 9)
    x = rng.standard_normal((y.size, 5)).astype(np.float32)
    _check(x, y, metric, "expected", include_self, block_size=int(rng.integers(1, 20)))


def _tied_embeddings(rng, kind, n, d):
    if kind == "binary":
        return rng.integers(0, 2, (n, d)).astype(np.float32) * 2 - 1  # +-1: equal norms
    return rng.integers(-2, 3, (n, d)).astype(np.float32)  # quantised


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("kind", ["binary", "quantised"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_heavy_ties_all_modes(ties, kind, include_self, seed):
    rng = np.random.default_rng(100 + seed)
    y = _labels(rng, 7)
    x = _tied_embeddings(rng, kind, y.size, 3)
    metric = "cosine" if kind == "binary" else ["ip", "l2"][seed % 2]
    _check(x, y, metric, ties, include_self, block_size=int(rng.integers(1, 12)))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_classes=st.integers(1, 6),
    dim=st.integers(1, 4),
    levels=st.integers(1, 3),
    metric=st.sampled_from(["cosine", "ip", "l2"]),
    ties=st.sampled_from(TIES),
    include_self=st.booleans(),
    block_size=st.integers(1, 16),
)
def test_property_matches_reference(
    seed, n_classes, dim, levels, metric, ties, include_self, block_size
):
    rng = np.random.default_rng(seed)
    y = _labels(rng, n_classes, 2, 5)
    if metric == "cosine":
        x = rng.integers(0, 2, (y.size, dim)) * 2.0 - 1  # equal norms keep cosine exact
    else:
        x = rng.integers(-levels, levels + 1, (y.size, dim)).astype(np.float64)
    _check(x, y, metric, ties, include_self, block_size)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_expected_equals_enumeration_of_all_orderings(include_self, seed):
    rng = np.random.default_rng(seed)
    y = np.array([0, 0, 1, 1, 1, 2, 2])[: (4, 5, 7)[seed % 3]]
    x = rng.integers(0, 2, (y.size, 2)).astype(np.float64)
    ap = g.average_precisions(x, y, metric="ip", ties="expected", include_self=include_self)
    s = score_matrix(x, "ip")
    for i in range(y.size):
        want = expected_by_permutations(s[i], list(y), i, include_self=include_self)
        assert ap[i] == pytest.approx(float(want), abs=1e-12)


def test_tie_modes_are_ordered_and_agree_without_ties():
    rng = np.random.default_rng(7)
    y = _labels(rng, 8)
    x = rng.integers(0, 2, (y.size, 2)).astype(np.float32)
    res = {t: g.average_precisions(x, y, metric="ip", ties=t) for t in TIES}
    assert np.all(res["pessimistic"] <= res["expected"] + 1e-12)
    assert np.all(res["expected"] <= res["optimistic"] + 1e-12)
    assert res["pessimistic"].mean() < res["optimistic"].mean()
    xc = rng.standard_normal((y.size, 8))
    base = g.average_precisions(xc, y, ties="expected")
    for t in TIES:
        np.testing.assert_array_equal(g.average_precisions(xc, y, ties=t), base)


def test_agrees_with_official_algorithm_float32():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(60), 10)
    centers = rng.standard_normal((60, 32))
    x = (np.repeat(centers, 10, axis=0) * 0.4 + rng.standard_normal((600, 32))).astype(np.float32)
    ours = g.average_precisions(x, y, metric="ip", block_size=128)
    official = official_map(x, y)
    assert abs(ours.mean() - official.mean()) < 1e-6
    np.testing.assert_allclose(ours, official, atol=1e-9)


def test_block_size_does_not_change_results():
    rng = np.random.default_rng(5)
    y = _labels(rng, 30, 2, 12)
    x = rng.standard_normal((y.size, 6)).astype(np.float32)
    want = g.rank_metrics(x, y, block_size=10_000)
    for bs in (1, 7, 50):
        got = g.rank_metrics(x, y, block_size=bs)
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f))


def test_input_order_is_preserved_and_labels_may_be_strings():
    rng = np.random.default_rng(9)
    y = _labels(rng, 6)
    x = rng.standard_normal((y.size, 4))
    perm = rng.permutation(y.size)
    a = g.average_precisions(x, y)
    b = g.average_precisions(x[perm], y[perm])
    np.testing.assert_allclose(b, a[perm], atol=1e-15)
    names = np.array([f"class-{v}" for v in y])
    np.testing.assert_array_equal(g.average_precisions(x, names), a)


def test_perfect_and_self_only_cases():
    x = np.repeat(np.eye(4), 3, axis=0) + 0.0
    y = np.repeat(np.arange(4), 3)
    r = g.score(x, y, ties="expected")
    assert r["map"] == 1.0 and r["map_at_r"] == 1.0 and r["precision_at_1"] == 1.0
    # All scores equal: AP is the expectation of a random ranking.
    same = np.ones((6, 3))
    yy = np.array([0, 0, 0, 1, 1, 1])
    pess = g.average_precisions(same, yy, ties="pessimistic")
    opt = g.average_precisions(same, yy, ties="optimistic")
    np.testing.assert_allclose(opt, 1.0)
    np.testing.assert_allclose(pess, (1 / 4 + 2 / 5 + 3 / 6) / 3)


def test_score_keys_and_subsets():
    rng = np.random.default_rng(1)
    y = np.repeat(np.array([5, 6, 250, 1100]), 3)
    x = rng.standard_normal((12, 4))
    out = g.score(x, y)
    assert set(out) == {
        "map",
        "map_landmarks",
        "map_inat",
        "map_faces",
        "map_at_r",
        "precision_at_1",
        "r_precision",
    }
    ap = g.average_precisions(x, y)
    assert out["map_inat"] == pytest.approx(ap[6:9].mean())
    assert out["map"] == pytest.approx(ap.mean())
    assert set(g.score(x, np.array([f"c{v}" for v in y]))) == {
        "map",
        "map_at_r",
        "precision_at_1",
        "r_precision",
    }


def test_canonical_labels_default():
    assert g.canonical_labels().shape == (12000,)
    with pytest.raises(InputError, match="12000"):
        g.score(np.ones((10, 3)))


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        (np.ones(5), [0, 0, 1, 1, 1], {}, "2-D"),
        (np.array([[1.0, np.nan], [1, 2]]), [0, 0], {}, "NaN"),
        (np.array([[1.0, np.inf], [1, 2]]), [0, 0], {}, "NaN or inf"),
        (np.array([[0.0, 0.0], [1, 2]]), [0, 0], {}, "zeros"),
        (np.ones((3, 2)), [0, 0], {}, "3 rows but 2 labels"),
        (np.ones((3, 2)), [0, 0, 1], {}, "single item"),
        (np.ones((2, 2)), [0, 0], {"metric": "dot"}, "metric='dot'"),
        (np.ones((2, 2)), [0, 0], {"ties": "random"}, "ties='random'"),
        (np.array([["a", "b"], ["c", "d"]]), [0, 0], {}, "numeric"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, y, kwargs, match):
    with pytest.raises(InputError, match=match):
        g.score(x, y, **kwargs)


def test_zero_vectors_are_fine_without_cosine():
    x = np.array([[0.0, 0.0], [1, 2], [1, 1], [0, 1]])
    y = [0, 0, 1, 1]
    for metric in ("ip", "l2"):
        _check(x, np.array(y), metric, "expected", True, 2)


def test_serial_path_without_threadpoolctl_gives_identical_results(monkeypatch):
    rng = np.random.default_rng(11)
    y = _labels(rng, 40, 2, 8)
    x = rng.integers(-2, 3, (y.size, 4)).astype(np.float32)
    parallel = g.rank_metrics(x, y, metric="ip", ties="stable", block_size=16)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import now fails
    serial = g.rank_metrics(x, y, metric="ip", ties="stable", block_size=16)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(serial, f), getattr(parallel, f))


def test_strips_narrower_than_the_matrix(monkeypatch):
    from gpr1200_hf import ranking

    rng = np.random.default_rng(12)
    y = _labels(rng, 12, 2, 5)
    x = rng.integers(-2, 3, (y.size, 3)).astype(np.float32)
    monkeypatch.setattr(ranking, "STRIP_WIDTH", 7)
    for ties in TIES:
        _check(x, y, "ip", ties, True, block_size=5)


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("include_self", [True, False])
def test_torch_backend_matches_the_reference(ties, include_self):
    pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    y = _labels(rng, 9, 2, 6)
    for metric, x in (
        ("cosine", rng.integers(0, 2, (y.size, 3)) * 2.0 - 1),
        ("ip", rng.integers(-2, 3, (y.size, 3)).astype(np.float32)),
        ("l2", rng.integers(-2, 3, (y.size, 2)).astype(np.float64)),
    ):
        got = g.rank_metrics(
            x, y, metric=metric, ties=ties, include_self=include_self, block_size=7, device="cpu"
        )
        want = brute_metrics(x, y, metric=metric, ties=ties, include_self=include_self)
        for f in FIELDS:
            np.testing.assert_allclose(getattr(got, f), want[f], atol=1e-12, err_msg=f)


def test_torch_backend_equals_numpy_on_continuous_embeddings():
    pytest.importorskip("torch")
    rng = np.random.default_rng(22)
    y = _labels(rng, 40, 2, 12)
    x = rng.standard_normal((y.size, 16)).astype(np.float32)
    assert g.score(x, y, device="cpu") == pytest.approx(g.score(x, y), abs=1e-12)


@pytest.mark.parametrize("device", [None, pytest.param("cpu", id="torch-cpu")])
@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "shuffled"])
def test_stable_ties_in_narrow_strips(monkeypatch, grouped, device):
    """Grouped input: others lie wholly before or after the slot items (one comparison each);
    shuffled: per element. Both against the reference, with and without the query."""
    from gpr1200_hf import ranking

    if device is not None:
        pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    y = np.sort(_labels(rng, 15, 2, 6)) if grouped else _labels(rng, 15, 2, 6)
    x = rng.integers(0, 2, (y.size, 4)).astype(np.float32) * 2 - 1
    monkeypatch.setattr(ranking, "STRIP_WIDTH", 6)
    for include_self in (True, False):
        got = g.rank_metrics(
            x,
            y,
            metric="ip",
            ties="stable",
            include_self=include_self,
            block_size=4,
            device=device,
        )
        want = brute_metrics(x, y, metric="ip", ties="stable", include_self=include_self)
        for f in FIELDS:
            np.testing.assert_allclose(getattr(got, f), want[f], atol=1e-12, err_msg=f)


def test_backends_share_one_module_and_depend_one_way():
    """ranking_torch imports ranking_common, never ranking (which imports it lazily)."""
    import ast
    import inspect

    from gpr1200_hf import ranking_torch

    tree = ast.parse(inspect.getsource(ranking_torch))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "ranking_common" in imported and "ranking" not in imported
