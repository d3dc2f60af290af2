"""A folder of image files (searched recursively), with optional COCO-style captions.

Files are read in sorted order of their path relative to the folder, decoded once with PIL and
held in RAM at full size (the crop kernel takes any size, smaller than a view included). EXIF
orientation is applied; modes are converted by :func:`imgmdp_env.datasets.arrays.pil_to_rgb`
(alpha composited onto black). Symlinked sub-folders are followed. Unreadable or corrupt files,
folders that cannot be listed and dangling links are skipped and reported together in one
warning: nothing is dropped silently.

Captions file (COCO ``captions_*.json`` layout)::

    {"images": [{"id": 1, "file_name": "a/b.jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "a dog on a sofa"}, ...]}

Each image takes the first caption listed for it, matched by its path relative to the folder
(file names are normalised: ``./a/b.jpg`` is ``a/b.jpg``), else by its file name alone when
that name is unique in the captions file.
"""

from __future__ import annotations

import json
import os
import posixpath
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import _checks as check
from imgmdp_env.datasets.arrays import pil_to_rgb
from imgmdp_env.datasets.base import ImageDataset

__all__ = ["EXTENSIONS", "load_folder", "read_coco_captions"]

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _decode(path: Path) -> np.ndarray:
    """One file -> ``(H, W, 3)`` uint8 (raises on anything PIL cannot fully decode)."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()  # decode now, so truncated data fails here and not later
        img = ImageOps.exif_transpose(img) or img
        return pil_to_rgb(img)


def _coco_name(name: str) -> str:
    """``./a//b.png``, ``a\\b.png`` -> ``a/b.png``: file names compare as normalised relative
    POSIX paths."""
    return posixpath.normpath(name.replace("\\", "/"))


def read_coco_captions(path: str | Path) -> dict[str, str]:
    """A COCO-style captions JSON -> ``{file_name: first caption}`` in file order.

    The file is UTF-8 JSON (a byte-order mark is allowed); file names are normalised
    (``./a/b.png`` -> ``a/b.png``, backslashes -> ``/``). Raises ValueError naming the file and
    the entry for anything else: unreadable or non-UTF-8 bytes, bad JSON, a missing key, or a
    caption / file name that is not a string (never stringified).
    """
    path = Path(check.path_like("captions", path))
    layout = ("expected {'images': [{'id', 'file_name'}], "
              "'annotations': [{'image_id', 'caption'}]}")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ValueError(f"captions file {path} is not UTF-8 text (byte {err.start}: "
                         f"{err.reason}); JSON must be UTF-8: re-save it as UTF-8") from err
    except OSError as err:
        raise ValueError(f"captions file {path} could not be read ({type(err).__name__}: "
                         f"{err})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"captions file {path} is not valid JSON ({err}); {layout}") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations")):
        raise ValueError(f"captions file {path} could not be read as COCO captions: its top "
                         f"level is {_brief(data)}; {layout}")
    names: dict[Any, str] = {}
    for i, img in enumerate(data["images"]):
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(img, dict) or not _is_id(img.get("id")) or not isinstance(
                file_name, str) or not file_name.strip():
            raise ValueError(f"captions file {path}: images[{i}] is {_brief(img)}; each image "
                             "needs an integer or string 'id' and a non-empty string "
                             f"'file_name' ({layout})")
        names[img["id"]] = _coco_name(file_name)
    firsts: dict[str, str] = {}
    for j, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or not isinstance(
                ann.get("caption"), str):
            raise ValueError(f"captions file {path}: annotations[{j}] is {_brief(ann)}; each "
                             "annotation needs an integer or string 'image_id' and a string "
                             f"'caption' ({layout})")
        name = names.get(ann["image_id"])
        if name is not None and name not in firsts:
            firsts[name] = ann["caption"].strip()
    return firsts


def _is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _walk(root: Path, exts: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """Image files under ``root``, following symlinked folders (each real folder once, so a
    link loop ends), and the problems met: unlistable folders and dangling links."""
    files: list[Path] = []
    problems: list[str] = []
    seen: set[str] = set()

    def rel(p: str | Path) -> str:
        return Path(p).relative_to(root).as_posix()

    def unlistable(err: OSError) -> None:
        problems.append(f"folder {rel(err.filename) if err.filename else '?'}/ "
                        f"({type(err).__name__}: {err.strerror or err})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a second path to a folder already read (or a link loop)
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath, name)
            if p.is_symlink() and not p.exists():
                problems.append(f"{rel(p)} (dangling link to {os.readlink(p)})")
            elif p.suffix.lower() in exts and p.is_file():
                files.append(p)
    return sorted(files, key=rel), problems


def load_folder(
    path: str | Path,
    captions: str | Path | None = None,
    extensions: tuple[str, ...] = EXTENSIONS,
) -> ImageDataset:
    """Every image file under ``path`` (recursive, sorted) as an :class:`ImageDataset`.

    Symlinked sub-folders are followed (each real folder is read once). Files that cannot be
    decoded, folders that cannot be listed and dangling links are reported together in one
    warning, never dropped silently. captions: an optional COCO-style captions JSON (see the
    module docstring); images without a caption get ``""`` and one warning counts them.
    extensions: file suffixes to read, case-insensitive (a tuple, e.g. ``(".png",)``).
    Returns images ``(H_i, W_i, 3)`` uint8 at their own sizes.
    Raises ValueError for a missing or empty folder, or when no file could be decoded.
    """
    root = Path(check.path_like("path", path))
    if captions is not None:
        captions = check.path_like("captions", captions)
    exts = check.string_list("extensions", extensions)
    if not exts or not all(e.strip(". ") for e in exts):
        raise ValueError(f"extensions ({extensions!r}) must be a non-empty list of file "
                         "suffixes such as ('.png', '.jpg')")
    if not root.is_dir():
        raise ValueError(f"image folder {str(path)!r} does not exist or is not a folder")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts)
    files, problems = _walk(root, exts)
    if not files:
        detail = f" ({'; '.join(problems[:10])})" if problems else ""
        raise ValueError(f"image folder {str(path)!r} holds no files with extensions {exts} "
                         f"(searched recursively){detail}")
    images, kept, skipped = [], [], []
    for p in files:
        try:
            images.append(_decode(p))
            kept.append(p.relative_to(root).as_posix())
        except Exception as err:  # PIL raises many exception types for corrupt files
            skipped.append(f"{p.relative_to(root).as_posix()} ({type(err).__name__}: {err})")
    if skipped or problems:
        shown = skipped + problems
        text = "; ".join(shown[:10]) + ("; ..." if len(shown) > 10 else "")
        warnings.warn(f"load_folder: skipped {len(skipped)} unreadable file(s) of {len(files)} "
                      f"and {len(problems)} unreadable folder(s) or dangling link(s) in {root}: "
                      f"{text}", stacklevel=2)
    if not images:
        raise ValueError(f"image folder {str(path)!r}: none of its {len(files)} image file(s) "
                         "could be decoded (see the warning for why)")
    texts = None
    if captions is not None:
        firsts = read_coco_captions(captions)
        counts = Counter(Path(name).name for name in firsts)
        by_base = {Path(n).name: c for n, c in firsts.items() if counts[Path(n).name] == 1}
        texts = [firsts.get(rel, by_base.get(Path(rel).name, "")) for rel in kept]
        missing = sum(1 for rel in kept if rel not in firsts and Path(rel).name not in by_base)
        if missing:
            warnings.warn(f"load_folder: {missing} of {len(kept)} image(s) in {root} have no "
                          f"caption in {captions}; they get the empty caption \"\"",
                          stacklevel=2)
    return ImageDataset(images=images, captions=texts, name=root.name or str(root))
