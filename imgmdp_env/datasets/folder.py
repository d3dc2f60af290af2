"""A folder of image files (searched recursively), with optional COCO captions and boxes.

Files are read in sorted order of their path relative to the folder and decoded once with PIL,
resized on load so that their longer side is at most ``max_side`` (default 256; ``None``: full
size), after the RAM they will take has been estimated from their headers and checked against
``memory_budget`` (:mod:`imgmdp_env.datasets.decode`). EXIF orientation is applied; modes are
converted by :func:`imgmdp_env.datasets.arrays.pil_to_rgb` (alpha composited onto black).
Symlinked sub-folders are followed. Unreadable or corrupt files, folders that cannot be listed
and dangling links are skipped and reported together in one warning: nothing is dropped
silently. Video files (:data:`VIDEO_EXTENSIONS`) in an image folder
are skipped with a warning that names them: a video is its own dataset spec (the file, or a
folder holding only videos; :func:`imgmdp_env.datasets.video.is_video_spec`).

Class labels (``labels=``), torchvision's ``ImageFolder`` convention: the classes are the
sorted names of the top-level sub-folders (``root/cat/x.png``, ``root/dog/y.jpg``: classes
``["cat", "dog"]``), each image's label the index of the sub-folder it sits under.
``"auto"`` (default) applies it when the folder is laid out that way without doubt: every
image exactly one level under a sub-folder, at least 2 sub-folders, and no ``instances``
file; otherwise the images carry no labels (images at the top level beside such class
folders: a warning says so). ``"folders"`` applies it always (images at any depth under their
class folder, as torchvision); an image at the top level, or ``instances=`` (whose
categories are the class names), is then an error. ``"none"``: no labels. The classes come
from every image of the folder, before any split or ``n``, so the train and test splits share
one list.

Annotations (:mod:`imgmdp_env.datasets.coco`): ``captions=`` a COCO ``captions_*.json`` (each
image takes its first caption), ``instances=`` a COCO ``instances_*.json`` (object boxes and
category names). Images are matched by their path relative to the folder (``./a/b.jpg`` is
``a/b.jpg``); only when no image matches that way (the file was written from another root)
by the end of the path, and then only names unique both in the file and in the folder
(:func:`imgmdp_env.datasets.coco.match_names`), so ``sub/a.jpg`` never takes ``a.jpg``'s entry.

Splits: ``split="train"`` / ``"test"`` keep the images outside / inside a deterministic
held-out set (:func:`imgmdp_env.datasets.holdout.held_out`: a ``holdout`` fraction chosen by a
hash of each relative path, the same on every machine and for every seed); ``"all"`` keeps
every image. ``n`` then takes a seeded subset, before anything is decoded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets import decode
from imgmdp_env.datasets.base import ImageDataset
from imgmdp_env.datasets.coco import (
    match_names,
    read_coco_captions,
    read_coco_instances,
    warn_dropped,
)
from imgmdp_env.datasets.holdout import held_out

__all__ = ["EXTENSIONS", "LABEL_MODES", "SPLITS", "VIDEO_EXTENSIONS", "class_folders",
           "list_images", "load_folder", "read_coco_captions"]

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# video files: skipped (named) in an image folder; read as frames by imgmdp_env.datasets.video
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
SPLITS = ("all", "train", "test")
LABEL_MODES = ("auto", "folders", "none")


def _walk(root: Path, exts: tuple[str, ...], videos: list[Path] | None = None
          ) -> tuple[list[Path], list[str]]:
    """Image files under ``root``, following symlinked folders (each real folder once, so a
    link loop ends), and the problems met: unlistable folders and dangling links. Video files
    (not images here) are appended to ``videos`` when given."""
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
            elif videos is not None and p.suffix.lower() in VIDEO_EXTENSIONS:
                videos.append(p)
    return sorted(files, key=rel), problems


def _extensions(extensions: tuple[str, ...]) -> tuple[str, ...]:
    exts = check.string_list("extensions", extensions)
    if not exts or not all(e.strip(". ") for e in exts):
        raise ValueError(f"extensions ({extensions!r}) must be a non-empty list of file "
                         "suffixes such as ('.png', '.jpg')")
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts)


def list_images(path: str | Path, extensions: tuple[str, ...] = EXTENSIONS,
                videos: list[str] | None = None) -> tuple[list[str], list[str]]:
    """The image files under ``path`` (recursive, symlinked folders followed once) as sorted
    POSIX paths relative to it, and the problems met (unlistable folders, dangling links).
    videos: when a list, the video files met are appended to it (sorted relative paths)."""
    root = Path(check.path_like("path", path))
    if not root.is_dir():
        raise ValueError(f"image folder {str(path)!r} does not exist or is not a folder")
    found: list[Path] | None = None if videos is None else []
    files, problems = _walk(root, _extensions(extensions), found)
    if videos is not None:
        videos.extend(sorted(p.relative_to(root).as_posix() for p in found))
    return [p.relative_to(root).as_posix() for p in files], problems


def _shown(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def class_folders(names: list[str], labels: str = "auto", where: str = "image folder"
                  ) -> list[str] | None:
    """The class names of a folder's images by the class-subfolder convention (module
    docstring): the sorted top-level sub-folders holding images, or None when the images take
    no labels. names: the relative POSIX paths of every image of the folder (before any split,
    so that all splits share the classes). labels: one of :data:`LABEL_MODES`. Raises
    ValueError, naming images, for ``"folders"`` with images at the top level."""
    labels = check.choice("labels", labels, LABEL_MODES)
    if labels == "none":
        return None
    top = [x for x in names if "/" not in x]
    classes = sorted({x.split("/", 1)[0] for x in names if "/" in x})
    if labels == "folders":
        if top:
            raise ValueError(
                f"{where}: labels='folders' takes each image's class from the sub-folder it "
                f"sits under, but {len(top)} image(s) sit at the top level: {_shown(top)}; "
                "move them into a class folder (root/<class>/<image>) or pass labels='none'")
        return classes
    if len(classes) < 2 or any(x.count("/") != 1 for x in names if "/" in x):
        return None
    if top:
        warnings.warn(
            f"load_folder: {where} has {len(classes)} class folders ({_shown(classes)}) and "
            f"{len(top)} image(s) at the top level ({_shown(top)}): loaded without class "
            "labels; move those images into a class folder for labels (torchvision's "
            "ImageFolder layout), or pass labels='none' to silence this", stacklevel=3)
        return None
    return classes


def split_args(split: str, holdout: float, n: int | None, seed: int
               ) -> tuple[str, float, int | None, int]:
    """The split arguments checked: a split of :data:`SPLITS`, ``0 <= holdout < 1``, ``n``
    None or >= 1, a seed."""
    return (check.choice("split", split, SPLITS),
            check.number("holdout", holdout, 0, 1, hi_open=True),
            check.optional_integer("n", n, 1), check.seed("seed", seed) or 0)


def select(names: list[str], split: str, holdout: float, n: int | None, seed: int,
           what: str) -> list[str]:
    """The names of ``split`` (``"all"``, ``"train"``: outside the held-out set, ``"test"``:
    inside it), then at most ``n`` of them, a seeded subset kept in order."""
    split, holdout, n, seed = split_args(split, holdout, n, seed)
    if split != "all":
        if split == "test" and holdout == 0:
            raise ValueError(f"{what}: split='test' with holdout=0 holds no image; pass "
                             "holdout > 0 (e.g. 0.1) or a separate test folder")
        mask = held_out(names, holdout)
        names = [x for x, m in zip(names, mask, strict=True) if m == (split == "test")]
        if not names:
            raise ValueError(f"{what}: the {split} split is empty (holdout={holdout}); use "
                             "another holdout or a separate test folder")
    if n is not None and len(names) > n:
        pick = np.random.default_rng(seed).choice(len(names), n, replace=False)
        names = [names[i] for i in np.sort(pick)]
    return names


def load_folder(
    path: str | Path,
    captions: str | Path | None = None,
    instances: str | Path | None = None,
    extensions: tuple[str, ...] = EXTENSIONS,
    max_side: int | None = decode.DEFAULT_MAX_SIDE,
    memory_budget: float | None = None,
    workers: int = 1,
    split: str = "all",
    holdout: float = 0.1,
    n: int | None = None,
    seed: int = 0,
    labels: str = "auto",
) -> ImageDataset:
    """The image files under ``path`` (recursive, sorted) as an :class:`ImageDataset`.

    captions / instances: optional COCO ``captions_*.json`` / ``instances_*.json`` (module
    docstring); images without a caption get ``""``, images without boxes no objects, and one
    warning counts each. extensions: file suffixes to read, case-insensitive (a tuple).
    max_side: resize on load so that the longer side is at most this (None or 0: full size).
    memory_budget: GiB the decoded images may take (None: half the physical RAM); estimated
    from the headers before decoding, refused with the figure and the fixes (MemoryError).
    workers: decoding processes (1: this process). split / holdout / n / seed: which images
    (module docstring). labels: ``"auto"``, ``"folders"`` or ``"none"``: image labels from
    class sub-folders (module docstring). Returns images ``(H_i, W_i, 3)`` uint8; with
    ``instances``, object boxes ``(K_i, 4)`` float32 cxcywh normalised and object labels
    ``(K_i,)`` int64 indexing ``class_names`` (COCO categories in increasing id); with class
    folders, ``labels`` ``(N,)`` int64 indexing ``class_names`` (the sorted folder names).
    Raises ValueError for a missing or empty folder, when no file could be decoded, or for
    ``labels="folders"`` with top-level images or with ``instances``.
    """
    root = Path(check.path_like("path", path))
    captions = None if captions is None else check.path_like("captions", captions)
    instances = None if instances is None else check.path_like("instances", instances)
    max_side = decode.check_max_side(max_side)
    decode.budget_bytes(memory_budget)  # checks the value before any work
    workers = check.integer("workers", workers, 1)
    split_args(split, holdout, n, seed)  # before walking the folder
    labels = check.choice("labels", labels, LABEL_MODES)
    if labels == "folders" and instances is not None:
        raise ValueError("labels='folders' and instances= both name the classes (class "
                         "sub-folders vs COCO categories); pass one of them")
    videos: list[str] = []
    names, problems = list_images(root, extensions, videos)
    exts = _extensions(extensions)
    if videos:
        warnings.warn(
            f"load_folder: skipped {len(videos)} video file(s) in the image folder {root}: "
            f"{_shown(videos, 10)}; an image folder reads image files only. To train on "
            "video, pass the video file itself, or a folder holding only videos, as the "
            "dataset (e.g. --dataset clip.mp4 --frame-stride 30; needs pip install "
            "'imgmdp[video]')", stacklevel=2)
    if not names:
        detail = f" ({'; '.join(problems[:10])})" if problems else ""
        raise ValueError(f"image folder {str(path)!r} holds no files with extensions {exts} "
                         f"(searched recursively){detail}")
    classes = None if instances is not None else class_folders(
        names, labels, f"image folder {str(path)!r}")
    names = select(names, split, holdout, n, seed, f"image folder {str(path)!r}")
    ann = read_coco_instances(instances) if instances is not None else None
    firsts = read_coco_captions(captions) if captions is not None else None
    sizes, readable, skipped = [], [], []
    for rel in names:
        try:
            h, w = decode.header_size(root / rel)
        except Exception as err:  # PIL raises many exception types for corrupt files
            skipped.append(f"{rel} ({type(err).__name__}: {err})")
            continue
        sizes.append(decode.fit_size(h, w, max_side))
        readable.append((rel, (h, w)))
    if readable:
        decode.check_budget(sizes, memory_budget, f"image folder {str(path)!r}",
                            "; or a split / holdout")
    out = decode.decode_many([root / rel for rel, _ in readable], max_side, workers)
    images, kept = [], []
    for (rel, hw), img in zip(readable, out, strict=True):
        if isinstance(img, str):
            skipped.append(f"{rel} ({img})")
        else:
            images.append(img)
            kept.append((rel, hw))
    if skipped or problems:
        shown = skipped + problems
        text = "; ".join(shown[:10]) + ("; ..." if len(shown) > 10 else "")
        warnings.warn(f"load_folder: skipped {len(skipped)} unreadable file(s) of {len(names)} "
                      f"and {len(problems)} unreadable folder(s) or dangling link(s) in {root}: "
                      f"{text}", stacklevel=2)
    if not images:
        raise ValueError(f"image folder {str(path)!r}: none of its {len(names)} image file(s) "
                         "could be decoded (see the warning for why)")
    rels = [rel for rel, _ in kept]
    texts = None
    if firsts is not None:
        found, missing = match_names(rels, firsts)
        texts = [t if t is not None else "" for t in found]
        if missing:
            warnings.warn(f"load_folder: {missing} of {len(rels)} image(s) in {root} have no "
                          f"caption in {captions}; they get the empty caption \"\"",
                          stacklevel=2)
    boxes = object_labels = class_names = image_labels = None
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        image_labels = np.array([index[r.split("/", 1)[0]] for r in rels], np.int64)
        class_names = classes
    if ann is not None:
        warn_dropped(ann.dropped, instances, lambda t: warnings.warn(t, stacklevel=3))
        found, missing = match_names(rels, {k: k for k in ann.boxes})
        boxes, object_labels = [], []
        for (_, hw), key in zip(kept, found, strict=True):
            b, lab = ann.for_image(key, hw) if key is not None else ann.for_image("")
            boxes.append(b)
            object_labels.append(lab)
        class_names = ann.class_names
        if missing == len(rels):
            warnings.warn(f"load_folder: none of the {len(rels)} image(s) in {root} has a box "
                          f"in {instances} (are the file names those of this folder?)",
                          stacklevel=2)
        elif missing:
            warnings.warn(f"load_folder: {missing} of {len(rels)} image(s) in {root} have no "
                          f"object box in {instances}; they have no objects", stacklevel=2)
    name = root.name or str(root)
    if split != "all":
        name = f"{name}[{split}]"
    return ImageDataset(images=images, captions=texts, object_boxes=boxes,
                        object_labels=object_labels, labels=image_labels,
                        class_names=class_names, name=name)
