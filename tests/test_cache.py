"""The evaluate embedding cache never returns embeddings of another setup, and never corrupt ones.

Each test reproduces a defect of the first cache: chunks of another --chunk-rows reused by start
row, images replaced (same size, mtimes restored) read from the old cache, corrupted numbers
under a valid header reused, a local model's preprocessing changed without notice; and images
that cannot be decoded crash extraction without naming the file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from gpr1200_hf.cli import main
from gpr1200_hf.demo import make_demo
from gpr1200_hf.errors import DataError
from gpr1200_hf.extract import extract
from gpr1200_hf.fingerprint import source_fingerprint
from gpr1200_hf.models import baseline_embedder
from gpr1200_hf.runner import evaluate_model
from tests.tiny_models import save_tiny

BASELINE = "baseline:color-hist"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_demo(root, per_subset=1, seed=2, size=(32, 48))
    return root


def _copy(sample: Path, dest: Path) -> Path:
    shutil.copytree(sample, dest)
    return dest


def _run(model, data, out, **kw):
    kw.setdefault("workers", 0)
    return evaluate_model(
        str(model), data=str(data), output_dir=out, progress=False, batch_size=7, **kw
    )


def _embeddings(result) -> np.ndarray:
    path = Path(result["embeddings_cache"]) / "embeddings.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("embeddings")


def _corrupt_numbers(path: Path) -> None:
    """Overwrite the first row's numbers; the safetensors header stays valid."""
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    raw[start : start + 16] = np.full(4, 0.5, np.float32).tobytes()
    path.write_bytes(bytes(raw))
    with safe_open(str(path), framework="numpy") as f:  # still a readable file
        assert f.get_tensor("embeddings")[0, 0] == 0.5


def test_resume_with_another_chunk_rows_never_mixes_layouts(sample, tmp_path):
    fresh = _run(BASELINE, sample, tmp_path / "fresh")
    for first, second in ((16, 8), (16, 32)):
        out = tmp_path / f"mixed-{first}-{second}"
        assert _run(BASELINE, sample, out, chunk_rows=first, max_chunks=2) is None
        resumed = _run(BASELINE, sample, out, chunk_rows=second)
        np.testing.assert_array_equal(_embeddings(resumed), _embeddings(fresh))
        assert resumed["metrics"] == fresh["metrics"]
        again = _run(BASELINE, sample, out, chunk_rows=first)  # the final file serves any layout
        assert again["timings"]["from_cache"] is True
        assert again["metrics"] == fresh["metrics"]


def test_resume_with_the_same_chunk_rows_reuses_its_chunks(sample, tmp_path):
    assert _run(BASELINE, sample, tmp_path, chunk_rows=16, max_chunks=2) is None
    resumed = _run(BASELINE, sample, tmp_path, chunk_rows=16)
    assert resumed["timings"]["computed_images"] == 60 - 32


def _replace_keeping_size_and_mtime(path: Path, colour: tuple[int, int, int]) -> None:
    st = path.stat()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "JPEG")
    data = buf.getvalue()
    assert len(data) <= st.st_size
    path.write_bytes(data + b"\0" * (st.st_size - len(data)))  # bytes after EOI are ignored
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_images_replaced_with_same_size_and_mtime_are_recomputed(sample, tmp_path):
    data = _copy(sample, tmp_path / "data")
    out = tmp_path / "runs"
    before = _run(BASELINE, data, out)
    files = sorted((data / "images").iterdir())
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    rng = np.random.default_rng(0)
    for p in files:
        _replace_keeping_size_and_mtime(p, tuple(int(v) for v in rng.integers(0, 256, 3)))
    assert [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files] == stats
    after = _run(BASELINE, data, out)
    fresh = _run(BASELINE, data, tmp_path / "fresh")
    assert after["timings"]["from_cache"] is False
    np.testing.assert_array_equal(_embeddings(after), _embeddings(fresh))
    assert after["metrics"] == fresh["metrics"] != before["metrics"]
    assert after["run_dir"] != before["run_dir"]  # other data, other run folder


def test_zip_fingerprint_follows_member_content(sample, tmp_path):
    import zipfile

    def write(path: Path, replace: bytes | None) -> Path:
        with zipfile.ZipFile(path, "w") as zf:
            for p in sorted((sample / "images").iterdir()):
                zf.writestr(f"images/{p.name}", replace or p.read_bytes())
        return path

    a = source_fingerprint(write(tmp_path / "a.zip", None))
    assert source_fingerprint(write(tmp_path / "b.zip", None)) == a  # content, not place/time
    assert source_fingerprint(write(tmp_path / "c.zip", b"x" * 900)) != a


def test_chunk_with_corrupted_numbers_is_recomputed(sample, tmp_path, capfd):
    fresh = _run(BASELINE, sample, tmp_path / "fresh")
    out = tmp_path / "runs"
    assert _run(BASELINE, sample, out, chunk_rows=16, max_chunks=2) is None
    chunk = next((out / "embeddings").glob("*/chunk-00000000-00000016.safetensors"))
    _corrupt_numbers(chunk)
    capfd.readouterr()
    resumed = _run(BASELINE, sample, out, chunk_rows=16)
    err = capfd.readouterr().err
    np.testing.assert_array_equal(_embeddings(resumed), _embeddings(fresh))
    assert resumed["timings"]["computed_images"] == 60 - 16
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and chunk.name in warnings[0] and "checksum" in warnings[0]


def test_chunk_of_another_range_under_a_layout_name_is_not_used(sample, tmp_path, capfd):
    out = tmp_path / "runs"
    assert _run(BASELINE, sample, out, chunk_rows=16, max_chunks=2) is None
    folder = next((out / "embeddings").iterdir())
    # Rows 16-32 copied under the name of rows 0-16: valid file, valid checksum, wrong range.
    os.replace(
        folder / "chunk-00000016-00000032.safetensors",
        folder / "chunk-00000000-00000016.safetensors",
    )
    resumed = _run(BASELINE, sample, out, chunk_rows=16)
    fresh = _run(BASELINE, sample, tmp_path / "fresh")
    np.testing.assert_array_equal(_embeddings(resumed), _embeddings(fresh))
    assert "start" in capfd.readouterr().err


def test_corrupted_final_file_is_recomputed(sample, tmp_path, capfd):
    first = _run(BASELINE, sample, tmp_path)
    want = _embeddings(first).copy()
    final = Path(first["embeddings_cache"]) / "embeddings.safetensors"
    _corrupt_numbers(final)
    capfd.readouterr()
    again = _run(BASELINE, sample, tmp_path)
    err = capfd.readouterr().err
    assert again["timings"]["from_cache"] is False
    assert again["metrics"] == first["metrics"]
    np.testing.assert_array_equal(_embeddings(again), want)
    assert "warning:" in err and "embeddings.safetensors" in err
    assert _run(BASELINE, sample, tmp_path)["timings"]["from_cache"] is True


def test_truncated_final_file_is_recomputed(sample, tmp_path, capfd):
    first = _run(BASELINE, sample, tmp_path)
    final = Path(first["embeddings_cache"]) / "embeddings.safetensors"
    final.write_bytes(final.read_bytes()[:-100])
    again = _run(BASELINE, sample, tmp_path)
    assert again["timings"]["from_cache"] is False and again["metrics"] == first["metrics"]
    assert "warning:" in capfd.readouterr().err


def test_local_model_preprocessing_change_is_seen(sample, tmp_path):
    model = save_tiny("vit", tmp_path / "vit")
    out = tmp_path / "runs"
    before = _run(model, sample, out)
    config = model / "preprocessor_config.json"
    st = config.stat()
    text = config.read_text()
    changed = text.replace('"image_mean": [\n    0.5', '"image_mean": [\n    0.1')
    assert changed != text and len(changed) == len(text)
    config.write_text(changed)
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = _run(model, sample, out)
    fresh = _run(model, sample, tmp_path / "fresh")
    assert after["timings"]["from_cache"] is False
    np.testing.assert_array_equal(_embeddings(after), _embeddings(fresh))
    assert not np.array_equal(_embeddings(after), _embeddings(before))
    assert after["revision"] != before["revision"]


# --------------------------------------------------------------------------- undecodable images


def _truncated_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) * 2 // 3]


def _png_bomb(side: int = 20000) -> bytes:
    """A small PNG whose header declares side x side pixels (PIL refuses it at open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + side // 8) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    ("name", "make"), [("5_bad.jpg", _truncated_jpeg), ("5_bomb.png", _png_bomb)]
)
def test_undecodable_image_is_refused_naming_the_file(sample, tmp_path, workers, name, make):
    files = sorted((sample / "images").iterdir())[:6]
    rows = [{"bytes": p.read_bytes(), "path": None} for p in files] + [
        {"bytes": make(), "path": None}
    ]
    ds = datasets.Dataset.from_dict(
        {"image": rows, "file_name": [p.name for p in files] + [name]},
        features=datasets.Features(
            {"image": datasets.Image(), "file_name": datasets.Value("string")}
        ),
    )
    with pytest.raises(DataError) as err:
        extract(ds, baseline_embedder(BASELINE), tmp_path, workers=workers, progress=False)
    message = str(err.value)
    assert message.startswith(f"{name}: cannot decode the image") and "\n" not in message
    assert not list(tmp_path.glob("*/embeddings.safetensors"))


def test_truncated_jpeg_in_the_data_is_skipped_named_and_recorded(sample, tmp_path, capsys, caplog):
    """evaluate loads non-strictly (samples are allowed): an unreadable image is skipped with a
    warning naming it, recorded in results.json, and the run is never a benchmark result."""
    data = _copy(sample, tmp_path / "data")
    victim = sorted((data / "images").iterdir())[7]
    victim.write_bytes(_truncated_jpeg())
    code = main(
        ["evaluate", "--model", BASELINE, "--data", str(data), "--output-dir", str(tmp_path / "o")]
        + ["--workers", "1", "--no-progress", "--hub-dataset", "org/gpr1200"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    # One warning line naming the file (the gpr1200_hf logger; stderr outside pytest).
    warnings = [r.getMessage() for r in caplog.records if victim.name in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped")
    run = next((tmp_path / "o").glob("*/results.json"))
    skipped = json.loads(run.read_text())["data"]["skipped_images"]
    assert len(skipped) == 1 and skipped[0].startswith(victim.name)
    assert "skipped as unreadable" in captured.out
    assert not (run.parent / ".eval_results").exists()


def test_run_json_records_the_key_fields(sample, tmp_path):
    assert _run(BASELINE, sample, tmp_path, chunk_rows=16, max_chunks=1) is None
    run = json.loads(next((tmp_path / "embeddings").glob("*/run.json")).read_text())
    assert run["dataset"] == source_fingerprint(sample) and run["preprocessing"]
    assert run["chunk_rows"] == 16
