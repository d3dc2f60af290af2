"""Annotation scorers: ``p(l | view)`` over a vocabulary of annotations, batched.

A scorer is the reward model of the view MDP (docs/method.md, section 1): one reward channel per
annotation ``l``, ``r(l; x') = p(l | x')``. Every scorer follows one protocol,
:class:`AnnotationScorer`, and runs once per environment step on the batch of views that the
environment already rendered. Reward wrappers (:mod:`imgmdp_env.rewards`) check every output
with :func:`check_scores`.

Shipped scorers:

- :class:`ObjectVisibilityScorer`: ground truth from a dataset's object boxes (no pixels read).
- :class:`EmbeddingScorer`: any learned image-text (or image-image) model: a softmax over the
  vocabulary of cosine similarities between the view's embedding and each annotation's.
- :func:`curation_scorer`: an :class:`EmbeddingScorer` whose annotations are curated images
  (or their classes), with :class:`EdgeThumbnail` (coarse edge maps, no training) as the
  default image embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from imgmdp_env import checks as check
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.views import box_intersection, render_views

__all__ = [
    "AnnotationScorer",
    "EmbeddingScorer",
    "ObjectVisibilityScorer",
    "EdgeThumbnail",
    "check_scores",
    "check_vocabulary",
    "curation_scorer",
]


@runtime_checkable
class AnnotationScorer(Protocol):
    """Scores views against a vocabulary of ``L`` annotations.

    ``vocabulary``: the ``L`` annotation names (unique, non-empty), e.g. object names, captions
    or curated image ids. Calling the scorer with

    - ``views``: ``(B, 3, h, w)`` uint8, the views the environment rendered,
    - ``image_idx``: ``(B,)`` int64, the image of each view in the env's dataset,
    - ``boxes``: ``(B, 4)`` float32 cxcywh, the box of each view in that image,

    returns ``p(l | view)``: ``(B, L)`` floats in ``[0, 1]`` (a tensor or numpy array). Rows need
    not sum to 1 (several objects may be visible at once). A scorer may ignore the state
    (learned models) or the pixels (ground-truth scorers).
    """

    vocabulary: list[str]

    def __call__(
        self, views: torch.Tensor, image_idx: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor | np.ndarray: ...


def check_vocabulary(vocabulary: Sequence[str], owner: str) -> list[str]:
    """Return ``vocabulary`` as a list, refusing an empty one, non-strings and duplicates."""
    if vocabulary is None or isinstance(vocabulary, str | bytes) or not isinstance(
            vocabulary, Iterable):
        raise TypeError(f"{owner}: the vocabulary ({vocabulary!r:.80}) must be a list of "
                        "strings (one string would be split into characters)")
    vocab = list(vocabulary.tolist() if isinstance(vocabulary, np.ndarray) else vocabulary)
    if not vocab:
        raise ValueError(f"{owner}: the vocabulary is empty; it needs at least one annotation")
    bad = [v for v in vocab if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{owner}: vocabulary entries must be strings, got {bad[:3]!r}")
    vocab = [str(v) for v in vocab]
    seen: set[str] = set()
    dup = [v for v in vocab if v in seen or seen.add(v)]
    if dup:
        raise ValueError(f"{owner}: duplicate vocabulary entries {sorted(set(dup))[:5]!r}")
    return vocab


def check_scores(scores: Any, scorer: object, batch: int, n_vocab: int) -> torch.Tensor:
    """Validate a scorer's output and return it as a ``(batch, n_vocab)`` float32 CPU tensor.

    Raises ``ValueError`` naming the scorer's class for a wrong shape, NaN/inf, or values
    outside ``[0, 1]`` (a tolerance of 1e-5 absorbs rounding; such values are clipped).
    """
    name = type(scorer).__name__
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(scores)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{name} returned {type(scores).__name__}; expected a (B, L) tensor or "
                        "numpy array of probabilities")
    if tuple(scores.shape) != (batch, n_vocab):
        raise ValueError(f"{name} returned shape {tuple(scores.shape)}; expected "
                         f"({batch}, {n_vocab}) = (batch of views, len(vocabulary))")
    scores = scores.detach().to("cpu", torch.float32)
    finite = torch.isfinite(scores)
    if not finite.all():
        rows = torch.nonzero(~finite.all(1)).flatten()[:5].tolist()
        raise ValueError(f"{name} returned NaN or inf for view(s) {rows}: p(l | view) must be "
                         "finite")
    lo, hi = float(scores.min()), float(scores.max())
    if lo < -1e-5 or hi > 1 + 1e-5:
        raise ValueError(f"{name} returned values in [{lo:.4g}, {hi:.4g}]; p(l | view) must lie "
                         "in [0, 1] (apply a softmax or sigmoid to logits)")
    return scores.clamp(0.0, 1.0)


def _dataset_name(dataset: ImageDataset) -> str:
    return getattr(dataset, "name", "dataset")


class ObjectVisibilityScorer:
    """Ground truth ``p(object class | view)`` from a dataset's object boxes.

    For an object box ``o`` and a view box ``v`` (both in the image's normalised coordinates)::

        inside(o, v) = area(o & v) / area(o)                       # how much of the object
        fills(o, v)  = min(1, area(o & v) / (alpha * area(v)))     # how much of the view
        vis(o, v)    = inside(o, v) * fills(o, v)
        p(l | v)     = max over the image's objects o of class l of vis(o, v)   (0 if none)

    So ``p = 1`` exactly when the whole object is in the view and fills at least ``alpha`` of
    it (the view may extend past the image: that area counts as view area). Boxes only: an
    object occluded by a later one still counts as visible. The objects of all images are
    packed once into padded ``(N, K_max, 4)`` boxes and ``(N, K_max)`` labels, so a call is a
    few tensor ops on ``(B, K_max)`` with no loop over the batch.

    Args:
        dataset: an :class:`~imgmdp_env.datasets.ImageDataset` with ``object_boxes``,
            ``object_labels`` and ``class_names``: the env's own dataset (the scorer indexes
            it by the env's ``image_index``).
        alpha: the fraction of the view an object must fill for full visibility, in (0, 1].

    Example::

        >>> from imgmdp_env.datasets import make_dataset
        >>> scorer = ObjectVisibilityScorer(make_dataset("scenes", n=8, size=64))
        >>> scorer.vocabulary[:3]
        ['circle', 'square', 'triangle']
    """

    def __init__(self, dataset: ImageDataset, alpha: float = 0.5) -> None:
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"ObjectVisibilityScorer needs an ImageDataset (e.g. the env's "
                            f"env.unwrapped.dataset), not {type(dataset).__name__}")
        missing = [k for k in ("object_boxes", "object_labels", "class_names")
                   if getattr(dataset, k, None) is None]
        if missing:
            raise ValueError(f"ObjectVisibilityScorer needs a dataset with object boxes; dataset "
                             f"{_dataset_name(dataset)!r} has no {', '.join(missing)}")
        self.alpha = check.number("alpha", alpha, 0, 1, lo_open=True)
        self.vocabulary = check_vocabulary(dataset.class_names, "ObjectVisibilityScorer")
        n, n_cls = len(dataset), len(self.vocabulary)
        k_max = max(1, max(len(b) for b in dataset.object_boxes))
        self.boxes = torch.zeros(n, k_max, 4)
        self.boxes[..., 2:] = 1.0  # padding: a harmless unit box with no class
        self.labels = torch.full((n, k_max), n_cls, dtype=torch.int64)  # n_cls = padding
        for i, (b, lab) in enumerate(zip(dataset.object_boxes, dataset.object_labels,
                                         strict=True)):
            lab = np.asarray(lab, np.int64)
            if len(lab) and (lab.min() < 0 or lab.max() >= n_cls):
                raise ValueError(f"dataset {_dataset_name(dataset)!r}: image {i} has object "
                                 f"labels {lab.tolist()} outside [0, {n_cls})")
            self.boxes[i, : len(lab)] = torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4))
            self.labels[i, : len(lab)] = torch.from_numpy(lab)

    def __call__(
        self, views: torch.Tensor, image_idx: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """``(B, L)`` visibilities of each class in the views at ``boxes`` of ``image_idx``."""
        return self.visibility(torch.as_tensor(image_idx), torch.as_tensor(boxes))

    def visibility(self, image_idx: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """image_idx: ``(B,)``; boxes: ``(B, 4)`` cxcywh. Returns ``(B, L)`` float32."""
        obj = self.boxes[image_idx.long()]  # (B, K, 4)
        view = boxes.float()[:, None, :]  # (B, 1, 4)
        inter = box_intersection(obj, view)  # (B, K)
        a_obj, a_view = obj[..., 2:].prod(-1), view[..., 2:].prod(-1)
        inside = (inter / a_obj.clamp(min=1e-12)).clamp(max=1.0)
        fills = (inter / (self.alpha * a_view).clamp(min=1e-12)).clamp(max=1.0)
        vis = inside * fills  # (B, K)
        out = torch.zeros(len(obj), len(self.vocabulary) + 1)
        out.scatter_reduce_(1, self.labels[image_idx.long()], vis, reduce="amax")
        return out[:, :-1]


class EmbeddingScorer:
    """Adaptor for any learned embedding model: ``p(l | view) = softmax_l(cos(f(view), g(l)) / T)``.

    The image encoder ``f`` maps ``(B, 3, h, w)`` uint8 views to ``(B, D)`` features; the
    annotations' embeddings ``g(l)`` are given as ``text_embeddings`` ``(L, D)`` or computed once
    by ``text_encoder(vocabulary)``. Both are L2-normalised, so the logits are cosine
    similarities over the temperature ``T`` (CLIP's convention). Rows sum to 1: the scorer says
    which annotation fits the view best, not whether any does. The encoder runs under
    ``torch.no_grad()`` on the device of its first parameter (pass modules in eval mode).

    Args:
        image_encoder: callable ``(B, 3, h, w) uint8 -> (B, D)`` (e.g. an ``nn.Module``).
        vocabulary: the ``L`` annotation names.
        text_embeddings: ``(L, D)`` embeddings of the vocabulary, or
        text_encoder: callable ``list[str] -> (L, D)``, called once here.
        temperature: ``T > 0``; smaller is sharper.
        groups: with several embeddings per annotation: ``(P,)`` ints in ``[0, L)``, the
            annotation of each of the ``P`` rows of ``text_embeddings``; the softmax runs over
            the ``P`` rows and ``p(l | view)`` sums the rows of annotation ``l`` (a soft nearest
            neighbour over prototypes).

    Example::

        >>> import torch
        >>> enc = lambda v: v.float().mean((2, 3))  # (B, 3): mean colour as a toy embedding
        >>> scorer = EmbeddingScorer(enc, ["red", "green"], torch.eye(3)[:2], temperature=0.1)
        >>> red = torch.zeros(1, 3, 8, 8, dtype=torch.uint8); red[:, 0] = 255
        >>> scorer(red, torch.zeros(1), torch.zeros(1, 4)).argmax().item()
        0
    """

    def __init__(
        self,
        image_encoder: Callable[[torch.Tensor], torch.Tensor],
        vocabulary: Sequence[str],
        text_embeddings: torch.Tensor | np.ndarray | None = None,
        text_encoder: Callable[[list[str]], torch.Tensor] | None = None,
        temperature: float = 0.07,
        groups: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        name = type(self).__name__
        self.vocabulary = check_vocabulary(vocabulary, name)
        if not callable(image_encoder):
            raise TypeError(f"{name}: image_encoder ({image_encoder!r:.80}) must be callable "
                            "(B, 3, h, w) uint8 -> (B, D)")
        if (text_embeddings is None) == (text_encoder is None):
            raise ValueError(f"{name}: pass exactly one of text_embeddings and text_encoder")
        if text_encoder is not None and not callable(text_encoder):
            raise TypeError(f"{name}: text_encoder ({text_encoder!r:.80}) must be callable "
                            "list[str] -> (L, D)")
        temperature = check.number("temperature", temperature, 0, lo_open=True)
        if groups is not None:
            groups = check.index_array(f"{name}: groups", groups, len(self.vocabulary))
            if groups.ndim != 1:
                raise ValueError(f"{name}: groups must be a 1-D list of annotation ids, got "
                                 f"shape {groups.shape}")
        if text_embeddings is None:
            with torch.no_grad():
                text_embeddings = text_encoder(self.vocabulary)
        try:
            emb = torch.as_tensor(np.asarray(text_embeddings) if not isinstance(
                text_embeddings, torch.Tensor) else text_embeddings).detach().float().cpu()
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name}: annotation embeddings must be a (L, D) tensor or array "
                            f"of numbers, got {type(text_embeddings).__name__}") from err
        n_rows = len(self.vocabulary) if groups is None else len(groups)
        if emb.ndim != 2 or len(emb) != n_rows or not torch.isfinite(emb).all():
            raise ValueError(f"{name}: annotation embeddings must be finite with "
                             f"shape ({n_rows}, D) (one row per "
                             f"{'annotation' if groups is None else 'group entry'}), got "
                             f"{tuple(emb.shape)}")
        self.groups = None if groups is None else torch.from_numpy(groups)
        self.image_encoder = image_encoder
        self.text_embeddings = F.normalize(emb, dim=-1)
        self.temperature = temperature

    def __call__(
        self, views: torch.Tensor, image_idx: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        params = getattr(self.image_encoder, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")
        with torch.no_grad():
            z = torch.as_tensor(self.image_encoder(views.to(device))).float()
        if z.shape != (len(views), self.text_embeddings.shape[1]):
            raise ValueError(f"{type(self).__name__}: image_encoder returned shape "
                             f"{tuple(z.shape)}; expected ({len(views)}, "
                             f"{self.text_embeddings.shape[1]}) = (B, D of the annotations)")
        z = F.normalize(z, dim=-1)
        logits = z @ self.text_embeddings.to(z.device).T / self.temperature
        p = torch.softmax(logits, dim=-1).cpu()
        if self.groups is None:
            return p
        return torch.zeros(len(p), len(self.vocabulary)).index_add_(1, self.groups, p)


class EdgeThumbnail:
    """A training-free image embedding: where the view's brightness changes, on a coarse grid.

    The luminance's absolute differences between neighbouring pixels (``|dx| + |dy|``) are
    averaged over a ``size x size`` grid and centred (their mean subtracted), so the cosine
    similarity of two embeddings is the correlation of their edge maps: high when outlines sit
    in the same places, whatever the colours. ``(B, 3, h, w)`` uint8 -> ``(B, size * size)``.

    How weak it is: it knows layout, not objects. It is invariant to colour and brightness but
    not to shifts, scale or rotation; clutter with similar outlines scores like the item. On the
    procedural scenes, with the object crops of another split as the curated set (8 classes,
    ``curation_scorer`` defaults), views that frame the goal object like the crops get
    ``p(goal) ~ 0.7`` on average (top-1 ~ 0.7), random views ~ 0.12 (chance 0.125). So it
    rewards *framing an object the way the curated items are framed*, which is a curation
    signal, and no more; pass a learned encoder to :func:`curation_scorer` for anything better.
    """

    def __init__(self, size: int = 12) -> None:
        self.size = check.integer("size", size, 1)

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        x = views[:, 0].float().mul_(0.299 / 255)  # luminance in [0, 1], in place: fast
        x = x.add_(views[:, 1].float(), alpha=0.587 / 255).add_(views[:, 2].float(),
                                                               alpha=0.114 / 255)[:, None]
        e = (x[..., :-1, 1:] - x[..., :-1, :-1]).abs_()  # |dx|
        e += (x[..., 1:, :-1] - x[..., :-1, :-1]).abs_()  # |dy|
        e = F.adaptive_avg_pool2d(e, self.size).flatten(1)
        return e - e.mean(1, keepdim=True)


def curation_scorer(
    curated: ImageDataset,
    view_size: int | tuple[int, int],
    embedding: Callable[[torch.Tensor], torch.Tensor] | None = None,
    prototypes: str = "auto",
    temperature: float = 0.05,
    per_class: int = 64,
    batch_size: int = 512,
) -> EmbeddingScorer:
    """An :class:`EmbeddingScorer` whose annotations are curated images.

    Curated images are rendered whole at ``view_size`` (the same crop kernel as the env's
    views) and embedded. ``prototypes="images"``: each image is one annotation (named
    ``"<dataset name>[i]"``). ``"classes"``: each labelled class is one annotation (named by
    ``class_names``; classes without images are left out) and ``p(class | view)`` is the summed
    softmax over up to ``per_class`` images of that class (the first ones): a soft nearest
    neighbour. ``"auto"``: ``"classes"`` when the set has ``labels`` and ``class_names``.

    curated: an :class:`ImageDataset`; embedding: ``(B, 3, h, w) uint8 -> (B, D)`` (default
    :class:`EdgeThumbnail`); temperature: of the softmax over cosine similarities.
    """
    if not isinstance(curated, ImageDataset):
        raise TypeError(f"curated must be an ImageDataset (see imgmdp_env.datasets."
                        f"make_dataset), not {type(curated).__name__}")
    view_size = check.size_hw("view_size", view_size)
    if embedding is not None and not callable(embedding):
        raise TypeError(f"embedding ({embedding!r:.80}) must be None or callable "
                        "(B, 3, h, w) uint8 -> (B, D)")
    prototypes = check.choice("prototypes", prototypes, ("auto", "images", "classes"))
    check.number("temperature", temperature, 0, lo_open=True)
    per_class = check.integer("per_class", per_class, 1)
    batch_size = check.integer("batch_size", batch_size, 1)
    labelled = curated.labels is not None and curated.class_names is not None
    if prototypes == "auto":
        prototypes = "classes" if labelled else "images"
    if prototypes == "classes" and not labelled:
        raise ValueError(f"prototypes='classes' needs labels and class_names; curated set "
                         f"{_dataset_name(curated)!r} has none")
    if prototypes == "images":
        keep = np.arange(len(curated))
        vocab = [f"{_dataset_name(curated)}[{i}]" for i in keep]
        groups = None
    else:
        labels = np.asarray(curated.labels, np.int64)
        present = [c for c in range(len(curated.class_names)) if (labels == c).any()]
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in present])
        vocab = [curated.class_names[c] for c in present]
        groups = np.searchsorted(present, labels[keep])
    embedding = EdgeThumbnail() if embedding is None else embedding
    bank = curated.bank()
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    chunks = []
    with torch.no_grad():
        for start in range(0, len(keep), batch_size):
            idx = torch.from_numpy(keep[start : start + batch_size])
            views = render_views(bank, idx, whole.expand(len(idx), 4), view_size)
            chunks.append(torch.as_tensor(embedding(views)).float().cpu())
    return EmbeddingScorer(embedding, vocab, text_embeddings=torch.cat(chunks),
                           temperature=temperature, groups=groups)
