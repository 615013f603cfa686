"""Hub-ready export of GPR1200: parquet shards with embedded image bytes and a dataset card."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from . import __version__, protocol
from .assets import asset_dir
from .dataset import EXPORT_PARTIAL, SHARD_RE, load_gpr1200
from .errors import InputError
from .hub_results import EVALUATION_FRAMEWORK, TASKS, eval_yaml

LICENSE_TEXT = (
    "The images are provided for **non-commercial research and educational purposes only**. "
    "Copyright of every image stays with its original owner; the six source datasets (Google "
    "Landmarks v2, iNaturalist, ImageNet-Sketch, INSTRE, Stanford Online Products, IMDB-WIKI) "
    "keep their own terms. Images will be removed on request of a rights holder: open a "
    "discussion on this repository. By downloading you agree to these terms."
)
MAX_SHARD_BYTES = 500 * 2**20
LICENSE_FILE = "LICENSE"
EVAL_YAML = "eval.yaml"


def license_file_text() -> str:
    """The LICENSE file of the dataset repo (the card's ``license_link``)."""
    import textwrap

    body = "\n\n".join(
        textwrap.fill(p, 78)
        for p in (
            "GPR1200 (Schall, Barthel, Hezel and Jung, MMM 2022) - terms of use of this copy.",
            LICENSE_TEXT.replace("**", ""),
            "The IMDB-WIKI subset (category IDs 1000-1199) shows faces of real, identifiable "
            "people. Do not use it to identify, profile or track individuals.",
        )
    )
    return body + "\n"


def _card(ds: datasets.Dataset, repo_id: str, source_name: str, download_size: int) -> DatasetCard:
    data = DatasetCardData(
        license="other",
        license_name="gpr1200-research-only",
        license_link=LICENSE_FILE,
        pretty_name="GPR1200",
        task_categories=["image-feature-extraction"],
        tags=["image-retrieval", "benchmark", "gpr1200"],
        size_categories=["10K<n<100K"]
        if len(ds) >= 10_000
        else ["n<1K", "1K<n<10K"][int(len(ds) >= 1000)],
        extra_gated_prompt="You agree to use GPR1200 for non-commercial research only.",
        extra_gated_fields={"I agree to the license terms": "checkbox"},
    )
    info = ds.info.copy()
    info.download_size = download_size
    info.dataset_size = info.dataset_size or ds.data.nbytes
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": "test", "path": "data/test-*"}]}}
    ).to_dataset_card_data(data)
    ids = list(ds["category_id"])
    subsets = [
        {
            "key": s.key,
            "display_name": s.display_name,
            "source": s.source,
            "first": s.first_category,
            "last": s.last_category,
            "count": len({i for i in ids if s.first_category <= i <= s.last_category}),
        }
        for s in protocol.SUBSETS
    ]
    template = (asset_dir("_dataset_card") / "README.md").read_text(encoding="utf-8")
    return DatasetCard.from_template(
        data,
        template_str=template,
        num_images=len(ds),
        num_categories=len(set(ids)),
        images_per_category=protocol.IMAGES_PER_CATEGORY,
        subsets=subsets,
        faces_images=sum(1 for i in ids if i >= protocol.SUBSETS[-1].first_category),
        repo_id=repo_id,
        license_text=LICENSE_TEXT,
        citation=protocol.CITATION,
        version=__version__,
        source_name=source_name,
        evaluation_framework=EVALUATION_FRAMEWORK,
        tasks=list(TASKS.items()),
    )


def export_hub(
    out_dir: str | Path,
    source: str | Path,
    *,
    categories: str | Path | None = None,
    strict: bool = True,
    cache_dir: str | Path | None = None,
    repo_id: str = "<org>/gpr1200",
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """Write a dataset repo folder: ``data/test-0000i-of-0000n.parquet``, ``LICENSE``,
    ``eval.yaml`` (the benchmark's tasks, for the Hub leaderboard) and ``README.md``.

    ``datasets.load_dataset(out_dir)`` then returns the rows, order and features of
    ``load_gpr1200``. The folder holds no ``.py`` file (datasets would take it for a script).
    Everything is written into ``out_dir/.export-partial`` first and moved into place, the
    README last, so an export stopped midway never loads as a partial dataset.
    """
    out = Path(out_dir)
    _check_target(out, Path(source))
    ds = load_gpr1200(source, categories=categories, cache_dir=cache_dir, strict=strict)
    partial = out / EXPORT_PARTIAL
    if partial.is_dir() and not partial.is_symlink():  # left by an export that was stopped
        shutil.rmtree(partial)
    elif partial.exists() or partial.is_symlink():
        partial.unlink()
    _write_shards(ds, partial / "data", max_shard_bytes)
    import yaml

    (partial / LICENSE_FILE).write_text(license_file_text(), encoding="utf-8")
    spec = yaml.safe_dump(eval_yaml(), sort_keys=False)
    (partial / EVAL_YAML).write_text(spec, encoding="utf-8")
    download_size = sum(p.stat().st_size for p in (partial / "data").glob("test-*.parquet"))
    _card(ds, repo_id, Path(source).name, download_size).save(partial / "README.md")
    _move_into_place(partial, out)
    return out


# What marks each top-level file as written by an earlier export (the only ones replaced).
README_MARK = "Built with gpr1200-hf"
LICENSE_MARK = "GPR1200"


def _check_target(out: Path, source: Path) -> None:
    """Refuse an output that is a file, overlaps the source, whose data/ holds anything but
    export shards, or whose README.md / LICENSE / eval.yaml an earlier export did not write.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose a folder to export into")
    out_abs, src_abs = out.resolve(), source.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents or out_abs in src_abs.parents:
        raise InputError(
            f"the output folder {out} and the source {source} overlap (one is inside the "
            "other); choose an output folder outside the source"
        )
    data = out / "data"
    if data.exists() and not data.is_dir():
        raise InputError(f"{data} exists and is not a folder; choose another output folder")
    for name, ours in (
        ("README.md", lambda t: README_MARK in t),
        (LICENSE_FILE, lambda t: t.startswith(LICENSE_MARK)),
        (EVAL_YAML, _is_our_eval_yaml),
    ):
        path = out / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise InputError(f"{path} exists and is not a file; choose another output folder")
        if path.exists() and not ours(path.read_text(encoding="utf-8", errors="replace")):
            raise InputError(
                f"{path} was not written by export-hub; it would be replaced: choose an empty "
                "or earlier export folder"
            )
    foreign = (
        sorted(p.name for p in data.iterdir() if not SHARD_RE.fullmatch(p.name))
        if data.is_dir()
        else []
    )
    if foreign:
        raise InputError(
            f"{data} holds files that are not export shards ({foreign[:3]}); they would be "
            "lost: choose an empty or earlier export folder"
        )


def _is_our_eval_yaml(text: str) -> bool:
    import yaml

    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(spec, dict) and spec.get("evaluation_framework") == EVALUATION_FRAMEWORK


def _write_shards(ds: datasets.Dataset, folder: Path, max_shard_bytes: int) -> None:
    """``test-0000i-of-0000n.parquet`` shards of at most about ``max_shard_bytes``."""
    folder.mkdir(parents=True)
    num_shards = max(1, math.ceil(ds.data.nbytes / max_shard_bytes))
    for i in range(num_shards):
        shard = ds.shard(num_shards, i, contiguous=True)
        # The builder stores image bytes (never paths), so the parquet embeds them.
        shard.to_parquet(str(folder / f"test-{i:05d}-of-{num_shards:05d}.parquet"))


def _move_into_place(partial: Path, out: Path) -> None:
    """Swap the new data/ in for the old one, move any other file, the README last.

    Until the README moves, the folder holds either the previous complete export, no data/,
    or the new complete data/: a stopped export never loads as a partial dataset. Files
    written into ``partial`` besides data/ and README.md (e.g. eval.yaml) move in between.
    """
    if (out / "data").exists():
        os.replace(out / "data", partial / "old-data")
    os.replace(partial / "data", out / "data")
    for extra in sorted(partial.iterdir()):
        if extra.name not in ("README.md", "old-data"):
            os.replace(extra, out / extra.name)
    os.replace(partial / "README.md", out / "README.md")
    shutil.rmtree(partial)


def push_folder(folder: str | Path, repo_id: str, *, private: bool = True) -> str:
    """Upload an exported folder's own files to a dataset repo, gated before any data lands.

    The repo is created private (an existing public repo is refused), gating is switched on
    (``HfApi.update_repo_settings(gated="auto")``: users accept the card's terms first), and
    only then are ``data/*.parquet``, README.md, LICENSE and eval.yaml uploaded.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if not api.dataset_info(repo_id).private and private:
            raise InputError(
                f"the dataset repo {repo_id} already exists and is public; make it private "
                "(or push elsewhere) so that nothing is exposed before gating is on"
            )
        api.update_repo_settings(repo_id, gated="auto", repo_type="dataset")
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=["data/*.parquet", "README.md", LICENSE_FILE, EVAL_YAML],
        )
    except InputError:
        raise
    except Exception as e:  # offline, unauthorised, name taken: one clear line
        raise InputError(
            f"could not push {folder} to the dataset repo {repo_id}: {type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]} (the local folder is complete; retry with "
            "network access and `hf auth login`)"
        ) from None
    return f"uploaded {info}; gated: users accept the license terms to get access"
