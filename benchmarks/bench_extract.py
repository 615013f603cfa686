"""Embedding throughput: the batched DataLoader pipeline vs a naive one-image-per-forward loop,
and end-to-end vs the model alone.

Run by hand: ``PYTHONPATH=. python benchmarks/bench_extract.py`` (CPU: also the naive loop and
``pipeline()``), or ``--device cuda --hidden 768 --layers 12 --dtype bf16`` (ViT-B/16 with random
weights) on a GPU. Prints end-to-end images/s (decode, preprocess, model, cache writes), the
model alone (a batch already on the device) and their ratio. ``--workers``/``--batch-size``
left out: the machine's defaults (``extract.default_loader_settings``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def tiny_vit(folder: Path, side: int, hidden: int = 32, layers: int = 1) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=side,
        patch_size=16,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    return folder


def naive(folder: Path, dataset) -> tuple[float, np.ndarray]:
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    out = []
    t = time.perf_counter()
    with torch.inference_mode():
        for row in dataset:
            inputs = processor(images=[row["image"].convert("RGB")], return_tensors="pt")
            cls = model(**inputs).last_hidden_state[:, 0]
            out.append(torch.nn.functional.normalize(cls, dim=-1)[0].numpy())
    return time.perf_counter() - t, np.stack(out)


def hf_pipeline(folder: Path, dataset) -> float:
    from transformers import pipeline

    extractor = pipeline("image-feature-extraction", model=str(folder), device="cpu")
    t = time.perf_counter()
    for row in dataset:
        extractor(row["image"].convert("RGB"))
    return time.perf_counter() - t


def model_alone(folder: Path, device: str, dtype: str, batch_size: int, seconds: float = 3.0):
    """images/s of the model alone: a preprocessed batch already on the device, repeated."""
    from gpr1200_hf.models import load_embedder

    embedder = load_embedder(str(folder), device=device, dtype=dtype, preprocess="processor")
    side = embedder.image_size
    h, w = (side["height"], side["width"]) if isinstance(side, dict) else (side, side)
    pixels = torch.randn(batch_size, 3, h, w, device=device)
    batch = {"pixel_values": pixels}

    def once():
        out = embedder.embed(batch)
        return out.result() if hasattr(out, "result") else out

    once()  # warm-up (kernels, allocator)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        once()
        n += batch_size
    return n / (time.perf_counter() - t0)


def end_to_end(ds, folder: Path, cache: Path, **kw) -> tuple[float, object]:
    """images/s of ``extract`` over ``ds`` (nothing cached), and the Extraction."""
    from gpr1200_hf.extract import cores, default_loader_settings, extract
    from gpr1200_hf.models import load_embedder

    device = kw.pop("device")
    embedder = load_embedder(
        str(folder), device=device, dtype=kw.pop("dtype"), preprocess=kw.pop("preprocess")
    )
    workers, batch = default_loader_settings(cores(), device)
    kw["workers"] = workers if kw.get("workers") is None else kw["workers"]
    kw["batch_size"] = batch if kw.get("batch_size") is None else kw["batch_size"]
    t0 = time.perf_counter()
    ext = extract(ds, embedder, cache, progress=False, **kw)
    return len(ds) / (time.perf_counter() - t0), ext


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-subset", type=int, default=8, help="demo categories per subset")
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--batch-size", type=int, help="default: the machine's")
    ap.add_argument("--workers", type=int, help="default: the machine's")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--preprocess", choices=["processor", "device"], help="default: auto")
    ap.add_argument("--hidden", type=int, default=32, help="ViT width (32: tiny, 192: small)")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best of each")
    args = ap.parse_args()
    from gpr1200_hf.dataset import load_gpr1200
    from gpr1200_hf.demo import CATEGORIES_FILE, make_demo
    from gpr1200_hf.extract import extract
    from gpr1200_hf.models import load_embedder

    work = Path(tempfile.mkdtemp(prefix="gpr1200-extract-"))
    make_demo(work / "demo", per_subset=args.per_subset, size=(300, 500))
    ds = load_gpr1200(
        work / "demo",
        categories=work / "demo" / CATEGORIES_FILE,
        cache_dir=work / "cache",
        strict=False,
    )
    model = tiny_vit(work / "vit", args.side, args.hidden, args.layers)
    rate, ext = end_to_end(
        ds,
        model,
        work / "e2e",
        device=args.device,
        dtype=args.dtype,
        preprocess=args.preprocess,
        workers=args.workers,
        batch_size=args.batch_size,
    )
    alone = model_alone(model, args.device, args.dtype, args.batch_size or 256)
    print(
        f"{len(ds)} images, random ViT width {args.hidden} x {args.layers} layers, {args.dtype} "
        f"on {args.device}: end-to-end {rate:8.1f} images/s, model alone {alone:8.1f} images/s, "
        f"ratio {rate / alone:5.1%}"
    )
    if args.device != "cpu":
        return
    args.workers = 2 if args.workers is None else args.workers
    args.batch_size = 32 if args.batch_size is None else args.batch_size
    embedder = load_embedder(str(model))

    def ours(round_: int) -> float:
        t0 = time.perf_counter()
        ext = extract(
            ds,
            embedder,
            work / f"emb{round_}",
            batch_size=args.batch_size,
            workers=args.workers,
            progress=False,
        )
        elapsed = time.perf_counter() - t0
        assert np.allclose(ext.embeddings, ref, atol=1e-4)
        return elapsed

    # Interleaved rounds, best of each: the machine is shared and noisy.
    t_naive, t_pipe, t_ours = [], [], []
    for r in range(args.rounds):
        t, ref = naive(model, ds)
        t_naive.append(t)
        t_ours.append(ours(r))
        t_pipe.append(hf_pipeline(model, ds))
    t_naive, t_pipe, t_ours = min(t_naive), min(t_pipe), min(t_ours)
    n = len(ds)
    print(
        f"{n} images, random ViT width {args.hidden} x {args.layers} layers ({args.side} px), "
        f"CPU threads {torch.get_num_threads()}"
    )
    print(f"  pipeline('image-feature-extraction') {n / t_pipe:7.1f} images/s")
    print(f"  naive loop (1 image / forward)   {n / t_naive:7.1f} images/s")
    print(
        f"  gpr1200 pipeline (batch {args.batch_size}, {args.workers} workers) "
        f"{n / t_ours:7.1f} images/s   {t_naive / t_ours:4.1f} x the naive loop, "
        f"{t_pipe / t_ours:4.1f} x the pipeline"
    )


if __name__ == "__main__":
    main()
