"""The ``gpr1200`` command line. Each subcommand is registered in ``COMMANDS``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .ranking import METRICS, NORMALIZE, TIES, InputError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, setup: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: ``setup`` adds its arguments, the decorated function runs it."""

    def register(fn):
        COMMANDS[name] = (setup, fn)
        return fn

    return register


# --------------------------------------------------------------------------- score


def load_for_scoring(path: str | Path, mode: str, labels_path: str | None):
    """(array, labels or None) ready for scoring: canonical order when the file names rows."""
    from . import io

    loaded = io.read_array(path)
    labels = io.read_labels(labels_path) if labels_path else None
    if loaded.file_names is not None and labels is None:
        array = np.asarray(loaded.array)
        if mode == "indices":
            from .scoring import validate_indices

            array = validate_indices(array)
            order, labels = io.canonical_order_checked(loaded)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(order.size)
            return inverse[array[order]], labels
        return io.in_canonical_order(loaded)
    return loaded.array, labels


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="embeddings or indices: .npy, .npz, .safetensors or .parquet")
    p.add_argument("--mode", choices=["embeddings", "indices"], default="embeddings")
    p.add_argument(
        "--labels",
        help="labels file (.npy, .json list or text); default: "
        "file names in the file, else canonical GPR1200 order (12000 rows)",
    )
    p.add_argument("--metric", choices=METRICS, default="cosine")
    p.add_argument("--ties", choices=TIES, default="expected")
    p.add_argument(
        "--exclude-self",
        action="store_true",
        help="remove each query from its own ranked list (default: included)",
    )
    p.add_argument(
        "--normalize",
        choices=NORMALIZE,
        default="relevant",
        help="indices mode: divide AP@K by all relevant items or by those retrieved",
    )
    p.add_argument("--json", dest="json_out", help="write the score dict to this JSON file")


@command("score", _score_args)
def cmd_score(args: argparse.Namespace) -> int:
    """Score embeddings or precomputed rankings with the GPR1200 protocol."""
    from .report import score_table
    from .scoring import score, score_indices

    array, labels = load_for_scoring(args.path, args.mode, args.labels)
    if args.mode == "indices":
        result = score_indices(array, labels, normalize=args.normalize)
    else:
        result = score(
            array, labels, metric=args.metric, ties=args.ties, include_self=not args.exclude_self
        )
    print(score_table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


# --------------------------------------------------------------------------- dataset


def _make_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder to write images/ (or GPR1200.zip) and the JSON into")
    p.add_argument("--per-subset", type=int, default=4, help="categories per subset (1-200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zip", action="store_true", help="write GPR1200.zip instead of images/")
    p.add_argument("--min-size", type=int, default=96, help="smallest image side in pixels")
    p.add_argument("--max-size", type=int, default=160, help="largest image side in pixels")


@command("make-demo", _make_demo_args)
def cmd_make_demo(args: argparse.Namespace) -> int:
    """Write a generated sample in the official GPR1200 format (offline quick start)."""
    from .demo import make_demo

    if not 1 <= args.per_subset <= 200:
        raise InputError("--per-subset must be between 1 and 200")
    if not 16 <= args.min_size <= args.max_size:
        raise InputError("image sizes need 16 <= --min-size <= --max-size")
    data, categories = make_demo(
        args.out_dir,
        per_subset=args.per_subset,
        seed=args.seed,
        size=(args.min_size, args.max_size),
        as_zip=args.zip,
    )
    print(f"wrote {data} and {categories}")
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="dataset repo folder to write (data/*.parquet + README.md)")
    p.add_argument("--source", required=True, help="GPR1200.zip or a folder with images/")
    p.add_argument("--categories", help="category JSON (default: download, sha256-checked)")
    p.add_argument(
        "--no-strict", action="store_true", help="accept a sample with fewer than 1200 categories"
    )
    p.add_argument("--repo-id", default="<org>/gpr1200", help="repo id named in the card")
    p.add_argument("--push", metavar="REPO_ID", help="upload the folder to this dataset repo")
    p.add_argument("--cache-dir", help="datasets cache folder")


@command("export-hub", _export_args)
def cmd_export_hub(args: argparse.Namespace) -> int:
    """Export GPR1200 as a Hub dataset repo folder (parquet shards and a card)."""
    from .hub import export_hub, push_folder

    out = export_hub(
        args.out_dir,
        args.source,
        categories=args.categories,
        strict=not args.no_strict,
        cache_dir=args.cache_dir,
        repo_id=args.push or args.repo_id,
    )
    print(f"wrote {out}")
    if args.push:
        print(push_folder(out, args.push))
    return 0


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpr1200", description="GPR1200 image-retrieval benchmark on the Hugging Face stack"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (setup, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0])
        setup(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
