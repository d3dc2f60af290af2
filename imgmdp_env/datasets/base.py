"""The dataset protocol: uint8 images held in RAM, with optional annotations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.views import ImageBank


@dataclass
class ImageDataset:
    """Images decoded once and held in RAM, with optional annotations.

    images: N arrays ``(H_i, W_i, 3)`` uint8; sizes may differ between images (the crop kernel
        addresses each image in its own normalised coordinates, so nothing is padded or resized).
    captions: N strings, e.g. ``"a red circle and a blue square"``.
    object_boxes: N float32 arrays ``(K_i, 4)``, cxcywh in the image's normalised coordinates.
    object_labels: N int64 arrays ``(K_i,)``, indices into ``class_names``.
    labels: ``(N,)`` int64 image-level class (single-item datasets such as ``"fashion"``).
    class_names: names of the classes used by ``labels`` / ``object_labels``.
    """

    images: list[np.ndarray]
    captions: list[str] | None = None
    object_boxes: list[np.ndarray] | None = None
    object_labels: list[np.ndarray] | None = None
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    name: str = "dataset"
    _banks: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.name = check.string("name", self.name)
        if isinstance(self.images, str | bytes) or not isinstance(self.images,
                                                                  Sequence | np.ndarray):
            raise TypeError(f"dataset {self.name!r}: images must be a list of (H, W, 3) uint8 "
                            f"arrays, not {type(self.images).__name__}")
        n = len(self.images)
        if n == 0:
            raise ValueError(f"dataset {self.name!r} has no images")
        for i, img in enumerate(self.images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                raise TypeError(f"dataset {self.name!r}: image {i} must be a uint8 numpy array, "
                                f"got {type(img).__name__} {getattr(img, 'dtype', '')}")
            if img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
                raise ValueError(f"dataset {self.name!r}: image {i} has shape {img.shape}, "
                                 "expected (H, W, 3) with H, W >= 1")
        where = f"dataset {self.name!r}"
        if self.captions is not None:
            self.captions = check.string_list(f"{where}: captions", self.captions, n)
        if self.class_names is not None:
            self.class_names = check.string_list(f"{where}: class_names", self.class_names)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.dtype.kind not in "iu" or labels.shape != (n,):
                raise (TypeError if labels.dtype.kind not in "iu" else ValueError)(
                    f"{where}: labels must be ({n},) integers, got {labels.dtype} of shape "
                    f"{labels.shape}")
            self.labels = labels.astype(np.int64, copy=False)
        if (self.object_boxes is None) != (self.object_labels is None):
            raise ValueError(f"{where}: object_boxes and object_labels go together")
        if self.object_boxes is not None:
            self._check_objects(n, where)

    def _check_objects(self, n: int, where: str) -> None:
        for key in ("object_boxes", "object_labels"):
            value = getattr(self, key)
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise TypeError(f"{where}: {key} must be a list (one array per image), not "
                                f"{type(value).__name__}")
            if len(value) != n:
                raise ValueError(f"{where}: {key} has {len(value)} entries for {n} images")
        for i, (b, lab) in enumerate(zip(self.object_boxes, self.object_labels, strict=True)):
            b, lab = np.asarray(b), np.asarray(lab)
            if b.dtype.kind not in "iuf" or lab.dtype.kind not in "iu":
                raise TypeError(f"{where}: image {i} has object_boxes of {b.dtype} and "
                                f"object_labels of {lab.dtype}; expected numbers and integers")
            k = lab.shape[0] if lab.ndim == 1 else -1
            if lab.ndim != 1 or b.shape not in ((k, 4),) + (((0,),) if k == 0 else ()):
                raise ValueError(f"{where}: image {i} has object_boxes of shape {b.shape} and "
                                 f"object_labels of shape {lab.shape}; expected (K, 4) and (K,)")
            if not np.isfinite(b).all() or (b.reshape(-1, 4)[:, 2:] <= 0).any():
                raise ValueError(f"{where}: image {i} has object boxes {b.tolist()}; boxes "
                                 "must be finite cxcywh with width and height > 0")

    def __len__(self) -> int:
        return len(self.images)

    def bank(self, levels: int = 4, fill: tuple[int, int, int] = (0, 0, 0)) -> ImageBank:
        """The images packed for :func:`imgmdp_env.views.render_views` (built once, cached)."""
        key = (check.integer("levels", levels, 1), check.colour("fill", fill))
        if key not in self._banks:
            self._banks[key] = ImageBank(self.images, levels=levels, fill=fill)
        return self._banks[key]

    def subset(self, indices: np.ndarray | list[int]) -> ImageDataset:
        """A dataset of the images at ``indices`` (integers in ``[0, len(self))``; floats,
        bools and out-of-range indices are refused) with their annotations."""
        idx = check.index_array("indices", indices, len(self)).reshape(-1).tolist()
        pick = lambda xs: None if xs is None else [xs[i] for i in idx]  # noqa: E731
        return ImageDataset(
            images=pick(self.images),
            captions=pick(self.captions),
            object_boxes=pick(self.object_boxes),
            object_labels=pick(self.object_labels),
            labels=None if self.labels is None else np.asarray(self.labels)[idx],
            class_names=self.class_names,
            name=self.name,
        )
