"""Encoders that return tokens, the annotation decoder, and the small heads of the AB agent.

The encoders (``make_encoder``: uint8 views ``(B, 3, H, W)`` -> tokens ``(B, T, D)``, ``pool``
-> ``(B, D)``) live in :mod:`agents.method.encoders`, which imports only torch (a trained encoder
loads
without the training code, :mod:`agents.evaluation.export`); they are re-exported here.

The annotation decoder follows the paper (Ghosh & Levine 2025, Sec. 4): the relative box
``a = bb_{i->j}`` is discretised into 4 tokens by :func:`imgmdp_env.views.box_tokens`, each
embedded by a learned token embedding plus a slot embedding (which coordinate); a small
transformer decoder takes them as queries, cross-attends to the source view's tokens and emits
one vector per box. ``K`` boxes per source view go through in one pass: the ``4K`` queries
share one sequence with a block-diagonal self-attention mask, so the source tokens are
projected once, not ``K`` times.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agents.method.encoders import (  # noqa: F401 - the encoders' old home: re-exported
    ENCODERS,
    MEAN,
    STD,
    CNNEncoder,
    Encoder,
    ViTEncoder,
    make_encoder,
)
from imgmdp_env.views import box_tokens

__all__ = [
    "CNNEncoder",
    "AnnotationDecoder",
    "Encoder",
    "LogitScale",
    "ProjectionHead",
    "ViTEncoder",
    "make_encoder",
]

# Frequencies of the decoder's smooth box embedding (geometry=True), in turns per unit of
# the source view's side (dx, dy) or of log size ratio: from 1/8 (coarse) to 4 (a token or so).
FOURIER_FREQS = 2 * math.pi * torch.tensor([0.125, 0.25, 0.5, 1.0, 2.0, 4.0])


class AnnotationDecoder(nn.Module):
    """(source tokens, relative boxes) -> one vector per box: the paper's action decoder.

    embed_dim, num_tokens: the encoder's ``D`` and ``T``; width, depth, heads: the decoder's;
    n_bins, max_shift, max_log_scale: the box discretisation (:func:`views.box_tokens`);
    action_tokens: False replaces the box tokens by their slot embeddings only (the paper's
    "no action tokens" ablation: the decoder then cannot know where the target view is).
    geometry: also give every query (a) a smooth embedding of the box (Fourier features of
    ``dx, dy, log sw, log sh`` through a linear layer: nearby boxes get nearby queries, which
    64 independent bin embeddings per coordinate are not) and (b) the source tokens pooled
    where the box lies (a Gaussian window over the token grid centred on the box, as wide as
    the box): what the source view already shows of the target view. Not in the paper: a
    prior that spares a small run learning the geometry of boxes from scratch.
    """

    def __init__(self, embed_dim: int, num_tokens: int, width: int = 128, depth: int = 2,
                 heads: int = 4, n_bins: int = 64, max_shift: float = 4.0,
                 max_log_scale: float = 2.5, action_tokens: bool = True,
                 geometry: bool = False) -> None:
        super().__init__()
        self.n_bins, self.max_shift, self.max_log_scale = n_bins, max_shift, max_log_scale
        self.action_tokens, self.geometry = action_tokens, geometry and action_tokens
        if self.geometry:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"geometry needs a square token grid; {num_tokens} tokens")
            centres = (torch.arange(side) + 0.5) / side - 0.5  # token centres, source widths
            grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1)  # (y, x)
            self.register_buffer("token_xy", grid.flip(-1).reshape(-1, 2), persistent=False)
            self.half_token = 0.5 / side
            self.box_embed = nn.Linear(4 * 2 * len(FOURIER_FREQS), width)
        self.token_embed = nn.Embedding(n_bins, width)
        self.slot_embed = nn.Parameter(torch.randn(4, width) * 0.02)
        self.memory_proj = nn.Linear(embed_dim, width)
        self.memory_pos = nn.Parameter(torch.randn(1, num_tokens, width) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.out_dim = width

    def queries(self, actions: torch.Tensor) -> torch.Tensor:
        """actions ``(B, K, 4)`` relative boxes -> queries ``(B, K, 4, width)``."""
        if not self.action_tokens:
            return self.slot_embed.expand(*actions.shape[:2], 4, -1)
        tok = box_tokens(actions, self.n_bins, self.max_shift, self.max_log_scale)
        return self.token_embed(tok) + self.slot_embed

    def box_window(self, memory: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The source tokens pooled over the target box: memory ``(B, T, width)``, actions
        ``(B, K, 4)`` -> ``(B, K, width)``, weights ``exp(-|token - centre|^2 / 2 s^2)`` per
        axis with ``s`` half the box's side (at least half a token), normalised over tokens."""
        centre = actions[..., None, :2]  # (B, K, 1, 2)
        sigma = (actions[..., None, 2:] / 2).clamp(min=self.half_token)
        d = (self.token_xy - centre) / sigma  # (B, K, T, 2)
        w = torch.softmax(-0.5 * d.square().sum(-1), dim=-1)  # (B, K, T)
        return w @ memory

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """tokens ``(B, T, D)``, actions ``(B, K, 4)`` -> ``(B, K, width)``."""
        b, k = actions.shape[:2]
        memory = self.memory_proj(tokens)
        q = self.queries(actions)
        if self.geometry:
            u = torch.cat([actions[..., :2], actions[..., 2:].clamp(min=1e-6).log()], -1)
            f = u[..., None] * FOURIER_FREQS.to(u)  # (B, K, 4, F)
            fourier = torch.cat([f.sin(), f.cos()], -1).flatten(-2)
            q = q + (self.box_embed(fourier) + self.box_window(memory, actions))[:, :, None]
        q = q.reshape(b, 4 * k, -1)
        group = torch.arange(4 * k, device=q.device) // 4
        mask = group[:, None] != group[None, :]  # True = may not attend (other boxes' queries)
        memory = memory + self.memory_pos
        for layer in self.layers:
            q = layer(q, memory, tgt_mask=mask)
        return self.norm(q).view(b, k, 4, -1).mean(dim=2)


class ProjectionHead(nn.Module):
    """MLP ``in_dim -> hidden -> out_dim`` (SimCLR's projector); outputs are not normalised.

    norm: ``"batch"`` puts a BatchNorm on the hidden layer, over every leading position of
    the input (DINO's head for CNN backbones); ``"none"`` (the default) is the plain MLP.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int = 512,
                 norm: str = "none") -> None:
        super().__init__()
        if norm not in ("none", "batch"):
            raise ValueError(f"norm={norm!r}: valid: 'none', 'batch'")
        layers = [nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)]
        if norm == "batch":
            layers.insert(1, _FlatBatchNorm(hidden))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        return self.net(x)


class _FlatBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the features of ``(..., C)``: every leading position is a sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class LogitScale(nn.Module):
    """A learned inverse temperature ``t = exp(s)`` (CLIP's logit scale), clamped at ``max``.

    temperature: the initial temperature, i.e. ``t = 1 / temperature`` at start.
    """

    def __init__(self, temperature: float = 0.1, max_scale: float = 100.0) -> None:
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"temperature ({temperature}) must be positive")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        """The scalar inverse temperature ``t``."""
        return self.log_scale.clamp(max=self.max_log).exp()
