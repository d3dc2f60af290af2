"""Datasets by split and size: what training and the probes load.

``load_split(name, split, n, size, seed, **source)`` is the one way the training job
(``agents/train_value.py``), the probes (``agents/evaluate.py``) and the benchmarks ask for
``n`` images of a split. Generated sources (``scenes``, ``fashion-scenes``) are deterministic
in ``(seed, split)``; ``fashion`` takes a seeded subset of its split.

File-backed sources (a folder of images, webdataset shards, videos) split by a deterministic
held-out set (:func:`imgmdp_env.datasets.holdout.held_out`): ``"train"`` is everything
outside it, ``"test"`` (and ``"val"``) inside it, or, with ``source["test"]`` (a separate
folder / shard pattern, with its own ``test_captions`` / ``test_instances``), ``"train"``
is the whole source and ``"test"`` the whole test source (which takes the ``test_*`` keys,
prefix removed, and no other; image labels of class sub-folders are re-indexed into the
train folder's classes). The other ``source`` keys go to the source (``captions``,
``instances``, ``max_side``, ``memory_budget``, ``workers``, ``holdout``,
``frame_stride``...; see :func:`imgmdp_env.datasets.make_dataset`).

The probes use :data:`PROBE_SEED` for their data, whatever the training seed, so every run is
measured on the same labelled images (see :func:`agents.evaluate.probe_sets`).

:func:`reference_split` names the split whose labelled images stand apart from a dataset's
``"test"`` images: the probes' training images and the value search's goal crops come from it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from imgmdp_env.datasets import NAMED, ImageDataset, make_dataset
from imgmdp_env.datasets.holdout import held_out, name_position  # noqa: F401 - re-exported

__all__ = ["PROBE_SEED", "held_out", "load_split", "name_position", "reference_split"]

PROBE_SEED = 0


def reference_split(name: str) -> str:
    """The split of dataset ``name`` whose labelled images are never its ``"test"`` images:
    ``"val"`` for ``scenes`` (generated apart from both ``"train"`` and ``"test"``), else
    ``"train"``: ``fashion-scenes`` has no ``"val"``, and for a file-backed source ``"val"`` is
    its held-out test split (:func:`load_split`)."""
    return "val" if name == "scenes" else "train"


def _train_classes(test: ImageDataset, name: str, source: dict) -> ImageDataset:
    """The image labels of a separate test folder re-indexed into the class list of the train
    folder ``name``, when both take their classes from class sub-folders: each folder's list
    is its own sub-folders, so a class missing from one would shift the other's indices.
    Raises ValueError naming a test class the train folder lacks."""
    from imgmdp_env.datasets import source_kind
    from imgmdp_env.datasets.folder import EXTENSIONS, class_folders, list_images

    if (test.labels is None or test.class_names is None or test.object_labels is not None
            or source_kind(name) != "folder" or source.get("instances")):
        return test
    with warnings.catch_warnings():  # the train folder's own load reports its problems
        warnings.simplefilter("ignore")
        train = class_folders(list_images(name, source.get("extensions", EXTENSIONS))[0],
                              source.get("labels", "auto"))
    if train is None or train == test.class_names:
        return test
    used = sorted({test.class_names[k] for k in test.labels.tolist()})
    missing = [c for c in used if c not in train]
    if missing:
        raise ValueError(f"the test folder's class folder(s) {missing} are not class folders "
                         f"of the train folder {name!r} ({train}): a test class must be one "
                         "the train images have")
    index = np.array([train.index(c) if c in train else -1 for c in test.class_names], np.int64)
    return ImageDataset(images=test.images, captions=test.captions, labels=index[test.labels],
                        class_names=train, name=test.name)


def load_split(name: str, split: str, n: int, size: int, seed: int, **source: Any
               ) -> ImageDataset:
    """``n`` images of ``split`` (``"train"``, ``"val"``, ``"test"``) of a named dataset or a
    file-backed source (module docstring). size: side of generated images in pixels (scenes,
    fashion-scenes)."""
    if name == "scenes":
        return make_dataset("scenes", n=n, size=size, seed=seed, split=split, **source)
    if name == "fashion-scenes":
        return make_dataset(name, split=split, n=n, size=size, seed=seed, **source)
    if name == "fashion":
        ds = make_dataset(name, split=split, **source)
        if len(ds) > n:
            ds = ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), n,
                                                                      replace=False)))
        return ds
    if name in NAMED:  # pragma: no cover - every named source is handled above
        raise ValueError(f"load_split: no split rule for {name!r}")
    source = dict(source)
    test = source.pop("test", "") or ""
    test_kw = {k[5:]: source.pop(k) for k in list(source) if k.startswith("test_")}
    split = "test" if split == "val" else split
    if test:
        if split == "test":
            return _train_classes(make_dataset(test, n=n, seed=seed, **test_kw), name, source)
        source.pop("holdout", None)
        return make_dataset(name, n=n, seed=seed, **source)
    return make_dataset(name, split=split, n=n, seed=seed, **source)
