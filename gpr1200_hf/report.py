"""Tables of results: the score table, the paper's reference rows, merged run tables."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .protocol import PAPER_SUBSET_ORDER, SUBSETS, SUBSETS_BY_KEY

# The paper's column titles, in its order: GPR, Land., Sketch, iNat, INST, SOP, Faces.
PAPER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("map", "GPR"),
    ("map_landmarks", "Land."),
    ("map_sketch", "Sketch"),
    ("map_inat", "iNat"),
    ("map_instre", "INST"),
    ("map_sop", "SOP"),
    ("map_faces", "Faces"),
)


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Tables 2-3 (mAP in percent, one decimal)."""

    key: str
    network: str
    training: str
    scores: dict[str, float]  # "map", "map_landmarks", ... in percent
    timm_name: str
    dim: str
    image_size: str

    @property
    def label(self) -> str:
        return f"{self.network} ({self.training})"


def paper_results() -> list[PaperRow]:
    """The paper's result table, shipped as reference data."""
    text = (Path(__file__).parent / "data" / "paper_results.csv").read_text(encoding="utf-8")
    rows = []
    for rec in csv.DictReader(text.splitlines()):
        scores = {"map": float(rec["gpr_map"])}
        for key in PAPER_SUBSET_ORDER:
            scores[f"map_{key}"] = float(rec[f"{key}_map"])
        rows.append(
            PaperRow(
                rec["key"],
                rec["network"],
                rec["training"],
                scores,
                rec["timm_name"],
                rec["dim"],
                rec["image_size"],
            )
        )
    return rows


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_cell(value) -> str:
    """A table cell's text: ``|`` escaped, line breaks and other control characters as spaces."""
    text = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in str(value))
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    header = [markdown_cell(c) for c in header]
    rows = [[markdown_cell(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def score_table(result: dict[str, float]) -> str:
    """Overall and per-subset mAP (percent, one decimal, as the paper) and the exact value."""
    rows = [["GPR1200 (all)", "map", pct(result["map"]), f"{result['map']:.6f}"]]
    for subset in SUBSETS:
        key = f"map_{subset.key}"
        if key in result:
            rows.append([subset.display_name, key, pct(result[key]), f"{result[key]:.6f}"])
    for key in ("map_at_r", "precision_at_1", "r_precision"):
        if key in result:
            rows.append(["(query excluded)", key, pct(result[key]), f"{result[key]:.6f}"])
    return markdown_table(["subset", "key", "%", "value"], rows)


def paper_layout_table(
    runs: list[tuple[str, dict[str, float]]], paper: list[PaperRow] | None = None
) -> str:
    """Runs (name, score dict in [0, 1]) and paper rows in the paper's column layout."""
    header = ["model", *[title for _, title in PAPER_COLUMNS]]
    rows = [[name, *[pct(res.get(key)) for key, _ in PAPER_COLUMNS]] for name, res in runs]
    for row in paper or []:
        rows.append(
            [f"paper: {row.label}", *[f"{row.scores[key]:.1f}" for key, _ in PAPER_COLUMNS]]
        )
    return markdown_table(header, rows)


def subset_display_name(key: str) -> str:
    return SUBSETS_BY_KEY[key].display_name


def run_protocol(run: dict) -> str:
    """How a run was scored, e.g. ``cosine, expected, self`` or ``..., query excluded``."""
    proto = run.get("protocol") or {}
    if not proto:
        return "?"
    self_part = {True: "self", False: "query excluded"}.get(proto.get("include_self"), "?")
    return f"{proto.get('metric', '?')}, {proto.get('ties', '?')}, {self_part}"


def run_data(run: dict) -> str:
    """``GPR1200`` for a full-benchmark run, else ``sample (N images)`` (``?`` if unknown)."""
    data = run.get("data") or {}
    if data.get("full_benchmark") is True and not data.get("skipped_images"):
        return "GPR1200"
    n = data.get("num_images")
    return "?" if n is None else f"sample ({n} images)"


def build_table(runs: list[dict], fmt: str = "md", paper: bool = False) -> str:
    """One row per run (results.json dicts): model, pooling, dtype, paper columns, extras,
    then how it was scored (``protocol``) and on what (``data``: GPR1200 or a sample), so
    runs that are not comparable never look alike."""
    import csv
    import io

    extras = [("map_at_r", "MAP@R"), ("precision_at_1", "P@1"), ("r_precision", "R-prec")]
    header = [
        "model",
        "pooling",
        "dtype",
        *[t for _, t in PAPER_COLUMNS],
        *[t for _, t in extras],
        "protocol",
        "data",
    ]
    rows = []
    for run in sorted(runs, key=lambda r: -r["metrics"]["map"]):
        m = run["metrics"]
        rows.append(
            [
                run["model"],
                run.get("pooling", ""),
                run.get("dtype", ""),
                *[pct(m.get(k)) for k, _ in PAPER_COLUMNS + tuple(extras)],
                run_protocol(run),
                run_data(run),
            ]
        )
    if paper:
        for row in paper_results():
            rows.append(
                [
                    f"paper: {row.label}",
                    "",
                    "",
                    *[f"{row.scores[k]:.1f}" for k, _ in PAPER_COLUMNS],
                    *["-"] * len(extras),
                    "as published",
                    "GPR1200",
                ]
            )
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        return buf.getvalue()
    return markdown_table(header, rows) + "\n"


def compare_table(stats: dict[str, dict]) -> str:
    """Rows of ``compare_runs`` output: mAP of A and B, B - A, its 95% CI and p-value."""
    rows = []
    for key, st in stats.items():
        name = "GPR1200 (all)" if key == "all" else subset_display_name(key)
        rows.append(
            [
                name,
                pct(st["map_a"]),
                pct(st["map_b"]),
                f"{100 * st['difference']:+.2f}",
                f"[{100 * st['ci_low']:+.2f}, {100 * st['ci_high']:+.2f}]",
                f"{st['p_value']:.4f}",
                str(st["categories"]),
            ]
        )
    return markdown_table(["subset", "A", "B", "B - A (pts)", "95% CI", "p", "categories"], rows)
