"""Every subcommand over a corpus of bad inputs: exit code 2, one ``error:`` line, no traceback.

Each row builds real files on disk and runs ``gpr1200_hf.cli.main`` in-process; a few rows also
run the installed ``gpr1200`` console script in a subprocess. Memory rows measure a child's
peak RSS (no timing assertions).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

import gpr1200_hf
from gpr1200_hf.cli import COMMANDS, main

ROOT = Path(gpr1200_hf.__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the corpus


def _npy_with_header(path: Path, header: str, data: bytes = b"") -> None:
    header = header + " " * (118 - len(header)) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data)


def _safetensors_raw(path: Path, header: bytes, data: bytes = b"\0" * 16) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def _zero_member(zf: zipfile.ZipFile, name: str, nbytes: int, dtype: str = "|u1") -> None:
    """A .npy member of ``nbytes`` zero bytes, streamed (never held in memory)."""
    with zf.open(name, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": dtype, "fortran_order": False, "shape": (nbytes,)}
        )
        chunk = bytes(1 << 20)
        for start in range(0, nbytes, len(chunk)):
            f.write(chunk[: min(len(chunk), nbytes - start)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    y = np.repeat([3, 250, 420, 700, 900, 1100], 4)
    x = rng.standard_normal((24, 8)).astype(np.float32)
    names = [f"{c}_img_{i:02d}.jpg" for i, c in enumerate(y)]
    np.save(d / "good.npy", x)
    np.save(d / "labels.npy", y)
    (d / "folder").mkdir()
    (d / "a_file").write_text("x")
    for suffix in ("npy", "npz", "safetensors", "parquet"):
        (d / f"empty.{suffix}").write_bytes(b"")
        (d / f"garbage.{suffix}").write_bytes(rng.bytes(300) + b"not a pickle")
    (d / "embeddings.csv").write_text("1,2\n3,4\n")
    # .npy
    _npy_with_header(
        d / "huge.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 1000), }"
    )
    _npy_with_header(
        d / "truncated.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (24, 8), }",
        b"\0" * 100,
    )
    _npy_with_header(d / "badheader.npy", "{'descr': '<f4', 'shape': [24, 8}")
    _npy_with_header(
        d / "negative.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 8), }"
    )
    np.save(d / "structured.npy", np.zeros(24, dtype=[("a", "f4"), ("b", "f4")]))
    np.save(d / "complex.npy", np.ones((24, 8), np.complex64))
    # .npz
    np.savez(d / "nokey.npz", a=x, b=x)
    np.savez(
        d / "dupnames.npz", embeddings=x, file_names=np.array([names[0]] + names[1:-1] + [names[0]])
    )
    np.savez(d / "namecount.npz", embeddings=x, file_names=np.array(names[:5]))
    np.savez(d / "numnames.npz", embeddings=x, file_names=np.arange(24))
    with zipfile.ZipFile(d / "hugemember.npz", "w") as zf:
        zf.writestr(
            "embeddings.npy",
            b"\x93NUMPY\x01\x00"
            + struct.pack("<H", 118)
            + b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 4096), }".ljust(117)
            + b"\n",
        )
    with zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        _zero_member(zf, "embeddings.npy", 200 << 20, "<f4")
    good = d / "good_npz.npz"
    np.savez_compressed(good, embeddings=x)
    raw = bytearray(good.read_bytes())
    raw[60:70] = b"\xff" * 10  # inside the compressed data of the only member
    (d / "corrupt.npz").write_bytes(bytes(raw))
    # .safetensors
    _safetensors_raw(d / "hugeheader.safetensors", b"{}", b"")
    (d / "hugeheader.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    _safetensors_raw(d / "notjson.safetensors", b"{not json")
    _safetensors_raw(
        d / "badoffsets.safetensors",
        b'{"embeddings":{"dtype":"F32","shape":[2,2],"data_offsets":[0,160]}}',
    )
    _safetensors_raw(
        d / "badmeta.safetensors",
        b'{"embeddings":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
        b'"__metadata__":{"file_names":"[not json"}}',
    )
    _safetensors_raw(
        d / "metadict.safetensors",
        b'{"embeddings":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
        b'"__metadata__":{"file_names":"{\\"a\\": 1}"}}',
    )
    _safetensors_raw(
        d / "bf16.safetensors",
        b'{"embeddings":{"dtype":"BF16","shape":[2,4],"data_offsets":[0,16]}}',
    )
    save_file({"a": x, "b": x}, str(d / "nokey.safetensors"))
    # .parquet
    pq.write_table(pa.table({"other": list(x)}), d / "nocolumn.parquet")
    pq.write_table(pa.table({"embeddings": [str(v) for v in range(24)]}), d / "strings.parquet")
    pq.write_table(
        pa.table({"embeddings": list(x), "file_name": list(range(24))}), d / "intnames.parquet"
    )
    pq.write_table(pa.table({"embeddings": [[1.0, 2.0]] * 23 + [[1.0]]}), d / "ragged.parquet")
    pq.write_table(
        pa.table({"embeddings": list(x), "file_name": names[:-1] + [names[0]]}),
        d / "dupnames.parquet",
    )
    # labels
    (d / "empty.json").write_bytes(b"")
    (d / "garbage.json").write_bytes(b"{not json")
    (d / "dict.json").write_text('{"a": 1}')
    (d / "nested.json").write_text("[[1, 2], [3]]")
    (d / "nulls.json").write_text("[1, null, 2]")
    (d / "mixed.json").write_text('[1, "a"]')
    (d / "bigint.json").write_text(f"[{2**70}, 1]")
    (d / "latin1.txt").write_bytes("café\n1\n".encode("latin-1"))
    (d / "utf16.json").write_bytes(json.dumps(y.tolist()).encode("utf-16"))
    (d / "utf16.txt").write_bytes("\n".join(map(str, y)).encode("utf-16"))
    (d / "deep.json").write_text("[" * 100000 + "]" * 100000)
    # build / compare
    (d / "runs").mkdir()
    for name, content in {
        "garbage": b"{not json",
        "empty": b"",
        "list": b"[1, 2]",
        "nometrics": b'{"model": "m"}',
        "strmap": b'{"model": "m", "metrics": {"map": "high"}}',
        "bigmap": b'{"model": "m", "metrics": {"map": 7.5}}',
        "nanmap": b'{"model": "m", "metrics": {"map": NaN}}',
        "nomodel": b'{"metrics": {"map": 0.5}}',
        "latin1": '{"model": "café", "metrics": {"map": 0.5}}'.encode("latin-1"),
        "datalist": b'{"model": "m", "metrics": {"map": 0.5}, "data": [1]}',
    }.items():
        (d / "runs" / name).mkdir()
        (d / "runs" / name / "results.json").write_bytes(content)
    cats = np.repeat(np.arange(0, 1200, 100), 10)
    ap = rng.random(cats.size)
    results = {
        "model": "m",
        "protocol": {"metric": "cosine", "ties": "expected", "include_self": True},
        "data": {"num_images": 120},
        "metrics": {"map": float(ap.mean())},
    }
    fnames = np.array([f"{c}_{i}.jpg" for i, c in enumerate(cats)])
    for name in ("ok", "ok2"):
        (d / "runs" / name).mkdir()
        np.savez(d / "runs" / name / "per_query.npz", ap=ap, category_id=cats, file_names=fnames)
        (d / "runs" / name / "results.json").write_text(json.dumps(results))
    for name, writer in {
        "pq_garbage": lambda p: p.write_bytes(b"garbage"),
        "pq_empty": lambda p: p.write_bytes(b""),
        "pq_nokeys": lambda p: np.savez(p, x=ap),
        "pq_pickled": lambda p: np.savez(
            p, ap=np.array([{}], dtype=object), category_id=cats, file_names=fnames
        ),
    }.items():
        (d / "runs" / name).mkdir()
        writer(d / "runs" / name / "per_query.npz")
        (d / "runs" / name / "results.json").write_text(json.dumps(results))
    (d / "runs" / "badresults").mkdir()
    np.savez(
        d / "runs" / "badresults" / "per_query.npz", ap=ap, category_id=cats, file_names=fnames
    )
    (d / "runs" / "badresults" / "results.json").write_text("[]")
    (d / "runs" / "no_per_query").mkdir()
    (d / "runs" / "no_per_query" / "results.json").write_text(json.dumps(results))
    return d


# Each row: (id, arguments with {d} for the corpus folder, a piece of the expected message).
CASES: list[tuple[str, list[str], str]] = [
    # score: files of each format
    *[(f"empty-{s}", ["score", f"{{d}}/empty.{s}"], "empty.") for s in ("npy", "npz")],
    *[(f"garbage-{s}", ["score", f"{{d}}/garbage.{s}"], "garbage.") for s in ("npy", "npz")],
    ("empty-safetensors", ["score", "{d}/empty.safetensors"], "not a valid .safetensors"),
    ("garbage-safetensors", ["score", "{d}/garbage.safetensors"], "not a valid .safetensors"),
    ("empty-parquet", ["score", "{d}/empty.parquet"], "not a readable .parquet"),
    ("garbage-parquet", ["score", "{d}/garbage.parquet"], "not a readable .parquet"),
    ("unsupported-suffix", ["score", "{d}/embeddings.csv"], "unsupported file type"),
    ("npy-huge-shape", ["score", "{d}/huge.npy"], "declares shape (100000000000, 1000)"),
    ("npy-truncated", ["score", "{d}/truncated.npy"], "truncated"),
    ("npy-bad-header", ["score", "{d}/badheader.npy"], "corrupt .npy header"),
    ("npy-negative-shape", ["score", "{d}/negative.npy"], "negative"),
    ("npy-structured", ["score", "{d}/structured.npy"], "unsupported array type"),
    ("npy-complex", ["score", "{d}/complex.npy"], "unsupported array type"),
    ("npz-no-data-key", ["score", "{d}/nokey.npz"], "cannot tell which array"),
    ("npz-duplicate-names", ["score", "{d}/dupnames.npz"], "appears 2 times"),
    ("npz-name-count", ["score", "{d}/namecount.npz"], "5 file names for 24 rows"),
    ("npz-numeric-names", ["score", "{d}/numnames.npz"], "1-D array of strings"),
    ("npz-huge-member", ["score", "{d}/hugemember.npz"], "declares shape (1000000000, 4096)"),
    ("npz-bomb-member", ["score", "{d}/bomb.npz"], "decompression bomb"),
    ("npz-corrupt-data", ["score", "{d}/corrupt.npz"], "corrupt.npz"),
    ("safetensors-huge-header", ["score", "{d}/hugeheader.safetensors"], "header too large"),
    ("safetensors-header-not-json", ["score", "{d}/notjson.safetensors"], "not a valid"),
    ("safetensors-bad-offsets", ["score", "{d}/badoffsets.safetensors"], "not a valid"),
    ("safetensors-metadata-not-json", ["score", "{d}/badmeta.safetensors"], "not valid JSON"),
    ("safetensors-metadata-dict", ["score", "{d}/metadict.safetensors"], "list of strings"),
    ("safetensors-bf16", ["score", "{d}/bf16.safetensors"], "bf16.safetensors"),
    ("safetensors-no-data-key", ["score", "{d}/nokey.safetensors"], ": cannot tell which"),
    ("parquet-no-column", ["score", "{d}/nocolumn.parquet"], "no embeddings column"),
    ("parquet-string-column", ["score", "{d}/strings.parquet"], "lists of numbers"),
    ("parquet-int-names", ["score", "{d}/intnames.parquet"], "must be strings"),
    ("parquet-ragged", ["score", "{d}/ragged.parquet"], "differ in length"),
    ("parquet-duplicate-names", ["score", "{d}/dupnames.parquet"], "appears 2 times"),
    ("path-is-directory", ["score", "{d}/folder"], "is a directory"),
    ("path-missing", ["score", "{d}/missing.npy"], "no such file"),
    # score: labels
    *[
        (f"labels-{name}", ["score", "{d}/good.npy", "--labels", f"{{d}}/{name}"], match)
        for name, match in (
            ("empty.json", "not valid JSON"),
            ("garbage.json", "not valid JSON"),
            ("dict.json", "must be a list"),
            ("nested.json", "not a number or a string"),
            ("nulls.json", "not a number or a string"),
            ("mixed.json", "mix numbers and strings"),
            ("bigint.json", "64 bits"),
            ("latin1.txt", "not UTF-8"),
            ("utf16.json", "UTF-16"),
            ("utf16.txt", "UTF-16"),
            ("deep.json", "deep.json"),
            ("garbage.npy", "not a .npy array"),
            ("huge.npy", "declares shape"),
            ("folder", "is a directory"),
            ("missing.txt", "no such file"),
        )
    ],
    # score: options and outputs
    ("device-bogus", ["score", "{d}/good.npy", "--device", "bogus"], "not a torch device"),
    ("device-type-bogus", ["score", "{d}/good.npy", "--device", "tpu"], "device"),
    ("json-directory", ["score", "{d}/good.npy", "--json", "{d}/folder"], "is a directory"),
    ("json-is-input", ["score", "{d}/good.npy", "--json", "{d}/good.npy"], "one of the inputs"),
    ("json-under-file", ["score", "{d}/good.npy", "--json", "{d}/a_file/r.json"], "not a folder"),
    ("mode-bogus", ["score", "{d}/good.npy", "--mode", "bogus"], "invalid choice"),
    ("no-arguments", ["score"], "required"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("unknown-option", ["score", "{d}/good.npy", "--nope"], "unrecognized"),
    # make-demo
    ("make-demo-into-file", ["make-demo", "{d}/a_file"], "is a file"),
    ("make-demo-under-file", ["make-demo", "{d}/a_file/x"], "not a folder"),
    ("make-demo-per-subset-0", ["make-demo", "{d}/demo", "--per-subset", "0"], "from 1 to 200"),
    ("make-demo-sizes", ["make-demo", "{d}/demo", "--min-size", "99999"], "--min-size"),
    ("make-demo-size-order", ["make-demo", "{d}/x", "--min-size", "100", "--max-size", "50"], "<="),
    ("make-demo-seed", ["make-demo", "{d}/x", "--seed", "-1"], "--seed"),
    # export-hub
    ("export-into-file", ["export-hub", "{d}/a_file", "--source", "{d}/folder"], "is a file"),
    ("export-missing-source", ["export-hub", "{d}/exp", "--source", "{d}/missing.zip"], "missing"),
    ("export-no-source", ["export-hub", "{d}/exp"], "--source"),
    # evaluate
    (
        "evaluate-output-file",
        ["evaluate", "--model", "baseline:color-hist", "--output-dir", "{d}/a_file"],
        "is a file",
    ),
    (
        "evaluate-device-bogus",
        ["evaluate", "--model", "baseline:color-hist", "--device", "bogus"],
        "not a torch device",
    ),
    (
        "evaluate-batch-size-0",
        ["evaluate", "--model", "baseline:color-hist", "--batch-size", "0"],
        "at least 1",
    ),
    ("evaluate-workers-negative", ["evaluate", "--workers", "-1"], "at least 0"),
    ("evaluate-no-model", ["evaluate", "--output-dir", "{d}/out"], "name a model"),
    (
        "evaluate-missing-data",
        [
            "evaluate",
            "--model",
            "baseline:color-hist",
            "--data",
            "{d}/missing.zip",
            "--output-dir",
            "{d}/out",
        ],
        "no such file",
    ),
    # build
    *[
        (f"build-{name}", ["build", f"{{d}}/runs/{name}", "--out", "{d}/t.md"], match)
        for name, match in (
            ("garbage", "not valid JSON"),
            ("empty", "not valid JSON"),
            ("list", "not an object"),
            ("nometrics", "no metrics.map"),
            ("strmap", "not a number"),
            ("bigmap", "not a number in [0, 1]"),
            ("nanmap", "not a number"),
            ("nomodel", "no model name"),
            ("latin1", "not UTF-8"),
            ("datalist", "data is not an object"),
        )
    ],
    (
        "build-folder-without-results",
        ["build", "{d}/folder", "--out", "{d}/t.md"],
        "no results.json",
    ),
    ("build-missing", ["build", "{d}/runs/missing.json", "--out", "{d}/t.md"], "no such file"),
    ("build-out-directory", ["build", "{d}/runs/ok", "--out", "{d}/folder"], "is a directory"),
    ("build-out-suffix", ["build", "{d}/runs/ok", "--out", "{d}/t.txt"], ".md or .csv"),
    (
        "build-out-is-input",
        ["build", "{d}/runs/ok/results.json", "--out", "{d}/runs/ok/results.json"],
        "one of the inputs",
    ),
    # compare
    *[
        (f"compare-{name}", ["compare", "{d}/runs/ok", f"{{d}}/runs/{name}"], match)
        for name, match in (
            ("pq_garbage", "not a readable .npz"),
            ("pq_empty", "not a readable .npz"),
            ("pq_nokeys", "lacks the arrays"),
            ("pq_pickled", "pickle"),
            ("badresults", "not an object"),
            ("no_per_query", "no such file"),
            ("garbage", "no such file"),
        )
    ],
    (
        "compare-bootstrap-0",
        ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--bootstrap", "0"],
        "from 1 to 1000000",
    ),
    (
        "compare-bootstrap-huge",
        ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--bootstrap", "300000000"],
        "from 1 to 1000000",
    ),
    (
        "compare-permutations-negative",
        ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--permutations", "-5"],
        "from 1 to 1000000",
    ),
    (
        "compare-bootstrap-text",
        ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--bootstrap", "many"],
        "not an integer",
    ),
    ("compare-seed-negative", ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--seed", "-1"], "--seed"),
    (
        "compare-json-directory",
        ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--json", "{d}/folder"],
        "is a directory",
    ),
    (
        "compare-json-is-input",
        ["compare", "{d}/runs/ok", "{d}/runs/ok2", "--json", "{d}/runs/ok/results.json"],
        "one of the inputs",
    ),
]

# Run through the installed console script as well (a subprocess each).
CONSOLE = {
    "garbage-npy",
    "npy-huge-shape",
    "labels-utf16.json",
    "device-bogus",
    "make-demo-into-file",
    "build-garbage",
    "compare-bootstrap-0",
    "compare-pq_garbage",
}


def _args(args: list[str], d: Path) -> list[str]:
    return [a.replace("{d}", str(d)) for a in args]


def assert_one_error_line(code: int, err: str, match: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert match in err, err


@pytest.mark.parametrize(("args", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(corpus, capsys, args, match):
    code = main(_args(args, corpus))
    err = capsys.readouterr().err
    assert_one_error_line(code, err, match)


def _console(args: list[str], **env) -> subprocess.CompletedProcess:
    exe = shutil.which("gpr1200", path=os.path.dirname(sys.executable)) or shutil.which("gpr1200")
    assert exe, "the gpr1200 console script is not installed"
    # This checkout's package first (the venv's editable install may point elsewhere).
    env = os.environ | {"PYTHONPATH": str(ROOT)} | env
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.mark.parametrize(
    ("args", "match"),
    [c[1:] for c in CASES if c[0] in CONSOLE],
    ids=[c[0] for c in CASES if c[0] in CONSOLE],
)
def test_console_script_bad_input(corpus, args, match):
    proc = _console(_args(args, corpus))
    assert_one_error_line(proc.returncode, proc.stderr, match)


def test_cuda_without_cuda_is_one_line(corpus, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        args = ["score", f"{corpus}/good.npy", "--device", "cuda:99"]
        match = "cuda device(s)"
    else:
        args = ["score", f"{corpus}/good.npy", "--device", "cuda"]
        match = "not available"
    assert_one_error_line(main(args), capsys.readouterr().err, match)


def test_export_push_offline_is_one_line(tmp_path):
    """``export-hub --push`` with the Hub unreachable (offline mode; nothing is sent)."""
    from gpr1200_hf.demo import make_demo

    images, cats = make_demo(tmp_path / "demo", per_subset=1)
    proc = _console(
        ["export-hub", str(tmp_path / "exp"), "--source", str(images), "--categories", str(cats)]
        + ["--no-strict", "--push", "someone/gpr1200"],
        HF_HUB_OFFLINE="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    )
    assert_one_error_line(proc.returncode, proc.stderr, "error: ")


def test_debug_flag_shows_the_traceback(corpus, capsys):
    for args in (
        ["--debug", "score", f"{corpus}/huge.npy"],
        ["score", f"{corpus}/huge.npy", "--debug"],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.splitlines()[-1].startswith("error: ")


def test_new_subcommands_get_the_mapping_for_free(monkeypatch, capsys):
    """A command registered later (no handling of its own) still fails with one line."""

    def boom(args):
        raise RuntimeError("something\nbroke")

    def oserror(args):
        open(args.path)  # noqa: SIM115

    def setup(p):
        p.add_argument("path")

    monkeypatch.setitem(COMMANDS, "boom", (setup, boom))
    monkeypatch.setitem(COMMANDS, "oserror", (setup, oserror))
    assert_one_error_line(
        main(["boom", "x"]),
        capsys.readouterr().err,
        "internal error: RuntimeError: something broke (rerun with --debug",
    )
    assert_one_error_line(
        main(["oserror", "/nonexistent/x"]), capsys.readouterr().err, "/nonexistent/x: No such file"
    )


def test_help_shows_defaults(capsys):
    for command, default in (
        ("compare", "(default: 10000)"),
        ("evaluate", "(default: fp32)"),  # --batch-size: chosen for the machine
        ("score", "(default: cosine)"),
    ):
        assert main([command, "--help"]) == 0
        assert default in capsys.readouterr().out


# --------------------------------------------------------------------------- outputs


def test_existing_output_file_is_replaced_atomically(corpus, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("old")
    args = ["score", f"{corpus}/good.npy", "--labels", f"{corpus}/labels.npy", "--json", str(out)]
    assert main(args) == 0
    assert f"replaced {out}" in capsys.readouterr().out
    assert "map" in json.loads(out.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left


@pytest.mark.skipif(not os.path.exists("/proc/version"), reason="needs Linux /proc")
def test_unwritable_output_names_the_target_not_a_temporary(corpus, capsys):
    args = ["score", f"{corpus}/good.npy", "--labels", f"{corpus}/labels.npy"]
    assert main([*args, "--json", "/proc/version"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write /proc/version" in err and ".tmp" not in err


@pytest.mark.parametrize("value", ["False", "no", 0, None])
def test_include_self_must_be_a_bool(value):
    x = np.eye(4)
    with pytest.raises(gpr1200_hf.InputError, match="include_self must be True or False"):
        gpr1200_hf.score(x, [0, 0, 1, 1], include_self=value)


def test_output_folder_is_created(corpus, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "t.md"
    assert main(["build", f"{corpus}/runs/ok", "--out", str(out)]) == 0
    assert out.read_text().startswith("| model")


# --------------------------------------------------------------------------- build tables


def test_build_shows_the_protocol_and_whether_a_run_scored_a_sample(corpus, tmp_path):
    """Runs of another protocol or on a sample never look like benchmark runs."""
    results = json.loads((corpus / "runs" / "ok" / "results.json").read_text())
    full = results | {"model": "full", "data": {"num_images": 12000, "full_benchmark": True}}
    sample = results | {"model": "sample", "data": {"num_images": 120, "full_benchmark": False}}
    sample["protocol"] = {"metric": "l2", "ties": "pessimistic", "include_self": False}
    for run in (full, sample):
        (tmp_path / run["model"]).mkdir()
        (tmp_path / run["model"] / "results.json").write_text(json.dumps(run))
    runs = [str(tmp_path / "full"), str(tmp_path / "sample")]
    assert main(["build", *runs, "--out", str(tmp_path / "t.csv")]) == 0
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text()))}
    assert rows["full"]["protocol"] == "cosine, expected, self"
    assert rows["full"]["data"] == "GPR1200"
    assert rows["sample"]["protocol"] == "l2, pessimistic, query excluded"
    assert rows["sample"]["data"] == "sample (120 images)"
    assert main(["build", *runs, "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "| protocol" in table and "| data" in table
    assert "query excluded" in table and "sample (120 images)" in table


def test_build_escapes_pipes_and_newlines_in_model_names(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    results = json.loads((corpus / "runs" / "ok" / "results.json").read_text())
    results["model"] = "org/evil | model\nwith newline"
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "t.md"
    assert main(["build", str(run), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 3  # header, separator, one row
    cells = [c for c in lines[2].replace("\\|", "").split("|")]
    assert len(cells) == len(lines[0].split("|"))
    assert "org/evil \\| model with newline" in lines[2]


# ---------------------------------------------------------------- only what is used is read


def _peak_rss_mb(code: str) -> int:
    """Peak RSS growth (MB) of a child running ``code`` after importing the readers."""
    prog = (
        "import resource\n"
        "from gpr1200_hf.io import read_array\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1])


UNUSED_MB = 300


def test_unused_npz_array_is_never_decompressed(tmp_path):
    x = np.random.default_rng(0).standard_normal((24, 8)).astype(np.float32)
    path = tmp_path / "e.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("embeddings.npy", "w") as f:
            np.lib.format.write_array(f, x)
        _zero_member(zf, "junk.npy", UNUSED_MB << 20)
    assert path.stat().st_size < 2 << 20
    grew = _peak_rss_mb(f"a = read_array({str(path)!r}).array\nassert a.shape == (24, 8)")
    assert grew < UNUSED_MB // 3, f"reading grew RSS by {grew} MB"


def test_unused_parquet_column_is_never_decompressed(tmp_path):
    x = np.random.default_rng(0).standard_normal((24, 8)).astype(np.float32)
    path = tmp_path / "e.parquet"
    blob = bytes((UNUSED_MB << 20) // 24)
    schema = pa.schema([("embeddings", pa.list_(pa.float32())), ("junk", pa.binary())])
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for i in range(24):  # one row per row group: the writer never holds all of it
            w.write_table(pa.table({"embeddings": [x[i]], "junk": [blob]}, schema=schema))
    del blob
    assert path.stat().st_size < 2 << 20
    grew = _peak_rss_mb(f"a = read_array({str(path)!r}).array\nassert a.shape == (24, 8)")
    assert grew < UNUSED_MB // 3, f"reading grew RSS by {grew} MB"


def test_compressed_bomb_in_the_used_array_is_refused_before_reading(corpus):
    grew = _peak_rss_mb(
        "from gpr1200_hf.errors import InputError\n"
        f"try:\n    read_array({str(corpus / 'bomb.npz')!r})\n"
        "except InputError as e:\n    assert 'bomb' in str(e)\n"
        "else:\n    raise SystemExit('not refused')"
    )
    assert grew < 50, f"refusing grew RSS by {grew} MB"


def test_parquet_bomb_in_the_used_column_is_refused(tmp_path, capsys):
    path = tmp_path / "e.parquet"
    schema = pa.schema([("embeddings", pa.list_(pa.float32()))])
    row = np.zeros(1 << 20, np.float32)
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for _ in range(20):
            w.write_table(pa.table({"embeddings": [row] * 4}, schema=schema))
    assert_one_error_line(main(["score", str(path)]), capsys.readouterr().err, "bomb")


# --------------------------------------------------------------------------- smaller fixes


def test_pickle_is_named_only_for_pickles(corpus, capsys):
    main(["score", f"{corpus}/garbage.npy"])
    assert "pickle" not in capsys.readouterr().err
    np.save(corpus / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    main(["score", f"{corpus}/objects.npy"])
    assert "pickle" in capsys.readouterr().err


def test_duplicate_file_names_are_refused_not_scored(tmp_path, capsys):
    """Repeated file names used to score 100 %: every row was matched with its copies."""
    x = np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32)
    names = np.array([f"{c}_same.jpg" for c in np.repeat([1, 2, 3], 4)])
    np.savez(tmp_path / "e.npz", embeddings=x, file_names=names)
    code = main(["score", str(tmp_path / "e.npz")])
    assert_one_error_line(code, capsys.readouterr().err, "'1_same.jpg' appears 4 times")


def test_large_valid_npz_and_labels_still_work(tmp_path, capsys):
    """The checked readers accept what they should: compressed npz, BOM UTF-8, text labels."""
    rng = np.random.default_rng(2)
    y = np.repeat([3, 250, 420], 4)
    x = rng.standard_normal((12, 16)).astype(np.float64)
    np.savez_compressed(tmp_path / "e.npz", features=x)
    (tmp_path / "y.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(map(str, y)).encode())
    (tmp_path / "y.json").write_text(json.dumps([str(v) for v in y]))
    want = gpr1200_hf.score(x, y)
    for labels in ("y.txt", "y.json"):
        out = tmp_path / f"{labels}.r.json"
        args = ["score", str(tmp_path / "e.npz"), "--labels", str(tmp_path / labels)]
        assert main([*args, "--json", str(out)]) == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["map"] == want["map"]
