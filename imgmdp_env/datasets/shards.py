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
indices in order of first appearance. No dependency: ``tarfile`` in streaming mode reads a
shard front to back, so shards may live on any file system.

Three ways to read shards (``spec``: paths, a brace pattern ``data/shard-{000..009}.tar``, a
comma list, or a folder of ``.tar`` files; :func:`expand_shards`):

- :func:`read_shards`: the first ``n`` samples of a split into RAM, as an ``ImageDataset``
  (probe sets, the env, small corpora).
- :class:`ShardStream`: an ``ImageDataset`` over a bounded in-RAM buffer of images, refreshed
  from the shards at step boundaries (:meth:`ShardStream.at_step`) by a background thread:
  training on corpora that do not fit in RAM.
- ``python -m imgmdp_env.datasets.shards SRC OUT_PATTERN``: write any source as shards.

Splits: ``split="train"`` / ``"test"`` keep the samples whose key's SHA-1 position is at or
above / below ``holdout`` (:func:`imgmdp_env.datasets.splits._unit`), ``"all"`` every sample.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import tarfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgmdp_env import _checks as check
from imgmdp_env.datasets import decode
from imgmdp_env.datasets.base import ImageDataset

__all__ = ["IMAGE_KEYS", "ShardStream", "expand_shards", "is_shard_spec", "read_shards",
           "split_shards", "write_shards"]

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp")
SPLITS = ("all", "train", "test")


# ------------------------------------------------------------------------------ shard lists
def _braces(pattern: str) -> list[str]:
    """Expand ``{000..009}`` (zero-padded like its first bound) and ``{a,b}``, left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        if hi < lo:
            raise ValueError(f"shard pattern {pattern!r}: range {{{body}}} runs backwards")
        width = len(r.group(1))
        items = [f"{i:0{width}d}" for i in range(lo, hi + 1)]
    elif "," in body:
        items = body.split(",")
    else:
        raise ValueError(f"shard pattern {pattern!r}: {{{body}}} is neither a range {{000..009}} "
                         "nor a list {a,b}")
    return [x for item in items for x in _braces(head + item + tail)]


def _top_level(text: str) -> list[str]:
    """``text`` split at the commas outside braces (``a-{0,1}.tar,b.tar`` -> 2 parts)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def is_shard_spec(spec: Any) -> bool:
    """Whether ``spec`` names shards: a ``.tar`` path or pattern, a comma list of them, a list
    of ``.tar`` paths, or a folder holding ``.tar`` files and no images."""
    if isinstance(spec, list | tuple):
        return bool(spec) and all(isinstance(s, str | os.PathLike) and
                                  os.fspath(s).endswith(".tar") for s in spec)
    if not isinstance(spec, str | os.PathLike):
        return False
    text = os.fspath(spec)
    if isinstance(text, bytes):
        return False
    if any(p.strip().endswith(".tar") for p in _top_level(text)) and not Path(text).is_dir():
        return True
    if Path(text).is_dir():
        from imgmdp_env.datasets.folder import EXTENSIONS

        names = os.listdir(text)
        return any(n.endswith(".tar") for n in names) and not any(
            n.lower().endswith(EXTENSIONS) for n in names)
    return False


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The shard paths of ``spec`` (module docstring), in order; every one must exist."""
    if isinstance(spec, list | tuple):
        paths = [check.path_like("shards", s) for s in spec]
    else:
        text = check.path_like("shards", spec)
        if Path(text).is_dir():
            paths = sorted(str(p) for p in Path(text).glob("*.tar"))
        else:
            paths = [x for part in _top_level(text) if part.strip()
                     for x in _braces(part.strip())]
    if not paths:
        raise ValueError(f"shards {spec!r} name no .tar file")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"shards {spec!r}: {len(missing)} of {len(paths)} shard(s) do not "
                         f"exist: {missing[:5]}")
    return paths


def split_shards(paths: Sequence[str], rank: int = 0, world_size: int = 1, worker: int = 0,
                 num_workers: int = 1) -> list[str]:
    """The shards of one reader: rank ``rank`` of ``world_size`` (DDP) and data worker
    ``worker`` of ``num_workers`` within it read every ``world_size * num_workers``-th shard,
    so no two readers share a shard. Refuses fewer shards than readers (the fix: write more,
    smaller shards)."""
    world_size = check.integer("world_size", world_size, 1)
    rank = check.integer("rank", rank, 0, world_size - 1)
    num_workers = check.integer("num_workers", num_workers, 1)
    worker = check.integer("worker", worker, 0, num_workers - 1)
    parts = world_size * num_workers
    if len(paths) < parts:
        raise ValueError(f"{len(paths)} shard(s) for {world_size} rank(s) x {num_workers} "
                         f"worker(s): every reader needs its own shard; write at least {parts} "
                         "shards (python -m imgmdp_env.datasets.shards SRC OUT --per-shard N "
                         "with a smaller N)")
    return list(paths[rank * num_workers + worker::parts])


# ------------------------------------------------------------------------------ samples
def _iter_tar(path: str) -> Iterator[dict[str, Any]]:
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
    raise ValueError(f"{where}: sample {raw['__key__']!r} has no image ({sorted(raw)[:6]}; "
                     f"expected one of {IMAGE_KEYS})")


def _meta(raw: dict[str, bytes], where: str) -> tuple[str | None, np.ndarray | None,
                                                       list[str] | None, str | None]:
    key = raw["__key__"]
    meta: dict = {}
    if "json" in raw:
        try:
            meta = json.loads(raw["json"].decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: {key}.json is not UTF-8 JSON ({err})") from err
        if not isinstance(meta, dict):
            raise ValueError(f"{where}: {key}.json is {type(meta).__name__}, expected an object")
    caption = meta.get("caption")
    if caption is None and "txt" in raw:
        caption = raw["txt"].decode("utf-8", "replace").strip()
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f"{where}: {key}.json caption {caption!r:.60} is not a string")
    boxes = labels = None
    if "boxes" in meta or "labels" in meta:
        try:
            boxes = np.asarray(meta.get("boxes") or np.zeros((0, 4)), np.float64)
        except (TypeError, ValueError):  # ragged or non-numeric
            boxes = np.zeros((1, 0))
        labels = meta.get("labels", [])
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not isinstance(labels, list) or not all(
                isinstance(x, str) for x in labels) or len(labels) != len(boxes) or not (
                np.isfinite(boxes).all()) or (boxes[:, 2:] <= 0).any():
            raise ValueError(f"{where}: {key}.json needs 'boxes' [[cx, cy, w, h], ...] "
                             "(normalised, w and h > 0) and 'labels' (one class name per box)")
        boxes = boxes.astype(np.float32)
    label = meta.get("label")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"{where}: {key}.json label {label!r:.60} must be a class name")
    return caption, boxes, labels, label


def _in_split(key: str, split: str, holdout: float) -> bool:
    from imgmdp_env.datasets.splits import _unit

    return split == "all" or ((_unit(key) < holdout) == (split == "test"))


def _decode_sample(raw: dict[str, bytes], max_side: int | None, where: str) -> Sample:
    caption, boxes, labels, label = _meta(raw, where)
    try:
        image = decode.decode_image(_image_bytes(raw, where), max_side)
    except Exception as err:  # PIL raises many exception types for corrupt data
        raise ValueError(f"shard {raw.get('__url__', where)}: the image of sample "
                         f"{raw['__key__']!r} could not be "
                         f"decoded ({type(err).__name__}: {err}); rewrite the shard without "
                         "it (python -m imgmdp_env.datasets.shards)") from err
    return Sample(raw["__key__"], image, caption, boxes, labels, label)


def _assemble(samples: Sequence[Sample], class_names: list[str], name: str) -> dict:
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
        for raw in _iter_tar(path):
            if not _in_split(raw["__key__"], split, holdout):
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
    samples = [_decode_sample(r, max_side, where) for r in raws]
    name = Path(paths[0]).parent.name or "shards"
    return ImageDataset(**_assemble(samples, [], name if split == "all" else f"{name}[{split}]"))


# ------------------------------------------------------------------------------ the stream
class ShardStream(ImageDataset):
    """An :class:`ImageDataset` over a bounded buffer of ``buffer`` images streamed from
    shards; the crop kernel (``bank()``) and the annotations always describe the buffer.

    Schedule (deterministic in ``seed``, ``rank``, ``world_size``, ``worker``, ``num_workers``
    and ``split``, whatever the timing): the stream reads this reader's shards
    (:func:`split_shards`) in an order reshuffled every epoch, ``interleave`` shards open at
    once, each next sample taken from a random open one (shuffle across shards). The buffer
    holds the first ``buffer`` samples for steps ``[0, refresh_every)``; at every multiple of
    ``refresh_every`` a random ``replace`` fraction of its slots takes the next samples (the
    sampler's uniform draws shuffle within the buffer). :meth:`at_step` moves the buffer to the
    one of a step; the next buffer is decoded in a background thread while training runs, and
    swapped in place: the ``ImageBank`` objects handed out by :meth:`bank` keep their
    identity and take the new contents, so a sampler built on the stream needs no change.
    Jumping to any step (``--resume``) rebuilds that step's buffer exactly.

    Memory: two buffers (the current one and the one being decoded) of at most ``max_side``
    pixels a side, checked against ``memory_budget`` (GiB) up front; ``max_side`` is required.
    """

    def __init__(self, shards: str | Sequence[str], buffer: int = 1024,
                 refresh_every: int = 100, replace: float = 0.5, split: str = "all",
                 holdout: float = 0.1, seed: int = 0, rank: int = 0, world_size: int = 1,
                 worker: int = 0, num_workers: int = 1, interleave: int = 4,
                 max_side: int | None = decode.DEFAULT_MAX_SIDE,
                 memory_budget: float | None = None) -> None:
        self.paths = split_shards(expand_shards(shards), rank, world_size, worker, num_workers)
        self.capacity = check.integer("buffer", buffer, 1)
        self.refresh_every = check.integer("refresh_every", refresh_every, 1)
        self.replace = check.number("replace", replace, 0, 1, lo_open=True)
        self.split = check.choice("split", split, SPLITS)
        self.holdout = check.number("holdout", holdout, 0, 1, hi_open=True)
        self.seed = check.seed("seed", seed) or 0
        self.reader = (rank, world_size, worker, num_workers)
        self.interleave = check.integer("interleave", interleave, 1)
        self.max_side = decode.check_max_side(max_side)
        if self.max_side is None:
            raise ValueError("ShardStream needs max_side (the buffer's memory bound is "
                             "buffer x max_side^2 pixels); pass e.g. max_side=256")
        decode.check_budget([(self.max_side, self.max_side)] * (2 * self.capacity),
                            memory_budget, f"ShardStream buffer ({self.capacity} images, two "
                            "buffers while refreshing)", "; or a smaller buffer (--dataset-size)")
        self.where = f"shards {shards!r}"
        self.n_new = max(1, round(self.replace * self.capacity))
        self._classes: list[str] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-stream")
        self._next: Future | None = None
        self._seek(0)
        fields = _assemble(self._slots, self._classes, Path(self.paths[0]).parent.name or
                           "shards")
        super().__init__(**fields)
        self.bank()  # the sampler's default bank, known before the first prefetch packs it
        self._prefetch()

    # -- the sample stream
    def _stream(self) -> Iterator[dict[str, bytes]]:
        """This reader's raw samples of its split, forever (epoch after epoch)."""
        epoch = 0
        while True:
            rng = np.random.default_rng([self.seed, epoch, *self.reader, 0x5A4D])
            order = [self.paths[i] for i in rng.permutation(len(self.paths))]
            pending, open_ = list(order), []
            count = 0
            while pending or open_:
                while pending and len(open_) < self.interleave:
                    open_.append(_iter_tar(pending.pop(0)))
                k = int(rng.integers(len(open_)))
                try:
                    raw = next(open_[k])
                except StopIteration:
                    open_.pop(k)
                    continue
                if _in_split(raw["__key__"], self.split, self.holdout):
                    count += 1
                    yield raw
            if count == 0:
                raise ValueError(f"{self.where}: reader {self.reader} found no sample of split "
                                 f"{self.split!r} (holdout={self.holdout}) in its "
                                 f"{len(self.paths)} shard(s)")
            epoch += 1

    def _plan(self, chunk: int) -> list[int]:
        """Stream index of the sample in each buffer slot during ``chunk``."""
        slots = list(range(self.capacity))
        nxt = self.capacity
        for c in range(1, chunk + 1):
            rng = np.random.default_rng([self.seed, c, *self.reader, 0xB0F])
            for s in np.sort(rng.choice(self.capacity, self.n_new, replace=False)):
                slots[s] = nxt
                nxt += 1
        return slots

    def _seek(self, chunk: int) -> None:
        """Rebuild the buffer of ``chunk`` from the stream's start (decoding only the samples
        it holds) and leave the stream just past them."""
        plan = self._plan(chunk)
        want = {j: s for s, j in enumerate(plan)}
        self._iter = self._stream()
        slots: list[Sample | None] = [None] * self.capacity
        for j in range(max(plan) + 1):
            raw = next(self._iter)
            if j in want:
                slots[want[j]] = _decode_sample(raw, self.max_side, self.where)
        self._slots: list[Sample] = slots  # type: ignore[assignment]
        self.chunk = chunk

    def _build(self, chunk: int, slots: list[Sample]) -> tuple[list[Sample], dict, dict]:
        """The buffer of ``chunk`` (the one after ``slots``) and its banks (background)."""
        rng = np.random.default_rng([self.seed, chunk, *self.reader, 0xB0F])
        new = list(slots)
        for s in np.sort(rng.choice(self.capacity, self.n_new, replace=False)):
            new[s] = _decode_sample(next(self._iter), self.max_side, self.where)
        with self._lock:
            fields = _assemble(new, self._classes, self.name)
            keys = list(self._banks)
        from imgmdp_env.views import ImageBank

        banks = {key: ImageBank(fields["images"], levels=key[0], fill=key[1]) for key in keys}
        return new, fields, banks

    def _prefetch(self) -> None:
        self._next = self._pool.submit(self._build, self.chunk + 1, self._slots)

    def _install(self, chunk: int, slots: list[Sample], fields: dict, banks: dict) -> None:
        self._slots, self.chunk = slots, chunk
        for k in ("images", "captions", "object_boxes", "object_labels", "labels",
                  "class_names"):
            setattr(self, k, fields[k])
        from imgmdp_env.views import ImageBank

        for key, bank in list(self._banks.items()):
            fresh = banks.get(key)
            if fresh is None:  # a bank asked for after the prefetch started: packed now
                fresh = ImageBank(self.images, levels=key[0], fill=key[1])
            bank.__dict__.update(fresh.__dict__)  # same object: samplers and envs see it

    def at_step(self, step: int) -> bool:
        """Make the buffer the one of training step ``step`` (``step // refresh_every``).
        Returns whether it changed. The next step's buffer is already being decoded; a jump
        (resume) rebuilds the buffer of ``step`` exactly."""
        chunk = check.integer("step", step, 0) // self.refresh_every
        if chunk == self.chunk:
            return False
        if chunk == self.chunk + 1 and self._next is not None:
            slots, fields, banks = self._next.result()
        else:
            if self._next is not None:
                self._next.result()  # the stream iterator is the worker's until it returns
            self._seek(chunk)
            with self._lock:
                fields = _assemble(self._slots, self._classes, self.name)
            slots, banks = self._slots, {}
        self._install(chunk, slots, fields, banks)
        self._prefetch()
        return True

    def bank(self, levels: int = 4, fill: tuple[int, int, int] = (0, 0, 0)):
        """The buffer packed for the crop kernel (one object per ``(levels, fill)``, updated in
        place by :meth:`at_step`)."""
        with self._lock:  # the background build reads the keys to pack
            return super().bank(levels, fill)

    def subset(self, indices: np.ndarray | list[int]) -> ImageDataset:
        """A plain in-RAM :class:`ImageDataset` of buffer images (a snapshot)."""
        return ImageDataset.subset(self, indices)

    def close(self) -> None:
        """Stop the background thread (the buffer stays readable)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __reduce__(self):  # a snapshot travels (AsyncVectorEnv workers), not the stream
        warnings.warn("pickling a ShardStream sends a snapshot of its buffer", stacklevel=2)
        return ImageDataset.subset(self, list(range(len(self)))).__reduce__()


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
    from imgmdp_env.datasets import make_dataset

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
