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

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import _checks as check
from imgmdp_env.datasets.base import ImageDataset

NAMED = ("scenes", "fashion", "fashion-scenes")

__all__ = ["NAMED", "ImageDataset", "make_dataset"]


def _call(source: Callable[..., ImageDataset], what: str, kwargs: dict, *first: Any
          ) -> ImageDataset:
    """``source(*first, **kwargs)``, refusing unknown kwargs with the list of valid ones."""
    params = list(inspect.signature(source).parameters)[len(first):]
    check.check_keys(f"dataset {what} ({source.__name__}) kwargs", kwargs, params)
    return source(*first, **kwargs)


def make_dataset(spec: Any = "scenes", **kwargs: Any) -> ImageDataset:
    """Build an :class:`ImageDataset` from a name, a folder, arrays or PIL images.

    kwargs go to the source: e.g. ``n``, ``size``, ``seed`` for ``"scenes"``; ``split`` for the
    Fashion-MNIST sources; ``captions`` for a folder. Unknown kwargs are refused (the error
    lists the source's valid ones), and so is ``""`` (it is not the current folder; pass
    ``"."``).
    """
    if isinstance(spec, ImageDataset):
        check.check_keys("an existing ImageDataset takes no kwargs", kwargs, ())
        return spec
    if isinstance(spec, str) and spec in NAMED:
        if spec == "scenes":
            from imgmdp_env.datasets.scenes import make_scenes

            return _call(make_scenes, repr(spec), kwargs)
        from imgmdp_env.datasets import fashion

        if spec == "fashion":
            return _call(fashion.load_fashion, repr(spec), kwargs)
        return _call(fashion.make_fashion_scenes, repr(spec), kwargs)
    if isinstance(spec, str) and not spec.strip():
        raise ValueError(f"dataset ({spec!r}) is empty: pass a named dataset {NAMED}, or a "
                         "folder path ('.' for the current folder)")
    if isinstance(spec, str | os.PathLike):
        text = check.path_like("dataset", spec)
        if not Path(text).is_dir():
            raise ValueError(
                f"dataset {text!r} is neither a named dataset {NAMED} nor a folder of images"
            )
        from imgmdp_env.datasets.folder import load_folder

        return _call(load_folder, "folder", kwargs, text)
    from imgmdp_env.datasets.arrays import from_arrays

    if isinstance(spec, np.ndarray | list | tuple) or type(spec).__module__.startswith("torch"):
        return _call(from_arrays, "arrays", kwargs, spec)
    raise TypeError(
        f"dataset of type {type(spec).__name__} is not supported: pass a name {NAMED}, a folder "
        "path, an (N, H, W, 3) / (N, 3, H, W) uint8 array or tensor, a list of PIL images, or "
        "an ImageDataset"
    )
