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
image's normalised coordinates, so resizing on load changes nothing. A box must lie inside its
image (within :data:`BOX_SLACK` pixel, then clipped), and an entry's ``width`` / ``height``
must be the image file's own size (else the boxes would be misplaced): both are refused, never
guessed. Crowd regions (``iscrowd: 1``) are groups, not objects, and are left out, as are boxes
of zero width or height; each leaves a count in one warning. Category ids become contiguous
label indices in increasing id order (COCO's 80 classes have ids 1..90 with gaps);
``class_names`` lists their names. Files are UTF-8 JSON (a byte-order mark is allowed); file
names are normalised (``./a/b.png`` -> ``a/b.png``, backslashes -> ``/``).

Every entry is checked, and anything that would give silently wrong data is refused with the
file, the entry and what is valid: an image id, file name, category id or category name given
twice, an annotation of an image or category the file does not list, a negative box size.

Images are matched to the entries by their path relative to the folder, else (when no image
matches so) by the end of their path, never across folders (:func:`match_names`).
"""

from __future__ import annotations

import functools
import json
import posixpath
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import checks as check

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
    """A COCO-style captions JSON -> ``{file_name: its first non-blank caption}`` for every
    image the file lists, in file order.

    The file is UTF-8 JSON (a byte-order mark is allowed); file names are normalised
    (``./a/b.png`` -> ``a/b.png``, backslashes -> ``/``). Captions are stripped; blank ones
    (empty or whitespace) are passed over, and an image with no other gets ``""`` (one warning
    counts them). Raises ValueError naming the file and the entry for anything else:
    unreadable or non-UTF-8 bytes, bad JSON, a missing key, a caption / file name that is not a
    string (never stringified), an image id or file name listed twice, a caption of an image id
    the file does not list, or a file without a single non-blank caption.
    """
    path = Path(check.path_like("captions", path))
    layout = ("expected {'images': [{'id', 'file_name'}], "
              "'annotations': [{'image_id', 'caption'}]}")
    data = _load_json(path, "captions", layout)
    images = _image_names(path, data, "captions", layout)
    firsts: dict[str, str] = {}
    blank = 0
    for j, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or not isinstance(
                ann.get("caption"), str):
            raise ValueError(f"captions file {path}: annotations[{j}] is {_brief(ann)}; each "
                             "annotation needs an integer or string 'image_id' and a string "
                             f"'caption' ({layout})")
        name = _listed(path, "captions", images, ann["image_id"], j)["file_name"]
        text = ann["caption"].strip()
        if not text:
            blank += 1
        elif name not in firsts:
            firsts[name] = text
    names = [img["file_name"] for img in images.values()]
    if not firsts:
        n = len(data["annotations"])
        raise ValueError(f"captions file {path} holds no caption to use: "
                         + (f"all {n} of its captions are blank (empty or whitespace)" if n
                            else "its 'annotations' list is empty")
                         + f" for its {len(names)} image(s); give each image a text caption "
                         f"({layout})")
    missing = [n for n in names if n not in firsts]
    if missing:
        warnings.warn(f"captions file {path}: {len(missing)} of its {len(names)} image(s) have "
                      f"no non-blank caption ({blank} blank caption(s) passed over), e.g. "
                      f"{missing[:3]}; they get the empty caption \"\"", stacklevel=3)
    return {n: firsts.get(n, "") for n in names}


def _is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _image_names(path: Path, data: Any, what: str, layout: str) -> dict[Any, dict]:
    """``{id: image entry}`` with the file name normalised and ``"_index"`` its position in
    ``images``, each entry checked; an id or a (normalised) file name listed twice is
    refused."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations")):
        raise ValueError(f"{what} file {path} could not be read as COCO {what}: its top "
                         f"level is {_brief(data)}; {layout}")
    out: dict[Any, dict] = {}
    by_name: dict[str, int] = {}
    for i, img in enumerate(data["images"]):
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if not isinstance(img, dict) or not _is_id(img.get("id")) or not isinstance(
                file_name, str) or not file_name.strip():
            raise ValueError(f"{what} file {path}: images[{i}] is {_brief(img)}; each image "
                             "needs an integer or string 'id' and a non-empty string "
                             f"'file_name' ({layout})")
        if img["id"] in out:
            first = out[img["id"]]
            raise ValueError(f"{what} file {path}: images[{i}] ({file_name!r}) has id "
                             f"{img['id']!r}, already the id of images[{first['_index']}] "
                             f"({first['file_name']!r}); each image needs its own id (the "
                             "annotations find their image by it)")
        name = _coco_name(file_name)
        if name in by_name:
            raise ValueError(f"{what} file {path}: images[{i}] ({file_name!r}) names the file "
                             f"{name!r}, already listed as images[{by_name[name]}]; each file "
                             "must be listed once (its annotations go with one id)")
        by_name[name] = i
        out[img["id"]] = {**img, "file_name": name, "_index": i}
    return out


def _listed(path: Path, what: str, images: dict[Any, dict], image_id: Any, j: int) -> dict:
    """The image entry of ``annotations[j]``'s ``image_id``; refused when no image has it."""
    if image_id in images:
        return images[image_id]
    ids = list(images)
    shown = ", ".join(map(repr, ids[:5])) + (", ..." if len(ids) > 5 else "")
    hint = ""
    if str(image_id) in {str(k) for k in ids}:
        hint = (f" (an id of type {type(image_id).__name__} never matches one of another "
                "type: 1 and '1' differ)")
    raise ValueError(f"{what} file {path}: annotations[{j}] has image_id {image_id!r}, the id "
                     f"of no entry of 'images' ({len(ids)} image(s), ids {shown or 'none'})"
                     f"{hint}; every annotation must point to a listed image")


# A box may stick out of its image by this many pixels (the rounding of annotation tools); it
# is clipped to the image. Anything further out is refused.
BOX_SLACK = 1.0


def _box_error(bbox: Sequence[float], height: float, width: float) -> str | None:
    """Why a COCO ``[x, y, w, h]`` box (w, h > 0) does not fit an image of that size, or
    None."""
    x, y, w, h = (float(v) for v in bbox)
    if (x < -BOX_SLACK or y < -BOX_SLACK or x + w > width + BOX_SLACK
            or y + h > height + BOX_SLACK or x >= width or y >= height or x + w <= 0
            or y + h <= 0):
        return (f"the bbox {list(bbox)} [x, y, w, h] is not inside the image of {width:g}x"
                f"{height:g} pixels (width x height): it needs 0 <= x, x + w <= {width:g}, "
                f"0 <= y, y + h <= {height:g} (within {BOX_SLACK:g} pixel)")
    return None


def _clip(xywh: np.ndarray, height: float, width: float) -> np.ndarray:
    """``[x, y, w, h]`` boxes cut to the image (they stick out by at most BOX_SLACK)."""
    x, y, w, h = np.asarray(xywh, np.float64).reshape(-1, 4).T
    x0, y0 = np.clip(x, 0, width), np.clip(y, 0, height)
    x1, y1 = np.clip(x + w, 0, width), np.clip(y + h, 0, height)
    return np.stack([x0, y0, x1 - x0, y1 - y0], -1)


@dataclass
class CocoInstances:
    """What :func:`read_coco_instances` returns.

    class_names: category names, in increasing category id (label ``k`` is ``class_names[k]``).
    boxes: ``{file_name: (K, 4) float32}`` for every image of the file (``K = 0`` for one
        without boxes): cxcywh in the image's normalised coordinates, or ``(K, 4)`` pixel
        ``[x, y, w, h]`` for images without ``width`` / ``height`` (listed in ``pixel_boxes``,
        normalised by :meth:`for_image` from the file's size).
    labels: ``{file_name: (K,) int64}`` indices into ``class_names``.
    pixel_boxes: file names whose boxes are still in pixels.
    dropped: ``{"crowd": n, "empty box": n}`` annotations left out.
    path: the instances file (for messages).
    sizes: ``{file_name: (height, width)}`` given by the file, None where it gives none.
    entries: ``{file_name: (i, [j, ...])}``: its ``images[i]`` and ``annotations[j]`` (for
        messages).
    """

    class_names: list[str]
    boxes: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    pixel_boxes: set[str]
    dropped: dict[str, int]
    path: str = ""
    sizes: dict[str, tuple[float, float] | None] = field(default_factory=dict, repr=False)
    entries: dict[str, tuple[int, list[int]]] = field(default_factory=dict, repr=False)

    def for_image(self, name: str, size_hw: tuple[int, int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``(K, 4)`` float32 cxcywh normalised and labels ``(K,)`` int64 of ``name``
        (none if it has no annotation). ``size_hw``: the ``(height, width)`` of the image file
        (after its EXIF orientation); it normalises pixel boxes, and a ``width`` / ``height``
        of the instances file that disagrees with it is refused (ValueError with both sizes:
        the boxes are pixels of the size the file gives, so they would be misplaced), as is a
        pixel box outside the image."""
        if name not in self.boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        i, anns = self.entries.get(name, (None, []))
        entry = f"image {name!r}" + (f" (images[{i}])" if i is not None else "")
        given = self.sizes.get(name)
        if size_hw is not None and given is not None and (
                abs(given[0] - size_hw[0]) > 0.5 or abs(given[1] - size_hw[1]) > 0.5):
            raise ValueError(
                f"instances file {self.path}: {entry} is {size_hw[1]}x{size_hw[0]} pixels "
                f"(width x height) in its image file but {given[1]:g}x{given[0]:g} in the "
                "instances file's 'width' / 'height'; its boxes are pixels of the size the "
                "instances file gives, so they would be misplaced. Fix that entry's width / "
                "height (or remove both: the image file's own size is then used), or its boxes "
                "too if the image was resized after it was annotated")
        b = self.boxes[name]
        if name in self.pixel_boxes:
            if size_hw is None:
                raise ValueError(f"instances: image {name!r} has no width / height; pass its "
                                 "size to normalise its boxes")
            for k, box in enumerate(b.tolist()):
                why = _box_error(box, *size_hw)
                if why is not None:
                    where = f"annotations[{anns[k]}]" if k < len(anns) else f"box {k}"
                    raise ValueError(f"instances file {self.path}: {where} of {entry}: {why} "
                                     "(its image file's size: the entry gives no width / "
                                     "height)")
            b = _normalise(_clip(b, *size_hw), *size_hw)
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


def _categories(path: Path, cats: Any, layout: str) -> dict[int, str]:
    """``{category id: name}``, each entry checked; an id or a name given twice is refused."""
    if not isinstance(cats, list):
        raise ValueError(f"instances file {path} has no 'categories' list; {layout}")
    names: dict[int, str] = {}
    where: dict[Any, int] = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not check.is_integer(c.get("id")) or not isinstance(
                c.get("name"), str) or not c["name"].strip():
            raise ValueError(f"instances file {path}: categories[{i}] is {_brief(c)}; each "
                             "category needs an integer 'id' and a non-empty string 'name'")
        cid, name = int(c["id"]), c["name"]
        if cid in names:
            raise ValueError(f"instances file {path}: categories[{i}] ({name!r}) has id {cid}, "
                             f"already the id of categories[{where[cid]}] ({names[cid]!r}); "
                             "each category needs its own id")
        if ("name", name) in where:
            raise ValueError(f"instances file {path}: categories[{i}] (id {cid}) is named "
                             f"{name!r}, as categories[{where['name', name]}] already is; "
                             "each category needs its own name (the class names must tell "
                             "the labels apart)")
        names[cid], where[cid], where["name", name] = name, i, i
    return names


def parse_coco_instances(path: str | Path) -> CocoInstances:
    """A COCO ``instances_*.json`` -> boxes and labels per file name (the module docstring
    gives the layout and the rules: crowd regions and empty boxes are left out).

    Raises ValueError naming the file and the entry for anything else: unreadable or
    non-UTF-8 bytes, bad JSON, a missing key, a box that is not 4 finite numbers, has a
    negative width / height or lies outside its image (by more than :data:`BOX_SLACK` pixel),
    a category without an integer id and a non-empty name, an image with a bad width / height,
    an image id, file name, category id or category name given twice, an annotation of an
    image id or category id the file does not list, an ``iscrowd`` other than 0 / 1, or a file
    without a single box to use.
    """
    path = Path(check.path_like("instances", path))
    layout = ("expected {'images': [{'id', 'file_name', 'width', 'height'}], "
              "'annotations': [{'image_id', 'bbox': [x, y, w, h], 'category_id'}], "
              "'categories': [{'id', 'name'}]}")
    data = _load_json(path, "instances", layout)
    images = _image_names(path, data, "instances", layout)
    names = _categories(path, data.get("categories"), layout)
    order = sorted(names)
    index = {cid: k for k, cid in enumerate(order)}
    sizes: dict[str, tuple[float, float] | None] = {}
    for img in images.values():
        w, h = img.get("width"), img.get("height")
        if w is None and h is None:
            sizes[img["file_name"]] = None
            continue
        if not all(check.is_real(v) and np.isfinite(v) and v > 0 for v in (w, h)):
            raise ValueError(f"instances file {path}: image {img['file_name']!r} "
                             f"(images[{img['_index']}]) has width {w!r} and height {h!r}; "
                             "both must be positive numbers (or both absent: then the file's "
                             "own size is used)")
        sizes[img["file_name"]] = (float(h), float(w))
    boxes: dict[str, list] = {img["file_name"]: [] for img in images.values()}
    labels: dict[str, list] = {name: [] for name in boxes}
    anns: dict[str, list[int]] = {name: [] for name in boxes}
    dropped = Counter({"crowd": 0, "empty box": 0})
    for j, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or not isinstance(
                bbox, list) or len(bbox) != 4 or not all(
                check.is_real(v) and np.isfinite(v) for v in bbox) or not check.is_integer(
                ann.get("category_id")):
            raise ValueError(f"instances file {path}: annotations[{j}] is {_brief(ann)}; each "
                             "annotation needs an 'image_id', a 'bbox' of 4 finite numbers "
                             f"[x, y, w, h] (pixels) and an integer 'category_id' ({layout})")
        img = _listed(path, "instances", images, ann["image_id"], j)
        name = img["file_name"]
        cid = int(ann["category_id"])
        if cid not in index:
            raise ValueError(f"instances file {path}: annotations[{j}] (image {name!r}) has "
                             f"category_id {cid}, the id of no entry of 'categories' (ids "
                             f"{order}); every annotation must name a listed category")
        crowd = ann.get("iscrowd", 0)
        if not (check.is_integer(crowd) or isinstance(crowd, bool)) or crowd not in (0, 1):
            raise ValueError(f"instances file {path}: annotations[{j}] (image {name!r}) has "
                             f"iscrowd {_brief(crowd)}; it must be 0 (an object) or 1 (a crowd "
                             "region)")
        if bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(f"instances file {path}: annotations[{j}] (image {name!r}) has "
                             f"bbox {bbox}, of negative width or height; COCO boxes are "
                             "[x, y, width, height] in pixels with width, height >= 0 (not "
                             "[x1, y1, x2, y2])")
        if crowd:
            dropped["crowd"] += 1
        elif bbox[2] == 0 or bbox[3] == 0:
            dropped["empty box"] += 1
        else:
            size = sizes[name]
            why = None if size is None else _box_error(bbox, *size)
            if why is not None:
                raise ValueError(f"instances file {path}: annotations[{j}] of image {name!r} "
                                 f"(images[{img['_index']}]): {why} (the entry's width / "
                                 "height)")
            boxes[name].append(bbox)
            labels[name].append(index[cid])
            anns[name].append(j)
    if not any(boxes.values()):
        parts = [f"{n} {k}" for k, n in dropped.items() if n]
        raise ValueError(f"instances file {path} holds no object box to use: "
                         f"{len(data['annotations'])} annotation(s) for {len(images)} image(s)"
                         + (f", of which {', '.join(parts)} are left out" if parts else "")
                         + f"; {layout}")
    out_boxes, pixel = {}, set()
    for name, bs in boxes.items():
        size = sizes[name]
        if size is None:
            out_boxes[name] = np.asarray(bs, np.float32).reshape(-1, 4)
            pixel.add(name)
        else:
            out_boxes[name] = _normalise(_clip(np.asarray(bs, np.float64).reshape(-1, 4),
                                               *size), *size)
    return CocoInstances(
        class_names=[names[c] for c in order], boxes=out_boxes,
        labels={n: np.asarray(v, np.int64) for n, v in labels.items()}, pixel_boxes=pixel,
        dropped=dict(dropped), path=str(path), sizes=sizes,
        entries={img["file_name"]: (img["_index"], anns[img["file_name"]])
                 for img in images.values()})


def _tail_matches(a: str, b: str) -> bool:
    """Whether the shorter of two normalised paths is the end of the longer, folder by folder
    (``x.png`` and ``train/x.png`` do; ``a/x.png`` and ``b/x.png`` do not)."""
    pa, pb = a.split("/"), b.split("/")
    k = min(len(pa), len(pb))
    return pa[-k:] == pb[-k:]


def match_names(files: Sequence[str], entries: dict[str, Any]) -> tuple[list[Any | None], int]:
    """For each relative path in ``files``, its entry in ``entries`` (keyed by normalised file
    name), or None; returns the matches and how many are None.

    By the whole relative path. Only when no file matches that way (the file's names are
    relative to another folder: bare COCO names for a folder of sub-folders, or names with a
    leading folder for that folder itself) by the end of the path, folder by folder
    (``x.png`` <-> ``train/x.png``, never ``a/x.png`` <-> ``b/x.png``), and only where the
    file name is unique both among the entries and among the files: a file never takes the
    entry of a file in another folder, and no entry goes to two files."""
    files = list(files)
    out: list[Any | None] = [entries.get(f) for f in files]
    if any(f in entries for f in files):
        return out, sum(1 for f in files if f not in entries)
    base = posixpath.basename
    in_entries = Counter(base(n) for n in entries)
    in_files = Counter(base(f) for f in files)
    by_base = {base(n): n for n in entries if in_entries[base(n)] == 1}
    for k, f in enumerate(files):
        name = by_base.get(base(f))
        if name is not None and in_files[base(f)] == 1 and _tail_matches(f, name):
            out[k] = entries[name]
    return out, sum(1 for v in out if v is None)


def warn_dropped(dropped: dict[str, int], path: Any, warn: Callable[[str], None] | None = None
                 ) -> None:
    """One warning counting the annotations :func:`read_coco_instances` left out."""
    parts = [f"{n} {k}" for k, n in dropped.items() if n]
    if parts:
        text = (f"instances file {path}: left out {', '.join(parts)} annotation(s) (crowd "
                "regions are groups, not objects; boxes need width and height > 0)")
        (warn or (lambda t: warnings.warn(t, stacklevel=3)))(text)
