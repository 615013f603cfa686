"""--preprocess device against the model's own image processor (the reference), on CPU torch;
the machine-dependent defaults of gpr1200 evaluate; chunk writes in the background."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from transformers import AutoImageProcessor

from gpr1200_hf import preprocess as P
from gpr1200_hf.cli import main
from gpr1200_hf.demo import CATEGORIES_FILE, make_demo
from gpr1200_hf.errors import InputError
from gpr1200_hf.extract import _ChunkWriter, default_loader_settings
from gpr1200_hf.models import default_preprocess
from gpr1200_hf.runner import evaluate_model
from tests.tiny_models import FAMILIES, save_tiny

SUPPORTED = [f for f in FAMILIES if f != "siglip2"]  # SigLIP2 packs patches: refused


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f: save_tiny(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo sample at its default size (96 x 160, downscaled 3-5x by the tiny models)."""
    root = tmp_path_factory.mktemp("demo")
    make_demo(root, per_subset=1)
    return root


def _images(seed: int = 0) -> list[Image.Image]:
    """RGB images of several sizes and aspect ratios, with sharp edges (bicubic overshoot)."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in ((37, 53), (64, 64), (53, 37), (37, 53), (9, 200), (150, 101)):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        a[: h // 2, : w // 3] = 255  # saturated blocks: clipping between the two passes
        a[h // 2 :, w // 3 :] = 0
        out.append(Image.fromarray(a))
    return out


@pytest.mark.parametrize("mode, resample", [("bilinear", 2), ("bicubic", 3)])
@pytest.mark.parametrize("size", [(32, 32), (17, 91), (300, 120), (64, 64), (1, 5)])
def test_resize_is_pillows_bit_for_bit(mode, resample, size):
    for image in _images():
        expected = np.asarray(image.resize((size[1], size[0]), resample=resample))
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float()
        got = P._resize(x, size, mode)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, expected.astype(np.float32))


@pytest.mark.parametrize("family", SUPPORTED)
def test_device_pixels_equal_the_processors(family, models):
    processor = AutoImageProcessor.from_pretrained(models[family])
    images = _images(1)
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    got = P.apply(P.pack(images), P.plan_for(processor), "cpu")["pixel_values"]
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": {"shortest_edge": 16}, "crop_size": {"height": 24, "width": 20}},  # pads
        {"size": {"shortest_edge": 40}, "crop_size": {"height": 33, "width": 31}},  # odd crop
        {"size": {"height": 23, "width": 41}, "do_normalize": False, "do_center_crop": False},
    ],
)
def test_crop_padding_and_options_follow_the_processor(kwargs):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(**kwargs)
    images = _images(2)
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    got = P.apply(P.pack(images), P.plan_for(processor), "cpu")["pixel_values"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_unsupported_processors_are_refused_clearly(models):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    siglip2 = AutoImageProcessor.from_pretrained(models["siglip2"])
    cases = [
        (siglip2, "code of its own"),
        (CLIPImageProcessorPil(resample=1), "resample LANCZOS"),
        (CLIPImageProcessorPil(resample=0), "resample NEAREST"),
        (CLIPImageProcessorPil(size={"shortest_edge": 8, "longest_edge": 12}), "longest edge"),
    ]
    for processor, why in cases:
        with pytest.raises(InputError) as err:
            P.plan_for(processor)
        assert why in str(err.value) and "use --preprocess processor" in str(err.value)


def test_default_is_device_on_a_gpu_where_it_replicates_the_processor(models):
    vit = AutoImageProcessor.from_pretrained(models["vit"])
    siglip2 = AutoImageProcessor.from_pretrained(models["siglip2"])
    assert default_preprocess(vit, "cuda") == default_preprocess(vit, "cuda:1") == "device"
    assert default_preprocess(vit, "cpu") == "processor"
    assert default_preprocess(siglip2, "cuda") == "processor"


def _embeddings(result) -> np.ndarray:
    path = Path(result["embeddings_cache"]) / "embeddings.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("embeddings")


@pytest.mark.parametrize("family", ["vit", "clip", "dinov2", "convnext"])
def test_device_path_meets_the_bar_on_the_demo_sample(family, models, demo, tmp_path):
    runs = {
        mode: evaluate_model(
            str(models[family]),
            data=str(demo),
            categories=str(demo / CATEGORIES_FILE),
            output_dir=tmp_path,
            progress=False,
            workers=0,
            batch_size=16,
            preprocess=mode,
        )
        for mode in ("processor", "device")
    }
    ref, dev = runs["processor"], runs["device"]
    diff = np.abs(_embeddings(ref) - _embeddings(dev)).max()
    assert diff <= P.MAX_EMBEDDING_DIFF and diff == 0.0  # Pillow's pixels: identical on CPU
    assert abs(ref["metrics"]["map"] - dev["metrics"]["map"]) <= P.MAX_MAP_DIFF
    # never mixed: another cache entry and another run folder
    assert ref["embeddings_cache"] != dev["embeddings_cache"]
    assert ref["run_dir"] != dev["run_dir"]
    assert ref["preprocess"] == {"mode": "processor", "chosen": "flag"}
    check = dev["preprocess"]["check_first_batch"]
    assert dev["preprocess"]["mode"] == "device" and check["images"] == 16
    assert check["max_abs_diff"] == 0.0 and check["bar"] == P.MAX_EMBEDDING_DIFF
    saved = json.loads((Path(dev["run_dir"]) / "results.json").read_text())
    assert saved["preprocess"]["mode"] == "device"


def test_device_on_an_unsupported_processor_is_one_error_line(models, demo, tmp_path, capsys):
    code = main(
        ["evaluate", "--model", str(models["siglip2"]), "--data", str(demo)]
        + ["--preprocess", "device", "--output-dir", str(tmp_path), "--no-progress"]
    )
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == 2 and "Traceback" not in err and len(errors) == 1
    assert errors[0].startswith("error: --preprocess device cannot replicate Siglip2")


@pytest.mark.parametrize(
    "cores, device, processes, expected",
    [
        (16, "cuda", 1, (15, 256)),
        (64, "cuda:0", 1, (16, 256)),
        (16, "cuda:1", 4, (3, 256)),
        (1, "cuda", 1, (0, 256)),
        (2, "cpu", 1, (1, 32)),
        (32, "cpu", 1, (8, 32)),
        (1, "cpu", 1, (0, 32)),
    ],
)
def test_loader_defaults_follow_the_machine(cores, device, processes, expected):
    assert default_loader_settings(cores, device, processes) == expected


def test_flags_override_the_machine_defaults(models, demo, tmp_path):
    common = dict(data=str(demo), progress=False, categories=str(demo / CATEGORIES_FILE))
    chosen = evaluate_model("baseline:color-hist", output_dir=tmp_path / "a", **common)
    from gpr1200_hf.extract import cores

    workers, batch = default_loader_settings(cores(), "cpu")
    assert (chosen["timings"]["workers"], chosen["timings"]["batch_size"]) == (workers, batch)
    assert chosen["timings"]["auto"] == ["batch_size", "workers"]
    given = evaluate_model(
        "baseline:color-hist", output_dir=tmp_path / "b", workers=0, batch_size=5, **common
    )
    assert (given["timings"]["workers"], given["timings"]["batch_size"]) == (0, 5)
    assert given["timings"]["auto"] == []
    assert given["metrics"] == chosen["metrics"]


def test_a_failed_background_chunk_write_is_raised(tmp_path):
    writer = _ChunkWriter()
    good = tmp_path / "chunk.safetensors"
    writer.submit(good, np.ones((2, 3), np.float32), {"key": "k"})
    writer.submit(tmp_path / "missing" / "chunk.safetensors", np.ones((2, 3), np.float32), {})
    with pytest.raises((OSError, SafetensorError)):
        writer.close()
    assert good.is_file() and not list(tmp_path.glob("*.tmp*"))


def test_device_checks_script_smoke_records_every_figure(repo_root, tmp_path):
    """The device script's machinery on the CPU (its quick steps; the whole --cpu-smoke run
    takes about 45 s on a 2-core VM): figures written as they come, no step failing, steps
    needing timm or CUDA saying why they are skipped."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "benchmarks/device_checks.py", "--cpu-smoke", "--out", str(out)]
        + ["--only", "b-speed", "b-million", "c-timm"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(repo_root)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "figures.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["name"] == "error"], rows
    steps = {r["step"] for r in rows}
    assert {"env", "b-speed", "b-million", "c-timm"} <= steps
    speed = next(r for r in rows if r["name"].startswith("score(device)"))
    assert speed["ratio"] > 0 and speed["unit"] == "s"
    assert (out / "figures.md").read_text().count("\n") == len(rows)
    try:
        import timm  # noqa: F401
    except ImportError:
        assert any(r["step"] == "c-timm" and r["name"] == "skipped" for r in rows)
