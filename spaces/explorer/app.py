"""GPR1200 retrieval explorer: pick a query, see what a run retrieves; compare two runs.

    python app.py --demo              # offline: demo sample + two weight-free baseline runs
    python app.py --runs gpr1200-runs # runs written by `gpr1200 evaluate`

Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from gpr1200_hf import protocol  # noqa: E402
from gpr1200_hf.compare import compare_runs, largest_category_differences  # noqa: E402
from gpr1200_hf.explorer import (  # noqa: E402
    Run,
    discover_runs,
    query_choices,
    relevant_ranks,
    top_k,
)
from gpr1200_hf.report import compare_table, score_table  # noqa: E402
from gpr1200_hf.runner import evaluate_model, open_data  # noqa: E402

DEMO_MODELS = ("baseline:color-hist", "baseline:color-only")


class Explorer:
    """Runs and their datasets, loaded once."""

    def __init__(self, runs: list[Run]):
        if not runs:
            raise SystemExit("no runs found: run `gpr1200 evaluate` first, or pass --demo")
        self.runs = {r.name: r for r in runs}
        self._data: dict[str, object] = {}
        self._embedders: dict[str, object] = {}

    def dataset(self, run: Run):
        loc = run.results["data"]["location"]
        if loc not in self._data:
            self._data[loc] = open_data(
                loc,
                categories=run.results["data"].get("categories"),
                cache_dir=run.folder.parent / "hf-cache",
            ).dataset
        return self._data[loc]

    def texts(self, run: Run) -> dict[int, str]:
        ds = self.dataset(run)
        return dict(zip(map(int, ds["category_id"]), ds["category_text"]))

    def image(self, run: Run, index: int):
        return self.dataset(run)[int(index)]["image"].convert("RGB")

    def embedder(self, run: Run):
        """The run's model, if it can be loaded locally (baselines, local folders)."""
        model = run.results["model"]
        if model not in self._embedders:
            from gpr1200_hf.models import load_embedder

            local = model.startswith("baseline:") or Path(model).is_dir()
            pooling = None if model.startswith("baseline:") else run.results["pooling"]
            self._embedders[model] = load_embedder(model, pooling=pooling) if local else None
        return self._embedders[model]


def _gallery(ex: Explorer, run: Run, hits) -> list:
    return [
        (ex.image(run, h.index), f"#{h.rank} {'✓ relevant' if h.relevant else '✗'} {h.score:.3f}")
        for h in hits
    ]


def explore(ex: Explorer, run_name: str, query: int | None, k: int):
    run = ex.runs[run_name]
    if query is None:
        raise gr.Error("pick a query first")
    q = int(query)
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


def search_upload(ex: Explorer, run_name: str, image, k: int):
    run = ex.runs[run_name]
    if image is None:
        raise gr.Error("upload an image first")
    embedder = ex.embedder(run)
    if embedder is None:
        raise gr.Error(
            f"{run.results['model']} is not available locally, so an uploaded "
            "image cannot be embedded with it"
        )
    vec = embedder.embed(embedder.preprocess([image.convert("RGB")]))[0]
    hits = top_k(run, vec, int(k), category_id=-1)
    return [(ex.image(run, h.index), f"#{h.rank} {h.score:.3f}") for h in hits]


def compare(ex: Explorer, name_a: str, name_b: str, query: int | None, k: int):
    a, b = ex.runs[name_a], ex.runs[name_b]
    if query is None:
        raise gr.Error("pick a query first")
    q = int(query)
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


def build(ex: Explorer) -> gr.Blocks:
    names = list(ex.runs)
    first = ex.runs[names[0]]
    texts = ex.texts(first)
    subsets = ["all", *protocol.SUBSET_KEYS]

    def choices(subset, search):
        return gr.update(choices=query_choices(first, texts, subset, search), value=None)

    def pick_random(subset, search):
        options = query_choices(first, texts, subset, search, limit=100_000)
        if not options:
            raise gr.Error("no query matches")
        return gr.update(
            choices=options[:400] if len(options) > 400 else options,
            value=random.choice(options)[1],
        )

    with gr.Blocks(title="GPR1200 retrieval explorer") as demo:
        gr.Markdown("# GPR1200 retrieval explorer")
        with gr.Tab("Explore"):
            with gr.Row():
                run = gr.Dropdown(names, value=names[0], label="run", elem_id="run")
                subset = gr.Dropdown(subsets, value="all", label="subset", elem_id="subset")
                search = gr.Textbox(label="category text search", elem_id="search")
                k = gr.Slider(1, 50, value=10, step=1, label="top k", elem_id="k")
            with gr.Row():
                query = gr.Dropdown(query_choices(first, texts), label="query", elem_id="query")
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
            with gr.Accordion("Search with your own image", open=False):
                upload = gr.Image(type="pil", label="query image", elem_id="upload")
                up_btn = gr.Button("Search", elem_id="upload-search")
                up_gallery = gr.Gallery(label="nearest images", columns=5, elem_id="up-gallery")
            outputs = [query_img, gallery, info, ranks, scores]
            search.submit(choices, [subset, search], query)
            subset.change(choices, [subset, search], query)
            rand.click(pick_random, [subset, search], query).then(
                lambda r, q, kk: explore(ex, r, q, kk), [run, query, k], outputs
            )
            show.click(lambda r, q, kk: explore(ex, r, q, kk), [run, query, k], outputs)
            up_btn.click(
                lambda r, im, kk: search_upload(ex, r, im, kk), [run, upload, k], up_gallery
            )
        with gr.Tab("Compare runs"):
            with gr.Row():
                run_a = gr.Dropdown(names, value=names[0], label="run A", elem_id="run-a")
                run_b = gr.Dropdown(names, value=names[-1], label="run B", elem_id="run-b")
                k2 = gr.Slider(1, 30, value=8, step=1, label="top k")
            with gr.Row():
                query2 = gr.Dropdown(query_choices(first, texts), label="query", elem_id="query2")
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
            rand2.click(lambda: pick_random("all", ""), None, query2).then(
                lambda a, b, q, kk: compare(ex, a, b, q, kk), [run_a, run_b, query2, k2], cmp_out
            )
            cmp_btn.click(
                lambda a, b, q, kk: compare(ex, a, b, q, kk), [run_a, run_b, query2, k2], cmp_out
            )
    return demo


def demo_runs(out: Path) -> Path:
    for model in DEMO_MODELS:
        evaluate_model(model, demo=True, output_dir=out, workers=0, progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs",
        default=os.environ.get("GPR1200_RUNS", "gpr1200-runs"),
        help="folder of runs written by gpr1200 evaluate",
    )
    ap.add_argument(
        "--demo",
        action="store_true",
        help="generate the demo sample and two baseline runs (offline)",
    )
    args = ap.parse_args()
    runs_dir = Path(args.runs)
    if args.demo:
        runs_dir = demo_runs(
            Path(
                os.environ.get(
                    "GPR1200_DEMO_DIR", Path(tempfile.gettempdir()) / "gpr1200-explorer-demo"
                )
            )
        )
    build(Explorer(discover_runs(runs_dir))).launch()


if __name__ == "__main__":
    main()
