"""Charts (matplotlib, imported lazily): per-subset bars of runs beside paper rows."""

from __future__ import annotations

from pathlib import Path

from .protocol import SUBSETS
from .report import PaperRow


def subset_chart(
    runs: list[tuple[str, dict]], paper: list[PaperRow] | None = None, title: str | None = None
):
    """A matplotlib Figure: grouped bars (percent) over the overall score and the six subsets."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    keys = ["map", *[f"map_{s.key}" for s in SUBSETS]]
    titles = ["GPR1200", *[s.display_name for s in SUBSETS]]
    series = [(name, [100 * res[k] if k in res else np.nan for k in keys]) for name, res in runs]
    series += [(f"paper: {row.label}", [row.scores[k] for k in keys]) for row in paper or []]
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=100)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(keys))
    for i, (name, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, titles)
    ax.set_ylabel("mAP (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10, color="darkred")
    fig.tight_layout()
    return fig


def save_subset_chart(path: str | Path, runs, paper=None, title: str | None = None) -> Path:
    import matplotlib.pyplot as plt

    fig = subset_chart(runs, paper, title)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
