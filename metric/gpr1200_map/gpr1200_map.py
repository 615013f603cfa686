"""GPR1200 mAP: the evaluate metric for the GPR1200 image-retrieval benchmark.

The maths lives in the ``gpr1200_hf`` package (one implementation). ``gpr1200 export-space
metric OUT`` copies its numpy-only modules, unchanged, next to this script, which imports them
relatively: evaluate's loader copies each sibling imported here (one import per line, no
comment on an import line; a sibling imported only by another sibling would not be copied).
This module adapts them to the ``evaluate`` API: one-shot ``compute``, streaming
``add_batch``, and evaluate's distributed mode.
"""

import datasets
import evaluate
import numpy as np
from .errors import InputError
from .protocol import CITATION
from .ranking import as_array, resolve_labels
from .scoring import score, score_indices

# Imported so that evaluate copies them: scoring uses ranking_torch for device="cuda" and other
# torch devices; both counting backends use ranking_common.
from .ranking_torch import rank_counts_torch
from .ranking_common import Counts

_CITATION = CITATION

_DESCRIPTION = """\
GPR1200 mAP scores image embeddings (or precomputed rankings) with the protocol of the GPR1200
benchmark (Schall et al. 2022): every image queries all images, itself included, and the score
is the mean of the per-query average precision over the whole ranked list ("full mAP"),
reported overall and for each of the six subsets (GLDv2, iNat, IN-Sketch, INSTRE, SOP,
IMDB-Faces). MAP@R, precision@1 and R-precision (query excluded) come along.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: embeddings, an (N, D) float array (one row per image), or, with
        ``mode="indices"``, an (N, K) array of ranked dataset positions per query.
    references: one integer label (GPR1200 category ID) per row. Omit it for the 12000 GPR1200
        images in canonical order (ascending category ID, then file name).
    metric: "cosine" (default; dot product of L2-normalised vectors), "ip" (raw inner product),
        "l2" (ascending Euclidean distance) or "hamming" (predictions are packed binary codes,
        an (N, bytes) uint8 array from np.packbits; ascending number of differing bits).
        Integer predictions under "ip" and "l2" are scored in exact integer arithmetic.
    ties: "expected" (default; exact expectation over orderings of tied scores), "stable"
        (dataset order), "optimistic" (relevant first) or "pessimistic" (relevant last).
    include_self: keep each query in its own ranked list (default True, the official protocol).
    mode: "embeddings" (default) or "indices".
    normalize: indices mode only: "relevant" (default, true AP@K) or "retrieved" (divide by the
        relevant items found in the K, as the official script does for truncated lists).
    device: score on this torch device (e.g. "cuda"); default None uses numpy.
Returns:
    map: mean average precision over all queries, in [0, 1].
    map_landmarks, map_inat, map_sketch, map_instre, map_sop, map_faces: the same over the
        queries of each subset present, in [0, 1].
    map_at_r, precision_at_1, r_precision: query excluded, in [0, 1].
Examples:
    >>> import numpy as np
    >>> gpr1200_map = evaluate.load("gpr1200_map.py")
    >>> embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> labels = [0, 0, 1, 1]
    >>> results = gpr1200_map.compute(predictions=embeddings, references=labels)
    >>> results["map"], results["map_landmarks"], results["precision_at_1"]
    (1.0, 1.0, 1.0)
    >>> results = gpr1200_map.compute(predictions=embeddings, references=[0, 1, 0, 1])
    >>> round(results["map"], 4)
    0.7917
"""

# Stands for "canonical GPR1200 label" in streamed batches (no real category ID is this).
_NO_LABEL = np.iinfo(np.int64).min
_STREAM_FLOAT32 = (
    "add_batch stores predictions as float32 and these {what} do not round-trip exactly "
    "through float32 (the score would silently change): stream float32 predictions, or call "
    "compute() once with the whole array"
)


def _packed_codes(rows):
    """Streamed rows (stored as float32, exact for bytes) back to packed uint8 codes."""
    if rows.dtype == np.uint8:
        return rows
    if rows.dtype.kind not in "fiu" or not np.all((rows >= 0) & (rows <= 255) & (rows % 1 == 0)):
        raise InputError(
            "metric='hamming' takes packed binary codes (uint8, as np.packbits gives), but the "
            "streamed batches hold values that are not bytes 0-255; add_batch the packed codes"
        )
    return rows.astype(np.uint8)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gpr1200Map(evaluate.Metric):
    """GPR1200 full mAP, per-subset mAP, MAP@R, precision@1 and R-precision."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            homepage="https://github.com/Visual-Computing/GPR1200",
            codebase_urls=["https://github.com/Visual-Computing/GPR1200"],
            reference_urls=["https://arxiv.org/abs/2111.13122"],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """One-shot calls in a single process skip evaluate's Arrow round trip."""
        if predictions is not None and self.writer is None and self.num_process == 1:
            return self._compute(predictions, references, **kwargs)
        self._streamed = True  # the rows come back from evaluate's float32 store
        try:
            return super().compute(predictions=predictions, references=references, **kwargs)
        finally:
            self._streamed = False

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Checks the batch (clear errors, nothing written on failure), then stores it."""
        rows = as_array(predictions, "predictions")
        if rows.ndim != 2:
            raise InputError(
                f"a batch of predictions must be 2-D (rows x dims), got shape {rows.shape}"
            )
        if not np.issubdtype(rows.dtype, np.number):
            raise InputError(f"predictions must be numeric, got dtype {rows.dtype}")
        if not np.isfinite(rows).all():
            raise InputError("predictions contain NaN or inf; fix the extractor output")
        big = rows.max(initial=0) >= 2**24 or rows.min(initial=0) <= -(2**24)
        if np.issubdtype(rows.dtype, np.integer) and big:
            raise InputError(
                "values >= 2**24 cannot be streamed exactly through float32; call compute() "
                "once with the whole array"
            )
        if np.issubdtype(rows.dtype, np.floating) and rows.dtype.itemsize > 4:
            with np.errstate(over="ignore", invalid="ignore"):
                exact = np.array_equal(rows.astype(np.float32).astype(rows.dtype), rows)
            if not exact:
                raise InputError(_STREAM_FLOAT32.format(what=f"{rows.dtype} values"))
        if references is None:
            refs = np.full(rows.shape[0], _NO_LABEL, dtype=np.int64)
        else:
            refs = resolve_labels(references, rows.shape[0])
            if refs.dtype.kind in "US":
                raise InputError(
                    "add_batch takes integer references (category IDs); strings cannot be "
                    "mapped to the same IDs across batches: map them to integers first, or "
                    "call compute() once with all of them"
                )
            if (refs == _NO_LABEL).any():
                raise InputError(f"reference {_NO_LABEL} is reserved; use other category IDs")
        return super().add_batch(predictions=rows, references=refs, **kwargs)

    def _compute(
        self,
        predictions,
        references=None,
        metric="cosine",
        ties="expected",
        include_self=True,
        mode="embeddings",
        normalize="relevant",
        device=None,
    ):
        predictions = as_array(predictions, "predictions")
        if references is not None:
            references = as_array(references, "references")
            if references.size and (references == _NO_LABEL).all():
                references = None
            elif references.size and (references == _NO_LABEL).any():
                raise InputError(
                    "some batches had references and others not; pass them for all or none"
                )
        if mode == "indices":
            return score_indices(predictions, references, normalize=normalize)
        if metric == "hamming" and getattr(self, "_streamed", False):
            predictions = _packed_codes(predictions)
        if mode != "embeddings":
            raise InputError(f"mode={mode!r} is not supported; choose embeddings or indices")
        return score(
            predictions,
            references,
            metric=metric,
            ties=ties,
            include_self=include_self,
            device=device,
        )
