"""gpr1200-hf: the GPR1200 image-retrieval benchmark on the Hugging Face stack."""

from __future__ import annotations

from . import protocol
from .errors import DataError, InputError
from .protocol import SUBSETS, canonical_labels
from .ranking import RankingResult, rank_metrics
from .scoring import (
    average_precisions,
    rank_metrics_from_indices,
    score,
    score_indices,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # METRIC_PATH is computed on first use: it writes the metric's Space folder into the cache.
    if name == "METRIC_PATH":
        from .spaces import metric_path

        return metric_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRIC_PATH",
    "SUBSETS",
    "DataError",
    "InputError",
    "RankingResult",
    "average_precisions",
    "load_gpr1200",
    "load_metric",
    "canonical_labels",
    "protocol",
    "rank_metrics",
    "rank_metrics_from_indices",
    "score",
    "score_indices",
]


def load_gpr1200(*args, **kwargs):
    """GPR1200 as a ``datasets.Dataset`` (see ``gpr1200_hf.dataset.load_gpr1200``)."""
    from .dataset import load_gpr1200 as _load

    return _load(*args, **kwargs)


def load_metric(**kwargs):
    """The ``gpr1200_map`` evaluate metric shipped with this package."""
    import evaluate

    from .spaces import metric_path

    return evaluate.load(metric_path(), **kwargs)
