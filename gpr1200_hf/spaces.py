"""Folders to upload to the Hub as Spaces, written from the package's own files.

One source of truth: the scoring modules are the package's modules copied byte for byte; the
Space's script, card, app and requirements come from ``metric/gpr1200_map``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .assets import asset_dir
from .errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent

# The modules the metric script imports (evaluate copies exactly these next to it). Each is
# numpy-only at import time and imports only modules of this list, relatively.
METRIC_MODULES: tuple[str, ...] = (
    "errors.py",
    "protocol.py",
    "ranking.py",
    "ranking_common.py",
    "ranking_torch.py",
    "scoring.py",
)
# What the Space's app.py needs besides: file readers, the paper's table and the chart.
METRIC_APP_MODULES: tuple[str, ...] = ("io.py", "report.py", "plots.py", "data/paper_results.csv")
METRIC_SPACE_FILES: tuple[str, ...] = ("gpr1200_map.py", "README.md", "app.py", "requirements.txt")


def _metric_sources() -> dict[str, Path]:
    """Relative path in the Space folder -> source file."""
    space = asset_dir("_metric_space")
    files = {name: space / name for name in METRIC_SPACE_FILES}
    files |= {name: PACKAGE_DIR / name for name in METRIC_MODULES + METRIC_APP_MODULES}
    return files


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the Space (it will be created)")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(
            f"{out} is not empty; give a new or empty folder (nothing in it was changed)"
        )


def _copy_all(files: dict[str, Path], out: Path) -> Path:
    """Copy ``files`` into ``out`` (absent or empty) all at once: a failure leaves no half."""
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache or Space folder
    try:
        for rel, src in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / rel)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_metric_space(out_dir: str | Path) -> Path:
    """Write the ``gpr1200_map`` metric's Space folder (absent or empty) and return it.

    ``evaluate.load(out_dir / "gpr1200_map.py")`` (or ``evaluate.load(out_dir)`` when the folder
    is named ``gpr1200_map``) then needs only the packages of its ``requirements.txt``.
    """
    return _copy_all(_metric_sources(), Path(out_dir))


def _metric_contents() -> dict[str, bytes]:
    """Relative path in the Space folder -> the bytes it must hold."""
    return {rel: src.read_bytes() for rel, src in sorted(_metric_sources().items())}


def metric_fingerprint(contents: dict[str, bytes] | None = None) -> str:
    """A hash of every file of the metric's Space folder (names and bytes)."""
    h = hashlib.sha256()
    for rel, data in (contents or _metric_contents()).items():
        h.update(rel.encode() + b"\0" + data + b"\0")
    return h.hexdigest()


def cache_root() -> Path:
    """``$GPR1200_HF_CACHE``, else ``$XDG_CACHE_HOME/gpr1200_hf``, else ``~/.cache/gpr1200_hf``."""
    if os.environ.get("GPR1200_HF_CACHE"):
        return Path(os.environ["GPR1200_HF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpr1200_hf"


def metric_path() -> str:
    """A folder ``.../gpr1200_map`` that ``evaluate.load`` takes: this package's metric Space.

    Written once per content (the folder name holds a hash of every file), so it always matches
    the installed package.
    """
    contents = _metric_contents()  # read once: names the folder and checks it
    folder = cache_root() / "metric" / metric_fingerprint(contents)[:16] / "gpr1200_map"
    if folder.is_dir() and not _matches(folder, contents):  # edited or damaged: write it anew
        shutil.rmtree(folder)
    if not folder.is_dir():
        try:
            export_metric_space(folder)
        except (InputError, OSError):
            # Another process may have written it meanwhile; anything else is a real failure.
            if not (folder.is_dir() and _matches(folder, contents)):
                raise
    return str(folder)


def _matches(folder: Path, contents: dict[str, bytes]) -> bool:
    """The folder holds exactly these files, byte for byte."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    if present != set(contents):
        return False
    return all((folder / rel).read_bytes() == data for rel, data in contents.items())


# --------------------------------------------------------------------------- explorer Space

EXPLORER_SPACE_FILES: tuple[str, ...] = ("app.py", "README.md", "requirements.txt")
# A local (non-Hub) sample larger than this is not copied into a Space: push it to the Hub.
MAX_COPIED_DATA_BYTES = 200 * 2**20
# A run's embeddings must reproduce its mAP to this (float noise of another device is smaller).
MAP_TOLERANCE = 1e-4


def _package_files() -> dict[str, Path]:
    """The whole package, byte for byte, as ``gpr1200_hf/`` of the Space (code and data)."""
    files = {f"gpr1200_hf/{p.name}": p for p in sorted(PACKAGE_DIR.glob("*.py"))}
    files |= {f"gpr1200_hf/data/{p.name}": p for p in sorted((PACKAGE_DIR / "data").glob("*"))}
    return files


def _run_folders(paths) -> list[Path]:
    """Each path is a run folder (results.json) or a folder of runs (``*/results.json``)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "results.json").is_file():
            found.append(p)
        elif p.is_dir() and any(p.glob("*/results.json")):
            found += sorted(r.parent for r in p.glob("*/results.json"))
        else:
            raise InputError(
                f"{p}: no results.json in it or in its sub-folders; give run folders written "
                "by gpr1200 evaluate (or the --output-dir holding them)"
            )
    return list(dict.fromkeys(f.resolve() for f in found))


def _run_embeddings(run) -> Path:
    """The run's embeddings file, checked to reproduce the run's mAP."""
    from .scoring import average_precisions

    candidates = [run.embeddings_path]
    cache = Path(run.results.get("embeddings_cache", ""))
    candidates.append(run.folder.parent / "embeddings" / cache.name / "embeddings.safetensors")
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise InputError(
            f"{run.folder}: its embeddings ({run.embeddings_path}) are gone; rerun gpr1200 "
            "evaluate with the same --output-dir (it recomputes only what is missing)"
        )
    run.__dict__.pop("embeddings", None)
    run.results = dict(run.results, embeddings_cache=str(path.parent))
    protocol_ = run.results["protocol"]
    got = float(
        average_precisions(
            run.embeddings,
            run.per_query.category_id,
            metric=protocol_["metric"],
            ties=protocol_["ties"],
            include_self=protocol_["include_self"],
        ).mean()
    )
    want = float(run.results["metrics"]["map"])
    if abs(got - want) > MAP_TOLERANCE:
        raise InputError(
            f"{run.folder}: its embeddings ({path}) give mAP {got:.6f} but results.json says "
            f"{want:.6f}: they are not this run's; rerun gpr1200 evaluate"
        )
    return path


def _data_files(src: Path, dest: str) -> dict[str, Path]:
    """A local sample (file or folder) to copy under ``dest``: regular files only, size-capped."""
    if src.is_file():
        files = {f"{dest}/{src.name}": src}
    else:
        files = {}
        for p in sorted(src.rglob("*")):
            if p.is_symlink():
                raise InputError(f"{src}: {p.relative_to(src)} is a link; copy the file there")
            if p.is_file():
                files[f"{dest}/{src.name}/{p.relative_to(src).as_posix()}"] = p
    size = sum(p.stat().st_size for p in files.values())
    if size > MAX_COPIED_DATA_BYTES:
        raise InputError(
            f"{src}: {size / 2**20:.0f} MB of local images is too much to copy into a Space "
            f"(at most {MAX_COPIED_DATA_BYTES // 2**20} MB); push it to the Hub (gpr1200 "
            "export-hub --push) and evaluate with --data ORG/NAME"
        )
    return files


def _run_data(run, copied: dict[Path, str]) -> tuple[dict, dict[str, Path]]:
    """(the run's ``explorer.json`` data entry, files to copy for it). ``copied`` maps each
    local source already copied to its folder under ``runs/``."""
    data = run.results["data"]
    location, categories = data["location"], data.get("categories")
    if str(data.get("source", "")).startswith("Hub dataset "):
        return {"location": location, "hub": True}, {}
    src = Path(location)
    if not src.exists():
        raise InputError(
            f"{run.folder}: its images ({location}) are not found from here; run export-space "
            "from the folder where you ran gpr1200 evaluate"
        )
    if data.get("full_benchmark"):
        raise InputError(
            f"{run.folder}: its images are the local full benchmark ({location}), which a Space "
            "cannot read and must not republish; push it as a gated Hub dataset (gpr1200 "
            "export-hub --push), evaluate with --data ORG/NAME and export that run"
        )
    src = src.resolve()
    files: dict[str, Path] = {}
    if src not in copied:
        copied[src] = f"_data/{len(copied)}"
        files = _data_files(src, f"runs/{copied[src]}")
    entry = {"location": f"../{copied[src]}/{src.name}", "categories": None, "hub": False}
    if categories:
        cat = Path(categories).resolve()
        if not cat.is_file():
            raise InputError(f"{run.folder}: its category file {categories} is not found")
        if cat.is_relative_to(src) and src.is_dir():
            entry["categories"] = f"{entry['location']}/{cat.relative_to(src).as_posix()}"
        else:
            entry["categories"] = f"../{copied[src]}/categories-{cat.name}"
            files[f"runs/{copied[src]}/categories-{cat.name}"] = cat
    return entry, files


def _public_results(path: Path, tmp: Path) -> Path:
    """A copy of results.json for a public Space: this machine's absolute paths (the data's
    location, categories, the embeddings cache, a local model's folder) cut to their last part
    as ``<local>/name``; numbers unchanged. The
    Space finds its images through explorer.json and its embeddings next to results.json."""
    import json

    results = json.loads(path.read_text(encoding="utf-8"))

    def local(value):
        return (
            f"<local>/{Path(value).name}"
            if isinstance(value, str) and Path(value).is_absolute()
            else value
        )

    data = results.get("data", {})
    for key in ("source", "location", "categories"):
        if key in data:
            data[key] = local(data[key])
    if isinstance(data.get("source"), str):
        data["source"] = " ".join(
            local(w) if w.startswith("/") else w for w in data["source"].split(" ")
        )
    for key in ("embeddings_cache", "model"):  # a local checkpoint's folder, too
        if key in results:
            results[key] = local(results[key])
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return out


def _explorer_runs(paths, tmp: Path) -> dict[str, Path]:
    """``runs/...`` files of the Space for these run folders; ``explorer.json`` files in tmp."""
    import json

    from .explorer import EMBEDDINGS, SPACE_FILE, load_run

    files: dict[str, Path] = {}
    copied: dict[Path, str] = {}
    names: set[str] = set()
    for folder in _run_folders(paths):
        try:
            run = load_run(folder)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{folder}: not a readable run ({e})") from None
        name = folder.name
        while name in names or name.startswith("_") or name == "hf-cache":
            name += "-2"
        names.add(name)
        files[f"runs/{name}/results.json"] = _public_results(folder / "results.json", tmp / name)
        files[f"runs/{name}/per_query.npz"] = folder / "per_query.npz"
        files[f"runs/{name}/{EMBEDDINGS}"] = _run_embeddings(run)
        entry, data_files = _run_data(run, copied)
        files |= data_files
        ref = tmp / name / SPACE_FILE
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(json.dumps({"data": entry}, indent=2) + "\n")
        files[f"runs/{name}/{SPACE_FILE}"] = ref
    return files


def build_demo_runs(out: Path, instead: str = "pass --runs RUN_DIR") -> Path:
    """The demo sample and the weight-free baseline runs, built in ``out`` (needs torch, for
    the extraction's DataLoader); ``instead`` says what to do without torch."""
    import importlib.util

    from .explorer import DEMO_MODELS
    from .runner import evaluate_model

    if importlib.util.find_spec("torch") is None:
        raise InputError(
            f"building the explorer's demo runs needs torch (pip install torch); or {instead}"
        )
    for model in DEMO_MODELS:
        evaluate_model(model, demo=True, output_dir=out, workers=0, progress=False)
    return out


def export_explorer_space(out_dir: str | Path, runs=()) -> Path:
    """Write the retrieval explorer's Space folder (absent or empty) and return it.

    The folder holds app.py, README.md, requirements.txt (PyPI packages only), the package's
    modules copied unchanged into ``gpr1200_hf/``, and ``runs/``: each run's results.json,
    per_query.npz and embeddings (checked to reproduce its mAP), plus its images: a Hub
    dataset id is kept, a local sample is copied (a local full benchmark is refused). Without
    ``runs`` the demo sample and the weight-free baseline runs are built and shipped.
    """
    out = Path(out_dir)
    _check_target(out)
    space = asset_dir("_explorer_space")
    files = {name: space / name for name in EXPLORER_SPACE_FILES} | _package_files()
    with tempfile.TemporaryDirectory(prefix="gpr1200-explorer-") as tmp:
        refs = Path(tmp) / "refs"
        sources = list(runs) or [build_demo_runs(Path(tmp) / "demo")]
        files |= _explorer_runs(sources, refs)
        return _copy_all(files, out)
