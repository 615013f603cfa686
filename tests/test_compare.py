"""Paired statistics between runs: exact on constructed cases, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

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

PROTOCOL = {"metric": "cosine", "ties": "expected", "include_self": True}


def _results(ap, protocol=PROTOCOL, **data):
    return {
        "model": "m",
        "protocol": dict(protocol),
        "data": {"num_images": len(ap), "full_benchmark": False} | data,
        "metrics": {"map": float(np.mean(ap))},
    }


def _run(ap, cats, results=None):
    ap = np.asarray(ap, float)
    return PerQuery(
        ap,
        np.asarray(cats),
        np.array([f"{c}_{i}.jpg" for i, c in enumerate(cats)]),
        results if results is not None else _results(ap),
    )


def _save_run(folder, ap, cats, results=None, **npz_extra):
    """A run folder as gpr1200 evaluate writes it: per_query.npz and results.json."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "per_query.npz",
        ap=np.asarray(ap, float),
        category_id=np.asarray(cats),
        file_names=np.array([f"{c}_{i}.jpg" for i, c in enumerate(cats)]),
        **npz_extra,
    )
    results = _results(ap) if results is None else results
    if results is not False:
        (folder / "results.json").write_text(json.dumps(results))
    return folder


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
        _save_run(tmp_path / name, ap, cats)
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


# --------------------------------------------------------------------------- hardening


def _cli(args, capsys):
    from gpr1200_hf.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def runs(tmp_path):
    """Run A (default protocol) and run B (--exclude-self) of the same embeddings."""
    cats = np.repeat(np.arange(0, 1200, 60), 10)
    rng = np.random.default_rng(7)
    ap = rng.random(cats.size)
    a = _save_run(tmp_path / "a", ap, cats)
    excl = PROTOCOL | {"include_self": False}
    b = _save_run(tmp_path / "b", ap * 0.9, cats, _results(ap * 0.9, excl))
    return a, b, cats


def test_protocol_mismatch_is_refused_naming_the_field(runs, capsys):
    a, b, _ = runs
    with pytest.raises(InputError, match=r"protocol\.include_self \(True vs False\)"):
        compare_runs(PerQuery.load(a), PerQuery.load(b), n_bootstrap=10, n_permutations=10)
    code, out, err = _cli(["compare", a, b], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "protocol.include_self" in err and "--allow-protocol-mismatch" in err


def test_protocol_mismatch_allowed_with_a_warning(runs, capsys):
    a, b, _ = runs
    args = ["compare", a, b, "--bootstrap", "50", "--permutations", "50"]
    code, out, err = _cli([*args, "--allow-protocol-mismatch"], capsys)
    assert code == 0 and "95% CI" in out
    assert err.startswith("warning: ") and err.count("\n") == 1 and "include_self" in err


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"protocol": PROTOCOL | {"metric": "l2"}}, "protocol.metric"),
        ({"protocol": PROTOCOL | {"ties": "stable"}}, "protocol.ties"),
        ({"protocol": PROTOCOL | {"normalize": "retrieved"}}, "protocol.normalize"),
        ({"data": {"num_images": 240, "fingerprint": "x"}}, "data.fingerprint"),
        ({"data": {"num_images": 240, "full_benchmark": True}}, "data.full_benchmark"),
    ],
)
def test_each_protocol_and_data_field_is_checked(change, field):
    cats = np.repeat(np.arange(0, 1200, 50), 10)
    ap = np.random.default_rng(8).random(cats.size)
    a = _run(ap, cats)
    b = _run(ap, cats, _results(ap) | change)
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        compare_runs(a, b, n_bootstrap=10, n_permutations=10)
    out = compare_runs(a, b, allow_protocol_mismatch=True, n_bootstrap=10, n_permutations=10)
    assert out["all"]["difference"] == 0


def test_run_without_results_json_has_unknown_protocol(tmp_path, capsys):
    cats = np.repeat(np.arange(0, 1200, 100), 10)
    ap = np.random.default_rng(9).random(cats.size)
    a = _save_run(tmp_path / "a", ap, cats)
    b = _save_run(tmp_path / "b", ap, cats, results=False)
    code, _, err = _cli(["compare", a, b], capsys)
    assert code == 2 and "no results.json" in err and err.count("\n") == 1
    code, _, err = _cli(["compare", a, b, "--allow-protocol-mismatch"], capsys)
    assert code == 0 and err.startswith("warning: ")


def test_results_and_per_query_of_different_runs_are_refused(tmp_path, capsys):
    cats = np.repeat(np.arange(0, 1200, 100), 10)
    ap = np.random.default_rng(10).random(cats.size)
    a = _save_run(tmp_path / "a", ap, cats)
    b = _save_run(tmp_path / "b", ap, cats, _results(ap * 0.5))
    code, _, err = _cli(["compare", a, b], capsys)
    assert code == 2 and "different runs" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"ap": np.full(120, 1.5)}, "outside"),
        ({"ap": np.full(120, np.nan)}, "NaN"),
        ({"ap": np.ones((12, 10))}, "1-D"),
        ({"category_id": np.full(120, 5000)}, "0-1199"),
        ({"category_id": np.arange(120) * 0.5}, "integers"),
        ({"file_names": np.array(["3_x.jpg"] * 120)}, "appears 120 times"),
        ({"file_names": np.arange(120)}, "strings"),
    ],
)
def test_malformed_per_query_is_one_line(tmp_path, capsys, arrays, match):
    cats = np.repeat(np.arange(0, 1200, 100), 10)
    ap = np.random.default_rng(11).random(cats.size)
    good = _save_run(tmp_path / "a", ap, cats)
    fields = {
        "ap": ap,
        "category_id": cats,
        "file_names": np.array([f"{c}_{i}.jpg" for i, c in enumerate(cats)]),
    }
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "b" / "per_query.npz", **(fields | arrays))
    (tmp_path / "b" / "results.json").write_text(json.dumps(_results(ap)))
    code, _, err = _cli(["compare", good, tmp_path / "b"], capsys)
    assert code == 2 and match in err and err.count("\n") == 1, err


@pytest.mark.parametrize("kwarg", ["n_bootstrap", "n_permutations"])
@pytest.mark.parametrize("value", [0, -1, 1_000_001, 2.5, True])
def test_resample_counts_are_bounded_in_the_api(kwarg, value):
    cats = np.repeat(np.arange(5), 2)
    with pytest.raises(InputError, match=kwarg):
        paired_difference(np.zeros(10), np.ones(10) * 0.1, cats, **{kwarg: value})


def test_resampling_memory_is_bounded(tmp_path):
    """A million resamples of each kind run in chunks: peak memory stays far below the
    ~500 MB that drawing them all at once takes (20 categories)."""
    import subprocess
    import sys

    code = (
        "import resource, numpy as np\n"
        "from gpr1200_hf.compare import paired_difference\n"
        "c = np.repeat(np.arange(20), 10); a = np.random.default_rng(0).random(200)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "st = paired_difference(a, a + 0.01, c, n_bootstrap=1_000_000, "
        "n_permutations=1_000_000)\n"
        "assert st['p_value'] < 1e-5 and st['ci_low'] > 0.0099, st\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    import gpr1200_hf

    root = Path(gpr1200_hf.__file__).parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 200, f"grew by {proc.stdout.strip()} MB"


def test_bootstrap_and_permutations_use_independent_streams():
    rng = np.random.default_rng(12)
    cats = np.repeat(np.arange(30), 10)
    a = rng.random(cats.size)
    b = a + rng.normal(0, 0.05, cats.size)
    one = paired_difference(a, b, cats, n_bootstrap=100, n_permutations=500)
    two = paired_difference(a, b, cats, n_bootstrap=300, n_permutations=500)
    assert one["p_value"] == two["p_value"]
    assert paired_difference(a, b, cats, n_bootstrap=100, n_permutations=500) == one
