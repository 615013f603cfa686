"""gpr1200-hf: the GPR1200 image-retrieval benchmark on the Hugging Face stack."""

from __future__ import annotations

from pathlib import Path

from . import protocol
from .protocol import SUBSETS, canonical_labels
from .ranking import InputError, RankingResult, rank_metrics
from .scoring import (
    average_precisions,
    rank_metrics_from_indices,
    score,
    score_indices,
)

__version__ = "0.1.0"

METRIC_PATH = str(Path(__file__).resolve().parent / "metric" / "gpr1200_map")

__all__ = [
    "METRIC_PATH",
    "SUBSETS",
    "InputError",
    "RankingResult",
    "average_precisions",
    "canonical_labels",
    "protocol",
    "rank_metrics",
    "rank_metrics_from_indices",
    "score",
    "score_indices",
]
