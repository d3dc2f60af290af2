"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``: single centred items, and
real items composited into cluttered multi-object scenes.

The package installs four gzipped IDX files in ``/usr/share/datasets/fashion-mnist``
(``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``); nothing is downloaded. Scenes of the
``"train"`` split are built from the 60,000 train items only and scenes of ``"test"`` from the
10,000 test (t10k) items only, so a probe trained on train scenes never sees a test item.

Compositing: an item's grey level is both its shape and its shading. Its alpha is
``min(1, 3 * grey / 255)`` (the black surround is transparent, anything brighter than a third of
full scale is opaque), its colour is a random tint times ``0.3 + 0.7 * grey / 255`` (so the
item's own texture shows through), scaled bilinearly to 21-50% of the image side (24-56 px at
112) and sometimes mirrored. Each object box is measured from the scaled alpha (>= 0.5), so it
is the item's own extent, not its 28x28 frame.
"""

from __future__ import annotations

import colorsys
import gzip
from pathlib import Path

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets.base import ImageDataset
from imgmdp_env.datasets.scenes import (
    background,
    background_grids,
    caption_for,
    clip01,
    clutter,
    overlaps,
)

__all__ = ["CLASS_NAMES", "DEFAULT_ROOT", "load_fashion", "make_fashion_scenes", "read_idx"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
# The official names, shortened where a caption needs it ("T-shirt/top" -> "t-shirt").
CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
               "bag", "ankle boot"]
FILES = {"train": "train", "test": "t10k"}
INSTALL = "apt-get install dataset-fashion-mnist"
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped (detected by content) or plain.

    Layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian
    uint32, then the data. Returns an array of that shape in native byte order, e.g.
    ``(N, 28, 28)`` uint8 for images or ``(N,)`` uint8 for labels.
    """
    path = Path(check.path_like("path", path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an IDX file: magic number {raw[:4].hex() or '(empty)'} should be "
            f"0000 + a dtype code in {[f'{c:02x}' for c in _IDX_DTYPES]} + the number of dims"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    data = memoryview(raw)[4 + 4 * ndim:]
    if len(data) != expected:
        raise ValueError(f"{path}: IDX dims {dims} of {dtype.str} need {expected} bytes of data, "
                         f"the file has {len(data)}")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}. Install the Debian package "
        f"dataset-fashion-mnist (`sudo {INSTALL}`), or pass root= a folder holding "
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
    )


def _load_split(split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 28, 28)`` uint8 items and ``(N,)`` int64 labels of one split."""
    check.choice("split", split, FILES)
    root = DEFAULT_ROOT if root is None else Path(check.path_like("root", root))
    prefix = FILES[split]
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{root}: {prefix} images are {images.dtype} {images.shape}, "
                         "expected uint8 (N, H, W)")
    if labels.shape != (len(images),):
        raise ValueError(f"{root}: {len(images)} {prefix} images but labels of shape "
                         f"{labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{root}: {prefix} labels span {labels.min()}..{labels.max()}, "
                         f"expected 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int64)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def load_fashion(
    split: str = "train", n: int | None = None, root: str | Path | None = None, seed: int = 0
) -> ImageDataset:
    """Single centred Fashion-MNIST items (the "curated" set of the decoupled setting).

    split: ``"train"`` (60,000) or ``"test"`` (10,000). n: a random subset of this many
    (drawn with ``seed``, kept in file order); ``None`` takes all. root: the folder of the IDX
    files (default the Debian package's). Returns images ``(28, 28, 3)`` uint8 (grey copied to
    three channels), labels ``(N,)`` int64 into :data:`CLASS_NAMES`, captions
    ``"a photo of a sneaker"``.
    """
    split = check.choice("split", split, FILES)
    n = check.optional_integer("n", n, 1)
    seed = check.seed("seed", seed)
    items, labels = _load_split(split, root)
    if n is not None:
        if not 1 <= n <= len(items):
            raise ValueError(f"n ({n}) must be in 1..{len(items)} for the {split} split")
        keep = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
        items, labels = items[keep], labels[keep]
    rgb = np.repeat(items[..., None], 3, axis=-1)  # (N, 28, 28, 3); the list holds views of it
    return ImageDataset(
        images=list(rgb),
        captions=[f"a photo of {_article(CLASS_NAMES[k])}" for k in labels],
        labels=labels,
        class_names=list(CLASS_NAMES),
        name=f"fashion-{split}",
    )


def _interp_matrix(src: int, dst: int) -> np.ndarray:
    """``(dst, src)`` bilinear resampling matrix with pixel-centre alignment."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), src - 2)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] = 1 - frac
    m[np.arange(dst), lo + 1] = frac
    return m


def _fashion_scene(rng: np.random.Generator, items: np.ndarray, labels: np.ndarray, h: int,
                   w: int, min_objects: int, max_objects: int, grids: tuple[np.ndarray, ...],
                   resize: dict[int, np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    img = background(rng, h, w, *grids)  # (3, h, w) float32
    clutter(img, rng)
    side = min(h, w)
    boxes, classes, placed = [], [], []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        r = rng.random(6).tolist()
        idx = int(r[0] * len(items))
        s = max(4, int(round((0.21 + 0.29 * r[1]) * side)))
        m = resize.setdefault(s, _interp_matrix(items.shape[1], s))
        grey = m @ items[idx].astype(np.float32) @ m.T  # (s, s) in [0, 255]
        if r[2] < 0.5:
            grey = grey[:, ::-1]
        alpha = clip01(grey * np.float32(3 / 255))
        inside = alpha >= 0.5
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        if len(rows) == 0:  # a blank item: nothing to annotate
            continue
        for _ in range(12):  # rejection sampling for limited overlap of the items' own boxes
            q = rng.random(2).tolist()
            ox, oy = int(q[0] * (w - s + 1)), int(q[1] * (h - s + 1))
            tight = (ox + cols[0], oy + rows[0], ox + cols[-1] + 1, oy + rows[-1] + 1)
            clear = not overlaps(tight, placed, limit=0.25)
            if clear:
                break
        if not clear and len(placed) >= min_objects:
            continue  # no room left: drop it, unless it is needed to reach min_objects
        tint = np.array(colorsys.hsv_to_rgb(r[3], 0.25 + 0.75 * r[4], 0.6 + 0.4 * r[5]),
                        np.float32)[:, None, None] * 255.0
        col = tint * (0.3 + 0.7 / 255 * grey)  # (3, s, s): tinted, the item's texture kept
        region = img[:, oy:oy + s, ox:ox + s]
        region += alpha * (col - region)
        placed.append(tight)
        x0, y0, x1, y1 = tight
        boxes.append([(x0 + x1) / (2 * w), (y0 + y1) / (2 * h), (x1 - x0) / w, (y1 - y0) / h])
        classes.append(int(labels[idx]))
    u8 = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return (np.stack((u8[0], u8[1], u8[2]), -1), np.array(boxes, np.float32).reshape(-1, 4),
            np.array(classes, np.int64), caption_for([CLASS_NAMES[c] for c in classes]))


def make_fashion_scenes(
    split: str = "train",
    n: int = 2048,
    size: int | tuple[int, int] = 112,
    seed: int = 0,
    min_objects: int = 2,
    max_objects: int = 4,
    root: str | Path | None = None,
) -> ImageDataset:
    """``n`` cluttered scenes of real Fashion-MNIST items of ``split`` (scene-centric data).

    size: an int or ``(height, width)``. Backgrounds and clutter are those of
    :mod:`imgmdp_env.datasets.scenes`; items are composited as the module docstring says, their
    boxes overlapping by at most 25% of the smaller one. Returns images ``(H, W, 3)`` uint8,
    captions such as ``"a sneaker and a bag"``, object_boxes ``(K, 4)`` float32 cxcywh in
    [0, 1], object_labels ``(K,)`` int64 into :data:`CLASS_NAMES`, labels ``(n,)``: the class of
    the largest item. Deterministic in ``(seed, split)``.
    """
    split = check.choice("split", split, FILES)
    n = check.integer("n", n, 1)
    h, w = check.size_hw("size", size)
    if min(h, w) < 32:
        raise ValueError(f"size {size} is too small: height and width must be at least 32")
    min_objects = check.integer("min_objects", min_objects, 1)
    max_objects = check.integer("max_objects", max_objects, 1)
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects ({min_objects}) <= max_objects ({max_objects})")
    seed = check.seed("seed", seed)
    items, labels = _load_split(split, root)
    root_seq = np.random.SeedSequence([seed, list(FILES).index(split), 1])
    grids = background_grids(h, w, root_seq)
    resize: dict[int, np.ndarray] = {}
    out = [_fashion_scene(np.random.default_rng(s), items, labels, h, w, min_objects,
                          max_objects, grids, resize) for s in root_seq.spawn(n)]
    boxes = [o[1] for o in out]
    classes = [o[2] for o in out]
    largest = np.array([c[np.argmax(b[:, 2] * b[:, 3])] if len(c) else -1
                        for b, c in zip(boxes, classes, strict=True)], np.int64)
    return ImageDataset(images=[o[0] for o in out], captions=[o[3] for o in out],
                        object_boxes=boxes, object_labels=classes, labels=largest,
                        class_names=list(CLASS_NAMES), name=f"fashion-scenes-{split}")
