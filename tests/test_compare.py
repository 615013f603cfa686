"""Paired statistics between runs: exact on constructed cases, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpr1200_hf.compare import (
    PerQuery,
    category_means,
    compare_runs,
    largest_category_differences,
    paired_difference,
)
from gpr1200_hf.errors import InputError


def _run(ap, cats):
    return PerQuery(
        np.asarray(ap, float),
        np.asarray(cats),
        np.array([f"{c}_{i}.jpg" for i, c in enumerate(cats)]),
    )


def test_identical_runs_have_no_difference():
    rng = np.random.default_rng(0)
    cats = np.repeat(np.arange(0, 1200, 30), 10)
    ap = rng.random(cats.size)
    st = paired_difference(ap, ap, cats, n_bootstrap=500, n_permutations=500)
    assert st["difference"] == 0 and st["ci_low"] == 0 == st["ci_high"]
    assert st["p_value"] == 1.0


def test_constant_improvement_is_significant_and_exact():
    rng = np.random.default_rng(1)
    cats = np.repeat(np.arange(40), 10)
    a = rng.random(cats.size) * 0.8
    st = paired_difference(a, a + 0.05, cats, n_bootstrap=1000, n_permutations=999)
    assert st["difference"] == pytest.approx(0.05)
    assert st["ci_low"] == pytest.approx(0.05) and st["ci_high"] == pytest.approx(0.05)
    assert st["p_value"] == pytest.approx(1 / 1000)  # no sign flip reaches the observed value


def test_permutation_p_value_matches_exhaustive_enumeration():
    import itertools

    cats = np.repeat(np.arange(6), 2)
    a = np.array([0.5, 0.4, 0.3, 0.9, 0.2, 0.6, 0.7, 0.1, 0.5, 0.5, 0.3, 0.8])
    b = a + np.array([0.1, 0.0, -0.05, 0.2, 0.1, 0.0, 0.3, -0.1, 0.0, 0.1, 0.05, 0.0])
    d = np.bincount(cats, weights=b - a)
    obs = abs(d.sum())
    flips = [abs(np.dot(s, d)) >= obs - 1e-12 for s in itertools.product([-1, 1], repeat=6)]
    exact = np.mean(flips)
    st = paired_difference(a, b, cats, n_permutations=20_000, n_bootstrap=10)
    assert st["p_value"] == pytest.approx(exact, abs=0.01)


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(3)
    cats = np.repeat(np.arange(200), 10)
    a = rng.random(cats.size)
    b = a + rng.normal(0.02, 0.05, cats.size)
    st = paired_difference(a, b, cats, n_bootstrap=2000, n_permutations=100)
    assert st["ci_low"] < st["difference"] < st["ci_high"]
    assert st["ci_high"] - st["ci_low"] < 0.02


def test_compare_runs_subsets_and_checks():
    cats = np.repeat([1, 2, 250, 251, 1100, 1101], 5)
    rng = np.random.default_rng(4)
    a = _run(rng.random(30), cats)
    b = _run(a.ap + 0.1, cats)
    out = compare_runs(a, b, n_bootstrap=100, n_permutations=100)
    assert set(out) == {"all", "landmarks", "inat", "faces"}
    assert out["inat"]["categories"] == 2
    top = largest_category_differences(a, b, top=3)
    assert len(top) == 3 and all(t["difference"] == pytest.approx(0.1) for t in top)
    ids, means = category_means(a.ap, cats)
    assert means[0] == pytest.approx(a.ap[:5].mean())
    with pytest.raises(InputError, match="same images"):
        compare_runs(a, _run(a.ap[:25], cats[:25]))


def test_compare_cli(tmp_path, capsys):
    from gpr1200_hf.cli import main

    cats = np.repeat(np.arange(0, 1200, 100), 10)
    rng = np.random.default_rng(5)
    for name, ap in (("a", rng.random(cats.size) * 0.5), ("b", rng.random(cats.size))):
        (tmp_path / name).mkdir()
        np.savez(
            tmp_path / name / "per_query.npz",
            ap=ap,
            category_id=cats,
            file_names=np.array([f"{c}_{i}.jpg" for i, c in enumerate(cats)]),
        )
    code = main(
        [
            "compare",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--json",
            str(tmp_path / "s.json"),
            "--bootstrap",
            "200",
            "--permutations",
            "200",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "95% CI" in out and "IMDB-Faces" in out
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["all"]["map_b"] > stats["all"]["map_a"]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
