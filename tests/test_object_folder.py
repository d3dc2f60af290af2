"""The find-the-object scripts on any images with object boxes: ``examples/value_search.py`` and
``studies/find_object.py`` on a tiny COCO-style folder (48x48 PNGs, an instances file, two
classes): the episodes start in the folder's held-out test images only (never an image without
an object), the goals are its category names, the goal crops come from its other images; bad
source flags are refused naming the flag."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgmdp_env.datasets.splits import held_out, load_split

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = 0.5
CLASSES = {5: ("red square", (230, 30, 30)), 2: ("blue square", (30, 30, 230))}  # COCO ids
NAMES = ["blue square", "red square"]  # class_names: in increasing category id

pytestmark = pytest.mark.filterwarnings("ignore:load_folder")  # the image without a box


def _module(path: str):
    """The script at ``path``: a study or benchmark as its package module (``studies/x.py``:
    ``studies.x``), anything else (``examples/``) loaded from its file."""
    if path.startswith(("studies/", "benchmarks/")):
        return importlib.import_module(path.removesuffix(".py").replace("/", "."))
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_under_test", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_folder(root: Path, n: int = 16) -> tuple[Path, Path, str]:
    """``n`` distinct 48x48 PNGs (noise background), each with a red square and, every other
    one, a blue square, boxed in a COCO instances file; one held-out image has no entry (no
    object). Returns (folder, instances, name of the image without an object)."""
    folder = root / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"img{i:02d}.png" for i in range(n)]
    bare = names[int(np.flatnonzero(held_out(names, HOLDOUT))[0])]
    images, anns = [], []
    for i, name in enumerate(names):
        a = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
        cats = [5, 2] if i % 2 == 0 else [5]
        if name != bare:
            images.append({"id": i, "file_name": name, "width": 48, "height": 48})
        for k, cat in enumerate(cats):
            x, y = (4 + 3 * (i % 4), 4) if k == 0 else (26, 24 + (i % 3))
            a[y:y + 14, x:x + 14] = CLASSES[cat][1]
            if name != bare:
                anns.append({"id": 10 * i + k, "image_id": i, "bbox": [x, y, 14, 14],
                             "category_id": cat, "iscrowd": 0})
        Image.fromarray(a).save(folder / name)
    instances = root / "instances.json"
    cats = [{"id": c, "name": v[0]} for c, v in CLASSES.items()]
    instances.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": cats}))
    return folder, instances, bare


@pytest.fixture
def coco(tmp_path):
    return _write_folder(tmp_path / "coco")


@pytest.fixture
def ckpt(tmp_path, make_checkpoint):
    path = tmp_path / "ckpt" / "checkpoint.pt"
    path.parent.mkdir()
    make_checkpoint(path)  # untrained, 64 px views
    return path


def _split(folder: Path, instances: Path, split: str) -> list[bytes]:
    ds = load_split(str(folder), split, 100, 0, 0, instances=str(instances), holdout=HOLDOUT)
    return [np.ascontiguousarray(im).tobytes() for im in ds.images]


def _keys(images) -> set[bytes]:
    return {np.ascontiguousarray(im).tobytes() for im in images}


def test_value_search_on_a_coco_folder(coco, ckpt, tmp_path, monkeypatch, capsys):
    folder, instances, bare = coco
    module = _module("examples/value_search.py")
    seen = {}
    real_crops, real_picture = module.object_crops, module.save_picture

    def crops_spy(ds, size):
        seen["crop_images"] = list(ds.images)
        return real_crops(ds, size)

    def picture_spy(path, images, *args):
        seen["starts"], seen["titles"] = images, args[3]
        return real_picture(path, images, *args)

    monkeypatch.setattr(module, "object_crops", crops_spy)
    monkeypatch.setattr(module, "save_picture", picture_spy)
    out = tmp_path / "search.png"
    module.main(["--checkpoint", str(ckpt), "--dataset", str(folder), "--instances",
                 str(instances), "--holdout", str(HOLDOUT), "--steps", "3", "--num-envs", "6",
                 "--out", str(out)])
    assert "mean reward per step" in capsys.readouterr().out and out.exists()
    test, train = _split(folder, instances, "test"), _split(folder, instances, "train")
    bare_px = np.asarray(Image.open(folder / bare).convert("RGB")).tobytes()
    assert bare_px in test  # held out, but without an object: no episode starts there
    starts = _keys(seen["starts"])
    assert starts <= set(test) - {bare_px} and starts  # episodes: test images only
    crops_from = _keys(seen["crop_images"])
    assert crops_from == set(train) and not crops_from & set(test)  # goal crops: the others
    goals = [t.split(":")[0] for t in seen["titles"]]
    assert set(goals) <= set(NAMES) and len(goals) == 6


def test_find_object_on_a_coco_folder(coco, ckpt, tmp_path):
    folder, instances, bare = coco
    fo = _module("studies/find_object.py")
    out = tmp_path / "cells"
    argv = ["--checkpoint", str(ckpt), "--dataset", str(folder), "--instances", str(instances),
            "--holdout", str(HOLDOUT), "--eval-envs", "6", "--horizon", "3", "--out", str(out)]
    a = fo.parse_args(argv)
    envs = fo.eval_envs(a)
    ds = envs.unwrapped.dataset
    test = _split(folder, instances, "test")
    bare_px = np.asarray(Image.open(folder / bare).convert("RGB")).tobytes()
    assert _keys(ds.images) == set(test) - {bare_px}  # the held-out images with an object
    assert envs.vocabulary == NAMES and ds.class_names == NAMES
    obs, info = envs.reset(seed=10_000)
    for i, g in zip(info["image_index"], obs["goal"], strict=True):
        assert g in ds.object_labels[i]  # each goal is one of its image's own objects
    act = fo.search_policy(a, str(ckpt), envs)
    assert act.search.value_fn.vocabulary == NAMES  # crops of both classes, off the test set
    assert act.pick(obs, info).tolist() == obs["goal"].tolist()  # the env's names, in order

    fo.main([*argv, "--only", "oracle", "random", "search", "--seeds", "0"])
    cells = sorted(p.name for p in out.glob("*.json"))
    assert len(cells) == 3 and all(c.startswith("images-") for c in cells)
    cell = json.loads(next(out.glob("*_search_s0.json")).read_text())
    assert cell["settings"]["source"]["instances"] == str(instances)
    assert 0.0 <= cell["success"] <= 1.0 and cell["mean_return"] >= 0.0


@pytest.mark.parametrize("extra, match", [
    (["--dataset", "{folder}"], "folder without object boxes: pass --instances"),
    (["--dataset", "fashion"], "'fashion'.*no object boxes"),
    (["--dataset", "scenes", "--test-dataset", "{folder}"], "has its own test split"),
    (["--dataset", "{folder}", "--instances", "{instances}", "--test-dataset", "{folder}"],
     "--test-dataset .* pass --test-instances"),
    (["--dataset", "no/such/folder"], "--dataset \\('no/such/folder'\\) is neither"),
    (["--dataset", "scenes", "--instances", "{instances}"], "--instances annotates"),
])
def test_bad_source_flags_name_the_flag(coco, extra, match, capsys):
    folder, instances, _ = coco
    extra = [x.format(folder=folder, instances=instances) for x in extra]
    for module, argv in ((_module("studies/find_object.py").parse_args, []),
                         (_module("examples/value_search.py").main, [])):
        with pytest.raises(SystemExit, match=match):  # before the checkpoint is even read
            module(["--checkpoint", "no/such/checkpoint", *extra, *argv])


def test_value_ranking_reports_the_oracle_and_inside_is_recorded(coco, ckpt, tmp_path):
    folder, instances, _ = coco
    fo = _module("studies/find_object.py")
    argv = ["--checkpoint", str(ckpt), "--dataset", str(folder), "--instances", str(instances),
            "--holdout", str(HOLDOUT), "--eval-envs", "6", "--horizon", "2", "--seeds", "0",
            "--only", "value-ranking", "grid-random"]
    fo.main([*argv, "--out", str(tmp_path / "in")])
    cell = json.loads(next((tmp_path / "in").glob("*_value-ranking_s0.json")).read_text())
    assert cell["settings"]["inside"] is True and cell["candidates_leaving_image"] == 0.0
    assert 0.0 <= cell["goal_class_accuracy"] <= 1.0
    for key in ("oracle_rank_corr_mean", "q_oracle_rank_corr_mean", "true_vis_oracle_pick"):
        assert np.isfinite(cell[key])
    fo.main([*argv, "--no-inside", "--out", str(tmp_path / "asked")])
    cells = [json.loads(p.read_text()) for p in (tmp_path / "asked").glob("*.json")]
    assert len(cells) == 2 and all("inside" not in c["settings"] for c in cells)
