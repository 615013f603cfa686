"""Speed and memory of ``gpr1200_hf.score`` against its floor and the official algorithm.

Run by hand: ``python benchmarks/bench_score.py [--skip-large] [--skip-metric] [--only-codes]
[--device cpu]``. Prints times
and ratios measured in this run (never compare numbers from different machines).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

import numpy as np

import gpr1200_hf as g
from gpr1200_hf import protocol


def gpr_like(
    n_classes=protocol.NUM_CATEGORIES, per=protocol.IMAGES_PER_CATEGORY, dim=768, seed=0
) -> np.ndarray:
    """Float32 embeddings with class structure, noise tuned so mAP is paper-like (~0.5-0.6)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, dim)).astype(np.float32)
    x = np.repeat(centers, per, axis=0) * 0.35
    x += rng.standard_normal((n_classes * per, dim)).astype(np.float32)
    return x


def official_sort_based(x: np.ndarray, labels: np.ndarray, block: int = 1000) -> float:
    """The official algorithm: float32 similarity, full descending argsort, AP over the list.
    Vectorised per block of queries (kinder than the official per-query Python loop)."""
    n = x.shape[0]
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    aps = []
    ranks = np.arange(1, n + 1)
    for start in range(0, n, block):
        s = xn[start : start + block] @ xn.T
        idx = np.argsort(s, axis=1)[:, ::-1]
        rel = labels[idx] == labels[start : start + block, None]
        prec = np.cumsum(rel, axis=1) / ranks
        aps.append((prec * rel).sum(axis=1) / rel.sum(axis=1))
    return float(np.concatenate(aps).mean())


def best_of(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def bench_gpr1200(repeat: int) -> None:
    x = gpr_like()
    y = protocol.canonical_labels()
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    t_floor, _ = best_of(lambda: xn @ xn.T, repeat)
    t_score, res = best_of(lambda: g.score(x), repeat)
    t_official, official = best_of(lambda: official_sort_based(x, y), 1)
    print(
        f"12000 x 768 float32, mAP {res['map']:.4f} (official algorithm {official:.4f}, "
        f"|diff| {abs(res['map'] - official):.1e})"
    )
    print(f"  X @ X.T (floor)          {t_floor:7.3f} s")
    print(f"  gpr1200_hf.score         {t_score:7.3f} s   {t_score / t_floor:5.2f} x floor")
    print(
        f"  official sort-based      {t_official:7.3f} s   "
        f"score is {t_official / t_score:5.1f} x faster"
    )
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    t_torch, res_t = best_of(lambda: g.score(x, device="cpu"), repeat)
    print(
        f"  score, torch backend cpu {t_torch:7.3f} s   {t_torch / t_floor:5.2f} x floor "
        f"(|mAP diff| vs numpy {abs(res_t['map'] - res['map']):.1e})"
    )


def sign_codes(bits: int, seed: int = 1) -> np.ndarray:
    """+-1 float32 codes: signs of a random projection of GPR1200-shaped embeddings (massive
    exact ties)."""
    x = gpr_like()
    rng = np.random.default_rng(seed)
    return np.sign(x @ rng.standard_normal((x.shape[1], bits)).astype(np.float32))


def bench_ties(repeat: int, devices: list[str | None]) -> None:
    """The four tie modes on the same codes, interleaved round by round (best of ``repeat``),
    so that load from other processes hits them alike."""
    codes = sign_codes(32)
    for device in devices:
        times = {t: float("inf") for t in g.ranking.TIES}
        maps = {}
        for _ in range(repeat):
            for ties in g.ranking.TIES:
                start = time.perf_counter()
                maps[ties] = g.score(codes, ties=ties, device=device)["map"]
                times[ties] = min(times[ties], time.perf_counter() - start)
        name = "numpy" if device is None else f"torch {device}"
        print(f"12000 x 32-bit sign codes (cosine), every tie mode, {name}:")
        for ties in g.ranking.TIES:
            ratio = times[ties] / times["expected"]
            print(
                f"  {ties:12s} {times[ties]:7.3f} s  {ratio:5.2f} x expected  mAP {maps[ties]:.6f}"
            )


def bench_hamming(repeat: int, devices: list[str | None]) -> None:
    bits = sign_codes(256) > 0
    packed = np.packbits(bits, axis=1)
    plus_minus = bits.astype(np.float32) * 2 - 1
    for device in devices:
        t_ham, r_ham = best_of(lambda d=device: g.score(packed, metric="hamming", device=d), repeat)
        t_ip, r_ip = best_of(lambda d=device: g.score(plus_minus, metric="ip", device=d), repeat)
        assert r_ham == r_ip, (r_ham, r_ip)  # the same ranking, the same ties
        name = "numpy" if device is None else f"torch {device}"
        print(f"12000 x 256-bit codes, {name} (identical results, mAP {r_ham['map']:.6f}):")
        print(f"  hamming, packed uint8 (32 B/row)      {t_ham:7.3f} s")
        print(f"  ip, unpacked +-1 float32 (1 KiB/row)  {t_ip:7.3f} s   {t_ip / t_ham:5.2f} x")


LARGE = """
import resource, time, tracemalloc
import numpy as np, gpr1200_hf as g
rng = np.random.default_rng(0)
n, d = 100_000, 256
x = rng.standard_normal((n, d), dtype=np.float32)
x += 0.35 * np.repeat(rng.standard_normal((n // 10, d), dtype=np.float32), 10, axis=0)
y = np.repeat(np.arange(n // 10), 10)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t = time.perf_counter()
r = g.score(x, y)
dt = time.perf_counter() - t
_, peak = tracemalloc.get_traced_memory()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{dt:.1f} {peak / 2**20:.0f} {rss_before / 1024:.0f} {rss / 1024:.0f} {r['map']:.4f}")
"""


def bench_large() -> None:
    out = subprocess.run([sys.executable, "-c", LARGE], capture_output=True, text=True, check=True)
    dt, peak, rss_before, rss, m = out.stdout.split()
    print(
        f"100,000 x 256 float32: {dt} s, mAP {m}; peak memory allocated by score {peak} MiB; "
        f"process peak RSS {rss} MiB (inputs and imports alone {rss_before} MiB)"
    )


def bench_metric(repeat: int) -> None:
    import evaluate

    metric = evaluate.load(g.METRIC_PATH)
    x = gpr_like()
    t_direct, direct = best_of(lambda: g.score(x), repeat)
    t_metric, res = best_of(lambda: metric.compute(predictions=x), repeat)
    assert res == direct, (res, direct)
    print(
        f"evaluate metric compute   {t_metric:7.3f} s   {t_metric / t_direct:5.2f} x "
        f"gpr1200_hf.score ({t_direct:.3f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-metric", action="store_true")
    ap.add_argument("--only-codes", action="store_true", help="tie modes and hamming only")
    ap.add_argument("--device", action="append", help="also time this torch device (cpu, cuda)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}")
    devices = [None, *(args.device or [])]
    bench_ties(args.repeat, devices)
    bench_hamming(args.repeat, devices)
    if args.only_codes:
        return
    bench_gpr1200(args.repeat)
    if not args.skip_metric:
        bench_metric(args.repeat)
    if not args.skip_large:
        bench_large()


if __name__ == "__main__":
    main()
