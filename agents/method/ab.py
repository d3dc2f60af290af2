"""The annotation bootstrapping (AB) agent: an online network, its EMA target, and the loss.

Ghosh & Levine (2025), "Visual Pre-Training on Unlabeled Images using Reinforcement Learning".
The online network holds the encoder, the base head ``phi`` with the annotation head ``psi``
and a learned temperature ``t`` (defining ``p(l | x)``), and the AB branch: the annotation
decoder + head ``phi_AB``, a separate annotation head ``psi_AB`` and temperature ``t_AB``
(defining ``Q_AB(l | x, a)``). The target network is an EMA copy with stop-gradient. Per step::

    loss = base_loss + ab_weight * CE(target, Q_AB(. | x_i, a_ij))   over ordered view pairs

with ``target = (1 - gamma) p_ema(. | x_j) + gamma max_a' Q_ema(. | x_j, a')``
(:func:`agents.method.losses.bootstrap_target`). ``ab_weight = 0`` is the base method alone.

Annotations ``l``: SimCLR, the first ``ann_batch`` images of the base batch (first crop); CLIP,
their captions; DINO, the prototypes (``p_ema``: the EMA teacher's centred, sharpened output).
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from agents.method.ab_config import LEGACY_AB_CONFIG, ABConfig
from agents.method.data import Batch, pair_index
from agents.method.encoders import upgrade_encoder_config
from agents.method.losses import (
    bootstrap_loss,
    bootstrap_target,
    clip_loss,
    dino_loss,
    nt_xent_loss,
    update_center,
)
from agents.method.networks import (
    AnnotationDecoder,
    Encoder,
    LogitScale,
    ProjectionHead,
    make_encoder,
)
from agents.method.text import FrozenText, TextEncoder, WordTokenizer

__all__ = [
    "VALUE_BRANCH",
    "ABAgent",
    "ABConfig",
    "ABNetwork",
    "ema_update",
    "load_agent",
    "load_encoder",
]


# The AB branch: the parameters of the value function Q_AB alone (the annotation decoder, its
# heads, its temperature, the copy gate; DINO's AB prototypes), by name within an ABNetwork.
VALUE_BRANCH = ("decoder.", "phi_ab.", "psi_ab.", "ab_scale.", "copy_gate.", "ab_prototypes")


class Encoded(NamedTuple):
    """The encoder outputs of one step, by name (:meth:`ABAgent.encode`).

    base_tokens: ``(V B, T, D)`` online tokens of the base crops (crop 0 of every image first;
        in the value phase only the annotation crops, ``(L, T, D)``).
    boot_tokens: ``(M, T, D)`` online tokens of the bootstrap views (None without them).
    ema_boot_tokens: ``(M, T, D)`` target tokens of the bootstrap views (None without them).
    ema_ann_pooled: ``(L, D)`` target pooled features of SimCLR's annotation crops (else None).
    ema_base_pooled: ``(V B, D)`` target pooled features of the base crops (DINO's teacher).
    """

    base_tokens: torch.Tensor
    boot_tokens: torch.Tensor | None
    ema_boot_tokens: torch.Tensor | None
    ema_ann_pooled: torch.Tensor | None
    ema_base_pooled: torch.Tensor | None


def _encode(encoder: nn.Module, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Encode view batches ``(B_i, 3, h, w)`` in one pass -> their tokens ``(B_i, T, D)``."""
    tokens = encoder(parts[0] if len(parts) == 1 else torch.cat(parts))
    return list(tokens.split([len(p) for p in parts]))


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, rate: float,
               only: tuple[str, ...] | None = None) -> None:
    """``target <- (1 - rate) * target + rate * online``, parameter by parameter; ``only``:
    the parameters whose names start with one of these prefixes (None: all)."""
    pairs = [(t, o) for (name, t), o in zip(target.named_parameters(), online.parameters(),
                                             strict=True)
             if only is None or name.startswith(only)]
    if pairs:
        torch._foreach_lerp_([t for t, _ in pairs], [o for _, o in pairs], rate)


class ABNetwork(nn.Module):
    """Encoder + base heads (``phi``, ``psi``, ``t``) + AB branch (decoder, ``phi_AB``,
    ``psi_AB``, ``t_AB``). ``text``: the caption encoder (CLIP only)."""

    def __init__(self, encoder: Encoder, cfg: ABConfig, text: nn.Module | None = None) -> None:
        super().__init__()
        d, hid = cfg.proj_dim, cfg.proj_hidden
        self.encoder, self.cfg = encoder, cfg
        self.phi = ProjectionHead(encoder.embed_dim, d, hid, cfg.head_norm)
        self.scale = LogitScale(cfg.temperature)
        self.decoder = AnnotationDecoder(
            encoder.embed_dim, encoder.num_tokens, cfg.decoder_width, cfg.decoder_depth,
            cfg.decoder_heads, cfg.n_bins, cfg.max_shift, cfg.max_log_scale, cfg.action_tokens,
            cfg.decoder_geometry)
        self.phi_ab = ProjectionHead(self.decoder.out_dim, d, hid)
        if cfg.residual in ("gated", "mixture"):  # gated: 2 sigmoid(0) = 1; mixture: 1/2
            self.copy_gate = nn.Linear(self.decoder.out_dim, 1)
            nn.init.zeros_(self.copy_gate.weight)
            nn.init.zeros_(self.copy_gate.bias)
        self.ab_scale = LogitScale(cfg.ab_temperature)
        if cfg.base == "clip":
            if text is None:
                raise ValueError("base='clip' needs a text encoder")
            self.text = text
            self.psi = ProjectionHead(text.embed_dim, d, hid)
            self.psi_ab = ProjectionHead(text.embed_dim, d, hid)
        elif cfg.base == "dino":
            self.prototypes = nn.Parameter(torch.randn(cfg.n_prototypes, d) / math.sqrt(d))
            self.ab_prototypes = nn.Parameter(torch.randn(cfg.n_prototypes, d) / math.sqrt(d))
        else:
            self.psi_ab = ProjectionHead(encoder.embed_dim, d, hid)

    def q_logits(self, tokens: torch.Tensor, actions: torch.Tensor, psi: torch.Tensor,
                 psi_ab: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
        """The logits of ``Q_AB(l | x, a)``: source tokens ``(B, T, D)``, actions ``(B, K, 4)``,
        the annotations' ``psi`` and ``psi_AB`` ``(L, d)`` (:meth:`annotations`) ->
        ``(B, K, L)``.

        ``value_residual="none"`` (the paper): ``t_AB phi_AB(x, a) . psi_AB(l)`` with unit
        ``phi_AB`` and ``psi_AB``. ``"copy"``: plus the source view's own base logits
        ``p(l | x)`` (:meth:`base_logits`, gradient stopped), so that ``Q`` starts near "copy
        the source view" (the decoder's term is bounded by ``t_AB``, the copy term is not) and
        the decoder learns what the action changes. ``"gated"``: the copy term weighted by
        ``g(x, a) = 2 sigmoid(w . h(x, a))`` from the decoder's output ``h`` (1 at the start),
        so that the decoder can keep the source's annotation where the target view overlaps
        the source and drop it where it does not. ``"mixture"``: a mixture of two experts,
        ``Q = w p(. | x) + (1 - w) Q_dec(. | x, a)`` with ``w = sigmoid(w . h(x, a))`` (1/2 at
        the start) and ``Q_dec`` the paper's head; returned as ``log Q`` (normalised logits).
        The decoder takes the gradient of the pairs the copy expert gets wrong: the far pairs,
        where only the action can tell what the target view holds."""
        logits, copy, gate = self.value_parts(tokens, actions, psi, psi_ab, center)
        mode = self.cfg.residual
        if mode == "none":
            return logits
        if mode == "mixture":  # gate: the log-odds of the copy expert
            return torch.logaddexp(F.logsigmoid(gate) + F.log_softmax(copy.float(), -1),
                                   F.logsigmoid(-gate) + F.log_softmax(logits.float(), -1))
        if mode == "gated":
            copy = 2 * torch.sigmoid(gate) * copy
        return logits + copy

    def value_parts(self, tokens: torch.Tensor, actions: torch.Tensor, psi: torch.Tensor,
                    psi_ab: torch.Tensor, center: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """What :meth:`q_logits` combines: the decoder's logits ``t_AB phi_AB . psi_AB``
        ``(B, K, L)``; the copy expert's, the source view's base logits ``(B, 1, L)`` without
        gradients (None with ``value_residual="none"``); the gate's output ``(B, K, 1)``
        float32 (None without a gate)."""
        h = self.decoder(tokens, actions)  # (B, K, width)
        logits = self.ab_scale() * F.normalize(self.phi_ab(h), dim=-1) @ psi_ab.T
        if self.cfg.residual == "none":
            return logits, None, None
        with torch.no_grad():
            copy = self.base_logits(self.encoder.pool(tokens), psi, center)[:, None]
        gate = self.copy_gate(h).float() if hasattr(self, "copy_gate") else None
        return logits, copy, gate

    def annotations(self, source: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(psi(l), psi_AB(l))``, each unit ``(L, d)``, for the annotation source: pooled
        image features ``(L, D)`` (SimCLR), caption inputs ``(L, ...)`` (CLIP) or None (DINO:
        the prototypes)."""
        if self.cfg.base == "dino":
            return F.normalize(self.prototypes, dim=-1), F.normalize(self.ab_prototypes, dim=-1)
        if self.cfg.base == "clip":
            feat = self.text(source)
            return F.normalize(self.psi(feat), dim=-1), F.normalize(self.psi_ab(feat), dim=-1)
        return F.normalize(self.phi(source), dim=-1), F.normalize(self.psi_ab(source), dim=-1)

    def base_logits(self, pooled: torch.Tensor, psi: torch.Tensor,
                    center: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``p(l | x)``: ``(B, D)`` pooled features -> ``(B, L)``. DINO: the
        teacher's centred, sharpened scores ``(cos - center) / teacher_temperature``."""
        z = F.normalize(self.phi(pooled), dim=-1)
        if self.cfg.base == "dino":
            return (z @ psi.T - center) / self.cfg.teacher_temperature
        return self.scale() * z @ psi.T


class ABAgent(nn.Module):
    """Online :class:`ABNetwork` + EMA ``target`` (no gradients) + DINO centre.

    encoder: a fresh encoder (its EMA copy is made here); tokenizer: for CLIP with
    ``text_backbone="words"``, the :class:`WordTokenizer` of the captions; text_dim: for
    ``text_backbone="minilm"``, the dimension of the precomputed caption features.
    """

    def __init__(self, encoder: Encoder, cfg: ABConfig, tokenizer: WordTokenizer | None = None,
                 text_dim: int = 384) -> None:
        super().__init__()
        if cfg.ann_batch < 1:
            raise ValueError(f"ann_batch ({cfg.ann_batch}) must be >= 1: 0 means base_batch / 2, "
                             "resolved by agents.infra.config.resolved before the agent is built")
        self.cfg, self.tokenizer, self.text_dim = cfg, tokenizer, text_dim
        text = None
        if cfg.base == "clip":
            if cfg.text_backbone == "minilm":
                text = FrozenText(text_dim)
            elif tokenizer is None:
                raise ValueError("base='clip' with text_backbone='words' needs a tokenizer")
            else:
                text = TextEncoder(len(tokenizer), tokenizer.max_len, cfg.text_width,
                                   cfg.text_depth)
        self.online = ABNetwork(encoder, cfg, text)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.register_buffer("center", torch.zeros(cfg.n_prototypes if cfg.base == "dino" else 0))
        self.others = pair_index(2)  # rebuilt for the batch's n_views
        self.value_only = False  # the value phase (fit_value_only): the loss trains Q alone
        self.value_gamma: float | None = None  # the value phase's own discount, if any
        self._frozen: set[str] = set()  # the parameters fit_value_only froze

    def fit_value_only(self, on: bool = True, gamma: float | None = None) -> ABAgent:
        """The value phase's mode (``train_value.py --value-steps``): :meth:`loss` is the
        bootstrapping loss alone, the encoders run without gradients (the representation, the
        base head and the annotations are frozen: only the AB branch, :data:`VALUE_BRANCH`,
        gets gradients) and :meth:`update_target` moves only the target's AB branch, so the
        target ``p_ema`` stays fixed. gamma: the phase's discount (``--value-gamma``; None:
        ``cfg.gamma``), in force until ``fit_value_only(False)``. Returns self."""
        if gamma is not None and not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma ({gamma}) must be in [0, 1)")
        if on and not self.cfg.ab_weight > 0:
            raise ValueError("the value phase needs the bootstrapping loss (ab_weight > 0)")
        if on != self.value_only:
            for name, p in self.online.named_parameters():
                if not name.startswith(VALUE_BRANCH):
                    if on and p.requires_grad:
                        self._frozen.add(name)
                        p.requires_grad_(False)
                    elif not on and name in self._frozen:
                        p.requires_grad_(True)
            if not on:
                self._frozen.clear()
        self.value_only = on
        self.value_gamma = gamma if on else None
        return self

    @property
    def gamma(self) -> float:
        """The discount of the bootstrapping target: ``value_gamma`` when set (the value phase's,
        by :meth:`fit_value_only`), else ``cfg.gamma``."""
        return self.cfg.gamma if self.value_gamma is None else self.value_gamma

    def caption_inputs(self, captions: list[str] | None) -> torch.Tensor | None:
        """The text input of each caption for the CLIP base (token ids ``(N, S)``, or frozen
        sentence features ``(N, F)``); None for the other bases."""
        if self.cfg.base != "clip":
            return None
        if captions is None:
            raise ValueError("base='clip' needs a dataset with captions")
        if self.cfg.text_backbone == "minilm":
            from agents.method.text import sentence_features

            return sentence_features(captions)
        return self.tokenizer(captions)

    @property
    def encoder(self) -> Encoder:
        """The online encoder (the representation being pre-trained)."""
        return self.online.encoder

    def value_parameters(self) -> list[nn.Parameter]:
        """The online AB branch's parameters (:data:`VALUE_BRANCH`): the value function's."""
        return [p for n, p in self.online.named_parameters() if n.startswith(VALUE_BRANCH)]

    @torch.no_grad()
    def update_target(self, rate: float) -> None:
        """EMA step of the target network toward the online one (``rate`` = 1 - momentum); in
        the value phase (:meth:`fit_value_only`) of the AB branch alone."""
        ema_update(self.target, self.online, rate, VALUE_BRANCH if self.value_only else None)

    def n_annotations(self, batch: Batch) -> int:
        """How many annotations ``l`` this batch carries (SimCLR crops or CLIP captions)."""
        return min(self.cfg.ann_batch, batch.base_views.shape[1])

    def _pairs(self, n_images: int, n_views: int, device: torch.device) -> torch.Tensor:
        """``(M, n - 1)`` row index of each pair's target view ``x_j``."""
        if self.others.shape[0] != n_views:
            self.others = pair_index(n_views)
        base = torch.arange(n_images)[:, None, None] * n_views
        return (base + self.others[None]).reshape(-1, n_views - 1).to(device)

    def encode(self, batch: Batch, bootstrap: bool = True) -> Encoded:
        """Every encoder output a step needs, in one online pass (with gradients) over the base
        crops and the bootstrap views, and one target pass (no gradients) over the target's
        inputs: DINO's teacher crops or SimCLR's annotation crops, and the bootstrap views.
        GroupNorm / LayerNorm have no batch statistics, so this equals separate passes. With
        ``batch.boot_from_base`` the bootstrap tokens are rows of the base crops' (online and
        target), so neither network encodes a view twice."""
        net, tgt, cfg = self.online, self.target, self.cfg
        base = batch.base_views.flatten(0, 1)  # (V B, 3, h, w), crop 0 of every image first
        bootstrap = bootstrap and batch.bootstrap
        from_base = bootstrap and batch.boot_from_base  # the pairs are base crops: no new views
        online_boot = bootstrap and not from_base and cfg.value_input != "ema"
        if self.value_only and not from_base:  # no base loss: only the annotation crops
            base = base[: self.n_annotations(batch)]
        online = _encode(net.encoder, [base] + ([batch.boot_views] if online_boot else []))
        bb = len(batch.boot_views) // 2 if from_base else 0  # images whose crops are pairs
        boot_tokens = online[1] if online_boot else None
        if from_base:  # pair row b 2 + c is crop c of image b: row c B + b of the base crops
            b = batch.base_views.shape[1]
            rows = (torch.arange(bb)[:, None] + torch.tensor([0, b])).flatten().to(base.device)
            boot_tokens = online[0][rows]  # with gradients, outside no_grad
        target_in = {}
        if cfg.base == "dino":
            target_in["base"] = base
        elif cfg.base == "simclr" and bootstrap:
            k = max(self.n_annotations(batch), bb)  # crop 0 of these: annotations (and pairs)
            target_in["ann"] = batch.base_views[0, :k]
            if from_base:
                target_in["crop1"] = batch.base_views[1, :bb]
        if bootstrap and not from_base:
            target_in["boot"] = batch.boot_views
        with torch.no_grad():
            parts = _encode(tgt.encoder, list(target_in.values())) if target_in else []
            ema = dict(zip(target_in, parts, strict=True))
            if from_base:  # row b 2 + c of the pairs is crop c of image b
                if cfg.base == "dino":
                    ema["boot"] = ema["base"][rows]
                else:
                    ema["boot"] = torch.stack([ema["ann"][:bb], ema.pop("crop1")], 1).flatten(0, 1)
                    ema["ann"] = ema["ann"][: self.n_annotations(batch)]
            pool = tgt.encoder.pool
            return Encoded(
                base_tokens=online[0], boot_tokens=boot_tokens,
                ema_boot_tokens=ema.get("boot"),
                ema_ann_pooled=pool(ema["ann"]) if "ann" in ema else None,
                ema_base_pooled=pool(ema["base"]) if "base" in ema else None)

    def _annotation_sources(self, batch: Batch, enc: Encoded):
        """The online and target inputs of :meth:`ABNetwork.annotations` for this batch."""
        n = self.n_annotations(batch)
        if self.cfg.base == "dino":
            return None, None
        if self.cfg.base == "clip":
            return batch.captions[:n], batch.captions[:n]
        # SimCLR: the first crop of the first n base images
        return self.online.encoder.pool(enc.base_tokens[:n]), enc.ema_ann_pooled

    def online_q(self, batch: Batch, enc: Encoded, actions: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """The online ``Q_AB`` logits ``(M, K, L)`` of the bootstrap views for actions
        ``(M, K, 4)`` (default: the batch's, the transitions), with gradients
        (:meth:`ABNetwork.q_logits`: the value head of ``value_residual``)."""
        src, _ = self._annotation_sources(batch, enc)
        psi, psi_ab = self.online.annotations(src)
        actions = batch.actions if actions is None else actions
        mode = self.cfg.value_input
        tokens = enc.ema_boot_tokens if mode == "ema" else enc.boot_tokens
        tokens = tokens.detach() if mode == "detached" else tokens
        return self.online.q_logits(tokens, actions, psi, psi_ab, self.center)

    def bootstrap_logits(self, batch: Batch, enc: Encoded
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The logits of the bootstrapping loss: online ``Q_AB(. | x_i, a_ij)`` per ordered pair
        ``(M, n - 1, L)`` (with gradients, :meth:`online_q`), and, from the EMA target without
        gradients, ``p_ema(. | x_j)`` per view ``(M, L)`` and ``Q_ema(. | x_j, a')`` over the
        candidates ``(M, C, L)`` (``C = 0`` when gamma = 0: the max term has weight 0, so its
        decoder pass is skipped), and ``j`` ``(M, n - 1)``: the row of each pair's target
        view."""
        tgt, cfg = self.target, self.cfg
        _, ema_src = self._annotation_sources(batch, enc)
        pred = self.online_q(batch, enc)
        with torch.no_grad():
            ema_psi, ema_psi_ab = tgt.annotations(ema_src)
            tok = enc.ema_boot_tokens
            p_logits = tgt.base_logits(tgt.encoder.pool(tok), ema_psi, self.center)
            if self.gamma > 0:
                cand = batch.actions if cfg.candidates == "views" else batch.candidates
                q_logits = tgt.q_logits(tok, cand, ema_psi, ema_psi_ab, self.center)
            else:
                q_logits = p_logits.new_zeros(len(p_logits), 0, p_logits.shape[-1])
            n_images, n_views = batch.boot_boxes.shape[:2]
            j = self._pairs(n_images, n_views, tok.device)
        return pred, p_logits, q_logits, j

    def pair_candidates(self, q_logits: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The candidates of each ordered pair's max over ``a'``: ``q_logits`` ``(M, C, L)`` of
        every view and ``j`` ``(M, n - 1)`` -> ``(M (n - 1), C', L)``. With
        ``exclude_return`` and ``candidates="views"`` the return box ``a_j->i`` is left out
        (``C' = n - 2``): the target of the pair ``(i, j)`` then never holds a prediction made
        from the box of ``x_i`` itself."""
        q = q_logits[j]  # (M, n - 1, C, L)
        if not (self.cfg.exclude_return and self.cfg.candidates == "views" and q.shape[2]):
            return q.flatten(0, 1)
        n = j.shape[1] + 1
        others = pair_index(n)  # slot s of view v: the box to view others[v, s]
        ret = others[others] == torch.arange(n)[:, None, None]  # (n, n-1, n-1): slot is a_j->i
        keep = (~ret).nonzero()[:, 2].view(n, n - 1, n - 2)  # the n - 2 other candidate slots
        keep = keep.repeat(len(j) // n, 1, 1).to(q.device)  # (M, n - 1, n - 2)
        q = q.gather(2, keep[..., None].expand(-1, -1, -1, q.shape[-1]))
        return q.flatten(0, 1)

    def base_loss(self, batch: Batch, enc: Encoded
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The base annotation loss; for DINO, the teacher scores ``(V B, K)`` (for the centre
        update), else None; and ``emb_cos``, the collapse gauge: the mean cosine between the
        online projections ``phi`` of crop 0 of different images (a scalar without gradients;
        1 = every image is mapped to one point, the failure DINO-like losses can fall into)."""
        net, tgt, cfg = self.online, self.target, self.cfg
        n_crops, b = batch.base_views.shape[:2]
        z = net.phi(net.encoder.pool(enc.base_tokens))  # (V B, d), crop 0 of every image first
        with torch.no_grad():
            u = F.normalize(z[:b].detach().float(), dim=-1)
            emb_cos = ((u.sum(0).square().sum() - b) / max(b * (b - 1), 1))
        if cfg.base == "simclr":
            z = z.view(n_crops, b, -1)
            return nt_xent_loss(z[0], z[1], net.scale()), None, emb_cos
        if cfg.base == "clip":
            return clip_loss(z, net.psi(net.text(batch.captions)), net.scale()), None, emb_cos
        student = F.normalize(z, dim=-1) @ F.normalize(net.prototypes, dim=-1).T
        with torch.no_grad():
            t_protos = F.normalize(tgt.prototypes, dim=-1)
            teacher = F.normalize(tgt.phi(enc.ema_base_pooled), dim=-1) @ t_protos.T
        loss = dino_loss(student.view(n_crops, b, -1), teacher.view(n_crops, b, -1),
                         self.center, cfg.student_temperature, cfg.teacher_temperature)
        return loss, teacher, emb_cos

    def loss(self, batch: Batch, gauges: bool = True, to_host: bool = True,
             enc: Encoded | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one :class:`agents.method.data.Batch`.

        Returns ``(loss, metrics)``: a scalar with gradients and floats for logging (``loss``,
        ``base_loss``, ``t``, ``emb_cos``: the collapse gauge of :meth:`base_loss`; with
        bootstrapping also ``ab_loss``, ``ab_kl`` = ab_loss minus the target's entropy,
        ``t_ab``, ``value_acc``, and with ``gauges`` ``copy_acc``: answering the source view's
        own annotation, ``value_acc_permuted``: ``Q_AB`` with every action moved to another
        pair; an extra decoder pass without gradients, so the loop asks for it on log steps
        only). to_host: the metrics as Python floats (one device synchronisation); False:
        0-d float32 tensors on the batch's device, nothing waited for. Updates the DINO centre.
        """
        net, cfg = self.online, self.cfg
        bootstrap = cfg.ab_weight > 0 and batch.bootstrap
        if self.value_only:  # the value phase: the frozen encoders, no base loss
            if not bootstrap:
                raise ValueError("the value phase needs a batch with bootstrap views")
            if enc is None:
                with torch.no_grad():
                    enc = self.encode(batch, bootstrap)
            base_loss, teacher = torch.zeros((), device=batch.base_views.device), None
            metrics = {"t": net.scale().detach()}
        else:
            enc = self.encode(batch, bootstrap)
            base_loss, teacher, emb_cos = self.base_loss(batch, enc)
            metrics = {"base_loss": base_loss.detach(), "t": net.scale().detach(),
                       "emb_cos": emb_cos}
        loss = base_loss
        if bootstrap:
            pred, p_logits, q_logits, j = self.bootstrap_logits(batch, enc)
            pairs = (pred.flatten(0, 1), p_logits[j].flatten(0, 1),
                     self.pair_candidates(q_logits, j))
            ab_loss = bootstrap_loss(*pairs, self.gamma, cfg.max_mode)
            loss = ab_loss if self.value_only else base_loss + cfg.ab_weight * ab_loss
            with torch.no_grad():
                target = bootstrap_target(*pairs[1:], self.gamma, cfg.max_mode)
                entropy = -(target * target.clamp(min=1e-12).log()).sum(-1).mean()
                labels = p_logits.argmax(-1)
                hit = pred.argmax(-1) == labels[j]
                # the action-sensitivity gauge: the same pairs with every action moved to
                # another pair (a fixed roll by half the pairs: no random stream is used)
                if gauges:
                    rolled = batch.actions.flatten(0, 1).roll(hit.numel() // 2, 0)
                    pred_rolled = self.online_q(batch, enc, rolled.view_as(batch.actions))
                    metrics.update(
                        copy_acc=(labels[:, None] == labels[j]).float().mean(),
                        value_acc_permuted=(pred_rolled.argmax(-1) == labels[j]).float().mean())
            metrics.update(ab_loss=ab_loss.detach(), ab_kl=ab_loss.detach() - entropy,
                           t_ab=net.ab_scale().detach(), value_acc=hit.float().mean())
        if teacher is not None and self.training:
            self.center.copy_(update_center(self.center, teacher, cfg.center_momentum))
        metrics["loss"] = loss.detach()
        values = torch.stack([v.float() for v in metrics.values()])
        values = values.tolist() if to_host else values.unbind()  # tolist: one device sync
        return loss, dict(zip(metrics, values, strict=True))

    @torch.no_grad()
    def value(self, views: torch.Tensor, actions: torch.Tensor,
              annotations: torch.Tensor | None = None) -> torch.Tensor:
        """``Q_AB(l | x, a)`` of the online network: views ``(B, 3, H, W)``, actions
        ``(B, K, 4)`` relative boxes, annotations: ``(L, 3, H, W)`` annotation views
        (SimCLR), ``(L, ...)`` caption inputs (CLIP) or None (DINO: the prototypes).
        Returns ``(B, K, L)`` probabilities over the annotations."""
        net = self.online
        if self.cfg.base == "simclr":
            if annotations is None:
                raise ValueError("SimCLR's annotations are images: pass (L, 3, H, W) views")
            annotations = net.encoder.pool(net.encoder(annotations))
        psi, psi_ab = net.annotations(annotations)
        reader = self.target if self.cfg.value_input == "ema" else net  # the decoder's tokens
        return net.q_logits(reader.encoder(views), actions, psi, psi_ab, self.center).softmax(-1)


def _read_checkpoint(path, map_location) -> dict:
    """A verified checkpoint (:func:`agents.infra.checkpoint.read_checkpoint`) that holds a
    model."""
    from agents.infra.checkpoint import read_checkpoint, require

    ckpt = read_checkpoint(path, map_location)
    require(ckpt, ("encoder", "agent"), path, "loading a model")
    return ckpt


def load_agent(checkpoint_path: str, map_location: str | torch.device = "cpu") -> ABAgent:
    """The whole agent (online + EMA target) of a ``train_value.py`` checkpoint (or run folder)."""
    ckpt = _read_checkpoint(checkpoint_path, map_location)
    tok = ckpt.get("tokenizer")
    cfg = {**LEGACY_AB_CONFIG, **ckpt["ab_config"]}  # a field a checkpoint predates: as it was
    agent = ABAgent(make_encoder(**upgrade_encoder_config(ckpt["encoder"])), ABConfig(**cfg),
                    WordTokenizer(**tok) if tok else None, ckpt.get("text_dim", 384))
    agent.load_state_dict(ckpt["agent"])
    return agent.to(map_location)


def random_twin_agent(agent: ABAgent, seed: int = 0) -> ABAgent:
    """An agent of ``agent``'s architecture, config and tokenizer with fresh weights (drawn
    from ``seed``, the caller's random state untouched), in eval mode on ``agent``'s device:
    the random-init baseline of whatever is read off a trained agent (e.g. its rewards)."""
    config = upgrade_encoder_config(agent.encoder.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin = ABAgent(make_encoder(**config), agent.cfg, agent.tokenizer, agent.text_dim)
    return twin.to(next(agent.parameters()).device).eval()


def load_encoder(checkpoint_path: str, map_location: str | torch.device = "cpu",
                 ema: bool = False) -> Encoder:
    """The pre-trained encoder of a ``train_value.py`` checkpoint, for downstream use.

    checkpoint_path: ``runs/<name>/checkpoint.pt`` or the run folder ``runs/<name>``;
    ema: take the EMA target's encoder (DINO's teacher) instead of the online one.
    Returns the :class:`Encoder` in eval mode: ``encoder(views)`` maps ``(B, 3, H, W)`` uint8
    views of side ``encoder.view_size`` to tokens ``(B, T, D)``; ``encoder.pool`` -> ``(B, D)``.
    """
    ckpt = _read_checkpoint(checkpoint_path, map_location)
    return encoder_of(ckpt, ema).to(map_location).eval()


def encoder_of(ckpt: dict, ema: bool = False) -> Encoder:
    """The online (``ema``: target) encoder held by a verified checkpoint's state
    (:func:`agents.infra.checkpoint.read_checkpoint`), on the state's device."""
    encoder = make_encoder(**upgrade_encoder_config(ckpt["encoder"]))  # old: image_size
    prefix = "target.encoder." if ema else "online.encoder."
    state = {k[len(prefix):]: v for k, v in ckpt["agent"].items() if k.startswith(prefix)}
    encoder.load_state_dict(state)
    return encoder
