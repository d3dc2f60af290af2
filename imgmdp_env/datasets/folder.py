"""A folder of image files (searched recursively), with optional COCO-style captions.

Files are read in sorted order of their path relative to the folder, decoded once with PIL and
held in RAM at full size (the crop kernel takes any size, smaller than a view included). EXIF
orientation is applied; modes are converted by :func:`imgmdp_env.datasets.arrays.pil_to_rgb`
(alpha composited onto black). Unreadable or corrupt files are skipped and reported together in
one warning.

Captions file (COCO ``captions_*.json`` layout)::

    {"images": [{"id": 1, "file_name": "a/b.jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "a dog on a sofa"}, ...]}

Each image takes the first caption listed for it, matched by its path relative to the folder,
else by its file name alone when that name is unique in the captions file.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

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


def read_coco_captions(path: str | Path) -> dict[str, str]:
    """A COCO-style captions JSON -> ``{file_name: first caption}`` in file order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {img["id"]: str(img["file_name"]) for img in data["images"]}
        firsts: dict[str, str] = {}
        for ann in data["annotations"]:
            name = names.get(ann["image_id"])
            if name is not None and name not in firsts:
                firsts[name] = str(ann["caption"]).strip()
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"captions file {path} could not be read as COCO captions ({type(err).__name__}: "
            f"{err}); expected {{'images': [{{'id', 'file_name'}}], "
            "'annotations': [{'image_id', 'caption'}]}"
        ) from err
    return firsts


def load_folder(
    path: str | Path,
    captions: str | Path | None = None,
    extensions: tuple[str, ...] = EXTENSIONS,
) -> ImageDataset:
    """Every image file under ``path`` (recursive, sorted) as an :class:`ImageDataset`.

    captions: an optional COCO-style captions JSON (see the module docstring); images without
    a caption get ``""`` and one warning counts them. extensions: file suffixes to read,
    case-insensitive. Returns images ``(H_i, W_i, 3)`` uint8 at their own sizes.
    Raises ValueError for a missing or empty folder, or when no file could be decoded.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"image folder {str(path)!r} does not exist or is not a folder")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    files = sorted((p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file()),
                   key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"image folder {str(path)!r} holds no files with extensions {exts} "
                         "(searched recursively)")
    images, kept, skipped = [], [], []
    for p in files:
        try:
            images.append(_decode(p))
            kept.append(p.relative_to(root).as_posix())
        except Exception as err:  # PIL raises many exception types for corrupt files
            skipped.append(f"{p.relative_to(root).as_posix()} ({type(err).__name__}: {err})")
    if skipped:
        shown = "; ".join(skipped[:10]) + ("; ..." if len(skipped) > 10 else "")
        warnings.warn(f"load_folder: skipped {len(skipped)} unreadable file(s) of {len(files)} "
                      f"in {root}: {shown}", stacklevel=2)
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
