"""Scores that would overflow, underflow or cancel; labels, indices and arrays at the edges.

Scaling by a power of two and (for l2) translating are exact for the data used here, so the
results must equal those of the well-scaled data bit for bit, on numpy and on torch (CPU).
"""

from __future__ import annotations

import numpy as np
import pytest

import gpr1200_hf as g
from gpr1200_hf import ranking
from gpr1200_hf.cli import main
from gpr1200_hf.ranking import TIES, InputError
from tests.reference import brute_metrics

FIELDS = ("ap", "map_at_r", "precision_at_1", "r_precision")
DEVICES = [None, pytest.param("cpu", id="torch-cpu")]


def _need(device):
    if device is not None:
        pytest.importorskip("torch")


def _clustered(seed=0, n_classes=30, per=4, dim=8, grid=2.0**-20):
    """float64 embeddings on a grid of 2**-20 (so shifts by 2**30 are exact), with labels."""
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.standard_normal((n_classes, dim)), per, axis=0) * 0.6
    x += rng.standard_normal((n_classes * per, dim))
    return np.round(x / grid) * grid, np.repeat(np.arange(n_classes), per)


def _same(a: g.RankingResult, b: g.RankingResult) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def _in_unit_interval(r: g.RankingResult) -> None:
    for f in FIELDS:
        v = getattr(r, f)
        assert np.all((v >= 0) & (v <= 1)), f


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("metric", "dtype", "factor"),
    [
        ("l2", np.float64, 2.0**530),  # squared norms overflowed: mAP 2.3, P@1 2.4
        ("l2", np.float64, 2.0**-560),  # squared distances underflowed: every score tied
        ("ip", np.float32, 2.0**64),  # float32 products overflowed
        ("ip", np.float32, 2.0**-100),  # float32 products underflowed: every score tied
        ("ip", np.float64, 2.0**140),  # beyond float32 before the cast
        ("cosine", np.float64, 2.0**600),  # the norm overflowed (refused as inf)
        ("cosine", np.float64, 2.0**-600),  # the cast to float32 gave zeros (refused)
    ],
)
def test_power_of_two_scale_changes_nothing(metric, dtype, factor, device):
    _need(device)
    x, y = _clustered()
    x = x.astype(dtype)
    want = g.rank_metrics(x, y, metric=metric, device=device)
    got = g.rank_metrics(x * dtype(factor), y, metric=metric, device=device)
    _same(got, want)
    _in_unit_interval(got)


@pytest.mark.parametrize("device", DEVICES)
def test_issue_examples_stay_in_range_and_match(device):
    _need(device)
    x, y = _clustered(1)
    for metric, big in (("l2", x * 1e160), ("ip", x.astype(np.float32) * np.float32(1e19))):
        want = g.score(x, y, metric=metric, device=device)
        got = g.score(big, y, metric=metric, device=device)
        assert got == pytest.approx(want, abs=1e-12), metric
        assert all(0 <= v <= 1 for v in got.values())
    small = x.astype(np.float32) * np.float32(1e-30)
    assert g.score(small, y, metric="ip", device=device) == pytest.approx(
        g.score(x.astype(np.float32), y, metric="ip", device=device), abs=1e-12
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ties", TIES)
def test_l2_is_translation_invariant(ties, device):
    """x + 2**30 is exact on this grid; the old expansion cancelled (0.075 instead of 0.408)."""
    _need(device)
    x, y = _clustered(2)
    want = g.rank_metrics(x, y, metric="l2", ties=ties, device=device)
    _same(g.rank_metrics(x + 2.0**30, y, metric="l2", ties=ties, device=device), want)
    _same(g.rank_metrics(x - 1e9, y, metric="l2", ties=ties, device=device), want)


def test_l2_offset_keeps_integer_ties_exact():
    """Quantised data far from the origin: exact ties survive the offset."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(8), 4)
    x = rng.integers(-2, 3, (y.size, 3)).astype(np.float64)
    for ties in TIES:
        want = brute_metrics(x, y, metric="l2", ties=ties, include_self=True)
        got = g.rank_metrics(x + 2.0**40, y, metric="l2", ties=ties)
        for f in FIELDS:
            np.testing.assert_allclose(getattr(got, f), want[f], atol=1e-12, err_msg=f)


@pytest.mark.parametrize("device", DEVICES)
def test_rows_spanning_more_than_the_format_are_refused(device):
    _need(device)
    x, y = _clustered(4, n_classes=3)
    x = x.astype(np.float32)
    x[0] = np.float32(2.0**-125)  # 2**-125 next to values near 1: float32 products underflow
    with pytest.raises(InputError, match="underflow float32"):
        g.score(x, y, metric="ip", device=device)
    z = np.zeros((6, 2))
    z[0] = 2.0**1000
    z[1] = [2.0**-30, 0.0]
    with pytest.raises(InputError, match="underflow float64"):
        g.score(z, [0, 0, 0, 1, 1, 1], metric="l2", device=device)


def test_non_finite_scores_are_refused_before_counting():
    s = np.array([[1.0, np.nan], [0.5, 0.2]])
    t = np.array([[1.0], [0.5]])
    acc = np.zeros((2, 1), dtype=np.int64)
    with pytest.raises(InputError, match="NaN or infinite"):
        ranking._count(s, t, 1, acc, acc.copy(), False)
    with pytest.raises(InputError, match="NaN or infinite"):
        ranking._count(np.where(np.isnan(s), np.inf, s), t, 0, acc, acc.copy(), False)


def test_metrics_outside_the_unit_interval_raise():
    with pytest.raises(RuntimeError, match="outside"):
        ranking._unit_interval(np.array([0.5, 1.2]), "AP")
    with pytest.raises(RuntimeError, match="outside"):
        ranking._unit_interval(np.array([np.nan]), "AP")
    np.testing.assert_array_equal(ranking._unit_interval(np.array([1 + 1e-15, 0.0]), "AP"), [1, 0])


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([2.0**63, 2.0**63, 2.0**64, 2.0**64]), "2\\*\\*53"),  # merged via int64
        (np.array([2.0**53, 2.0**53, 1, 1]), "2\\*\\*53"),
        (np.array([2**24, 2**24, 2**24 + 2, 2**24 + 2], dtype=np.float32), "2\\*\\*24"),
        (np.array([0.5, 0.5, 1, 1]), "whole numbers"),
        ([1, "1", 2, "2"], "mix numbers and strings"),
        ([2**70, 2**70, 1, 1], "64 bits"),
        (np.array([1j, 1j, 2j, 2j]), "integers or strings"),
    ],
)
def test_labels_that_may_have_merged_are_refused(labels, match):
    x, _ = _clustered(5, n_classes=2, per=2)
    with pytest.raises(InputError, match=match):
        g.score(x, labels)


def test_exact_wide_labels_are_accepted():
    x, y = _clustered(6)
    want = g.rank_metrics(x, y)
    _same(g.rank_metrics(x, y.astype(np.uint64) + np.uint64(2**63)), want)
    _same(g.rank_metrics(x, (y + 2**52).astype(np.float64)), want)
    _same(g.rank_metrics(x, [f"c{v}" for v in y]), want)


# ------------------------------------------------------------------- messages and input kinds


def test_zero_vector_message_names_both_spellings(tmp_path, capsys):
    x = np.array([[0.0, 0.0], [1, 2]], dtype=np.float32)
    with pytest.raises(InputError, match="metric='ip'.*--metric ip"):
        g.score(x, [0, 0])
    np.save(tmp_path / "e.npy", x)
    (tmp_path / "labels.json").write_text("[0, 0]")
    assert main(["score", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "labels.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--metric ip" in err


@pytest.mark.parametrize(
    ("indices", "shown"),
    [
        (np.array([[2**64 - 1, 0], [0, 1]], dtype=np.uint64), "index 18446744073709551615 "),
        (np.array([[2**63, 0], [0, 1]], dtype=np.uint64), "index 9223372036854775808 "),
        (np.array([[1e30, 0], [0, 1]]), "index 1e+30 "),
        (np.array([[7.0, 0], [0, 1]]), "index 7 "),
    ],
)
def test_out_of_range_indices_are_shown_as_given(indices, shown):
    with pytest.raises(InputError, match="out of range") as e:
        g.score_indices(indices, [0, 0])
    assert shown in str(e.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: g.score([[1.0, 2.0], [3.0]], [0, 0]),
        lambda: g.score([[1.0, 2.0], [3.0, 4.0]], [[0], [0, 1]]),
        lambda: g.score_indices([[0, 1], [1]], [0, 0]),
    ],
    ids=["embeddings", "labels", "indices"],
)
def test_ragged_lists_are_a_clear_error(call):
    with pytest.raises(InputError, match="rectangular"):
        call()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_torch_tensors_of_any_float_dtype(dtype):
    torch = pytest.importorskip("torch")
    x, y = _clustered(7)
    t = torch.tensor(x).to(getattr(torch, dtype))
    want = g.score(t.float().numpy() if dtype != "float64" else x, y)  # widening is exact
    assert g.score(t, y) == want
    assert g.score(t.clone().requires_grad_(), torch.tensor(y)) == want
    assert g.score(t, y, device="cpu") == want


def test_torch_indices_and_tensors_without_values():
    torch = pytest.importorskip("torch")
    idx = np.array([[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]])
    y = [0, 0, 1, 1]
    assert g.score_indices(torch.tensor(idx), torch.tensor(y)) == g.score_indices(idx, y)
    with pytest.raises(InputError, match="meta"):
        g.score(torch.ones(4, 2, device="meta"), y)
