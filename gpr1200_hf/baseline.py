"""A weight-free baseline embedding: colour histogram + texture statistics (numpy + PIL)."""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 64
COLOR_BINS = 4  # per RGB channel: a joint 4x4x4 histogram
ORIENTATION_BINS = 8


def color_texture_embedding(image: Image.Image) -> np.ndarray:
    """A 76-dim L2-normalised float32 vector: joint RGB histogram (64), gradient-orientation
    histogram weighted by magnitude (8), and gradient/intensity statistics (4)."""
    rgb = np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32)
    q = np.minimum((rgb / 256.0 * COLOR_BINS).astype(np.int64), COLOR_BINS - 1)
    joint = (q[..., 0] * COLOR_BINS + q[..., 1]) * COLOR_BINS + q[..., 2]
    color = np.bincount(joint.ravel(), minlength=COLOR_BINS**3).astype(np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(gray)
    mag = np.hypot(gx, gy)
    angle = (np.arctan2(gy, gx) % np.pi) / np.pi * ORIENTATION_BINS
    orient = np.bincount(
        np.minimum(angle.astype(np.int64), ORIENTATION_BINS - 1).ravel(),
        weights=mag.ravel(),
        minlength=ORIENTATION_BINS,
    )
    stats = np.array([mag.mean(), mag.std(), gray.std(), (mag > 20).mean() * 255]) / 255.0
    parts = [np.sqrt(color / color.sum()), np.sqrt(orient / max(orient.sum(), 1e-12)), stats]
    v = np.concatenate(parts).astype(np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def color_embedding(image: Image.Image) -> np.ndarray:
    """The colour part alone: a 64-dim L2-normalised joint RGB histogram (a weaker baseline)."""
    return _unit(color_texture_embedding(image)[: COLOR_BINS**3])


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


BASELINES = {
    "baseline:color-hist": color_texture_embedding,
    "baseline:color-only": color_embedding,
}
