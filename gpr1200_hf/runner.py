"""``gpr1200 evaluate``: data -> embeddings -> scores -> report (JSON, APs, chart, table)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, protocol
from .errors import DataError, InputError

RESULTS = "results.json"
PER_QUERY = "per_query.npz"
CHART = "chart.png"
TABLE = "table.md"
DEMO_DIR = "demo-sample"
DEFAULT_PAPER_ROWS = ("ViT-L/16 (in21k+in1k)", "Swin-L (in21k)", "ResNet101 (in1k)")


@dataclass
class Data:
    dataset: object  # datasets.Dataset, canonical order, columns image/category_id/file_name
    description: str
    is_full: bool
    location: str  # what open_data() takes to open it again
    categories: str | None = None
    fingerprint: str | None = None  # content of the images (None: hash the loaded dataset)
    hub_id: str | None = None  # the Hub dataset id when the data came from the Hub
    revision: str | None = None  # its commit, when known


def _looks_like_hub_id(text: str) -> bool:
    from .hub_results import HUB_ID

    return bool(HUB_ID.fullmatch(text)) and not Path(text).exists()


def open_data(
    data: str | None,
    *,
    categories: str | None = None,
    cache_dir: str | Path | None = None,
    demo_dir: Path | None = None,
) -> Data:
    """The dataset behind ``--data``: official zip/folder (or a sample), an exported folder,
    or a Hub dataset id. ``demo_dir`` (with ``data=None``) generates and uses the demo sample."""
    import datasets

    from .dataset import load_exported, load_gpr1200

    hub_id = None
    if data is None and demo_dir is not None:
        from .demo import CATEGORIES_FILE, make_demo

        if not (demo_dir / "images").is_dir():
            make_demo(demo_dir)
        data, categories = str(demo_dir), str(demo_dir / CATEGORIES_FILE)
    if data is None:
        for guess in ("GPR1200.zip", "GPR1200", "images"):
            if Path(guess).exists():
                data = guess
                break
        else:
            raise InputError(
                "no GPR1200 data given or found here; pass --data GPR1200.zip (download it from "
                f"{protocol.DATA_URL}), an images/ folder, an exported folder or a Hub dataset "
                "id, or try --demo for a generated sample"
            )
    path = Path(data)
    fingerprint = None
    if path.exists():
        from .fingerprint import source_fingerprint

        # The datasets caches key local files by name, size and mtime: one cache per content,
        # so that files replaced with their mtimes restored are never read from a stale cache.
        fingerprint = source_fingerprint(path)
        if cache_dir is not None:
            cache_dir = Path(cache_dir) / fingerprint
    if path.is_dir() and (path / "data").is_dir() and (path / "README.md").is_file():
        ds = load_exported(path, cache_dir=cache_dir)
        desc = f"exported folder {path}"
    elif path.exists():
        if categories is None:
            near = [
                path.parent / "GPR1200_categoryNumber_to_text.json",
                path / "GPR1200_categoryNumber_to_text.json",
            ]
            categories = next((str(p) for p in near if p.is_file()), None)
        ds = load_gpr1200(path, categories=categories, cache_dir=cache_dir, strict=False)
        desc = str(path)
    elif _looks_like_hub_id(data):
        try:
            ds = datasets.load_dataset(data, split="test", cache_dir=cache_dir)
        except Exception as e:  # offline, gated, missing: say so plainly
            raise DataError(f"cannot load the Hub dataset {data!r}: {e}") from None
        desc = f"Hub dataset {data}"
        hub_id = data
    else:
        raise DataError(f"--data {data}: no such file or folder")
    missing = {"image", "category_id"} - set(ds.column_names)
    if missing:
        raise DataError(f"{desc} lacks the columns {sorted(missing)}; is it GPR1200?")
    return Data(
        ds,
        desc,
        _is_full(ds),
        str(data),
        categories,
        fingerprint,
        hub_id,
        _hub_revision(hub_id),
    )


def _is_full(ds) -> bool:
    """The whole benchmark: 12000 images, the 1200 categories x 10 in canonical order, and the
    official category texts (a generated sample of the same shape is not the benchmark)."""
    if len(ds) != protocol.NUM_IMAGES or "category_text" not in ds.column_names:
        return False
    labels = np.asarray(list(ds["category_id"]), dtype=np.int64)
    if not np.array_equal(labels, protocol.canonical_labels()):
        return False
    texts = list(
        ds.select(range(0, protocol.NUM_IMAGES, protocol.IMAGES_PER_CATEGORY))["category_text"]
    )
    return protocol.category_texts_digest(texts) == protocol.CATEGORY_TEXTS_SHA256


def _skipped(ds) -> list[str]:
    """Images a non-strict load skipped as unreadable (``'file: reason'``); never silent."""
    from .dataset import skipped_images

    return skipped_images(ds)


def _hub_revision(hub_id: str | None) -> str | None:
    """The commit of a Hub dataset, when the Hub answers (None offline)."""
    if hub_id is None:
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(hub_id).sha
    except Exception:  # offline or private: the revision is simply unknown
        return None


def _slug(text: str, limit: int = 60) -> str:
    """Visible, portable folder-name text: no separators, no leading dot."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-limit:].lstrip("._-") or "model"


def model_label(model: str) -> str:
    """Readable model part of a run folder name: a local folder by its own name (``./ckpt``
    -> ``ckpt``), a Hub id as ``org_name``."""
    path = Path(model).expanduser()
    if not model.startswith("baseline:") and path.is_dir():
        return _slug(path.resolve().name)
    return _slug(model)


def run_dir_name(config: dict) -> str:
    """``<model>-<pooling>-<dtype>-<hash>``: the hash covers the whole configuration (model,
    revision, pooling, dtype, preprocessing, data content, protocol), so different
    configurations never share a folder; the same configuration reruns into its own."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{model_label(config['model'])}-{_slug(config['pooling'])}-{config['dtype']}-{digest}"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"gpr1200-hf": __version__}
    for name in ("numpy", "torch", "transformers", "datasets", "accelerate", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def evaluate_model(
    model: str,
    *,
    revision: str | None = None,
    data: str | None = None,
    categories: str | None = None,
    pooling: str | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str = "fp32",
    workers: int | None = None,
    preprocess: str | None = None,
    output_dir: str | Path = "gpr1200-runs",
    demo: bool = False,
    trust_remote_code: bool = False,
    metric: str = "cosine",
    ties: str = "expected",
    include_self: bool = True,
    chunk_rows: int | None = None,
    max_chunks: int | None = None,
    progress: bool = True,
    hub_dataset: str | None = None,
) -> dict | None:
    """Embed GPR1200 with ``model``, score it and write the run folder; returns results.json's
    content (``None`` on processes other than the main one, or for a time-boxed partial run).
    ``batch_size``/``workers`` left None are chosen for the machine
    (``extract.default_loader_settings``)."""
    from .extract import CHUNK_ROWS, cores, default_loader_settings, distributed_state, extract
    from .models import load_embedder
    from .ranking import rank_metrics
    from .scoring import summarize

    out = Path(output_dir)
    state = distributed_state()
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if state is not None and device == "cuda":
            device = f"cuda:{state.local_process_index}"
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if state is not None else 1
    auto_workers, auto_batch = default_loader_settings(cores(), str(device), processes)
    chosen = {"batch_size": batch_size is None, "workers": workers is None}
    batch_size = auto_batch if batch_size is None else batch_size
    workers = auto_workers if workers is None else workers
    from contextlib import nullcontext

    with state.main_process_first() if state is not None else nullcontext():
        source = open_data(
            data,
            categories=categories,
            cache_dir=out / "hf-cache",
            demo_dir=out / DEMO_DIR if demo else None,
        )
    embedder = load_embedder(
        model,
        revision=revision,
        pooling=pooling,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        **({} if model.startswith("baseline:") else {"preprocess": preprocess}),
    )
    ext = extract(
        source.dataset,
        embedder,
        out / "embeddings",
        batch_size=batch_size,
        workers=workers,
        chunk_rows=chunk_rows or CHUNK_ROWS,
        max_chunks=max_chunks,
        state=state,
        progress=progress,
        fingerprint=source.fingerprint,
    )
    if not ext.complete:
        if state is None or state.is_main_process:
            print(
                f"{model}: partial run, {ext.chunks_done} of {ext.chunks_total} chunks embedded "
                f"(cached in {ext.folder}); no results written. Rerun the same command to "
                "resume (with or without --max-chunks; keep --chunk-rows)."
            )
        return None
    if ext.embeddings is None:
        return None
    labels = np.asarray(list(source.dataset["category_id"]), dtype=np.int64)
    ranking = rank_metrics(
        ext.embeddings,
        labels,
        metric=metric,
        ties=ties,
        include_self=include_self,
        device=device if str(device).startswith("cuda") else None,  # numpy is fast on CPU
    )
    scores = summarize(ranking, labels)
    config = {
        "model": model,
        "revision": embedder.revision,
        "pooling": embedder.pooling,
        "dtype": dtype,
        "preprocessing": embedder.preprocessing,
        "data": ext.fingerprint,
        "metric": metric,
        "ties": ties,
        "include_self": include_self,
    }
    run_dir = out / run_dir_name(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "model": model,
        "revision": embedder.revision,
        "pooling": embedder.pooling,
        "dtype": dtype,
        "image_size": embedder.image_size,
        "embedding_dim": int(ext.embeddings.shape[1]),
        "data": {
            "source": source.description,
            "num_images": len(labels),
            "num_categories": int(len(np.unique(labels))),
            "full_benchmark": source.is_full,
            "location": source.location,
            "categories": source.categories,
            "hub_dataset": hub_dataset or source.hub_id,
            "revision": source.revision,
            "skipped_images": _skipped(source.dataset),
        },
        "protocol": {"metric": metric, "ties": ties, "include_self": include_self},
        "metrics": scores,
        "timings": {
            "embedding_seconds": round(ext.seconds, 3),
            "images_per_s": None if ext.images_per_s is None else round(ext.images_per_s, 1),
            "from_cache": ext.cached,
            "computed_images": ext.computed_rows,
            "device": device,
            "batch_size": batch_size,
            "workers": workers,
            "auto": [name for name, auto in chosen.items() if auto],  # chosen for the machine
        },
        "preprocess": preprocess_record(embedder),
        "embeddings_cache": str(out / "embeddings" / ext.key),
        "fingerprints": {"data": ext.fingerprint, "preprocessing": embedder.preprocessing},
        "versions": library_versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    notes = write_run(run_dir, results, ranking, labels, source.dataset)
    return results | {"run_dir": str(run_dir), "notes": notes}


def preprocess_record(embedder) -> dict:
    """How the images were preprocessed: the model's own image processor (the reference) or
    the device path, with its check against the processor on the first batch."""
    from .preprocess import MAX_EMBEDDING_DIFF, MAX_MAP_DIFF

    record = {
        "mode": embedder.preprocess_mode,
        "chosen": "auto" if embedder.info.get("preprocess_auto", True) else "flag",
    }
    if embedder.preprocess_mode == "device":
        record["check_first_batch"] = embedder.info.get("device_check")  # None: from cache
        record["bar"] = {"max_abs_embedding_diff": MAX_EMBEDDING_DIFF, "map_diff": MAX_MAP_DIFF}
    return record


def write_run(run_dir: Path, results, ranking, labels, dataset) -> list[str]:
    """results.json, per-query APs, the chart, the table and, for a full-benchmark run with a
    Hub dataset id, the Hub's eval results and model-index; returns notes for the user."""
    from .hub_results import why_not_a_benchmark_result, write_hub_results
    from .plots import save_subset_chart
    from .report import paper_layout_table, paper_results

    (run_dir / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    names = np.asarray(
        dataset["file_name"]
        if "file_name" in dataset.column_names
        else [str(i) for i in range(len(labels))]
    )
    np.savez(
        run_dir / PER_QUERY,
        ap=ranking.ap,
        map_at_r=ranking.map_at_r,
        precision_at_1=ranking.precision_at_1,
        category_id=labels,
        file_names=names,
    )
    paper = [r for r in paper_results() if r.label in DEFAULT_PAPER_ROWS]
    sample = why_not_a_benchmark_result(results)
    title = None if sample is None else sample_title(results)
    run = [(results["model"], results["metrics"])]
    save_subset_chart(run_dir / CHART, run, paper, title=title)
    table = paper_layout_table(run, paper_results())
    if title:
        table = f"**{title}**\n\n{table}"
    (run_dir / TABLE).write_text(table + "\n")
    return write_hub_results(run_dir, results, results["data"].get("hub_dataset"))


def sample_title(results: dict) -> str:
    """The caption of a sample run's chart and table: it is not the benchmark."""
    data = results["data"]
    return (
        f"SAMPLE of {data['num_images']} images / {data['num_categories']} categories, "
        "not the GPR1200 benchmark: not comparable with the paper's rows"
    )
