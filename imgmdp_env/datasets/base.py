"""The dataset protocol: uint8 images held in RAM, with optional annotations."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
        n = len(self.images)
        if n == 0:
            raise ValueError(f"dataset {self.name!r} has no images")
        for i, img in enumerate(self.images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                raise TypeError(f"dataset {self.name!r}: image {i} must be a uint8 numpy array, "
                                f"got {type(img).__name__} {getattr(img, 'dtype', '')}")
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"dataset {self.name!r}: image {i} has shape {img.shape}, "
                                 "expected (H, W, 3)")
        for key in ("captions", "object_boxes", "object_labels", "labels"):
            value = getattr(self, key)
            if value is not None and len(value) != n:
                raise ValueError(f"dataset {self.name!r}: {key} has {len(value)} entries for "
                                 f"{n} images")
        if (self.object_boxes is None) != (self.object_labels is None):
            raise ValueError("object_boxes and object_labels go together")

    def __len__(self) -> int:
        return len(self.images)

    def bank(self, levels: int = 4, fill: tuple[int, int, int] = (0, 0, 0)) -> ImageBank:
        """The images packed for :func:`imgmdp_env.views.render_views` (built once, cached)."""
        key = (levels, tuple(fill))
        if key not in self._banks:
            self._banks[key] = ImageBank(self.images, levels=levels, fill=fill)
        return self._banks[key]

    def subset(self, indices: np.ndarray | list[int]) -> ImageDataset:
        """A dataset of the images at ``indices`` with their annotations."""
        idx = [int(i) for i in indices]
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
