"""Embedders: a registry of model loaders and poolings, one entry per model family.

An ``Embedder`` turns a list of RGB PIL images into a batch (``preprocess``, run in DataLoader
workers) and a batch into L2-normalised float32 embeddings (``embed``, on the device).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

POOLINGS = ("cls", "mean", "pooler", "image_features")

# Default pooling per transformers ``model_type`` (override with --pooling).
DEFAULT_POOLING: dict[str, str] = {
    "clip": "image_features",
    "siglip": "image_features",
    "siglip2": "image_features",
    "dinov2": "pooler",
    "dinov2_with_registers": "pooler",
    "dinov3_vit": "pooler",
    "dinov3_convnext": "pooler",
    "vit": "cls",  # post-layernorm CLS; the tanh pooler is absent from classification checkpoints
    "deit": "cls",
    "convnext": "pooler",
    "convnextv2": "pooler",
    "swin": "pooler",
    "swinv2": "pooler",
    "resnet": "pooler",
    "regnet": "pooler",
    "timm_wrapper": "pooler",
}


def _hidden(model, inputs, pooling: str):
    hidden = getattr(model(**inputs), "last_hidden_state", None)
    if hidden is None:
        raise InputError(f"this model has no last_hidden_state for --pooling {pooling}")
    return hidden


def _cls(model, inputs):
    hidden = _hidden(model, inputs, "cls")
    if hidden.dim() != 3:  # a feature map (B, C, H, W) has no CLS token
        raise InputError(
            "--pooling cls needs a token sequence; this model gives a feature map: "
            "choose --pooling mean or pooler"
        )
    return hidden[:, 0]


def _mean(model, inputs):
    hidden = _hidden(model, inputs, "mean")
    return hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(dim=2)


def _pooler(model, inputs):
    out = model(**inputs).pooler_output
    if out is None:
        raise InputError("this model has no pooler_output; choose --pooling cls or mean")
    return out.flatten(1)


def _image_features(model, inputs):
    out = model.get_image_features(**inputs)
    return out if not hasattr(out, "pooler_output") else out.pooler_output


NO_POOLER_NEEDED = ("vit", "deit")

POOLERS: dict[str, Callable] = {
    "cls": _cls,
    "mean": _mean,
    "pooler": _pooler,
    "image_features": _image_features,
}


@dataclass
class Embedder:
    """What the extraction loop needs from a model (or from the baseline)."""

    name: str
    revision: str | None
    pooling: str
    dtype: str
    image_size: Any
    preprocess: Callable[[list], dict]
    embed: Callable[[dict], np.ndarray]
    device: str = "cpu"
    info: dict = field(default_factory=dict)
    # Digest of everything else that shapes the embeddings (image processor config, code).
    preprocessing: str = ""
    preprocess_mode: str = "processor"  # or "device" (see preprocess.py)


class PendingEmbeddings:
    """Embeddings being copied from a CUDA device into pinned host memory (non-blocking);
    ``result()`` waits for the copy. Lets the loop launch the next batch first."""

    def __init__(self, out):
        import torch

        self.host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        self.host.copy_(out, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def result(self) -> np.ndarray:
        self.event.synchronize()
        return self.host.numpy()


def default_preprocess(processor, device: str) -> str:
    """``device`` on a GPU when the device path replicates this processor (its pixels are
    Pillow's, bit for bit), else ``processor``. On the CPU the processor runs in the parallel
    workers, which is faster than resizing in the main process."""
    import torch

    from .preprocess import plan_for

    if torch.device(device).type != "cuda":
        return "processor"
    try:
        plan_for(processor)
    except InputError:
        return "processor"
    return "device"


def _check_against_processor(batch, out, processor_preprocess, run_model) -> dict:
    """Max abs difference between the device path's embeddings of a batch and the processor
    path's (the reference) for the same decoded images; InputError above the bar."""
    from PIL import Image

    from .preprocess import MAX_EMBEDDING_DIFF, unpack

    images = [Image.fromarray(a) for a in unpack(batch)]
    reference = run_model(processor_preprocess(images))
    diff = float((out - reference).abs().max())
    if not diff <= MAX_EMBEDDING_DIFF:
        raise InputError(
            f"--preprocess device: embeddings of the first {len(images)} images differ from the "
            f"model's own image processor by {diff:.2e} (bar {MAX_EMBEDDING_DIFF:g}); "
            "use --preprocess processor"
        )
    return {"images": len(images), "max_abs_diff": diff, "bar": MAX_EMBEDDING_DIFF}


def baseline_embedder(name: str) -> Embedder:
    """Weight-free baselines: ``baseline:color-hist`` (colour histogram + texture statistics)
    and ``baseline:color-only``."""
    from .baseline import BASELINES, SIDE

    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}")
    fn = BASELINES[name]

    def preprocess(images):
        return {"features": np.stack([fn(im) for im in images])}

    def embed(batch):
        return np.asarray(batch["features"], dtype=np.float32)

    import inspect

    from . import baseline

    code = hashlib.sha256(inspect.getsource(baseline).encode()).hexdigest()[:16]
    return Embedder(
        name, None, name.split(":", 1)[1], "fp32", SIDE, preprocess, embed, preprocessing=code
    )


TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _image_size(processor) -> Any:
    for attr in ("crop_size", "size"):
        value = getattr(processor, attr, None)
        if value is None:
            continue
        if not isinstance(value, int):
            items = value.items() if hasattr(value, "items") else vars(value).items()
            value = {k: v for k, v in items if isinstance(v, int)}
        if value:
            return value
    patches = {a: getattr(processor, a, None) for a in ("patch_size", "max_num_patches")}
    return {k: v for k, v in patches.items() if isinstance(v, int)} or None


def transformers_embedder(
    model_id: str,
    *,
    revision: str | None = None,
    pooling: str | None = None,
    dtype: str = "fp32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    preprocess: str | None = None,
) -> Embedder:
    """Any ``AutoModel`` + ``AutoImageProcessor`` checkpoint (Hub id or local folder).

    ``preprocess="processor"`` runs the model's own image processor in the DataLoader workers
    (the reference); ``"device"`` decodes there and resizes/crops/normalises on ``device``
    (``preprocess.py``); its first batch is also run through the processor and refused if the
    embeddings differ by more than ``preprocess.MAX_EMBEDDING_DIFF``. ``None`` chooses
    (``default_preprocess``)."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    if dtype not in TORCH_DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; choose fp32, fp16 or bf16")
    check_local_model(model_id)
    local = Path(model_id).expanduser()
    source = str(local) if local.is_dir() else model_id  # transformers does not expand ~
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        where = "" if local.exists() else f" (nor is there a local folder {model_id})"
        raise InputError(f"cannot load model {model_id!r}{where}: {_one_line(e)}") from None
    pooling = pooling or DEFAULT_POOLING.get(config.model_type, "pooler")
    if pooling not in POOLERS:
        raise InputError(f"pooling {pooling!r} is not supported; choose {', '.join(POOLINGS)}")
    torch_dtype = getattr(torch, TORCH_DTYPES[dtype])
    extra = {}
    if config.model_type in NO_POOLER_NEEDED and pooling != "pooler":
        extra["add_pooling_layer"] = False  # no randomly initialised tanh head to load or run
    try:
        model = AutoModel.from_pretrained(source, dtype=torch_dtype, **kwargs, **extra)
        processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load model {model_id!r}: {_one_line(e)}") from None
    valid = valid_poolings(model)
    if pooling not in valid:
        raise InputError(
            f"--pooling {pooling} does not apply to {type(model).__name__} "
            f"(model_type {config.model_type!r}); valid poolings: {', '.join(valid)}"
        )
    model = model.to(device).eval()
    pool = POOLERS[pooling]
    accepted = None
    if pooling == "image_features":
        import inspect

        accepted = set(inspect.signature(model.get_image_features).parameters)
    info: dict = {"model_type": config.model_type, "preprocess_auto": preprocess is None}
    if preprocess is None:
        preprocess = default_preprocess(processor, device)
    on_cuda = torch.device(device).type == "cuda"

    def run_model(batch) -> torch.Tensor:
        inputs = {}
        for k, v in batch.items():
            if accepted is not None and k not in accepted:
                continue
            v = v.to(device, non_blocking=True)
            inputs[k] = v.to(torch_dtype) if v.is_floating_point() else v
        out = pool(model, inputs).float()
        if out.dim() != 2:
            raise InputError(
                f"--pooling {pooling} gives outputs of shape {tuple(out.shape)}, not one vector "
                "per image; choose another --pooling"
            )
        return torch.nn.functional.normalize(out, dim=-1)

    def finish(out: torch.Tensor):
        """numpy now on the CPU; on CUDA a pending copy into pinned memory, so that the loop
        can feed the next batch while this one computes."""
        if not on_cuda:
            return out.cpu().numpy()
        return PendingEmbeddings(out)

    def processor_preprocess(images):
        return dict(processor(images=images, return_tensors="pt"))

    if preprocess == "processor":
        preprocess_fn = processor_preprocess

        @torch.inference_mode()
        def embed(batch):
            return finish(run_model(batch))

        preprocessing = _processor_digest(processor)
    elif preprocess == "device":
        from . import preprocess as device_pre

        plan = device_pre.plan_for(processor)
        preprocess_fn = device_pre.pack

        @torch.inference_mode()
        def embed(batch):
            out = run_model(device_pre.apply(batch, plan, device))
            if "device_check" not in info:  # the first batch, also through the processor
                info["device_check"] = _check_against_processor(
                    batch, out, processor_preprocess, run_model
                )
            return finish(out)

        # "device:" keeps these embeddings apart from the processor path's in every cache
        digest = hashlib.sha256(f"{_processor_digest(processor)}{plan.digest()}".encode())
        preprocessing = "device-" + digest.hexdigest()[:16]
    else:
        raise InputError(f"--preprocess {preprocess!r}: choose processor or device")

    commit = getattr(config, "_commit_hash", None) or revision
    if local.is_dir():  # a local folder is identified by its content
        commit = _folder_hash(local)
    return Embedder(
        model_id,
        commit,
        pooling,
        dtype,
        _image_size(processor),
        preprocess_fn,
        embed,
        device,
        info,
        preprocessing=preprocessing,
        preprocess_mode=preprocess,
    )


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def valid_poolings(model) -> tuple[str, ...]:
    """Dual encoders (CLIP, SigLIP...) embed images only through ``get_image_features``; a
    vision backbone has no such method and is pooled from its outputs."""
    if hasattr(model, "get_image_features"):
        return ("image_features",)
    return ("cls", "mean", "pooler")


def _processor_digest(processor) -> str:
    """Digest of the image processor's configuration (sizes, crops, means, resampling...)."""
    try:
        text = processor.to_json_string()
    except (TypeError, ValueError):  # a custom processor that does not serialise
        text = repr(sorted(vars(processor).items(), key=lambda kv: kv[0]))
    return hashlib.sha256(f"{type(processor).__name__}\n{text}".encode()).hexdigest()[:16]


def looks_like_path(model_id: str) -> bool:
    """A model name written as a path (``./ckpt``, ``/abs/ckpt``, ``~/ckpt``, ``a/b/c``), not a
    Hub id (``org/name``)."""
    return (
        model_id.startswith((".", "/", "~", "\\"))
        or Path(model_id).is_absolute()
        or model_id.count("/") > 1
        or "\\" in model_id
    )


def check_local_model(model_id: str) -> None:
    """Refuse a model path that does not name a model folder, saying so plainly."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(
                f"model folder {model_id} has no config.json; point --model at a folder "
                "written by save_pretrained (config.json, weights, preprocessor_config.json)"
            )
        return
    if path.exists():
        raise InputError(f"--model {model_id} is a file; give the model folder that holds it")
    if looks_like_path(model_id):
        raise InputError(
            f"model folder {model_id} does not exist (resolved: {path.resolve()}); check the "
            "path, or give a Hub id such as facebook/dinov2-small"
        )


def _folder_hash(folder: Path) -> str:
    """Identity of a local model folder: the names and bytes of all its files."""
    from .fingerprint import folder_fingerprint

    return "local-" + folder_fingerprint(folder)[:16]


# Loaders by prefix; anything else is a transformers checkpoint.
LOADERS: dict[str, Callable[..., Embedder]] = {
    "baseline:": lambda name, **_: baseline_embedder(name)
}


def load_embedder(model: str, **kwargs) -> Embedder:
    for prefix, loader in LOADERS.items():
        if model.startswith(prefix):
            return loader(model, **kwargs)
    return transformers_embedder(model, **kwargs)
