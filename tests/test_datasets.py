"""Dataset sources: procedural scenes, Fashion-MNIST (IDX files the tests write, plus one
integration test on the real Debian package), image folders, arrays, and the dispatcher."""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgmdp_env.datasets import ImageDataset, fashion, make_dataset
from imgmdp_env.datasets.arrays import from_arrays
from imgmdp_env.datasets.fashion import load_fashion, make_fashion_scenes, read_idx
from imgmdp_env.datasets.folder import load_folder
from imgmdp_env.datasets.scenes import CLASS_NAMES, COLOUR_NAMES, COLOURS, caption_for, make_scenes


def _phrases(caption: str) -> list[str]:
    return [p for p in re.split(r", | and ", caption) if p]


def _corners(box: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    cx, cy, bw, bh = box
    return (round((cx - bw / 2) * w), round((cy - bh / 2) * h), round((cx + bw / 2) * w),
            round((cy + bh / 2) * h))


# ---------------------------------------------------------------------------------------------
# Procedural scenes
# ---------------------------------------------------------------------------------------------
def _same(a: ImageDataset, b: ImageDataset) -> bool:
    return (all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
            and a.captions == b.captions
            and all(np.array_equal(x, y) for x, y in zip(a.object_boxes, b.object_boxes,
                                                          strict=True)))


def test_scenes_deterministic_by_seed_and_prefix_stable():
    a, b = make_scenes(12, 64, seed=3), make_scenes(12, 64, seed=3)
    assert _same(a, b)
    assert not _same(a, make_scenes(12, 64, seed=4))
    assert _same(make_scenes(5, 64, seed=3), a.subset(range(5)))


def test_scenes_train_and_test_differ():
    train, test = make_scenes(16, 64, split="train"), make_scenes(16, 64, split="test")
    assert not any(np.array_equal(x, y) for x in train.images for y in test.images)


@pytest.mark.parametrize("size", [48, (40, 72)])
def test_scenes_layout(size):
    ds = make_scenes(20, size, seed=1, min_objects=2, max_objects=3)
    h, w = (size, size) if isinstance(size, int) else size
    assert len(ds) == 20 and ds.class_names == CLASS_NAMES
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (20,)
    for img, boxes, labels, label in zip(ds.images, ds.object_boxes, ds.object_labels,
                                         ds.labels, strict=True):
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        assert boxes.dtype == np.float32 and labels.dtype == np.int64
        assert 2 <= len(boxes) <= 3 and boxes.shape == (len(labels), 4)
        assert (labels >= 0).all() and (labels < len(CLASS_NAMES)).all()
        lo, hi = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
        assert (lo >= -1e-6).all() and (hi <= 1 + 1e-6).all() and (boxes[:, 2:] > 0).all()
        assert label == labels[np.argmax(boxes[:, 2] * boxes[:, 3])]


def test_scene_objects_are_sized_for_views():
    ds = make_scenes(60, 96, seed=2)
    sides = np.concatenate([np.sqrt(b[:, 2] * b[:, 3]) for b in ds.object_boxes])
    assert 0.08 < sides.min() and sides.max() < 0.5 and 0.2 < np.median(sides) < 0.4


def test_scene_captions_name_the_objects_in_order():
    ds = make_scenes(40, 64, seed=5, min_objects=1, max_objects=4)
    for cap, labels in zip(ds.captions, ds.object_labels, strict=True):
        phrases = _phrases(cap)
        assert len(phrases) == len(labels), cap
        for phrase, k in zip(phrases, labels, strict=True):
            assert phrase.endswith(CLASS_NAMES[k]), (phrase, CLASS_NAMES[k])
            assert phrase.split()[-2 if CLASS_NAMES[k] != "stripes" else 0] in COLOUR_NAMES
    assert any(", " in c for c in ds.captions)


def test_caption_for():
    assert caption_for([]) == ""
    assert caption_for(["red circle"]) == "a red circle"
    assert caption_for(["orange ring", "blue square"]) == "an orange ring and a blue square"
    assert (caption_for(["red circle", "white stripes", "ankle boot"])
            == "a red circle, white stripes and an ankle boot")


def test_scene_boxes_are_where_the_objects_are():
    """With one object per scene, pixels near the named colour fill a good part of the object
    box and almost none of the rest of the image."""
    ds = make_scenes(60, 96, seed=7, min_objects=1, max_objects=1)
    inside_fracs, outside_fracs = [], []
    for img, box, cap in zip(ds.images, ds.object_boxes, ds.captions, strict=True):
        words = cap.split()
        colour = COLOURS[COLOUR_NAMES.index(words[0] if words[0] in COLOUR_NAMES else words[1])]
        near = np.abs(img.astype(np.float32) - colour).max(-1) < 45
        x0, y0, x1, y1 = _corners(box[0], 96, 96)
        mask = np.zeros_like(near)
        mask[y0:y1, x0:x1] = True
        inside_fracs.append(near[mask].mean())
        outside_fracs.append(near[~mask].mean())
    inside, outside = np.array(inside_fracs), np.array(outside_fracs)
    # textured fills (half the pattern is a shade of the colour) and turned shapes (which
    # fill less of their axis-aligned box) leave about a third of the box near the colour
    assert np.median(inside) > 0.2 and inside.min() > 0.02  # typically 0.3 and 0.1
    assert np.median(outside) < 0.002 and outside.max() < 0.02  # typically 0 and 0.003


def test_scenes_validate_arguments():
    with pytest.raises(ValueError, match="split 'dev'"):
        make_scenes(2, split="dev")
    with pytest.raises(ValueError, match="min_objects"):
        make_scenes(2, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="too small"):
        make_scenes(2, size=8)


# ---------------------------------------------------------------------------------------------
# IDX files and Fashion-MNIST
# ---------------------------------------------------------------------------------------------
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, a: np.ndarray) -> Path:
    """Write an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, _CODES[a.dtype], a.ndim]) + np.array(a.shape, ">u4").tobytes()
    raw = header + a.astype(a.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


@pytest.mark.parametrize("name", ["x.idx.gz", "x.idx"])
@pytest.mark.parametrize("a", [np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
                               np.array([-5, 7, 1 << 20], np.int32),
                               np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)])
def test_read_idx_round_trip(tmp_path, name, a):
    b = read_idx(write_idx(tmp_path / name, a))
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match="magic number 01020801"):
        read_idx(tmp_path / "bad")
    good = write_idx(tmp_path / "t.idx", np.zeros((4, 5), np.uint8))
    (tmp_path / "short").write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"dims \(4, 5\).*need 20 bytes"):
        read_idx(tmp_path / "short")


def _items(label: int, count: int) -> np.ndarray:
    """``count`` 28x28 items: an opaque 255 square (side 12 + label) on black."""
    items = np.zeros((count, 28, 28), np.uint8)
    lo = (28 - 12 - label) // 2
    items[:, lo:lo + 12 + label, lo:lo + 12 + label] = 255
    return items


@pytest.fixture
def fashion_root(tmp_path) -> Path:
    """A tiny Fashion-MNIST: train has classes 0-4 (gzipped files), test 5-9 (plain files)."""
    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, classes, ext in (("train", range(5), ".gz"), ("t10k", range(5, 10), "")):
        labels = np.repeat(np.array(classes, np.uint8), 6)
        items = np.concatenate([_items(int(k), 6) for k in classes])
        write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", items)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return root


def test_load_fashion(fashion_root):
    ds = load_fashion("test", root=fashion_root)
    assert len(ds) == 30 and ds.class_names == fashion.CLASS_NAMES
    assert ds.images[0].shape == (28, 28, 3) and ds.images[0].dtype == np.uint8
    assert np.array_equal(ds.labels, np.repeat(np.arange(5, 10), 6))
    assert ds.captions[0] == "a photo of a sandal" and ds.captions[-1] == "a photo of an ankle boot"
    sub = load_fashion("train", n=7, root=fashion_root, seed=1)
    assert len(sub) == 7 and (sub.labels < 5).all() and (np.diff(sub.labels) >= 0).all()
    assert np.array_equal(sub.labels, load_fashion("train", n=7, root=fashion_root, seed=1).labels)
    with pytest.raises(ValueError, match=r"n \(31\) must be in 1..30"):
        load_fashion("test", n=31, root=fashion_root)
    with pytest.raises(ValueError, match="split 'val'"):
        load_fashion("val", root=fashion_root)


def test_fashion_scenes_keep_splits_apart(fashion_root):
    for split, allowed in (("train", range(5)), ("test", range(5, 10))):
        ds = make_fashion_scenes(split, n=24, size=64, seed=0, root=fashion_root)
        labels = np.concatenate(ds.object_labels)
        assert set(labels.tolist()) <= set(allowed), split
        for img, boxes, lab, cap in zip(ds.images, ds.object_boxes, ds.object_labels,
                                        ds.captions, strict=True):
            assert img.shape == (64, 64, 3) and 2 <= len(boxes) <= 4
            lo, hi = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
            assert (lo >= -1e-6).all() and (hi <= 1 + 1e-6).all()
            names = [fashion.CLASS_NAMES[k] for k in lab]
            assert [p.split(" ", 1)[1] for p in _phrases(cap)] == names


def test_fashion_scenes_deterministic_and_seeded(fashion_root):
    a = make_fashion_scenes("train", n=6, size=48, seed=2, root=fashion_root)
    b = make_fashion_scenes("train", n=6, size=48, seed=2, root=fashion_root)
    assert _same(a, b) and not _same(a, make_fashion_scenes("train", n=6, size=48, seed=3,
                                                            root=fashion_root))


def test_fashion_scene_boxes_are_the_items(fashion_root):
    """Items are opaque squares: inside its box (less the 2 px of resampled edge) an item is one
    flat colour, and 3 px outside the box lies the background, a different colour."""
    ds = make_fashion_scenes("train", n=30, size=96, seed=4, min_objects=1, max_objects=1,
                             root=fashion_root)
    differs = []
    for img, box in zip(ds.images, ds.object_boxes, strict=True):
        x0, y0, x1, y1 = _corners(box[0], 96, 96)
        assert abs((x1 - x0) - (y1 - y0)) <= 1  # the item is square, so is its box
        f = img.astype(np.float32)
        core = f[y0 + 2:y1 - 2, x0 + 2:x1 - 2].reshape(-1, 3)
        assert core.std(0).max() < 2.0
        ring = np.concatenate([f[y0 - 3, x0:x1], f[y1 + 2, x0:x1], f[y0:y1, x0 - 3],
                               f[y0:y1, x1 + 2]]) if min(x0, y0) >= 3 and max(x1, y1) <= 93 \
            else None
        if ring is not None:
            differs.append(np.abs(ring - core.mean(0)).max(-1).mean() > 20)
    assert len(differs) > 10 and np.mean(differs) > 0.8


def test_fashion_missing_files_explain_the_install(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion(root=tmp_path / "nowhere")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        make_fashion_scenes(n=2, root=tmp_path)


@pytest.mark.integration
def test_real_fashion_mnist_package():
    root = fashion.DEFAULT_ROOT
    if not root.is_dir():
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI must have the Debian package dataset-fashion-mnist ({root})")
        pytest.skip(f"{root} absent: apt-get install dataset-fashion-mnist")
    test = load_fashion("test")
    assert len(test) == 10_000 and test.images[0].shape == (28, 28, 3)
    assert np.array_equal(np.bincount(test.labels), np.full(10, 1000))
    train = load_fashion("train", n=500, seed=0)
    assert len(train) == 500 and set(train.labels.tolist()) == set(range(10))
    scenes = make_fashion_scenes("test", n=16, size=112)
    assert all(2 <= len(b) <= 4 for b in scenes.object_boxes)
    assert all(img.std() > 10 for img in scenes.images)


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "imgs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 256, (h, w, 3), dtype=np.uint8)  # noqa: E731
    Image.fromarray(rgb(20, 30)).save(root / "a" / "rgb.png")
    Image.fromarray(rgb(17, 11)[..., 0], "L").save(root / "a" / "b" / "gray.jpg")
    la = np.stack([np.full((8, 9), 200, np.uint8), np.full((8, 9), 128, np.uint8)], -1)
    Image.fromarray(la, "LA").save(root / "a" / "b" / "la.png")
    Image.fromarray(rgb(12, 12)).convert("P").save(root / "c" / "pal.gif")
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(root / "c" / "rgba.PNG")
    Image.fromarray(rgb(16, 24)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.full((6, 7), 65535, np.uint16)).save(root / "deep.tif")
    Image.fromarray(rgb(9, 5)).save(root / "c" / "small.webp", lossless=True)
    Image.fromarray(rgb(5, 5)).save(root / "z.bmp")
    (root / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_load_folder_reads_all_modes_sorted(image_folder):
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable.*c/broken\.png"):
        ds = load_folder(image_folder)
    names = ["a/b/gray.jpg", "a/b/la.png", "a/rgb.png", "c/pal.gif", "c/rgba.PNG",
             "c/small.webp", "cmyk.jpg", "deep.tif", "z.bmp"]
    sizes = [(17, 11), (8, 9), (20, 30), (12, 12), (10, 10), (9, 5), (16, 24), (6, 7), (5, 5)]
    assert len(ds) == len(names) and ds.captions is None and ds.name == "imgs"
    for img, (h, w) in zip(ds.images, sizes, strict=True):
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
    la, rgba, deep = ds.images[1], ds.images[4], ds.images[7]
    assert abs(int(la[0, 0, 0]) - 200 * 128 // 255) <= 1  # alpha composited onto black
    assert (rgba[:5] == [255, 0, 0]).all() and (rgba[5:] == 0).all()
    assert (deep == 255).all()  # 16-bit scaled, not clipped


def test_load_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"empty.*holds no files with extensions.*\.png"):
        load_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        load_folder(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="x.jpg"), pytest.raises(ValueError, match="none of"):
        load_folder(tmp_path / "bad")


def test_load_folder_coco_captions(image_folder, tmp_path):
    coco = {
        "images": [{"id": 1, "file_name": "a/rgb.png"}, {"id": 2, "file_name": "val/z.bmp"},
                   {"id": 3, "file_name": "cmyk.jpg"}, {"id": 4, "file_name": "other.jpg"}],
        "annotations": [{"image_id": 1, "caption": "first"}, {"image_id": 1, "caption": "second"},
                        {"image_id": 2, "caption": " not z.bmp's: it is in val/ "},
                        {"image_id": 3, "caption": "cmyk"}, {"image_id": 4, "caption": "x"}],
    }
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(coco))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_folder(image_folder, captions=path)
    messages = [str(w.message) for w in caught]
    assert any("7 of 9 image(s)" in m for m in messages), messages
    # the file's names are this folder's (a/rgb.png matches): val/z.bmp is not the top z.bmp
    assert ds.captions[2] == "first" and ds.captions[8] == ""
    assert ds.captions[6] == "cmyk" and ds.captions[0] == ""
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_folder(image_folder, captions=path)


# ---------------------------------------------------------------------------------------------
# Bounded memory: resize on load, the budget checked from the headers before decoding
# ---------------------------------------------------------------------------------------------
def _photo(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                     (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("h,w,fmt", [(600, 900, "png"), (900, 600, "jpg"), (301, 1203, "jpg"),
                                     (100, 80, "png")])
def test_resize_on_load_keeps_aspect_and_matches_the_estimate(tmp_path, h, w, fmt):
    from imgmdp_env.datasets import decode

    path = tmp_path / f"x.{fmt}"
    Image.fromarray(_photo(h, w)).save(path, quality=90)
    assert decode.header_size(path) == (h, w)
    img = decode.decode_image(path, 256)
    want = decode.fit_size(h, w, 256)
    assert max(img.shape[:2]) <= 256 and abs(img.shape[0] - want[0]) <= 1
    assert abs(img.shape[1] - want[1]) <= 1
    if max(h, w) <= 256:
        assert img.shape[:2] == (h, w)  # never enlarged
    # the content is the image, shrunk: its colour gradient survives (no crop, no flip)
    assert img[0, -1, 0] > 200 and img[-1, 0, 1] > 200 and img[0, 0, :2].max() < 40


def test_folder_over_the_memory_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    from imgmdp_env.datasets import decode

    for i in range(3):
        Image.fromarray(_photo(400, 300)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(decode, "decode_many", lambda *a, **k: pytest.fail("decoded"))
    need = 3 * 256 * 192 * decode.BYTES_PER_PIXEL / 2**30
    with pytest.raises(MemoryError, match=r"3 image\(s\).*0\.00 GiB.*--max-side.*shards"):
        load_folder(tmp_path, memory_budget=need * 0.9)
    with pytest.raises(MemoryError, match="over the memory budget"):
        load_folder(tmp_path, max_side=None, memory_budget=need * 1.1)  # full size: 400x300
    monkeypatch.undo()
    ds = load_folder(tmp_path, memory_budget=need * 1.1)  # fits at 256
    assert [im.shape for im in ds.images] == [(256, 192, 3)] * 3


def test_parallel_decoding_gives_the_same_images(image_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = load_folder(image_folder)
        two = load_folder(image_folder, workers=2)
    assert len(one) == len(two) and all(np.array_equal(a, b) for a, b in
                                        zip(one.images, two.images, strict=True))


def test_folder_n_and_split_pick_files_before_decoding(tmp_path, monkeypatch):
    from imgmdp_env.datasets import decode

    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(tmp_path / f"{i}.png")
    seen = []
    real = decode.decode_many
    monkeypatch.setattr(decode, "decode_many", lambda paths, *a: seen.extend(paths) or
                        real(paths, *a))
    ds = load_folder(tmp_path, n=3, seed=4)
    assert len(ds) == 3 and len(seen) == 3  # only the chosen files are decoded
    assert [int(im[0, 0, 0]) for im in ds.images] == sorted(int(im[0, 0, 0]) for im in
                                                            ds.images)  # file order kept


# ---------------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------------
_NHWC = np.random.default_rng(0).integers(0, 256, (4, 10, 12, 3), dtype=np.uint8)


@pytest.mark.parametrize("x", [
    _NHWC,
    _NHWC.transpose(0, 3, 1, 2),
    torch.from_numpy(_NHWC),
    torch.from_numpy(_NHWC).permute(0, 3, 1, 2),
    list(_NHWC),
    [Image.fromarray(a) for a in _NHWC],
    [torch.from_numpy(a).permute(2, 0, 1) for a in _NHWC],
], ids=["nhwc", "nchw", "torch-nhwc", "torch-nchw", "list-arrays", "list-pil", "list-chw"])
def test_from_arrays_layouts(x):
    ds = from_arrays(x, captions=list("abcd"), labels=[0, 1, 2, 3], name="mine")
    assert len(ds) == 4 and ds.name == "mine" and ds.captions == list("abcd")
    assert ds.labels.dtype == np.int64
    for img, ref in zip(ds.images, _NHWC, strict=True):
        assert np.array_equal(img, ref)


def test_from_arrays_grayscale_pil_modes_and_mixed_sizes():
    g = from_arrays(np.full((2, 5, 6, 1), 9, np.uint8))
    assert g.images[0].shape == (5, 6, 3) and (g.images[0] == 9).all()
    assert from_arrays(np.full((2, 1, 5, 6), 9, np.uint8)).images[1].shape == (5, 6, 3)
    mixed = from_arrays([np.zeros((5, 6, 3), np.uint8), np.zeros((7, 3), np.uint8),
                         Image.new("L", (4, 8), 50), Image.new("RGBA", (3, 3), (10, 20, 30, 0))])
    assert [i.shape for i in mixed.images] == [(5, 6, 3), (7, 3, 3), (8, 4, 3), (3, 3, 3)]
    assert (mixed.images[2] == 50).all() and (mixed.images[3] == 0).all()


@pytest.mark.parametrize("x, err, pattern", [
    (np.zeros((2, 8, 8, 3), np.float32), TypeError, r"dtype float32, expected uint8.*\* 255"),
    (torch.zeros(2, 3, 8, 8), TypeError, "tensor has dtype float32"),
    (np.zeros((8, 8, 3), np.uint8), ValueError, r"ambiguous.*x\[None\]"),
    (np.zeros((2, 8, 8), np.uint8), ValueError, r"x\[\.\.\., None\]"),
    (np.zeros((1, 2, 8, 8, 3), np.uint8), ValueError, "rank 5"),
    (np.zeros((2, 8, 8, 4), np.uint8), ValueError, r"\(2, 8, 8, 4\) has no channel axis"),
    (np.zeros((0, 8, 8, 3), np.uint8), ValueError, "empty"),
    ([], ValueError, "list of images is empty"),
    ([np.zeros((4, 4, 3), np.uint8), "img.png"], TypeError, "list item 1 is a str"),
    ([np.zeros((4, 4, 3), np.int64)], TypeError, "list item 0 has dtype int64"),
    ([np.zeros((4, 4, 5), np.uint8)], ValueError, r"list item 0 has shape \(4, 4, 5\)"),
    ({"a": 1}, TypeError, "type dict"),
])
def test_from_arrays_errors(x, err, pattern):
    with pytest.raises(err, match=pattern):
        from_arrays(x)


def test_from_arrays_annotation_errors():
    with pytest.raises(TypeError, match="item 1 is int"):
        from_arrays(_NHWC, captions=["a", 2, "c", "d"])
    with pytest.raises(ValueError, match="labels must be"):
        from_arrays(_NHWC, labels=np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="captions has 2 entries for 4 images"):
        from_arrays(_NHWC, captions=["a", "b"])


# ---------------------------------------------------------------------------------------------
# make_dataset dispatch
# ---------------------------------------------------------------------------------------------
def test_make_dataset_dispatch(fashion_root, image_folder):
    assert make_dataset("scenes", n=3, size=32).name == "scenes-train"
    assert make_dataset("fashion", split="test", root=fashion_root).name == "fashion-test"
    fs = make_dataset("fashion-scenes", n=2, size=48, root=fashion_root)
    assert fs.name == "fashion-scenes-train" and len(fs) == 2
    with pytest.warns(UserWarning, match="broken"):
        assert len(make_dataset(image_folder)) == 9
    with pytest.warns(UserWarning, match="broken"):
        assert len(make_dataset(str(image_folder))) == 9
    assert len(make_dataset(_NHWC)) == 4
    assert len(make_dataset(torch.from_numpy(_NHWC).permute(0, 3, 1, 2))) == 4
    assert len(make_dataset([Image.new("RGB", (5, 5))])) == 1
    ds = from_arrays(_NHWC)
    assert make_dataset(ds) is ds
    with pytest.raises(ValueError, match="neither a named dataset"):
        make_dataset("no-such-dataset")
    with pytest.raises(TypeError, match="type int"):
        make_dataset(3)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"n": True}, TypeError, "n"), ({"n": 2.5}, TypeError, "n"), ({"n": 0}, ValueError, "n"),
    ({"size": 64.0}, TypeError, "size"), ({"size": (64,)}, ValueError, "size"),
    ({"seed": 2**70}, ValueError, "seed"), ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"), ({"min_objects": 0}, ValueError, "min_objects"),
    ({"max_objects": "3"}, TypeError, "max_objects"), ({"split": "dev"}, ValueError, "split"),
])
def test_scenes_refuse_bad_arguments_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_scenes(**{"n": 2, "size": 32, **kwargs})
