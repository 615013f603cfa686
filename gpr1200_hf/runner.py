"""``gpr1200 evaluate``: data -> embeddings -> scores -> report (JSON, APs, chart, table)."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, protocol
from .errors import DataError, InputError

RESULTS = "results.json"
PER_QUERY = "per_query.npz"
CHART = "chart.png"
MODEL_INDEX = "model_index.yaml"
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


def _looks_like_hub_id(text: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", text)) and not Path(text).exists()


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
    else:
        raise DataError(f"--data {data}: no such file or folder")
    missing = {"image", "category_id"} - set(ds.column_names)
    if missing:
        raise DataError(f"{desc} lacks the columns {sorted(missing)}; is it GPR1200?")
    return Data(ds, desc, len(ds) == protocol.NUM_IMAGES, str(data), categories)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "model"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"gpr1200-hf": __version__}
    for name in ("numpy", "torch", "transformers", "datasets", "accelerate", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def model_index(model: str, dataset_id: str, result: dict) -> list[dict]:
    """The Hub model-card ``model-index`` entry for this result (mAP in percent)."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    names = {"map": "GPR1200 mAP"} | {
        f"map_{s.key}": f"GPR1200 mAP ({s.display_name})" for s in protocol.SUBSETS
    }
    evals = [
        EvalResult(
            task_type="image-retrieval",
            task_name="Image Retrieval",
            dataset_type=dataset_id,
            dataset_name="GPR1200",
            dataset_split="test",
            metric_type="map",
            metric_name=names[k],
            metric_value=round(100 * v, 2),
            source_name="gpr1200-hf",
            source_url="https://arxiv.org/abs/2111.13122",
        )
        for k, v in result.items()
        if k in names
    ]
    return eval_results_to_model_index(model, evals)


def evaluate_model(
    model: str,
    *,
    revision: str | None = None,
    data: str | None = None,
    categories: str | None = None,
    pooling: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str = "fp32",
    workers: int = 2,
    output_dir: str | Path = "gpr1200-runs",
    demo: bool = False,
    trust_remote_code: bool = False,
    metric: str = "cosine",
    ties: str = "expected",
    include_self: bool = True,
    chunk_rows: int | None = None,
    max_chunks: int | None = None,
    progress: bool = True,
    dataset_id: str = "gpr1200",
) -> dict | None:
    """Embed GPR1200 with ``model``, score it and write the run folder; returns results.json's
    content (``None`` on processes other than the main one, or for a time-boxed partial run)."""
    from .extract import CHUNK_ROWS, distributed_state, extract
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
    )
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
    run_dir = out / _slug(f"{model}-{embedder.pooling}-{dtype}")
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
        },
        "embeddings_cache": str(out / "embeddings" / ext.key),
        "versions": library_versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_run(run_dir, results, ranking, labels, source.dataset, dataset_id)
    return results | {"run_dir": str(run_dir)}


def write_run(run_dir: Path, results, ranking, labels, dataset, dataset_id: str) -> None:
    """results.json, per-query APs, the chart, the model-index YAML and the table."""
    import yaml

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
    save_subset_chart(run_dir / CHART, [(results["model"], results["metrics"])], paper)
    (run_dir / MODEL_INDEX).write_text(
        yaml.safe_dump(
            {"model-index": model_index(results["model"], dataset_id, results["metrics"])},
            sort_keys=False,
        )
    )
    table = paper_layout_table([(results["model"], results["metrics"])], paper_results())
    (run_dir / TABLE).write_text(table + "\n")


def load_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a results.json ({e})") from None
    if "metrics" not in data or "map" not in data.get("metrics", {}):
        raise InputError(f"{path}: not a gpr1200 results.json (no metrics.map)")
    return data
