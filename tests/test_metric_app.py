"""The metric's Space app, served for real on 127.0.0.1 and driven by gradio_client."""

from __future__ import annotations

import numpy as np
import pytest

import gpr1200_hf as g
from gpr1200_hf.report import paper_results
from tests.conftest import REPO, serve_app


@pytest.fixture(scope="module", params=["clone", "space"])
def server(request, tmp_path_factory):
    """The app from the clone (installed gpr1200_hf) and from the exported Space folder."""
    folder = REPO / "metric/gpr1200_map"
    if request.param == "space":
        from gpr1200_hf.spaces import export_metric_space

        folder = export_metric_space(tmp_path_factory.mktemp("space") / "gpr1200_map")
    with serve_app(folder) as url:
        yield url


def _predict(server, path, labels=None, *, metric="cosine", include_self=True, compare=()):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    return client.predict(
        handle_file(str(path)),
        None if labels is None else handle_file(str(labels)),
        "embeddings",
        metric,
        "expected",
        include_self,
        "relevant",
        list(compare),
        api_name="/score",
    )


def test_upload_returns_library_numbers(server, tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([1, 201, 401, 601, 801, 1001], 5)
    x = rng.standard_normal((30, 8)) + 2 * np.repeat(rng.standard_normal((6, 8)), 5, axis=0)
    names = np.array([f"{c}_photo_{i}.jpg" for i, c in enumerate(y)])
    perm = rng.permutation(30)
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=x[perm].astype(np.float32), file_names=names[perm])

    table, chart, paper = _predict(server, path)
    got = {row[0]: row[3] for row in table["data"]}
    want = g.score(x.astype(np.float32), y)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12)
    assert len(paper["data"]) == len(paper_results())
    assert chart is not None

    # l2 with labels from a file, and a paper row beside the run in the chart.
    np.save(tmp_path / "plain.npy", x)
    np.save(tmp_path / "y.npy", y)
    table, _, _ = _predict(
        server,
        tmp_path / "plain.npy",
        tmp_path / "y.npy",
        metric="l2",
        include_self=False,
        compare=[paper_results()[0].label],
    )
    got = {row[0]: row[3] for row in table["data"]}
    assert got["map"] == pytest.approx(g.score(x, y, metric="l2", include_self=False)["map"])


def test_pickle_upload_is_refused(server, tmp_path):
    import pickle

    path = tmp_path / "emb.pkl"
    path.write_bytes(pickle.dumps(np.ones((3, 3))))
    with pytest.raises(Exception, match="pickle"):
        _predict(server, path)
