"""The evaluate metric module: loading, one-shot, streaming, distributed, doctests, errors."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
import textwrap

import evaluate
import numpy as np
import pytest

import gpr1200_hf as g
from tests.conftest import REPO


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(g.METRIC_PATH)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(0, 1200, 40), 5)
    x = rng.standard_normal((y.size, 16)) + 1.5 * np.repeat(rng.standard_normal((30, 16)), 5, 0)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    from gpr1200_hf.spaces import export_metric_space

    return export_metric_space(tmp_path_factory.mktemp("space") / "gpr1200_map")


def test_load_exported_folder_script_and_installed_path(monkeypatch, tmp_path, data, space):
    x, y = data
    a = evaluate.load(str(space)).compute(predictions=x, references=y)
    monkeypatch.chdir(space)
    b = evaluate.load("gpr1200_map.py").compute(predictions=x, references=y)
    monkeypatch.chdir(tmp_path)
    c = evaluate.load(g.METRIC_PATH).compute(predictions=x, references=y)
    assert a == b == c == g.score(x, y)


def test_compute_equals_library_and_is_json(metric, data):
    x, y = data
    for kwargs in ({}, {"metric": "ip", "ties": "pessimistic"}, {"include_self": False}):
        got = metric.compute(predictions=x, references=y, **kwargs)
        assert got == g.score(x, y, **kwargs)
        assert json.loads(json.dumps(got)) == got
    assert all(isinstance(v, float) for v in got.values())


def test_indices_mode(metric, data):
    x, y = data
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    idx = np.argsort(-(xn @ xn.T), axis=1, kind="stable")[:, :20]
    for norm in ("relevant", "retrieved"):
        got = metric.compute(predictions=idx, references=y, mode="indices", normalize=norm)
        assert got == g.score_indices(idx, y, normalize=norm)


def test_streaming_equals_one_call(metric, data):
    x, y = data
    for start in range(0, len(y), 37):
        metric.add_batch(predictions=x[start : start + 37], references=y[start : start + 37])
    streamed = metric.compute()
    want = g.score(x, y)
    assert streamed.keys() == want.keys()
    for k in want:
        assert streamed[k] == pytest.approx(want[k], abs=1e-12)


def test_streaming_canonical_order_without_references(metric):
    rng = np.random.default_rng(1)
    y = g.canonical_labels()
    x = rng.standard_normal((12000, 4)).astype(np.float32) + np.repeat(
        rng.standard_normal((1200, 4)).astype(np.float32), 10, axis=0
    )
    for start in range(0, 12000, 5000):
        metric.add_batch(predictions=x[start : start + 5000])
    assert metric.compute() == pytest.approx(g.score(x, y), abs=1e-12)
    assert metric.compute(predictions=x) == g.score(x)


@pytest.mark.parametrize(
    ("preds", "refs", "match"),
    [
        (np.ones(4), [0, 0, 1, 1], "2-D"),
        (np.array([[np.nan, 1.0], [1, 1]]), [0, 0], "NaN"),
        (np.ones((3, 2)), [0, 0], "3 rows but 2 labels"),
        (np.zeros((2, 2)), [0, 0], "zeros"),
    ],
)
def test_bad_inputs_raise_library_errors(metric, preds, refs, match):
    # The metric's InputError is the copied sibling's class: a ValueError named InputError.
    with pytest.raises(ValueError, match=match) as err:
        metric.compute(predictions=preds, references=refs)
    assert type(err.value).__name__ == "InputError"
    if np.asarray(preds).ndim != 2 or "labels" in match or "NaN" in match:
        with pytest.raises(ValueError, match=match):
            metric.add_batch(predictions=preds, references=refs)
        assert metric.writer is None  # nothing was written


DIST = textwrap.dedent(
    """
    import json, sys
    import numpy as np, evaluate, gpr1200_hf
    rank, cache = int(sys.argv[1]), sys.argv[2]
    m = evaluate.load(gpr1200_hf.METRIC_PATH, num_process=2, process_id=rank,
                      experiment_id="dist-test", cache_dir=cache)
    x, y = np.load(cache + "/x.npy"), np.load(cache + "/y.npy")
    half = slice(0, len(y) // 2) if rank == 0 else slice(len(y) // 2, None)
    for s in range(half.start or 0, half.stop or len(y), 25):
        e = min(s + 25, half.stop or len(y))
        m.add_batch(predictions=x[s:e], references=y[s:e])
    print(json.dumps(m.compute()))
    """
)


def test_distributed_two_processes(tmp_path, data):
    x, y = data
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DIST, str(r), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    rank0, rank1 = (json.loads(o.strip().splitlines()[-1]) for o, _ in outs)
    assert rank1 is None
    want = g.score(x, y)
    assert rank0 == pytest.approx(want, abs=1e-12)


def test_card_and_module_doctests(monkeypatch, space):
    monkeypatch.chdir(space)
    card = doctest.testfile(str(space / "README.md"), module_relative=False, globs={})
    assert card.attempted >= 5 and card.failed == 0
    module = evaluate.load("gpr1200_map.py")
    finder = doctest.DocTestParser()
    test = finder.get_doctest(module.inputs_description, {"evaluate": evaluate}, "inputs", None, 0)
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0 and test.examples


def test_card_front_matter():
    import yaml

    text = (REPO / "metric/gpr1200_map/README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert {"evaluate", "metric"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and meta["description"]
    assert "@inproceedings" in text
    assert "https://github.com/)" not in text and "(https://github.com/ " not in text


def test_metric_script_imports_one_per_line():
    src = (REPO / "metric/gpr1200_map/gpr1200_map.py").read_text()
    for line in src.splitlines():
        if line.startswith("import "):
            assert "," not in line, line


def test_torch_tensors_bf16_and_ragged_lists(metric, data):
    torch = pytest.importorskip("torch")
    x, y = data
    bf16 = torch.from_numpy(x).to(torch.bfloat16)
    widened = bf16.float().numpy()  # bf16 -> float32 is exact
    assert metric.compute(predictions=bf16, references=torch.from_numpy(y)) == g.score(widened, y)
    with pytest.raises(ValueError, match="rectangular"):
        metric.compute(predictions=[[1.0, 2.0], [3.0]], references=[0, 0])


@pytest.mark.parametrize(
    ("preds", "refs", "match"),
    [
        # float64 values float32 cannot hold exactly: a different score, or a false "inf"
        (np.array([[np.e + 1e9, 0.0], [1.0, 2.0]]), [0, 0], "stream float32 predictions"),
        (np.array([[1e200, 1.0], [1.0, 2.0]]), [0, 0], "stream float32 predictions"),
        (np.array([[2**24 + 1, 0], [1, 2]]), [0, 0], r"values >= 2\*\*24 cannot be streamed"),
        (np.ones((2, 2), np.float32), ["a", "b"], "strings cannot be mapped"),
        (np.ones((2, 2), np.float32), [0, np.iinfo(np.int64).min], "is reserved"),
    ],
)
def test_add_batch_refuses_what_float32_streaming_would_change(metric, preds, refs, match):
    with pytest.raises(ValueError, match=match) as err:
        metric.add_batch(predictions=preds, references=refs)
    assert type(err.value).__name__ == "InputError"
    assert metric.writer is None  # nothing was written


def test_streamed_label_minus_one_is_a_label(metric, data):
    """-1 is an ordinary category ID in a stream (it once meant "no references")."""
    x, y = data
    y = np.where(y == 0, -1, y)
    metric.add_batch(predictions=x[:100], references=y[:100])
    metric.add_batch(predictions=x[100:], references=y[100:])
    assert metric.compute() == pytest.approx(g.score(x, y), abs=1e-12)
    exact = x.astype(np.float64)  # float64 that float32 holds exactly still streams
    metric.add_batch(predictions=exact, references=y)
    assert metric.compute() == pytest.approx(g.score(x, y), abs=1e-12)
