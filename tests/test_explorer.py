"""The retrieval explorer: its logic, and the Space driven in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import gpr1200_hf as g
from gpr1200_hf.explorer import discover_runs, relevant_ranks, top_k
from gpr1200_hf.runner import evaluate_model
from tests.conftest import REPO, browser_page, serve_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer")
    for model in ("baseline:color-hist", "baseline:color-only"):
        evaluate_model(model, demo=True, output_dir=out, workers=0, progress=False)
    return out


def test_runs_ranks_and_top_k_agree_with_the_library(demo_dir):
    runs = discover_runs(demo_dir)
    assert [r.results["model"] for r in runs] == ["baseline:color-hist", "baseline:color-only"]
    run = runs[0]
    ap = g.average_precisions(run.embeddings, run.per_query.category_id)
    np.testing.assert_allclose(run.per_query.ap, ap, atol=1e-12)
    for q in (0, 57, 239):
        ranks = sorted(r for _, r in relevant_ranks(run, q))
        from_ranks = np.mean([(i + 1) / r for i, r in enumerate(ranks)])
        assert from_ranks == pytest.approx(ap[q], abs=1e-12)  # no ties in these scores
        hits = top_k(run, q, 12, int(run.per_query.category_id[q]))
        assert [h.rank for h in hits] == list(range(1, 13))
        assert hits[0].index == q and hits[0].relevant
        within = {i for i, r in relevant_ranks(run, q) if r <= 12}
        assert {h.index for h in hits if h.relevant} == within


@pytest.fixture(scope="module")
def server(demo_dir):
    # PYTHONPATH: this checkout's package, whatever the environment has installed
    with serve_app(
        REPO / "spaces/explorer",
        "--demo",
        timeout=180,
        GPR1200_DEMO_DIR=str(demo_dir),
        PYTHONPATH=str(REPO),
    ) as url:
        yield url


def _non_blank(path) -> bool:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return img.std() > 10 and len(np.unique(img)) > 50


def _loaded(selector: str, k: int) -> str:
    return (
        f"Array.from(document.querySelectorAll('{selector} img'))"
        f".filter(i => i.complete && i.naturalWidth > 0).length >= {k}"
    )


def test_explorer_in_a_real_browser(server, demo_dir, tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed (.ci/run installs it)")
        pytest.skip("Debian's chromium is not installed here")
    run = discover_runs(demo_dir)[0]
    library_ap = g.average_precisions(run.embeddings, run.per_query.category_id)
    with browser_page(1400, 1800) as page:
        page.goto(server)
        for k in (10, 4):
            if k != 10:
                box = page.locator("#k input[type=number]")
                box.fill(str(k))
                box.press("Enter")
                page.click("#show")
            else:
                page.click("#random")
            page.wait_for_function(
                f"document.querySelectorAll('#gallery img').length == {k}", timeout=60_000
            )
            page.wait_for_function(_loaded("#gallery", k), timeout=60_000)
            text = page.inner_text("#ap-text")
            q = int(re.search(r"query #(\d+)", text).group(1))
            shown = float(re.search(r"AP = ([0-9.]+)", text).group(1))
            assert shown == pytest.approx(library_ap[q], abs=5e-7)
            assert page.locator("#gallery img").count() == k
        page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
        assert _non_blank(tmp_path / "explore.png")

        page.get_by_role("tab", name="Compare runs").click()
        page.click("#random2")
        page.wait_for_function(_loaded("#gallery-a", 8), timeout=60_000)
        page.wait_for_function(_loaded("#gallery-b", 8), timeout=60_000)
        verdict = page.inner_text("#verdict")
        assert "ranks the relevant images higher" in verdict
        assert "95% CI" in page.inner_text("#stats")
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        assert _non_blank(tmp_path / "compare.png")


def test_uploaded_image_is_embedded_with_the_runs_model(demo_dir, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("explorer_app", REPO / "spaces/explorer/app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    ex = app.Explorer(discover_runs(demo_dir))
    run = next(iter(ex.runs.values()))
    upload = tmp_path / "query.png"
    ex.image(run, 42).save(upload)  # lossless: the upload is image 42 itself
    gallery = app.search_upload(ex, run.name, str(upload), 3)
    assert len(gallery) == 3
    hits = top_k(run, run.embeddings[42], 3, category_id=-1)
    assert hits[0].index == 42 and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_run_names_tell_protocols_apart(tmp_path):
    from gpr1200_hf.explorer import Run

    base = {"model": "m", "pooling": "cls", "dtype": "fp32"}
    official = {"metric": "cosine", "ties": "expected", "include_self": True}
    names = {
        Run(tmp_path, base | {"protocol": official | change}, None).name
        for change in ({}, {"include_self": False}, {"metric": "l2"}, {"ties": "stable"})
    }
    assert names == {
        "m (cls, fp32)",
        "m (cls, fp32, query excluded)",
        "m (cls, fp32, metric=l2)",
        "m (cls, fp32, ties=stable)",
    }
