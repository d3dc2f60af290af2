"""Encoders that return tokens, the annotation decoder, and the small heads of the AB agent.

Contract (relied on by ``agents/evaluate.py`` and ``agents/sb3_extractor.py``)::

    encoder = make_encoder("cnn", image_size=64)      # or "vit", "vits16"
    tokens = encoder(views)         # views (B, 3, H, W) uint8 -> tokens (B, T, D)
    feature = encoder.pool(tokens)  # (B, D), the mean over tokens
    encoder.embed_dim == D; encoder.num_tokens == T; encoder.image_size == H == W

One input contract: views are uint8 in [0, 255], as :func:`imgmdp_env.views.render_views`
and the environment produce them, and are normalised once, inside the encoder. Float input is
refused (a float tensor could be in [0, 1] or [0, 255]; guessing the scale silently gave some
views 255x the brightness of others when uint8 and float batches were concatenated).

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
import torch.nn.functional as F
from torch import nn

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

# Per-channel statistics used to normalise views (ImageNet's, the usual choice for RGB views).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Base class: views ``(B, 3, H, W)`` uint8 -> tokens ``(B, T, D)``.

    Subclasses implement :meth:`tokens` on normalised float views and set ``embed_dim``,
    ``num_tokens`` and ``image_size``.
    """

    embed_dim: int
    num_tokens: int
    image_size: int

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, views: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 in [0, 255] -> standardised float32 (per-channel mean / std)."""
        if views.dtype != torch.uint8:
            raise TypeError(
                f"encoder views must be uint8 in [0, 255], got {views.dtype}: pass the views as "
                "render_views / the environment give them (float views in [0, 1]: "
                "(views * 255).round().to(torch.uint8))")
        return (views.float().div_(255.0) - self.mean) / self.std

    def tokens(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """views ``(B, 3, H, W)`` -> tokens ``(B, T, D)``."""
        if views.ndim != 4 or views.shape[1] != 3:
            raise ValueError(f"views must be (B, 3, H, W), got {tuple(views.shape)}")
        return self.tokens(self.normalise(views))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``(B, T, D)`` -> pooled feature ``(B, D)`` (mean over tokens)."""
        return tokens.mean(dim=1)


class _BasicBlock(nn.Module):
    """ResNet basic block with GroupNorm (batch-independent: the bootstrap batch is small and
    the EMA target must behave the same in training and evaluation)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.skip = (
            nn.Identity() if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                               nn.GroupNorm(8, c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.skip(x))


class CNNEncoder(Encoder):
    """A small ResNet: a patchify stem (``stem_stride`` x ``stem_stride`` convolution with the
    same stride, as in ConvNeXt: cheap on a CPU), then one basic block per stage with strides
    1, 2, 2, ... Its last feature map, ``(H / 16, W / 16)`` with the defaults, is the token grid.

    image_size: side of the (square) views; widths: channels per stage (the last is ``D``).
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (32, 64, 128),
                 stem_stride: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], stem_stride, stem_stride),
                                  nn.GroupNorm(8, widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        side = image_size // (stem_stride * 2 ** (len(widths) - 1))
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for stem stride "
                             f"{stem_stride} and {len(widths)} stages")
        self.embed_dim, self.num_tokens, self.image_size = widths[-1], side * side, image_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).flatten(2).transpose(1, 2)


class ViTEncoder(Encoder):
    """A pre-norm Vision Transformer; its patch tokens (no class token) are the tokens.

    image_size, patch_size: views are cut into ``(image_size / patch_size) ** 2`` patches;
    width, depth, heads: token dimension ``D``, number of blocks, attention heads.
    """

    def __init__(self, image_size: int = 64, patch_size: int = 8, width: int = 192,
                 depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size "
                             f"({patch_size})")
        n = (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(3, width, patch_size, patch_size)
        self.pos = nn.Parameter(torch.randn(1, n, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.embed_dim, self.num_tokens, self.image_size = width, n, image_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.norm(self.blocks(x))


# Frequencies of the decoder's smooth box embedding (geometry=True), in turns per unit of
# the source view's side (dx, dy) or of log size ratio: from 1/8 (coarse) to 4 (a token or so).
FOURIER_FREQS = 2 * math.pi * torch.tensor([0.125, 0.25, 0.5, 1.0, 2.0, 4.0])


# Named configurations. "vits16" is ViT-S/16 (the paper's backbone) for 224 views on a GPU.
ENCODERS = {
    "cnn": (CNNEncoder, {}),
    "vit": (ViTEncoder, {"patch_size": 8, "width": 192, "depth": 4, "heads": 3}),
    "vits16": (ViTEncoder, {"patch_size": 16, "width": 384, "depth": 12, "heads": 6}),
}


def make_encoder(kind: str = "cnn", image_size: int = 64, **kwargs) -> Encoder:
    """An encoder by name: ``"cnn"`` (small ResNet), ``"vit"`` (small ViT, patch 8, for 64x64
    views on a CPU) or ``"vits16"`` (ViT-S/16, for 224x224 views on a GPU).

    kwargs override the named configuration (e.g. ``width=256``, ``depth=6`` for a ViT;
    ``widths=(32, 64, 128)`` for the CNN). The result records its arguments in
    ``encoder.config``, so ``make_encoder(**encoder.config)`` builds a fresh twin.
    """
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder kind {kind!r}; choose from {sorted(ENCODERS)}")
    cls, defaults = ENCODERS[kind]
    encoder = cls(image_size=image_size, **{**defaults, **kwargs})
    encoder.config = {"kind": kind, "image_size": image_size, **kwargs}  # make_encoder(**config)
    return encoder


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
