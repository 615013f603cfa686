"""``gpr1200 score``: file formats, canonical reordering, pickle refusal, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

import gpr1200_hf as g
from gpr1200_hf.cli import main


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([3, 250, 420, 700, 900, 1100], 4)
    x = rng.standard_normal((24, 8)) + np.repeat(rng.standard_normal((6, 8)), 4, axis=0)
    x = x.astype(np.float32)
    names = [f"{c}_img_{i:02d}_x.jpg" for i, c in enumerate(y)]
    return x, y, names


def _run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_npy_with_labels_prints_table_and_writes_json(tmp_path, small, capsys):
    x, y, _ = small
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, out, _ = _run(
        [
            "score",
            tmp_path / "e.npy",
            "--labels",
            tmp_path / "y.npy",
            "--json",
            tmp_path / "r.json",
        ],
        capsys,
    )
    assert code == 0
    want = g.score(x, y)
    assert json.loads((tmp_path / "r.json").read_text()) == want
    assert f"{100 * want['map']:.1f}" in out and f"{want['map']:.6f}" in out
    for name in ("GLDv2", "iNat", "IN-Sketch", "INSTRE", "SOP", "IMDB-Faces"):
        assert name in out


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "parquet"])
def test_file_names_put_rows_in_canonical_order(tmp_path, small, capsys, fmt):
    x, y, names = small
    perm = np.random.default_rng(1).permutation(len(y))
    xs, ns = x[perm], [names[i] for i in perm]
    path = tmp_path / f"e.{fmt}"
    if fmt == "npz":
        np.savez(path, embeddings=xs, file_names=np.array(ns))
    elif fmt == "safetensors":
        save_file({"embeddings": xs}, str(path), metadata={"file_names": json.dumps(ns)})
    else:
        pq.write_table(pa.table({"file_name": ns, "embeddings": list(xs)}), path)
    code, _, err = _run(["score", path, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text()) == g.score(x, y)


def test_indices_mode_matches_library(tmp_path, small, capsys):
    x, y, _ = small
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    idx = np.argsort(-(xn @ xn.T), axis=1, kind="stable")[:, :7]
    np.save(tmp_path / "i.npy", idx)
    np.save(tmp_path / "y.npy", y)
    for norm in ("relevant", "retrieved"):
        code, _, _ = _run(
            [
                "score",
                tmp_path / "i.npy",
                "--mode",
                "indices",
                "--labels",
                tmp_path / "y.npy",
                "--normalize",
                norm,
                "--json",
                tmp_path / "r.json",
            ],
            capsys,
        )
        assert code == 0
        got = json.loads((tmp_path / "r.json").read_text())
        assert got == g.score_indices(idx, y, normalize=norm)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


@pytest.mark.parametrize("suffix", [".pkl", ".npy", ".npz"])
def test_pickle_is_refused_and_never_run(tmp_path, capsys, suffix):
    target = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump(_Evil(str(target)), f)
    code, _, err = _run(["score", path, "--labels", path], capsys)
    assert code == 2
    assert "pickle" in err and err.count("\n") == 1
    assert not target.exists()


def test_object_npy_is_refused(tmp_path, capsys):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = _run(["score", tmp_path / "o.npy"], capsys)
    assert code == 2 and "pickle" in err


@pytest.mark.parametrize(
    ("array", "extra", "match"),
    [
        (np.ones((10, 4), np.float32), [], "12000"),
        (np.ones(24, np.float32), ["--labels"], "2-D"),
        (np.full((24, 4), np.nan, np.float32), ["--labels"], "NaN"),
        (np.zeros((24, 4), np.float32), ["--labels"], "zeros"),
        (np.ones((23, 4), np.float32), ["--labels"], "23 rows but 24 labels"),
        (np.full((24, 3), 99), ["--labels", "--mode", "indices"], "out of range"),
        (np.zeros((24, 3), int), ["--labels", "--mode", "indices"], "more than once"),
    ],
)
def test_bad_inputs_one_line_error(tmp_path, small, capsys, array, extra, match):
    _, y, _ = small
    np.save(tmp_path / "a.npy", array)
    np.save(tmp_path / "y.npy", y)
    args = ["score", tmp_path / "a.npy"]
    for a in extra:
        args += [a, tmp_path / "y.npy"] if a == "--labels" else [a]
    args = [a for a in args]
    if "--mode" in args:
        i = args.index("--mode")
        args = args[:i] + ["--mode", "indices"] + [a for a in args[i + 1 :] if a != "indices"]
    code, _, err = _run(args, capsys)
    assert code == 2
    assert match in err and err.count("\n") == 1


def test_bad_file_name_in_file(tmp_path, small, capsys):
    x, _, names = small
    names = list(names)
    names[3] = "nocategory.jpg"
    np.savez(tmp_path / "e.npz", embeddings=x, file_names=np.array(names))
    code, _, err = _run(["score", tmp_path / "e.npz"], capsys)
    assert code == 2 and "nocategory.jpg" in err


def test_console_script_installed(tmp_path, small):
    exe = shutil.which("gpr1200", path=os.path.dirname(sys.executable)) or shutil.which("gpr1200")
    assert exe, "the gpr1200 console script is not installed"
    x, y, _ = small
    np.save(tmp_path / "e.npy", x)
    np.save(tmp_path / "y.npy", y)
    proc = subprocess.run(
        [exe, "score", tmp_path / "e.npy", "--labels", tmp_path / "y.npy"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    bad = subprocess.run([exe, "score", tmp_path / "missing.npy"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_safetensors_whose_header_looks_like_pickle_bytes(tmp_path, small, capsys):
    # A safetensors header length of 640 starts the file with 0x80 0x02 (a pickle's magic).
    x, y, _ = small
    path = tmp_path / "e.safetensors"
    for pad in range(0, 1200):
        save_file({"embeddings": x}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.skip("could not build such a header")
    np.save(tmp_path / "y.npy", y)
    code, _, err = _run(["score", path, "--labels", tmp_path / "y.npy"], capsys)
    assert code == 0, err


def test_indices_with_file_names_are_renumbered_into_canonical_order(tmp_path, small, capsys):
    x, y, names = small
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    idx = np.argsort(-(xn @ xn.T), axis=1, kind="stable")[:, :6]
    want = g.score_indices(idx, y)
    perm = np.random.default_rng(3).permutation(len(y))
    inverse = np.argsort(perm)
    shuffled = inverse[idx[perm]]  # the same rankings, rows and positions in shuffled order
    np.savez(tmp_path / "i.npz", indices=shuffled, file_names=np.array(names)[perm])
    code, _, err = _run(
        ["score", tmp_path / "i.npz", "--mode", "indices", "--json", tmp_path / "r.json"], capsys
    )
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text()) == pytest.approx(want)
