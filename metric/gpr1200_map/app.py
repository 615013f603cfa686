"""Gradio Space for the gpr1200_map metric: upload embeddings or rankings, get GPR1200 scores.

Run locally (offline): ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import matplotlib.pyplot as plt
from gpr1200_hf import score, score_indices
from gpr1200_hf.io import load_for_scoring
from gpr1200_hf.plots import subset_chart
from gpr1200_hf.ranking import METRICS, NORMALIZE, TIES, InputError
from gpr1200_hf.report import PAPER_COLUMNS, paper_results

PAPER = paper_results()
RESULT_HEADERS = ["key", "subset", "%", "value"]
DISPLAY = dict(PAPER_COLUMNS) | {
    "map_at_r": "MAP@R (query excluded)",
    "precision_at_1": "P@1 (query excluded)",
    "r_precision": "R-precision (query excluded)",
}


def paper_rows() -> list[list]:
    return [[r.label, *[r.scores[k] for k, _ in PAPER_COLUMNS]] for r in PAPER]


def run_score(file, labels, mode, metric, ties, include_self, normalize, compare):
    """Score an uploaded file; returns (results table, chart, paper table)."""
    if file is None:
        raise gr.Error("Upload an embeddings (.npy/.npz/.safetensors/.parquet) or indices file.")
    try:
        array, y = load_for_scoring(file, mode, labels)
        if mode == "indices":
            result = score_indices(array, y, normalize=normalize)
        else:
            result = score(array, y, metric=metric, ties=ties, include_self=include_self)
    except InputError as e:
        raise gr.Error(str(e)) from None
    table = [[k, DISPLAY.get(k, k), round(100 * v, 1), v] for k, v in result.items()]
    chosen = [r for r in PAPER if r.label in (compare or [])]
    fig = subset_chart([("your run", result)], chosen)
    plt.close(fig)
    return table, fig, paper_rows()


def build() -> gr.Blocks:
    with gr.Blocks(title="GPR1200 mAP") as demo:
        gr.Markdown(
            "# GPR1200 mAP\nUpload embeddings in canonical GPR1200 order (12000 rows), a file "
            "with a `file_name` column/array, or any embeddings plus a labels file. Pickle "
            "files are refused."
        )
        with gr.Row():
            file = gr.File(label="embeddings or indices", type="filepath")
            labels = gr.File(label="labels (optional: .npy, .json, .txt)", type="filepath")
        with gr.Row():
            mode = gr.Radio(["embeddings", "indices"], value="embeddings", label="mode")
            metric = gr.Dropdown(list(METRICS), value="cosine", label="metric")
            ties = gr.Dropdown(list(TIES), value="expected", label="ties")
            include_self = gr.Checkbox(value=True, label="query in its own list")
            normalize = gr.Dropdown(list(NORMALIZE), value="relevant", label="indices: normalize")
        compare = gr.Dropdown(
            [r.label for r in PAPER],
            multiselect=True,
            value=[PAPER[10].label],
            label="paper rows in the chart",
        )
        button = gr.Button("Score", variant="primary")
        results = gr.Dataframe(headers=RESULT_HEADERS, label="results", interactive=False)
        chart = gr.Plot(label="per subset")
        paper = gr.Dataframe(
            value=paper_rows(),
            headers=["paper model", *[t for _, t in PAPER_COLUMNS]],
            label="paper (Schall et al. 2022, mAP %)",
            interactive=False,
        )
        button.click(
            run_score,
            [file, labels, mode, metric, ties, include_self, normalize, compare],
            [results, chart, paper],
            api_name="score",
        )
    return demo


if __name__ == "__main__":
    build().launch()
