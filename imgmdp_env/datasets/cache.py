"""The per-process dataset cache of the env: ``gym.make`` in a loop decodes a named or folder
dataset once. Keys hold the spec's type and text and the kwargs by value and type (lists,
dicts and arrays included; ``1``, ``1.0`` and ``True`` stay apart); a kwargs value that cannot
be keyed just skips the cache."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from imgmdp_env.datasets import ImageDataset, make_dataset

__all__ = ["cached_dataset"]


def _freeze(value: Any) -> Any:
    """A hashable, type-exact key for a kwargs value (lists, dicts and arrays included)."""
    if isinstance(value, Mapping):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    hash(value)  # TypeError for anything else unhashable: then the dataset is not cached
    return (type(value).__name__, value)


def cached_dataset(spec: Any, kwargs: dict) -> ImageDataset:
    """``make_dataset(spec, **kwargs)``, decoded once per process for named and folder specs
    (keyed by the spec and its kwargs by value: lists and arrays included)."""
    key = None
    if isinstance(spec, str | os.PathLike):
        try:
            key = (type(spec).__name__, os.fspath(spec), _freeze(kwargs))
        except TypeError:
            key = None
        if key is not None and key in _DATASET_CACHE:
            return _DATASET_CACHE[key]
    ds = make_dataset(spec, **kwargs)
    if key is not None:  # named / folder datasets are decoded once per process
        _DATASET_CACHE[key] = ds
    return ds


_DATASET_CACHE: dict[Any, ImageDataset] = {}
