"""Argument checks shared by the env, wrappers, scorers and datasets.

Every public constructor (and ``reset``) checks its arguments with these before any work
starts. Each check names the argument, shows the bad value and says what is valid:
``ValueError`` for a bad value of the right type, ``TypeError`` for a wrong type, and
:class:`UnknownKeyError` (both) for unknown keys of an options / kwargs dict. Numbers accept
Python and numpy scalars alike; ``bool`` is never taken for a number, floats never for
integers, and a ``str`` never for a sequence. The checks return the value in its canonical
Python form (``int``, ``float``, ``tuple``, ``list``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "UnknownKeyError",
    "box_array",
    "check_keys",
    "choice",
    "colour",
    "flag",
    "index_array",
    "integer",
    "mapping",
    "number",
    "number_range",
    "optional_integer",
    "path_like",
    "seed",
    "size_hw",
    "string",
    "string_list",
]

MAX_SEED = 2**64  # torch.Generator.manual_seed takes seeds below this


class UnknownKeyError(ValueError, TypeError):
    """An options / kwargs dict has keys nobody reads. A ``TypeError`` like Python's own
    "unexpected keyword argument" and a ``ValueError`` (a bad value of the dict)."""


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def number(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number (Python or numpy, not bool) in the given bounds, as ``float``."""
    where = _bounds(lo, hi, lo_open, hi_open)
    want = f"a finite number{' ' + where if where else ''}"
    if not is_real(value):
        raise TypeError(f"{name} ({show(value)}) must be {want}, not {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo)) or (
            hi is not None and (x >= hi if hi_open else x > hi)):
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    return x


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (Python or numpy, not bool, not float) in ``[lo, hi]``, as ``int``."""
    where = _bounds(lo, hi, False, False)
    want = f"an integer{' ' + where if where else ''}"
    if not is_integer(value):
        raise TypeError(f"{name} ({show(value)}) must be {want}, not {type(value).__name__}")
    x = int(value)
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    return x


def optional_integer(name: str, value: Any, lo: int | None = None,
                     hi: int | None = None) -> int | None:
    """``None`` or :func:`integer`."""
    if value is None:
        return None
    try:
        return integer(name, value, lo, hi)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{err} or None") from None


def seed(name: str, value: Any) -> int | None:
    """``None`` or an integer in ``[0, 2**64)`` (what every random generator here takes)."""
    if value is None:
        return None
    want = "an integer in [0, 2**64) or None"
    if not is_integer(value):
        raise TypeError(f"{name} ({show(value)}) must be {want}, not {type(value).__name__}")
    if not 0 <= int(value) < MAX_SEED:
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    return int(value)


def flag(name: str, value: Any) -> bool:
    """``True`` or ``False`` (numpy bools too), never a truthy string or number."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} ({show(value)}) must be True or False, not "
                        f"{type(value).__name__}")
    return bool(value)


def string(name: str, value: Any, *, empty: bool = False) -> str:
    """A ``str`` (non-empty unless ``empty``; whitespace alone counts as empty)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} ({show(value)}) must be a string, not {type(value).__name__}")
    if not empty and not value.strip():
        raise ValueError(f"{name} ({show(value)}) must be a non-empty string")
    return str(value)


def choice(name: str, value: Any, valid: Iterable[Any]) -> Any:
    """One of ``valid`` (strings compared by value, anything else by identity, e.g. None)."""
    valid = list(valid)
    if not any(value is v or (isinstance(value, str) and isinstance(v, str) and value == v)
               for v in valid):
        raise ValueError(f"{name} {show(value)} is not one of {valid}")
    return value


def mapping(name: str, value: Any) -> dict:
    """``None`` (an empty dict) or a mapping with string keys, as a new ``dict``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} ({show(value)}) must be a dict or None, not "
                        f"{type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{name} has non-string key(s) {bad[:5]!r}: keys are argument names")
    return dict(value)


def check_keys(name: str, given: Iterable[str], valid: Iterable[str], hint: str = "") -> None:
    """Refuse keys of ``given`` that are not in ``valid``, listing the valid ones."""
    valid = sorted(valid)
    unknown = sorted(k for k in given if k not in valid)
    if unknown:
        raise UnknownKeyError(f"{name}: unknown key(s) {unknown}; valid keys are {valid}"
                              f"{hint}")


def _sequence(name: str, value: Any, what: str) -> list:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise TypeError(f"{name} ({show(value)}) must be {what}, not {type(value).__name__}")
    return list(value.tolist() if isinstance(value, np.ndarray) else value)


def number_range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False) -> tuple[float, float]:
    """A pair ``(low, high)`` of finite numbers with ``low <= high``, both in the bounds."""
    where = _bounds(lo, hi, lo_open, False)
    want = f"a pair (low, high) of finite numbers, low <= high{', ' + where if where else ''}"
    items = _sequence(name, value, want)
    if len(items) != 2:
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    try:
        pair = tuple(number(name, v, lo, hi, lo_open=lo_open) for v in items)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{name} ({show(value)}) must be {want}") from None
    if pair[0] > pair[1]:
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    return pair


def size_hw(name: str, value: Any, lo: int = 1) -> tuple[int, int]:
    """An integer side or a pair ``(height, width)`` of integers ``>= lo``."""
    want = f"an integer >= {lo} or a pair (height, width) of integers >= {lo}"
    if is_integer(value):
        side = integer(name, value, lo)
        return side, side
    items = _sequence(name, value, want)
    if len(items) != 2 or not all(is_integer(v) for v in items):
        raise (ValueError if len(items) != 2 else TypeError)(
            f"{name} ({show(value)}) must be {want}")
    if min(items) < lo:
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    return int(items[0]), int(items[1])


def colour(name: str, value: Any) -> tuple[int, int, int]:
    """An RGB colour: three integers in ``[0, 255]``."""
    want = "three integers (R, G, B) in [0, 255]"
    items = _sequence(name, value, want)
    if len(items) != 3 or not all(is_integer(v) for v in items):
        raise (ValueError if len(items) != 3 else TypeError)(
            f"{name} ({show(value)}) must be {want}")
    if not all(0 <= int(v) <= 255 for v in items):
        raise ValueError(f"{name} ({show(value)}) must be {want}")
    return int(items[0]), int(items[1]), int(items[2])


def string_list(name: str, value: Any, n: int | None = None, per: str = "images"
                ) -> list[str]:
    """A sequence of strings (not one string, which would be split into characters), ``n``
    of them (one per entry of ``per``) when ``n`` is given."""
    want = "a list of strings" + (f" (one per {per[:-1]})" if n is not None else "")
    items = _sequence(name, value, want)
    bad = [i for i, v in enumerate(items) if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name} must be {want}; item {bad[0]} is "
                        f"{type(items[bad[0]]).__name__} ({show(items[bad[0]])})")
    if n is not None and len(items) != n:
        raise ValueError(f"{name} has {len(items)} entries for {n} {per}; it must be {want}")
    return [str(v) for v in items]


def _as_array(value: Any) -> np.ndarray:
    """``value`` (a scalar, sequence, numpy array or torch tensor) as a numpy array; a ragged
    nesting becomes a 0-d object array (refused by its dtype)."""
    arr = value
    if type(value).__module__.startswith("torch"):
        arr = value.detach().cpu()
        if str(arr.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            arr = arr.float()
        arr = arr.numpy()
    try:
        return np.asarray(arr)
    except (TypeError, ValueError):  # ragged nesting
        return np.asarray(None)


def index_array(name: str, value: Any, n: int | None,
                shapes: Iterable[tuple[int, ...]] | None = None) -> np.ndarray:
    """Integers (a scalar, sequence or array; numpy / torch integers too, never floats, even
    integral ones, as numpy indexing refuses them, nor bools) all in ``[0, n)`` (``n`` None:
    all ``>= 0``), with one of ``shapes`` (any shape if None), as ``int64``."""
    want = f"integers in [0, {n})" if n is not None else "integers >= 0"
    arr = _as_array(value)
    if arr.size == 0 and arr.dtype.kind == "f":  # an empty list is float64 in numpy
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} ({show(value)}) must be {want}, not {arr.dtype} values")
    shapes = None if shapes is None else [tuple(s) for s in shapes]
    if shapes is not None and arr.shape not in shapes:
        raise ValueError(f"{name} ({show(value)}) has shape {arr.shape}; expected "
                         f"{' or '.join(map(str, shapes))}")
    if arr.size and (arr.min() < 0 or (n is not None and arr.max() >= n)):
        bad = arr[(arr < 0) | (arr >= (n if n is not None else np.inf))]
        raise ValueError(f"{name} ({show(value)}) must be {want}: "
                         f"{show(bad.reshape(-1)[:5].tolist())} out of range")
    return arr.astype(np.int64)


def box_array(name: str, value: Any, shapes: Iterable[tuple[int, ...]] | None = None,
              margin: float | None = None) -> np.ndarray:
    """cxcywh boxes ``(..., 4)``: real numbers (numpy / torch too, integers taken as numbers;
    never bools or strings), all finite, width and height > 0, with one of ``shapes`` (any
    ``(..., 4)`` if None). With ``margin``: boxes a view can be at, edges within
    ``[-margin, 1 + margin]`` of the image (to float32 rounding). As ``float32``."""
    want = "finite cxcywh boxes with width and height > 0"
    if margin is not None:
        want += f", edges within [{-margin:g}, {1 + margin:g}]"
    arr = _as_array(value)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} ({show(value)}) must be {want}, not {arr.dtype} values")
    shapes = None if shapes is None else [tuple(s) for s in shapes]
    if (shapes is not None and arr.shape not in shapes) or (
            shapes is None and (arr.ndim == 0 or arr.shape[-1] != 4)):
        expected = " or ".join(map(str, shapes)) if shapes is not None else "(..., 4)"
        raise ValueError(f"{name} has shape {arr.shape}; expected {expected} {want}")
    box = arr.astype(np.float32).reshape(-1, 4)
    bad = ~np.isfinite(box).all(1) | (box[:, 2:] <= 0).any(1)
    if margin is not None:
        tol = 1e-4
        lo, hi = box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2
        bad |= (lo < -margin - tol).any(1) | (hi > 1 + margin + tol).any(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{name} must be {want}; box(es) {rows[:5].tolist()} "
                         f"{'are' if len(rows) > 1 else 'is'} not: {show(box[rows[:3]].tolist())}")
    return arr.astype(np.float32)


def path_like(name: str, value: Any) -> str:
    """A non-empty ``str`` or ``os.PathLike`` (``""`` would mean the current folder)."""
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} ({show(value)}) must be a path (str or pathlib.Path), not "
                        f"{type(value).__name__}")
    text = os.fspath(value)
    if isinstance(text, bytes) or not text.strip():
        raise ValueError(f"{name} ({show(value)}) must be a non-empty path")
    return text
