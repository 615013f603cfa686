"""The ``gpr1200`` command line. Each subcommand is registered in ``COMMANDS``.

Every failure of every subcommand ends as one ``error: ...`` line on stderr and exit code 2
(``main`` maps all exceptions centrally); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .ranking import METRICS, NORMALIZE, TIES, InputError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, setup: Callable[[argparse.ArgumentParser], None]):
    """Register a subcommand: ``setup`` adds its arguments, the decorated function runs it."""

    def register(fn):
        COMMANDS[name] = (setup, fn)
        return fn

    return register


# --------------------------------------------------------------------------- arguments


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def check_device(name: str | None, flag: str = "--device") -> None:
    """Refuse a torch device that does not parse or is not available here, before any work."""
    if name is None:
        return
    try:
        import torch
    except ImportError:
        raise InputError(f"{flag} {name} needs torch: pip install torch") from None
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(
            f"{flag} {name!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cpu":
        return
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    if backend is None or not hasattr(backend, "is_available"):
        raise InputError(f"{flag} {name}: unsupported device type; use cpu, cuda, cuda:N or mps")
    if not backend.is_available():
        raise InputError(
            f"{flag} {name}: {dev.type} is not available on this machine; "
            "use --device cpu (or leave --device out)"
        )
    count = getattr(backend, "device_count", lambda: 1)()
    if dev.index is not None and dev.index >= count:
        raise InputError(f"{flag} {name}: this machine has {count} {dev.type} device(s)")


def _first_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path(".")


def check_output_file(path: str, flag: str, inputs: tuple[str, ...] = ()) -> Path:
    """Refuse an output file that is a folder, not a regular file, under a file, or an input."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{flag} {out}: is a directory; name a file")
    if out.exists() and not out.is_file():
        raise InputError(f"{flag} {out}: exists and is not a regular file")
    base = _first_existing(out.parent)
    if not base.is_dir():
        raise InputError(f"{flag} {out}: {base} is a file, not a folder")
    for src in inputs:
        if out.exists() and Path(src).exists() and os.path.samefile(out, src):
            raise InputError(f"{flag} {out}: is one of the inputs; name another file")
    return out


def check_output_dir(path: str, flag: str) -> Path:
    """Refuse an output folder that exists as a file or lies under a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: is a file, not a folder; name a folder")
    base = _first_existing(out)
    if not base.is_dir():
        raise InputError(f"{flag} {out}: {base} is a file, not a folder")
    return out


def write_output(path: Path, text: str) -> str:
    """Write ``text`` atomically (temporary file, then rename); returns what was done."""
    existed = path.exists()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:  # name the target, not the temporary file next to it
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return f"{'replaced' if existed else 'wrote'} {path}"


# --------------------------------------------------------------------------- score


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="embeddings or indices: .npy, .npz, .safetensors or .parquet")
    p.add_argument(
        "--mode",
        choices=["embeddings", "indices"],
        default="embeddings",
        help="embeddings (N x D) or rankings (N x K dataset positions)",
    )
    p.add_argument(
        "--labels",
        help="labels file (.npy, .json list or text); default: "
        "file names in the file, else canonical GPR1200 order (12000 rows)",
    )
    p.add_argument("--metric", choices=METRICS, default="cosine", help="score between vectors")
    p.add_argument("--ties", choices=TIES, default="expected", help="how tied scores rank")
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
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="FILE",
        help="write the score dict to this JSON file (replaced if it exists)",
    )
    p.add_argument("--device", help="score on this torch device (cuda, cpu...) (default: numpy)")


@command("score", _score_args)
def cmd_score(args: argparse.Namespace) -> int:
    """Score embeddings or precomputed rankings with the GPR1200 protocol."""
    from .io import load_for_scoring
    from .report import score_table
    from .scoring import score, score_indices

    inputs = tuple(p for p in (args.path, args.labels) if p)
    json_out = check_output_file(args.json_out, "--json", inputs) if args.json_out else None
    check_device(args.device)
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
    if json_out:
        print(write_output(json_out, json.dumps(result, indent=2) + "\n"))
    return 0


# --------------------------------------------------------------------------- dataset


def _make_demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder to write images/ (or GPR1200.zip) and the JSON into")
    p.add_argument(
        "--per-subset", type=int_range(1, 200), default=4, help="categories per subset (1-200)"
    )
    p.add_argument("--seed", type=int_range(0), default=0, help="random seed of the sample")
    p.add_argument("--zip", action="store_true", help="write GPR1200.zip instead of images/")
    p.add_argument(
        "--min-size", type=int_range(16, 4096), default=96, help="smallest image side in pixels"
    )
    p.add_argument(
        "--max-size", type=int_range(16, 4096), default=160, help="largest image side in pixels"
    )


@command("make-demo", _make_demo_args)
def cmd_make_demo(args: argparse.Namespace) -> int:
    """Write a generated sample in the official GPR1200 format (offline quick start)."""
    from .demo import make_demo

    if args.min_size > args.max_size:
        raise InputError("image sizes need --min-size <= --max-size")
    check_output_dir(args.out_dir, "out_dir")
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
    p.add_argument("--cache-dir", help="datasets cache folder (default: datasets' own)")


@command("export-hub", _export_args)
def cmd_export_hub(args: argparse.Namespace) -> int:
    """Export GPR1200 as a Hub dataset repo folder (parquet shards and a card)."""
    from .hub import export_hub, push_folder

    check_output_dir(args.out_dir, "out_dir")
    if args.cache_dir:
        check_output_dir(args.cache_dir, "--cache-dir")
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
    p.add_argument("--revision", help="model revision (branch, tag or commit) (default: main)")
    p.add_argument(
        "--data",
        help="GPR1200.zip, an images/ folder (or a sample of it), an "
        "exported folder or a Hub dataset id",
    )
    p.add_argument("--categories", help="category JSON (default: next to --data, else download)")
    p.add_argument(
        "--pooling",
        choices=["cls", "mean", "pooler", "image_features"],
        help="override the per-family default (default: the model family's)",
    )
    p.add_argument(
        "--batch-size",
        type=int_range(1),
        help="images per batch (default: 256 on a GPU, 32 on the CPU)",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument(
        "--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="model weights dtype"
    )
    p.add_argument(
        "--workers",
        type=int_range(0),
        help="DataLoader worker processes (default: from the CPU cores: all but one, at most "
        "16, on a GPU; half, at most 8, on the CPU)",
    )
    p.add_argument(
        "--preprocess",
        choices=["processor", "device"],
        help="processor: the model's own image processor in the workers (the reference); "
        "device: decode in the workers, resize/crop/normalise on --device in torch, Pillow's "
        "pixels exactly (default: device on a GPU where it replicates the processor, else "
        "processor)",
    )
    p.add_argument(
        "--output-dir", default="gpr1200-runs", help="folder of the run folders and the cache"
    )
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
    float_metrics = [m for m in METRICS if m != "hamming"]  # models give float embeddings
    p.add_argument(
        "--metric", choices=float_metrics, default="cosine", help="score between vectors"
    )
    p.add_argument("--ties", choices=TIES, default="expected", help="how tied scores rank")
    p.add_argument(
        "--exclude-self",
        action="store_true",
        help="remove each query from its own ranked list (default: included)",
    )
    p.add_argument("--chunk-rows", type=int_range(1), help="rows per cache chunk (default: 1024)")
    p.add_argument(
        "--max-chunks",
        type=int_range(1),
        help="stop after this many new chunks, resume later (default: no limit)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--hub-dataset",
        metavar="ORG/NAME",
        help="the GPR1200 dataset repo on the Hub that the eval results name (default: --data "
        "when it is a Hub id; without one no eval results are written)",
    )


@command("evaluate", _evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Embed GPR1200 with a model, score it and report beside the paper's rows."""
    from .report import paper_layout_table, paper_results
    from .runner import DEFAULT_PAPER_ROWS, evaluate_model

    check_output_dir(args.output_dir, "--output-dir")
    check_device(args.device)
    if args.hub_dataset is not None:
        from .hub_results import check_repo_id

        check_repo_id(args.hub_dataset, "--hub-dataset")
    if args.no_progress:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    if args.model and args.model.startswith("baseline:"):
        given = [
            flag
            for flag, value in (
                ("--dtype", args.dtype != "fp32"),
                ("--revision", args.revision),
                ("--pooling", args.pooling),
                ("--preprocess", args.preprocess),
            )
            if value
        ]
        if given:
            raise InputError(
                f"{args.model} is weight-free: {', '.join(given)} do not apply to it "
                "(it always computes float32 features); drop them"
            )
    models = [args.model] if args.model else []
    if args.demo and "baseline:color-hist" not in models:
        models.insert(0, "baseline:color-hist")
    if not models:
        raise InputError("name a model: --model ORG/NAME, a local folder, or baseline:color-hist")
    runs = []
    for model in models:
        # Weight-free baselines have no revision, pooling, dtype or image processor: the model
        # flags are for --model (a baseline run is always labelled as what it computed).
        baseline = model.startswith("baseline:")
        res = evaluate_model(
            model,
            revision=None if baseline else args.revision,
            data=args.data,
            categories=args.categories,
            pooling=None if baseline else args.pooling,
            batch_size=args.batch_size,
            device=args.device,
            dtype="fp32" if baseline else args.dtype,
            workers=args.workers,
            preprocess=None if baseline else args.preprocess,
            output_dir=args.output_dir,
            demo=args.demo,
            trust_remote_code=args.trust_remote_code,
            metric=args.metric,
            ties=args.ties,
            include_self=not args.exclude_self,
            chunk_rows=args.chunk_rows,
            max_chunks=args.max_chunks,
            progress=not args.no_progress,
            hub_dataset=args.hub_dataset,
        )
        if res is None:
            continue
        runs.append(res)
        print(f"{model}: wrote {res['run_dir']}")
        for note in res["notes"]:
            print(f"note: {note}")
    if runs:
        if not runs[0]["data"]["full_benchmark"]:
            print(
                f"note: scored a sample ({runs[0]['data']['num_images']} images); numbers are "
                "not comparable with the paper's"
            )
        paper = [r for r in paper_results() if r.label in DEFAULT_PAPER_ROWS]
        print(paper_layout_table([(r["model"], r["metrics"]) for r in runs], paper))
    return 0


def _push_results_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by gpr1200 evaluate")
    p.add_argument("--model", required=True, metavar="ORG/NAME", help="the model repo")
    p.add_argument("--token", help="Hub token (default: the saved login or HF_TOKEN)")
    p.add_argument(
        "--allow-other-model",
        action="store_true",
        help="push although results.json names another model (e.g. a local checkpoint of it)",
    )


@command("push-results", _push_results_args)
def cmd_push_results(args: argparse.Namespace) -> int:
    """Open a pull request on a model repo adding the run's .eval_results/gpr1200.yaml."""
    from .hub_results import push_results

    url = push_results(
        args.run_dir, args.model, token=args.token, allow_other_model=args.allow_other_model
    )
    print(f"opened {url}")
    return 0


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="results.json files or run folders")
    p.add_argument("--out", required=True, help="table.md or table.csv (replaced if it exists)")
    p.add_argument("--paper", action="store_true", help="append the paper's rows")


@command("build", _build_args)
def cmd_build(args: argparse.Namespace) -> int:
    """Merge several runs' results.json into one table (markdown or CSV)."""
    from .io import RESULTS_FILE, read_results
    from .report import build_table

    inputs = tuple(str(Path(p) / RESULTS_FILE) if Path(p).is_dir() else p for p in args.results)
    out = check_output_file(args.out, "--out", inputs)
    if out.suffix.lower() not in (".md", ".csv"):
        raise InputError("--out must end in .md or .csv")
    runs = [read_results(p) for p in args.results]
    done = write_output(out, build_table(runs, fmt=out.suffix[1:].lower(), paper=args.paper))
    print(f"{done} ({len(runs)} runs)")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run A: results.json or run folder (with per_query.npz)")
    p.add_argument("b", help="run B")
    p.add_argument(
        "--bootstrap",
        type=int_range(1, MAX_RESAMPLES),
        default=10_000,
        help=f"bootstrap resamples (1-{MAX_RESAMPLES})",
    )
    p.add_argument(
        "--permutations",
        type=int_range(1, MAX_RESAMPLES),
        default=10_000,
        help=f"permutation-test draws (1-{MAX_RESAMPLES})",
    )
    p.add_argument("--seed", type=int_range(0), default=0, help="random seed")
    p.add_argument(
        "--json",
        dest="json_out",
        metavar="FILE",
        help="write the statistics to this JSON file (replaced if it exists)",
    )
    p.add_argument(
        "--allow-protocol-mismatch",
        action="store_true",
        help="compare runs whose protocol or data differ (printing a warning)",
    )


MAX_RESAMPLES = 1_000_000  # == compare.MAX_RESAMPLES (not imported: keeps startup light)


@command("compare", _compare_args)
def cmd_compare(args: argparse.Namespace) -> int:
    """Is B better than A? mAP difference with a bootstrap CI and a paired permutation test."""
    from .compare import PerQuery, compare_runs, protocol_differences
    from .report import compare_table

    json_out = None
    if args.json_out:
        json_out = check_output_file(args.json_out, "--json", _run_files(args.a, args.b))
    a, b = PerQuery.load(args.a), PerQuery.load(args.b)
    diffs = protocol_differences(a, b)
    if diffs and not args.allow_protocol_mismatch:
        raise InputError(
            f"the runs are not comparable: {'; '.join(diffs)}; compare runs scored with the "
            "same protocol and data, or pass --allow-protocol-mismatch"
        )
    if diffs:
        print(f"warning: comparing runs that differ in {'; '.join(diffs)}", file=sys.stderr)
    stats = compare_runs(
        a,
        b,
        allow_protocol_mismatch=True,
        n_bootstrap=args.bootstrap,
        n_permutations=args.permutations,
        seed=args.seed,
    )
    print(compare_table(stats))
    if json_out:
        print(write_output(json_out, json.dumps(stats, indent=2) + "\n"))
    return 0


def _run_files(*runs: str) -> tuple[str, ...]:
    out = []
    for run in runs:
        folder = Path(run) if Path(run).is_dir() else Path(run).parent
        out += [run, str(folder / "results.json"), str(folder / "per_query.npz")]
    return tuple(out)


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
    # evaluate.load("ORG/NAME") and evaluate.load(folder) look for NAME.py: the metric's Space
    # must be named gpr1200_map.
    name = "gpr1200_map" if args.space == "metric" else "NAME"
    if args.space == "metric" and out.name != "gpr1200_map":
        print(
            f"note: evaluate.load({str(out)!r}) needs a folder named gpr1200_map; load "
            f"{str(out / 'gpr1200_map.py')!r} instead, or export into .../gpr1200_map"
        )
    print(f"upload it with: hf upload ORG/{name} {out} --repo-type space")
    print(f"  (older clients: huggingface-cli upload ORG/{name} {out} --repo-type space)")
    return 0


# --------------------------------------------------------------------------- entry point


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error: ...`` line (exit code 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default unless it is empty or the help text already names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" not in text
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def build_parser() -> Parser:
    parser = Parser(
        prog="gpr1200",
        description="GPR1200 image-retrieval benchmark on the Hugging Face stack",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error as well"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (setup, fn) in COMMANDS.items():
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(
            name,
            help=doc.splitlines()[0] if doc else None,
            description=doc,
            formatter_class=HelpFormatter,
        )
        setup(p)
        p.add_argument(  # also after the subcommand; SUPPRESS keeps a global --debug
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        p.set_defaults(func=fn)
    return parser


# Exceptions from these packages are network or Hub failures, not bugs of ours.
_NETWORK_MODULES = ("httpx", "httpcore", "requests", "urllib3", "aiohttp", "huggingface_hub")


def describe(error: BaseException) -> str:
    """One line for ``error: ...``: the problem, naming the file where one is known."""
    if isinstance(error, InputError):
        text = str(error)
    elif isinstance(error, OSError) and error.filename is not None:
        names = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        text = f"{names}: {error.strerror or error}"
    elif isinstance(error, OSError):
        text = f"{error.strerror or error}"
    elif type(error).__module__.startswith(_NETWORK_MODULES):
        text = f"network or Hub request failed: {type(error).__name__}: {error}"
    elif isinstance(error, MemoryError):
        text = f"out of memory ({error or 'no details'}); is the input far larger than expected?"
    else:
        text = (
            f"internal error: {type(error).__name__}: {error} "
            "(rerun with --debug for the traceback)"
        )
    text = re.sub(r"\s*[\r\n]+\s*", " ", text).strip() or type(error).__name__
    return text if len(text) <= 2000 else text[:1997] + "..."


def main(argv: list[str] | None = None) -> int:
    """Run ``gpr1200``; returns the exit code (0 ok, 2 error, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    if not args.debug:  # e.g. huggingface_hub's "Retrying in 8s" lines: a failure is one line
        import logging

        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
