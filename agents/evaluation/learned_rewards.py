"""Learned rewards: :class:`~imgmdp_env.scorers.AnnotationScorer`\\ s from a trained checkpoint's
base head ``p(l | x)``, so that the env's reward, the value function and the encoder share one
model::

    from agents.evaluation.learned_rewards import learned_caption_scorer, learned_curation_scorer
    from imgmdp_env.rewards import VectorAnnotationReward
    scorer = learned_curation_scorer("runs/<simclr run>", curated)     # or a caption scorer
    envs = VectorAnnotationReward(envs, scorer, goals="vocabulary")

- :func:`learned_caption_scorer` (AB_CLIP checkpoint): ``p(caption | view)`` over a caption
  vocabulary: the CLIP base head, ``softmax_l(cos(phi(x), psi(l)) / t)``, exactly.
- :func:`learned_curation_scorer` (SimCLR or DINO checkpoint): ``p(curated item | view)`` over
  curated images (one annotation per image, or per labelled class summed over its images, as
  :func:`imgmdp_env.scorers.curation_scorer`). SimCLR: exactly its base head, the annotations
  being image embeddings ``phi`` at the learned temperature. DINO's base head runs over its
  prototypes, not over images, so a curated image is matched through the same ``phi``
  embedding at the student temperature (a documented choice, not the DINO head itself).

Both are :class:`~imgmdp_env.scorers.EmbeddingScorer`\\ s (the one adaptor for learned
embedding models) whose image embedding is :class:`HeadEmbedding`. The default network is the
EMA ``target``: its ``p_ema(l | x)`` is the very quantity the bootstrapping loss teaches
``Q_AB`` to predict, so the reward and the value-guided search (:mod:`agents.evaluation.search`)
agree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgmdp_env import checks as check
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.scorers import EmbeddingScorer, curation_scorer
from imgmdp_env.views import render_views

__all__ = ["HeadEmbedding", "learned_caption_scorer", "learned_curation_scorer", "object_crops"]

NETWORKS = ("online", "target")


class HeadEmbedding(nn.Module):
    """The base head's image embedding of a trained network: ``(B, 3, H, W)`` uint8 views ->
    ``(B, d)`` unit vectors ``normalize(phi(pool(encoder(views))))``, in eval mode.

    ``H == W == encoder.view_size`` (the encoder's one input size)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.encoder, self.phi = net.encoder, net.phi
        self.view_size = net.encoder.view_size
        self.eval()

    @torch.no_grad()
    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if tuple(views.shape[-2:]) != (self.view_size, self.view_size):
            raise ValueError(f"HeadEmbedding: views are {tuple(views.shape[-2:])} but the "
                             f"encoder takes {self.view_size}x{self.view_size}: make the env's "
                             f"view_size {self.view_size}")
        return F.normalize(self.phi(self.encoder.pool(self.encoder(views))), dim=-1)


def _agent(agent: Any):
    """An :class:`ABAgent`, or one loaded from a checkpoint file / run folder."""
    from agents.method.ab import ABAgent, load_agent

    if isinstance(agent, ABAgent):
        return agent
    if isinstance(agent, str | os.PathLike):
        return load_agent(str(agent))
    raise TypeError(f"expected an ABAgent or a checkpoint path, not {type(agent).__name__}")


def _network(agent: Any, network: str) -> nn.Module:
    network = check.choice("network", network, NETWORKS)
    return agent.online if network == "online" else agent.target


def learned_caption_scorer(agent: Any, captions: Sequence[str], network: str = "target",
                           names: Sequence[str] | None = None,
                           groups: Sequence[int] | torch.Tensor | None = None
                           ) -> EmbeddingScorer:
    """``p(caption | view)`` from an AB_CLIP checkpoint (or agent) over ``captions``.

    agent: an ``ABAgent`` with ``base="clip"`` or its checkpoint / run folder; captions: the
    vocabulary (unique strings; words outside the checkpoint's tokenizer are its unknown
    token); network: ``"target"`` (EMA, default) or ``"online"``. With ``names`` and
    ``groups`` (``(P,)`` the name of each of the ``P`` captions, e.g.
    :func:`agents.evaluation.search.class_captions`) the vocabulary is ``names`` and
    ``p(name | view)`` sums its captions' probabilities. Returns an :class:`EmbeddingScorer`
    with temperature ``1 / t`` of the chosen network."""
    agent = _agent(agent)
    if agent.cfg.base != "clip":
        raise ValueError(f"learned_caption_scorer needs an AB_CLIP checkpoint (base 'clip'); "
                         f"this one's base is {agent.cfg.base!r}: use learned_curation_scorer")
    if (names is None) != (groups is None):
        raise ValueError("learned_caption_scorer: pass names and groups together (the name "
                         "of each caption), or neither")
    net = _network(agent, network)
    captions = check.string_list("captions", list(captions))
    with torch.no_grad():
        psi, _ = net.annotations(agent.caption_inputs(captions))
        temperature = 1.0 / float(net.scale())
    return EmbeddingScorer(HeadEmbedding(net), captions if names is None else list(names),
                           text_embeddings=psi, temperature=temperature, groups=groups)


def learned_curation_scorer(agent: Any, curated: ImageDataset, prototypes: str = "auto",
                            per_class: int = 64, network: str = "target") -> EmbeddingScorer:
    """``p(curated item | view)`` from a SimCLR or DINO checkpoint (or agent).

    curated: an :class:`ImageDataset` of curated items (e.g. :func:`object_crops`), rendered
    whole at the encoder's size; prototypes / per_class: as
    :func:`imgmdp_env.scorers.curation_scorer`. Temperature: SimCLR ``1 / t`` (its base head
    exactly), DINO its student temperature (module doc)."""
    agent = _agent(agent)
    if agent.cfg.base == "clip":
        raise ValueError("learned_curation_scorer needs a SimCLR or DINO checkpoint; this one is "
                         "AB_CLIP, whose annotations are captions: use learned_caption_scorer")
    net = _network(agent, network)
    temperature = (1.0 / float(net.scale()) if agent.cfg.base == "simclr"
                   else agent.cfg.student_temperature)
    emb = HeadEmbedding(net)
    return curation_scorer(curated, emb.view_size, embedding=emb, prototypes=prototypes,
                           temperature=temperature, per_class=per_class)


def object_crops(ds: ImageDataset, size: int, context: float = 1.4) -> ImageDataset:
    """A curated set of single items: every object of a scene dataset ``ds`` cropped at
    ``context`` x its box and rendered at ``size`` (the one crop kernel), labelled by class.
    Returns an :class:`ImageDataset` of ``(size, size, 3)`` uint8 images with ``labels`` and
    ``class_names``."""
    if ds.object_boxes is None or ds.object_labels is None:
        raise ValueError(f"object_crops needs a scene dataset with object boxes; "
                         f"{ds.name!r} has none")
    size = check.integer("size", size, 1)
    context = check.number("context", context, 0, lo_open=True)
    idx = np.concatenate([np.full(len(lab), i) for i, lab in enumerate(ds.object_labels)])
    boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4)
                            for b in ds.object_boxes]).copy()
    boxes[:, 2:] *= context
    views = render_views(ds.bank(), torch.from_numpy(idx), torch.from_numpy(boxes), size)
    images = [np.ascontiguousarray(v) for v in views.permute(0, 2, 3, 1).numpy()]
    return ImageDataset(images=images, labels=np.concatenate(ds.object_labels).astype(np.int64),
                        class_names=ds.class_names, name="objects")
