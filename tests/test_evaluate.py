"""gpr1200 evaluate: real tiny models, cache and resume, two processes, reports, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

import gpr1200_hf as g
from gpr1200_hf.cli import main
from gpr1200_hf.demo import make_demo
from gpr1200_hf.runner import evaluate_model
from tests.tiny_models import FAMILIES, direct_embedding, save_tiny


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    images, _ = make_demo(root, per_subset=1, seed=2, size=(32, 48))
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny(f, root / f) for f in FAMILIES}


def _embeddings(result) -> np.ndarray:
    path = Path(result["embeddings_cache"]) / "embeddings.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("embeddings"), f.metadata()


def _run(model, sample, out, **kw):
    kw.setdefault("workers", 0)
    return evaluate_model(
        str(model),
        data=str(sample),
        output_dir=out,
        progress=False,
        batch_size=kw.pop("batch_size", 7),
        **kw,
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_matches_a_direct_transformers_forward(family, models, sample, tmp_path):
    res = _run(models[family], sample, tmp_path, workers=1)
    emb, meta = _embeddings(res)
    names = json.loads(meta["file_names"])
    assert emb.dtype == np.float32 and emb.shape[0] == 60
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    for i in (0, 17, 59):
        img = Image.open(sample / "images" / names[i]).convert("RGB")
        np.testing.assert_allclose(emb[i], direct_embedding(family, models[family], img), atol=2e-5)
    assert res["metrics"]["map"] == pytest.approx(
        g.score(emb, [int(n.split("_")[0]) for n in names])["map"]
    )
    assert names == sorted(names, key=lambda n: (int(n.split("_")[0]), n))
    assert res["embedding_dim"] == emb.shape[1] and res["image_size"]


def test_pooling_override(models, sample, tmp_path):
    res = _run(models["vit"], sample, tmp_path, pooling="mean")
    emb, meta = _embeddings(res)
    name = json.loads(meta["file_names"])[3]
    img = Image.open(sample / "images" / name).convert("RGB")
    np.testing.assert_allclose(
        emb[3], direct_embedding("vit", models["vit"], img, "mean"), atol=2e-5
    )
    assert res["pooling"] == "mean"


def test_cache_hit_and_resume_after_interruption(models, sample, tmp_path):
    model = models["dinov2"]
    full = _run(model, sample, tmp_path / "a", chunk_rows=16)
    want, _ = _embeddings(full)
    assert full["timings"]["from_cache"] is False
    again = _run(model, sample, tmp_path / "a", chunk_rows=16)
    assert again["timings"]["from_cache"] is True
    np.testing.assert_array_equal(_embeddings(again)[0], want)

    out = tmp_path / "b"
    assert _run(model, sample, out, chunk_rows=16, max_chunks=2) is None  # interrupted
    folder = next((out / "embeddings").iterdir())
    chunks = sorted(p.name for p in folder.glob("chunk-*"))
    assert chunks == ["chunk-00000000-00000016.safetensors", "chunk-00000016-00000032.safetensors"]
    (folder / "chunk-00000032-00000048.safetensors.tmp123").write_bytes(b"half written")
    resumed = _run(model, sample, out, chunk_rows=16)
    assert resumed["timings"]["computed_images"] == 60 - 32
    np.testing.assert_array_equal(_embeddings(resumed)[0], want)


def test_keys_never_mix(models, sample, tmp_path):
    from safetensors.numpy import save_file

    a = _run(models["vit"], sample, tmp_path, chunk_rows=16, max_chunks=1)
    assert a is None
    folder = next((tmp_path / "embeddings").iterdir())
    # A foreign chunk (other key) in the folder is never used.
    save_file(
        {"embeddings": np.zeros((16, 32), np.float32)},
        str(folder / "chunk-00000016-00000032.safetensors"),
        metadata={"key": "other"},
    )
    res = _run(models["vit"], sample, tmp_path, chunk_rows=16)
    assert res["timings"]["computed_images"] == 60 - 16
    assert not np.any(np.all(_embeddings(res)[0][16:32] == 0, axis=1))
    other = _run(models["vit"], sample, tmp_path, chunk_rows=16, pooling="mean")
    assert other["embeddings_cache"] != res["embeddings_cache"]


def test_two_processes_equal_one(models, sample, tmp_path):
    single = _run(models["convnext"], sample, tmp_path / "one", chunk_rows=8)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "gpr1200_hf.cli",
        "evaluate",
        "--model",
        str(models["convnext"]),
        "--data",
        str(sample),
        "--output-dir",
        str(tmp_path / "two"),
        "--workers",
        "0",
        "--batch-size",
        "5",
        "--chunk-rows",
        "8",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "two").glob("*/results.json"))
    assert len(results) == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
    res = json.loads(results[0].read_text())
    two, _ = _embeddings(res)
    np.testing.assert_allclose(two, _embeddings(single)[0], atol=1e-6)
    assert res["metrics"] == pytest.approx(single["metrics"])


def test_demo_end_to_end_with_a_local_model(models, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(
        [
            "evaluate",
            "--demo",
            "--model",
            str(models["vit"]),
            "--output-dir",
            str(out),
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    runs = sorted(p.parent for p in out.glob("*/results.json"))
    assert len(runs) == 2
    for run in runs:
        res = json.loads((run / "results.json").read_text())
        for key in (
            "model",
            "revision",
            "pooling",
            "dtype",
            "image_size",
            "embedding_dim",
            "protocol",
            "metrics",
            "timings",
            "versions",
            "date",
        ):
            assert key in res
        assert res["timings"]["images_per_s"] > 0
        assert set(res["metrics"]) >= {"map", "map_landmarks", "map_faces", "map_at_r"}
        ap = np.load(run / "per_query.npz", allow_pickle=False)
        assert ap["ap"].shape == (240,) and ap["ap"].mean() == pytest.approx(res["metrics"]["map"])
        png = (run / "chart.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        # A sample is never written as a benchmark result, and says so where it is shown.
        assert not (run / "model_index.yaml").exists()
        assert not (run / ".eval_results").exists()
        table_md = (run / "table.md").read_text()
        assert "| GPR" in table_md and "SAMPLE of 240 images" in table_md
        assert f"{100 * res['metrics']['map']:.1f}" in printed
    assert "baseline:color-hist" in printed and "paper: ViT-L/16" in printed
    assert "no Hub eval results or model-index written: the run scored a sample" in printed
    # build merges the runs.
    assert main(["build", *map(str, runs), "--out", str(tmp_path / "t.md"), "--paper"]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "baseline:color-hist" in table and "paper: Swin-B (in21k)" in table
    assert main(["build", *map(str, runs), "--out", str(tmp_path / "t.csv")]) == 0
    assert len((tmp_path / "t.csv").read_text().strip().splitlines()) == 3


def test_no_data_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["evaluate", "--model", "baseline:color-hist", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "GPR1200.zip" in err and "--demo" in err


def test_remote_code_stays_off(tmp_path, sample, capsys):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my-custom",
                "auto_map": {"AutoConfig": "custom.MyConfig", "AutoModel": "custom.MyModel"},
            }
        )
    )
    (folder / "custom.py").write_text("raise SystemExit('remote code ran')\n")
    code = main(
        [
            "evaluate",
            "--model",
            str(folder),
            "--data",
            str(sample),
            "--output-dir",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "trust_remote_code" in capsys.readouterr().err


def test_exported_folder_and_zip_sources_give_the_same_run(sample, tmp_path):
    from gpr1200_hf.demo import CATEGORIES_FILE
    from gpr1200_hf.hub import export_hub

    export = export_hub(
        tmp_path / "gpr1200",
        sample,
        categories=sample / CATEGORIES_FILE,
        strict=False,
        cache_dir=tmp_path / "c",
    )
    from_folder = _run("baseline:color-hist", sample, tmp_path / "a")
    from_export = _run("baseline:color-hist", export, tmp_path / "b")
    assert from_export["metrics"] == from_folder["metrics"]
    assert from_export["data"]["source"].startswith("exported folder")
    np.testing.assert_array_equal(_embeddings(from_export)[0], _embeddings(from_folder)[0])


@pytest.mark.parametrize(
    ("flag", "value"), [("--batch-size", "0"), ("--workers", "-1"), ("--chunk-rows", "0")]
)
def test_bad_numeric_options_are_clear_errors(flag, value, sample, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            "baseline:color-hist",
            "--data",
            str(sample),
            "--output-dir",
            str(tmp_path),
            flag,
            value,
        ]
    )
    assert code == 2 and flag in capsys.readouterr().err
