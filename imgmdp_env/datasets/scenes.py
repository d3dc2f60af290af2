"""Procedurally generated multi-object scenes: the embedded default dataset (no download).

Each image is a varied background (a two-colour gradient under low-contrast blotches, grain and
sometimes a faint stripe or checker texture), a few pieces of clutter (small dots and thin lines
that are not objects), and ``min_objects..max_objects`` objects on top. An object is one of
:data:`CLASS_NAMES` in one of :data:`COLOUR_NAMES`, its side 15-45% of the image's shorter side,
fully inside the image. An object is re-placed (and shrunk) up to 12 times until it overlaps
earlier objects by at most 20% of the smaller box; in the rare scene with no room left, it is
kept where the last try put it.

Shapes are drawn from signed distances in the object's own frame, so edges are anti-aliased at
any resolution, and each object is rendered only over its own bounding window (numpy, vectorised
over that window's pixels). The object box is measured from the drawn mask (coverage >= 0.5),
so it is exactly where the object is, before any later object occludes part of it.

Every image has its own random stream, spawned from ``(seed, split)``: the same seed gives the
same images, ``split="test"`` gives different images, and the first ``m`` images of
``make_scenes(n)`` are ``make_scenes(m)`` for ``m <= n``.

The backgrounds, the clutter and the placement test (:func:`background_grids`,
:func:`background`, :func:`clutter`, :func:`overlaps`, :func:`clip01`) are shared with the
Fashion-MNIST scenes (:mod:`imgmdp_env.datasets.fashion`).
"""

from __future__ import annotations

import colorsys

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets.base import ImageDataset

__all__ = ["CLASS_NAMES", "COLOUR_NAMES", "SPLITS", "caption_for", "caption_phrases", "make_scenes"]

CLASS_NAMES = ["circle", "square", "triangle", "ring", "cross", "star", "crescent", "arrow"]
COLOUR_NAMES = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"]
COLOURS = np.array(
    [[220, 40, 40], [245, 140, 30], [240, 220, 40], [40, 170, 60],
     [40, 200, 220], [40, 70, 220], [150, 60, 200], [245, 245, 245]], dtype=np.float32,
)
SPLITS = ("train", "val", "test")
_PLURAL = {"stripes"}  # names that take no article ("orange stripes")


def caption_for(objects: list[str]) -> str:
    """``["red circle", "blue square", "orange stripes"]`` -> ``"a red circle, a blue square and
    orange stripes"`` (``"an"`` before a vowel, no article before a plural)."""
    named = [o if o.split()[-1] in _PLURAL else ("an " if o[0] in "aeiou" else "a ") + o
             for o in objects]
    if len(named) <= 1:
        return "".join(named)
    return ", ".join(named[:-1]) + " and " + named[-1]


def caption_phrases(caption: str) -> list[str]:
    """The inverse of :func:`caption_for`: ``"a red circle, a blue square and orange stripes"``
    -> ``["a red circle", "a blue square", "orange stripes"]``, one phrase per object, each a
    caption of its own (``caption_for([name])``)."""
    head, _, last = caption.rpartition(" and ")
    return head.split(", ") + [last] if head else [caption]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) -> ``(3,)`` float32 RGB in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """``(dst, src)`` linear-interpolation matrix (align corners) for smooth noise upsampling."""
    pos = np.linspace(0, src - 1, dst)
    lo = np.minimum(np.floor(pos).astype(np.int64), src - 2)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] = 1 - frac
    m[np.arange(dst), lo + 1] = frac
    return m


def background_grids(h: int, w: int, root: np.random.SeedSequence) -> tuple[np.ndarray, ...]:
    """What :func:`background` shares across images of size ``(h, w)``: pixel centres, blotch
    upsampling matrices and a grain texture (drawn from ``root``)."""
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    grain = np.random.default_rng(root).standard_normal((2 * h, 2 * w), dtype=np.float32)
    return ys, xs, _resize_matrix(6, h), _resize_matrix(6, w), grain


def background(rng: np.random.Generator, h: int, w: int, ys: np.ndarray, xs: np.ndarray,
               ry: np.ndarray, rx: np.ndarray, grain: np.ndarray) -> np.ndarray:
    """A muted gradient with blotches, grain and sometimes a faint texture: ``(3, h, w)`` float32.

    ys, xs: ``(h, 1)``, ``(1, w)`` pixel centres in [0, 1]; ry, rx: blotch upsampling matrices;
    grain: ``(>= h, >= w)`` unit normal noise, of which a random window is used (drawing fresh
    normals per image would cost more than the rest of the scene).
    """
    r = rng.random(14).tolist()  # one draw for all scalars (each Generator call costs ~1 us)
    c0, c1 = _hsv(r[0], 0.35 * r[1], 0.2 + 0.55 * r[2]), _hsv(r[3], 0.35 * r[4], 0.2 + 0.55 * r[5])
    angle = 2 * np.pi * r[6]
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    t = np.clip(ca * (xs - 0.5) + sa * (ys - 0.5) + 0.5, 0, 1)  # (h, w) gradient position
    # grey modulations share one channel: grain, blotches, and maybe a texture
    oy, ox = int(r[7] * (grain.shape[0] - h + 1)), int(r[8] * (grain.shape[1] - w + 1))
    grey = grain[oy:oy + h, ox:ox + w] * np.float32(1 + 4 * r[9])
    blotch = ry @ rng.standard_normal((ry.shape[1], rx.shape[1]), dtype=np.float32) @ rx.T
    grey += np.float32(4 + 10 * r[10]) * blotch
    kind = int(3 * r[11])
    if kind:  # faint stripes (1) or checker (2), a texture the agent must learn to ignore
        freq = np.float32(2 * np.pi / (0.04 + 0.11 * r[12]))
        a = np.sin(freq * (ca * xs - sa * ys))
        if kind == 2:
            a *= np.sin(freq * (sa * xs + ca * ys))
        grey += np.float32(4 + 6 * r[13]) * np.sign(a)
    img = t * (c1 - c0)[:, None, None]  # channel-first: long inner loops, no stride-3 ops
    img += c0[:, None, None]
    img += grey
    return img


def clip01(x: np.ndarray) -> np.ndarray:
    """Clip a fresh array to [0, 1] in place (``np.clip`` costs more than the work here)."""
    return np.minimum(np.maximum(x, 0, out=x), 1, out=x)


def _window(cx: float, cy: float, hw: float, hh: float, h: int, w: int
            ) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """The pixel window around a centre (pixels) and its pixel centres ``(hy, 1), (1, wx)``."""
    y0, y1 = max(int(cy - hh) - 1, 0), min(int(np.ceil(cy + hh)) + 1, h)
    x0, x1 = max(int(cx - hw) - 1, 0), min(int(np.ceil(cx + hw)) + 1, w)
    py = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    px = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return slice(y0, y1), slice(x0, x1), py, px


def _shape_distance(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside, in half-side units) of a shape filling [-1, 1]^2."""
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return np.sqrt(u * u + v * v) - 1
    if name == "square":
        return np.maximum(au, av) - 1
    if name == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.72) - 0.28
    if name == "cross":
        return np.minimum(np.maximum(au - 1, av - 0.3), np.maximum(au - 0.3, av - 1))
    if name == "triangle":
        return np.maximum(v - 1, (2 * au - v - 1) / np.sqrt(5))
    if name == "star":  # five points, straight edges from tip (radius 1) to notch (radius 0.45)
        half = np.pi / 5
        phi = np.abs(np.mod(np.arctan2(u, -v) + half, 2 * half) - half)  # 0 on a tip's axis
        edge = 0.45 * np.sin(half) / (np.sin(phi) + 0.45 * np.sin(half - phi))
        return (np.sqrt(u * u + v * v) - edge) * 0.5
    if name == "crescent":  # the unit disc minus a disc of radius 0.8 shifted right by 0.45
        return np.maximum(np.sqrt(u * u + v * v) - 1, 0.8 - np.sqrt((u - 0.45) ** 2 + v * v))
    if name == "arrow":  # a triangular head (v in [-1, 0]) on a shaft (v in [-0.1, 1])
        head_v = 2 * v + 1
        head = 0.5 * np.maximum(head_v - 1, (2 * au - head_v - 1) / np.sqrt(5))
        return np.minimum(head, np.maximum(au - 0.32, np.abs(v - 0.45) - 0.55))
    raise ValueError(f"unknown shape {name!r}; valid: {CLASS_NAMES}")


def _pattern(kind: int, r: list[float], px: np.ndarray, py: np.ndarray, side: float
             ) -> np.ndarray:
    """A texture in [0, 1] over pixel centres ``px (1, w), py (h, 1)``: 0 solid, 1 stripes,
    2 checker, 3 dots, 4 gradient; its angle and period (in pixels, from ``side``) from ``r``."""
    if kind == 0:
        return np.zeros((py.shape[0], px.shape[1]), np.float32)
    a = np.pi * r[0]
    ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
    period = np.float32((0.06 + 0.12 * r[1]) * side)
    s, t = (ca * px + sa * py) / period, (-sa * px + ca * py) / period
    if kind == 1:
        return (np.mod(s, 1.0) < 0.5).astype(np.float32)
    if kind == 2:
        return ((np.floor(s) + np.floor(t)) % 2).astype(np.float32)
    if kind == 3:
        fs, ft = np.mod(s, 1.0) - 0.5, np.mod(t, 1.0) - 0.5
        return (fs * fs + ft * ft < 0.09).astype(np.float32)
    return clip01((s - s.min()) / max(float(s.max() - s.min()), 1e-6))


def _draw_object(img: np.ndarray, rng: np.random.Generator, cls: int, colour: np.ndarray,
                 cx: float, cy: float, hw: float, hh: float) -> np.ndarray | None:
    """Draw one object into ``img`` (``(3, H, W)`` float32, in place); centre and half-sizes in
    pixels. Returns its ``(4,)`` cxcywh box (normalised) measured from the drawn mask.

    The class is the shape only: the shape is turned by a uniform random angle and filled with
    a random texture (solid, stripes, checker, dots or a gradient) between its colour and a
    darker or lighter shade of it, so orientation, texture and colour carry no label."""
    h, w = img.shape[1:]
    name = CLASS_NAMES[cls]
    sy, sx, py, px = _window(cx, cy, hw, hh, h, w)
    u, v = (px - cx) / hw, (py - cy) / hh
    r = rng.random(5).tolist()
    a = 2 * np.pi * r[0]
    k = abs(np.cos(a)) + abs(np.sin(a))  # shrink so the turned shape stays in its window
    u, v = (np.cos(a) * u + np.sin(a) * v) * k, (-np.sin(a) * u + np.cos(a) * v) * k
    alpha = clip01(0.5 - _shape_distance(name, u, v) * min(hw, hh))
    shade = 1.08 - 0.16 * (py - (cy - hh)) / (2 * hh)  # lit from the top: (hy, 1)
    col = colour[:, None, None] * shade  # (3, hy, 1)
    texture = _pattern(int(5 * r[1]), r[2:4], px, py, float(min(h, w)))
    other = col * np.float32(0.3 + 0.25 * r[4]) if r[4] < 0.6 else (255 - col) * 0.5 + col
    col = col + texture * (other - col)
    region = img[:, sy, sx]
    region += alpha * (col - region)
    inside = alpha >= 0.5
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    if len(rows) == 0:
        return None
    x0, x1 = sx.start + cols.min(), sx.start + cols.max() + 1
    y0, y1 = sy.start + rows.min(), sy.start + rows.max() + 1
    return np.array([(x0 + x1) / (2 * w), (y0 + y1) / (2 * h), (x1 - x0) / w, (y1 - y0) / h],
                    np.float32)


def _busy_background(rng: np.random.Generator, img: np.ndarray) -> None:
    """Overlay a strong random texture of a random colour on a background (in place), so that
    edges and textures are everywhere, not only on objects."""
    h, w = img.shape[1:]
    r = rng.random(6).tolist()
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    texture = _pattern(1 + int(4 * r[0]), r[1:3], xs, ys, float(min(h, w)))
    tint = _hsv(r[3], 0.2 + 0.6 * r[4], 0.25 + 0.7 * r[5])
    img += np.float32(0.25 + 0.35 * r[5]) * texture * (tint[:, None, None] - img)


def clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    """Small dots and thin line segments that are not objects (in place)."""
    h, w = img.shape[1:]
    side = min(h, w)
    for r in rng.random((int(rng.integers(0, 7)), 9)).tolist():
        col = _hsv(r[0], 0.8 * r[1], 0.25 + 0.7 * r[2])
        cx, cy = r[3] * w, r[4] * h
        if r[5] < 0.5:  # dot
            rad = max((0.012 + 0.023 * r[6]) * side, 0.8)
            sy, sx, py, px = _window(cx, cy, rad, rad, h, w)
            d = np.sqrt((px - cx) ** 2 + (py - cy) ** 2) - rad
        else:  # line segment, about one pixel wide
            length, a = (0.08 + 0.17 * r[6]) * side, np.pi * r[8]
            dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
            sy, sx, py, px = _window(cx, cy, abs(dx) + 1, abs(dy) + 1, h, w)
            t = np.minimum(np.maximum(((px - cx) * dx + (py - cy) * dy) / (dx * dx + dy * dy),
                                      -1), 1)
            d = np.sqrt((px - cx - t * dx) ** 2 + (py - cy - t * dy) ** 2) - 0.6
        alpha = clip01(0.5 - d) * np.float32(0.6 + 0.4 * r[7])
        region = img[:, sy, sx]
        region += alpha * (col[:, None, None] - region)


def overlaps(box: tuple[float, ...], placed: list[tuple[float, ...]], limit: float = 0.2
             ) -> bool:
    """Whether ``box`` (x0, y0, x1, y1) covers more than ``limit`` of the smaller of it and any
    placed box."""
    for q in placed:
        iw = min(box[2], q[2]) - max(box[0], q[0])
        ih = min(box[3], q[3]) - max(box[1], q[1])
        if iw > 0 and ih > 0:
            small = min((box[2] - box[0]) * (box[3] - box[1]), (q[2] - q[0]) * (q[3] - q[1]))
            if iw * ih > limit * small:
                return True
    return False


def _scene(rng: np.random.Generator, h: int, w: int, min_objects: int, max_objects: int,
           grids: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    img = background(rng, h, w, *grids)
    _busy_background(rng, img)
    clutter(img, rng)
    side = min(h, w)
    boxes, labels, names, placed = [], [], [], []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        r = rng.random(3).tolist()
        cls, colour = int(r[0] * len(CLASS_NAMES)), int(r[1] * len(COLOURS))
        frac = 0.18 + 0.3 * r[2]  # a turned shape is drawn up to 1.4x smaller (its window)
        for _ in range(12):  # rejection sampling for limited overlap, shrinking as it fails
            q = rng.random(3).tolist()
            aspect = np.sqrt(np.exp(0.4 * q[0] - 0.2))
            hw, hh = min(frac * side * aspect, w) / 2, min(frac * side / aspect, h) / 2
            cx, cy = hw + (w - 2 * hw) * q[1], hh + (h - 2 * hh) * q[2]
            corners = (cx - hw, cy - hh, cx + hw, cy + hh)
            if not overlaps(corners, placed, limit=0.35):
                break
            frac = max(0.18, frac * 0.85)
        placed.append(corners)
        tint = np.clip(COLOURS[colour] + rng.uniform(-15, 15, 3).astype(np.float32), 0, 255)
        box = _draw_object(img, rng, cls, tint, cx, cy, hw, hh)
        if box is not None:
            boxes.append(box)
            labels.append(cls)
            names.append(f"{COLOUR_NAMES[colour]} {CLASS_NAMES[cls]}")
    clutter(img, rng)  # clutter drawn last occludes parts of objects
    u8 = np.clip(img, 0, 255, out=img).astype(np.uint8)
    image = np.stack((u8[0], u8[1], u8[2]), -1)  # faster than a transposed copy
    return (image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
            caption_for(names))


def make_scenes(
    n: int = 2048,
    size: int | tuple[int, int] = 96,
    seed: int = 0,
    min_objects: int = 1,
    max_objects: int = 4,
    split: str = "train",
) -> ImageDataset:
    """``n`` procedurally generated scenes of ``size`` (an int, or ``(height, width)``) pixels.

    Returns an :class:`ImageDataset` with images ``(H, W, 3)`` uint8, captions such as
    ``"a red circle, a blue square and a green ring"``, object_boxes ``(K, 4)`` float32 cxcywh
    in [0, 1], object_labels ``(K,)`` int64 into :data:`CLASS_NAMES`, and ``labels`` ``(n,)``:
    the class of the largest object. Deterministic in ``(seed, split)``; splits are disjoint
    random streams.
    """
    n = check.integer("n", n, 1)
    h, w = check.size_hw("size", size, 1)
    if min(h, w) < 16:
        raise ValueError(f"size {size} is too small: height and width must be at least 16")
    min_objects = check.integer("min_objects", min_objects, 1)
    max_objects = check.integer("max_objects", max_objects, 1)
    if min_objects > max_objects:
        raise ValueError(f"need 1 <= min_objects ({min_objects}) <= max_objects ({max_objects})")
    split = check.choice("split", split, SPLITS)
    seed = check.integer("seed", seed, 0, check.MAX_SEED - 1)
    root = np.random.SeedSequence([seed, SPLITS.index(split)])
    grids = background_grids(h, w, root)
    streams = root.spawn(n)
    images, boxes, labels, captions = [], [], [], []
    for stream in streams:
        img, b, lab, cap = _scene(np.random.default_rng(stream), h, w, min_objects, max_objects,
                                  grids)
        images.append(img)
        boxes.append(b)
        labels.append(lab)
        captions.append(cap)
    largest = np.array([lab[np.argmax(b[:, 2] * b[:, 3])] if len(lab) else -1
                        for b, lab in zip(boxes, labels, strict=True)], np.int64)
    return ImageDataset(images=images, captions=captions, object_boxes=boxes,
                        object_labels=labels, labels=largest, class_names=list(CLASS_NAMES),
                        name=f"scenes-{split}")
