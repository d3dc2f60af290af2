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

:func:`agents.evaluate.probe_report` is the protocol that runs them (fixed probe sets,
baselines beside every result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgmdp_env.datasets import ImageDataset
from imgmdp_env.views import clamp_boxes, render_views

# The fixed probe sets' sizes (agents.evaluate.probe_sets; the flags' defaults in
# agents.infra.config): images, and at most this many samples (objects or images) per split.
PROBE_TRAIN, PROBE_TEST = 2048, 1536  # images; scenes: ~2.6 objects each, test SE < 0.01
PROBE_MAX_SAMPLES = 6000

__all__ = [
    "PROBES",
    "AttentiveProbe",
    "Features",
    "attentive_probe",
    "extract_features",
    "knn_probe",
    "linear_probe",
    "probe_all",
    "probe_samples",
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


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (the CPU for a module without any)."""
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
    device = device_of(encoder)
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
    if len(tr.labels) < 2 or len(te.labels) < 1:
        raise ValueError(f"the probes need at least 2 labelled train samples and 1 test sample; "
                         f"{train_ds.name!r} gave {len(tr.labels)} and {test_ds.name!r} "
                         f"{len(te.labels)} (max_samples={max_samples}): one train sample has "
                         "no spread to standardise the features by")
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
