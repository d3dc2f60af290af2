"""Named datasets by split and size: what training and the probes load.

``load_split(name, split, n, size, seed)`` is the one way the training job
(``agents/train_value.py``), the probes (``agents/evaluate.py``) and the benchmarks ask for
``n`` images of a split. Generated sources (``scenes``, ``fashion-scenes``) are deterministic
in ``(seed, split)``; ``fashion`` takes a seeded subset of its split; a folder has no split and
gives a seeded subset of its images whatever ``split`` says.

The probes use :data:`PROBE_SEED` for their data, whatever the training seed, so every run is
measured on the same labelled images (see :func:`agents.evaluate.probe_sets`).
"""

from __future__ import annotations

import numpy as np

from imgmdp_env.datasets import ImageDataset, make_dataset

__all__ = ["PROBE_SEED", "load_split"]

PROBE_SEED = 0


def load_split(name: str, split: str, n: int, size: int, seed: int) -> ImageDataset:
    """``n`` images of ``split`` (``"train"``, ``"val"`` for scenes only, ``"test"``) of a named
    dataset or a folder. size: side of generated images in pixels (scenes, fashion-scenes)."""
    if name == "scenes":
        return make_dataset("scenes", n=n, size=size, seed=seed, split=split)
    if name == "fashion-scenes":
        return make_dataset(name, split=split, n=n, size=size, seed=seed)
    ds = make_dataset(name, split=split) if name == "fashion" else make_dataset(name)
    if len(ds) > n:
        ds = ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False)))
    return ds
