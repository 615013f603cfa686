"""Benchmark results in the forms the Hub reads: the benchmark's ``eval.yaml``, a model repo's
``.eval_results/gpr1200.yaml`` (huggingface_hub ``EvalResultEntry``) and the legacy
``model-index``. Only a run on the full benchmark is written as a benchmark result.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import __version__, protocol
from .errors import InputError

# A Hub repo id, ORG/NAME (what --data, --hub-dataset and --model take for the Hub).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# The framework name the Hub must know (allow-listed) for eval.yaml to be valid.
EVALUATION_FRAMEWORK = "gpr1200-hf"
# Task ids, stated once: the overall full mAP and one per subset (config default, split test).
TASKS: dict[str, str] = {"map": "GPR1200 full mAP over all 12000 queries"} | {
    f"map_{s.key}": f"GPR1200 full mAP over the {s.display_name} queries ({s.source})"
    for s in protocol.SUBSETS
}
CONFIG, SPLIT = "default", "test"
# The benchmark's protocol: only runs scored this way are written as leaderboard results.
BENCHMARK_PROTOCOL = {"metric": "cosine", "ties": "expected", "include_self": True}
EVAL_RESULTS_FILE = ".eval_results/gpr1200.yaml"
MODEL_INDEX_FILE = "model_index.yaml"
SOURCE_URL = "https://arxiv.org/abs/2111.13122"
# A Hub task id (hf.co/tasks): retrieval is scored on image features.
HUB_TASK_TYPE = "image-feature-extraction"


def check_repo_id(repo_id: str, flag: str) -> str:
    """``repo_id`` if it is a Hub id ``ORG/NAME``, else ``InputError`` naming ``flag``."""
    if not HUB_ID.fullmatch(repo_id or ""):
        raise InputError(f"{flag} {repo_id!r} is not a Hub repo id; write it as ORG/NAME")
    return repo_id


def eval_yaml() -> dict:
    """The ``eval.yaml`` at the root of the GPR1200 dataset repo (gives its page a leaderboard)."""
    return {
        "name": "GPR1200",
        "description": (
            "General-purpose content-based image retrieval (Schall et al., MMM 2022): every "
            "image queries all 12000 images, itself included; the score is the mean average "
            "precision over the whole ranked list (full mAP), in percent, overall and per "
            "subset."
        ),
        "evaluation_framework": EVALUATION_FRAMEWORK,
        "tasks": [{"id": task, "config": CONFIG, "split": SPLIT} for task in TASKS],
    }


def why_not_a_benchmark_result(results: dict) -> str | None:
    """None when ``results`` (a results.json dict) is a full-benchmark run, else the reason."""
    data = results.get("data", {})
    skipped = data.get("skipped_images") or []
    if skipped:
        return (
            f"{len(skipped)} image(s) of the source were skipped as unreadable (first: "
            f"{skipped[0]}); replace them to score the benchmark"
        )
    if not data.get("full_benchmark"):
        return (
            f"the run scored a sample ({data.get('num_images')} images, "
            f"{data.get('num_categories')} categories), not the 12000 GPR1200 images with "
            "the official categories"
        )
    proto = results.get("protocol", {})
    off = {k: proto.get(k) for k, v in BENCHMARK_PROTOCOL.items() if proto.get(k) != v}
    if off:
        differs = ", ".join(f"{k}={v}" for k, v in off.items())
        return (
            f"the run's protocol differs from the benchmark's ({differs}; the leaderboard uses "
            "metric=cosine, ties=expected, query included)"
        )
    return None


def _notes(results: dict) -> str:
    proto = results.get("protocol", {})
    self_match = "query included" if proto.get("include_self", True) else "query excluded"
    return (
        f"pooling={results.get('pooling')}, dtype={results.get('dtype')}, "
        f"metric={proto.get('metric')}, ties={proto.get('ties')}, {self_match}; "
        f"gpr1200-hf {__version__}"
    )


def eval_result_entries(
    results: dict, dataset_id: str, dataset_revision: str | None = None
) -> list:
    """``EvalResultEntry`` per task, values in percent (two decimals) like the paper's tables."""
    from huggingface_hub import EvalResultEntry

    reason = why_not_a_benchmark_result(results)
    if reason:
        raise InputError(f"no benchmark result to write: {reason}")
    metrics = results["metrics"]
    missing = [t for t in TASKS if t not in metrics]
    if missing:
        raise InputError(f"results lack {missing}; rerun gpr1200 evaluate on the full data")
    return [
        EvalResultEntry(
            dataset_id=dataset_id,
            task_id=task,
            value=round(100 * float(metrics[task]), 2),
            dataset_revision=dataset_revision,
            date=results.get("date"),
            source_url=SOURCE_URL,
            source_name="gpr1200-hf (GPR1200 protocol, Schall et al. 2022)",
            notes=_notes(results),
        )
        for task in TASKS
    ]


def model_index(results: dict, dataset_id: str) -> list[dict]:
    """The legacy model-card ``model-index`` (mAP in percent) with a real Hub task id."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    evals = [
        EvalResult(
            task_type=HUB_TASK_TYPE,
            task_name="Image retrieval (GPR1200)",
            dataset_type=dataset_id,
            dataset_name="GPR1200",
            dataset_config=CONFIG,
            dataset_split=SPLIT,
            dataset_revision=results.get("data", {}).get("revision"),
            metric_type="map",
            metric_name=description,
            metric_value=round(100 * float(results["metrics"][task]), 2),
            source_name="gpr1200-hf",
            source_url=SOURCE_URL,
        )
        for task, description in TASKS.items()
    ]
    return eval_results_to_model_index(results["model"], evals)


def write_hub_results(run_dir: Path, results: dict, dataset_id: str | None) -> list[str]:
    """Write ``.eval_results/gpr1200.yaml`` and ``model_index.yaml`` when they would be true.

    Returns the lines to tell the user: what was written, or why nothing was.
    """
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml

    for stale in (run_dir / EVAL_RESULTS_FILE, run_dir / MODEL_INDEX_FILE):
        stale.unlink(missing_ok=True)
    reason = why_not_a_benchmark_result(results)
    if reason:
        return [f"no Hub eval results or model-index written: {reason}"]
    if not dataset_id:
        return [
            "no Hub eval results or model-index written: the data did not come from the Hub; "
            "pass --hub-dataset ORG/NAME (the GPR1200 dataset repo with eval.yaml)"
        ]
    revision = results.get("data", {}).get("revision")
    entries = eval_result_entries(results, dataset_id, revision)
    path = run_dir / EVAL_RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False))
    (run_dir / MODEL_INDEX_FILE).write_text(
        yaml.safe_dump({"model-index": model_index(results, dataset_id)}, sort_keys=False)
    )
    return [f"wrote {path} (copy it into the model repo, or: gpr1200 push-results)"]


def push_results(
    run_dir: str | Path,
    model_repo: str,
    *,
    token: str | None = None,
    allow_other_model: bool = False,
) -> str:
    """Open a pull request on ``model_repo`` adding this run's eval results; returns its URL."""
    from huggingface_hub import HfApi

    check_repo_id(model_repo, "--model")
    run = Path(run_dir)
    if not (run / "results.json").is_file():
        raise InputError(
            f"{run} is not a run folder (no results.json); give a folder written "
            "by gpr1200 evaluate"
        )
    import json

    model = json.loads((run / "results.json").read_text(encoding="utf-8")).get("model")
    if model != model_repo and not allow_other_model:
        raise InputError(
            f"the run evaluated {model!r}, not {model_repo!r}; push to the model it evaluated, "
            "or pass --allow-other-model (e.g. a local checkpoint of that repo)"
        )
    path = run / EVAL_RESULTS_FILE
    if not path.is_file():
        raise InputError(
            f"{path} does not exist: only a full-benchmark run evaluated with a Hub dataset id "
            "(--hub-dataset) has eval results to push"
        )
    try:
        commit = HfApi(token=token).upload_file(
            path_or_fileobj=str(path),
            path_in_repo=EVAL_RESULTS_FILE,
            repo_id=model_repo,
            repo_type="model",
            create_pr=True,
            commit_message="Add GPR1200 evaluation results",
            commit_description=(
                "GPR1200 full mAP (overall and per subset, percent), written by gpr1200-hf."
            ),
        )
    except Exception as e:  # offline, unauthorised, missing repo: one clear line
        raise InputError(
            f"could not open a pull request on {model_repo}: {type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None
    return commit.pr_url or str(commit)
