"""GPR1200 retrieval explorer: pick a query, see what a run retrieves; compare two runs.

    python app.py                     # as a Space starts it (see below)
    python app.py --demo              # offline: demo sample + two weight-free baseline runs
    python app.py --runs gpr1200-runs # runs written by `gpr1200 evaluate`

Without flags the runs come from $GPR1200_RUNS, else ``runs/`` next to this file (what
``gpr1200 export-space explorer`` writes), else ./gpr1200-runs, else the demo (built at
startup, which needs torch). In the exported folder ``import gpr1200_hf`` finds the package's
modules copied next to this file. Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import random
import re
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gpr1200_hf import protocol  # noqa: E402
from gpr1200_hf.compare import compare_runs, largest_category_differences  # noqa: E402
from gpr1200_hf.errors import InputError  # noqa: E402
from gpr1200_hf.explorer import (  # noqa: E402
    Run,
    discover_runs,
    query_choices,
    relevant_ranks,
    top_k,
)
from gpr1200_hf.report import compare_table, score_table  # noqa: E402
from gpr1200_hf.runner import open_data  # noqa: E402
from gpr1200_hf.spaces import build_demo_runs  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_UPLOAD = "10mb"  # per uploaded file (gradio refuses larger ones with a message)
MAX_UPLOAD_PIXELS = 40_000_000
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


class Explorer:
    """Runs and their datasets, loaded (and checked against each other) once, at startup."""

    def __init__(self, runs: list[Run]):
        if not runs:
            raise InputError("no runs found: run `gpr1200 evaluate` first, or pass --demo")
        names = [r.name for r in runs]
        # Runs of one configuration on other data share a name: the folder tells them apart.
        self.runs = {
            (name if names.count(name) == 1 else f"{name} [{r.folder.name}]"): r
            for name, r in zip(names, runs)
        }
        self._data: dict[str, object] = {}
        self._embedders: dict[str, object] = {}
        for run in runs:
            self._check(run)

    def dataset(self, run: Run):
        loc, categories = run.data
        if loc not in self._data:
            self._data[loc] = open_data(
                loc, categories=categories, cache_dir=run.folder.parent / "hf-cache"
            ).dataset
        return self._data[loc]

    def _check(self, run: Run) -> None:
        """The run's images are the ones it was evaluated on: same count, same file names."""
        ds = self.dataset(run)
        names = run.per_query.file_names
        if len(ds) != len(names) or (
            "file_name" in ds.column_names and list(ds["file_name"]) != [str(n) for n in names]
        ):
            raise InputError(
                f"{run.name}: its images ({run.data[0]}) are not the ones it was evaluated on "
                f"({len(ds)} images, {len(names)} queries, or other file names)"
            )
        run.embeddings  # noqa: B018 - load now: a missing or short file fails at startup

    def texts(self, run: Run) -> dict[int, str]:
        ds = self.dataset(run)
        return dict(zip(map(int, ds["category_id"]), ds["category_text"]))

    def image(self, run: Run, index: int):
        return self.dataset(run)[int(index)]["image"].convert("RGB")

    def embedder(self, run: Run):
        """The run's model (loaded on first use), or None when it cannot be loaded here."""
        model = run.results["model"]
        if upload_note(run) is not None:
            return None
        if model not in self._embedders:
            from gpr1200_hf.models import load_embedder

            if model.startswith("baseline:"):
                self._embedders[model] = load_embedder(model)
            else:
                hub = not Path(model).is_dir()
                self._embedders[model] = load_embedder(
                    model,
                    pooling=run.results["pooling"],
                    revision=run.results.get("revision") if hub else None,
                )
        return self._embedders[model]


def upload_note(run: Run) -> str | None:
    """Why an uploaded image cannot be embedded with this run's model here; None when it can."""
    model = run.results["model"]
    if model.startswith("baseline:"):
        return None  # numpy + PIL only
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"Searching with your own image needs {' and '.join(missing)} to embed it with "
            f"`{model}`; this app runs without them (add them to requirements.txt to enable it)."
        )
    if Path(model).is_dir() or (_HUB_ID.fullmatch(model) and not Path(model).exists()):
        return None
    return f"`{model}` is not available here, so an uploaded image cannot be embedded with it."


def _one_line(text: str) -> str:
    """``text`` on one line, with server paths (uploads, this folder) cut to their last part."""
    roots = {tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR", ""), str(HERE)} - {""}
    for root in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(root) + r"[^\s'\"]*", lambda m: Path(m.group()).name, text)
    return " ".join(text.split())


def guarded(fn):
    """Every failure of a UI handler becomes one clear line (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except InputError as e:
            raise gr.Error(_one_line(str(e))) from None
        except Exception as e:  # noqa: BLE001 - logged for the owner, one line for the user
            traceback.print_exc()
            raise gr.Error(_one_line(f"could not do that: {type(e).__name__}: {e}")) from None

    return wrapper


def _gallery(ex: Explorer, run: Run, hits) -> list:
    return [
        (ex.image(run, h.index), f"#{h.rank} {'✓ relevant' if h.relevant else '✗'} {h.score:.3f}")
        for h in hits
    ]


def _query_index(run: Run, query) -> int:
    if query is None:
        raise gr.Error("pick a query first")
    q = int(query)
    if not 0 <= q < len(run.per_query.ap):
        raise gr.Error(f"query #{q} is not in this run (pick one from the list)")
    return q


def explore(ex: Explorer, run_name: str, query: int | None, k: int):
    run = ex.runs[run_name]
    q = _query_index(run, query)
    cat = int(run.per_query.category_id[q])
    hits = top_k(run, q, int(k), cat)
    ap = float(run.per_query.ap[q])
    ranks = relevant_ranks(run, q)
    name = run.per_query.file_names[q]
    info = (
        f"**query #{q}** `{name}` - category {cat} "
        f"({protocol.subset_of(cat).display_name}): {ex.texts(run).get(cat, '')}\n\n"
        f"**AP = {ap:.6f}**"
    )
    rank_rows = [[int(i), str(run.per_query.file_names[i]), r] for i, r in ranks]
    return (
        ex.image(run, q),
        _gallery(ex, run, hits),
        info,
        rank_rows,
        score_table(run.results["metrics"]),
    )


def open_upload(path: str) -> Image.Image:
    """The uploaded file as an RGB image, refused in one line (naming only its file name)."""
    name = Path(path).name
    try:
        with Image.open(path) as im:
            size = im.size
            if size[0] * size[1] <= MAX_UPLOAD_PIXELS:
                return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise gr.Error(f"{name}: not an image this app can read ({type(e).__name__})") from None
    raise gr.Error(
        f"{name}: {size[0]}x{size[1]} pixels is too large; upload an image of at most "
        f"{MAX_UPLOAD_PIXELS // 1_000_000} megapixels"
    )


def search_upload(ex: Explorer, run_name: str, path: str | None, k: int):
    run = ex.runs[run_name]
    if path is None:
        raise gr.Error("upload an image first")
    embedder = ex.embedder(run)
    if embedder is None:
        raise gr.Error(upload_note(run))
    image = open_upload(path)
    vec = embedder.embed(embedder.preprocess([image]))[0]
    hits = top_k(run, vec, int(k), category_id=-1)
    return [(ex.image(run, h.index), f"#{h.rank} {h.score:.3f}") for h in hits]


def compare(ex: Explorer, name_a: str, name_b: str, query: int | None, k: int):
    a, b = ex.runs[name_a], ex.runs[name_b]
    if list(a.per_query.file_names) != list(b.per_query.file_names):
        raise gr.Error("runs A and B were evaluated on different images; pick two runs of one")
    q = _query_index(a, query)
    cat = int(a.per_query.category_id[q])
    ranks_a = [r for _, r in relevant_ranks(a, q)]
    ranks_b = [r for _, r in relevant_ranks(b, q)]
    ap_a, ap_b = float(a.per_query.ap[q]), float(b.per_query.ap[q])
    better = "A" if ap_a > ap_b else "B" if ap_b > ap_a else "neither"
    verdict = (
        f"**query #{q}** `{a.per_query.file_names[q]}`\n\n"
        f"A: AP = {ap_a:.6f}, relevant at ranks {ranks_a}\n\n"
        f"B: AP = {ap_b:.6f}, relevant at ranks {ranks_b}\n\n"
        f"**{better}** ranks the relevant images higher"
        f" (mean rank A {np.mean(ranks_a):.1f}, B {np.mean(ranks_b):.1f})."
    )
    stats = compare_runs(a.per_query, b.per_query, n_bootstrap=2000, n_permutations=2000)
    texts = ex.texts(a)
    diffs = [
        [
            d["category_id"],
            texts.get(d["category_id"], ""),
            d["subset"],
            round(100 * d["ap_a"], 1),
            round(100 * d["ap_b"], 1),
            round(100 * d["difference"], 1),
        ]
        for d in largest_category_differences(a.per_query, b.per_query, top=15)
    ]
    return (
        _gallery(ex, a, top_k(a, q, int(k), cat)),
        _gallery(ex, b, top_k(b, q, int(k), cat)),
        verdict,
        compare_table(stats),
        diffs,
    )


def _upload_state(ex: Explorer, run_name: str):
    note = upload_note(ex.runs[run_name])
    return gr.update(value=note or "", visible=note is not None), gr.update(visible=note is None)


def build(ex: Explorer) -> gr.Blocks:
    names = list(ex.runs)
    first = ex.runs[names[0]]
    subsets = ["all", *protocol.SUBSET_KEYS]

    @guarded
    def choices(run_name, subset="all", search=""):
        run = ex.runs[run_name]
        return gr.update(choices=query_choices(run, ex.texts(run), subset, search), value=None)

    @guarded
    def pick_random(run_name, subset="all", search=""):
        run = ex.runs[run_name]
        options = query_choices(run, ex.texts(run), subset, search, limit=100_000)
        if not options:
            raise gr.Error("no query matches")
        return gr.update(
            choices=options[:400] if len(options) > 400 else options,
            value=random.choice(options)[1],
        )

    first_choices = query_choices(first, ex.texts(first))
    note = upload_note(first)
    with gr.Blocks(title="GPR1200 retrieval explorer") as demo:
        gr.Markdown("# GPR1200 retrieval explorer")
        with gr.Tab("Explore"):
            with gr.Row():
                run = gr.Dropdown(names, value=names[0], label="run", elem_id="run")
                subset = gr.Dropdown(subsets, value="all", label="subset", elem_id="subset")
                search = gr.Textbox(label="category text search", elem_id="search")
                k = gr.Slider(1, 50, value=10, step=1, label="top k", elem_id="k")
            with gr.Row():
                query = gr.Dropdown(first_choices, label="query", elem_id="query")
                rand = gr.Button("Random query", elem_id="random")
                show = gr.Button("Show", variant="primary", elem_id="show")
            info = gr.Markdown(elem_id="ap-text")
            with gr.Row():
                query_img = gr.Image(label="query", height=220, elem_id="query-image")
                gallery = gr.Gallery(label="top k", columns=5, height=440, elem_id="gallery")
            with gr.Row():
                ranks = gr.Dataframe(
                    headers=["index", "file", "rank"],
                    label="ranks of the relevant images",
                    elem_id="ranks",
                )
                scores = gr.Markdown(label="run scores", elem_id="run-scores")
            with gr.Accordion("Search with your own image", open=False, elem_id="upload-panel"):
                up_note = gr.Markdown(note or "", visible=note is not None, elem_id="upload-note")
                with gr.Column(visible=note is None, elem_id="upload-box") as up_box:
                    upload = gr.File(
                        label=f"query image (at most {MAX_UPLOAD})",
                        file_types=["image"],
                        type="filepath",
                        elem_id="upload",
                    )
                    up_btn = gr.Button("Search", elem_id="upload-search")
                    up_gallery = gr.Gallery(label="nearest images", columns=5, elem_id="up-gallery")
            outputs = [query_img, gallery, info, ranks, scores]
            search.submit(choices, [run, subset, search], query)
            subset.change(choices, [run, subset, search], query)
            run.change(choices, [run, subset, search], query)
            run.change(functools.partial(_upload_state, ex), run, [up_note, up_box])
            rand.click(pick_random, [run, subset, search], query).then(
                guarded(lambda r, q, kk: explore(ex, r, q, kk)), [run, query, k], outputs
            )
            show.click(guarded(lambda r, q, kk: explore(ex, r, q, kk)), [run, query, k], outputs)
            up_btn.click(
                guarded(lambda r, f, kk: search_upload(ex, r, f, kk)), [run, upload, k], up_gallery
            )
        with gr.Tab("Compare runs"):
            with gr.Row():
                run_a = gr.Dropdown(names, value=names[0], label="run A", elem_id="run-a")
                run_b = gr.Dropdown(names, value=names[-1], label="run B", elem_id="run-b")
                k2 = gr.Slider(1, 30, value=8, step=1, label="top k")
            with gr.Row():
                query2 = gr.Dropdown(first_choices, label="query", elem_id="query2")
                rand2 = gr.Button("Random query", elem_id="random2")
                cmp_btn = gr.Button("Compare", variant="primary", elem_id="compare")
            verdict = gr.Markdown(elem_id="verdict")
            with gr.Row():
                gal_a = gr.Gallery(label="run A", columns=4, elem_id="gallery-a")
                gal_b = gr.Gallery(label="run B", columns=4, elem_id="gallery-b")
            stats = gr.Markdown(elem_id="stats")
            diffs = gr.Dataframe(
                headers=["category", "text", "subset", "A %", "B %", "B - A"],
                label="categories where the runs differ most",
                elem_id="diffs",
            )
            cmp_out = [gal_a, gal_b, verdict, stats, diffs]
            run_cmp = guarded(lambda a, b, q, kk: compare(ex, a, b, q, kk))
            run_a.change(choices, run_a, query2)
            rand2.click(pick_random, run_a, query2).then(
                run_cmp, [run_a, run_b, query2, k2], cmp_out
            )
            cmp_btn.click(run_cmp, [run_a, run_b, query2, k2], cmp_out)
    return demo


def default_runs() -> Path | None:
    """Where runs are found without flags (see the module docstring); None: build the demo."""
    if os.environ.get("GPR1200_RUNS"):
        return Path(os.environ["GPR1200_RUNS"])
    for folder in (HERE / "runs", Path("gpr1200-runs")):
        if any(folder.glob("*/results.json")):
            return folder
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs",
        help="folder of runs written by gpr1200 evaluate (default: see the module docstring)",
    )
    ap.add_argument(
        "--demo",
        action="store_true",
        help="generate the demo sample and two baseline runs (offline; needs torch)",
    )
    args = ap.parse_args()
    try:
        runs_dir = Path(args.runs) if args.runs else None if args.demo else default_runs()
        if runs_dir is None:
            runs_dir = build_demo_runs(
                Path(
                    os.environ.get(
                        "GPR1200_DEMO_DIR", Path(tempfile.gettempdir()) / "gpr1200-explorer-demo"
                    )
                ),
                instead="pass --runs DIR (no runs in $GPR1200_RUNS, runs/ or ./gpr1200-runs)",
            )
        app = build(Explorer(discover_runs(runs_dir)))
    except InputError as e:
        sys.exit(f"error: {_one_line(str(e))}")
    app.launch(max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    main()
