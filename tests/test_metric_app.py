"""The metric's Space app, served for real on 127.0.0.1 and driven by gradio_client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import gpr1200_hf as g
from gpr1200_hf.report import paper_results
from tests.conftest import REPO, free_port


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=REPO / "metric/gpr1200_map",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_upload_returns_library_numbers(server, tmp_path):
    from gradio_client import Client, handle_file

    rng = np.random.default_rng(0)
    y = np.repeat([1, 201, 401, 601, 801, 1001], 5)
    x = rng.standard_normal((30, 8)) + 2 * np.repeat(rng.standard_normal((6, 8)), 5, axis=0)
    names = np.array([f"{c}_photo_{i}.jpg" for i, c in enumerate(y)])
    perm = rng.permutation(30)
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=x[perm].astype(np.float32), file_names=names[perm])

    client = Client(server, verbose=False)
    table, chart, paper = client.predict(
        handle_file(str(path)),
        None,
        "embeddings",
        "cosine",
        "expected",
        True,
        "relevant",
        [],
        api_name="/score",
    )
    got = {row[0]: row[3] for row in table["data"]}
    want = g.score(x.astype(np.float32), y)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12)
    assert len(paper["data"]) == len(paper_results())
    assert chart is not None

    # l2 with labels from a file, and the paper rows beside the run in the chart.
    np.save(tmp_path / "plain.npy", x)
    np.save(tmp_path / "y.npy", y)
    table, _, _ = client.predict(
        handle_file(str(tmp_path / "plain.npy")),
        handle_file(str(tmp_path / "y.npy")),
        "embeddings",
        "l2",
        "expected",
        False,
        "relevant",
        [paper_results()[0].label],
        api_name="/score",
    )
    got = {row[0]: row[3] for row in table["data"]}
    assert got["map"] == pytest.approx(g.score(x, y, metric="l2", include_self=False)["map"])


def test_pickle_upload_is_refused(server, tmp_path):
    import pickle

    from gradio_client import Client, handle_file

    path = tmp_path / "emb.pkl"
    path.write_bytes(pickle.dumps(np.ones((3, 3))))
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match="pickle"):
        client.predict(
            handle_file(str(path)),
            None,
            "embeddings",
            "cosine",
            "expected",
            True,
            "relevant",
            [],
            api_name="/score",
        )
