"""The ``gpr1200`` command line. Each subcommand is registered in ``COMMANDS``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .ranking import METRICS, NORMALIZE, TIES, InputError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, setup: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: ``setup`` adds its arguments, the decorated function runs it."""

    def register(fn):
        COMMANDS[name] = (setup, fn)
        return fn

    return register


# --------------------------------------------------------------------------- score


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
    p.add_argument("--device", help="score on this torch device (cuda, cpu...); default numpy")


@command("score", _score_args)
def cmd_score(args: argparse.Namespace) -> int:
    """Score embeddings or precomputed rankings with the GPR1200 protocol."""
    from .io import load_for_scoring
    from .report import score_table
    from .scoring import score, score_indices

    array, labels = load_for_scoring(args.path, args.mode, args.labels)
    if args.mode == "indices":
        result = score_indices(array, labels, normalize=args.normalize)
    else:
        result = score(
            array,
            labels,
            metric=args.metric,
            ties=args.ties,
            include_self=not args.exclude_self,
            device=args.device,
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


# --------------------------------------------------------------------------- evaluate


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="Hub id, local folder, or baseline:color-hist (default with --demo: the baseline)",
    )
    p.add_argument("--revision", help="model revision (branch, tag or commit)")
    p.add_argument(
        "--data",
        help="GPR1200.zip, an images/ folder (or a sample of it), an "
        "exported folder or a Hub dataset id",
    )
    p.add_argument("--categories", help="category JSON (default: next to --data, else download)")
    p.add_argument(
        "--pooling",
        choices=["cls", "mean", "pooler", "image_features"],
        help="override the per-family default",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--output-dir", default="gpr1200-runs")
    p.add_argument(
        "--demo",
        action="store_true",
        help="generate the demo sample and run the baseline (and --model) on it",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow custom model code from the checkpoint (off by default)",
    )
    p.add_argument("--metric", choices=METRICS, default="cosine")
    p.add_argument("--ties", choices=TIES, default="expected")
    p.add_argument("--exclude-self", action="store_true")
    p.add_argument("--chunk-rows", type=int, help="rows per cache chunk (default 1024)")
    p.add_argument("--max-chunks", type=int, help="stop after this many new chunks (resume later)")
    p.add_argument("--no-progress", action="store_true")


@command("evaluate", _evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Embed GPR1200 with a model, score it and report beside the paper's rows."""
    from .report import paper_layout_table, paper_results
    from .runner import DEFAULT_PAPER_ROWS, evaluate_model

    for flag, value, low in (
        ("--batch-size", args.batch_size, 1),
        ("--workers", args.workers, 0),
        ("--chunk-rows", args.chunk_rows, 1),
        ("--max-chunks", args.max_chunks, 1),
    ):
        if value is not None and value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    models = [args.model] if args.model else []
    if args.demo and "baseline:color-hist" not in models:
        models.insert(0, "baseline:color-hist")
    if not models:
        raise InputError("name a model: --model ORG/NAME, a local folder, or baseline:color-hist")
    runs = []
    for model in models:
        res = evaluate_model(
            model,
            revision=args.revision,
            data=args.data,
            categories=args.categories,
            pooling=None if model.startswith("baseline:") else args.pooling,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            workers=args.workers,
            output_dir=args.output_dir,
            demo=args.demo,
            trust_remote_code=args.trust_remote_code,
            metric=args.metric,
            ties=args.ties,
            include_self=not args.exclude_self,
            chunk_rows=args.chunk_rows,
            max_chunks=args.max_chunks,
            progress=not args.no_progress,
        )
        if res is None:
            continue
        runs.append(res)
        print(f"{model}: wrote {res['run_dir']}")
    if runs:
        if not runs[0]["data"]["full_benchmark"]:
            print(
                f"note: scored a sample ({runs[0]['data']['num_images']} images); numbers are "
                "not comparable with the paper's"
            )
        paper = [r for r in paper_results() if r.label in DEFAULT_PAPER_ROWS]
        print(paper_layout_table([(r["model"], r["metrics"]) for r in runs], paper))
    return 0


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results.json files or run folders")
    p.add_argument("--out", required=True, help="table.md or table.csv")
    p.add_argument("--paper", action="store_true", help="append the paper's rows")


@command("build", _build_args)
def cmd_build(args: argparse.Namespace) -> int:
    """Merge several runs' results.json into one table (markdown or CSV)."""
    from .report import build_table

    out = Path(args.out)
    if out.suffix not in (".md", ".csv"):
        raise InputError("--out must end in .md or .csv")
    from .runner import load_results

    runs = [load_results(p) for p in args.results]
    out.write_text(build_table(runs, fmt=out.suffix[1:], paper=args.paper))
    print(f"wrote {out} ({len(runs)} runs)")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run A: results.json or run folder (with per_query.npz)")
    p.add_argument("b", help="run B")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--permutations", type=int, default=10_000, help="permutation-test draws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="write the statistics to this JSON file")


@command("compare", _compare_args)
def cmd_compare(args: argparse.Namespace) -> int:
    """Is B better than A? mAP difference with a bootstrap CI and a paired permutation test."""
    from .compare import PerQuery, compare_runs
    from .report import compare_table

    stats = compare_runs(
        PerQuery.load(args.a),
        PerQuery.load(args.b),
        n_bootstrap=args.bootstrap,
        n_permutations=args.permutations,
        seed=args.seed,
    )
    print(compare_table(stats))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(stats, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- export-space


def _export_space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", choices=["metric", "explorer"], help="which Space to write")
    p.add_argument("out", help="new or empty folder to write it to")
    p.add_argument(
        "--runs",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="explorer only: run folders (or the --output-dir holding them) to ship; "
        "default: the demo sample and the weight-free baseline runs",
    )


@command("export-space", _export_space_args)
def cmd_export_space(args: argparse.Namespace) -> int:
    """Write a Space folder to upload to the Hub: the metric or the retrieval explorer."""
    from .spaces import export_explorer_space, export_metric_space

    if args.space == "metric":
        if args.runs:
            raise InputError("--runs is for the explorer Space only")
        out = export_metric_space(args.out)
    else:
        out = export_explorer_space(args.out, runs=args.runs)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote the {args.space} Space to {out} ({size / 2**20:.1f} MB)")
    print(f"upload it with: hf upload ORG/NAME {out} --repo-type space")
    print(f"  (older clients: huggingface-cli upload ORG/NAME {out} --repo-type space)")
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
