"""The view encoders: uint8 views -> tokens. Only torch is imported here, so a trained encoder
loads without the training code (:mod:`agents.evaluation.export`); :mod:`agents.method.networks`
re-exports them.

Contract (relied on by ``agents/evaluate.py``, ``agents/evaluation/sb3_extractor.py``,
``agents/evaluation/export.py``)::

    encoder = make_encoder("cnn", view_size=64)      # or "vit", "vits16"
    tokens = encoder(views)         # views (B, 3, H, W) uint8 -> tokens (B, T, D) float32
    feature = encoder.pool(tokens)  # (B, D), the mean over tokens
    encoder.embed_dim == D; encoder.num_tokens == T; encoder.view_size == H == W

One input contract: views are uint8 in [0, 255], as :func:`imgmdp_env.views.render_views`
and the environment produce them, and are normalised once, inside the encoder. Float input is
refused (a float tensor could be in [0, 1] or [0, 255]; guessing the scale silently gave some
views 255x the brightness of others when uint8 and float batches were concatenated).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ENCODERS",
    "MEAN",
    "STD",
    "CNNEncoder",
    "Encoder",
    "TimmEncoder",
    "ViTEncoder",
    "constructor_arguments",
    "encoder_kind",
    "make_encoder",
    "upgrade_encoder_config",
]

# Per-channel statistics used to normalise views (ImageNet's, the usual choice for RGB views).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Encoder(nn.Module):
    """Base class: views ``(B, 3, H, W)`` uint8 -> tokens ``(B, T, D)``.

    Subclasses implement :meth:`tokens` on normalised float views and set ``embed_dim``,
    ``num_tokens`` and ``view_size``.
    """

    embed_dim: int
    num_tokens: int
    view_size: int

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

    view_size: side of the (square) views; widths: channels per stage (the last is ``D``).
    """

    def __init__(self, view_size: int = 64, widths: tuple[int, ...] = (32, 64, 128),
                 stem_stride: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], stem_stride, stem_stride),
                                  nn.GroupNorm(8, widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        side = view_size // (stem_stride * 2 ** (len(widths) - 1))
        if side < 1:
            raise ValueError(f"view_size {view_size} is too small for stem stride "
                             f"{stem_stride} and {len(widths)} stages")
        self.embed_dim, self.num_tokens, self.view_size = widths[-1], side * side, view_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).flatten(2).transpose(1, 2)


class ViTEncoder(Encoder):
    """A pre-norm Vision Transformer; its patch tokens (no class token) are the tokens.

    view_size, patch_size: views are cut into ``(view_size / patch_size) ** 2`` patches;
    width, depth, heads: token dimension ``D``, number of blocks, attention heads.
    """

    def __init__(self, view_size: int = 64, patch_size: int = 8, width: int = 192,
                 depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if view_size % patch_size:
            raise ValueError(f"view_size ({view_size}) must be a multiple of patch_size "
                             f"({patch_size})")
        n = (view_size // patch_size) ** 2
        self.patch = nn.Conv2d(3, width, patch_size, patch_size)
        self.pos = nn.Parameter(torch.randn(1, n, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.embed_dim, self.num_tokens, self.view_size = width, n, view_size

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.norm(self.blocks(x))


class TimmEncoder(Encoder):
    """A timm vision transformer (``timm.create_model(model, pretrained=False)``: nothing is
    downloaded) at ``view_size``; its patch tokens (the class and register tokens dropped,
    after timm's final norm) are the tokens. Needs the ``timm`` extra (``pip install -e
    ".[timm]"``). model: any timm ViT name, e.g. ``"vit_small_patch16_224"`` (ViT-S/16);
    kwargs go to ``timm.create_model`` (e.g. ``depth=2``)."""

    def __init__(self, view_size: int = 224, model: str = "vit_small_patch16_224",
                 **kwargs) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as e:
            raise ImportError(f"encoder 'timm:{model}' needs timm, which is not installed: "
                              "pip install -e '.[timm]' (or pip install timm)") from e
        if model.split(".")[0] not in timm.list_models(["vit*", "deit*"]):
            raise ValueError(f"timm model {model!r} is not one of timm's ViTs (e.g. "
                             "'vit_small_patch16_224', 'vit_tiny_patch16_224'; all: "
                             "timm.list_models('vit*'))")
        self.model = timm.create_model(model, pretrained=False, num_classes=0,
                                       img_size=view_size, **kwargs)
        self.prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        self.embed_dim, self.view_size = int(self.model.embed_dim), view_size
        self.num_tokens = int(self.model.patch_embed.num_patches)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)[:, self.prefix:]


# Named configurations. "vits16" is ViT-S/16 (the paper's backbone) for 224 views on a GPU;
# "timm" builds a timm ViT (the kwarg ``model``; ``make_encoder("timm:<name>")`` names it).
ENCODERS = {
    "cnn": (CNNEncoder, {}),
    "vit": (ViTEncoder, {"patch_size": 8, "width": 192, "depth": 4, "heads": 3}),
    "vits16": (ViTEncoder, {"patch_size": 16, "width": 384, "depth": 12, "heads": 6}),
    "timm": (TimmEncoder, {}),
}


def encoder_kind(kind: str) -> tuple[str, dict]:
    """``kind`` of :func:`make_encoder` as ``(named configuration, its kwargs)``:
    ``"timm:<model>"`` is ``("timm", {"model": "<model>"})``; errors name what is valid."""
    if not isinstance(kind, str):
        raise TypeError(f"encoder kind must be a string, got {type(kind).__name__}")
    if kind.startswith("timm:"):
        if not kind[5:]:
            raise ValueError("encoder 'timm:' needs a timm model name, e.g. "
                             "'timm:vit_small_patch16_224'")
        return "timm", {"model": kind[5:]}
    if kind not in ENCODERS:
        raise ValueError(f"unknown encoder kind {kind!r}; choose from {sorted(ENCODERS)} or "
                         "'timm:<a timm ViT name>'")
    return kind, {}


def upgrade_encoder_config(config: dict) -> dict:
    """An encoder config as saved (a checkpoint's ``"encoder"``, ``encoder.config``, an export's
    ``arguments``) in today's names: ``image_size`` (the name of the view's side before
    ``view_size``; checkpoints and exports written before the rename carry it) becomes
    ``view_size``. The one reader of old encoder configs: every loader passes them through it,
    so ``make_encoder(**upgrade_encoder_config(config))`` builds the encoder they were saved
    from. A new dict; ``config`` is left as given."""
    config = dict(config)
    if "image_size" in config:
        old = config.pop("image_size")
        config.setdefault("view_size", old)
    return config


def make_encoder(kind: str = "cnn", view_size: int = 64, **kwargs) -> Encoder:
    """An encoder by name: ``"cnn"`` (small ResNet), ``"vit"`` (small ViT, patch 8, for 64x64
    views on a CPU), ``"vits16"`` (ViT-S/16, for 224x224 views on a GPU) or ``"timm:<name>"``
    (a timm ViT, :class:`TimmEncoder`).

    kwargs override the named configuration (e.g. ``width=256``, ``depth=6`` for a ViT;
    ``widths=(32, 64, 128)`` for the CNN). The result records its arguments in
    ``encoder.config``, so ``make_encoder(**encoder.config)`` builds a fresh twin.
    """
    if "image_size" in kwargs:
        raise TypeError("make_encoder: the view's side is view_size now, not image_size: "
                        f"make_encoder({kind!r}, view_size={kwargs['image_size']!r}) (a saved "
                        "config: make_encoder(**upgrade_encoder_config(config)))")
    kind, named = encoder_kind(kind)
    kwargs = {**named, **kwargs}
    cls, defaults = ENCODERS[kind]
    encoder = cls(view_size=view_size, **{**defaults, **kwargs})
    encoder.config = {"kind": kind, "view_size": view_size, **kwargs}  # make_encoder(**config)
    return encoder


def constructor_arguments(config: dict) -> dict:
    """Every argument the encoder class of ``make_encoder(**config)`` is built with: the
    named configuration's defaults and the class's own, under the overrides of ``config`` (e.g.
    ``{"kind": "cnn", "view_size": 64}`` -> ``{"view_size": 64, "widths": [32, 64, 128],
    "stem_stride": 4}``). Tuples become lists (JSON); ``make_encoder(kind, **args)`` rebuilds
    the same encoder."""
    config = upgrade_encoder_config(config)
    kind, named = encoder_kind(config.pop("kind", "cnn"))
    config = {**named, **config}
    cls, defaults = ENCODERS[kind]
    own = {name: p.default for name, p in inspect.signature(cls).parameters.items()
           if p.default is not inspect.Parameter.empty}
    args = {**own, **defaults, **config}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
