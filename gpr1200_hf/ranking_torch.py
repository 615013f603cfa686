"""The same counting as ``ranking._rank_counts``, on a torch device (e.g. a GPU).

Row strips (class-aligned, all columns) are scored on the device; each query's thresholds are
taken from its own strip, so they are the very numbers it is compared with. Only the counts
come back to the CPU, where ``ranking`` turns them into APs exactly as for numpy.
"""

from __future__ import annotations

import numpy as np

from .ranking import NonFiniteScores, _blocks, _Counts


def rank_counts_torch(
    v: np.ndarray,
    offset: np.ndarray | None,
    class_ids: np.ndarray,
    input_pos: np.ndarray,
    block: int,
    track_ties: bool,
    device: str,
) -> _Counts:
    import torch

    sizes = np.bincount(class_ids)
    counts = _Counts.empty(sizes, class_ids, v.dtype)
    m = counts.thresholds.shape[1]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    first = torch.from_numpy(starts[class_ids]).to(device)
    size = torch.from_numpy(sizes[class_ids]).to(device)
    vt = torch.from_numpy(v).to(device)
    off = None if offset is None else torch.from_numpy(offset).to(device)
    slot = torch.arange(m, device=device)
    with torch.inference_mode():
        for blk in _blocks(class_ids, block):
            rows = torch.arange(blk.start, blk.stop, device=device)
            s = vt[blk] @ vt.T
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
            gt = torch.stack([(s > t[:, k : k + 1]).sum(1) for k in range(m)], 1)
            ge = torch.stack([(s >= t[:, k : k + 1]).sum(1) for k in range(m)], 1)
            counts.thresholds[blk] = t.cpu().numpy()
            counts.self_slot[blk] = (member == rows[:, None]).int().argmax(1).cpu().numpy()
            counts.slot_member[blk] = member.cpu().numpy()
            counts.gt[blk] = gt.cpu().numpy()
            counts.ge[blk] = ge.cpu().numpy()
            if track_ties:
                _ties(s, t, valid, class_ids, input_pos, blk, counts.ties)
    return counts


def _ties(s, t, valid, class_ids, input_pos, blk, out: dict) -> None:
    """Input positions of non-relevant items tied with a relevant score (``stable`` mode)."""
    import torch

    rel_eq = (t[:, :, None] == t[:, None, :]).sum(2)
    eq = torch.stack([(s == t[:, k : k + 1]).sum(1) for k in range(t.shape[1])], 1)
    extra = torch.where(valid, eq - rel_eq, 0)
    for a, k in zip(*[x.tolist() for x in torch.nonzero(extra > 0, as_tuple=True)]):
        value = t[a, k]
        hit = torch.nonzero(s[a] == value).flatten().cpu().numpy()
        row = blk.start + a
        hit = hit[class_ids[hit] != class_ids[row]]
        key = (row, float(value))
        out.setdefault(key, set()).update(int(p) for p in input_pos[hit])
