"""Results the Hub understands: eval.yaml, .eval_results, model-index, the dataset card, push."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, parse_eval_result_entries

import gpr1200_hf as g
from gpr1200_hf import hub_results, protocol
from gpr1200_hf.cli import main
from gpr1200_hf.demo import make_demo


@pytest.fixture(scope="module")
def full_results():
    """results.json content of a run on 12000 rows in canonical order (synthetic embeddings)."""
    rng = np.random.default_rng(5)
    labels = protocol.canonical_labels()
    centres = rng.standard_normal((1200, 16))
    x = (centres[labels] + 1.2 * rng.standard_normal((labels.size, 16))).astype(np.float32)
    metrics = g.score(x, labels)
    return {
        "model": "org/model",
        "pooling": "cls",
        "dtype": "fp32",
        "data": {
            "num_images": 12000,
            "num_categories": 1200,
            "full_benchmark": True,
            "revision": "0123456789abcdef0123456789abcdef01234567",
        },
        "protocol": {"metric": "cosine", "ties": "expected", "include_self": True},
        "metrics": metrics,
        "date": dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc).isoformat(),
    }


def test_eval_results_of_a_full_run(full_results, tmp_path):
    notes = hub_results.write_hub_results(tmp_path, full_results, "org/gpr1200")
    assert notes and "wrote" in notes[0]
    raw = yaml.safe_load((tmp_path / ".eval_results/gpr1200.yaml").read_text())
    entries = parse_eval_result_entries(raw)
    assert [e.task_id for e in entries] == [t["id"] for t in hub_results.eval_yaml()["tasks"]]
    for e in entries:
        assert e.dataset_id == "org/gpr1200"
        assert e.value == round(100 * full_results["metrics"][e.task_id], 2)
        assert e.dataset_revision == full_results["data"]["revision"]
        assert e.date == full_results["date"] and e.source_url
        assert "ties=expected" in e.notes and "query included" in e.notes
    index = yaml.safe_load((tmp_path / "model_index.yaml").read_text())["model-index"][0]
    result = index["results"][0]
    assert result["task"]["type"] == "image-feature-extraction"
    assert result["dataset"]["type"] == "org/gpr1200" and result["dataset"]["split"] == "test"
    assert result["metrics"][0]["value"] == round(100 * full_results["metrics"]["map"], 2)


def test_no_results_without_hub_id_or_for_a_sample(full_results, tmp_path):
    (tmp_path / ".eval_results").mkdir()
    (tmp_path / ".eval_results/gpr1200.yaml").write_text("stale")
    notes = hub_results.write_hub_results(tmp_path, full_results, None)
    assert len(notes) == 1 and "--hub-dataset" in notes[0]
    assert not (tmp_path / ".eval_results/gpr1200.yaml").exists()  # never a stale file
    sample = full_results | {"data": full_results["data"] | {"full_benchmark": False}}
    notes = hub_results.write_hub_results(tmp_path, sample, "org/gpr1200")
    assert "sample" in notes[0] and not list(tmp_path.rglob("*.yaml"))
    with pytest.raises(g.InputError, match="sample"):
        hub_results.eval_result_entries(sample, "org/gpr1200")


def test_push_results_offline_is_one_line(full_results, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "results.json").write_text(json.dumps(full_results))
    hub_results.write_hub_results(tmp_path, full_results, "org/gpr1200")
    code = main(["push-results", str(tmp_path), "--model", "org/model"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: could not open a pull request on org/model")
    assert len(err.splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["push-results", str(empty), "--model", "org/model"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (empty / "results.json").write_text(json.dumps({"model": "org/model"}))
    assert main(["push-results", str(empty), "--model", "org/model"]) == 2
    assert "--hub-dataset" in capsys.readouterr().err


def test_push_results_refuses_another_model(full_results, tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(full_results))
    hub_results.write_hub_results(tmp_path, full_results, "org/gpr1200")
    assert main(["push-results", str(tmp_path), "--model", "other/model"]) == 2
    err = capsys.readouterr().err
    assert "the run evaluated 'org/model', not 'other/model'" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    images, cats = make_demo(root / "demo", per_subset=2, seed=4, size=(40, 56))
    out = root / "gpr1200"
    code = main(
        [
            "export-hub",
            str(out),
            "--source",
            str(images.parent),
            "--categories",
            str(cats),
            "--no-strict",
            "--cache-dir",
            str(root / "cache"),
            "--repo-id",
            "org/gpr1200",
        ]
    )
    assert code == 0
    return out


def test_export_writes_eval_yaml_license_and_a_valid_card(export):
    spec = yaml.safe_load((export / "eval.yaml").read_text())
    assert spec == hub_results.eval_yaml()
    assert spec["name"] and spec["description"]
    assert spec["evaluation_framework"] == hub_results.EVALUATION_FRAMEWORK
    assert [t["id"] for t in spec["tasks"]] == ["map", *[f"map_{s.key}" for s in protocol.SUBSETS]]
    assert all(t["config"] == "default" and t["split"] == "test" for t in spec["tasks"])

    card = DatasetCard.load(export / "README.md")
    data = card.data
    assert data.license == "other" and data.license_link == "LICENSE"
    assert (export / "LICENSE").read_text().startswith("GPR1200")
    assert data.extra_gated_prompt and data.extra_gated_fields
    infos = DatasetInfosDict.from_dataset_card_data(data)
    info = infos["default"]
    shards = sorted((export / "data").glob("*.parquet"))
    assert info.download_size == sum(p.stat().st_size for p in shards) > 0
    assert info.splits["test"].num_examples == 120
    assert info.features == datasets.load_dataset(str(export), split="test").features
    text = card.text
    assert "Personal and sensitive information" in text and "IMDB-WIKI" in text
    assert "uploader" not in text.lower() and "suggestion" not in text.lower()
    assert "evaluation framework" in text and hub_results.EVALUATION_FRAMEWORK in text
    for task in hub_results.TASKS:
        assert f"`{task}`" in text


def test_export_push_offline_is_one_line(export, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from gpr1200_hf.hub import push_folder

    with pytest.raises(g.InputError, match="could not push") as err:
        push_folder(export, "org/gpr1200")
    assert "\n" not in str(err.value)


def test_skipped_images_are_never_a_benchmark_result(full_results, tmp_path):
    data = full_results["data"] | {"skipped_images": ["5_x.jpg: truncated JPEG"]}
    notes = hub_results.write_hub_results(tmp_path, full_results | {"data": data}, "org/gpr1200")
    assert "1 image(s) of the source were skipped" in notes[0] and "5_x.jpg" in notes[0]
    assert not list(tmp_path.rglob("*.yaml"))


@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "--demo", "--hub-dataset", "bad id with spaces"],
        ["evaluate", "--demo", "--hub-dataset", "no-slash"],
        ["push-results", ".", "--model", "a/b/c"],
    ],
)
def test_hub_ids_are_checked_before_any_work(args, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --") and "ORG/NAME" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "change", [{"include_self": False}, {"ties": "optimistic"}, {"metric": "l2"}]
)
def test_other_protocols_are_never_leaderboard_results(full_results, tmp_path, change):
    other = full_results | {"protocol": full_results["protocol"] | change}
    notes = hub_results.write_hub_results(tmp_path, other, "org/gpr1200")
    assert "protocol differs" in notes[0] and next(iter(change)) in notes[0]
    assert not list(tmp_path.rglob("*.yaml"))


def test_a_generated_sample_of_12000_images_is_not_the_benchmark():
    from gpr1200_hf.runner import _is_full

    labels = protocol.canonical_labels()
    rows = {"category_id": labels.tolist(), "category_text": [f"demo {c}" for c in labels]}
    assert not _is_full(datasets.Dataset.from_dict(rows))
    assert not _is_full(datasets.Dataset.from_dict({"category_id": labels.tolist()}))


def test_pinned_category_digest_matches_the_official_json_when_present():
    from tests.conftest import REPO

    official = REPO.parent / "shared/reference/GPR1200_categoryNumber_to_text.json"
    if not official.is_file():
        pytest.skip("the official category JSON is not beside this checkout (never committed)")
    from gpr1200_hf.dataset import label_names, read_categories

    texts = read_categories(official)
    assert protocol.category_texts_digest(texts) == protocol.CATEGORY_TEXTS_SHA256
    assert len(set(label_names(texts))) == 1200  # two categories share "plate"


def test_export_space_metric_names_the_space_gpr1200_map(tmp_path, capsys):
    assert main(["export-space", "metric", str(tmp_path / "space")]) == 0
    out = capsys.readouterr().out
    assert "needs a folder named gpr1200_map" in out and "hf upload ORG/gpr1200_map" in out
    assert main(["export-space", "metric", str(tmp_path / "gpr1200_map")]) == 0
    assert "needs a folder named" not in capsys.readouterr().out


def test_card_counts_the_faces_of_this_export_and_names_no_pypi_install(export):
    text = DatasetCard.load(export / "README.md").text
    faces = sum(1 for p in datasets.load_dataset(str(export), split="test")["subset"] if p == 5)
    assert f"(category IDs 1000-1199, {faces} images here)" in text
    assert "pip install gpr1200-hf" not in text


def test_metric_path_is_rewritten_when_its_files_change(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setenv("GPR1200_HF_CACHE", str(tmp_path / "cache"))
    folder = Path(g.METRIC_PATH)
    assert folder.stat().st_mode & 0o055  # readable by others (mkdtemp would give 0700)
    (folder / "scoring.py").write_text("raise RuntimeError('tampered')\n")
    (folder / "ranking.py").unlink()
    again = Path(g.METRIC_PATH)
    assert again == folder and b"tampered" not in (folder / "scoring.py").read_bytes()
    x = np.eye(4, dtype=np.float32)
    assert evaluate.load(str(folder)).compute(predictions=x, references=[0, 0, 1, 1]) == g.score(
        x, [0, 0, 1, 1]
    )


def test_model_flags_are_refused_for_a_weight_free_baseline(tmp_path, capsys):
    args = ["evaluate", "--model", "baseline:color-hist", "--demo", "--dtype", "fp16"]
    assert main([*args, "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--dtype do not apply" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
