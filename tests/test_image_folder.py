"""Image folders (issue 23): class sub-folders give image labels (torchvision's ImageFolder
layout) to the dataset, the probes, curation's prototypes and ``goals="image"``; a video among
the images is named in a warning; a file name that is not UTF-8 loads and splits."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from imgmdp_env.datasets import make_dataset
from imgmdp_env.datasets.folder import load_folder
from imgmdp_env.datasets.splits import held_out, name_position

CLASSES = {"cat": (10, 11, 12), "dog": (100, 101), "eel": (200, 201, 202)}  # pixel values


def _png(path: Path, value: int, side: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((side, side, 3), value, np.uint8)
    img[side // 3: 2 * side // 3, side // 3: 2 * side // 3] = 255 - value  # some edges
    Image.fromarray(img).save(path)


@pytest.fixture
def classes(tmp_path) -> Path:
    """root/<class>/<i>.png: 3 classes, each image's pixel value says its class."""
    root = tmp_path / "classes"
    for name, values in CLASSES.items():
        for v in values:
            _png(root / name / f"{v}.png", v)
    return root


def _class_of(img: np.ndarray) -> str:
    return next(c for c, vs in CLASSES.items() if int(img[0, 0, 0]) in vs)


def _check_labels(ds) -> None:
    assert ds.class_names == sorted(CLASSES)
    assert ds.labels is not None and ds.labels.dtype == np.int64
    for img, lab in zip(ds.images, ds.labels, strict=True):
        assert ds.class_names[lab] == _class_of(img)


def test_class_subfolders_give_labels_and_class_names(classes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = make_dataset(str(classes))
    _check_labels(ds)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert ds.object_boxes is None
    # every split and subset shares the class list of the whole folder
    train = load_folder(classes, split="train", holdout=0.5)
    test = load_folder(classes, split="test", holdout=0.5)
    few = load_folder(classes, n=2, seed=1)
    for part in (train, test, few):
        _check_labels(part)
    assert len(train) + len(test) == 8
    assert load_folder(classes, labels="none").labels is None


def test_auto_labels_only_the_class_layout(tmp_path, classes):
    flat = tmp_path / "flat"
    for v in (1, 2, 3):
        _png(flat / f"{v}.png", v)
    one = tmp_path / "one"
    _png(one / "only" / "a.png", 1)
    _png(one / "only" / "b.png", 2)
    deep = tmp_path / "deep"
    _png(deep / "cat" / "x" / "a.png", 10)
    _png(deep / "dog" / "b.png", 100)
    for root in (flat, one, deep):
        ds = load_folder(root)
        assert ds.labels is None and ds.class_names is None
    # labels="folders": torchvision's rule, any depth under the class folder
    ds = load_folder(deep, labels="folders")
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1]
    assert load_folder(one, labels="folders").class_names == ["only"]
    with pytest.raises(ValueError, match="labels"):
        load_folder(classes, labels="folder")
    with pytest.raises(ValueError, match="instances= both name the classes"):
        load_folder(classes, labels="folders", instances=tmp_path / "instances.json")


def test_top_level_images_beside_class_folders(classes):
    _png(classes / "stray.png", 50)
    with pytest.warns(UserWarning, match=r"3 class folders.*1 image\(s\) at the top level "
                                         r"\(stray\.png\).*without class labels"):
        ds = load_folder(classes)
    assert ds.labels is None and len(ds) == 9
    with pytest.raises(ValueError, match=r"labels='folders'.*1 image\(s\) sit at the top "
                                         r"level: stray\.png"):
        load_folder(classes, labels="folders")
    assert load_folder(classes, labels="none").labels is None  # silent


def test_probes_get_the_class_labels(classes):
    from agents.evaluate import probe_sets
    from agents.evaluation.probes import probe_samples

    train, test = probe_sets(str(classes), 8, 8, holdout=0.5)
    for ds in (train, test):
        _check_labels(ds)
        _, boxes, labels = probe_samples(ds)
        assert labels.tolist() == ds.labels.tolist()  # whole images, by class
        assert boxes.tolist() == [[0.5, 0.5, 1.0, 1.0]] * len(ds)


def test_curation_has_one_prototype_per_class_and_image_goals(classes):
    from imgmdp_env.rewards import VectorCurationReward

    envs = gym.make_vec("ImageView-v0", num_envs=4, dataset=str(classes), view_size=16)
    envs = VectorCurationReward(envs, str(classes), goals="image", goal_text=True)
    assert envs.vocabulary == sorted(CLASSES)  # not one prototype per image
    assert len(envs.curated) == 8 and envs.curated.class_names == sorted(CLASSES)
    ds = envs.unwrapped.dataset
    for seed in range(3):
        _, info = envs.reset(seed=seed)
        for idx, text in zip(info["image_index"], info["goal_text"], strict=True):
            assert text == _class_of(ds.images[idx])  # the image's own class
    envs.close()


def test_a_video_in_an_image_folder_is_named(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "a.png", 1)
    (root / "sub").mkdir()
    (root / "sub" / "clip.MP4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.warns(UserWarning, match=r"skipped 1 video file\(s\).*sub/clip\.MP4.*To train "
                                         r"on video, pass the video file itself"):
        ds = load_folder(root)
    assert len(ds) == 1


def test_a_file_name_that_is_not_utf8_loads_and_splits(tmp_path):
    root = tmp_path / "imgs"
    for v in range(4):
        _png(root / f"{v}.png", v)
    raw = b"caf\xe9.png"  # Latin-1: not UTF-8
    with open(os.path.join(os.fsencode(root), raw), "wb") as f:
        Image.fromarray(np.full((6, 6, 3), 77, np.uint8)).save(f, "PNG")
    name = os.fsdecode(raw)  # how os.walk names it: a lone surrogate for the byte
    # its split is the hash of the bytes on disk (no UnicodeEncodeError), so it never moves
    assert name_position(name) == int.from_bytes(hashlib.sha1(raw).digest()[:8], "big") / 2**64
    assert name_position("b\u00e9.png") == int.from_bytes(  # UTF-8 names: as before
        hashlib.sha1("b\u00e9.png".encode()).digest()[:8], "big") / 2**64
    parts = {s: load_folder(root, split=s, holdout=0.5) for s in ("train", "test")}
    values = {s: sorted(int(im[0, 0, 0]) for im in ds.images) for s, ds in parts.items()}
    assert sorted(values["train"] + values["test"]) == [0, 1, 2, 3, 77]
    assert (77 in values["test"]) == held_out([name, *(f"{v}.png" for v in range(4))], 0.5)[0]
    again = load_folder(root, split="train", holdout=0.5)
    assert sorted(int(im[0, 0, 0]) for im in again.images) == values["train"]


def test_a_separate_test_folder_takes_the_train_classes(tmp_path, classes):
    from imgmdp_env.datasets.splits import load_split

    test = tmp_path / "test"
    _png(test / "dog" / "100.png", 100)
    _png(test / "eel" / "200.png", 200)
    ds = load_split(str(classes), "test", 10, 0, 0, test=str(test))
    assert ds.class_names == ["cat", "dog", "eel"] and ds.labels.tolist() == [1, 2]
    assert load_split(str(classes), "train", 10, 0, 0, test=str(test)).labels.tolist() == [
        0, 0, 0, 1, 1, 2, 2, 2]
    _png(test / "fox" / "50.png", 50)
    with pytest.raises(ValueError, match=r"\['fox'\] are not class folders of the train"):
        load_split(str(classes), "test", 10, 0, 0, test=str(test))
