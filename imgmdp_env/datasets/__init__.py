"""Image sources for the view MDP. ``make_dataset(spec)`` turns anything a user may pass as
``dataset=`` into an :class:`ImageDataset`.

spec:
- ``"scenes"``: procedurally generated multi-object scenes (the embedded default, no download).
- ``"fashion"``: Fashion-MNIST single centred items (Debian package ``dataset-fashion-mnist``).
- ``"fashion-scenes"``: Fashion-MNIST items composited into cluttered multi-object scenes.
- a path to a folder of images (recursive), optionally with COCO ``captions=`` /
  ``instances=`` JSON files; resized on load to ``max_side`` within a ``memory_budget``;
  class sub-folders (``root/<class>/<image>``, as torchvision's ``ImageFolder``) give image
  labels (``labels=``, :func:`~imgmdp_env.datasets.folder.load_folder`).
- webdataset shards: ``.tar`` paths, a brace pattern ``data/shard-{000..009}.tar``, a comma
  list, or a folder of ``.tar`` files (``stream=True``: a bounded streaming buffer).
- a video file, or a folder of videos: every ``frame_stride``-th frame (PyAV, extra ``video``).
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

from imgmdp_env import checks as check
from imgmdp_env.datasets.base import ImageDataset

NAMED = ("scenes", "fashion", "fashion-scenes")

__all__ = ["NAMED", "ImageDataset", "is_source", "make_dataset", "source_kind"]


def source_kind(spec: Any) -> str | None:
    """``"named"``, ``"shards"``, ``"video"``, ``"folder"`` for a spec naming a source that
    exists, else None (arrays and ``ImageDataset`` objects are not names)."""
    if isinstance(spec, str) and spec in NAMED:
        return "named"
    if isinstance(spec, str) and not spec.strip():
        return None  # "" is no source (not the current folder: that is ".")
    from imgmdp_env.datasets.shards import is_shard_spec

    if is_shard_spec(spec):
        return "shards"
    from imgmdp_env.datasets.video import is_video_spec

    if is_video_spec(spec):
        return "video"
    if isinstance(spec, str | os.PathLike) and Path(os.fspath(spec)).is_dir():
        return "folder"
    return None


def is_source(spec: Any) -> bool:
    """Whether ``spec`` names a dataset :func:`make_dataset` can open (a name, a folder of
    images or videos, a video file, shards)."""
    return source_kind(spec) is not None


def _call(source: Callable[..., ImageDataset], what: str, kwargs: dict, *first: Any
          ) -> ImageDataset:
    """``source(*first, **kwargs)``, refusing unknown kwargs with the list of valid ones."""
    params = list(inspect.signature(source).parameters)[len(first):]
    check.check_keys(f"dataset {what} ({source.__name__}) kwargs", kwargs, params)
    return source(*first, **kwargs)


def _check_generated(source: Callable[..., ImageDataset], spec: str, kwargs: dict) -> None:
    """Refuse a generated dataset (``n`` images of ``size``) that would not fit in the
    machine's RAM (:func:`imgmdp_env.datasets.decode.check_pixels`) before generating any: a
    count typed by mistake gives the figure, not a bare MemoryError. Bad values are left to the
    source's own checks. (``train_value.py`` checks against ``--memory-budget`` up front.)"""
    from imgmdp_env.datasets import decode

    defaults = {k: p.default for k, p in inspect.signature(source).parameters.items()}
    n, size = kwargs.get("n", defaults.get("n")), kwargs.get("size", defaults.get("size"))
    try:
        h, w = check.size_hw("size", size, 1)
        n = check.integer("n", n, 1)
    except (TypeError, ValueError):
        return
    ram_gib = 2 * decode.budget_bytes(None) / 2**30  # the whole RAM (None: half of it)
    decode.check_pixels(n, n * h * w, ram_gib, f"dataset {spec!r} (n={n} images of {h}x{w}, "
                        "against the machine's RAM)", fixes="a smaller n (--dataset-size) or "
                        "size (--scene-size)")


def make_dataset(spec: Any = "scenes", **kwargs: Any) -> ImageDataset:
    """Build an :class:`ImageDataset` from a name, a folder, arrays or PIL images.

    kwargs go to the source: e.g. ``n``, ``size``, ``seed`` for ``"scenes"``; ``split`` for the
    Fashion-MNIST sources; ``captions``, ``instances``, ``max_side``, ``memory_budget``,
    ``split``, ``holdout`` for a folder (:func:`~imgmdp_env.datasets.folder.load_folder`);
    for shards those of :func:`~imgmdp_env.datasets.shards.read_shards`, or with
    ``stream=True`` those of :class:`~imgmdp_env.datasets.stream.ShardStream`; for videos
    those of :func:`~imgmdp_env.datasets.video.load_video`. Unknown kwargs are refused (the
    error lists the source's valid ones), and so is ``""`` (it is not the current folder;
    pass ``"."``).
    """
    if isinstance(spec, ImageDataset):
        check.check_keys("an existing ImageDataset takes no kwargs", kwargs, ())
        return spec
    if isinstance(spec, str) and spec in NAMED:
        if spec == "scenes":
            from imgmdp_env.datasets.scenes import make_scenes

            _check_generated(make_scenes, spec, kwargs)
            return _call(make_scenes, repr(spec), kwargs)
        from imgmdp_env.datasets import fashion

        if spec == "fashion":
            return _call(fashion.load_fashion, repr(spec), kwargs)
        _check_generated(fashion.make_fashion_scenes, spec, kwargs)
        return _call(fashion.make_fashion_scenes, repr(spec), kwargs)
    if isinstance(spec, str) and not spec.strip():
        raise ValueError(f"dataset ({spec!r}) is empty: pass a named dataset {list(NAMED)}, a "
                         "folder of images or videos ('.' for the current folder), a video "
                         "file, or webdataset shards (.tar paths or a pattern such as "
                         "data/shard-{000..009}.tar)")
    kind = source_kind(spec) if isinstance(spec, str | os.PathLike | list | tuple) else None
    if kind == "shards":
        from imgmdp_env.datasets import shards

        kwargs = dict(kwargs)
        if kwargs.pop("stream", False):
            from imgmdp_env.datasets.stream import ShardStream

            return _call(ShardStream, "shards", kwargs, spec)
        return _call(shards.read_shards, "shards", kwargs, spec)
    if kind == "video":
        from imgmdp_env.datasets.video import load_video

        return _call(load_video, "video", kwargs, spec)
    if isinstance(spec, str | os.PathLike):
        text = check.path_like("dataset", spec)
        if not Path(text).is_dir():
            raise ValueError(
                f"dataset {text!r} is neither a named dataset {NAMED}, a folder of images or "
                "videos, a video file, nor webdataset shards (.tar paths or a pattern such as "
                "data/shard-{000..009}.tar)"
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
