"""Embeddings of a GPR1200 dataset: batched on the device, cached, resumable, distributed.

A torch DataLoader decodes and preprocesses images in worker processes while the model runs.
Embeddings are written in chunks (atomically) under ``cache_dir/<key>/``. The key covers the
model, its revision (a local folder: its content), pooling, dtype, preprocessing and a content
fingerprint of the images, so the cache can only return embeddings of exactly this setup.
Every file carries the SHA-256 of its array, verified on read; a chunk is used only for the
exact row range of the current layout. Anything that does not verify is recomputed, with a
one-line warning. An interrupted run resumes from the chunks already written. Under
``accelerate launch`` or ``torch.distributed.run`` each process embeds its share of the chunks
and process 0 gathers them in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .models import Embedder

CHUNK_ROWS = 1024
FINAL = "embeddings.safetensors"
FORMAT = 2  # bump when the meaning of cached arrays changes


@dataclass
class Extraction:
    embeddings: np.ndarray | None  # None on processes other than the main one, or if partial
    seconds: float
    images_per_s: float | None
    computed_rows: int
    cached: bool
    key: str
    chunks_done: int = 0
    chunks_total: int = 0
    folder: Path | None = None
    fingerprint: str = ""  # content of the images

    @property
    def complete(self) -> bool:
        return self.chunks_done == self.chunks_total


def key_fields(embedder: Embedder, fingerprint: str, n_rows: int) -> dict:
    """Everything that determines the embeddings (the chunk layout is checked per chunk)."""
    return {
        "model": embedder.name,
        "revision": embedder.revision,
        "pooling": embedder.pooling,
        "dtype": embedder.dtype,
        "preprocessing": embedder.preprocessing,
        "dataset": fingerprint,
        "rows": n_rows,
        "format": FORMAT,
    }


def cache_key(embedder: Embedder, fingerprint: str, n_rows: int) -> str:
    fields = key_fields(embedder, fingerprint, n_rows)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def _metadata(key: str, **extra) -> dict[str, str]:
    return {"key": key, **{k: json.dumps(v) for k, v in extra.items()}}


def _write_atomic(path: Path, array: np.ndarray, metadata: dict[str, str]) -> None:
    """Write ``array`` with its checksum in the metadata."""
    from safetensors.numpy import save_file

    array = np.ascontiguousarray(array)
    digest = array_digest(array)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({"embeddings": array}, str(tmp), metadata=metadata | {"sha256": digest})
    os.replace(tmp, path)


class CacheMismatch(Exception):
    """A cache file that must not be used (reason in the message)."""


def read_verified(path: Path, key: str, rows: int, **expect) -> tuple[np.ndarray, dict]:
    """The array and metadata of a cache file of ``key`` with ``rows`` float32 rows whose
    checksum verifies and whose metadata holds ``expect`` (JSON values); else CacheMismatch."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                raise CacheMismatch("it belongs to another cache key")
            array = f.get_tensor("embeddings")
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CacheMismatch(f"unreadable ({e})") from None
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != rows:
        raise CacheMismatch(f"holds {array.dtype} {array.shape}, expected {rows} float32 rows")
    for name, value in expect.items():
        if meta.get(name) != json.dumps(value):
            raise CacheMismatch(f"its {name} is {meta.get(name)}, expected {json.dumps(value)}")
    if meta.get("sha256") != array_digest(array):
        raise CacheMismatch("its numbers do not match its checksum (corrupted)")
    return array, meta


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _chunk_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"chunk-{start:08d}-{stop:08d}.safetensors"


def _done_chunks(folder: Path, key: str, layout: list[tuple[int, int]], warn) -> dict:
    """Verified chunks of exactly this layout, by start row. Chunks of another layout (an
    earlier --chunk-rows) are not read; a file that does not verify is reported and redone."""
    done = {}
    for start, stop in layout:
        path = _chunk_path(folder, start, stop)
        if not path.exists():
            continue
        try:
            done[start] = read_verified(path, key, stop - start, start=start, stop=stop)[0]
        except CacheMismatch as e:
            warn(f"cache chunk {path} is not reused: {e}; recomputing it")
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
    fingerprint: str | None = None,
) -> Extraction:
    """Embed every image of ``dataset`` (column ``image``, canonical order), using the cache.

    ``fingerprint`` identifies the images' content (``fingerprint.source_fingerprint`` of the
    source); by default the stored image bytes are hashed. ``max_chunks`` stops after writing
    that many new chunks (a time-boxed run; rerun to resume); the result then has
    ``embeddings=None`` and ``complete`` False. An image that cannot be decoded stops the run
    with a DataError naming its file.
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from .fingerprint import images_fingerprint

    n = len(dataset)
    if fingerprint is None:
        fingerprint = images_fingerprint(dataset)
    key = cache_key(embedder, fingerprint, n)
    folder = Path(cache_dir) / key
    main = state is None or state.is_main_process
    warn = _warn if main else (lambda message: None)
    names = list(dataset["file_name"]) if "file_name" in dataset.column_names else None
    starts = list(range(0, n, chunk_rows))
    layout = [(s, min(s + chunk_rows, n)) for s in starts]
    final = folder / FINAL
    if final.exists():
        try:
            array = read_verified(final, key, n, file_names=names)[0]
            return Extraction(
                array if main else None,
                0.0,
                None,
                0,
                True,
                key,
                len(starts),
                len(starts),
                folder,
                fingerprint,
            )
        except CacheMismatch as e:
            warn(f"cached embeddings {final} are not reused: {e}; recomputing them")
    folder.mkdir(parents=True, exist_ok=True)
    done = _done_chunks(folder, key, layout, warn)
    if state is not None:  # all processes must see the same finished chunks
        state.wait_for_everyone()
    if main:
        fields = key_fields(embedder, fingerprint, n) | {"chunk_rows": chunk_rows}
        (folder / "run.json").write_text(json.dumps(fields, indent=2))
    pending = [s for s in starts if s not in done]
    if state is not None:  # each process takes every world_size-th pending chunk
        pending = pending[state.process_index :: state.num_processes]
    if max_chunks is not None:
        pending = pending[:max_chunks]
    rows = [i for s in pending for i in range(s, min(s + chunk_rows, n))]

    on_cuda = str(embedder.device).startswith("cuda")
    loader = DataLoader(
        Subset(_Images(dataset), rows),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_Collate(embedder.preprocess),
        persistent_workers=False,
        pin_memory=on_cuda,  # page-locked batches: non-blocking copies to the GPU
    )
    # On the CPU, leave the cores that the workers use to them: idle torch threads spin.
    threads = torch.get_num_threads()
    if workers and str(embedder.device).startswith("cpu"):
        torch.set_num_threads(max(1, min(threads, _cores() - workers)))
    t0 = time.perf_counter()
    buffer, chunk_iter = [], iter(pending)
    current = next(chunk_iter, None)
    bar = tqdm(total=len(rows), unit="img", disable=not (progress and main), desc="embedding")
    writer = _ChunkWriter()

    def take(out: np.ndarray) -> None:
        """Collect a batch's embeddings; hand each completed chunk to the writer thread."""
        nonlocal buffer, current
        buffer.append(out)
        bar.update(len(out))
        have = sum(len(b) for b in buffer)
        while current is not None and have >= min(chunk_rows, n - current):
            size = min(chunk_rows, n - current)
            stacked = np.concatenate(buffer)
            chunk, rest = stacked[:size], stacked[size:]
            meta = _metadata(key, start=current, stop=current + size)
            writer.submit(_chunk_path(folder, current, current + size), chunk, meta)
            done[current] = chunk
            buffer = [rest] if len(rest) else []
            have -= size
            current = next(chunk_iter, None)

    try:
        with torch.inference_mode():
            lagging = None  # a batch whose embeddings are still coming from the device
            for batch in loader:
                if isinstance(batch, DecodeFailure):
                    raise DataError(batch.message())
                out = embedder.embed(batch)
                if lagging is not None:
                    take(lagging.result())
                    lagging = None
                if hasattr(out, "result"):
                    lagging = out
                else:
                    take(out)
            if lagging is not None:
                take(lagging.result())
    finally:
        bar.close()
        torch.set_num_threads(threads)
        # every chunk handed over is on disk; a write error is raised unless another is
        writer.close(quiet=sys.exc_info()[0] is not None)
    seconds = time.perf_counter() - t0
    rate = len(rows) / seconds if rows and seconds > 0 else None
    if state is not None:  # gather every process's chunks (no shared filesystem needed)
        from accelerate.utils import gather_object

        mine = [(s, done[s]) for s in pending]
        for s, chunk in gather_object(mine):
            done[s] = chunk
        total = sum(gather_object([len(rows)]))
        rate = total / seconds if seconds > 0 and total else rate
    n_done = sum(s in done for s in starts)
    result = Extraction(
        None, seconds, rate, len(rows), False, key, n_done, len(starts), folder, fingerprint
    )
    if not main or n_done < len(starts):
        return result
    result.embeddings = np.concatenate([done[s] for s in starts])
    _write_final(final, result.embeddings, key, embedder, fingerprint, names)
    for p in folder.glob("chunk-*.safetensors"):
        p.unlink()
    return result


def _write_final(final: Path, embeddings, key, embedder, fingerprint, names) -> None:
    """Write the assembled array and read it back: it must verify against the checksum of the
    chunks' concatenation before the chunks are deleted."""
    meta = _metadata(
        key,
        model=embedder.name,
        revision=embedder.revision,
        pooling=embedder.pooling,
        dtype=embedder.dtype,
        preprocessing=embedder.preprocessing,
        dataset=fingerprint,
        file_names=names,
    )
    _write_atomic(final, embeddings, meta)  # checksum of the in-memory concatenation
    try:
        read_verified(final, key, len(embeddings), file_names=names)
    except CacheMismatch as e:
        final.unlink(missing_ok=True)
        raise OSError(f"writing {final} failed: {e}; the chunks are kept, rerun") from None


class _ChunkWriter:
    """Writes chunks in one background thread, off the loop's critical path. Each write is
    atomic (``_write_atomic``); ``close`` waits for all of them and raises the first error."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpr1200-chunks")
        self.futures: list = []

    def submit(self, path: Path, array: np.ndarray, metadata: dict[str, str]) -> None:
        self.futures.append(self.pool.submit(_write_atomic, path, array, metadata))
        # surface a failed write early instead of after the whole run
        while self.futures and self.futures[0].done():
            self.futures.pop(0).result()

    def close(self, quiet: bool = False) -> None:
        self.pool.shutdown(wait=True)
        for f in self.futures:
            if not quiet:
                f.result()


def default_loader_settings(cores: int, device: str, processes: int = 1) -> tuple[int, int]:
    """(DataLoader workers, batch size) for a machine: ``cores`` usable CPU cores shared by
    ``processes`` extraction processes, on ``device``. On an accelerator the workers feed it
    (all cores but one, at most 16) with batches of 256; on the CPU the model needs the cores
    too (half of them to the workers, at most 8) and batches of 32 suffice."""
    per_process = max(1, cores // max(1, processes))
    if device.split(":")[0] == "cpu":
        return min(per_process // 2, 8), 32
    return max(0, min(per_process - 1, 16)), 256


def cores() -> int:
    """CPU cores this process may run on."""
    return _cores()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class DecodeFailure:
    """An image that could not be decoded (returned by the collate function, so that the
    message crosses the worker boundary intact)."""

    name: str
    reason: str

    def message(self) -> str:
        return (
            f"{self.name}: cannot decode the image ({self.reason}); nothing was scored - "
            "replace the file with an intact copy (or remove it and its category from a sample)"
        )


def try_decode(value) -> tuple[object, str | None]:
    """Decode one stored image as ``datasets.Image`` does (EXIF orientation included), in RGB
    as the official pipeline converts (grayscale, CMYK, palette...). Returns (image, None), or
    (None, reason) for a truncated or damaged file or a decompression bomb."""
    import datasets
    from PIL import Image

    try:
        image = datasets.Image().decode_example(value)
        return (image if image.mode == "RGB" else image.convert("RGB")), None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {e}"


class _Collate:
    """Decode and preprocess a batch in a DataLoader worker. An image that cannot be decoded
    gives a DecodeFailure naming its file (an exception would reach the main process wrapped
    in a worker traceback)."""

    def __init__(self, preprocess):
        self.preprocess = preprocess

    def __call__(self, items: list[tuple[str, dict]]):
        images = []
        for name, value in items:
            image, reason = try_decode(value)
            if reason is not None:
                return DecodeFailure(name, reason)
            images.append(image)
        return self.preprocess(images)


class _Images:
    """Map-style view of a dataset's stored (undecoded) images and their file names, for the
    DataLoader workers; decoding happens in ``_Collate`` so that failures name the file."""

    def __init__(self, dataset):
        self.names = "file_name" in dataset.column_names
        columns = ["image", "file_name"] if self.names else ["image"]
        self.dataset = dataset.select_columns(columns).with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[str, dict]]:
        """A whole batch in one Arrow read (the DataLoader calls this when it exists)."""
        indices = [int(i) for i in indices]
        table = self.dataset[indices]
        values = table.column("image").to_pylist()
        if self.names:
            names = table.column("file_name").to_pylist()
        else:
            names = [v.get("path") or f"row {i}" for i, v in zip(indices, values, strict=True)]
        return list(zip(names, values, strict=True))
