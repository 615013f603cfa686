"""The artifacts meant for the Hub, tried as they would be uploaded: fresh virtual environments
holding only what each declares, the Space app started as Spaces start it, a real browser.

Each environment is built once per session (pip from the package index, as a Space build does).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml

import gpr1200_hf as g
from gpr1200_hf.assets import ASSET_DIRS
from gpr1200_hf.spaces import METRIC_APP_MODULES, METRIC_MODULES, export_metric_space
from tests.conftest import REPO, browser_page, make_venv, serve_space

PACKAGE = REPO / "gpr1200_hf"
# A requirement line naming a PyPI project: name, optional extras, optional version specifiers.
PYPI_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([<>=!~].*)?$")


@pytest.fixture(scope="session")
def metric_space(tmp_path_factory) -> Path:
    return export_metric_space(tmp_path_factory.mktemp("hub") / "gpr1200_map")


@pytest.fixture(scope="session")
def metric_venv(metric_space, tmp_path_factory) -> Path:
    """Only evaluate and the Space's requirements.txt: no gpr1200-hf."""
    return make_venv(
        tmp_path_factory.mktemp("venv") / "metric",
        "evaluate",
        "-r",
        str(metric_space / "requirements.txt"),
    )


@pytest.fixture(scope="session")
def sample():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(0, 1200, 20), 4)
    x = rng.standard_normal((y.size, 12)) + 2 * np.repeat(rng.standard_normal((60, 12)), 4, 0)
    return x.astype(np.float32), y


# ----------------------------------------------------------------------------- metric Space


def test_metric_space_holds_exactly_the_upload(metric_space):
    files = sorted(str(p.relative_to(metric_space)) for p in metric_space.rglob("*") if p.is_file())
    assert files == sorted(
        ["gpr1200_map.py", "README.md", "app.py", "requirements.txt"]
        + list(METRIC_MODULES)
        + list(METRIC_APP_MODULES)
    )
    # One source of truth: the scoring modules are the package's own files, byte for byte.
    for rel in METRIC_MODULES + METRIC_APP_MODULES:
        assert (metric_space / rel).read_bytes() == (PACKAGE / rel).read_bytes(), rel
    for rel in ("gpr1200_map.py", "README.md", "app.py", "requirements.txt"):
        assert (metric_space / rel).read_bytes() == (REPO / "metric/gpr1200_map" / rel).read_bytes()


def _relative_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
    return found


def test_metric_siblings_are_closed_and_all_imported_by_the_script(metric_space):
    """evaluate copies only what the script imports (one level): every module a sibling
    imports must be imported by the script itself, on its own line, at the top level."""
    script = metric_space / "gpr1200_map.py"
    top_level = {
        line.split()[1][1:]
        for line in script.read_text().splitlines()
        if line.startswith("from .") and "#" not in line
    }
    modules = {m.removesuffix(".py") for m in METRIC_MODULES}
    assert top_level == modules
    for m in modules:
        assert _relative_imports(metric_space / f"{m}.py") <= modules, m
    app_modules = {m.removesuffix(".py") for m in METRIC_APP_MODULES if m.endswith(".py")}
    for m in app_modules:
        assert _relative_imports(metric_space / f"{m}.py") <= modules | app_modules, m


def test_metric_requirements_are_pypi_names_and_match_the_space_sdk(metric_space):
    reqs = [
        line.strip()
        for line in (metric_space / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(PYPI_REQUIREMENT.match(r) for r in reqs), reqs
    assert not any(r.lower().startswith(("gpr1200", "torch")) for r in reqs)
    meta = yaml.safe_load((metric_space / "README.md").read_text().split("---")[1])
    assert f"gradio=={meta['sdk_version']}" in reqs


SCORE_IN_VENV = textwrap.dedent(
    """
    import json, sys
    import evaluate, numpy as np
    try:
        import gpr1200_hf
    except ImportError:
        pass
    else:
        raise SystemExit("gpr1200_hf must not be importable here")
    x, y = np.load(sys.argv[2]), np.load(sys.argv[3])
    metric = evaluate.load(sys.argv[1])
    out = {"one_shot": metric.compute(predictions=x, references=y, ties="stable")}
    for i in range(0, len(y), 50):
        metric.add_batch(predictions=x[i : i + 50], references=y[i : i + 50])
    out["streamed"] = metric.compute(ties="stable")
    out["l2"] = metric.compute(predictions=x, references=y, metric="l2", include_self=False)
    print(json.dumps(out))
    """
)


def test_metric_loads_in_fresh_venv_and_matches_the_library(
    metric_space, metric_venv, sample, tmp_path
):
    x, y = sample
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "run.py").write_text(SCORE_IN_VENV)
    for target in (metric_space, metric_space / "gpr1200_map.py"):
        proc = subprocess.run(
            [str(metric_venv), tmp_path / "run.py", target, tmp_path / "x.npy", tmp_path / "y.npy"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["one_shot"] == g.score(x, y, ties="stable")
        assert got["streamed"] == got["one_shot"]
        assert got["l2"] == g.score(x, y, metric="l2", include_self=False)


def test_metric_app_in_fresh_venv_scores_an_upload_in_a_browser(
    metric_space, metric_venv, sample, tmp_path
):
    x, y = sample
    names = np.array([f"{c}_img_{i}.jpg" for i, c in enumerate(y)])
    np.savez(tmp_path / "emb.npz", embeddings=x, file_names=names)
    (tmp_path / "garbage.npy").write_bytes(b"not an array at all")
    want = g.score(x, y)

    def score_upload(page, path, shows: str) -> str:
        """Load the page, upload ``path``, press Score; the page text once it ``shows``."""
        page.goto(url)
        page.get_by_role("button", name="Score").wait_for(timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(path))
        page.wait_for_timeout(1500)
        page.get_by_role("button", name="Score").click()
        page.wait_for_function(f"document.body.innerText.includes({shows!r})", timeout=60_000)
        return page.locator("body").inner_text()

    with serve_space(metric_space, metric_venv) as url, browser_page() as page:
        text = score_upload(page, tmp_path / "emb.npz", "map_landmarks")
        for key in ("map", "map_landmarks", "map_faces", "precision_at_1"):
            assert str(want[key]) in text, key  # the exact value, as the library gives it
        page.screenshot(path=str(tmp_path / "metric_space.png"), full_page=True)

        # A bad upload: one line naming the file, no server path.
        text = score_upload(page, tmp_path / "garbage.npy", "garbage.npy:")
        message = next(line for line in text.splitlines() if "garbage.npy:" in line)
        assert "/tmp" not in message and "gradio" not in message.lower(), message


# ----------------------------------------------------------------------------- the package


def test_no_symlinks_in_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert tracked, "not a git checkout"
    links = [line.split()[-1] for line in tracked.splitlines() if line.startswith("120000")]
    assert links == []
    assert "egg-info" not in tracked


def test_pyproject_maps_the_asset_folders():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {k.removeprefix("gpr1200_hf."): v for k, v in config["package-dir"].items()}
    assert {k: mapped[k] for k in ASSET_DIRS} == ASSET_DIRS
    assets = {f"gpr1200_hf.{k}" for k in ASSET_DIRS}
    assert set(config["packages"]) == {"gpr1200_hf", "gpr1200_hf.data"} | assets


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sdist_and_wheel_pass_twine_check(dist):
    files = sorted(p.name for p in dist.iterdir())
    assert any(f.endswith(".whl") for f in files) and any(f.endswith(".tar.gz") for f in files)
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


WHEEL_CHECK = textwrap.dedent(
    """
    import json, sys
    import evaluate, numpy as np
    import gpr1200_hf
    assert "site-packages" in gpr1200_hf.__file__, gpr1200_hf.__file__
    x, y = np.load(sys.argv[1]), np.load(sys.argv[2])
    metric = evaluate.load(gpr1200_hf.METRIC_PATH)
    print(json.dumps([metric.compute(predictions=x, references=y), gpr1200_hf.score(x, y)]))
    """
)


def test_wheel_in_fresh_venv_runs_cli_and_metric(dist, sample, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = next(dist.glob("*.whl"))
    python = make_venv(tmp / "venv", str(wheel), "evaluate")
    exe = python.parent / "gpr1200"
    env = {
        "HF_HUB_OFFLINE": "1",
        "HOME": str(tmp),
        "PATH": f"{python.parent}:/usr/bin:/bin",
    }

    def run(*args):
        return subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, cwd=tmp, env=env, timeout=300
        )

    version = run(exe, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"gpr1200 {g.__version__}"
    x, y = sample
    np.save(tmp / "x.npy", x)
    np.save(tmp / "y.npy", y)
    (tmp / "labels.json").write_text(json.dumps(y.tolist()))
    scored = run(exe, "score", tmp / "x.npy", "--labels", tmp / "labels.json", "--json", "s.json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp / "s.json").read_text())["map"] == pytest.approx(
        g.score(x, y)["map"], abs=1e-12
    )
    (tmp / "check.py").write_text(WHEEL_CHECK)
    checked = run(python, tmp / "check.py", tmp / "x.npy", tmp / "y.npy")
    assert checked.returncode == 0, checked.stderr[-3000:]
    from_metric, from_library = json.loads(checked.stdout.strip().splitlines()[-1])
    assert from_metric == from_library == g.score(x, y)
