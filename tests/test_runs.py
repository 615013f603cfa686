"""Run folders: one per configuration, visible names; partial runs and model errors are clear."""

from __future__ import annotations

import json
import shutil

import pytest

from gpr1200_hf.cli import main
from gpr1200_hf.demo import make_demo
from gpr1200_hf.runner import evaluate_model
from tests.tiny_models import save_tiny

BASELINE = "baseline:color-hist"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_demo(root, per_subset=1, seed=2, size=(32, 48))
    return root


@pytest.fixture(scope="module")
def other_sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("other")
    make_demo(root, per_subset=1, seed=3, size=(32, 48))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny(f, root / f) for f in ("vit", "clip", "convnext")}


def _run(model, data, out, **kw):
    return evaluate_model(
        str(model), data=str(data), output_dir=out, progress=False, workers=0, **kw
    )


def _evaluate(*args: str) -> int:
    return main(["evaluate", *args, "--workers", "0", "--no-progress"])


def test_other_data_or_protocol_never_shares_a_folder(sample, other_sample, tmp_path):
    runs = {
        "default": _run(BASELINE, sample, tmp_path),
        "exclude_self": _run(BASELINE, sample, tmp_path, include_self=False),
        "ip": _run(BASELINE, sample, tmp_path, metric="ip"),
        "pessimistic": _run(BASELINE, sample, tmp_path, ties="pessimistic"),
        "other_data": _run(BASELINE, other_sample, tmp_path),
    }
    folders = {name: res["run_dir"] for name, res in runs.items()}
    assert len(set(folders.values())) == len(runs), folders
    for res in runs.values():  # each folder still holds its own run
        on_disk = json.loads((tmp_path / res["run_dir"] / "results.json").read_text())
        assert on_disk["protocol"] == res["protocol"] and on_disk["metrics"] == res["metrics"]
    assert runs["exclude_self"]["protocol"]["include_self"] is False
    assert len(list(tmp_path.glob("*/results.json"))) == len(runs)
    again = _run(BASELINE, sample, tmp_path)  # the same configuration reruns into its folder
    assert again["run_dir"] == folders["default"]


def test_run_folder_name_is_readable_and_covers_the_configuration():
    from gpr1200_hf.runner import run_dir_name

    config = {
        "model": "facebook/dinov2-small",
        "revision": "abc",
        "pooling": "pooler",
        "dtype": "fp32",
        "preprocessing": "p",
        "data": "zip-1",
        "metric": "cosine",
        "ties": "expected",
        "include_self": True,
    }
    name = run_dir_name(config)
    assert name.startswith("facebook_dinov2-small-pooler-fp32-")
    for field, value in (("revision", "def"), ("preprocessing", "q"), ("data", "zip-2")):
        assert run_dir_name(config | {field: value}) != name


def test_local_model_dot_path_gives_a_visible_folder(models, sample, tmp_path, monkeypatch):
    shutil.copytree(models["vit"], tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    assert _evaluate("--model", "./ckpt", "--data", str(sample), "--output-dir", "runs") == 0
    folders = [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("ckpt-")]
    assert len(folders) == 1
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]
    found = list((tmp_path / "runs").glob("*/results.json"))  # what `build runs/*/...` sees
    assert [p.parent.name for p in found] == folders
    assert main(["build", *map(str, found), "--out", str(tmp_path / "t.md")]) == 0


def test_pipe_and_newline_in_a_model_folder_name_give_a_safe_folder(models, sample, tmp_path):
    odd = tmp_path / "my|model\nv2"
    shutil.copytree(models["vit"], odd)
    res = _run(odd, sample, tmp_path / "runs")
    name = res["run_dir"].rsplit("/", 1)[-1]
    assert name.startswith("my_model_v2-cls-fp32-")
    assert not set(name) & set("|\n /\\")
    assert json.loads((tmp_path / "runs" / name / "results.json").read_text())["model"] == str(odd)


def test_partial_run_says_so_and_writes_no_results(sample, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--model", BASELINE, "--data", str(sample), "--output-dir", str(out)]
    assert _evaluate(*args, "--chunk-rows", "16", "--max-chunks", "1") == 0
    printed = capsys.readouterr().out
    assert "partial run, 1 of 4 chunks" in printed and "no results written" in printed
    assert "resume" in printed
    assert not list(out.glob("*/results.json"))
    assert _evaluate(*args, "--chunk-rows", "16", "--max-chunks", "2") == 0
    assert "3 of 4 chunks" in capsys.readouterr().out
    assert _evaluate(*args, "--chunk-rows", "16") == 0
    assert "partial run" not in capsys.readouterr().out
    assert len(list(out.glob("*/results.json"))) == 1


@pytest.mark.parametrize("pooling", ["cls", "mean", "pooler"])
def test_clip_with_a_backbone_pooling_is_a_clear_error(models, sample, tmp_path, pooling, capsys):
    code = _evaluate(
        "--model",
        str(models["clip"]),
        "--pooling",
        pooling,
        "--data",
        str(sample),
        "--output-dir",
        str(tmp_path),
    )
    err = capsys.readouterr().err
    assert code == 2 and "valid poolings: image_features" in err and "Traceback" not in err


def test_image_features_on_a_backbone_and_cls_on_a_feature_map_are_clear(
    models, sample, tmp_path, capsys
):
    base = ["--data", str(sample), "--output-dir", str(tmp_path)]
    assert _evaluate("--model", str(models["vit"]), "--pooling", "image_features", *base) == 2
    assert "valid poolings: cls, mean, pooler" in capsys.readouterr().err
    assert _evaluate("--model", str(models["convnext"]), "--pooling", "cls", *base) == 2
    assert "choose --pooling mean or pooler" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["./nope", "/tmp/gpr1200-no-such-dir/ckpt", "~/no-such-ckpt"])
def test_missing_local_model_folder_says_it_does_not_exist(path, sample, tmp_path, capsys):
    code = _evaluate("--model", path, "--data", str(sample), "--output-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and f"model folder {path} does not exist" in err


def test_folder_without_config_is_named(sample, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = _evaluate("--model", str(tmp_path / "empty"), "--data", str(sample))
    assert code == 2 and "has no config.json" in capsys.readouterr().err
