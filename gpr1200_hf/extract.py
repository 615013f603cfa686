"""Embeddings of a GPR1200 dataset: batched on the device, cached, resumable, distributed.

A torch DataLoader decodes and preprocesses images in worker processes while the model runs.
Embeddings are written in chunks (atomically) under ``cache_dir/<key>/``; the key covers the
model, its revision, pooling, dtype and the dataset fingerprint, so runs never mix keys. An
interrupted run resumes from the chunks already written. Under ``accelerate launch`` or
``torch.distributed.run`` each process embeds its share of the chunks and process 0 gathers
them in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import Embedder

CHUNK_ROWS = 1024
FINAL = "embeddings.safetensors"


@dataclass
class Extraction:
    embeddings: np.ndarray | None  # None on processes other than the main one
    seconds: float
    images_per_s: float | None
    computed_rows: int
    cached: bool
    key: str


def cache_key(embedder: Embedder, fingerprint: str, n_rows: int) -> str:
    fields = {
        "model": embedder.name,
        "revision": embedder.revision,
        "pooling": embedder.pooling,
        "dtype": embedder.dtype,
        "dataset": fingerprint,
        "rows": n_rows,
        "format": 1,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def _metadata(key: str, **extra) -> dict[str, str]:
    return {"key": key, **{k: json.dumps(v) for k, v in extra.items()}}


def _write_atomic(path: Path, array: np.ndarray, metadata: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({"embeddings": np.ascontiguousarray(array)}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _read(path: Path, key: str) -> tuple[np.ndarray, dict] | None:
    """The array and metadata of a cache file, or None if it is not of this key or unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            return f.get_tensor("embeddings"), meta
    except (SafetensorError, OSError, ValueError):
        return None


_CHUNK = re.compile(r"chunk-(\d{8})-(\d{8})\.safetensors$")


def _done_chunks(folder: Path, key: str) -> dict[int, np.ndarray]:
    done = {}
    for p in folder.glob("chunk-*.safetensors"):
        m = _CHUNK.match(p.name)
        got = _read(p, key) if m else None
        if got is not None and got[0].shape[0] == int(m.group(2)) - int(m.group(1)):
            done[int(m.group(1))] = got[0]
    return done


def distributed_state():
    """accelerate's PartialState when launched with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import atexit

    import torch
    from accelerate import PartialState

    # Without cpu=True a GPU-less process would silently see a world of one.
    state = PartialState(cpu=not torch.cuda.is_available())
    atexit.register(_close_process_group)
    return state


def _close_process_group() -> None:
    """Leave together and tear the process group down before interpreter exit: a process that
    exits while its peers still hold the group can abort in a gloo thread ("terminate called
    without an active exception"). If a peer crashed, the launcher stops the others."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def extract(
    dataset,
    embedder: Embedder,
    cache_dir: str | Path,
    *,
    batch_size: int = 32,
    workers: int = 2,
    chunk_rows: int = CHUNK_ROWS,
    max_chunks: int | None = None,
    state=None,
    progress: bool = True,
) -> Extraction:
    """Embed every image of ``dataset`` (column ``image``, canonical order), using the cache.

    ``max_chunks`` stops after writing that many new chunks (a time-boxed run; rerun to
    resume); the result then has ``embeddings=None``.
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    n = len(dataset)
    fingerprint = getattr(dataset, "_fingerprint", None) or str(n)
    key = cache_key(embedder, fingerprint, n)
    folder = Path(cache_dir) / key
    main = state is None or state.is_main_process
    final = folder / FINAL
    cached = _read(final, key) if final.exists() else None
    if cached is not None:
        return Extraction(cached[0] if main else None, 0.0, None, 0, True, key)
    folder.mkdir(parents=True, exist_ok=True)
    if state is not None:  # all processes must see the same finished chunks
        state.wait_for_everyone()
    done = _done_chunks(folder, key)
    if state is not None:
        state.wait_for_everyone()
    if main:
        (folder / "run.json").write_text(
            json.dumps(
                {
                    "model": embedder.name,
                    "revision": embedder.revision,
                    "pooling": embedder.pooling,
                    "dtype": embedder.dtype,
                    "dataset": fingerprint,
                    "rows": n,
                },
                indent=2,
            )
        )
    starts = list(range(0, n, chunk_rows))
    pending = [s for s in starts if s not in done]
    if state is not None:  # each process takes every world_size-th pending chunk
        pending = pending[state.process_index :: state.num_processes]
    if max_chunks is not None:
        pending = pending[:max_chunks]
    rows = [i for s in pending for i in range(s, min(s + chunk_rows, n))]

    images = dataset.select_columns(["image"])
    loader = DataLoader(
        Subset(_Images(images), rows),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=lambda ims: embedder.preprocess([_rgb(im) for im in ims]),
        persistent_workers=False,
    )
    # On the CPU, leave the cores that the workers use to them: idle torch threads spin.
    threads = torch.get_num_threads()
    if workers and str(embedder.device).startswith("cpu"):
        torch.set_num_threads(max(1, min(threads, _cores() - workers)))
    t0 = time.perf_counter()
    buffer, chunk_iter = [], iter(pending)
    current = next(chunk_iter, None)
    bar = tqdm(total=len(rows), unit="img", disable=not (progress and main), desc="embedding")
    with torch.inference_mode():
        for batch in loader:
            out = embedder.embed(batch)
            buffer.append(out)
            bar.update(len(out))
            have = sum(len(b) for b in buffer)
            while current is not None and have >= min(chunk_rows, n - current):
                size = min(chunk_rows, n - current)
                stacked = np.concatenate(buffer)
                chunk, rest = stacked[:size], stacked[size:]
                path = folder / f"chunk-{current:08d}-{current + size:08d}.safetensors"
                _write_atomic(path, chunk, _metadata(key, start=current, stop=current + size))
                done[current] = chunk
                buffer = [rest] if len(rest) else []
                have -= size
                current = next(chunk_iter, None)
    bar.close()
    seconds = time.perf_counter() - t0
    torch.set_num_threads(threads)
    rate = len(rows) / seconds if rows and seconds > 0 else None
    if state is not None:  # gather every process's chunks (no shared filesystem needed)
        from accelerate.utils import gather_object

        mine = [(s, done[s]) for s in pending]
        for s, chunk in gather_object(mine):
            done[s] = chunk
        total = sum(gather_object([len(rows)]))
        rate = total / seconds if seconds > 0 and total else rate
    complete = all(s in done for s in starts)
    if not main or not complete:
        return Extraction(None, seconds, rate, len(rows), False, key)
    embeddings = np.concatenate([done[s] for s in starts])
    _write_atomic(
        final,
        embeddings,
        _metadata(
            key,
            model=embedder.name,
            revision=embedder.revision,
            pooling=embedder.pooling,
            dtype=embedder.dtype,
            dataset=fingerprint,
        )
        | {
            "file_names": json.dumps(list(dataset["file_name"]))
            if "file_name" in dataset.column_names
            else "null"
        },
    )
    for p in folder.glob("chunk-*.safetensors"):
        p.unlink()
    return Extraction(embeddings, seconds, rate, len(rows), False, key)


def _rgb(image):
    """RGB as the official pipeline converts (grayscale, CMYK, palette...); no copy if RGB."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class _Images:
    """Map-style view of a dataset's decoded images (for the DataLoader workers)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[int(i)]["image"]

    def __getitems__(self, indices: list[int]) -> list:
        """A whole batch in one Arrow read (the DataLoader calls this when it exists)."""
        return list(self.dataset[[int(i) for i in indices]]["image"])
