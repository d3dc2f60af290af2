"""Image sources for the view MDP. ``make_dataset(spec)`` turns anything a user may pass as
``dataset=`` into an :class:`ImageDataset`.

spec:
- ``"scenes"``: procedurally generated multi-object scenes (the embedded default, no download).
- ``"fashion"``: Fashion-MNIST single centred items (Debian package ``dataset-fashion-mnist``).
- ``"fashion-scenes"``: Fashion-MNIST items composited into cluttered multi-object scenes.
- a path to a folder of images (recursive), optionally with ``captions=`` a COCO-style JSON.
- an array or tensor ``(N, H, W, 3)`` / ``(N, 3, H, W)`` uint8, or a list of PIL images.
- an :class:`ImageDataset` (returned as is).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env.datasets.base import ImageDataset

NAMED = ("scenes", "fashion", "fashion-scenes")

__all__ = ["NAMED", "ImageDataset", "make_dataset"]


def make_dataset(spec: Any = "scenes", **kwargs: Any) -> ImageDataset:
    """Build an :class:`ImageDataset` from a name, a folder, arrays or PIL images.

    kwargs go to the source: e.g. ``n``, ``size``, ``seed`` for ``"scenes"``; ``split`` for the
    Fashion-MNIST sources; ``captions`` for a folder.
    """
    if isinstance(spec, ImageDataset):
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} do not apply to an existing ImageDataset")
        return spec
    if isinstance(spec, str) and spec in NAMED:
        if spec == "scenes":
            from imgmdp_env.datasets.scenes import make_scenes

            return make_scenes(**kwargs)
        from imgmdp_env.datasets import fashion

        if spec == "fashion":
            return fashion.load_fashion(**kwargs)
        return fashion.make_fashion_scenes(**kwargs)
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        if not path.is_dir():
            raise ValueError(
                f"dataset {str(spec)!r} is neither a named dataset {NAMED} nor a folder of images"
            )
        from imgmdp_env.datasets.folder import load_folder

        return load_folder(path, **kwargs)
    from imgmdp_env.datasets.arrays import from_arrays

    if isinstance(spec, np.ndarray | list | tuple) or type(spec).__module__.startswith("torch"):
        return from_arrays(spec, **kwargs)
    raise TypeError(
        f"dataset of type {type(spec).__name__} is not supported: pass a name {NAMED}, a folder "
        "path, an (N, H, W, 3) / (N, 3, H, W) uint8 array or tensor, a list of PIL images, or "
        "an ImageDataset"
    )
