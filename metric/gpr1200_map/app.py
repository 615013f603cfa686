"""Gradio Space for the gpr1200_map metric: upload embeddings or rankings, get GPR1200 scores.

Run it as Spaces do, ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT). In the
folder written by ``gpr1200 export-space metric`` it uses the scoring modules copied next to it
(the ones the metric script imports); in a clone it uses the installed ``gpr1200_hf``.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
MAX_UPLOAD = "512mb"


def _library_package() -> str:
    """The package holding the scoring modules: this folder on a Space, else gpr1200_hf."""
    if not (HERE / "scoring.py").is_file():
        return "gpr1200_hf"
    spec = importlib.machinery.ModuleSpec("gpr1200_space", None, is_package=True)
    spec.submodule_search_locations = [str(HERE)]
    sys.modules["gpr1200_space"] = importlib.util.module_from_spec(spec)
    return "gpr1200_space"


_LIB = _library_package()
_errors, _io, _plots, _ranking, _report, _scoring = (
    importlib.import_module(f"{_LIB}.{name}")
    for name in ("errors", "io", "plots", "ranking", "report", "scoring")
)
InputError = _errors.InputError
METRICS, NORMALIZE, TIES = _ranking.METRICS, _ranking.NORMALIZE, _ranking.TIES
PAPER_COLUMNS = _report.PAPER_COLUMNS
PAPER = _report.paper_results()
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
        array, y = _io.load_for_scoring(file, mode, labels)
        if mode == "indices":
            result = _scoring.score_indices(array, y, normalize=normalize)
        else:
            result = _scoring.score(array, y, metric=metric, ties=ties, include_self=include_self)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line for the user
        raise gr.Error(_one_line(e, file, labels)) from None
    table = [[k, DISPLAY.get(k, k), round(100 * v, 1), v] for k, v in result.items()]
    chosen = [r for r in PAPER if r.label in (compare or [])]
    fig = _plots.subset_chart([("your run", result)], chosen)
    plt.close(fig)
    return table, fig, paper_rows()


def _one_line(error: Exception, *uploads: str | None) -> str:
    """The error as one line naming uploads by their file names, never server paths."""
    text = str(error) if isinstance(error, InputError) else f"could not score: {error!r}"
    for path in uploads:
        if path:
            text = text.replace(str(Path(path).parent) + os.sep, "")
            text = text.replace(str(path), Path(path).name)
    return " ".join(text.split())


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
    build().launch(max_file_size=MAX_UPLOAD)
