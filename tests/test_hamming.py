"""Packed binary codes under ``metric="hamming"``, and integer embeddings scored exactly.

Hamming scores are -popcount(a XOR b): integers, so ties are exact and identical on numpy and
torch. The same codes as +-1 float vectors under ``ip`` rank identically (ip = bits - 2 *
hamming); 0/1 vectors under the brute-force ``l2`` reference have the very same scores.
"""

from __future__ import annotations

import json

import evaluate
import numpy as np
import pytest
from safetensors.numpy import save_file

import gpr1200_hf as g
from gpr1200_hf import ranking
from gpr1200_hf.cli import main
from gpr1200_hf.ranking import TIES, InputError
from tests.reference import brute_metrics, query_metric

FIELDS = ("ap", "map_at_r", "precision_at_1", "r_precision")
DEVICES = [None, pytest.param("cpu", id="torch-cpu")]


def _need(device):
    if device is not None:
        pytest.importorskip("torch")


def _codes(seed, n_bits, n_classes=9, low=2, high=6, shuffle=True):
    """Unpacked 0/1 bits (clustered: few bits, many exact ties), their packed codes, labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), rng.integers(low, high + 1, n_classes))
    if shuffle:
        y = rng.permutation(y)
    centers = rng.integers(0, 2, (n_classes, n_bits))
    flip = rng.random((y.size, n_bits)) < 0.25
    bits = (centers[y] ^ flip).astype(np.uint8)
    return bits, np.packbits(bits, axis=1), y


def _same(a: g.RankingResult, b: g.RankingResult) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize(("seed", "n_bits"), [(0, 5), (1, 12), (2, 64), (3, 71)])
def test_hamming_equals_plus_minus_one_ip_and_the_reference(
    seed, n_bits, include_self, ties, device
):
    _need(device)
    bits, codes, y = _codes(seed, n_bits)
    kw = {"ties": ties, "include_self": include_self}
    got = g.rank_metrics(codes, y, metric="hamming", block_size=seed + 3, device=device, **kw)
    plus_minus = bits.astype(np.float32) * 2 - 1
    _same(got, g.rank_metrics(plus_minus, y, metric="ip", **kw))
    want = brute_metrics(bits.astype(np.float64), y, metric="l2", **kw)  # -|a-b|^2 = -hamming
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f), want[f], atol=1e-12, err_msg=f)


@pytest.mark.parametrize("ties", TIES)
def test_hamming_numpy_and_torch_agree_bit_for_bit(ties, monkeypatch):
    pytest.importorskip("torch")
    bits, codes, y = _codes(4, 40, n_classes=60, low=2, high=12, shuffle=False)
    monkeypatch.setattr(ranking, "STRIP_WIDTH", 50)  # off-diagonal strips, one tie side each
    _same(
        g.rank_metrics(codes, y, metric="hamming", ties=ties, block_size=30),
        g.rank_metrics(codes, y, metric="hamming", ties=ties, block_size=30, device="cpu"),
    )


def test_hamming_scores_are_minus_popcount():
    bits, codes, _ = _codes(5, 77)
    v, offset = ranking.prepare_ranking(codes, "hamming")
    s = ranking.pairwise_scores(v, offset, slice(0, 7), slice(3, None))
    want = -(bits[:7, None, :] != bits[None, 3:, :]).sum(axis=2)
    np.testing.assert_array_equal(s, want)
    shown, off = ranking.prepare(codes, "hamming")  # the explorer's view: the same scores
    np.testing.assert_array_equal(2 * shown[:7] @ shown[3:].T - off[:7, None] - off[3:], want)


@pytest.mark.parametrize(
    "x",
    [np.zeros((4, 2), dtype=np.float32), np.zeros((4, 2), dtype=bool), np.zeros((4, 2), int)],
    ids=["float", "bool", "int64"],
)
def test_hamming_takes_packed_uint8_only(x):
    with pytest.raises(InputError, match="packbits"):
        g.score(x, [0, 0, 1, 1], metric="hamming")


def test_cli_scores_hamming_from_files(tmp_path, capsys):
    _, codes, y = _codes(6, 48)
    want = g.score(codes, y, metric="hamming", ties="stable")
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "c.npy", codes)
    save_file({"embeddings": codes}, str(tmp_path / "c.safetensors"))
    for name in ("c.npy", "c.safetensors"):
        args = ["score", tmp_path / name, "--labels", tmp_path / "y.npy", "--metric", "hamming"]
        args += ["--ties", "stable", "--json", tmp_path / "r.json"]
        assert main([str(a) for a in args]) == 0
        assert json.loads((tmp_path / "r.json").read_text()) == want
    capsys.readouterr()
    np.save(tmp_path / "f.npy", codes.astype(np.float32))
    args = ["score", tmp_path / "f.npy", "--labels", tmp_path / "y.npy", "--metric", "hamming"]
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "packbits" in err


def test_metric_module_one_shot_and_streamed():
    _, codes, y = _codes(7, 24, n_classes=6)
    y = y * 200  # category IDs of the six subsets
    metric = evaluate.load(g.METRIC_PATH)
    want = g.score(codes, y, metric="hamming")
    assert metric.compute(predictions=codes, references=y, metric="hamming") == want
    for start in range(0, y.size, 7):
        metric.add_batch(predictions=codes[start : start + 7], references=y[start : start + 7])
    assert metric.compute(metric="hamming") == want
    metric.add_batch(predictions=codes.astype(np.float32) + 0.5, references=y)
    with pytest.raises(ValueError, match="not bytes 0-255"):
        metric.compute(metric="hamming")


# --------------------------------------------------------------------------- integers


def _brute_from_scores(s, y, ties, include_self):
    """``brute_metrics`` on a given (exact) score matrix."""
    labels = list(y.tolist())
    out = {f: np.zeros(len(labels)) for f in FIELDS}
    for i in range(len(labels)):
        size = labels.count(labels[i])
        t, _ = query_metric(s[i], labels, i, ties=ties, include_self=include_self)
        out["ap"][i] = float(t / (size if include_self else size - 1))
        t, h = query_metric(s[i], labels, i, ties=ties, include_self=False, limit=size - 1)
        out["map_at_r"][i], out["r_precision"][i] = float(t / (size - 1)), float(h / (size - 1))
        out["precision_at_1"][i] = float(
            query_metric(s[i], labels, i, ties=ties, include_self=False, limit=1)[1]
        )
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize(
    ("metric", "dtype", "top", "dims"),
    [("ip", np.int8, 127, 4096), ("ip", np.int16, 3000, 64), ("l2", np.int8, 127, 4096)],
)
def test_integer_embeddings_are_scored_exactly(metric, dtype, top, dims, ties, device):
    """float32 sums of these vectors round (scores above 2**24): ties appear or vanish, and
    numpy and torch could differ. Integer inputs now give the exact integer scores."""
    _need(device)
    rng = np.random.default_rng(8)
    y = rng.permutation(np.repeat(np.arange(8), 4))
    centers = rng.integers(-top, top + 1, (8, dims))
    x = np.clip(centers[y] + rng.integers(-2, 3, (y.size, dims)), -top, top).astype(dtype)
    x[1::4] = x[0::4]  # exact duplicates: exact ties
    w = x.astype(np.int64)
    exact = w @ w.T
    if metric == "l2":
        sq = (w * w).sum(axis=1)
        exact = 2 * exact - sq[:, None] - sq[None, :]
    assert np.abs(exact).max() >= 2**24  # beyond what float32 holds exactly
    got = g.rank_metrics(x, y, metric=metric, ties=ties, device=device, block_size=9)
    want = _brute_from_scores(exact, y, ties, True)
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f), want[f], atol=1e-12, err_msg=f)
    if device is not None:
        _same(got, g.rank_metrics(x, y, metric=metric, ties=ties, block_size=9))


def test_small_integers_keep_their_old_results():
    """8-bit values whose scores fit float32 exactly: the same numbers as the float path."""
    rng = np.random.default_rng(9)
    y = rng.permutation(np.repeat(np.arange(10), 3))
    x = rng.integers(-3, 4, (y.size, 6)).astype(np.int8)
    for metric in ("ip", "l2"):
        for ties in TIES:
            _same(
                g.rank_metrics(x, y, metric=metric, ties=ties),
                g.rank_metrics(x.astype(np.float64), y, metric=metric, ties=ties),
            )
