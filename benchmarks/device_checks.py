"""All device checks of issue 12 in one run: about 5 minutes on one H100/H200 with 16 cores.

(a) extraction: ViT-B/16 (random weights from its config, saved and loaded from a folder) in
    bf16 on 3000 generated 500x375 JPEGs: end-to-end vs the model alone, defaults vs tuned,
    processor vs device preprocessing (images/s, ratios, embedding and mAP differences); the
    tiny model families of tests/tiny_models.py, device vs processor path on the demo sample.
(b) scoring: ``score(device="cuda")`` vs numpy on integer and +-1 codes (every metric and tie
    mode, exact) and floats (1e-6); speed at 12000 x 768 vs a vectorised full sort of the whole
    similarity matrix (the official algorithm, written below); 1,000,000 x 128 (100,000
    categories x 10) full mAP: seconds and peak GPU memory.
(c) timm: TimmWrapperModel built from timm architectures with random weights, saved, loaded by
    ``gpr1200 evaluate``; its pooling vs timm's forward_features + forward_head(pre_logits=True).

Every figure is appended to OUT/figures.jsonl and OUT/figures.md the moment it is measured
(a timeout still returns the ones before it); each step is time-boxed and a failing step
prints one error line and the run goes on.

The device machine has torch, transformers, accelerate, timm, torchvision, pyarrow and
safetensors but not datasets or evaluate: carry wheels (see /work/.library/device/README.md).
Here, in the repo root, once:

    echo /.whl/ >> .git/info/exclude
    for p in datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6; do
      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl "$p"; done

(the device already has fsspec, xxhash, pandas, pyarrow, huggingface_hub). Then run there,
carrying ``.whl``:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. || exit;
    PYTHONUNBUFFERED=1 python3 benchmarks/device_checks.py --out $OUT

``--cpu-smoke`` runs every step on the CPU at tiny sizes (steps that need timm or CUDA print
why they are skipped); the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the checkout's gpr1200_hf, tests, benchmarks


class Figures:
    """Append-only record of the figures, flushed as they come."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out / "figures.jsonl", "a", buffering=1)  # noqa: SIM115
        self.md = open(out / "figures.md", "a", buffering=1)  # noqa: SIM115

    def add(self, step: str, name: str, value, unit: str = "", ratio=None, note: str = ""):
        row = {"step": step, "name": name, "value": value, "unit": unit}
        if ratio is not None:
            row["ratio"] = ratio
        if note:
            row["note"] = note
        self.jsonl.write(json.dumps(row) + "\n")
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        extra = f" | ratio {ratio:.3g}" if ratio is not None else ""
        line = f"| {step} | {name} | {shown} {unit}{extra} | {note} |"
        self.md.write(line + "\n")
        print(line, flush=True)


class StepTimeout(Exception):
    pass


@contextmanager
def time_box(seconds: float):
    def handler(signum, frame):
        raise StepTimeout(f"over its {seconds:.0f} s time box")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_step(figs: Figures, name: str, seconds: float, fn, *args) -> None:
    t0 = time.perf_counter()
    print(f"== {name} (time box {seconds:.0f} s)", flush=True)
    try:
        with time_box(seconds):
            fn(figs, *args)
    except Exception as e:  # one line, then the next step
        figs.add(name, "error", f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
        traceback.print_exc(limit=3)
    print(f"== {name}: {time.perf_counter() - t0:.1f} s", flush=True)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- (a) extraction


def make_images(root: Path, per_subset: int, size: tuple[int, int], workers: int) -> Path:
    """GPR1200-layout sample of ``per_subset`` x 6 categories x 10 JPEGs of ``size`` (w, h)."""
    from gpr1200_hf.demo import make_demo

    make_demo(root, per_subset=per_subset, size=(max(size), max(size)), workers=workers)
    from PIL import Image

    for path in sorted((root / "images").iterdir()):  # squares -> w x h, as photos are
        with Image.open(path) as im:
            im.convert("RGB").resize(size, Image.BILINEAR).save(path, quality=90)
    return root


def step_families(figs: Figures, cfg: dict) -> None:
    """Device vs processor path of each tiny family on the demo sample, on the device."""
    from safetensors import safe_open

    from gpr1200_hf.demo import CATEGORIES_FILE, make_demo
    from gpr1200_hf.errors import InputError
    from gpr1200_hf.runner import evaluate_model
    from tests.tiny_models import FAMILIES, save_tiny

    work = cfg["work"] / "families"
    demo = work / "demo"
    make_demo(demo, per_subset=cfg["demo_per_subset"])

    def emb(res):
        path = Path(res["embeddings_cache"]) / "embeddings.safetensors"
        with safe_open(str(path), framework="numpy") as f:
            return f.get_tensor("embeddings")

    for family in cfg["families"] or FAMILIES:
        folder = save_tiny(family, work / family)
        runs = {}
        try:
            for mode in ("processor", "device"):
                runs[mode] = evaluate_model(
                    str(folder),
                    data=str(demo),
                    categories=str(demo / CATEGORIES_FILE),
                    output_dir=work / "runs",
                    device=cfg["device"],
                    progress=False,
                    preprocess=mode,
                )
        except InputError as e:
            figs.add("a-families", family, "refused", note=str(e)[:120])
            continue
        diff = float(np.abs(emb(runs["processor"]) - emb(runs["device"])).max())
        dmap = abs(runs["processor"]["metrics"]["map"] - runs["device"]["metrics"]["map"])
        ok = diff <= 1e-2 and dmap <= 1e-3
        figs.add("a-families", f"{family} max|emb diff|", diff, ratio=diff / 1e-2)
        figs.add(
            "a-families",
            f"{family} |mAP diff|",
            dmap,
            ratio=dmap / 1e-3,
            note="meets the bar" if ok else "FAILS the bar",
        )


def step_extraction(figs: Figures, cfg: dict) -> None:
    import torch
    from bench_extract import model_alone, tiny_vit
    from safetensors import safe_open

    from gpr1200_hf.demo import CATEGORIES_FILE
    from gpr1200_hf.extract import cores, default_loader_settings
    from gpr1200_hf.runner import evaluate_model

    work, device, dtype = cfg["work"] / "vit", cfg["device"], cfg["dtype"]
    t0 = time.perf_counter()
    data = make_images(work / "data", cfg["per_subset"], (500, 375), min(16, cores()))
    n = len(list((data / "images").iterdir()))
    figs.add(
        "a-vit", "images", n, note=f"500x375 JPEGs, generated in {time.perf_counter() - t0:.0f} s"
    )
    model = tiny_vit(work / "model", 224, cfg["hidden"], cfg["layers"])
    alone = model_alone(model, device, dtype, 256 if device != "cpu" else 32, cfg["alone_s"])
    figs.add("a-vit", f"model alone ({dtype}, batch on the device)", alone, "images/s")
    auto_w, auto_b = default_loader_settings(cores(), device)
    figs.add(
        "a-vit", "machine defaults (workers, batch)", f"{auto_w}, {auto_b}", note=f"{cores()} cores"
    )

    def run(label: str, **kw):
        out = work / "runs"
        shutil.rmtree(out / "embeddings", ignore_errors=True)  # nothing from the cache
        res = evaluate_model(
            str(model),
            data=str(data),
            categories=str(data / CATEGORIES_FILE),
            output_dir=out,
            device=device,
            dtype=dtype,
            progress=False,
            **kw,
        )
        rate = res["timings"]["images_per_s"]
        t = res["timings"]
        figs.add(
            "a-vit",
            f"end-to-end {label}",
            rate,
            "images/s",
            ratio=rate / alone,
            note=f"ratio to model alone; workers {t['workers']}, batch {t['batch_size']}, "
            f"preprocess {res['preprocess']['mode']}",
        )
        path = Path(res["embeddings_cache"]) / "embeddings.safetensors"
        with safe_open(str(path), framework="numpy") as f:
            return rate, f.get_tensor("embeddings"), res["metrics"]["map"]

    tuned_w = max(0, min(cores() - 2, 14))
    rates = {}
    rates["defaults"], _, _ = run("defaults (no flags)")
    rates["processor"], e_proc, m_proc = run(
        f"tuned processor ({tuned_w} workers, batch 256)",
        workers=tuned_w,
        batch_size=256,
        preprocess="processor",
    )
    rates["device"], e_dev, m_dev = run(
        f"tuned device ({tuned_w} workers, batch 256)",
        workers=tuned_w,
        batch_size=256,
        preprocess="device",
    )
    best = max(rates["processor"], rates["device"])
    figs.add("a-vit", "defaults / best tuned", rates["defaults"] / best, note="bar: >= 0.8")
    figs.add("a-vit", "best end-to-end / model alone", best / alone, note="bar: >= 0.5")
    diff = float(np.abs(e_proc - e_dev).max())
    figs.add("a-vit", f"device vs processor max|emb diff| ({dtype})", diff, ratio=diff / 1e-2)
    figs.add(
        "a-vit",
        "device vs processor |mAP diff|",
        abs(m_proc - m_dev),
        ratio=abs(m_proc - m_dev) / 1e-3,
    )
    del torch


# --------------------------------------------------------------------------- (b) scoring


def full_sort_map(emb, labels) -> float:
    """The official algorithm, vectorised: cosine similarity of all pairs, a full descending
    argsort of every row, precision at each relevant position, mean (query included)."""
    import torch

    x = torch.nn.functional.normalize(emb.float(), dim=1)
    sim = x @ x.T
    order = torch.argsort(sim, dim=1, descending=True)
    del sim
    rel = labels[order] == labels[:, None]
    del order
    hits = rel.cumsum(1, dtype=torch.float32)
    ranks = torch.arange(1, rel.shape[1] + 1, device=rel.device, dtype=torch.float32)
    ap = (hits / ranks * rel).sum(1) / rel.sum(1)
    return float(ap.double().mean())


def step_scoring_exact(figs: Figures, cfg: dict) -> None:
    import gpr1200_hf
    from gpr1200_hf.ranking import METRICS, TIES

    rng = np.random.default_rng(0)
    n, dim = cfg["score_n"], cfg["code_dim"]
    labels = np.repeat(np.arange(n // 10), 10)
    codes = {
        "integer": rng.integers(-3, 4, (n, dim)).astype(np.float32),
        "+-1": rng.choice(np.array([-1.0, 1.0], np.float32), (n, dim)),
    }
    for kind, emb in codes.items():
        emb[np.abs(emb).sum(1) == 0, 0] = 1  # no zero vector under cosine
        worst, mismatches = 0.0, 0
        for metric in METRICS:
            for ties in TIES:
                ref = gpr1200_hf.score(emb, labels, metric=metric, ties=ties)
                got = gpr1200_hf.score(emb, labels, metric=metric, ties=ties, device=cfg["device"])
                d = max(abs(ref[k] - got[k]) for k in ref)
                worst = max(worst, d)
                mismatches += d != 0
        figs.add(
            "b-exact",
            f"{kind} codes {n}x{dim}: combos differing",
            mismatches,
            note=f"of {len(METRICS) * len(TIES)} (metric, ties); max diff {worst:.3g}",
        )
    emb = rng.normal(size=(n, cfg["float_dim"])).astype(np.float32)
    for metric in METRICS:
        ref = gpr1200_hf.score(emb, labels, metric=metric)
        got = gpr1200_hf.score(emb, labels, metric=metric, device=cfg["device"])
        d = max(abs(ref[k] - got[k]) for k in ref)
        figs.add(
            "b-exact",
            f"floats {n}x{cfg['float_dim']} {metric}: max diff",
            d,
            ratio=d / 1e-6,
            note="bar: <= 1e-6",
        )


def step_scoring_speed(figs: Figures, cfg: dict) -> None:
    import torch

    import gpr1200_hf

    device, n, dim = cfg["device"], cfg["score_n"], cfg["float_dim"]
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    labels = np.repeat(np.arange(n // 10), 10)
    t_emb, t_lab = torch.from_numpy(emb).to(device), torch.from_numpy(labels).to(device)

    def best_of(fn, k=3):
        out, times = None, []
        for _ in range(k):
            sync(device)
            t0 = time.perf_counter()
            out = fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        return min(times), out

    full_sort_map(t_emb, t_lab)  # warm-up
    gpr1200_hf.score(emb, labels, device=device)
    t_sort, m_sort = best_of(lambda: full_sort_map(t_emb, t_lab))
    t_ours, res = best_of(lambda: gpr1200_hf.score(emb, labels, device=device))
    figs.add("b-speed", f"full-sort baseline {n}x{dim}", t_sort, "s")
    figs.add(
        "b-speed",
        f"score(device) {n}x{dim}",
        t_ours,
        "s",
        ratio=t_sort / t_ours,
        note="ratio: baseline / ours (> 1: ours faster)",
    )
    figs.add("b-speed", "mAP ours - full sort", res["map"] - m_sort)


def step_million(figs: Figures, cfg: dict) -> None:
    import torch

    import gpr1200_hf

    device, n, dim = cfg["device"], cfg["million_n"], 128
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    labels = np.repeat(np.arange(n // 10), 10)
    emb += 0.5 * rng.normal(size=(n // 10, dim)).astype(np.float32).repeat(10, axis=0)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = gpr1200_hf.score(emb, labels, device=device)
    seconds = time.perf_counter() - t0
    figs.add(
        "b-million",
        f"{n} x {dim} ({n // 10} categories x 10) full mAP",
        seconds,
        "s",
        ratio=seconds / 60,
        note=f"map {res['map']:.6f}; bar: <= 60 s",
    )
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        figs.add("b-million", "peak GPU memory", peak, "GiB")
    else:
        figs.add("b-million", "peak GPU memory", "skipped", note="no CUDA device")


# --------------------------------------------------------------------------- (c) timm


def step_timm(figs: Figures, cfg: dict) -> None:
    try:
        import timm
    except ImportError:
        figs.add("c-timm", "skipped", "timm is not installed here", note="runs on the device")
        return
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, TimmWrapperConfig, TimmWrapperModel

    from gpr1200_hf.cli import main as cli_main
    from gpr1200_hf.demo import make_demo
    from gpr1200_hf.models import load_embedder

    work = cfg["work"] / "timm"
    demo = work / "demo"
    make_demo(demo, per_subset=1)
    images = [Image.open(p).convert("RGB") for p in sorted((demo / "images").iterdir())[:8]]
    figs.add("c-timm", "timm version", timm.__version__)
    for arch in cfg["timm_archs"]:
        folder = work / arch
        torch.manual_seed(0)
        reference = timm.create_model(arch, pretrained=False, num_classes=0).eval()
        config = TimmWrapperConfig(
            architecture=arch, pretrained_cfg=dict(reference.pretrained_cfg), num_labels=1000
        )
        TimmWrapperModel(config).save_pretrained(folder)
        processor = AutoImageProcessor.from_pretrained(folder)
        processor.save_pretrained(folder)  # writes into config.json, as timm Hub repos
        code = cli_main(
            [
                "evaluate",
                "--model",
                str(folder),
                "--data",
                str(demo),
                "--device",
                cfg["device"],
                "--output-dir",
                str(work / "runs"),
                "--no-progress",
            ]
        )
        figs.add("c-timm", f"{arch}: gpr1200 evaluate exit code", code, note="0 = scored")
        state = load_file(str(folder / "model.safetensors"))
        state = {k.removeprefix("timm_model."): v for k, v in state.items()}
        reference.load_state_dict(state)
        reference.to(cfg["device"])
        embedder = load_embedder(str(folder), device=cfg["device"], preprocess="processor")
        batch = embedder.preprocess(images)
        ours = embedder.embed(batch)
        ours = ours.result() if hasattr(ours, "result") else ours
        with torch.inference_mode():
            x = batch["pixel_values"].to(cfg["device"])
            feats = reference.forward_head(reference.forward_features(x), pre_logits=True)
            theirs = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
        diff = float(np.abs(ours - theirs).max())
        figs.add(
            "c-timm",
            f"{arch}: pooling vs timm forward_head(pre_logits) max|diff|",
            diff,
            note=f"{embedder.pooling} pooling, {len(images)} images, L2-normalised",
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "device-checks-out")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--only", nargs="*", help="steps to run (default: all)")
    args = ap.parse_args(argv)
    import torch

    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("error: no CUDA device here; use --cpu-smoke", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpr1200-device-"))
    cfg = {
        "device": device,
        "work": work,
        "dtype": "fp32" if smoke else "bf16",
        "per_subset": 1 if smoke else 50,  # x 6 subsets x 10 images: 3000
        "hidden": 32 if smoke else 768,  # ViT-B/16: 768 x 12 layers
        "layers": 1 if smoke else 12,
        "alone_s": 0.2 if smoke else 5.0,
        "demo_per_subset": 1 if smoke else 4,
        "families": ["vit"] if smoke else None,
        "score_n": 200 if smoke else 12000,
        "code_dim": 8 if smoke else 64,
        "float_dim": 16 if smoke else 768,
        "million_n": 1000 if smoke else 1_000_000,
        "timm_archs": ["vit_small_patch16_224", "resnet18"],
    }
    figs = Figures(Path(args.out))
    import transformers

    env = f"torch {torch.__version__}, transformers {transformers.__version__}, "
    env += torch.cuda.get_device_name() if device == "cuda" else "CPU"
    figs.add("env", "machine", env, note=f"{os.cpu_count()} CPUs")
    steps = [
        ("b-exact", 60, step_scoring_exact),
        ("b-speed", 40, step_scoring_speed),
        ("b-million", 90, step_million),
        ("a-families", 40, step_families),
        ("a-vit", 120, step_extraction),
        ("c-timm", 40, step_timm),
    ]
    for name, seconds, fn in steps:
        if args.only and name not in args.only:
            continue
        run_step(figs, name, seconds * (3 if smoke else 1), fn, cfg)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
