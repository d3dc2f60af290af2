"""COCO-format annotation files, read as plain JSON (no ``pycocotools``).

Why plain JSON: we need two small things from the files, each image's first caption and its
object boxes with category names, which are a dictionary walk; ``pycocotools`` adds a
compiled dependency (and a C build on some platforms) for mask and evaluation code we never
call. The layouts read are COCO's own:

``captions_*.json``::

    {"images": [{"id": 1, "file_name": "a/b.jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "a dog on a sofa"}, ...]}

``instances_*.json``::

    {"images": [{"id": 1, "file_name": "a/b.jpg", "width": 640, "height": 480}, ...],
     "annotations": [{"image_id": 1, "bbox": [x, y, w, h], "category_id": 18,
                      "iscrowd": 0}, ...],
     "categories": [{"id": 18, "name": "dog"}, ...]}

Boxes are COCO's ``[x, y, width, height]`` in pixels of the annotated image (its ``width`` /
``height`` entry; the file's own size when the entry lacks them), turned into cxcywh in the
image's normalised coordinates, so resizing on load changes nothing. Crowd regions
(``iscrowd: 1``) are groups, not objects, and are left out, as are boxes of zero width or
height; each leaves a count in one warning. Category ids become contiguous label indices in
increasing id order (COCO's 80 classes have ids 1..90 with gaps); ``class_names`` lists their
names. Files are UTF-8 JSON (a byte-order mark is allowed); file names are normalised
(``./a/b.png`` -> ``a/b.png``, backslashes -> ``/``). Images are matched to the entries by
their path relative to the folder, else by their file name alone when that name is unique in
the file (:func:`match_names`).
"""

from __future__ import annotations

import functools
import json
import posixpath
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import _checks as check

__all__ = ["CocoInstances", "match_names", "parse_coco_instances", "read_coco_captions",
           "read_coco_instances"]


def _load_json(path: Path, what: str, layout: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} file {path} is not UTF-8 text (byte {err.start}: "
                         f"{err.reason}); JSON must be UTF-8: re-save it as UTF-8") from err
    except OSError as err:
        raise ValueError(f"{what} file {path} could not be read ({type(err).__name__}: "
                         f"{err})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {path} is not valid JSON ({err}); {layout}") from err


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
    data = _load_json(path, "captions", layout)
    names = {k: img["file_name"] for k, img in _image_names(path, data, "captions",
                                                            layout).items()}
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


def _image_names(path: Path, data: Any, what: str, layout: str) -> dict[Any, dict]:
    """``{id: image entry}`` with the file name normalised, each entry checked."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations")):
        raise ValueError(f"{what} file {path} could not be read as COCO {what}: its top "
                         f"level is {_brief(data)}; {layout}")
    out: dict[Any, dict] = {}
    for i, img in enumerate(data["images"]):
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(img, dict) or not _is_id(img.get("id")) or not isinstance(
                file_name, str) or not file_name.strip():
            raise ValueError(f"{what} file {path}: images[{i}] is {_brief(img)}; each image "
                             "needs an integer or string 'id' and a non-empty string "
                             f"'file_name' ({layout})")
        out[img["id"]] = {**img, "file_name": _coco_name(file_name)}
    return out


@dataclass
class CocoInstances:
    """What :func:`read_coco_instances` returns.

    class_names: category names, in increasing category id (label ``k`` is ``class_names[k]``).
    boxes: ``{file_name: (K, 4) float32}`` cxcywh in the image's normalised coordinates, or
        ``(K, 4)`` pixel ``[x, y, w, h]`` for images without ``width`` / ``height`` (listed in
        ``pixel_boxes``, normalised by the caller from the file's size).
    labels: ``{file_name: (K,) int64}`` indices into ``class_names``.
    pixel_boxes: file names whose boxes are still in pixels.
    dropped: ``{"crowd": n, "empty box": n, "unknown category": n}`` annotations left out.
    """

    class_names: list[str]
    boxes: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    pixel_boxes: set[str]
    dropped: dict[str, int]

    def for_image(self, name: str, size_hw: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``(K, 4)`` float32 cxcywh normalised and labels ``(K,)`` int64 of ``name``
        (none if it has no annotation); ``size_hw`` of the file normalises pixel boxes."""
        if name not in self.boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        b = self.boxes[name]
        if name in self.pixel_boxes:
            if size_hw is None:
                raise ValueError(f"instances: image {name!r} has no width / height; pass its "
                                 "size to normalise its boxes")
            b = _normalise(b, *size_hw)
        return b, self.labels[name]


def _normalise(xywh: np.ndarray, height: float, width: float) -> np.ndarray:
    """COCO ``[x, y, w, h]`` pixels -> cxcywh in normalised coordinates ``(K, 4)`` float32."""
    x, y, w, h = np.asarray(xywh, np.float64).reshape(-1, 4).T
    return np.stack([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height],
                    -1).astype(np.float32)


def read_coco_instances(path: str | Path) -> CocoInstances:
    """:func:`parse_coco_instances`, cached per process by the file's path, size and
    modification time: COCO's ``instances_train2017.json`` is 450 MB of JSON, and one run reads
    it for the training images and for each probe split."""
    path = Path(check.path_like("instances", path))
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        return parse_coco_instances(path)  # the parser names the unreadable file
    return _cached_instances(key)


@functools.lru_cache(maxsize=4)
def _cached_instances(key: tuple[str, int, int]) -> CocoInstances:
    return parse_coco_instances(key[0])


def parse_coco_instances(path: str | Path) -> CocoInstances:
    """A COCO ``instances_*.json`` -> boxes and labels per file name (the module docstring
    gives the layout and the rules: crowd regions and empty boxes are left out).

    Raises ValueError naming the file and the entry for anything else: unreadable or
    non-UTF-8 bytes, bad JSON, a missing key, a box that is not 4 finite numbers, a category
    without an integer id and a string name, an image with a bad width / height.
    """
    path = Path(check.path_like("instances", path))
    layout = ("expected {'images': [{'id', 'file_name', 'width', 'height'}], "
              "'annotations': [{'image_id', 'bbox': [x, y, w, h], 'category_id'}], "
              "'categories': [{'id', 'name'}]}")
    data = _load_json(path, "instances", layout)
    images = _image_names(path, data, "instances", layout)
    cats = data.get("categories")
    if not isinstance(cats, list):
        raise ValueError(f"instances file {path} has no 'categories' list; {layout}")
    names: dict[int, str] = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not check._is_integer(c.get("id")) or not isinstance(
                c.get("name"), str):
            raise ValueError(f"instances file {path}: categories[{i}] is {_brief(c)}; each "
                             "category needs an integer 'id' and a string 'name'")
        names[int(c["id"])] = c["name"]
    order = sorted(names)
    index = {cid: k for k, cid in enumerate(order)}
    sizes: dict[Any, tuple[float, float] | None] = {}
    for key, img in images.items():
        w, h = img.get("width"), img.get("height")
        if w is None and h is None:
            sizes[key] = None
            continue
        if not all(check._is_real(v) and np.isfinite(v) and v > 0 for v in (w, h)):
            raise ValueError(f"instances file {path}: image {img['file_name']!r} has width "
                             f"{w!r} and height {h!r}; both must be positive numbers (or both "
                             "absent: then the file's own size is used)")
        sizes[key] = (float(h), float(w))
    boxes: dict[str, list] = {}
    labels: dict[str, list] = {}
    dropped = Counter({"crowd": 0, "empty box": 0, "unknown category": 0})
    for j, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or not isinstance(
                bbox, list) or len(bbox) != 4 or not all(
                check._is_real(v) and np.isfinite(v) for v in bbox) or not check._is_integer(
                ann.get("category_id")):
            raise ValueError(f"instances file {path}: annotations[{j}] is {_brief(ann)}; each "
                             "annotation needs an 'image_id', a 'bbox' of 4 finite numbers "
                             f"[x, y, w, h] (pixels) and an integer 'category_id' ({layout})")
        img = images.get(ann["image_id"])
        if img is None:
            continue
        if ann.get("iscrowd", 0):
            dropped["crowd"] += 1
        elif bbox[2] <= 0 or bbox[3] <= 0:
            dropped["empty box"] += 1
        elif int(ann["category_id"]) not in index:
            dropped["unknown category"] += 1
        else:
            boxes.setdefault(img["file_name"], []).append(bbox)
            labels.setdefault(img["file_name"], []).append(index[int(ann["category_id"])])
    out_boxes, pixel = {}, set()
    by_name = {img["file_name"]: sizes[key] for key, img in images.items()}
    for name, bs in boxes.items():
        size = by_name[name]
        if size is None:
            out_boxes[name] = np.asarray(bs, np.float32).reshape(-1, 4)
            pixel.add(name)
        else:
            out_boxes[name] = _normalise(np.asarray(bs), *size)
    return CocoInstances(
        class_names=[names[c] for c in order], boxes=out_boxes,
        labels={n: np.asarray(v, np.int64) for n, v in labels.items()}, pixel_boxes=pixel,
        dropped=dict(dropped))


def match_names(files: Sequence[str], entries: dict[str, Any]) -> tuple[list[Any | None], int]:
    """For each relative path in ``files``, its entry in ``entries`` (keyed by normalised file
    name): by the whole relative path, else by the file name alone when that name is unique
    among the entries; None when neither matches. Returns the matches and how many are None."""
    counts = Counter(posixpath.basename(name) for name in entries)
    by_base = {posixpath.basename(n): v for n, v in entries.items()
               if counts[posixpath.basename(n)] == 1}
    out = [entries[f] if f in entries else by_base.get(posixpath.basename(f)) for f in files]
    return out, sum(1 for v in out if v is None)


def warn_dropped(dropped: dict[str, int], path: Any, warn: Callable[[str], None] | None = None
                 ) -> None:
    """One warning counting the annotations :func:`read_coco_instances` left out."""
    parts = [f"{n} {k}" for k, n in dropped.items() if n]
    if parts:
        text = (f"instances file {path}: left out {', '.join(parts)} annotation(s) (crowd "
                "regions are groups, not objects; boxes need width and height > 0)")
        (warn or (lambda t: warnings.warn(t, stacklevel=3)))(text)
