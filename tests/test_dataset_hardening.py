"""Hostile and careless inputs to the dataset loader, export and demo (issue 10)."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import datasets
import pytest
from PIL import Image

from gpr1200_hf import dataset as gd
from gpr1200_hf import hub, protocol
from gpr1200_hf.cli import main
from gpr1200_hf.demo import CATEGORIES_FILE, make_demo
from gpr1200_hf.errors import DataError, InputError
from gpr1200_hf.runner import open_data


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    images, cats = make_demo(root / "folder", per_subset=2, seed=3, size=(40, 64))
    return {"folder": images.parent, "images": images, "categories": cats}


def _jpeg(color="red", size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (8-bit gray) and holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()[:-300]


def _names(cat: int, n: int = 10) -> list[str]:
    return [f"{cat}_img_{i}.jpg" for i in range(n)]


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    (root / "images").mkdir(parents=True)
    for name, data in files.items():
        (root / "images" / name).write_bytes(data)
    return root


def _sample(root: Path, bad: dict[str, bytes], cats=(0, 5)) -> Path:
    """A folder sample of the given categories (10 small JPEGs each), some files replaced."""
    files = {n: _jpeg() for c in cats for n in _names(c)}
    return _folder(root, files | bad)


def _full_zip(path: Path, bad: dict[str, bytes], zeros: str = "") -> Path:
    """All 12000 images (the same small JPEG), some replaced: what strict mode needs.

    ``zeros`` names a member written as MAX_IMAGE_BYTES + 1 MiB of zeros instead.
    """
    img = _jpeg("green")
    with zipfile.ZipFile(path, "w") as zf:
        for c in range(protocol.NUM_CATEGORIES):
            for name in _names(c):
                if name == zeros:
                    _zeros_member(zf, f"images/{name}", gd.MAX_IMAGE_BYTES + 2**20)
                else:
                    zf.writestr(f"images/{name}", bad.get(name, img))
    return path


def _load(source, demo, tmp_path, strict=False):
    return gd.load_gpr1200(
        source, categories=demo["categories"], cache_dir=tmp_path / "cache", strict=strict
    )


def _no_finished_build(tmp_path: Path) -> bool:
    return not [p for p in (tmp_path / "cache").rglob("*.arrow") if "incomplete" not in str(p)]


# --------------------------------------------------------------------------- item 6: images

BAD_IMAGES = {
    "truncated JPEG": (_truncated_jpeg, "image file is truncated"),
    "20000x20000 PNG": (lambda: _png_header(20000, 20000), "too many pixels"),
    "PNG just above the pixel cap": (lambda: _png_header(8193, 8192), "8193x8192"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_skipped_and_reported_when_not_strict(demo, tmp_path, caplog, kind):
    make, reason = BAD_IMAGES[kind]
    bad = _names(5)[2]
    src = _sample(tmp_path / "src", {bad: make()})
    with caplog.at_level(logging.WARNING, logger="gpr1200_hf"):
        ds = _load(src, demo, tmp_path)
    assert bad not in ds["file_name"] and len(ds) == 19
    (line,) = gd.skipped_images(ds)
    assert line.startswith(f"{bad}: ") and reason in line
    assert [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gpr1200_hf"):
        again = _load(src, demo, tmp_path)  # from the cache: still reported
    assert gd.skipped_images(again) == [line]
    assert bad in caplog.text


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_refused_when_strict(demo, tmp_path, kind):
    make, reason = BAD_IMAGES[kind]
    bad = _names(0)[3]
    src = _full_zip(tmp_path / "full.zip", {bad: make()})
    with pytest.raises(DataError, match=f"{bad}: .*{reason}"):
        _load(src, demo, tmp_path, strict=True)
    assert _no_finished_build(tmp_path)


def test_truncated_jpeg_is_named_by_export_hub(demo, tmp_path, capsys):
    bad = _names(0)[1]
    src = _full_zip(tmp_path / "full.zip", {bad: _truncated_jpeg()})
    out = tmp_path / "out"
    args = ["export-hub", str(out), "--source", str(src), "--categories", str(demo["categories"])]
    assert main([*args, "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err  # may hold datasets' progress bar before the error
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and bad in last and "Traceback" not in err
    assert not (out / "README.md").exists() and not (out / "data").exists()
    sample = _sample(tmp_path / "sample", {bad: _truncated_jpeg()})
    args[3] = str(sample)
    assert main([*args, "--no-strict", "--cache-dir", str(tmp_path / "c")]) == 0
    exported = gd.load_exported(out)
    assert len(exported) == 19 and bad not in exported["file_name"]
    exported.cast_column("image", datasets.Image(decode=True))[18]["image"].load()


def _noise_jpeg(**kw) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((96, 64), 50).convert("RGB").save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
def test_check_image_finds_every_cut_of_a_jpeg(progressive):
    data = _noise_jpeg(progressive=progressive)
    scan = gd._jpeg_scan_start(data)
    assert data[scan : scan + 2] == b"\xff\xda"
    for end in [*range(len(data) - 40, len(data)), len(data) // 2, scan + 3, scan, scan - 5, 40]:
        with pytest.raises(gd.ImageProblem, match="cannot be decoded"):
            gd.check_image(data[:end], f"cut at {end}")


def test_check_image_accepts_bytes_after_the_end_marker():
    data = _noise_jpeg()
    for tail in (b"\0" * 100, b"trailer from a camera", b"\xff\xd9"):
        gd.check_image(data + tail, "padded.jpg")  # decoded completely instead: whole


def test_check_image_ignores_a_global_load_truncated_images(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(gd.ImageProblem, match="truncated"):
        gd.check_image(_truncated_jpeg(), "x.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


# --------------------------------------------------------------------------- item 4: size cap


def _zeros_member(zf: zipfile.ZipFile, name: str, size: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        for _ in range(size // 2**20):
            f.write(bytes(2**20))


def test_zip_member_above_the_size_cap_is_not_read(demo, tmp_path, caplog):
    big = _names(5)[0]
    src = tmp_path / "bomb.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        for c in (0, 5):
            for name in _names(c):
                if name == big:
                    _zeros_member(zf, f"images/{name}", gd.MAX_IMAGE_BYTES + 2**20)
                else:
                    zf.writestr(f"images/{name}", _jpeg())
    assert src.stat().st_size < gd.MAX_IMAGE_BYTES // 100  # 65 MiB of zeros, deflated
    ds = _load(src, demo, tmp_path)
    assert len(ds) == 19
    (line,) = gd.skipped_images(ds)
    assert line.startswith(f"{big}: declares {gd.MAX_IMAGE_BYTES + 2**20} bytes, more than")


def test_zip_member_above_the_size_cap_is_refused_when_strict(demo, tmp_path):
    big = "0_img_9.jpg"
    src = _full_zip(tmp_path / "full.zip", {}, zeros=big)
    with pytest.raises(DataError, match=f"{big}: declares .*MAX_IMAGE_BYTES"):
        _load(src, demo, tmp_path, strict=True)


def test_folder_file_above_the_size_cap_is_not_read(demo, tmp_path):
    big = _names(0)[4]
    src = _sample(tmp_path / "src", {})
    with open(src / "images" / big, "r+b") as f:
        f.truncate(gd.MAX_IMAGE_BYTES + 1)  # sparse: costs no disk
    ds = _load(src, demo, tmp_path)
    assert gd.skipped_images(ds) == [
        f"{big}: is {gd.MAX_IMAGE_BYTES + 1} bytes, more than the cap of "
        f"{gd.MAX_IMAGE_BYTES} bytes (MAX_IMAGE_BYTES)"
    ]


def test_reads_stop_at_the_cap_whatever_the_declared_size(monkeypatch):
    monkeypatch.setattr(gd, "MAX_IMAGE_BYTES", 3 * 2**20)
    stream = io.BytesIO(bytes(5 * 2**20))
    with pytest.raises(gd.ImageProblem, match="more than 3145728 bytes"):
        gd._read_capped(stream, "m.jpg")
    assert stream.tell() <= 3 * 2**20 + 1
    assert gd._read_capped(io.BytesIO(bytes(3 * 2**20)), "m.jpg") == bytes(3 * 2**20)


# --------------------------------------------------------------------------- item 7: links


def test_symlink_leaving_the_source_is_refused(demo, tmp_path):
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(_jpeg("black"))
    src = _sample(tmp_path / "src", {}, cats=(0,))
    names = _names(5)
    for name in names[:9]:
        (src / "images" / name).write_bytes(_jpeg())
    (src / "images" / names[9]).symlink_to(secret)
    for strict in (False, True):
        with pytest.raises(DataError, match=f"{names[9]}.*symbolic link.*outside"):
            _load(src, demo, tmp_path, strict=strict)
    out = tmp_path / "export"
    with pytest.raises(DataError, match="outside the source"):
        hub.export_hub(out, src, categories=demo["categories"], strict=False)
    assert not out.exists() or not any(out.rglob("*.parquet"))


def test_symlink_inside_the_source_is_followed(demo, tmp_path):
    src = _sample(tmp_path / "src", {}, cats=(0,))
    (src / "spare").mkdir()
    inner = src / "spare" / "blue.jpg"
    inner.write_bytes(_jpeg("blue"))
    for name in _names(5):
        (src / "images" / name).symlink_to(inner)
    ds = _load(src, demo, tmp_path).cast_column("image", datasets.Image(decode=False))
    assert ds[10]["file_name"] == "5_img_0.jpg"
    assert ds[10]["image"]["bytes"] == inner.read_bytes()


def test_images_folder_linked_outside_is_refused(demo, tmp_path):
    real = _sample(tmp_path / "real", {}, cats=(0,))
    src = tmp_path / "src"
    src.mkdir()
    (src / "images").symlink_to(real / "images")
    with pytest.raises(DataError, match="outside the source folder; pass that folder itself"):
        _load(src, demo, tmp_path)
    assert len(_load(real / "images", demo, tmp_path)) == 10  # the folder itself is fine


def test_broken_symlink_is_named(demo, tmp_path):
    src = _sample(tmp_path / "src", {}, cats=(0,))
    (src / "images" / _names(0)[0]).unlink()
    (src / "images" / _names(0)[0]).symlink_to(src / "images" / "gone.jpg")
    with pytest.raises(DataError, match="0_img_0.jpg' is a broken symbolic link"):
        _load(src, demo, tmp_path)


def test_zip_member_that_is_a_symlink_is_refused(demo, tmp_path):
    src = tmp_path / "links.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for name in _names(0)[:9]:
            zf.writestr(f"images/{name}", _jpeg())
        link = zipfile.ZipInfo("images/0_img_9.jpg")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="'images/0_img_9.jpg' is a symbolic link"):
        _load(src, demo, tmp_path)


# --------------------------------------------------------------------------- item 8: JSON keys


def _json_with(extra: str = "", replace: dict[str, str] | None = None) -> str:
    entries = {str(i): f'"text {i}"' for i in range(protocol.NUM_CATEGORIES)} | (replace or {})
    return "{" + ", ".join(f'"{k}": {v}' for k, v in entries.items()) + extra + "}"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_json_with(', "7": "again"'), "key '7' appears more than once"),
        (_json_with(', "007": "x"'), "key '007' is not a category ID"),
        (_json_with(', "\u0661": "x"'), "key '\u0661' is not a category ID"),
        (_json_with(', "1200": "x"'), "key '1200' is not a category ID"),
        (_json_with(', "-1": "x"'), "key '-1' is not a category ID"),
        (_json_with(', " 3": "x"'), "key ' 3' is not a category ID"),
        (_json_with(', "3.0": "x"'), "key '3.0' is not a category ID"),
        (_json_with(replace={"9": "5"}), "the value of key '9' is int, not a text"),
        (_json_with(replace={"9": "null"}), "the value of key '9' is NoneType"),
        (_json_with(replace={"9": '{"a": "b"}'}), "the value of key '9' is dict"),
        ("[" * 100000 + "]" * 100000, "nested too deeply|must map"),
    ],
)
def test_odd_category_json_keys_are_named(demo, tmp_path, text, match):
    path = tmp_path / "cats.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        gd.read_categories(path)
    src = _sample(tmp_path / "src", {}, cats=(0,))
    with pytest.raises(DataError, match=match):
        gd.load_gpr1200(src, categories=path, cache_dir=tmp_path / "c", strict=False)


def test_categories_sharing_a_text_load_as_in_the_official_json(tmp_path):
    """The official JSON gives categories 590 and 603 the same text ("plate"): both load, the
    category_text column keeps the text, the ClassLabel names stay unique."""
    path = tmp_path / "cats.json"
    path.write_text(_json_with(replace={"0": '"plate"', "3": '"plate"'}), encoding="utf-8")
    texts = gd.read_categories(path)
    assert texts[0] == texts[3] == "plate"
    names = gd.label_names(texts)
    assert names[0] == "plate (category 0)" and names[3] == "plate (category 3)"
    assert len(set(names)) == len(names) and names[1] == texts[1]
    src = _sample(tmp_path / "src", {}, cats=(0, 3))
    ds = gd.load_gpr1200(src, categories=path, cache_dir=tmp_path / "c", strict=False)
    assert set(ds["category_text"]) == {"plate"}
    label = ds.features["label"]
    assert {label.int2str(i) for i in ds["label"]} == {"plate (category 0)", "plate (category 3)"}


def test_huge_category_json_is_not_read(tmp_path):
    path = tmp_path / "cats.json"
    with open(path, "wb") as f:
        f.truncate(gd.MAX_CATEGORIES_BYTES + 1)  # sparse
    with pytest.raises(DataError, match="more than the 16777216 a list of 1200"):
        gd.read_categories(path)


# --------------------------------------------------------------------------- item 8: exports


@pytest.fixture(scope="module")
def export(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "gpr1200"
    hub.export_hub(
        out,
        demo["folder"],
        categories=demo["categories"],
        strict=False,
        cache_dir=out.parent / "cache",
        max_shard_bytes=60_000,
    )
    return out


def _copy(export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export, tmp_path / "copy"))


def _edit_card(folder: Path, old: str, new: str) -> None:
    card = folder / "README.md"
    text = card.read_text()
    assert old in text
    card.write_text(text.replace(old, new, 1))


def test_a_clean_export_loads(export, tmp_path):
    ds = gd.load_exported(export, cache_dir=tmp_path / "c")
    assert len(ds) == 120 and ds.features["label"].num_classes == 1200
    assert len(list((export / "data").iterdir())) > 2
    assert open_data(str(export), cache_dir=tmp_path / "c").dataset.num_rows == 120


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda d: _edit_card(d, "num_examples: 120", "num_examples: 12000"),
            "README.md does not match the shards: it declares 12000 rows, the shards hold 120",
        ),
        (
            lambda d: sorted((d / "data").iterdir())[1].unlink(),
            "the shards are incomplete or mixed",
        ),
        (
            lambda d: (d / "data" / "test-00000-of-00099.parquet").write_bytes(b"x"),
            "the shards are incomplete or mixed",
        ),
        (
            lambda d: (d / "data" / "extra.parquet").write_bytes(b"x"),
            "'extra.parquet' is not an export-hub shard name",
        ),
        (
            lambda d: _edit_card(
                d, "- name: category_id\n    dtype: int32", "- name: category_id\n    dtype: string"
            ),
            r"the features \['category_id'\] are not those of a GPR1200 export",
        ),
        (
            lambda d: _edit_card(d, "- name: file_name\n    dtype: string\n", ""),
            "README.md and the shards do not agree",
        ),
        (lambda d: (d / "README.md").unlink(), None),
    ],
)
def test_export_whose_card_does_not_match_its_shards(export, tmp_path, mutate, match):
    folder = _copy(export, tmp_path)
    mutate(folder)
    with pytest.raises(DataError, match=match or "no README.md"):
        gd.load_exported(folder, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match=match or "no README.md"):
        open_data(str(folder), cache_dir=tmp_path / "c")


def test_exported_folder_given_as_images_folder(export, tmp_path):
    with pytest.raises(DataError, match="is an exported dataset folder"):
        gd.load_gpr1200(export, categories=tmp_path / "none.json", strict=False)


# --------------------------------------------------------------------------- export atomicity


class Killed(BaseException):
    """Stands in for a kill signal in the middle of writing the shards."""


def _kill_after_shards(monkeypatch, n: int) -> None:
    real = datasets.Dataset.to_parquet
    calls = []

    def to_parquet(self, *args, **kwargs):
        if len(calls) == n:
            raise Killed
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "to_parquet", to_parquet)


def _export(demo, out, tmp_path, **kw):
    return hub.export_hub(
        out,
        demo["folder"],
        categories=demo["categories"],
        strict=False,
        cache_dir=tmp_path / "cache",
        max_shard_bytes=60_000,
        **kw,
    )


def test_export_stopped_midway_does_not_load_as_a_dataset(demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _kill_after_shards(monkeypatch, 2)
    with pytest.raises(Killed):
        _export(demo, out, tmp_path)
    assert list(out.rglob("*.parquet"))  # shards were written, but not where they count
    with pytest.raises(Exception, match="(?i)data files|no data|doesn't contain"):
        datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="no README.md"):
        gd.load_exported(out)
    with pytest.raises(DataError, match="incomplete export-hub run"):
        gd.load_gpr1200(out, categories=demo["categories"], strict=False)
    monkeypatch.undo()
    _export(demo, out, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["LICENSE", "README.md", "data", "eval.yaml"]
    assert len(gd.load_exported(out, cache_dir=tmp_path / "c")) == 120


def test_export_stopped_midway_keeps_the_previous_export(demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _export(demo, out, tmp_path)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _kill_after_shards(monkeypatch, 1)
    with pytest.raises(Killed):
        _export(demo, out, tmp_path, repo_id="me/other")
    after = {
        p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and ".export" not in str(p)
    }
    assert after == before
    assert len(gd.load_exported(out, cache_dir=tmp_path / "c")) == 120


def test_export_refuses_a_file_or_foreign_data(demo, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    with pytest.raises(InputError, match="exists and is not a folder"):
        _export(demo, target, tmp_path)
    assert target.read_text() == "keep me"
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not export shards \(\['notes.txt'\]\)"):
        _export(demo, out, tmp_path)
    assert (out / "data" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["README.md", "LICENSE", "eval.yaml"])
def test_export_refuses_to_replace_a_users_top_level_file(demo, tmp_path, capsys, name):
    out = tmp_path / "out"
    _export(demo, out, tmp_path)
    _export(demo, out, tmp_path)  # an earlier export's files: replaced
    capsys.readouterr()
    (out / name).write_text("evaluation_framework: mine\nmy own notes, Built with care\n")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = ["export-hub", str(out), "--source", str(demo["folder"])]
    assert main([*args, "--categories", str(demo["categories"]), "--no-strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{name} was not written by export-hub" in err, err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_export_refuses_an_output_overlapping_the_source(demo, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(demo["folder"], src)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out, source in [
        (src / "images", src),
        (src, src),
        (src, src / "images"),
        (src / "images" / "new", src / "images"),
    ]:
        args = ["export-hub", str(out), "--source", str(source), "--no-strict"]
        assert main([*args, "--categories", str(src / CATEGORIES_FILE)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "overlap" in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- demo and names


def test_make_demo_into_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["make-demo", str(target), "--per-subset", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err
    assert target.read_text() == "keep me"
    with pytest.raises(InputError, match="cannot create the folder"):
        make_demo(target / "below", per_subset=1)


def test_make_demo_replaces_an_earlier_sample_and_keeps_foreign_files(tmp_path):
    out = tmp_path / "d"
    make_demo(out, per_subset=2, seed=1, size=(24, 32))
    images, _ = make_demo(out, per_subset=1, seed=2, size=(24, 32))
    names = sorted(p.name for p in images.iterdir())
    assert len(names) == 60
    assert len({protocol.parse_file_name(n)[0] for n in names}) == 6
    (images / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(InputError, match=r"did not write \(e.g. \['holiday.jpg'\]\)"):
        make_demo(out, per_subset=3, seed=4, size=(24, 32))
    assert (images / "holiday.jpg").read_bytes() == b"mine"
    assert sorted(p.name for p in images.iterdir()) == sorted([*names, "holiday.jpg"])
    json.loads((out / CATEGORIES_FILE).read_text())


@pytest.mark.parametrize("prefix", ["\u0661", "\u00b2", "\uff11", "\u0967"])
def test_non_ascii_digits_are_not_category_ids(demo, tmp_path, prefix):
    src = _folder(tmp_path / "src", {f"{prefix}_x{i}.jpg": _jpeg() for i in range(10)})
    with pytest.raises(DataError, match="does not match GPR1200's"):
        _load(src, demo, tmp_path)
    with pytest.raises(ValueError, match="pattern"):
        protocol.parse_file_name(f"{prefix}_x.jpg")
    assert os.path.exists(src)


@pytest.mark.parametrize("as_zip", [False, True])
def test_make_demo_refuses_to_overwrite_a_real_zip_or_category_json(tmp_path, capsys, as_zip):
    """A user's GPR1200.zip / category JSON is never replaced; an earlier demo's is."""
    out = tmp_path / "d"
    make_demo(out, per_subset=1, seed=1, size=(24, 32), as_zip=as_zip)
    make_demo(out, per_subset=1, seed=2, size=(24, 32), as_zip=as_zip)  # own files: replaced
    real = {CATEGORIES_FILE: json.dumps({str(i): f"real {i}" for i in range(1200)}).encode()}
    if as_zip:
        with zipfile.ZipFile(tmp_path / "real.zip", "w") as zf:
            zf.writestr("images/0_a.jpg", b"real")
        real = {"GPR1200.zip": (tmp_path / "real.zip").read_bytes()}
    for name, data in real.items():
        (out / name).write_bytes(data)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args = ["make-demo", str(out), "--per-subset", "1"] + (["--zip"] if as_zip else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was not written by make-demo" in err, err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
