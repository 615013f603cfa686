"""The same counting as ``ranking._rank_counts``, on a torch device (e.g. a GPU).

Row strips (class-aligned, all columns) are scored on the device; each query's thresholds are
taken from its own strip, so they are the very numbers it is compared with. Only the counts
come back to the CPU, where ``ranking`` turns them into APs exactly as for numpy. Packed binary
codes (``hamming``) are scored as +-1 rows: ``(a.b - bits) / 2 = -popcount(a XOR b)``, integers
that float32 holds exactly (whatever the summation order, and in TF32/bfloat16 matmul inputs),
so they equal the numpy popcounts bit for bit.
"""

from __future__ import annotations

import numpy as np

from .ranking_common import Counts, NonFiniteScores, blocks, hamming_bits, tie_side


def rank_counts_torch(
    v: np.ndarray,
    offset: np.ndarray | None,
    class_ids: np.ndarray,
    input_pos: np.ndarray,
    block: int,
    track_ties: bool,
    device: str,
) -> Counts:
    import torch

    bits = None
    if v.dtype == np.uint64:  # packed codes
        v = hamming_bits(v) * np.float32(2) - np.float32(1)
        bits = float(v.shape[1])
    n = v.shape[0]
    sizes = np.bincount(class_ids)
    counts = Counts.empty(sizes, class_ids, v.dtype)
    m = counts.thresholds.shape[1]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = torch.from_numpy(starts[class_ids]).to(device)
    size = torch.from_numpy(sizes[class_ids]).to(device)
    vt = torch.from_numpy(v).to(device)
    off = None if offset is None else torch.from_numpy(offset).to(device)
    pos = torch.from_numpy(np.ascontiguousarray(input_pos)).to(device)
    slot = torch.arange(m, device=device)
    with torch.inference_mode():
        for blk in blocks(class_ids, block):
            rows = torch.arange(blk.start, blk.stop, device=device)
            s = vt[blk] @ vt.T
            if bits is not None:
                s.sub_(bits).mul_(0.5)  # -popcount(a XOR b), exact
            if off is not None:
                s = 2 * s - off[blk, None] - off[None, :]
            if not bool(torch.isfinite(s.amax(1)).all()):  # NaN or +inf anywhere shows here
                raise NonFiniteScores()
            valid = slot[None, :] < size[blk, None]
            cols = torch.where(valid, first[blk, None] + slot[None, :], rows[:, None])
            t = torch.where(valid, s.gather(1, cols), -torch.inf)  # pads sort last
            t, order = torch.sort(t, dim=1, descending=True, stable=True)
            t = torch.where(valid, t, torch.inf)  # then count nothing
            member = torch.where(valid, cols.gather(1, order), -1)
            counts.thresholds[blk] = t.cpu().numpy()
            counts.self_slot[blk] = (member == rows[:, None]).int().argmax(1).cpu().numpy()
            counts.slot_member[blk] = member.cpu().numpy()
            if track_ties:
                p = pos[cols.gather(1, order)]  # pads: an item of the query's own class
                segments = ((0, blk.start), (blk.start, blk.stop), (blk.stop, n))
                counts.before[blk] = _before(s, t, p, pos, input_pos, segments).cpu().numpy()
            else:
                gt = torch.stack([_count(s > t[:, k, None]) for k in range(m)], 1)
                ge = torch.stack([_count(s >= t[:, k, None]) for k in range(m)], 1)
                counts.gt[blk] = gt.cpu().numpy()
                counts.ge[blk] = ge.cpu().numpy()
    return counts


def _before(s, t, p, pos, input_pos: np.ndarray, segments):
    """Per row and slot: the items ranked before the slot's item in stable order (scoring above
    its threshold, or equal with an earlier input position), counted per column segment; where
    a segment lies wholly before or after the slot items, one comparison does."""
    import torch

    out = torch.zeros(t.shape, dtype=torch.int64, device=s.device)
    p_cpu = p.cpu().numpy()
    for lo, hi in segments:
        if hi <= lo:
            continue
        seg, earlier = s[:, lo:hi], pos[None, lo:hi]
        for k in range(t.shape[1]):
            tk, side = t[:, k, None], tie_side(input_pos[lo:hi], p_cpu[:, k])
            if side == "before":
                out[:, k] += _count(seg >= tk)
            elif side == "after":
                out[:, k] += _count(seg > tk)
            else:
                tied = (seg == tk) & (earlier < p[:, k, None])
                out[:, k] += _count(seg > tk) + _count(tied)
    return out


def _count(mask):
    """True elements per row (``count_nonzero`` is several times faster than a bool ``sum``
    on CPU)."""
    import torch

    return torch.count_nonzero(mask, dim=1)
