"""The explorer's Space folder (``gpr1200 export-space explorer``): what it holds, what it
refuses, and the folder served as a Space serves it, from a fresh virtual environment made
only from its requirements.txt, driven in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

import gpr1200_hf as g
from gpr1200_hf.assets import asset_dir
from gpr1200_hf.cli import main
from gpr1200_hf.errors import InputError
from gpr1200_hf.explorer import SPACE_FILE, discover_runs, load_run
from gpr1200_hf.runner import evaluate_model
from gpr1200_hf.spaces import PACKAGE_DIR, export_explorer_space
from tests.conftest import browser_page, make_venv, serve_space

PACKAGE = Path(g.__file__).resolve().parent


@pytest.fixture(scope="module")
def demo_space(tmp_path_factory) -> Path:
    """``export-space explorer OUT`` with no runs: the demo is built and shipped."""
    return export_explorer_space(tmp_path_factory.mktemp("demo-space") / "space")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """A tiny transformers model's run and a baseline run on the demo sample."""
    from tests.tiny_models import save_tiny

    root = tmp_path_factory.mktemp("runs")
    model = save_tiny("vit", root / "tiny-vit")
    out = root / "gpr1200-runs"
    for m in (str(model), "baseline:color-only"):
        evaluate_model(m, demo=True, output_dir=out, workers=0, progress=False)
    return out


@pytest.fixture(scope="module")
def runs_space(tmp_path_factory, runs_dir) -> Path:
    return export_explorer_space(tmp_path_factory.mktemp("runs-space") / "space", runs=[runs_dir])


@pytest.fixture(scope="module")
def space_python(tmp_path_factory, demo_space) -> Path:
    """A fresh venv holding only what the Space's requirements.txt brings (no torch)."""
    return make_venv(
        tmp_path_factory.mktemp("space-venv") / "venv", "-r", str(demo_space / "requirements.txt")
    )


# ------------------------------------------------------------------ the folder


def test_package_and_app_are_copied_byte_for_byte(demo_space):
    for module in PACKAGE_DIR.glob("*.py"):
        assert (demo_space / "gpr1200_hf" / module.name).read_bytes() == module.read_bytes()
    paper = PACKAGE_DIR / "data" / "paper_results.csv"
    assert (demo_space / "gpr1200_hf/data/paper_results.csv").read_bytes() == paper.read_bytes()
    for name in ("app.py", "README.md", "requirements.txt"):
        assert (demo_space / name).read_bytes() == (
            asset_dir("_explorer_space") / name
        ).read_bytes()


def test_requirements_name_only_pypi_packages_without_torch(demo_space):
    lines = [s for s in (demo_space / "requirements.txt").read_text().splitlines() if s.strip()]
    reqs = [Requirement(line) for line in lines]
    names = {r.name.lower() for r in reqs}
    assert not [r for r in reqs if r.url or r.extras]
    assert "gradio" in names and "datasets" in names
    assert not names & {"gpr1200-hf", "gpr1200_hf", "torch", "transformers"}
    readme = (demo_space / "README.md").read_text()
    sdk = re.search(r"^sdk_version: (\S+)$", readme, re.M).group(1)
    assert f"gradio=={sdk}" in lines  # the Space's gradio is the one the venv test ran


def test_demo_is_shipped_small_and_reproduces_its_numbers(demo_space):
    size = sum(f.stat().st_size for f in demo_space.rglob("*") if f.is_file())
    assert size < 50 * 2**20
    runs = discover_runs(demo_space / "runs")
    assert [r.results["model"] for r in runs] == ["baseline:color-hist", "baseline:color-only"]
    for run in runs:
        location, categories = run.data
        assert Path(location).is_dir() and Path(location).is_relative_to(demo_space)
        assert Path(categories).is_file()
        assert run.embeddings_path.parent == run.folder
        ap = g.average_precisions(run.embeddings, run.per_query.category_id)
        np.testing.assert_allclose(ap, run.per_query.ap, atol=1e-12)
    assert len(list((demo_space / "runs/_data").iterdir())) == 1  # one copy of the sample


def test_runs_keep_their_records_and_share_one_copy_of_the_sample(runs_space, runs_dir):
    def key(run):
        return Path(run.results["model"]).name  # a local model's folder ships as <local>/name

    shipped = {key(r): r for r in discover_runs(runs_space / "runs")}
    originals = {key(r): r for r in discover_runs(runs_dir)}
    assert shipped.keys() == originals.keys()
    for model, run in shipped.items():
        src = originals[model].folder
        assert (run.folder / "per_query.npz").read_bytes() == (src / "per_query.npz").read_bytes()
        # results.json: the same record, but this machine's absolute paths cut to "<local>/..."
        got, want = (json.loads((f / "results.json").read_text()) for f in (run.folder, src))
        for field in ("revision", "pooling", "dtype", "protocol", "metrics", "date"):
            assert got[field] == want[field]
        assert got["data"]["location"] == "<local>/" + Path(want["data"]["location"]).name
        np.testing.assert_array_equal(run.embeddings, originals[model].embeddings)
        ref = json.loads((run.folder / SPACE_FILE).read_text())["data"]
        assert ref["location"] == "../_data/0/demo-sample" and not ref["hub"]
    assert [p.name for p in (runs_space / "runs/_data").iterdir()] == ["0"]


def _copy_run(runs_dir: Path, tmp_path: Path, edit) -> Path:
    src = next(p.parent for p in sorted(runs_dir.glob("*/results.json")))
    dst = tmp_path / "runs" / src.name
    shutil.copytree(src, dst)
    results = json.loads((dst / "results.json").read_text())
    edit(results)
    (dst / "results.json").write_text(json.dumps(results))
    return dst


def test_a_hub_dataset_is_referenced_not_copied(runs_dir, tmp_path):
    def hub(r):
        r["data"].update(source="Hub dataset someorg/gpr1200", location="someorg/gpr1200")

    out = export_explorer_space(tmp_path / "space", runs=[_copy_run(runs_dir, tmp_path, hub)])
    (run,) = discover_runs(out / "runs")
    assert run.data == ("someorg/gpr1200", None)
    assert not (out / "runs/_data").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["data"].update(full_benchmark=True), "full benchmark"),
        (lambda r: r["metrics"].update(map=0.5), "not this run's|come from different runs"),
        (lambda r: r["data"].update(location="/nowhere/GPR1200.zip"), "not found from here"),
        (lambda r: r.update(embeddings_cache="/nowhere/abc"), "are gone"),
    ],
)
def test_what_cannot_work_is_refused_and_nothing_is_written(runs_dir, tmp_path, edit, message):
    run = _copy_run(runs_dir, tmp_path, edit)
    with pytest.raises(InputError, match=message):
        export_explorer_space(tmp_path / "space", runs=[run])
    assert not (tmp_path / "space").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # no temporary folder left


def test_cli_writes_and_says_how_to_upload(runs_dir, tmp_path, capsys):
    out = tmp_path / "space"
    assert main(["export-space", "explorer", str(out), "--runs", str(runs_dir)]) == 0
    said = capsys.readouterr().out
    assert str(out) in said and f"hf upload ORG/NAME {out} --repo-type space" in said
    assert len(discover_runs(out / "runs")) == 2
    for argv in (
        ["export-space", "explorer", str(out), "--runs", str(runs_dir)],  # not empty
        ["export-space", "explorer", str(tmp_path / "new"), "--runs", str(tmp_path / "no")],
        ["export-space", "metric", str(tmp_path / "m"), "--runs", str(runs_dir)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["export-space", "metric", str(tmp_path / "metric")]) == 0
    assert (tmp_path / "metric" / "gpr1200_map.py").is_file()


# ------------------------------------------------------------------ handlers, in process


@pytest.fixture(scope="module")
def app(demo_space):
    """The exported app.py as a module (in this environment, with torch present)."""
    spec = importlib.util.spec_from_file_location("explorer_space_app", demo_space / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raises_one_line(fn, *args) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args)
    text = info.value.message
    assert "\n" not in text and "Traceback" not in text
    return text


def test_bad_uploads_are_one_line_naming_only_the_file(app, demo_space, tmp_path):
    ex = app.Explorer(discover_runs(demo_space / "runs"))
    name = next(iter(ex.runs))
    junk = tmp_path / "holiday.png"
    junk.write_bytes(b"not an image at all")
    text = _raises_one_line(app.search_upload, ex, name, str(junk), 5)
    assert "holiday.png" in text and str(tmp_path) not in text
    huge = tmp_path / "huge.png"
    Image.new("L", (7000, 7000)).save(huge)  # 49 megapixels, a few hundred KB on disk
    text = _raises_one_line(app.search_upload, ex, name, str(huge), 5)
    assert "too large" in text and str(tmp_path) not in text
    assert "pick a query" in _raises_one_line(app.guarded(app.explore), ex, name, None, 5)
    assert "not in this run" in _raises_one_line(app.guarded(app.explore), ex, name, 10**6, 5)
    text = _raises_one_line(app.guarded(lambda: open(tmp_path / "gone.txt")))
    assert "gone.txt" in text and str(tmp_path) not in text


def test_runs_on_other_images_are_refused_at_startup(app, runs_dir, tmp_path):
    run = _copy_run(runs_dir, tmp_path, lambda r: None)
    with np.load(run / "per_query.npz") as z:
        arrays = dict(z)
    arrays["file_names"] = np.roll(arrays["file_names"], 1)
    np.savez(run / "per_query.npz", **arrays)
    with pytest.raises(InputError, match="not the ones it was evaluated on"):
        app.Explorer([load_run(run)])


# ------------------------------------------------------------------ served as a Space


def _show_random_query(page, run, k=10) -> None:
    page.click("#random")
    page.wait_for_function(
        f"document.querySelectorAll('#gallery img').length == {k}", timeout=60_000
    )
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#gallery img'))"
        f".filter(i => i.complete && i.naturalWidth > 0).length >= {k}",
        timeout=60_000,
    )
    text = page.inner_text("#ap-text")
    q = int(re.search(r"query #(\d+)", text).group(1))
    shown = float(re.search(r"AP = ([0-9.]+)", text).group(1))
    ap = g.average_precisions(run.embeddings, run.per_query.category_id)
    assert shown == pytest.approx(ap[q], abs=5e-7)


def test_demo_space_serves_from_its_requirements_alone(demo_space, space_python, tmp_path):
    runs = discover_runs(demo_space / "runs")
    image = next((demo_space / "runs/_data/0/demo-sample/images").glob("*.jpg"))
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (11 * 2**20))
    with serve_space(demo_space, space_python) as url, browser_page() as page:
        page.goto(url)
        _show_random_query(page, runs[0])
        # weight-free runs embed an upload with numpy alone: search works without torch
        page.get_by_text("Search with your own image").click()
        page.wait_for_selector("#upload-box", state="visible", timeout=30_000)
        assert page.locator("#upload-note").count() == 0
        page.set_input_files("#upload input[type=file]", str(image))
        page.click("#upload-search")
        page.wait_for_function(
            "document.querySelectorAll('#up-gallery img').length == 10", timeout=60_000
        )
        assert "#1 1.000" in page.inner_text("#up-gallery")  # the image itself
        # a file over the upload limit is refused by the server
        import urllib.error
        import urllib.request

        boundary = "gpr1200boundary"
        body = (
            (
                f"--{boundary}\r\nContent-Disposition: form-data; name=files; filename=big.png"
                "\r\n\r\n"
            ).encode()
            + big.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            url + "gradio_api/upload",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=60)
        assert info.value.code == 413


def test_upload_search_is_hidden_with_a_note_without_torch(runs_space, space_python):
    runs = {r.results["model"]: r for r in discover_runs(runs_space / "runs")}
    tiny = next(r for m, r in runs.items() if not m.startswith("baseline:"))
    with serve_space(runs_space, space_python) as url, browser_page() as page:
        page.goto(url)
        page.get_by_text("Search with your own image").click()
        for _ in range(2):  # each run in turn: the panel follows the selected run
            current = page.locator("#run input").input_value()
            if current == tiny.name:
                page.wait_for_selector("#upload-note", state="visible", timeout=30_000)
                assert "torch" in page.inner_text("#upload-note")
                assert not page.locator("#upload-box").is_visible()
                _show_random_query(page, tiny)  # everything else works
            else:
                page.wait_for_selector("#upload-box", state="visible", timeout=30_000)
                assert page.locator("#upload-note").count() == 0
            page.locator("#run input").click()
            other = next(n for n in (r.name for r in runs.values()) if n != current)
            page.get_by_role("option", name=other).click()
            page.wait_for_function(
                f"document.querySelector('#run input').value == {json.dumps(other)}"
            )


def test_exported_runs_carry_no_absolute_local_paths(runs_space):
    for results in (runs_space / "runs").glob("*/results.json"):
        text = results.read_text()
        assert "/tmp/" not in text and str(Path.home()) not in text, results
