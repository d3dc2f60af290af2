"""Decoding with a memory bound: what every file-backed source (folders, shards, videos) uses.

- :func:`fit_size`: the size an image takes after resizing on load so that its longer side
  is at most ``max_side`` (aspect kept; never enlarged).
- :func:`check_budget`: the RAM a set of images will take once decoded (the RGB arrays of the
  dataset plus the crop kernel's RGBA pyramid, :data:`BYTES_PER_PIXEL`), estimated from sizes
  known before decoding (image headers, video stream metadata), refused with the figure and the
  fix when it is over the budget.
- :func:`decode_image`: one file or bytes -> ``(h, w, 3)`` uint8, resized on load (a JPEG is
  decoded at a reduced DCT scale first, ``Image.draft``, so a large photo never needs its
  full-size buffer).
- :func:`header_size`: an image's ``(height, width)`` from its header, without decoding.
- :func:`decode_many`: :func:`decode_image` over many files, in worker processes if asked.

Budget: ``memory_budget`` in GiB; ``None`` = half the machine's physical RAM.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import checks as check

__all__ = [
    "BYTES_PER_PIXEL",
    "DEFAULT_MAX_SIDE",
    "budget_bytes",
    "check_budget",
    "check_max_side",
    "check_pixels",
    "decode_image",
    "decode_many",
    "fit_size",
    "header_size",
]

DEFAULT_MAX_SIDE = 256  # pre-training views are 64-224 px: 256 keeps zoomed-in views sharp
# RAM per pixel of a decoded image: its RGB array (3 bytes) in the dataset plus the crop
# kernel's RGBA int32 copy (4 bytes) with its 2x pyramid (x 4/3): see views.ImageBank.
BYTES_PER_PIXEL = 3 + 4 * 4 / 3


def check_max_side(value: Any) -> int | None:
    """``max_side``: an integer >= 8, or None / 0 for full size."""
    if value is None or (check.is_integer(value) and int(value) == 0):
        return None
    return check.integer("max_side", value, 8)


def fit_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """``(h, w)`` after resizing ``(height, width)`` so that ``max(h, w) <= max_side`` (aspect
    kept, sides >= 1, never enlarged; ``None`` keeps the size): the size :func:`decode_image`
    returns (a JPEG decoded at a reduced DCT scale may differ by a pixel of rounding)."""
    if max_side is None or max(height, width) <= max_side:
        return int(height), int(width)
    scale = max_side / max(height, width)
    if width >= height:
        return max(1, round(height * scale)), max_side
    return max_side, max(1, round(width * scale))


def budget_bytes(memory_budget: float | None) -> int:
    """The budget in bytes: ``memory_budget`` GiB (> 0), or half the physical RAM if None."""
    if memory_budget is None:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):  # not POSIX: no bound we can know
            return 2**62
    return int(check.number("memory_budget", memory_budget, 0, lo_open=True) * 2**30)


def check_budget(sizes: Sequence[tuple[int, int]], memory_budget: float | None, what: str,
                 fix: str = "") -> int:
    """Refuse when images of ``sizes`` (``(h, w)`` after :func:`fit_size`) need more RAM than
    the budget. Returns the estimate in bytes. The error gives the estimate, the budget and the
    fixes: a smaller ``max_side``, fewer images, a larger ``memory_budget``, or streaming
    shards (``fix`` adds the source's own)."""
    pixels = sum(int(h) * int(w) for h, w in sizes)
    return check_pixels(len(sizes), pixels, memory_budget, what, fix)


def check_pixels(count: int, pixels: int, memory_budget: float | None, what: str,
                 fix: str = "", fixes: str | None = None) -> int:
    """:func:`check_budget` for ``count`` images of ``pixels`` pixels in all (no list of
    sizes: a count typed by mistake, say a billion images, is refused at once). ``fixes``
    replaces the usual list of fixes (``fix`` adds to it). Returns the estimate in bytes;
    raises MemoryError with the estimate, the budget and the fixes."""
    need = int(math.ceil(int(pixels) * BYTES_PER_PIXEL))
    have = budget_bytes(memory_budget)
    if need > have:
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        if fixes is None:
            fixes = ("a smaller max_side (--max-side), fewer images (n / --dataset-size), a "
                     "larger memory_budget (--memory-budget, GiB), or stream the images from "
                     "shards (python -m imgmdp_env.datasets.shards)")
        raise MemoryError(
            f"{what}: {count} image(s) of {pixels / max(count, 1):.0f} pixels on "
            f"average would take about {gib(need)} in RAM once decoded ({BYTES_PER_PIXEL:.2f} "
            f"bytes a pixel: the RGB array and the crop kernel's pyramid), over the memory "
            f"budget of {gib(have)}. Fix: {fixes}{fix}")
    return need


def header_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file read from its header (no pixel is decoded), after
    its EXIF orientation (a 90-degree turn swaps the sides)."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        try:
            turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        except Exception:  # a broken EXIF block: decoding will report the file if it matters
            turned = False
    return (w, h) if turned else (h, w)


def decode_image(source: str | Path | bytes, max_side: int | None) -> np.ndarray:
    """One image file (path or its bytes) -> ``(h, w, 3)`` uint8, EXIF orientation applied,
    resized so that ``max(h, w) <= max_side`` (area-averaging, Pillow's ``reduce`` then
    bicubic; ``None``: full size). Modes are converted by
    :func:`imgmdp_env.datasets.arrays.pil_to_rgb`. Raises on anything PIL cannot fully
    decode (truncated data fails here, not later)."""
    from PIL import Image, ImageOps

    from imgmdp_env.datasets.arrays import pil_to_rgb

    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with Image.open(fp) as img:
        if max_side is not None and img.format == "JPEG":
            w, h = img.size
            img.draft("RGB", (max(1, w * max_side // max(w, h)),
                              max(1, h * max_side // max(w, h))))
        img.load()
        img = ImageOps.exif_transpose(img) or img
        if max_side is not None and max(img.size) > max_side:
            h, w = fit_size(img.size[1], img.size[0], max_side)
            if img.mode not in ("RGB", "RGBA", "L", "LA"):
                img = img.convert("RGBA" if "transparency" in img.info or "A" in img.mode
                                  else "RGB")
            img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=2.0)
        return pil_to_rgb(img)


def _decode_chunk(args: tuple[list[str], int | None]) -> list[np.ndarray | str]:
    paths, max_side = args
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            out.append(decode_image(p, max_side))
        except Exception as err:  # PIL raises many exception types for corrupt files
            out.append(f"{type(err).__name__}: {err}")
    return out


def decode_many(paths: Sequence[str | Path], max_side: int | None, workers: int = 1
                ) -> list[np.ndarray | str]:
    """:func:`decode_image` of every path, in order: an array, or the error text for a file
    that could not be decoded. workers: processes (1 = in this process; more: a forked pool,
    each worker decoding a few contiguous chunks: decoding is the slow part of loading a
    folder)."""
    workers = check.integer("workers", workers, 1)
    paths = [os.fspath(p) for p in paths]
    if workers == 1 or len(paths) < 2 * workers:
        return _decode_chunk((paths, max_side))
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    per = math.ceil(len(paths) / (4 * workers))  # a few chunks per worker: balanced, few pickles
    chunks = [(paths[i:i + per], max_side) for i in range(0, len(paths), per)]
    # fork: the workers only run PIL and numpy (never torch or OpenMP), and start at once;
    # spawn would re-import the package (and torch) in every worker
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
        return [x for part in pool.map(_decode_chunk, chunks) for x in part]
