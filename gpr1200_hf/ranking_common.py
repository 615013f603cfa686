"""What both counting backends share (``ranking`` for numpy, ``ranking_torch`` for torch).

Both import this module and neither imports the other at module level, so the dependency runs
one way: ``ranking`` -> ``ranking_torch`` (lazily, for ``device=``) -> ``ranking_common``.
Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


class NonFiniteScores(InputError):
    """A computed score is NaN or infinite: it cannot be ranked. ``prepare_ranking`` bounds
    every score, so this is a last guard, checked before a block is counted."""

    def __init__(self) -> None:
        super().__init__(
            "some similarity scores are NaN or infinite, so they cannot be ranked; rescale "
            "the embeddings (or use cosine)"
        )


@dataclass
class Counts:
    """Per query (sorted order) and relevant slot: the sufficient statistics of its ranking.

    ``ties='stable'`` counts ``before`` only; every other mode counts ``gt`` and ``ge`` only.
    """

    thresholds: np.ndarray  # (N, m) relevant scores, descending; +inf pads
    size: np.ndarray  # (N,) class size (relevant items incl. self)
    self_slot: np.ndarray  # (N,) slot of the query itself among its thresholds
    gt: np.ndarray  # (N, m) items (incl. self) scoring > threshold
    ge: np.ndarray  # (N, m) items (incl. self) scoring >= threshold
    slot_member: np.ndarray  # (N, m) sorted position of the item in each slot; -1 pads
    before: np.ndarray  # (N, m) items ranked before the slot's item in stable order

    @classmethod
    def empty(cls, sizes: np.ndarray, class_ids: np.ndarray, dtype) -> Counts:
        """Nothing counted yet: +inf thresholds, zero counts, no slot members."""
        n, m = class_ids.size, int(sizes.max())
        return cls(
            thresholds=np.full((n, m), np.inf, dtype=dtype),
            size=sizes[class_ids],
            self_slot=np.zeros(n, dtype=np.int64),
            gt=np.zeros((n, m), dtype=np.int64),
            ge=np.zeros((n, m), dtype=np.int64),
            slot_member=np.full((n, m), -1, dtype=np.int64),
            before=np.zeros((n, m), dtype=np.int64),
        )


def blocks(class_ids: np.ndarray, target: int) -> list[slice]:
    """Contiguous row blocks of about ``target`` rows that never split a class."""
    bounds = np.flatnonzero(np.diff(class_ids)) + 1
    bounds = np.concatenate([[0], bounds, [class_ids.size]])
    out, start = [], 0
    for b in bounds[1:]:
        if b - start >= target or b == class_ids.size:
            out.append(slice(start, int(b)))
            start = int(b)
    return out


def slot_positions(slot_member: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
    """Input position of each slot's item; pads (which count nothing) take slot 0's."""
    pos = input_pos[np.maximum(slot_member, 0)]
    return np.where(slot_member >= 0, pos, pos[:, :1])


def tie_side(others: np.ndarray, slot_pos: np.ndarray) -> str:
    """How the ``others`` (input positions) lie against every slot item of ``slot_pos``:
    ``"before"`` (all earlier: an item tied with a slot item ranks above it in stable order),
    ``"after"`` (all later: ranks below) or ``"mixed"`` (compare per element)."""
    if others.size == 0 or others.max() < slot_pos.min():
        return "before"
    if others.min() > slot_pos.max():
        return "after"
    return "mixed"


def hamming_bits(codes: np.ndarray) -> np.ndarray:
    """Packed codes (N x words uint64, from ``ranking.prepare_ranking``) as 0/1 float32 rows."""
    return np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=1).astype(np.float32)
