"""Training batches for the AB agent, drawn from the environment's own dynamics.

The agent learns off-policy from random transitions of the view MDP: the behaviour policy is
:func:`imgmdp_env.views.sample_boxes` (random resized crops), a transition is
:func:`imgmdp_env.views.render_views` on the new box, and the action between two views is
:func:`imgmdp_env.views.relative_box`. Images stay in RAM, packed once in an ``ImageBank``.

One batch (a dict, see :meth:`TransitionSampler.sample`) holds:

- the *base* batch: ``V`` augmented crops of ``base_batch`` images (SimCLR/DINO: 2 crops with
  flip and colour jitter; CLIP: 1 crop and the image's caption);
- the *bootstrap* batch: ``n_views`` un-augmented views of ``boot_images`` images (scale
  ``(0.05, 1)`` by default; colour-jittered with ``boot_color_jitter > 0``), their boxes and
  the relative boxes between every ordered pair.

Base and bootstrap images may come from different datasets (the paper's decoupled setting:
``base_dataset="fashion"``, ``boot_dataset="fashion-scenes"``). Two random streams, one per
batch, so the base batches are identical with and without bootstrapping (``ab_weight = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imgmdp_env.datasets import ImageDataset
from imgmdp_env.views import relative_box, render_views, sample_boxes

__all__ = ["BASES", "Batch", "TransitionSampler", "pair_index", "simclr_augment"]

BASES = ("simclr", "dino", "clip")


def simclr_augment(views: torch.Tensor, generator: torch.Generator | None = None,
                   jitter: float = 0.8, hue: float = 0.2, p_jitter: float = 0.8,
                   p_gray: float = 0.2, p_flip: float = 0.5, return_flip: bool = False
                   ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's view augmentations, batched: horizontal flip (probability ``p_flip``; 0 for
    views whose boxes must stay exact, such as bootstrap views), colour jitter (brightness,
    contrast, saturation by factors in ``[1 - jitter, 1 + jitter]``, a hue change of up to
    ``hue`` turns) with probability ``p_jitter``, grayscale with probability ``p_gray``. The
    strengths are SimCLR's at s = 1 (Chen et al. 2020, Appendix A); two steps differ from
    torchvision's ``ColorJitter``: the four jitters are applied in a fixed order (torchvision
    permutes them), and the hue change is a rotation of the chroma plane in YIQ space (linear,
    cheap, batched), an approximation of torchvision's shift of the HSV hue channel that gives
    different colours for the same angle. No blur (the views are small).

    views: ``(B, 3, H, W)`` uint8 on any device; generator: a CPU generator for the per-view
    parameters. Returns ``(B, 3, H, W)`` uint8 on the views' device (rounded back to 8 bits,
    like torchvision's uint8 transforms), so that every view reaches an encoder in one dtype;
    with ``return_flip`` also ``(B,)`` bool: which views were mirrored.
    """
    b, dev = views.shape[0], views.device
    u = torch.rand(b, 7, generator=generator).to(dev)
    x = views.float().div_(255.0)
    flip = u[:, 0] < p_flip
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    on = (u[:, 1] < p_jitter).float().view(b, 1, 1, 1)
    bright, contrast, sat = (1 + on * jitter * (2 * u[:, i].view(b, 1, 1, 1) - 1)
                             for i in (2, 3, 4))
    gray_w = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    x = (x * bright).clamp_(0, 1)
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp_(0, 1)
    gray = (x * gray_w).sum(1, keepdim=True)
    x = ((x - gray) * sat + gray).clamp_(0, 1)
    # hue: rotate the chroma plane of YIQ by theta (a cheap, linear stand-in for HSV hue shift)
    theta = on.view(b) * hue * (2 * u[:, 5] - 1) * 2 * math.pi
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], device=dev)
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3, device=dev)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1, cos, -sin, sin, cos
    m = torch.linalg.inv(yiq) @ rot @ yiq  # (B, 3, 3)
    x = torch.einsum("bij,bjhw->bihw", m, x).clamp_(0, 1)
    to_gray = (u[:, 6] < p_gray).view(b, 1, 1, 1)
    x = torch.where(to_gray, (x * gray_w).sum(1, keepdim=True).expand_as(x), x)
    out = x.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return (out, flip.to(dev)) if return_flip else out


def pair_index(n: int) -> torch.Tensor:
    """``(n, n - 1)`` int64: row ``i`` lists the other views ``j != i`` in increasing order."""
    idx = torch.arange(n)
    return torch.stack([torch.cat([idx[:i], idx[i + 1:]]) for i in range(n)])


@dataclass
class Batch:
    """One training batch of :class:`TransitionSampler` (every view uint8, the encoders' input).

    base_views: ``(V, B, 3, h, w)`` uint8, ``V`` crops of ``B`` base images (SimCLR / DINO: 2
        augmented crops; CLIP: 1 crop). base_index: ``(B,)`` int64 image indices.
    captions: CLIP only: ``(B, S)`` int64 token ids or ``(B, F)`` float32 caption features.
    boot_views: ``(M, 3, h, w)`` uint8, ``M = Bb * n`` un-augmented views (image ``b`` at rows
        ``b n ... b n + n - 1``); None without bootstrapping.
    boot_boxes: ``(Bb, n, 4)`` float32 cxcywh boxes of those views; boot_index ``(Bb,)`` int64.
    actions: ``(M, n - 1, 4)`` float32: row ``b n + i``, slot ``s``, the relative box from view
        ``i`` to view ``pair_index(n)[i, s]`` of the same image (the transitions).
    candidates: ``(M, R, 4)`` float32 random relative boxes (``candidates="random"`` only).
    boot_from_base: the bootstrap views are base crops (``boot_source="base"``): row
        ``b 2 + c`` is ``base_views[c, b]``, so no extra encoder pass is needed for them.
    """

    base_views: torch.Tensor
    base_index: torch.Tensor
    captions: torch.Tensor | None = None
    boot_views: torch.Tensor | None = None
    boot_boxes: torch.Tensor | None = None
    boot_index: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    boot_from_base: bool = False

    @property
    def bootstrap(self) -> bool:
        """Whether the batch carries a bootstrap part."""
        return self.boot_views is not None


class TransitionSampler:
    """Draws base and bootstrap batches from datasets in RAM.

    base_dataset / boot_dataset: image sources (the same object in the coupled setting);
    base: ``"simclr"``, ``"dino"`` or ``"clip"``; view_size: side of every view;
    base_batch: images per base batch; boot_images: images per bootstrap batch (0 = none);
    n_views: views per bootstrap image; boot_scale / base_scale: area range of the crops;
    candidates: ``"views"`` (the boxes to the other views, already in the batch) or
    ``"random"`` (also ``n_random`` random boxes from each view, in ``batch["candidates"]``);
    caption_inputs: ``(N_base, S)`` token ids or ``(N_base, F)`` features of every base image's
    caption (CLIP only); color_jitter: SimCLR's colour strength ``s`` (brightness, contrast,
    saturation ``0.8 s``, hue ``0.2 s``) of the base crops; boot_color_jitter: the same for the
    bootstrap views (0, the default: un-augmented; > 0 is the "augmentations" ablation; never
    flipped, so the relative boxes stay exact); boot_source: ``"views"`` (the method: fresh
    un-augmented views) or ``"base"`` (the cheap variant: the two augmented crops of the first
    ``boot_images`` base images are the bootstrap pair, so the online encoder runs on no extra
    view; a mirrored source view mirrors its action, ``dx -> -dx``; SimCLR/DINO only);
    boot_annotated: the bootstrap images are the first ``boot_images`` images of the base
    batch (their crop 0 is among the SimCLR annotations, their caption among CLIP's), not
    drawn from the bootstrap stream (which then draws the boxes only);
    seed: seeds the two random streams.
    render_device: where the views are rendered and augmented (the banks are copied there):
    ``"cuda"`` keeps the pixels on the GPU, only boxes and indices cross; the batches are the
    same bytes as on the CPU (the random streams stay on the CPU).
    """

    def __init__(self, base_dataset: ImageDataset, boot_dataset: ImageDataset | None = None,
                 base: str = "simclr", view_size: int = 64, base_batch: int = 64,
                 boot_images: int = 8, n_views: int = 4,
                 boot_scale: tuple[float, float] = (0.05, 1.0),
                 base_scale: tuple[float, float] = (0.08, 1.0), candidates: str = "views",
                 n_random: int = 4, caption_inputs: torch.Tensor | None = None,
                 color_jitter: float = 1.0, boot_color_jitter: float = 0.0,
                 boot_source: str = "views", boot_annotated: bool = False,
                 seed: int = 0, render_device: torch.device | str = "cpu") -> None:
        if base not in BASES:
            raise ValueError(f"base {base!r} is not one of {BASES}")
        if candidates not in ("views", "random"):
            raise ValueError(f"candidates {candidates!r} must be 'views' or 'random'")
        if n_views < 2:
            raise ValueError(f"n_views ({n_views}) must be >= 2 to form pairs")
        if boot_source not in ("views", "base"):
            raise ValueError(f"boot_source {boot_source!r} must be 'views' or 'base'")
        if boot_source == "base":
            if base == "clip":
                raise ValueError("boot_source='base' needs two crops per base image: SimCLR or "
                                 "DINO, not CLIP (one crop and its caption)")
            bad = [f"n_views = 2 (got {n_views})" if n_views != 2 else "",
                   f"boot_images <= base_batch (got {boot_images} > {base_batch})"
                   if boot_images > base_batch else "",
                   f"boot_color_jitter = 0 (the crops are augmented already; got "
                   f"{boot_color_jitter})" if boot_color_jitter > 0 else ""]
            if any(bad):
                raise ValueError("boot_source='base' pairs the 2 crops of the first boot_images "
                                 "base images: it needs " + "; ".join(filter(None, bad)))
        if boot_annotated:
            bad = [f"boot_source='views' (got {boot_source!r})" if boot_source != "views" else "",
                   f"boot_images <= base_batch (got {boot_images} > {base_batch})"
                   if boot_images > base_batch else "",
                   "one dataset for both losses (got a separate boot_dataset)"
                   if boot_dataset is not None and boot_dataset is not base_dataset else ""]
            if any(bad):
                raise ValueError("boot_annotated takes the bootstrap images from the base "
                                 "batch: it needs " + "; ".join(filter(None, bad)))
        if base == "clip" and caption_inputs is None:
            raise ValueError("base='clip' needs caption_inputs (the tokenised captions)")
        boot_dataset = base_dataset if boot_dataset is None else boot_dataset
        self._datasets = (base_dataset, boot_dataset)
        self.render_device = torch.device(render_device)
        self.refresh_banks()
        self.base, self.view_size, self.base_batch = base, view_size, base_batch
        self.boot_images, self.n_views = boot_images, n_views
        self.boot_scale, self.base_scale = boot_scale, base_scale
        self.candidates, self.n_random = candidates, n_random
        self.caption_inputs = caption_inputs
        self.color_jitter, self.boot_color_jitter = color_jitter, boot_color_jitter
        self.boot_source, self.boot_annotated = boot_source, boot_annotated
        self.seed = seed
        self.base_gen, self.boot_gen = torch.Generator(), torch.Generator()
        self.reseed(seed)
        self.others = pair_index(n_views)

    def refresh_banks(self) -> None:
        """(Re)take the datasets' packed images, on ``render_device``: call after a streaming
        dataset replaced its buffer (on the CPU the bank is the dataset's own, updated in
        place; on another device it is a copy)."""
        base, boot = (ds.bank() for ds in self._datasets)
        if self.render_device.type != "cpu":
            base = base.to(self.render_device)
            boot = base if self._datasets[1] is self._datasets[0] else boot.to(self.render_device)
        self.base_bank, self.boot_bank = base, boot

    def reseed(self, seed: int) -> None:
        """Restart the random streams (base and bootstrap) from ``seed``."""
        self.base_gen.manual_seed(seed)
        self.boot_gen.manual_seed(seed + 1_000_003)

    def state_dict(self) -> dict:
        """The random streams' states (for exact resumption)."""
        return {"base_gen": self.base_gen.get_state(), "boot_gen": self.boot_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.base_gen.set_state(state["base_gen"])
        self.boot_gen.set_state(state["boot_gen"])

    def _crops(self, bank, idx: torch.Tensor, scale: tuple[float, float],
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        boxes = sample_boxes(len(idx), scale=scale, image_aspect=bank.aspect[idx], generator=gen)
        # boxes come from the CPU stream (the same on every device); views are rendered where
        # the bank is (render_device: the same bytes, imgmdp_env.views)
        dev = bank.buffer.device
        return render_views(bank, idx.to(dev), boxes.to(dev), self.view_size), boxes

    def sample_base(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The base fields of a :class:`Batch`: ``base_views`` ``(V, B, 3, h, w)`` uint8
        (V = 2 for SimCLR/DINO, 1 for CLIP), ``base_index`` ``(B,)``, and for CLIP
        ``captions`` (rows of caption_inputs)."""
        g, b = self.base_gen, self.base_batch
        idx = torch.randint(len(self.base_bank), (b,), generator=g)
        if self.base == "clip":
            views, _ = self._crops(self.base_bank, idx, self.base_scale, g)
            out = {"base_views": views.to(device)[None],
                   "captions": self.caption_inputs[idx].to(device)}
        else:
            views, boxes = self._crops(self.base_bank, idx.repeat(2), self.base_scale, g)
            s = self.color_jitter
            aug, flip = simclr_augment(views.to(device), g, jitter=0.8 * s, hue=0.2 * s,
                                       return_flip=True)
            out = {"base_views": aug.view(2, b, *aug.shape[1:])}
            if self.boot_source == "base":
                out["_boxes"], out["_flip"] = boxes.view(2, b, 4), flip.view(2, b)
        out["base_index"] = idx.to(device)
        return out

    def sample_boot(self, device: torch.device | str = "cpu",
                    images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The bootstrap fields of a :class:`Batch`: ``boot_views`` ``(M, 3, h, w)`` uint8 with
        ``M = boot_images * n_views`` (views of image ``b`` at rows ``b * n_views ...``),
        ``boot_boxes`` ``(boot_images, n_views, 4)``,
        ``actions`` ``(M, n_views - 1, 4)`` (row ``m = b n + i``, slot ``s``: the relative box
        from view ``i`` to view ``others[i, s]``), ``boot_index`` ``(boot_images,)`` and, with
        ``candidates="random"``, ``candidates`` ``(M, n_random, 4)`` random relative boxes.
        images: ``(boot_images,)`` the bootstrap images (``boot_annotated``: the first base
        images); None: drawn from the bootstrap stream."""
        g, n = self.boot_gen, self.n_views
        img = (torch.randint(len(self.boot_bank), (self.boot_images,), generator=g)
               if images is None else images.cpu())
        idx = img.repeat_interleave(n)
        views, boxes = self._crops(self.boot_bank, idx, self.boot_scale, g)
        if self.boot_color_jitter > 0:
            s = self.boot_color_jitter
            views = simclr_augment(views, g, jitter=0.8 * s, hue=0.2 * s, p_flip=0.0)
        boxes = boxes.view(self.boot_images, n, 4)
        src = boxes[:, :, None, :]  # (Bb, n, 1, 4)
        dst = boxes[:, self.others]  # (Bb, n, n - 1, 4)
        out = {"boot_views": views, "boot_boxes": boxes, "boot_index": img,
               "actions": relative_box(src, dst).reshape(-1, n - 1, 4)}
        if self.candidates == "random":
            rand = sample_boxes(len(idx) * self.n_random, scale=self.boot_scale,
                                image_aspect=self.boot_bank.aspect[idx].repeat_interleave(
                                    self.n_random), generator=g)
            out["candidates"] = relative_box(
                boxes.view(-1, 1, 4), rand.view(len(idx), self.n_random, 4)
            )
        return {k: v.to(device) for k, v in out.items()}

    def _boot_from_base(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The bootstrap fields for ``boot_source="base"``: image ``b < boot_images``'s two
        base crops are views ``b 2`` and ``b 2 + 1``; their actions are the relative boxes in
        the displayed (possibly mirrored) source view."""
        bb = self.boot_images
        boxes = parts.pop("_boxes")[:, :bb].transpose(0, 1)  # (Bb, 2, 4)
        flip = parts.pop("_flip")[:, :bb].transpose(0, 1).reshape(-1)  # (M,)
        actions = relative_box(boxes[:, :, None, :], boxes[:, self.others]).reshape(-1, 1, 4)
        sign = torch.ones(len(flip), 1, 4, device=actions.device)
        sign[flip.to(actions.device), :, 0] = -1.0
        dev = parts["base_views"].device
        out = {"boot_views": parts["base_views"][:, :bb].transpose(0, 1).flatten(0, 1),
               "boot_boxes": boxes.to(dev), "boot_index": parts["base_index"][:bb],
               "actions": (actions * sign).to(dev)}
        if self.candidates == "random":
            m = 2 * bb
            aspect = self.base_bank.aspect[parts["base_index"][:bb].cpu()].repeat_interleave(2)
            rand = sample_boxes(m * self.n_random, scale=self.boot_scale,
                                image_aspect=aspect.repeat_interleave(self.n_random),
                                generator=self.boot_gen)
            cand = relative_box(boxes.reshape(-1, 1, 4), rand.view(m, self.n_random, 4))
            out["candidates"] = (cand * sign[:, :1]).to(dev)
        return out

    def views_per_step(self, bootstrap: bool = True) -> int:
        """Views rendered per :meth:`sample` call (the unit of "views seen"; with
        ``boot_source="base"`` the bootstrap views are base crops: none extra)."""
        base = self.base_batch * (1 if self.base == "clip" else 2)
        extra = bootstrap and self.boot_source == "views"
        return base + (self.boot_images * self.n_views if extra else 0)

    def sample(self, device: torch.device | str = "cpu", bootstrap: bool = True) -> Batch:
        """One training :class:`Batch`: :meth:`sample_base` plus, if ``bootstrap`` and
        ``boot_images > 0``, :meth:`sample_boot`."""
        parts = self.sample_base(device)
        if bootstrap and self.boot_images > 0 and self.boot_source == "base":
            parts.update(self._boot_from_base(parts), boot_from_base=True)
        elif bootstrap and self.boot_images > 0:
            own = parts["base_index"][:self.boot_images] if self.boot_annotated else None
            parts.update(self.sample_boot(device, own))
        parts.pop("_boxes", None)
        parts.pop("_flip", None)
        return Batch(**parts)
