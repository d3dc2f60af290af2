"""Issue 8: every argument of the env, wrappers, scorers and datasets is checked before any
work, with a message naming the argument, the bad value and what is valid. One test per class
of bad input, parametrised over its cases (the checks live in imgmdp_env/checks.py)."""

from __future__ import annotations

import json
import os
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

import imgmdp_env  # noqa: F401
from imgmdp_env import ImageBank, ImageViewVectorEnv, box_tokens, sample_boxes
from imgmdp_env.checks import UnknownKeyError
from imgmdp_env.datasets import ImageDataset, make_dataset
from imgmdp_env.datasets.arrays import from_arrays
from imgmdp_env.datasets.cache import _freeze
from imgmdp_env.datasets.fashion import load_fashion, make_fashion_scenes
from imgmdp_env.datasets.folder import load_folder, read_coco_captions
from imgmdp_env.rewards import (
    CaptionMatchReward,
    CurationReward,
    EdgeThumbnail,
    EmbeddingScorer,
    ObjectVisibilityScorer,
    VectorCaptionMatchReward,
    VectorCurationReward,
    curation_scorer,
)
from imgmdp_env.sb3 import make_sb3_env
from imgmdp_env.wrappers import DiscreteViewActions, VectorDiscreteViewActions

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 4, "size": 32}}
NHWC = np.zeros((4, 8, 8, 3), np.uint8)
NAN, INF = float("nan"), float("inf")


def vec(num_envs=2, **kw):
    return gym.make_vec("ImageView-v0", num_envs=num_envs, **{**SMALL, **kw})


def single(**kw):
    return gym.make("ImageView-v0", **{**SMALL, **kw})


def scenes(n=4):
    return make_dataset("scenes", n=n, size=32)


def encoder(views):
    return views.float().mean((2, 3))


def env_args(**kw):
    return lambda: ImageViewVectorEnv(**{**SMALL, **kw})


def _message(pattern):
    """The argument and its bad value, as the message shows them."""
    return re.escape(pattern)


# ---------------------------------------------------------------------------------------------
# Class 1: NaN / inf / negative / zero / out-of-range numbers
# ---------------------------------------------------------------------------------------------
BAD_VALUES = {
    "max_pan nan": (env_args(max_pan=NAN), "max_pan (nan)"),
    "max_pan 0": (env_args(max_pan=0), "max_pan (0)"),
    "max_pan inf": (env_args(max_pan=INF), "max_pan (inf)"),
    "max_zoom inf": (env_args(max_zoom=INF), "max_zoom (inf)"),
    "max_zoom 0.5": (env_args(max_zoom=0.5), "max_zoom (0.5)"),
    "margin -0.1": (env_args(margin=-0.1), "margin (-0.1)"),
    "margin nan": (env_args(margin=NAN), "margin (nan)"),
    "min_size 0": (env_args(min_size=0), "min_size (0)"),
    "min_size 2": (env_args(min_size=2.0), "min_size (2.0)"),
    "init_scale reversed": (env_args(init_scale=(0.9, 0.1)), "init_scale ((0.9, 0.1))"),
    "init_scale nan": (env_args(init_scale=(NAN, 1.0)), "init_scale ((nan, 1.0))"),
    "init_scale 3 items": (env_args(init_scale=(0.1, 0.5, 1.0)), "init_scale"),
    "init_ratio 0": (env_args(init_ratio=(0, 1)), "init_ratio ((0, 1))"),
    "view_size 0": (env_args(view_size=0), "view_size (0)"),
    "view_size (0, 8)": (env_args(view_size=(0, 8)), "view_size ((0, 8))"),
    "num_envs 0": (env_args(num_envs=0), "num_envs (0)"),
    "num_envs -3": (env_args(num_envs=-3), "num_envs (-3)"),
    "max_episode_steps 0": (env_args(max_episode_steps=0), "max_episode_steps (0)"),
    "fill 256": (env_args(fill=(256, 0, 0)), "fill ((256, 0, 0))"),
    "fill 2 items": (env_args(fill=(0, 0)), "fill ((0, 0))"),
    "obs_mode": (env_args(obs_mode="pixels"), "obs_mode 'pixels'"),
    "autoreset_mode": (env_args(autoreset_mode="Sometimes"), "autoreset_mode ('Sometimes')"),
    "pan nan": (lambda: DiscreteViewActions(single(), pan=NAN), "pan (nan)"),
    "zoom inf": (lambda: VectorDiscreteViewActions(vec(), zoom=INF), "zoom (inf)"),
    "terminate_at nan": (lambda: VectorCaptionMatchReward(vec(), terminate_at=NAN),
                         "terminate_at (nan)"),
    "terminate_at 0": (lambda: CaptionMatchReward(single(), terminate_at=0), "terminate_at (0)"),
    "alpha 0": (lambda: ObjectVisibilityScorer(scenes(), alpha=0), "alpha (0)"),
    "alpha nan": (lambda: ObjectVisibilityScorer(scenes(), alpha=NAN), "alpha (nan)"),
    "temperature inf": (lambda: EmbeddingScorer(encoder, ["a"], torch.ones(1, 3),
                                                temperature=INF), "temperature (inf)"),
    "temperature -1": (lambda: curation_scorer(scenes(), 16, temperature=-1.0),
                       "temperature (-1.0)"),
    "per_class 0": (lambda: curation_scorer(scenes(), 16, per_class=0), "per_class (0)"),
    "batch_size 0": (lambda: curation_scorer(scenes(), 16, batch_size=0), "batch_size (0)"),
    "curation view_size 0": (lambda: curation_scorer(scenes(), 0), "view_size (0)"),
    "EdgeThumbnail size 0": (lambda: EdgeThumbnail(0), "size (0)"),
    "ImageBank levels 0": (lambda: ImageBank([NHWC[0]], levels=0), "levels (0)"),
    "sample_boxes scale nan": (lambda: sample_boxes(3, scale=(NAN, 1.0)), "scale ((nan, 1.0))"),
    "sample_boxes n -1": (lambda: sample_boxes(-1), "n (-1)"),
    "box_tokens n_bins 1": (lambda: box_tokens(torch.zeros(1, 4), n_bins=1), "n_bins (1)"),
    "fashion-scenes n 0": (lambda: make_fashion_scenes(n=0), "n (0)"),
    "fashion-scenes seed -1": (lambda: make_fashion_scenes(n=1, seed=-1), "seed (-1)"),
    "fashion n 0": (lambda: load_fashion(n=0), "n (0)"),
    "action_to_relative max_zoom 0": (lambda: imgmdp_env.action_to_relative(
        torch.zeros(1, 4), 0.5, 0.0), "max_zoom (0.0)"),
    "make_sb3_env autoreset_mode": (lambda: make_sb3_env(2, autoreset_mode="NextStep", **SMALL),
                                    "autoreset_mode ('NextStep')"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_naming_argument_and_value(case):
    build, shown = BAD_VALUES[case]
    with pytest.raises(ValueError, match=_message(shown)) as err:
        build()
    assert len(str(err.value)) > len(shown) + 10  # and says what is valid


# ---------------------------------------------------------------------------------------------
# Class 2: wrong types refused, never turned into something else
# ---------------------------------------------------------------------------------------------
def _reset(options, **kw):
    return lambda: vec(**kw).reset(seed=0, options=options)


WRONG_TYPES = {
    "view_size float": (env_args(view_size=64.0), "view_size (64.0)"),
    "view_size str": (env_args(view_size="64"), "view_size ('64')"),
    "view_size pair of floats": (env_args(view_size=(32.0, 32)), "view_size ((32.0, 32))"),
    "num_envs float": (env_args(num_envs=2.5), "num_envs (2.5)"),
    "num_envs bool": (env_args(num_envs=True), "num_envs (True)"),
    "max_pan str": (env_args(max_pan="0.5"), "max_pan ('0.5')"),
    "max_pan bool": (env_args(max_pan=True), "max_pan (True)"),
    "max_episode_steps float": (env_args(max_episode_steps=10.0), "max_episode_steps (10.0)"),
    "augment str": (env_args(augment="yes"), "augment ('yes')"),
    "antialias int": (env_args(antialias=1), "antialias (1)"),
    "fill floats": (env_args(fill=(0.5, 0, 0)), "fill ((0.5, 0, 0))"),
    "dataset_kwargs list": (env_args(dataset_kwargs=[("n", 4)]), "dataset_kwargs ([('n', 4)])"),
    "image_index 1.7": (_reset({"image_index": 1.7}), "options['image_index'] (1.7)"),
    "image_index [0, 1.5]": (_reset({"image_index": [0, 1.5]}), "options['image_index']"),
    "image_index True": (_reset({"image_index": True}), "options['image_index'] (True)"),
    "box strings": (_reset({"box": ["a", "b", "c", "d"]}), "options['box']"),
    "options str": (_reset("box"), "options ('box')"),
    "seed float": (lambda: vec().reset(seed=1.5), "seed (1.5)"),
    "single seed str": (lambda: single().reset(seed="1"), "seed ('1')"),
    "captions str": (lambda: from_arrays(NHWC, captions="abcd"), "captions ('abcd')"),
    "captions None items": (lambda: from_arrays(NHWC, captions=["a", None, "c", "d"]),
                            "item 1 is NoneType"),
    "ImageDataset captions str": (lambda: ImageDataset(images=list(NHWC[:2]), captions="ab"),
                                  "captions ('ab')"),
    "ImageDataset class_names str": (lambda: ImageDataset(images=list(NHWC[:2]),
                                                          class_names="ab"), "class_names"),
    "labels float": (lambda: from_arrays(NHWC, labels=np.zeros(4)), "labels must be"),
    "name int": (lambda: from_arrays(NHWC, name=3), "name (3)"),
    "vocabulary str": (lambda: EmbeddingScorer(encoder, "abc", torch.ones(3, 3)), "vocabulary"),
    "groups floats": (lambda: EmbeddingScorer(encoder, ["a", "b"], torch.ones(2, 3),
                                              groups=[0.0, 1.7]), "groups ([0.0, 1.7])"),
    "image_encoder not callable": (lambda: EmbeddingScorer("clip", ["a"], torch.ones(1, 3)),
                                   "image_encoder ('clip')"),
    "EdgeThumbnail size float": (lambda: EdgeThumbnail(2.5), "size (2.5)"),
    "alpha str": (lambda: ObjectVisibilityScorer(scenes(), alpha="0.5"), "alpha ('0.5')"),
    "scorer dataset": (lambda: ObjectVisibilityScorer("scenes"), "not str"),
    "goals bool": (lambda: VectorCaptionMatchReward(vec(), goals=True), "goal True"),
    "goal_obs str": (lambda: VectorCaptionMatchReward(vec(), goal_obs="no"), "goal_obs ('no')"),
    "goal_text int": (lambda: CaptionMatchReward(single(), goal_text=1), "goal_text (1)"),
    "goal option float": (lambda: VectorCaptionMatchReward(vec()).reset(options={"goal": 1.5}),
                          "options['goal'] (1.5)"),
    "curated_kwargs list": (lambda: VectorCurationReward(vec(), "scenes", curated_kwargs=[1]),
                            "curated_kwargs ([1])"),
    "pan str": (lambda: DiscreteViewActions(single(), pan="0.25"), "pan ('0.25')"),
    "extensions str": (lambda: load_folder(".", extensions="png"), "extensions ('png')"),
    "subset floats": (lambda: scenes().subset([1.7]), "indices ([1.7])"),
    "subset bools": (lambda: scenes().subset([True, False]), "indices ([True, False])"),
    "ImageBank levels float": (lambda: ImageBank([NHWC[0]], levels=2.0), "levels (2.0)"),
    "render size float": (lambda: imgmdp_env.render_views(
        ImageBank([NHWC[0]]), torch.zeros(1, dtype=torch.long), torch.ones(1, 4), 8.0),
        "size (8.0)"),
    "fashion split int": (lambda: load_fashion(split=0), "split 0"),
    "fashion-scenes size float": (lambda: make_fashion_scenes(n=1, size=48.0), "size (48.0)"),
    "fashion seed float": (lambda: load_fashion(n=3, seed=0.5), "seed (0.5)"),
    "reward env": (lambda: CaptionMatchReward("ImageView-v0"), "not an ImageView-v0"),
    "curation env": (lambda: VectorCurationReward(None, "scenes"), "not an ImageView-v0"),
    "action wrapper env": (lambda: DiscreteViewActions(object()), "not object"),
    "bank fill": (lambda: scenes().bank(fill="black"), "fill ('black')"),
    "single env autoreset_mode": (lambda: single(autoreset_mode="SameStep"),
                                  "autoreset_mode ('SameStep') applies to vector envs"),
    "sb3 wrappers callable": (lambda: make_sb3_env(2, wrappers=VectorDiscreteViewActions,
                                                   **SMALL), "wrappers ("),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_wrong_types_are_refused_not_converted(case):
    build, shown = WRONG_TYPES[case]
    with pytest.raises((TypeError, ValueError), match=_message(shown)):
        build()


@pytest.mark.parametrize("case", ["view_size float", "num_envs bool", "augment str",
                                  "image_index 1.7", "captions str", "groups floats",
                                  "goals bool", "subset floats"])
def test_wrong_types_raise_type_error(case):
    with pytest.raises(TypeError):
        WRONG_TYPES[case][0]()


# ---------------------------------------------------------------------------------------------
# Class 3: numpy integers (and floats) accepted wherever Python ones are
# ---------------------------------------------------------------------------------------------
NUMPY_OK = {
    "num_envs": lambda: ImageViewVectorEnv(num_envs=np.int64(2), **SMALL).num_envs == 2,
    "view_size": lambda: ImageViewVectorEnv(view_size=np.int32(16), **SMALL).view_size
    == (16, 16),
    "view_size pair": lambda: ImageViewVectorEnv(view_size=np.array([16, 24]),
                                                 **SMALL).view_size == (16, 24),
    "max_episode_steps": lambda: ImageViewVectorEnv(max_episode_steps=np.uint8(5),
                                                    **SMALL).max_episode_steps == 5,
    "max_pan float32": lambda: ImageViewVectorEnv(max_pan=np.float32(0.25), **SMALL).max_pan
    == 0.25,
    "fill": lambda: ImageViewVectorEnv(fill=np.array([1, 2, 3]), **SMALL).bank.fill == (1, 2, 3),
    "vector seed": lambda: np.array_equal(vec().reset(seed=np.int64(3))[0],
                                          vec().reset(seed=3)[0]),
    "single seed": lambda: np.array_equal(single().reset(seed=np.uint32(3))[0],
                                          single().reset(seed=3)[0]),
    "wrapper seed": lambda: VectorCaptionMatchReward(vec()).reset(seed=np.int64(1)) is not None,
    "image_index": lambda: (vec().reset(seed=0, options={"image_index": np.int64(3)})[1][
        "image_index"] == 3).all(),
    "goal id": lambda: (VectorCaptionMatchReward(vec()).reset(
        seed=0, options={"goal": np.int64(2)})[1]["goal"] == 2).all(),
    "pan": lambda: DiscreteViewActions(single(), pan=np.float32(0.25)) is not None,
    "EdgeThumbnail": lambda: EdgeThumbnail(np.int64(4)).size == 4,
    "subset": lambda: len(scenes().subset(np.array([0, 2], np.int32))) == 2,
    "fashion-scenes n": lambda: make_fashion_scenes(n=np.int64(1), root="/nonexistent"),
    "sample_boxes n": lambda: sample_boxes(np.int64(3)).shape == (3, 4),
}


@pytest.mark.parametrize("case", list(NUMPY_OK))
def test_numpy_numbers_are_accepted_like_python_ones(case):
    if case == "fashion-scenes n":  # the check passes; the missing files are what fails
        with pytest.raises(FileNotFoundError):
            NUMPY_OK[case]()
        return
    assert NUMPY_OK[case]()


# ---------------------------------------------------------------------------------------------
# Class 4: unknown keys in reset(options=...) and dataset kwargs are refused, valid ones listed
# ---------------------------------------------------------------------------------------------
UNKNOWN_KEYS = {
    "vector reset": (lambda: vec().reset(options={"image_idx": 0}),
                     "['image_idx']", "['box', 'image_index', 'reset_mask']"),
    "vector reset goal without wrapper": (lambda: vec().reset(options={"goal": 0}),
                                          "['goal']", "reward wrappers"),
    "single reset": (lambda: single().reset(options={"boxes": [0.5] * 4}), "['boxes']",
                     "'box'"),
    "reward wrapper reset": (lambda: VectorCaptionMatchReward(vec()).reset(options={"gaol": 0}),
                             "['gaol']", "'goal'"),
    "single reward wrapper reset": (lambda: CaptionMatchReward(single()).reset(
        options={"goals": 0}), "['goals']", "'goal'"),
    "scenes kwargs": (env_args(dataset_kwargs={"n": 4, "sise": 32}), "['sise']",
                      "'size'"),
    "make_dataset scenes": (lambda: make_dataset("scenes", N=3), "['N']", "'n'"),
    "arrays kwargs": (lambda: make_dataset(NHWC, caption=["a"] * 4), "['caption']",
                      "'captions'"),
    "folder kwargs": (lambda: make_dataset(".", caption="x.json"), "['caption']",
                      "'captions'"),
    "fashion kwargs": (lambda: make_dataset("fashion", subset=3), "['subset']", "'split'"),
    "existing ImageDataset": (lambda: make_dataset(scenes(), n=3), "['n']", "[]"),
    "curated_kwargs": (lambda: CurationReward(single(), "scenes", curated_kwargs={"m": 2}),
                       "['m']", "'n'"),
}


@pytest.mark.parametrize("case", list(UNKNOWN_KEYS))
def test_unknown_keys_are_refused_listing_the_valid_ones(case):
    build, unknown, valid = UNKNOWN_KEYS[case]
    with pytest.raises(UnknownKeyError, match=_message(unknown) + ".*" + _message(valid)) as e:
        build()
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)


# ---------------------------------------------------------------------------------------------
# Class 5: an empty dataset spec is not the current folder
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["", "   "])
def test_empty_dataset_spec_is_refused(spec, tmp_path, monkeypatch):
    Image.fromarray(NHWC[0]).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)  # '' would have loaded this folder
    with pytest.raises(ValueError, match=r"dataset \('\s*'\) is empty"):
        make_dataset(spec)
    with pytest.raises(ValueError, match=r"dataset \('\s*'\) is empty"):
        ImageViewVectorEnv(dataset=spec)
    assert len(make_dataset(".")) == 1  # the explicit spelling still works


# ---------------------------------------------------------------------------------------------
# Class 6: dataset kwargs of any value type are cached by value (lists did crash the cache)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, same, other", [
    ({"n": 2, "size": [32, 48]}, {"n": 2, "size": [32, 48]}, {"n": 2, "size": [48, 32]}),
    ({"n": 2, "size": (32, 48)}, {"n": 2, "size": (32, 48)}, {"n": 2, "size": [32, 48]}),
    ({"n": 2, "size": np.array([32, 40])}, {"n": 2, "size": np.array([32, 40])},
     {"n": 2, "size": np.array([40, 32])}),
])
def test_dataset_cache_keys_unhashable_kwargs_by_value(kwargs, same, other):
    a = ImageViewVectorEnv(dataset="scenes", dataset_kwargs=kwargs).dataset
    assert ImageViewVectorEnv(dataset="scenes", dataset_kwargs=same).dataset is a
    assert ImageViewVectorEnv(dataset="scenes", dataset_kwargs=other).dataset is not a
    h, w = np.asarray(kwargs["size"]).tolist()
    assert a.images[0].shape == (h, w, 3)


def test_dataset_cache_keeps_types_apart():
    # 1, 1.0 and True hash equal: a cached n=1 must not answer n=True or n=1.0
    keys = {_freeze(v) for v in ({"n": 1}, {"n": True}, {"n": 1.0}, {"n": np.int64(1)})}
    assert len(keys) == 4
    assert _freeze({"s": [1, 2]}) != _freeze({"s": (1, 2)})


# ---------------------------------------------------------------------------------------------
# Class 7: a state must exist before it is returned (a partial first reset left zero boxes)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [[True, False, False], [False, True, True], [False] * 3])
def test_first_reset_must_reset_every_sub_env(mask):
    envs = vec(num_envs=3, autoreset_mode="Disabled")
    with pytest.raises(ValueError, match=r"never reset.*first reset must reset every sub-env"):
        envs.reset(seed=0, options={"reset_mask": np.array(mask)})
    _, info = envs.reset(seed=0)
    _, info = envs.reset(options={"reset_mask": np.array(mask)})  # later: partial is fine
    assert (info["box"][:, 2:] > 0).all()


def test_render_before_reset_is_refused():
    env = ImageViewVectorEnv(render_mode="rgb_array", **SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        env.render()


# ---------------------------------------------------------------------------------------------
# Class 8: clear errors, not raw numpy / torch / JSON tracebacks
# ---------------------------------------------------------------------------------------------
def _captions_file(tmp_path, content, encoding="utf-8"):
    path = tmp_path / "captions.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content),
                        encoding=encoding)
    return path


COCO_OK = {"images": [{"id": 1, "file_name": "x.png"}],
           "annotations": [{"image_id": 1, "caption": "a cat"}]}
RAW_ERRORS = {
    "latin-1 captions": (lambda p: read_coco_captions(_captions_file(
        p, json.dumps(COCO_OK).replace("a cat", "caf\u00e9"), "latin-1")), "not UTF-8"),
    "not JSON": (lambda p: read_coco_captions(_captions_file(p, "{images: []")), "not valid JSON"),
    "top level list": (lambda p: read_coco_captions(_captions_file(p, [1, 2])), "top level"),
    "caption None": (lambda p: read_coco_captions(_captions_file(p, {
        **COCO_OK, "annotations": [{"image_id": 1, "caption": None}]})), r"annotations\[0\]"),
    "caption int": (lambda p: read_coco_captions(_captions_file(p, {
        **COCO_OK, "annotations": [{"image_id": 1, "caption": 7}]})), r"annotations\[0\]"),
    "file_name None": (lambda p: read_coco_captions(_captions_file(p, {
        **COCO_OK, "images": [{"id": 1, "file_name": None}]})), r"images\[0\]"),
    "image without id": (lambda p: read_coco_captions(_captions_file(p, {
        **COCO_OK, "images": [{"file_name": "x.png"}]})), r"images\[0\]"),
    "missing captions file": (lambda p: read_coco_captions(p / "none.json"), "could not be read"),
    "subset out of range": (lambda p: scenes().subset([0, 4]), r"indices \(\[0, 4\]\)"),
    "subset negative": (lambda p: scenes().subset([-1]), r"indices \(\[-1\]\)"),
    "seed over 64 bits": (lambda p: vec().reset(seed=2**64), r"seed \(18446744073709551616\)"),
    "seed negative": (lambda p: single().reset(seed=-1), r"seed \(-1\)"),
    "wrapper seed over 64 bits": (lambda p: VectorCaptionMatchReward(vec()).reset(seed=2**70),
                                  r"seed \(1180591620717411303424\)"),
    "image_index ragged": (lambda p: vec().reset(options={"image_index": [[0], [1, 2]]}),
                           "options\\['image_index'\\]"),
    "box zero size": (lambda p: vec().reset(options={"box": [0.5, 0.5, 0.0, 0.5]}),
                      r"width and height > 0"),
    "goal option object": (lambda p: VectorCaptionMatchReward(vec()).reset(
        options={"goal": object()}), r"options\['goal'\]"),
    "object boxes ragged": (lambda p: ImageDataset(images=list(NHWC[:1]), object_boxes=[
        np.zeros((2, 3))], object_labels=[np.zeros(2, np.int64)]), r"\(K, 4\) and \(K,\)"),
    "object boxes nan": (lambda p: ImageDataset(images=list(NHWC[:1]), object_boxes=[
        np.full((1, 4), np.nan)], object_labels=[np.zeros(1, np.int64)]), "finite"),
}


@pytest.mark.parametrize("case", list(RAW_ERRORS))
def test_raw_tracebacks_become_clear_errors(case, tmp_path):
    build, pattern = RAW_ERRORS[case]
    with pytest.raises((ValueError, TypeError), match=pattern) as err:
        build(tmp_path)
    assert type(err.value).__module__ in ("builtins", "imgmdp_env.checks")


def test_non_string_captions_are_never_stringified(tmp_path):
    Image.fromarray(NHWC[0]).save(tmp_path / "x.png")
    path = _captions_file(tmp_path, {**COCO_OK, "annotations": [{"image_id": 1,
                                                                   "caption": None}]})
    with pytest.raises(ValueError, match="'caption'"):
        load_folder(tmp_path, captions=path)


# ---------------------------------------------------------------------------------------------
# Class 9: image folders: linked and unlistable sub-folders, dangling links, COCO names
# ---------------------------------------------------------------------------------------------
def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


def test_images_in_symlinked_sub_folders_are_loaded(tmp_path):
    _png(tmp_path / "elsewhere" / "far.png", 10)
    root = tmp_path / "root"
    _png(root / "near.png", 20)
    os.symlink(tmp_path / "elsewhere", root / "linked")
    os.symlink(root, root / "loop")  # a link back up must not recurse forever
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_folder(root)
    assert [int(img[0, 0, 0]) for img in ds.images] == [10, 20]  # linked/far.png, near.png


@pytest.mark.parametrize("broken", ["dangling link", "unlistable folder"])
def test_unreadable_entries_are_reported_not_dropped(tmp_path, monkeypatch, broken):
    root = tmp_path / "root"
    _png(root / "ok.png")
    if broken == "dangling link":
        os.symlink(tmp_path / "gone.png", root / "lost.png")
        expect = r"lost\.png \(dangling link"
    else:
        _png(root / "locked" / "hidden.png")
        real_scandir = os.scandir

        def scandir(path="."):
            if os.path.basename(os.fspath(path)) == "locked":
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)  # root ignores chmod: fail the listing
        expect = r"folder locked/ \(PermissionError"
    with pytest.warns(UserWarning, match=expect):
        ds = load_folder(root)
    assert len(ds) == 1


@pytest.mark.parametrize("file_name", ["./a/b.png", "a//b.png", "a\\b.png", "./a/./b.png"])
def test_coco_file_names_are_normalised(tmp_path, file_name):
    root = tmp_path / "imgs"
    _png(root / "a" / "b.png")
    _png(root / "c" / "b.png")
    # b.png twice in the file: no base-name fallback, only the normalised path can match
    path = _captions_file(tmp_path, {
        "images": [{"id": 1, "file_name": file_name}, {"id": 2, "file_name": "d/b.png"}],
        "annotations": [{"image_id": 1, "caption": "the one"}, {"image_id": 2, "caption": "d"}]})
    assert read_coco_captions(path) == {"a/b.png": "the one", "d/b.png": "d"}
    with pytest.warns(UserWarning, match="1 of 2"):
        ds = load_folder(root, captions=path)
    assert ds.captions == ["the one", ""]


# ---------------------------------------------------------------------------------------------
# Class 10: CLI flags refused up front with a message, not a raw error after work
# ---------------------------------------------------------------------------------------------
def _train(argv, tmp_path):
    from agents.train_value import parse_args, train

    return train(parse_args([*argv, "--runs-dir", str(tmp_path / "runs")]))


@pytest.mark.parametrize("argv,pattern", [
    (["--dataset", ""], r"--dataset \(''\) is empty: pass a named dataset \['scenes'.*a folder "
                        r"of images or videos \('.' for the current folder\), a video file, or "
                        r"webdataset shards"),
    (["--dataset", "  "], r"--dataset \('  '\) is empty"),
    (["--dataset-size", "1000000000"], r"--dataset-size 1000000000 \(scenes: 1000000000 images "
                                       r"of 96x96\): .* GiB in RAM .* over the memory budget of "
                                       r".*Fix: a smaller --dataset-size"),
    (["--dataset-size", "100000", "--memory-budget", "0.01"], r"--dataset-size 100000 .*over "
                                                              r"the memory budget of 0.01 GiB"),
    (["--frame-stride", "5"], r"--frame-stride \(5\) keeps every k-th frame of a video, but no "
                              r"source of this run is one \(--dataset 'scenes' \(named\)\)"),
])
def test_train_flags_are_refused_with_a_clear_message(argv, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # '' would have been the current folder
    with pytest.raises(SystemExit, match=pattern):
        _train(argv, tmp_path)
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made


def test_frame_stride_with_a_folder_is_refused(tmp_path):
    Image.fromarray(NHWC[0]).save(tmp_path / "x.png")
    with pytest.raises(SystemExit, match=rf"--frame-stride \(2\).*--dataset '{tmp_path}' "
                                         r"\(folder\)"):
        _train(["--dataset", str(tmp_path), "--frame-stride", "2"], tmp_path)


def test_generated_dataset_too_large_for_ram_is_refused_before_generating():
    with pytest.raises(MemoryError, match=r"dataset 'scenes' \(n=1000000000 images of 96x96.*"
                                          r"Fix: a smaller n \(--dataset-size\)"):
        make_dataset("scenes", n=10**9, size=96)
