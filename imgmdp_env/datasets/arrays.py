"""Images a user already holds in memory: numpy arrays, torch tensors or PIL images.

Accepted layouts (uint8 only, so that the pixel scale is never guessed):

- a batch ``(N, H, W, 3)`` or ``(N, 3, H, W)``; channel-first is detected when
  ``shape[1] == 3`` and ``shape[-1] != 3``. A grayscale batch must say so with its channel
  axis, ``(N, H, W, 1)`` or ``(N, 1, H, W)``, and is copied to three channels.
- a list or tuple whose items are PIL images (any mode, converted by :func:`pil_to_rgb`) or
  arrays/tensors ``(H, W, 3)``, ``(3, H, W)``, ``(H, W, 1)`` or ``(H, W)``; sizes may differ.

A bare rank-3 array is refused: ``(H, W, 3)`` is one image and ``(N, H, W)`` a grayscale batch,
and guessing between them would silently give the wrong dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets.base import ImageDataset

__all__ = ["from_arrays", "pil_to_rgb"]

_UINT8_HINT = ("convert floats in [0, 1] with (x * 255).round().astype(np.uint8), or "
               "x.mul(255).round().to(torch.uint8) for a tensor")


def pil_to_rgb(img: Any) -> np.ndarray:
    """A PIL image of any mode -> ``(H, W, 3)`` uint8.

    Alpha (modes RGBA, LA, PA, and P or L with a transparency colour) is composited onto black,
    the colour the crop kernel fills outside an image, so transparent regions look like
    "outside". 16- and 32-bit integer grayscale (I;16*, I) is scaled from 0..65535 to 0..255;
    float grayscale (F) is taken as 0..1 when its maximum is at most 1, else as 0..255. The
    other modes (1, L, P, CMYK, YCbCr, ...) use PIL's own conversion. Animated images give
    their first frame.
    """
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        else:
            a = a / 257.0
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
        return (rgba[..., :3] * rgba[..., 3:] // 255).astype(np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _one_image(x: Any, i: int) -> np.ndarray:
    """Item ``i`` of a list -> ``(H, W, 3)`` uint8."""
    if hasattr(x, "mode") and hasattr(x, "convert"):  # a PIL image
        return pil_to_rgb(x)
    if not (isinstance(x, np.ndarray) or _is_tensor(x)):
        raise TypeError(f"list item {i} is a {type(x).__name__}: items must be PIL images or "
                        "(H, W, 3) uint8 arrays/tensors")
    a = _to_numpy(x)
    if a.dtype != np.uint8:
        raise TypeError(f"list item {i} has dtype {a.dtype}, expected uint8: {_UINT8_HINT}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] not in (1, 3) or 0 in a.shape:
        raise ValueError(f"list item {i} has shape {tuple(a.shape)}: expected (H, W, 3), "
                         "(3, H, W), (H, W, 1) or (H, W)")
    a = np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a
    return np.ascontiguousarray(a)


def _batch(x: Any) -> list[np.ndarray]:
    """An ``(N, H, W, C)`` / ``(N, C, H, W)`` array or tensor -> N ``(H, W, 3)`` arrays."""
    a = _to_numpy(x)
    kind = "tensor" if _is_tensor(x) else "array"
    if a.dtype != np.uint8:
        raise TypeError(f"image {kind} has dtype {a.dtype}, expected uint8: {_UINT8_HINT}")
    if a.ndim == 3:
        raise ValueError(
            f"image {kind} of shape {tuple(a.shape)} is ambiguous: expected a batch (N, H, W, 3) "
            "or (N, 3, H, W). For one (H, W, 3) image pass x[None]; for a grayscale batch "
            "(N, H, W) pass x[..., None]"
        )
    if a.ndim != 4:
        raise ValueError(f"image {kind} has rank {a.ndim} (shape {tuple(a.shape)}): expected "
                         "(N, H, W, 3) or (N, 3, H, W) uint8")
    if a.shape[-1] not in (1, 3) and a.shape[1] in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    if a.shape[-1] not in (1, 3):
        raise ValueError(f"image {kind} of shape {tuple(a.shape)} has no channel axis of size 3 "
                         "(or 1 for grayscale) at position 1 or -1: expected (N, H, W, 3) or "
                         "(N, 3, H, W)")
    if 0 in a.shape:
        raise ValueError(f"image {kind} of shape {tuple(a.shape)} is empty")
    a = np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else np.ascontiguousarray(a)
    return list(a)


def from_arrays(
    x: Any,
    captions: Sequence[str] | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    name: str = "arrays",
) -> ImageDataset:
    """An :class:`ImageDataset` from images in memory (layouts in the module docstring).

    x: ``(N, H, W, 3)`` / ``(N, 3, H, W)`` uint8 numpy array or torch tensor, or a list of PIL
    images / ``(H, W, 3)`` uint8 arrays of any sizes. captions: N strings. labels: ``(N,)``
    integers. Returns images ``(H, W, 3)`` uint8 (a list sharing memory with ``x`` when ``x``
    is already a contiguous channel-last numpy array).
    """
    name = check.string("name", name)
    if isinstance(x, list | tuple):
        if len(x) == 0:
            raise ValueError("the list of images is empty")
        images = [_one_image(item, i) for i, item in enumerate(x)]
    elif isinstance(x, np.ndarray) or _is_tensor(x):
        images = _batch(x)
    else:
        raise TypeError(f"images of type {type(x).__name__} are not supported: pass an "
                        "(N, H, W, 3) / (N, 3, H, W) uint8 array or tensor, or a list of PIL "
                        "images or (H, W, 3) uint8 arrays")
    if captions is not None:
        captions = check.string_list("captions", captions)
    if labels is not None:
        labels = _to_numpy(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise (ValueError if labels.dtype.kind in "iu" else TypeError)(
                f"labels must be (N,) integers, got {labels.dtype} of shape {labels.shape}")
        labels = labels.astype(np.int64)
    return ImageDataset(images=images, captions=captions, labels=labels, name=name)
