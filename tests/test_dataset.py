"""GPR1200 as a datasets.Dataset: builder, structure checks, Hub export, demo sample."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from PIL import Image

import gpr1200_hf as g
from gpr1200_hf import dataset as gd
from gpr1200_hf import protocol
from gpr1200_hf.cli import main
from gpr1200_hf.demo import CATEGORIES_FILE, make_demo
from gpr1200_hf.errors import DataError


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    images, cats = make_demo(root / "folder", per_subset=2, seed=3, size=(40, 64))
    zipped, _ = make_demo(root / "zip", per_subset=2, seed=3, size=(40, 64), as_zip=True)
    return {"folder": images.parent, "images": images, "zip": zipped, "categories": cats}


def _load(source, categories, tmp_path, strict=False):
    return g.load_gpr1200(
        source, categories=categories, cache_dir=tmp_path / "cache", strict=strict
    )


def test_zip_and_folder_give_the_same_dataset(demo, tmp_path):
    from_zip = _load(demo["zip"], demo["categories"], tmp_path)
    from_dir = _load(demo["folder"], demo["categories"], tmp_path)
    assert len(from_zip) == 120 and from_zip.split == "test"
    assert from_zip.features == from_dir.features
    assert from_zip["file_name"] == from_dir["file_name"]
    zip_rows = from_zip.cast_column("image", datasets.Image(decode=False))
    dir_rows = from_dir.cast_column("image", datasets.Image(decode=False))
    assert [r["bytes"] for r in zip_rows["image"]] == [r["bytes"] for r in dir_rows["image"]]


def test_rows_features_and_canonical_order(demo, tmp_path):
    ds = _load(demo["zip"], demo["categories"], tmp_path)
    texts = json.loads(Path(demo["categories"]).read_text())
    names = ds["file_name"]
    ids = ds["category_id"]
    assert names == sorted(names, key=lambda n: (int(n.split("_")[0]), n))
    assert ids == [int(n.split("_")[0]) for n in names]
    assert ds["label"] == ids
    assert ds.features["label"].names == [texts[str(i)] for i in range(1200)]
    assert ds["category_text"] == [texts[str(i)] for i in ids]
    assert ds.features["subset"].names == list(protocol.SUBSET_KEYS)
    assert [ds.features["subset"].int2str(s) for s in ds["subset"]] == [
        protocol.subset_of(i).key for i in ids
    ]
    assert set(ds.features) == {
        "image",
        "label",
        "category_id",
        "category_text",
        "subset",
        "file_name",
    }
    raw = ds.cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert raw == (demo["images"] / names[0]).read_bytes()  # bytes kept as stored
    assert isinstance(ds[0]["image"], Image.Image)


def test_strict_refuses_a_sample(demo, tmp_path):
    with pytest.raises(DataError, match="strict=False") as err:
        _load(demo["zip"], demo["categories"], tmp_path, strict=True)
    # the library's and the command line's spelling, neither presented as the other's
    assert "strict=False (--no-strict)" not in str(err.value)
    assert "command line: --no-strict" in str(err.value)


def _write_sample(folder: Path, names: list[str], data: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="JPEG")
    for n in names:
        (folder / n).write_bytes((data or {}).get(n, buf.getvalue()))
    return folder


def _cat_names(cat, n=10, prefix="img"):
    return [f"{cat}_{prefix}_{i}.jpg" for i in range(n)]


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (_cat_names(5) + ["badname.jpg"], "badname.jpg"),
        (_cat_names(5) + _cat_names(1500), "1500_img_0.jpg"),
        (_cat_names(5, 9), "category 5 has 9 images"),
        (_cat_names(5) + ["notes.txt"], "notes.txt"),
    ],
)
def test_structure_errors_name_the_file(demo, tmp_path, names, match):
    folder = _write_sample(tmp_path / "src" / "images", names)
    with pytest.raises(DataError, match=match):
        _load(folder.parent, demo["categories"], tmp_path)
    assert not list((tmp_path).rglob("*.arrow"))  # nothing half-built


def test_corrupt_image_is_skipped_and_named_when_not_strict(demo, tmp_path, caplog):
    names = _cat_names(7)
    folder = _write_sample(tmp_path / "src" / "images", names, {names[3]: b"not a jpeg"})
    ds = _load(folder.parent, demo["categories"], tmp_path)
    assert ds["file_name"] == sorted(n for n in names if n != names[3])
    assert gd.skipped_images(ds) == [f"{names[3]}: cannot be decoded as an image (unknown format)"]
    assert names[3] in caplog.text


def test_truncated_zip(demo, tmp_path):
    data = Path(demo["zip"]).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.zip"):
        _load(cut, demo["categories"], tmp_path)


def test_corrupt_member_in_zip(demo, tmp_path):
    src = tmp_path / "bad.zip"
    with zipfile.ZipFile(demo["zip"]) as zin, zipfile.ZipFile(src, "w") as zout:
        for i, info in enumerate(zin.infolist()):
            zout.writestr(info.filename, b"\xff\xd8garbage" if i == 5 else zin.read(info))
    bad = zipfile.ZipFile(src).infolist()[5].filename.rsplit("/", 1)[-1]
    ds = _load(src, demo["categories"], tmp_path)
    assert len(ds) == 119 and bad not in ds["file_name"]
    assert gd.skipped_images(ds)[0].startswith(f"{bad}: cannot be decoded")


@pytest.mark.parametrize("problem", ["missing", "not-json", "lacks-ids"])
def test_category_json_errors(demo, tmp_path, problem):
    path = tmp_path / "cats.json"
    if problem == "not-json":
        path.write_text("{oops")
    elif problem == "lacks-ids":
        path.write_text(json.dumps({"0": "only one"}))
    match = {"missing": "does not exist", "not-json": "not valid JSON", "lacks-ids": "no text"}
    with pytest.raises(DataError, match=match[problem]):
        _load(demo["zip"], path, tmp_path)


def _zip_of(path: Path, members: list[str]) -> Path:
    """A zip whose members are all the same small JPEG."""
    img = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(img, format="JPEG")
    with zipfile.ZipFile(path, "w") as zf:
        for name in members:
            zf.writestr(name, img.getvalue())
    return path


def test_zip_member_names_are_never_paths(demo, tmp_path):
    src = _zip_of(tmp_path / "slip.zip", [f"../../escape/{i % 2}/0_x{i}.jpg" for i in range(10)])
    ds = _load(src, demo["categories"], tmp_path)
    assert ds["file_name"] == sorted(f"0_x{i}.jpg" for i in range(10))
    assert not (tmp_path.parent / "escape").exists()
    assert not list(Path("/").glob("escape"))


def test_unusual_image_modes_keep_their_bytes(demo, tmp_path):
    modes = {}
    for i, mode in enumerate(["L", "CMYK", "P", "RGB"] * 3):
        if i >= 10:
            break
        buf = io.BytesIO()
        im = Image.new("RGB", (10, 10), (i * 20, 50, 90)).convert(mode)
        im.save(buf, format="PNG" if mode == "P" else "JPEG")
        modes[f"3_m{i}_{mode}.{'png' if mode == 'P' else 'jpg'}"] = buf.getvalue()
    folder = _write_sample(tmp_path / "src" / "images", list(modes), modes)
    ds = _load(folder.parent, demo["categories"], tmp_path)
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert [r["bytes"] for r in raw["image"]] == [modes[n] for n in ds["file_name"]]
    assert {ds[i]["image"].mode for i in range(len(ds))} == {"L", "CMYK", "P", "RGB"}


@pytest.fixture
def json_server(demo):
    body = Path(demo["categories"]).read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/cats.json", hashlib.sha256(body).hexdigest()
    server.shutdown()


def test_category_json_download_is_sha256_checked(demo, tmp_path, json_server, monkeypatch):
    url, digest = json_server
    monkeypatch.setattr(protocol, "CATEGORIES_URL", url)
    monkeypatch.setattr(protocol, "CATEGORIES_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        gd.fetch_categories(tmp_path / "c1")
    assert not list((tmp_path / "c1").glob("*.json"))
    monkeypatch.setattr(protocol, "CATEGORIES_SHA256", digest)
    ds = g.load_gpr1200(demo["zip"], cache_dir=tmp_path / "c2", strict=False)
    assert len(ds) == 120


def test_export_hub_round_trip(demo, tmp_path, monkeypatch):
    out = tmp_path / "gpr1200"
    code = main(
        [
            "export-hub",
            str(out),
            "--source",
            str(demo["zip"]),
            "--categories",
            str(demo["categories"]),
            "--no-strict",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    assert [p.name for p in (out / "data").iterdir()] == ["test-00000-of-00001.parquet"]
    assert not list(out.rglob("*.py"))
    want = _load(demo["zip"], demo["categories"], tmp_path)
    got = datasets.load_dataset(str(out), split="test")
    assert got.features == want.features
    for col in ("file_name", "label", "category_id", "category_text", "subset"):
        assert got[col] == want[col]
    raw_got = got.cast_column("image", datasets.Image(decode=False))["image"]
    raw_want = want.cast_column("image", datasets.Image(decode=False))["image"]
    assert [r["bytes"] for r in raw_got] == [r["bytes"] for r in raw_want]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["configs"][0]["data_files"][0]["path"] == "data/test-*"
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 120
    assert meta["license"] == "other" and meta["extra_gated_fields"]
    for text in (
        "non-commercial",
        "removed on request",
        "@inproceedings",
        "| IN-Sketch (`sketch`) | ImageNet-Sketch | 400-599 | 2 |",
        "gpr1200 evaluate",
    ):
        assert text in card
    monkeypatch.chdir(tmp_path)
    by_name = datasets.load_dataset("gpr1200", split="test")
    assert by_name["file_name"] == want["file_name"]


def test_make_demo_cli_and_format(tmp_path):
    assert main(["make-demo", str(tmp_path / "d"), "--per-subset", "3", "--seed", "5"]) == 0
    names = sorted(p.name for p in (tmp_path / "d" / "images").iterdir())
    assert len(names) == 6 * 3 * 10
    ids = sorted({protocol.parse_file_name(n)[0] for n in names})
    for s in protocol.SUBSETS:
        assert sum(1 for i in ids if s.first_category <= i <= s.last_category) == 3
    cats = json.loads((tmp_path / "d" / CATEGORIES_FILE).read_text())
    assert sorted(map(int, cats)) == list(range(1200))
    assert main(["make-demo", str(tmp_path / "z"), "--per-subset", "1", "--zip"]) == 0
    with zipfile.ZipFile(tmp_path / "z" / "GPR1200.zip") as zf:
        assert all(n.startswith("images/") for n in zf.namelist()) and len(zf.namelist()) == 60
    grays = [Image.open(tmp_path / "d" / "images" / n).mode for n in names]
    assert "L" in grays and "RGB" in grays
    assert main(["make-demo", str(tmp_path / "e"), "--per-subset", "0"]) == 2


def test_demo_baseline_scores_between_chance_and_perfect(demo):
    from gpr1200_hf.baseline import color_texture_embedding

    files = sorted(demo["images"].iterdir())
    order, labels = protocol.canonical_order([f.name for f in files])
    x = np.stack([color_texture_embedding(Image.open(files[i])) for i in order])
    baseline = g.score(x, labels)["map"]
    chance = g.score(np.random.default_rng(0).standard_normal(x.shape), labels)["map"]
    assert chance + 0.2 < baseline < 0.95, (chance, baseline)


def test_duplicate_file_names_in_zip_are_refused(demo, tmp_path):
    names = [f"images/0_x{i}.jpg" for i in range(10)] + ["other/0_x3.jpg"]
    src = _zip_of(tmp_path / "dup.zip", names)
    with pytest.raises(DataError, match="'0_x3.jpg' appears twice"):
        _load(src, demo["categories"], tmp_path)
