"""The one held-out rule of file-backed sources: a name (a file's relative path, a sample key)
is held out when the SHA-1 position of its bytes is below the ``holdout`` fraction. It imports
nothing of the project, so the sources (``folder``, ``shards``, ``video``) and
:mod:`imgmdp_env.datasets.splits` all use it without needing each other."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["held_out", "name_position"]


def _name_bytes(name: str) -> bytes:
    """The bytes hashed for ``name``: its UTF-8, with the undecodable bytes of a file name
    that is not UTF-8 (which Python holds as lone surrogates, ``os.fsdecode``) restored as
    they are on disk, so such a file splits like any other, the same on every machine."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate outside the escape range (not a file name)
        return name.encode("utf-8", "surrogatepass")


def name_position(name: str) -> float:
    """A name's position in [0, 1), from the first 8 bytes of its SHA-1 (the same on every
    machine, Python version and seed, unlike ``hash``; :func:`_name_bytes`)."""
    return int.from_bytes(hashlib.sha1(_name_bytes(name)).digest()[:8], "big") / 2**64


def held_out(names: Sequence[str], fraction: float) -> np.ndarray:
    """``(N,)`` bool: which of ``names`` (relative paths, sample keys) are held out for
    testing: those whose SHA-1 position is below ``fraction``. A name's side never depends on
    the other names, so adding files or shards never moves an image between train and test.
    For a finite list with ``0 < fraction`` and at least 2 names, at least one is held out and
    at least one is not (the lowest / highest position), so a tiny folder still has both."""
    u = np.array([name_position(x) for x in names], np.float64)
    mask = u < fraction
    if fraction > 0 and len(names) >= 2:
        mask[int(np.argmin(u))] = True
        mask[int(np.argmax(u))] = False
    return mask
