"""Webdataset tar shards: the format img2dataset and OpenCLIP write, read with ``tarfile``.

A shard is a tar file whose members are grouped by key (the member name up to the first dot of
its base name): ``000000012.jpg`` (or ``.png``, ``.jpeg``, ``.webp``, ``.bmp``) is the image,
``000000012.json`` its annotations, ``000000012.txt`` its caption (OpenCLIP's convention; the
JSON's ``"caption"`` wins when both exist). The JSON keys read here::

    {"caption": "a dog on a sofa",
     "boxes": [[cx, cy, w, h], ...],     # object boxes, cxcywh in normalised coordinates
     "labels": ["dog", ...],             # their class names
     "label": "kitchen"}                 # an image-level class name (optional)

Other keys (img2dataset's ``url``, ``width``, ``key``...) are ignored. Class names become
indices in order of first appearance. Each box must lie inside its image (within
:data:`BOX_SLACK`, then clipped) with w, h > 0, one non-empty class name per box: anything else
is refused with the shard file and the sample key. No dependency: ``tarfile`` in streaming
mode reads a shard front to back, so shards may live on any file system.

Three ways to read shards (``spec``: paths, a brace pattern ``data/shard-{000..009}.tar``, a
comma list, or a folder of ``.tar`` files; :func:`expand_shards`):

- :func:`read_shards`: the first ``n`` samples of a split into RAM, as an ``ImageDataset``
  (probe sets, the env, small corpora).
- :class:`imgmdp_env.datasets.stream.ShardStream`: an ``ImageDataset`` over a bounded in-RAM
  buffer of images, refreshed from the shards at step boundaries by a background thread:
  training on corpora that do not fit in RAM.
- ``python -m imgmdp_env.datasets.shards SRC OUT_PATTERN``: write any source as shards.

Splits: ``split="train"`` / ``"test"`` keep the samples whose key's SHA-1 position is at or
above / below ``holdout`` (:func:`imgmdp_env.datasets.holdout.name_position`), ``"all"`` every
sample.

The sample helpers :func:`iter_tar`, :func:`in_split`, :func:`decode_sample` and
:func:`dataset_fields` are shared with the streaming reader
(:mod:`imgmdp_env.datasets.stream`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets import decode
from imgmdp_env.datasets.base import ImageDataset
from imgmdp_env.datasets.holdout import name_position
from imgmdp_env.datasets.shard_lists import expand_shards, is_shard_spec, split_shards

__all__ = ["IMAGE_KEYS", "expand_shards", "is_shard_spec", "read_shards", "split_shards",
           "write_shards"]

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp")
SPLITS = ("all", "train", "test")


# ------------------------------------------------------------------------------ samples
def iter_tar(path: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in file order: ``{"__key__": key, "__url__": path,
    ext: bytes, ...}``."""
    current: dict[str, Any] = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, _, base = member.name.rpartition("/")
                if "." not in base or base.startswith("."):
                    continue
                stem, ext = base.split(".", 1)
                key, ext = (f"{folder}/{stem}" if folder else stem), ext.lower()
                if current and current["__key__"] != key:
                    yield current
                    current = {}
                f = tar.extractfile(member)
                current.setdefault("__key__", key)
                current.setdefault("__url__", path)  # webdataset's name for the shard
                current[ext] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"shard {path} could not be read as a tar file "
                         f"({type(err).__name__}: {err})") from err
    if current:
        yield current


@dataclass
class Sample:
    """One decoded sample: image ``(h, w, 3)`` uint8 and its annotations."""

    key: str
    image: np.ndarray
    caption: str | None
    boxes: np.ndarray | None  # (K, 4) float32 cxcywh normalised
    labels: list[str] | None  # K class names
    label: str | None


def _image_bytes(raw: dict[str, bytes], where: str) -> bytes:
    for k in IMAGE_KEYS:
        if k in raw:
            return raw[k]
    where = f"shard {raw['__url__']}" if raw.get("__url__") else where
    raise ValueError(f"{where}: sample {raw['__key__']!r} has no image ({sorted(raw)[:6]}; "
                     f"expected one of {IMAGE_KEYS})")


# A normalised box may stick out of its image by this much (rounding); it is clipped to it.
BOX_SLACK = 0.01


def _meta(raw: dict[str, bytes], where: str) -> tuple[str | None, np.ndarray | None,
                                                       list[str] | None, str | None]:
    """The caption, boxes, box labels and image label of a sample, checked; errors name the
    shard file and the sample key (``where`` when the sample does not say its shard)."""
    key = raw["__key__"]
    here = f"shard {raw['__url__']}" if raw.get("__url__") else where
    meta: dict = {}
    if "json" in raw:
        try:
            meta = json.loads(raw["json"].decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{here}: {key}.json is not UTF-8 JSON ({err})") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{here}: {key}.json is {type(meta).__name__}, expected an object")
    caption = meta.get("caption")
    if caption is None and "txt" in raw:
        try:
            caption = raw["txt"].decode("utf-8-sig").strip()
        except UnicodeDecodeError as err:
            raise ValueError(f"{here}: {key}.txt is not UTF-8 text (byte {err.start}: "
                             f"{err.reason}); captions must be UTF-8") from err
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f"{here}: {key}.json caption {caption!r:.60} is not a string")
    boxes = labels = None
    if "boxes" in meta or "labels" in meta:
        boxes, labels = _boxes(meta.get("boxes") or [], meta.get("labels") or [],
                               f"{here}: sample {key!r} ({key}.json)")
    label = meta.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"{here}: {key}.json label {label!r:.60} must be a class name (a "
                         "non-empty string)")
    return caption, boxes, labels, label


def _boxes(boxes: Any, labels: Any, where: str) -> tuple[np.ndarray, list[str]]:
    """A sample's ``boxes`` / ``labels`` checked: ``(K, 4)`` float32 cxcywh inside the image's
    normalised coordinates (within :data:`BOX_SLACK`, then clipped to [0, 1]) with w, h > 0, and
    K non-empty class names."""
    want = ("'boxes' [[cx, cy, w, h], ...] (normalised: each box inside [0, 1] x [0, 1], "
            "w and h > 0) and 'labels' (one class name per box)")
    ok = isinstance(boxes, list) and all(
        isinstance(b, list) and len(b) == 4 and all(check.is_real(v) for v in b)
        for b in boxes)
    arr = np.asarray(boxes if ok and boxes else np.zeros((0, 4)), np.float64).reshape(-1, 4)
    if not ok or not np.isfinite(arr).all():
        raise ValueError(f"{where} has boxes {str(boxes)[:80]}; it needs {want}")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip()
                                               for x in labels) or len(labels) != len(arr):
        raise ValueError(f"{where} has labels {str(labels)[:80]} for {len(arr)} box(es); it "
                         f"needs {want}")
    cx, cy, w, h = arr.T
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    bad = (w <= 0) | (h <= 0) | (x0 < -BOX_SLACK) | (y0 < -BOX_SLACK) | (
        x1 > 1 + BOX_SLACK) | (y1 > 1 + BOX_SLACK) | (x0 >= 1) | (y0 >= 1) | (x1 <= 0) | (
        y1 <= 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{where}: box {k} {arr[k].tolist()} (label {labels[k]!r}) is not "
                         f"inside the image: boxes are cxcywh in the image's normalised "
                         f"coordinates, so cx - w/2 >= 0, cx + w/2 <= 1 (and the same for cy, "
                         f"h), w and h > 0 (within {BOX_SLACK:g}); it needs {want}")
    out = arr.copy()
    off = (x0 < 0) | (y0 < 0) | (x1 > 1) | (y1 > 1)
    if off.any():  # clipped to the image; boxes inside it are kept as written
        c = np.clip(np.stack([x0, y0, x1, y1], -1)[off], 0, 1)
        out[off] = np.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2,
                             c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], -1)
    return out.astype(np.float32), list(labels)


def in_split(key: str, split: str, holdout: float) -> bool:
    """Whether the sample ``key`` belongs to ``split`` (see the module docstring)."""
    return split == "all" or ((name_position(key) < holdout) == (split == "test"))


def decode_sample(raw: dict[str, bytes], max_side: int | None, where: str) -> Sample:
    """One raw sample of :func:`iter_tar` decoded (image resized to ``max_side``), its
    annotations checked; errors name the shard (``where`` when the sample does not say it) and
    the sample key."""
    caption, boxes, labels, label = _meta(raw, where)
    try:
        image = decode.decode_image(_image_bytes(raw, where), max_side)
    except Exception as err:  # PIL raises many exception types for corrupt data
        raise ValueError(f"shard {raw.get('__url__', where)}: the image of sample "
                         f"{raw['__key__']!r} could not be "
                         f"decoded ({type(err).__name__}: {err}); rewrite the shard without "
                         "it (python -m imgmdp_env.datasets.shards)") from err
    return Sample(raw["__key__"], image, caption, boxes, labels, label)


def dataset_fields(samples: Sequence[Sample], class_names: list[str], name: str) -> dict:
    """ImageDataset fields of ``samples``; new class names are appended to ``class_names``."""
    index = {c: i for i, c in enumerate(class_names)}

    def ids(names: Sequence[str]) -> np.ndarray:
        for c in names:
            if c not in index:
                index[c] = len(class_names)
                class_names.append(c)
        return np.array([index[c] for c in names], np.int64)

    has_objects = any(s.boxes is not None for s in samples)
    has_labels = any(s.label is not None for s in samples)
    return dict(
        images=[s.image for s in samples],
        captions=[s.caption or "" for s in samples] if any(
            s.caption is not None for s in samples) else None,
        object_boxes=[s.boxes if s.boxes is not None else np.zeros((0, 4), np.float32)
                      for s in samples] if has_objects else None,
        object_labels=[ids(s.labels or []) for s in samples] if has_objects else None,
        labels=np.array([ids([s.label])[0] if s.label is not None else -1 for s in samples],
                        np.int64) if has_labels else None,
        class_names=list(class_names) if (has_objects or has_labels) else None,
        name=name,
    )


def read_shards(shards: str | Sequence[str], split: str = "all", holdout: float = 0.1,
                n: int | None = None, seed: int = 0,
                max_side: int | None = decode.DEFAULT_MAX_SIDE,
                memory_budget: float | None = None) -> ImageDataset:
    """The first ``n`` samples of ``split`` (all of them if None), in shard order, in RAM.

    Sizes are read from the image headers and checked against ``memory_budget`` (GiB; None:
    half the RAM) before anything is decoded. seed: unused (the order is the shards'; kept so
    that every file-backed source takes the same split arguments). Returns an
    :class:`ImageDataset` with the annotations the samples carry.
    """
    paths = expand_shards(shards)
    split = check.choice("split", split, SPLITS)
    holdout = check.number("holdout", holdout, 0, 1, hi_open=True)
    n = check.optional_integer("n", n, 1)
    check.seed("seed", seed)
    max_side = decode.check_max_side(max_side)
    decode.budget_bytes(memory_budget)
    where = f"shards {shards!r}"
    raws, sizes = [], []
    for path in paths:
        for raw in iter_tar(path):
            if not in_split(raw["__key__"], split, holdout):
                continue
            try:
                h, w = decode.header_size(io.BytesIO(_image_bytes(raw, path)))
            except Exception as err:  # PIL raises many exception types for corrupt data
                raise ValueError(f"shard {path}: the image of sample {raw['__key__']!r} "
                                 f"could not be read ({type(err).__name__}: {err}); rewrite "
                                 "the shard without it") from err
            sizes.append(decode.fit_size(h, w, max_side))
            raws.append(raw)
            if n is not None and len(raws) >= n:
                break
        if n is not None and len(raws) >= n:
            break
    if not raws:
        raise ValueError(f"{where} hold no sample of split {split!r} (holdout={holdout}); use "
                         "split='all', another holdout, or a separate test source")
    decode.check_budget(sizes, memory_budget, where)
    samples = [decode_sample(r, max_side, where) for r in raws]
    name = Path(paths[0]).parent.name or "shards"
    return ImageDataset(**dataset_fields(samples, [],
                                         name if split == "all" else f"{name}[{split}]"))


# ------------------------------------------------------------------------------ the writer
def write_shards(dataset: ImageDataset, pattern: str, per_shard: int = 1000,
                 image_format: str = "jpg", quality: int = 95) -> list[str]:
    """Write ``dataset`` as webdataset shards ``pattern % i`` (e.g. ``out/shard-%06d.tar``),
    ``per_shard`` samples each: ``<key>.jpg|png``, ``<key>.json`` (caption, boxes, labels,
    label: the module docstring) and ``<key>.txt`` (the caption, for OpenCLIP). Keys are the
    9-digit sample index. Returns the paths written (each written to a temporary name and
    renamed, so a reader never sees half a shard)."""
    from PIL import Image

    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"write_shards needs an ImageDataset, not {type(dataset).__name__}")
    pattern = check.string("pattern", pattern)
    try:
        pattern % 0
    except (TypeError, ValueError):
        raise ValueError(f"pattern ({pattern!r}) must hold one integer field such as %06d "
                         "(e.g. out/shard-%06d.tar)") from None
    per_shard = check.integer("per_shard", per_shard, 1)
    image_format = check.choice("image_format", image_format, ["jpg", "png"])
    quality = check.integer("quality", quality, 1, 100)
    names = dataset.class_names or []
    written = []
    for s, start in enumerate(range(0, len(dataset), per_shard)):
        path = pattern % s
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with tarfile.open(tmp, "w") as tar:
            for i in range(start, min(start + per_shard, len(dataset))):
                key = f"{i:09d}"
                buf = io.BytesIO()
                img = Image.fromarray(dataset.images[i])
                if image_format == "jpg":
                    img.save(buf, "JPEG", quality=quality)
                else:
                    img.save(buf, "PNG")
                meta: dict[str, Any] = {}
                if dataset.captions is not None:
                    meta["caption"] = dataset.captions[i]
                if dataset.object_boxes is not None:
                    meta["boxes"] = np.asarray(dataset.object_boxes[i]).reshape(-1, 4).tolist()
                    meta["labels"] = [names[int(c)] for c in dataset.object_labels[i]]
                if dataset.labels is not None and int(dataset.labels[i]) >= 0:
                    meta["label"] = names[int(dataset.labels[i])]
                files = {image_format: buf.getvalue(), "json": json.dumps(meta).encode()}
                if dataset.captions is not None:
                    files["txt"] = dataset.captions[i].encode("utf-8")
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m imgmdp_env.datasets.shards SRC OUT_PATTERN``: any source as shards."""
    p = argparse.ArgumentParser(
        prog="python -m imgmdp_env.datasets.shards",
        description="Write an image source (a folder, COCO folder, video, named dataset or "
                    "shards) as webdataset tar shards.")
    p.add_argument("src", help="anything make_dataset takes: a folder, a video, 'scenes', ...")
    p.add_argument("out", help="output pattern with one integer field, e.g. out/shard-%%06d.tar")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per shard")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg", help="image encoding")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality")
    p.add_argument("--captions", default=None, help="COCO captions_*.json (folders)")
    p.add_argument("--instances", default=None, help="COCO instances_*.json (folders)")
    p.add_argument("--max-side", type=int, default=decode.DEFAULT_MAX_SIDE,
                   help="resize on load to this longer side (0: full size)")
    p.add_argument("--n", type=int, default=None, help="at most this many images")
    p.add_argument("--frame-stride", type=int, default=None, help="videos: every k-th frame")
    a = p.parse_args(argv)
    from imgmdp_env.datasets import make_dataset, source_kind

    if a.frame_stride is not None and source_kind(a.src) != "video":
        print(f"error: --frame-stride ({a.frame_stride}) keeps every k-th frame of a video; "
              f"{a.src!r} is {source_kind(a.src) or 'no source'}, not a video: drop "
              "--frame-stride", file=sys.stderr)
        return 2

    kwargs: dict[str, Any] = {}
    if a.src in ("scenes", "fashion-scenes"):
        kwargs.update(n=a.n or 1000)
    else:
        kwargs.update(max_side=a.max_side or None)
        if a.n is not None:
            kwargs["n"] = a.n
        for k in ("captions", "instances", "frame_stride"):
            if getattr(a, k) is not None:
                kwargs[k] = getattr(a, k)
    try:
        ds = make_dataset(a.src, **kwargs)
        paths = write_shards(ds, a.out, a.per_shard, a.format, a.quality)
    except (TypeError, ValueError, MemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(ds)} samples to {len(paths)} shard(s): {paths[0]} ... {paths[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
