"""Frozen-encoder probes on labelled data: linear, kNN and attentive.

What a sample is
----------------
- Scene datasets (``object_boxes`` present, e.g. ``"scenes"``, ``"fashion-scenes"``): every
  object is a sample, the paper's "object classification given the box". Its view is the
  object's box made square in pixels, enlarged ``box_scale`` x (1.2 by default: some context,
  no neighbour), projected with :func:`imgmdp_env.views.clamp_boxes` and rendered by the one
  crop kernel :func:`imgmdp_env.views.render_views` at ``view_size``; its label is the object's.
- Single-item datasets (``labels`` only, e.g. ``"fashion"``): the whole image is the sample.

The encoder is frozen (``eval()``, ``no_grad``) and gives tokens ``(N, T, D)`` and the pooled
feature ``encoder.pool(tokens)`` ``(N, D)``. Three probes read them:

- :func:`linear_probe`: multinomial logistic regression on standardised pooled features,
  full-batch L-BFGS from zero weights (deterministic), small L2 weight decay.
- :func:`knn_probe`: cosine kNN with ``k = 20`` and votes weighted by ``exp(sim / 0.07)``, as in
  DINO's ``eval_knn.py`` (Caron et al. 2021).
- :func:`attentive_probe`: attention pooling of the frozen tokens by one learned query through
  an ``nn.MultiheadAttention`` and a linear classifier (the probe of V-JEPA / AIM), trained with
  AdamW for a fixed number of epochs. This is where the paper reports AB's gains.

Run as a script, it prints the probe accuracies of a checkpoint beside a randomly initialised
encoder of the same architecture::

    python agents/evaluate.py --checkpoint runs/<run>/checkpoint.pt --dataset scenes
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # `python agents/evaluate.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgmdp_env.datasets import ImageDataset  # noqa: E402
from imgmdp_env.views import clamp_boxes, render_views  # noqa: E402

__all__ = [
    "AttentiveProbe",
    "Features",
    "attentive_probe",
    "extract_features",
    "knn_probe",
    "linear_probe",
    "RawPixels",
    "probe_all",
    "probe_report",
    "probe_samples",
    "probe_sets",
    "probe_table",
    "random_twin",
    "value_accuracy_by_iou",
    "value_table",
]

PROBES = ("linear", "knn", "attentive")


# ---------------------------------------------------------------------------------------------
# Samples and features
# ---------------------------------------------------------------------------------------------
def probe_samples(
    ds: ImageDataset, box_scale: float = 1.2, max_samples: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The labelled views of a dataset: objects of a scene dataset, else whole images.

    box_scale: enlargement of an object's box (made square in pixels first).
    max_samples: keep a random subset of this many samples (``seed`` picks it), in order.
    Returns ``image_idx (N,) int64``, ``boxes (N, 4) float32`` cxcywh, ``labels (N,) int64``.
    """
    if ds.object_boxes is not None:
        counts = [len(b) for b in ds.object_boxes]
        if sum(counts) == 0:
            raise ValueError(f"dataset {ds.name!r} has object_boxes but no object in any image")
        image_idx = torch.repeat_interleave(torch.arange(len(ds)), torch.tensor(counts))
        boxes = torch.from_numpy(np.concatenate([np.asarray(b, np.float32).reshape(-1, 4)
                                                 for b in ds.object_boxes]))
        labels = torch.from_numpy(np.concatenate([np.asarray(x, np.int64).reshape(-1)
                                                  for x in ds.object_labels]))
        # square in pixels, so that the object keeps its aspect in the square view
        hw = torch.tensor([img.shape[:2] for img in ds.images], dtype=torch.float32)[image_idx]
        side = torch.maximum(boxes[:, 2] * hw[:, 1], boxes[:, 3] * hw[:, 0]) * box_scale
        boxes = torch.cat([boxes[:, :2], side[:, None] / hw.flip(-1)], dim=-1)
        boxes = clamp_boxes(boxes)
    elif ds.labels is not None:
        image_idx = torch.arange(len(ds))
        boxes = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(len(ds), 4).clone()
        labels = torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)
    else:
        raise ValueError(f"dataset {ds.name!r} has neither object_boxes/object_labels nor labels: "
                         "probes need labelled data (e.g. 'scenes', 'fashion', 'fashion-scenes')")
    keep = labels >= 0  # -1 marks an image without a label
    image_idx, boxes, labels = image_idx[keep], boxes[keep], labels[keep]
    if max_samples is not None and len(labels) > max_samples:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(labels), generator=g)[:max_samples].sort().values
        image_idx, boxes, labels = image_idx[pick], boxes[pick], labels[pick]
    return image_idx, boxes.float(), labels


@dataclass
class Features:
    """Frozen features of labelled views.

    tokens: ``(N, T, D)`` float32 encoder tokens (``None`` if not kept).
    pooled: ``(N, D)`` float32, ``encoder.pool(tokens)``.
    labels: ``(N,)`` int64.
    """

    tokens: torch.Tensor | None
    pooled: torch.Tensor
    labels: torch.Tensor


def _device_of(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    ds: ImageDataset,
    view_size: int = 64,
    max_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    box_scale: float = 1.2,
    keep_tokens: bool = True,
) -> Features:
    """Encode the labelled views of ``ds`` (see :func:`probe_samples`) with a frozen encoder.

    The encoder runs in eval mode under ``no_grad`` on its own device and is put back in its
    previous mode afterwards. Views go in as ``(B, 3, view_size, view_size)`` uint8.
    Returns :class:`Features` on the encoder's device.
    """
    image_idx, boxes, labels = probe_samples(ds, box_scale, max_samples, seed)
    bank = ds.bank()
    device = _device_of(encoder)
    was_training = encoder.training
    encoder.eval()
    tokens, pooled = [], []
    try:
        for s in range(0, len(labels), batch_size):
            views = render_views(bank, image_idx[s:s + batch_size], boxes[s:s + batch_size],
                                 view_size)
            t = encoder(views.to(device))
            pooled.append(encoder.pool(t).float())
            if keep_tokens:
                tokens.append(t.float())
    finally:
        encoder.train(was_training)
    return Features(torch.cat(tokens) if keep_tokens else None, torch.cat(pooled),
                    labels.to(device))


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------
def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise the last dim with the train statistics (over every other dim)."""
    flat = train.reshape(-1, train.shape[-1])
    mean, std = flat.mean(0), flat.std(0).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def _num_classes(*labels: torch.Tensor) -> int:
    return int(max(int(y.max()) for y in labels)) + 1


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    num_classes: int | None = None,
) -> float:
    """Test accuracy of logistic regression on standardised features.

    train_x: ``(N, D)``, train_y: ``(N,)`` int64; test_x: ``(M, D)``, test_y: ``(M,)``.
    Full-batch L-BFGS (strong Wolfe line search) from zero weights on
    ``CE + weight_decay / 2 * ||W||^2``: deterministic for given features.
    """
    c = num_classes or _num_classes(train_y, test_y)
    train_x, test_x = _standardise(train_x.float(), test_x.float())
    with torch.enable_grad():
        w = torch.zeros(train_x.shape[1], c, device=train_x.device, requires_grad=True)
        b = torch.zeros(c, device=train_x.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                                tolerance_grad=1e-6, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(train_x @ w + b, train_y) + 0.5 * weight_decay * w.square().sum()
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        return (test_x @ w + b).argmax(-1).eq(test_y).float().mean().item()


@torch.no_grad()
def knn_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
    standardise: bool = True,
) -> float:
    """Test accuracy of weighted cosine kNN (DINO's ``knn_classifier``).

    train_x: ``(N, D)``, test_x: ``(M, D)``; labels ``(N,)``, ``(M,)`` int64. Each test feature
    votes with its ``k`` most cosine-similar train features, weighted ``exp(sim / temperature)``.
    standardise: first standardise each feature with the train statistics (as the linear probe
    does), so that a few large, constant channels (common in a randomly initialised or briefly
    trained encoder) do not dominate the cosine.
    """
    c = num_classes or _num_classes(train_y, test_y)
    k = min(k, len(train_y))
    if standardise:
        train_x, test_x = _standardise(train_x.float(), test_x.float())
    train_n = F.normalize(train_x.float(), dim=-1)
    correct = 0
    for s in range(0, len(test_y), chunk):
        sim = F.normalize(test_x[s:s + chunk].float(), dim=-1) @ train_n.T  # (m, N)
        top_sim, top_idx = sim.topk(k, dim=-1)
        votes = torch.zeros(len(top_sim), c, device=sim.device)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += votes.argmax(-1).eq(test_y[s:s + chunk]).sum().item()
    return correct / len(test_y)


class AttentiveProbe(nn.Module):
    """One learned query attends over frozen tokens; a linear layer classifies the result.

    The attention is an ``nn.MultiheadAttention`` (its parameters, its maths), evaluated in a
    form that is exact for a single query and much cheaper: the scores
    ``(W_q q)_h . (W_k x_t)_h`` equal ``x_t . (W_k,h^T (W_q q)_h)`` (the key bias is constant
    over ``t`` and cancels in the softmax), and the value projection commutes with the
    weighted sum, so no per-token key or value is ever materialised: ``O(B T D H)`` instead of
    ``O(B T D^2)``. ``forward(tokens, exact=True)`` calls the module itself (tests compare).

    tokens: ``(B, T, D)`` float. Returns logits ``(B, num_classes)``.
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the token width ({dim})")
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def pool(self, tokens: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, D)``: the attention output for the learned query."""
        if exact:
            q = self.query.expand(len(tokens), -1, -1)
            return self.attn(q, tokens, tokens, need_weights=False)[0][:, 0]
        a = self.attn
        d, h = tokens.shape[-1], a.num_heads
        wq, wk, wv = a.in_proj_weight.chunk(3)
        bq, _, bv = a.in_proj_bias.chunk(3)
        q = (self.query[0, 0] @ wq.T + bq).view(h, d // h)  # (H, dh)
        u = torch.einsum("hed,he->dh", wk.view(h, d // h, d), q) / math.sqrt(d // h)  # (D, H)
        attn = torch.softmax(tokens @ u, dim=1)  # (B, T, H)
        mixed = torch.einsum("bth,btd->bhd", attn, tokens)  # (B, H, D)
        v = torch.einsum("bhd,hed->bhe", mixed, wv.view(h, d // h, d)) + bv.view(h, d // h)
        return a.out_proj(v.reshape(len(tokens), d))

    def forward(self, tokens: torch.Tensor, exact: bool = False) -> torch.Tensor:
        return self.head(self.norm(self.pool(tokens, exact)))


def _heads_for(dim: int, num_heads: int) -> int:
    while dim % num_heads:
        num_heads -= 1
    return num_heads


def attentive_probe(
    train_tokens: torch.Tensor,
    train_y: torch.Tensor,
    test_tokens: torch.Tensor,
    test_y: torch.Tensor,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    num_heads: int = 4,
    num_classes: int | None = None,
    seed: int = 0,
) -> float:
    """Test accuracy of an :class:`AttentiveProbe` trained on frozen tokens.

    train_tokens: ``(N, T, D)``, test_tokens: ``(M, T, D)``; labels ``(N,)``, ``(M,)`` int64.
    Tokens are standardised per channel with the train statistics. AdamW with a cosine learning
    rate for ``epochs`` epochs; ``seed`` fixes the initialisation and the batch order without
    touching the global random state. ``num_heads`` is lowered to a divisor of ``D``.
    """
    c = num_classes or _num_classes(train_y, test_y)
    train_tokens, test_tokens = _standardise(train_tokens.float(), test_tokens.float())
    device = train_tokens.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = AttentiveProbe(train_tokens.shape[-1], c, _heads_for(train_tokens.shape[-1],
                                                                     num_heads)).to(device)
    g = torch.Generator().manual_seed(seed)
    n = len(train_y)
    steps_per_epoch = math.ceil(n / batch_size)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=g).to(device)
            for s in range(0, n, batch_size):
                idx = order[s:s + batch_size]
                loss = F.cross_entropy(probe(train_tokens[idx]), train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    with torch.no_grad():
        probe.eval()
        pred = torch.cat([probe(test_tokens[s:s + 1024]).argmax(-1)
                          for s in range(0, len(test_y), 1024)])
    return pred.eq(test_y).float().mean().item()


def probe_all(
    encoder: nn.Module,
    train_ds: ImageDataset,
    test_ds: ImageDataset,
    view_size: int = 64,
    max_samples: int | None = 4000,
    seed: int = 0,
    probes: Sequence[str] = PROBES,
    box_scale: float = 1.2,
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy of each probe of a frozen ``encoder``: trained on ``train_ds``, tested on
    ``test_ds``.

    max_samples: at most this many samples from each split (a seeded random subset).
    probes: any of ``"linear"``, ``"knn"``, ``"attentive"``.
    Returns ``{"linear": acc, "knn": acc, "attentive": acc}`` (those asked for), acc in [0, 1].
    """
    unknown = set(probes) - set(PROBES)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; valid: {PROBES}")
    keep = "attentive" in probes
    kw = dict(view_size=view_size, max_samples=max_samples, seed=seed, batch_size=batch_size,
              box_scale=box_scale, keep_tokens=keep)
    tr = extract_features(encoder, train_ds, **kw)
    te = extract_features(encoder, test_ds, **kw)
    c = _num_classes(tr.labels, te.labels)
    if train_ds.class_names is not None:
        c = max(c, len(train_ds.class_names))
    out: dict[str, float] = {}
    if "linear" in probes:
        out["linear"] = linear_probe(tr.pooled, tr.labels, te.pooled, te.labels, num_classes=c)
    if "knn" in probes:
        out["knn"] = knn_probe(tr.pooled, tr.labels, te.pooled, te.labels, num_classes=c)
    if keep:
        out["attentive"] = attentive_probe(tr.tokens, tr.labels, te.tokens, te.labels,
                                           num_classes=c, seed=seed)
    return out


# ---------------------------------------------------------------------------------------------
# The value function's own diagnostic
# ---------------------------------------------------------------------------------------------
DEFAULT_IOU_BINS = (0.0, 0.05, 0.2, 0.4, 0.6, 1.0)


@torch.no_grad()
def value_accuracy_by_iou(agent, data, bins: tuple[float, ...] = DEFAULT_IOU_BINS,
                          n_batches: int = 8, seed: int = 0) -> dict[str, float]:
    """The paper's value-accuracy diagnostic: how often ``argmax_l Q_AB(l | x_i, a_ij)``
    (online) equals ``argmax_l p_ema(l | x_j)`` (the target network's annotation of the target
    view), over ordered view pairs binned by ``IoU(box_i, box_j)``.

    data: an ``ImageDataset`` (views drawn as in training: ``n_views`` = 4, scale (0.05, 1),
    ``2 * ann_batch`` base images and ``ann_batch / 4`` bootstrap images per batch), a
    :class:`~agents.data.TransitionSampler`, one :class:`~agents.data.Batch` (with its
    bootstrap part) or a list of them. agent: an :class:`agents.ab.ABAgent`.
    Samplers draw ``n_batches`` batches seeded by ``seed`` (a sampler's own streams are
    restored afterwards). bins: IoU bin edges; a pair falls in ``[lo, hi)`` (the last bin
    includes ``hi``). Returns ``{"iou_LO-HI": accuracy (nan if empty), "count_LO-HI": pairs,
    "copy_LO-HI": accuracy of answering the source view's own annotation
    ``argmax_l p_ema(l | x_i)`` (a value function that ignores the action: the bar for "it
    uses the action"), "all": overall accuracy, "chance": 1 / number of annotations,
    "majority": accuracy of always answering each batch's most frequent target annotation}``.
    """
    from agents.data import TransitionSampler, pair_index
    from imgmdp_env.views import box_iou

    if isinstance(data, ImageDataset):
        cfg = agent.cfg
        data = TransitionSampler(
            data, base=cfg.base, view_size=agent.encoder.image_size,
            base_batch=2 * cfg.ann_batch, boot_images=max(cfg.ann_batch // 4, 1),
            candidates=cfg.candidates, n_random=cfg.n_random,
            caption_inputs=agent.caption_inputs(data.captions), seed=seed)
    if isinstance(data, TransitionSampler):
        state = data.state_dict()
        data.base_gen.manual_seed(seed)
        data.boot_gen.manual_seed(seed + 1)
        device = next(agent.parameters()).device
        batches = [data.sample(device) for _ in range(n_batches)]
        data.load_state_dict(state)
    else:
        batches = list(data) if isinstance(data, list | tuple) else [data]
    was_training = agent.training
    agent.eval()
    hits, copies, ious, majority, n_ann = [], [], [], [], 1
    for batch in batches:  # the training loss's own path: encode, then the bootstrap logits
        pred, p_logits, _, j = agent.bootstrap_logits(batch, agent.encode(batch))
        labels = p_logits.argmax(-1)  # (M,) the target's annotation of every view
        want = labels[j]  # (M, n - 1): of each pair's target view x_j
        hits.append((pred.argmax(-1) == want).flatten().cpu())
        copies.append((labels[:, None] == want).flatten().cpu())  # answer x_i's own annotation
        majority.append((want == want.flatten().mode().values).flatten().cpu())
        boxes = batch.boot_boxes
        others = pair_index(boxes.shape[1]).to(boxes.device)
        ious.append(box_iou(boxes[:, :, None], boxes[:, others]).flatten().cpu())
        n_ann = pred.shape[-1]
    agent.train(was_training)
    hit, copy, iou = torch.cat(hits).float(), torch.cat(copies).float(), torch.cat(ious)
    out = {}
    for k, (lo, hi) in enumerate(zip(bins[:-1], bins[1:], strict=True)):
        sel = (iou >= lo) & ((iou < hi) | ((k == len(bins) - 2) & (iou <= hi)))
        key = f"{lo:.2f}-{hi:.2f}"
        out[f"iou_{key}"] = float(hit[sel].mean()) if sel.any() else float("nan")
        out[f"copy_{key}"] = float(copy[sel].mean()) if sel.any() else float("nan")
        out[f"count_{key}"] = float(sel.sum())
    out["all"] = float(hit.mean())
    out["chance"] = 1.0 / n_ann
    out["majority"] = float(torch.cat(majority).float().mean())
    return out


def value_table(value_acc: dict[str, float]) -> str:
    """A markdown table of :func:`value_accuracy_by_iou`: one column per IoU bin; rows for
    the value function, the copy-the-source baseline and the pair counts; then the chance and
    majority rates."""
    bins = [k[4:] for k in value_acc if k.startswith("iou_")]
    rows = [("value function Q_AB", "iou"), ("copy x_i's own annotation", "copy"),
            ("pairs", "count")]
    lines = ["| IoU(x_i, x_j) | " + " | ".join(bins) + " |", "|---|" + "---:|" * len(bins)]
    for label, key in rows:
        fmt = "{:.0f}" if key == "count" else "{:.3f}"
        lines.append(f"| {label} | " + " | ".join(
            fmt.format(value_acc.get(f"{key}_{b}", float("nan"))) for b in bins) + " |")
    lines.append(f"chance {value_acc['chance']:.3f}; majority {value_acc['majority']:.3f} "
                 f"(always the most frequent target annotation of the batch)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The protocol: fixed probe sets, baselines beside every result
# ---------------------------------------------------------------------------------------------
PROBE_TRAIN, PROBE_TEST = 2048, 1536  # images; scenes: ~2.6 objects each, test SE < 0.01
PROBE_MAX_SAMPLES = 6000
N_RANDOM_TWINS = 3


class RawPixels(nn.Module):
    """The raw-pixel baseline as an encoder: a view ``(B, 3, H, W)`` uint8 is area-averaged to
    ``grid x grid`` pixels in [0, 1]; its tokens are the ``(grid / patch)^2`` patches of
    ``patch x patch`` pixels ``(B, (grid / patch)^2, 3 patch^2)``, and its pooled feature is all
    of them, flattened ``(B, 3 grid^2)`` (not a mean: a mean of raw patches would throw away
    the layout). No parameters, nothing learned."""

    def __init__(self, grid: int = 16, patch: int = 4) -> None:
        super().__init__()
        if grid % patch:
            raise ValueError(f"patch ({patch}) must divide grid ({grid})")
        self.grid, self.patch = grid, patch
        self.config = {"kind": "raw", "grid": grid, "patch": patch}

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(views.float().div_(255.0), self.grid)  # (B, 3, g, g)
        p, n = self.patch, self.grid // self.patch
        x = x.view(len(x), 3, n, p, n, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(len(views), n * n, 3 * p * p)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.flatten(1)


def probe_sets(name: str = "scenes", n_train: int = PROBE_TRAIN, n_test: int = PROBE_TEST,
               image_size: int = 96) -> tuple[ImageDataset, ImageDataset]:
    """The fixed probe data of a dataset: ``(train, test)``, seeded by
    :data:`imgmdp_env.datasets.splits.PROBE_SEED`, never by a training seed, so every run and
    every baseline is measured on the same labelled images. On ``scenes`` the probe's train
    images come from the ``val`` split: neither the pre-training images (``train``) nor the
    test images."""
    from imgmdp_env.datasets.splits import PROBE_SEED, load_split

    train_split = "val" if name == "scenes" else "train"
    train = load_split(name, train_split, n_train, image_size, PROBE_SEED + 1)
    return train, load_split(name, "test", n_test, image_size, PROBE_SEED)


def probe_report(
    encoder: nn.Module | None,
    train_ds: ImageDataset,
    test_ds: ImageDataset,
    view_size: int = 64,
    n_random: int = N_RANDOM_TWINS,
    raw_pixels: bool = True,
    max_samples: int | None = PROBE_MAX_SAMPLES,
    probes: Sequence[str] = PROBES,
    label: str = "trained",
) -> dict[str, dict[str, float]]:
    """Probe accuracies of ``encoder`` beside its baselines, on the same samples.

    Rows: ``label`` (the encoder; left out if None), ``"random init"`` (the mean over
    ``n_random`` randomly initialised twins, seeds 0..n_random-1, with ``"<probe>_sd"`` their
    standard deviation; needs ``encoder`` or is left out) and ``"raw pixels"``
    (:class:`RawPixels`). Each row also has ``"n_test"`` (test samples) so a reader can compute
    the standard error ``sqrt(acc (1 - acc) / n_test)``. The probes' own seeds are fixed (0).
    """
    kw = dict(view_size=view_size, max_samples=max_samples, seed=0, probes=probes)
    n_test = float(len(probe_samples(test_ds, max_samples=max_samples, seed=0)[2]))
    out: dict[str, dict[str, float]] = {}
    if encoder is not None:
        out[label] = {**probe_all(encoder, train_ds, test_ds, **kw), "n_test": n_test}
        if n_random > 0:
            runs = [probe_all(random_twin(encoder, seed), train_ds, test_ds, **kw)
                    for seed in range(n_random)]
            row: dict[str, float] = {}
            for p in runs[0]:
                vals = np.array([r[p] for r in runs])
                row[p] = float(vals.mean())
                row[f"{p}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            out["random init"] = {**row, "n_test": n_test}
    if raw_pixels:
        raw = RawPixels().to(_device_of(encoder) if encoder is not None else "cpu")
        out["raw pixels"] = {**probe_all(raw, train_ds, test_ds, **kw), "n_test": n_test}
    return out


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
@dataclass
class Args:
    checkpoint: Path | None = None
    """checkpoint.pt (or its run folder) from agents/train_value.py (None: a random --kind)"""
    dataset: str = "scenes"
    """labelled dataset: "scenes", "fashion", "fashion-scenes" (object or image classes)"""
    n_train: int = PROBE_TRAIN
    """images in the fixed probe train set (scenes: generated; others: a seeded subset)"""
    n_test: int = PROBE_TEST
    """images in the fixed probe test set"""
    image_size: int = 96
    """size of generated scene images in pixels (scenes only)"""
    view_size: int | None = None
    """side of the probe views in pixels (None: the encoder's image_size, else 64)"""
    max_samples: int = PROBE_MAX_SAMPLES
    """at most this many samples (objects or images) per split"""
    kind: Literal["cnn", "vit", "vits16"] = "cnn"
    """encoder architecture when no checkpoint is given"""
    random_twins: int = N_RANDOM_TWINS
    """randomly initialised twins of the checkpoint's architecture probed beside it (mean, sd)"""
    raw_pixels: bool = True
    """also probe raw pixels (16x16 per view) as a baseline"""
    threads: int = 2
    """torch CPU threads"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where the encoder and probes run: auto = cuda if available, else cpu"""


def random_twin(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """A randomly initialised encoder of the same architecture (the probes' baseline), built
    by ``make_encoder(**encoder.config)`` on the encoder's device, in eval mode."""
    from agents.networks import make_encoder

    config = getattr(encoder, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(encoder).__name__} has no .config dict of make_encoder arguments; "
                        "build encoders with agents.networks.make_encoder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_encoder(**config).to(_device_of(encoder)).eval()


def probe_table(results: dict[str, dict[str, float]]) -> str:
    """A markdown table of probe accuracies, one row per encoder, as :func:`probe_report`
    returns them (``"<probe>_sd"`` shown as ``+- sd``; ``n_test`` gives the standard error
    column, the noise of one accuracy from the finite test set at accuracy 0.5)."""
    lines = ["| encoder | " + " | ".join(PROBES) + " | test samples (SE) |",
             "|---|" + "---:|" * (len(PROBES) + 1)]
    for name, acc in results.items():
        cells = [(f"{acc[p]:.3f}" + (f" +- {acc[p + '_sd']:.3f}" if p + "_sd" in acc else ""))
                 if p in acc else "-" for p in PROBES]
        n = acc.get("n_test")
        cells.append(f"{int(n)} ({0.5 / math.sqrt(n):.3f})" if n else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _main(args: Args) -> None:
    from agents.arg_checks import check_eval_args

    check_eval_args(args)  # every flag, before any work
    torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto"
                          else "cuda" if torch.cuda.is_available() else "cpu")
    if args.checkpoint is not None:
        from agents.ab import load_encoder
        from agents.checkpoint import CheckpointError, resolve

        path = resolve(args.checkpoint)
        try:
            encoder, label = load_encoder(path, device), f"checkpoint {path}"
        except CheckpointError as e:
            raise SystemExit(f"--checkpoint: {e}") from None
    else:
        from agents.networks import make_encoder

        encoder = random_twin(make_encoder(args.kind, image_size=args.view_size or 64), 0)
        encoder, label = encoder.to(device), f"random init ({args.kind}, seed 0)"
    view = args.view_size or int(getattr(encoder, "image_size", 64))
    t0 = time.perf_counter()
    train, test = probe_sets(args.dataset, args.n_train, args.n_test, args.image_size)
    print(f"data: {args.dataset}, {len(train)} train / {len(test)} test images "
          f"({time.perf_counter() - t0:.1f} s); views {view}x{view}; device {device}")
    t0 = time.perf_counter()
    results = probe_report(encoder, train, test, view_size=view, label=label,
                           n_random=args.random_twins if args.checkpoint is not None else 0,
                           raw_pixels=args.raw_pixels, max_samples=args.max_samples)
    print(f"probed in {time.perf_counter() - t0:.1f} s")
    print(probe_table(results))


if __name__ == "__main__":
    import tyro

    _main(tyro.cli(Args))
