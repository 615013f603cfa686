"""Preprocessing on the model's device (``--preprocess device``).

DataLoader workers only decode (RGB, as the official pipeline converts) and pack a batch's
pixels into one flat uint8 tensor; the main process copies it to the device (pinned memory,
non-blocking) and resizes, crops, rescales and normalises there in torch, following the
model's own image processor configuration:

- resize: ``size`` as ``{"height", "width"}`` (fixed) or ``{"shortest_edge"}`` (aspect kept,
  ``int(size * long / short)`` as transformers computes it); ConvNeXt's ``crop_pct`` rule;
- resample: bilinear or bicubic exactly as Pillow computes them for 8-bit images (its
  antialiasing coefficients in fixed point, width pass then height pass, each rounded to
  uint8), as two matrix products in float64, where all sums are exact integers;
- center crop (zero padding when the crop is larger, as transformers pads), rescale factor,
  mean/std.

Processors that do anything else (patch packing, padding, longest-edge limits, Lanczos, custom
``_preprocess`` code, timm's transforms) are refused with a clear error: ``--preprocess
processor``, the model's own image processor, is the reference and always works.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError

MODES = ("processor", "device")
# Accuracy bar for the device path against the processor path (issue 12).
MAX_EMBEDDING_DIFF = 1e-2
MAX_MAP_DIFF = 1e-3

# Pillow resampling codes replicated (Pillow's NEAREST uses 16.16 fixed-point coordinates,
# LANCZOS, BOX and HAMMING have no torch kernel: refused).
RESAMPLE = {2: "bilinear", 3: "bicubic"}
PIL_NAMES = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


@dataclass(frozen=True)
class DevicePlan:
    """The steps of an image processor, as plain numbers."""

    resize: str  # "fixed", "shortest_edge", "convnext" or "none"
    height: int | None
    width: int | None
    shortest_edge: int | None
    crop_pct: float | None
    mode: str  # "bilinear" or "bicubic"
    crop: tuple[int, int] | None
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    def digest(self) -> str:
        code = inspect.getsource(inspect.getmodule(DevicePlan))
        text = repr(sorted(asdict(self).items())) + code
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _standard_backends() -> list[type]:
    """transformers' PIL and torchvision image processor bases (transformers 5; none before)."""
    out = []
    for name in ("PilBackend", "TorchvisionBackend"):
        try:
            module = __import__("transformers.image_processing_backends", fromlist=[name])
            out.append(getattr(module, name))
        except (ImportError, AttributeError):  # pragma: no cover - older transformers
            pass
    return out


def _refuse(processor, why: str) -> InputError:
    return InputError(
        f"--preprocess device cannot replicate {type(processor).__name__} ({why}); "
        "use --preprocess processor (the model's own image processor)"
    )


def _triple(value, processor, name: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if np.isscalar(value) else [float(v) for v in value]
    if len(values) != 3:
        raise _refuse(processor, f"{name} has {len(values)} values, not 3")
    return tuple(values)


def plan_for(processor) -> DevicePlan:
    """The device plan of a transformers image processor, or InputError if it does anything
    the device path does not replicate."""
    cls = type(processor)
    backends = _standard_backends()
    base = next((b for b in backends if isinstance(processor, b)), None)
    if base is None:
        raise _refuse(processor, "not a standard PIL or torchvision image processor")
    convnext = cls.__name__.startswith("ConvNextImageProcessor")
    if not convnext and (cls._preprocess is not base._preprocess or cls.resize is not base.resize):
        raise _refuse(processor, "it preprocesses with code of its own")
    if getattr(processor, "do_pad", None):
        raise _refuse(processor, "it pads")
    resize, height, width, shortest, crop_pct, mode = "none", None, None, None, None, "bilinear"
    if processor.do_resize:
        size = processor.size
        resample = 2 if processor.resample is None else int(processor.resample)
        if resample not in RESAMPLE:
            raise _refuse(processor, f"resample {PIL_NAMES.get(resample, resample)}")
        mode = RESAMPLE[resample]
        if size.longest_edge or size.max_height or size.max_width or size.max_pixels:
            raise _refuse(processor, f"size {size} limits the longest edge")
        if convnext:
            if not size.shortest_edge:
                raise _refuse(processor, f"size {size} has no shortest_edge")
            resize, shortest = "convnext", int(size.shortest_edge)
            crop_pct = float(processor.crop_pct)
        elif size.shortest_edge:
            resize, shortest = "shortest_edge", int(size.shortest_edge)
        elif size.height and size.width:
            resize, height, width = "fixed", int(size.height), int(size.width)
        else:
            raise _refuse(processor, f"size {size}")
    crop = None
    if getattr(processor, "do_center_crop", None):
        crop = (int(processor.crop_size.height), int(processor.crop_size.width))
    rescale = float(processor.rescale_factor) if processor.do_rescale else None
    mean = std = None
    if processor.do_normalize:
        mean = _triple(processor.image_mean, processor, "image_mean")
        std = _triple(processor.image_std, processor, "image_std")
    return DevicePlan(resize, height, width, shortest, crop_pct, mode, crop, rescale, mean, std)


def shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """transformers' ``get_resize_output_image_size(..., default_to_square=False)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def pack(images: list) -> dict:
    """RGB PIL images -> one flat uint8 tensor and their (height, width): one buffer to pin
    and copy per batch. Runs in the DataLoader workers."""
    import torch

    arrays = [np.asarray(im, dtype=np.uint8) for im in images]
    for a, im in zip(arrays, images, strict=True):
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected an RGB image, got mode {getattr(im, 'mode', '?')}")
    shapes = torch.tensor([a.shape[:2] for a in arrays], dtype=torch.int64).reshape(-1, 2)
    flat = np.empty(sum(a.size for a in arrays), dtype=np.uint8)
    at = 0
    for a in arrays:
        flat[at : at + a.size] = a.reshape(-1)
        at += a.size
    return {"pixels": torch.from_numpy(flat), "shapes": shapes}


def unpack(batch: dict) -> list[np.ndarray]:
    """The (height, width, 3) uint8 arrays of a packed batch (on the CPU)."""
    flat, out, at = batch["pixels"].cpu().numpy(), [], 0
    for h, w in batch["shapes"].tolist():
        out.append(flat[at : at + h * w * 3].reshape(h, w, 3))
        at += h * w * 3
    return out


RESIZE_GROUP = 64  # images resized together (float64: 64 x 3 x 1000 x 1000 is 1.5 GB)
PRECISION_BITS = 22  # Pillow's fixed-point coefficients for 8-bit images (32 - 8 - 2)


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


@functools.lru_cache(maxsize=64)
def pillow_weights(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """(in_size, out_size) float64 matrix of Pillow's integer resampling coefficients
    (``precompute_coeffs`` + ``normalize_coeffs_8bpc`` of libImaging/Resample.c, whole image
    as the box), scaled by 2**PRECISION_BITS. Products with uint8 pixels and their sums are
    integers below 2**53, exact in float64 in any order."""
    fn, support = FILTERS[mode]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    ss = 1.0 / filterscale
    weights = np.zeros((in_size, out_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [fn((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        for x, w in enumerate(k):
            q = (
                int(-0.5 + w * (1 << PRECISION_BITS))
                if w < 0
                else int(0.5 + w * (1 << PRECISION_BITS))
            )
            weights[xmin + x, xx] = q
    return weights


_ON_DEVICE: dict = {}  # (in, out, mode, device) -> weights there; a handful of sizes


def _device_weights(in_size: int, out_size: int, mode: str, device):
    import torch

    key = (in_size, out_size, mode, str(device))
    if key not in _ON_DEVICE:
        if len(_ON_DEVICE) > 256:  # photos of many sizes: keep the cache bounded
            _ON_DEVICE.clear()
        _ON_DEVICE[key] = torch.from_numpy(pillow_weights(in_size, out_size, mode)).to(device)
    return _ON_DEVICE[key]


def _pillow_pass(x, in_size: int, out_size: int, mode: str):
    """One Pillow pass along the last axis: integer sums, rounded half up by the fixed-point
    shift, clipped to 0-255 (``clip8``)."""
    import torch

    y = torch.matmul(x, _device_weights(in_size, out_size, mode, x.device))
    return y.add_(1 << (PRECISION_BITS - 1)).div_(1 << PRECISION_BITS).floor_().clamp_(0, 255)


def _resize(x, size: tuple[int, int], mode: str):
    """Resize float (n, 3, h, w) holding uint8 values exactly as Pillow resizes an RGB image:
    bilinear/bicubic with its antialiasing coefficients in fixed point, first along the width,
    then along the height, each pass rounded and clipped to uint8 (Pillow's intermediate image
    is 8-bit). Computed in float64, where every sum is exact, so the pixels are Pillow's.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):  # Pillow returns a copy
        return x
    y = x.double()
    if w != size[1]:
        y = _pillow_pass(y, w, size[1], mode)
    if h != size[0]:
        y = _pillow_pass(y.transpose(-1, -2), h, size[0], mode).transpose(-1, -2)
    return y.float()


def _center_crop(x, size: tuple[int, int]):
    """transformers' center_crop: offsets ``(orig - crop) // 2``; zero padding, centred with
    ``ceil`` offsets, where the image is smaller than the crop."""
    import math

    import torch

    h, w = x.shape[-2:]
    ch, cw = size
    top, left = (h - ch) // 2, (w - cw) // 2
    if top >= 0 and left >= 0:
        return x[..., top : top + ch, left : left + cw]
    nh, nw = max(ch, h), max(cw, w)
    padded = torch.zeros((*x.shape[:-2], nh, nw), dtype=x.dtype, device=x.device)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    padded[..., tp : tp + h, lp : lp + w] = x
    top, left = (nh - ch) // 2, (nw - cw) // 2
    return padded[..., top : top + ch, left : left + cw]


def _transform(x, plan: DevicePlan):
    """(n, 3, h, w) float 0-255 images of one size -> processed pixels."""
    h, w = x.shape[-2:]
    if plan.resize == "fixed":
        x = _resize(x, (plan.height, plan.width), plan.mode)
    elif plan.resize == "shortest_edge":
        x = _resize(x, shortest_edge_size(h, w, plan.shortest_edge), plan.mode)
    elif plan.resize == "convnext":
        edge = plan.shortest_edge
        if edge < 384:  # resize to edge / crop_pct, then crop edge x edge
            x = _resize(x, shortest_edge_size(h, w, int(edge / plan.crop_pct)), plan.mode)
            x = _center_crop(x, (edge, edge))
        else:  # warp, no crop
            x = _resize(x, (edge, edge), plan.mode)
    if plan.crop is not None:
        x = _center_crop(x, plan.crop)
    if plan.rescale is not None:  # in float64, then float32, as transformers' numpy rescale
        x = (x.double() * plan.rescale).float()
    if plan.mean is not None:  # float32, as its numpy normalize
        mean = x.new_tensor(plan.mean).view(1, 3, 1, 1)
        std = x.new_tensor(plan.std).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def apply(batch: dict, plan: DevicePlan, device) -> dict:
    """A packed batch -> ``{"pixel_values": (B, 3, H, W) float32}`` on ``device``. Images of
    the same size are processed together (one interpolate call per size)."""
    import torch

    flat = batch["pixels"].to(device, non_blocking=True)
    shapes = [tuple(s) for s in batch["shapes"].tolist()]
    offsets = np.concatenate([[0], np.cumsum([h * w * 3 for h, w in shapes])]).tolist()
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    out: list = [None] * len(shapes)
    for (h, w), same_size in groups.items():
        for at in range(0, len(same_size), RESIZE_GROUP):  # bounds the float64 buffers
            members = same_size[at : at + RESIZE_GROUP]
            images = torch.stack([flat[offsets[i] : offsets[i + 1]].view(h, w, 3) for i in members])
            x = _transform(images.permute(0, 3, 1, 2).float(), plan)
            for i, row in zip(members, x, strict=True):
                out[i] = row
    sizes = {tuple(t.shape) for t in out}
    if len(sizes) > 1:  # the processor's output would be ragged too; say it plainly
        raise InputError(
            f"--preprocess device: this processor gives images of several sizes {sorted(sizes)}; "
            "use --preprocess processor"
        )
    return {"pixel_values": torch.stack(out).contiguous()}
