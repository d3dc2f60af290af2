"""COCO-format folders end to end: instances and captions files, held-out splits, the env's
caption-match reward on the boxes, a CLIP run and the probes."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import imgmdp_env  # noqa: F401 - registers ImageView-v0
from agents.train_value import parse_args, train
from imgmdp_env.datasets import make_dataset
from imgmdp_env.datasets.coco import match_names, read_coco_captions, read_coco_instances
from imgmdp_env.datasets.folder import load_folder
from imgmdp_env.datasets.splits import held_out, load_split
from imgmdp_env.rewards import CaptionMatchReward
from imgmdp_env.wrappers import view_env_core

COLOURS = {3: (255, 0, 0), 7: (0, 0, 255)}  # category id -> colour of its square
NAMES = {3: "red square", 7: "blue square"}


def _write_coco(root: Path, n: int = 12, sizes: bool = True) -> tuple[Path, Path, Path]:
    """``n`` PNGs in ``root/images/sub`` (48x64 or 64x48), one coloured square each (its box
    in COCO pixels), a crowd region and an empty box to be left out, category ids with a gap;
    and a captions file. Returns (folder, instances, captions)."""
    folder = root / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns, caps = [], [], []
    for i in range(n):
        h, w = (48, 64) if i % 3 else (64, 48)
        cat = 3 if i % 2 else 7
        x, y, side = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20)), 16
        a = np.full((h, w, 3), 40, np.uint8)
        a[y:y + side, x:x + side] = COLOURS[cat]
        name = f"sub/{i:03d}.png"
        Image.fromarray(a).save(folder / name)
        entry = {"id": 100 + i, "file_name": name}
        if sizes:
            entry.update(width=w, height=h)
        images.append(entry)
        anns.append({"id": 2 * i, "image_id": 100 + i, "bbox": [x, y, side, side],
                     "category_id": cat, "iscrowd": 0})
        caps.append({"id": i, "image_id": 100 + i, "caption": f"a {NAMES[cat]}"})
    anns.append({"id": 999, "image_id": 100, "bbox": [0, 0, 10, 10], "category_id": 3,
                 "iscrowd": 1})
    anns.append({"id": 998, "image_id": 101, "bbox": [5, 5, 0, 4], "category_id": 3})
    cats = [{"id": 7, "name": "blue square"}, {"id": 3, "name": "red square"}]
    instances, captions = root / "instances_x.json", root / "captions_x.json"
    instances.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": cats}))
    captions.write_text(json.dumps({"images": images, "annotations": caps}))
    return folder, instances, captions


@pytest.fixture
def coco(tmp_path) -> tuple[Path, Path, Path]:
    return _write_coco(tmp_path)


def _boxes_px(folder: Path, instances: Path) -> dict[str, list]:
    data = json.loads(instances.read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    return {names[a["image_id"]]: a["bbox"] for a in data["annotations"] if not a.get("iscrowd")
            and a["bbox"][2] > 0}


def test_instances_become_normalised_boxes_and_labels(coco):
    folder, instances, captions = coco
    with pytest.warns(UserWarning, match=r"left out 1 crowd, 1 empty box"):
        ds = load_folder(folder, captions=captions, instances=instances, max_side=None)
    assert ds.class_names == ["red square", "blue square"]  # increasing category id (3, 7)
    px = _boxes_px(folder, instances)
    for i, (img, boxes, labels) in enumerate(zip(ds.images, ds.object_boxes, ds.object_labels,
                                                 strict=True)):
        h, w = img.shape[:2]
        x, y, bw, bh = px[f"sub/{i:03d}.png"]
        np.testing.assert_allclose(boxes, [[(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]],
                                   rtol=1e-6)
        assert labels.tolist() == [0 if i % 2 else 1]
        # the box really frames the square of its class's colour
        cx, cy = int(boxes[0, 0] * w), int(boxes[0, 1] * h)
        assert tuple(img[cy, cx]) == COLOURS[3 if i % 2 else 7]
        assert ds.captions[i] == f"a {ds.class_names[labels[0]]}"


def test_boxes_without_sizes_use_the_file_and_survive_resizing(tmp_path):
    folder, instances, _ = _write_coco(tmp_path, n=4, sizes=False)
    assert read_coco_instances(instances).pixel_boxes  # no width / height in the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = load_folder(folder, instances=instances, max_side=None)
        small = load_folder(folder, instances=instances, max_side=16)
    assert [im.shape[:2] for im in small.images] == [(16, 12), (12, 16), (12, 16), (16, 12)]
    for a, b in zip(full.object_boxes, small.object_boxes, strict=True):
        np.testing.assert_array_equal(a, b)  # normalised: resizing on load changes nothing


def test_held_out_split_is_deterministic_disjoint_and_stable():
    names = [f"img/{i:05d}.jpg" for i in range(400)]
    mask = held_out(names, 0.1)
    assert 20 < mask.sum() < 60  # about 10%
    more = held_out(names + [f"new/{i}.jpg" for i in range(100)], 0.1)
    np.testing.assert_array_equal(more[:400], mask)  # adding files moves no image
    np.testing.assert_array_equal(held_out(list(reversed(names)), 0.1), mask[::-1])
    assert held_out(["a", "b"], 0.01).tolist().count(True) == 1  # tiny folders have both


def test_folder_splits_partition_the_images(coco):
    folder, instances, _ = coco
    kw = {"instances": instances, "holdout": 0.3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_split(str(folder), "train", 100, 0, seed=1, **kw)
        test = load_split(str(folder), "test", 100, 0, seed=2, **kw)
        again = load_split(str(folder), "test", 100, 0, seed=5, **kw)
    key = lambda ds: {im.tobytes() for im in ds.images}  # noqa: E731
    assert key(test) == key(again)  # the split does not depend on the seed
    assert not key(train) & key(test) and len(train) + len(test) == 12
    assert train.object_boxes is not None and test.class_names == train.class_names


def test_env_caption_match_reward_reads_the_coco_boxes(coco):
    folder, instances, _ = coco
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = CaptionMatchReward(gym.make("ImageView-v0", dataset=str(folder),
                                          dataset_kwargs={"instances": str(instances)}))
    ds = view_env_core(env).dataset
    assert env.vocabulary == ["red square", "blue square"]
    for i in (0, 1):
        box = ds.object_boxes[i][0]
        cls = ds.class_names[int(ds.object_labels[i][0])]
        view = np.array([box[0], box[1], box[2] * 1.2, box[3] * 1.2], np.float32)
        _, info = env.reset(seed=0, options={"image_index": i, "box": view, "goal": cls})
        _, reward, _, _, info = env.step(np.zeros(4, np.float32))  # stay: the object in view
        probs = dict(zip(env.vocabulary, info["annotation_probs"], strict=True))
        assert reward == pytest.approx(1.0) and probs[cls] == pytest.approx(1.0)
        other = [v for v in env.vocabulary if v != cls][0]
        assert probs[other] == 0.0
    env.close()


TINY = ["--dataset-size", "12", "--view-size", "32", "--base-batch", "8", "--proj-dim", "16",
        "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth", "1",
        "--warmup-steps", "1", "--probe-train", "12", "--probe-test", "12",
        "--probe-max-samples", "24", "--random-twins", "1", "--value-batches", "1",
        "--boot-images", "2", "--n-views", "2", "--threads", "1", "--max-side", "32"]


@pytest.mark.filterwarnings("ignore:instances file")
def test_clip_run_and_probes_on_a_coco_folder(coco, tmp_path, capsys):
    folder, instances, captions = coco
    args = parse_args(TINY + ["--runs-dir", str(tmp_path / "runs"), "--name", "coco",
                              "--dataset", str(folder), "--captions", str(captions),
                              "--instances", str(instances), "--holdout", "0.3",
                              "--base", "clip"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(replace(args, total_steps=2, log_every=1, tensorboard=False))
    probes = summary["probes"]
    assert set(probes) == {"trained", "random init", "raw pixels", "majority class"}
    test = load_split(str(folder), "test", 12, 0, 0, instances=instances, holdout=0.3)
    assert probes["trained"]["n_test"] == sum(len(b) for b in test.object_boxes) > 0
    out = capsys.readouterr().out
    assert "probes trained on" in out and "probes skipped" not in out


def test_unlabelled_folder_says_why_probes_are_skipped(coco, tmp_path, capsys):
    folder, _, _ = coco
    args = parse_args(TINY + ["--runs-dir", str(tmp_path / "runs"), "--name", "plain",
                              "--dataset", str(folder), "--random-twins", "0"])
    summary = train(replace(args, total_steps=1, log_every=1, tensorboard=False))
    assert summary["probes"] == {}
    out = capsys.readouterr().out
    assert "probes skipped" in out and "--instances" in out


@pytest.mark.parametrize("extra,match", [
    (["--instances", "missing.json"], "not an existing file"),
    (["--holdout", "0"], "--holdout 0 leaves no held-out images"),
    (["--holdout", "1"], "--holdout"),
    (["--max-side", "4"], "--max-side"),
    (["--memory-budget", "-1"], "--memory-budget"),
])
def test_coco_flags_are_checked_before_any_work(coco, tmp_path, extra, match):
    folder, _, _ = coco
    args = parse_args(TINY + ["--runs-dir", str(tmp_path / "runs"), "--dataset", str(folder),
                              *extra])
    with pytest.raises(SystemExit, match=match):
        train(args)
    assert not (tmp_path / "runs").exists()


def test_captions_flag_refuses_a_named_dataset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    with pytest.raises(SystemExit, match="annotates the images of a folder"):
        train(parse_args(TINY + ["--runs-dir", str(tmp_path / "runs"), "--captions",
                                 str(path)]))


def test_make_dataset_refuses_unknown_folder_kwargs(coco):
    folder, _, _ = coco
    with pytest.raises(TypeError, match="instances"):
        make_dataset(str(folder), boxes="x.json")


@pytest.mark.filterwarnings("ignore:instances file")
def test_evaluate_cli_probes_a_coco_folder(coco, capsys):
    from agents.evaluate import Args as EvalArgs
    from agents.evaluate import _main

    folder, instances, _ = coco
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _main(EvalArgs(dataset=str(folder), instances=str(instances), holdout=0.3, n_train=12,
                       n_test=12, view_size=32, raw_pixels=False, threads=1, max_samples=24))
    out = capsys.readouterr().out
    test = load_split(str(folder), "test", 12, 0, 0, instances=instances, holdout=0.3)
    assert f"tested on {len(test)} held-out images" in out
    assert "| random init (cnn, seed 0) |" in out


def test_a_separate_test_folder_with_its_own_instances(tmp_path):
    from agents.evaluate import probe_sets
    from agents.infra.sources import source_kwargs

    folder, instances, _ = _write_coco(tmp_path / "train", n=6)
    test_folder, test_instances, _ = _write_coco(tmp_path / "val", n=4)
    args = parse_args(TINY + ["--dataset", str(folder), "--instances", str(instances),
                              "--test-dataset", str(test_folder), "--test-instances",
                              str(test_instances)])
    kw = source_kwargs(args, args.dataset)
    assert kw["test"] == str(test_folder) and "holdout" not in kw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, test = probe_sets(args.dataset, 100, 100, 0, **kw)
    assert len(train) == 6 and len(test) == 4  # the whole folder, the whole test folder
    assert test.object_boxes is not None and test.name == "images"
    assert all(len(b) == 1 for b in test.object_boxes)


# ---------------------------------------------------------------------------------------------
# Bad COCO files: refused naming the file and the entry (never silently wrong data)
# ---------------------------------------------------------------------------------------------
def _tiny_folder(root: Path, names=("im0.png",), size=(20, 30)) -> Path:
    """PNGs of ``size`` (height, width) at the relative paths ``names`` under ``root``."""
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((*size, 3), 40 + 50 * i, np.uint8)).save(root / name)
    return root


def _instances(root: Path, images=None, anns=None, cats=None, data=None) -> Path:
    """An instances file: one 30x20 image ``im0.png`` (id 1), one box of category 3 ``cat``,
    with ``images`` / ``anns`` / ``cats`` replacing those lists (or ``data`` the whole)."""
    path = root / "instances_bad.json"
    images = [{"id": 1, "file_name": "im0.png", "width": 30, "height": 20}] if images is None \
        else images
    anns = [{"image_id": 1, "bbox": [2, 2, 10, 8], "category_id": 3}] if anns is None else anns
    cats = [{"id": 3, "name": "cat"}] if cats is None else cats
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}
                               if data is None else data))
    return path


IM0 = {"id": 1, "file_name": "im0.png", "width": 30, "height": 20}
BAD_INSTANCES = {  # case: (file content, pattern the message must match)
    "image id twice": (dict(images=[IM0, {**IM0, "file_name": "im1.png"}]),
                       r"images\[1\] \('im1.png'\) has id 1, already the id of images\[0\]"),
    "file listed twice": (dict(images=[IM0, {**IM0, "id": 2, "file_name": "./im0.png"}]),
                          r"images\[1\] \('./im0.png'\) names the file 'im0.png', already "
                          r"listed as images\[0\]"),
    "image id float": (dict(images=[{**IM0, "id": 1.0}]), r"images\[0\] is .*integer or string"),
    "category id twice": (dict(cats=[{"id": 3, "name": "cat"}, {"id": 3, "name": "lion"}]),
                          r"categories\[1\] \('lion'\) has id 3, already the id of "
                          r"categories\[0\] \('cat'\)"),
    "category name twice": (dict(cats=[{"id": 3, "name": "cat"}, {"id": 4, "name": "cat"}]),
                            r"categories\[1\] \(id 4\) is named 'cat'"),
    "category id str": (dict(cats=[{"id": "3", "name": "cat"}]), r"categories\[0\] is"),
    "category name blank": (dict(cats=[{"id": 3, "name": " "}]), r"categories\[0\] is"),
    "box outside": (dict(anns=[{"image_id": 1, "bbox": [100, 2, 5, 5], "category_id": 3}]),
                    r"annotations\[0\] of image 'im0.png' \(images\[0\]\): the bbox "
                    r"\[100, 2, 5, 5\] .* not inside the image of 30x20 pixels"),
    "box past the edge": (dict(anns=[{"image_id": 1, "bbox": [20, 2, 15, 5],
                                      "category_id": 3}]), r"annotations\[0\].*not inside"),
    "box negative x": (dict(anns=[{"image_id": 1, "bbox": [-5, 2, 8, 5], "category_id": 3}]),
                       r"annotations\[0\].*not inside"),
    "box negative size": (dict(anns=[{"image_id": 1, "bbox": [2, 2, -4, 5], "category_id": 3}]),
                          r"annotations\[0\] \(image 'im0.png'\) has bbox \[2, 2, -4, 5\], of "
                          r"negative width"),
    "box nan": (dict(anns=[{"image_id": 1, "bbox": [2, 2, float("nan"), 5],
                            "category_id": 3}]), r"annotations\[0\] is .*4 finite numbers"),
    "unknown image id": (dict(anns=[{"image_id": 7, "bbox": [2, 2, 5, 5], "category_id": 3}]),
                         r"annotations\[0\] has image_id 7, the id of no entry of 'images'"),
    "image id of another type": (dict(anns=[{"image_id": "1", "bbox": [2, 2, 5, 5],
                                             "category_id": 3}]), r"1 and '1' differ"),
    "unknown category id": (dict(anns=[{"image_id": 1, "bbox": [2, 2, 5, 5],
                                        "category_id": 9}]),
                            r"annotations\[0\] \(image 'im0.png'\) has category_id 9, the id "
                            r"of no entry of 'categories' \(ids \[3\]\)"),
    "iscrowd str": (dict(anns=[{"image_id": 1, "bbox": [2, 2, 5, 5], "category_id": 3,
                                "iscrowd": "0"}]), r"annotations\[0\].* iscrowd '0'"),
    "only crowd boxes": (dict(anns=[{"image_id": 1, "bbox": [2, 2, 5, 5], "category_id": 3,
                                     "iscrowd": 1}]), r"holds no object box .*1 crowd"),
    "top level list": (dict(data=[1, 2]), "top level is"),
    "no categories": (dict(data={"images": [IM0], "annotations": []}), "no 'categories' list"),
}


@pytest.mark.parametrize("case", list(BAD_INSTANCES))
def test_bad_instances_files_are_refused_naming_the_entry(tmp_path, case):
    content, pattern = BAD_INSTANCES[case]
    folder = _tiny_folder(tmp_path / "imgs")
    path = _instances(tmp_path, **content)
    with pytest.raises(ValueError, match=pattern) as err:
        load_folder(folder, instances=path)
    assert str(path) in str(err.value)


def test_instances_size_disagreeing_with_the_image_file_is_refused(tmp_path):
    folder = _tiny_folder(tmp_path / "imgs", size=(20, 30))  # the file is 30x20
    path = _instances(tmp_path, images=[{**IM0, "width": 60, "height": 40}])
    with pytest.raises(ValueError, match=r"image 'im0.png' \(images\[0\]\) is 30x20 pixels "
                                         r"\(width x height\) in its image file but 60x40"):
        load_folder(folder, instances=path)
    ok = _instances(tmp_path, images=[{"id": 1, "file_name": "im0.png"}])  # no size: the file's
    assert load_folder(folder, instances=ok).object_boxes[0].shape == (1, 4)


def test_pixel_box_outside_the_image_file_is_refused(tmp_path):
    folder = _tiny_folder(tmp_path / "imgs", size=(20, 30))
    path = _instances(tmp_path, images=[{"id": 1, "file_name": "im0.png"}],
                      anns=[{"image_id": 1, "bbox": [100, 2, 5, 5], "category_id": 3}])
    with pytest.raises(ValueError, match=r"annotations\[0\] of image 'im0.png' \(images\[0\]\): "
                                         r"the bbox \[100.0, 2.0, 5.0, 5.0\].*30x20"):
        load_folder(folder, instances=path)


def _captions(root: Path, images, anns) -> Path:
    path = root / "captions_bad.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def test_captions_with_a_shared_image_id_are_refused(tmp_path):
    path = _captions(tmp_path, [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
                     [{"image_id": 1, "caption": "a dog"}])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: images\[1\] \('b.png'\) has "
                                         r"id 1, already the id of images\[0\] \('a.png'\)"):
        read_coco_captions(path)


def test_captions_all_blank_are_refused_and_some_blank_warned(tmp_path):
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
    path = _captions(tmp_path, images, [{"image_id": 1, "caption": " "},
                                        {"image_id": 2, "caption": ""}])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} holds no caption to use: "
                                         r"all 2 of its captions are blank"):
        read_coco_captions(path)
    path = _captions(tmp_path, images, [{"image_id": 1, "caption": " "},
                                        {"image_id": 1, "caption": "a dog"},
                                        {"image_id": 2, "caption": ""}])
    with pytest.warns(UserWarning, match=r"1 of its 2 image\(s\) have no non-blank caption.*"
                                         r"\['b.png'\]"):
        assert read_coco_captions(path) == {"a.png": "a dog", "b.png": ""}


def test_caption_matching_never_crosses_folders(tmp_path):
    folder = _tiny_folder(tmp_path / "imgs", names=("im0.png", "sub/im0.png", "x/only.png"))
    path = _captions(tmp_path, [{"id": 1, "file_name": "./sub/im0.png"},
                                {"id": 2, "file_name": "y/only.png"}],
                     [{"image_id": 1, "caption": "the sub one"},
                      {"image_id": 2, "caption": "another folder"}])
    with pytest.warns(UserWarning, match="2 of 3"):
        ds = load_folder(folder, captions=path, labels="none")  # captions, not classes
    assert ds.captions == ["", "the sub one", ""]  # im0.png, sub/im0.png, x/only.png
    assert match_names(["im0.png", "x/only.png"], {"sub/im0.png": 1, "y/only.png": 2}) == (
        [1, None], 1)  # another root: by the end of the path, never a/ <-> b/
    assert match_names(["a/im0.png", "b/im0.png"], {"im0.png": 1}) == ([None, None], 2)
