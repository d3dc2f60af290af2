"""The configuration of the AB agent (:class:`ABConfig`): its heads, decoder and loss. One
dataclass, used twice: ``agents.method.ab.ABAgent`` is built from it, and
``agents.infra.config.Args`` nests
it as its field ``ab`` without a prefix, so each field here is the ``train_value.py`` flag of
the same name (``--gamma``, ``--no-action-tokens``) and its docstring is that flag's ``--help``
line."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from agents.method.data import BASES

__all__ = ["LEGACY_AB_CONFIG", "ABConfig"]

# What a run saved before these fields existed did: a checkpoint or config.json without them
# loads with these values, not with today's defaults (agents.method.ab.load_agent, --resume).
LEGACY_AB_CONFIG = {"exclude_return": False, "boot_annotated": False, "value_residual": "none",
                    "decoder_geometry": False, "value_input": "online"}


@dataclass
class ABConfig:
    """Everything that shapes the agent besides its encoder: the base loss and its heads, the
    annotation decoder (the AB branch) and the bootstrapping loss."""

    # base loss and heads
    base: Literal["simclr", "dino", "clip"] = "simclr"
    """base annotation loss: SimCLR crops, DINO prototypes or CLIP captions"""
    proj_dim: int = 128
    """dimension of the embeddings phi, psi, phi_AB, psi_AB"""
    proj_hidden: int = 512
    """hidden width of the projection heads"""
    head_norm: Literal["none", "batch"] = "none"
    """normalisation in the hidden layer of the base head phi: batch = BatchNorm (DINO's choice
    for CNN backbones: it keeps the projections of different images apart, which DINO on the
    cpu-small CNN needs; without it DINO collapses there)"""
    temperature: float = 0.1
    """initial temperature of p(l|x) (learned)"""
    ab_temperature: float = 0.1
    """initial temperature of Q_AB(l|x,a) (learned, separate)"""
    ann_batch: int = 0
    """annotations per step for SimCLR/CLIP (0: base_batch / 2, at least 2, the paper's
    ratio; resolved by agents.infra.config.resolved before the agent is built)"""

    # annotation decoder
    decoder_width: int = 128
    """width of the annotation decoder"""
    decoder_depth: int = 2
    """transformer decoder layers"""
    decoder_heads: int = 4
    """attention heads of the decoder"""
    n_bins: int = 64
    """bins per box coordinate (the 4 action tokens)"""
    max_shift: float = 4.0
    """box centre offsets are binned on [-max_shift, max_shift] (units of the source view)"""
    max_log_scale: float = 2.5
    """box size ratios are binned on log scale in [-max_log_scale, max_log_scale]"""
    action_tokens: bool = True
    """feed the box tokens to the decoder (False: the paper's no-action-tokens ablation)"""
    decoder_geometry: bool = True
    """also give the decoder's queries a smooth embedding of the box and the source tokens
    pooled where the box lies (not in the paper: a prior on the geometry of boxes; on a frozen
    encoder it is what lets the decoder learn to use the action, docs/results.md)"""

    # DINO
    n_prototypes: int = 256
    """DINO prototypes (the annotations of the DINO variant)"""
    teacher_temperature: float = 0.04
    """DINO teacher temperature (sharpening)"""
    student_temperature: float = 0.1
    """DINO student temperature"""
    center_momentum: float = 0.9
    """DINO: momentum of the running centre of the teacher's outputs"""

    # CLIP
    text_backbone: Literal["words", "minilm"] = "words"
    """CLIP text side: a small transformer on words, or frozen all-MiniLM-L6-v2 (optional pkg)"""
    text_width: int = 128
    """CLIP, --text-backbone words: width of the text transformer"""
    text_depth: int = 2
    """CLIP, --text-backbone words: layers of the text transformer"""

    # annotation bootstrapping
    ab_weight: float = 1.0
    """weight of the bootstrapping loss (the paper: 1.0; 0 = the base method alone)"""
    gamma: float = 0.5
    """discount of the bootstrapping target (0 = the earlier version's loss)"""
    candidates: Literal["views", "random"] = "views"
    """candidate a' for max Q: boxes to the other views, or n_random random boxes"""
    n_random: int = 4
    """random candidate boxes per view (candidates = random)"""
    max_mode: Literal["annotation", "scalar"] = "annotation"
    """max over a' per annotation then renormalise, or one a' by its max probability"""
    exclude_return: bool = False
    """candidates = views: leave the return box a_j->i out of the max over a' for the pair
    (i, j), so that the source view x_i does not leak into its own target"""
    boot_annotated: bool = False
    """the bootstrap images are the first boot_images images of the base batch, so each one's
    own crop (SimCLR) or caption (CLIP) is among the annotations l; False: they are drawn
    independently and the annotations are crops of other images (the paper does not say)"""
    value_input: Literal["online", "detached", "ema"] = "online"
    """the source tokens the online decoder reads: online (the paper: the bootstrapping loss
    trains the encoder through the decoder), detached (the same tokens, no gradient into the
    encoder through the decoder), ema (the target encoder's tokens of the bootstrap views,
    which the target already computes: the online encoder skips those views)"""
    value_residual: Literal["auto", "none", "copy", "gated", "mixture"] = "auto"
    """how Q_AB uses the source view's own annotation p(l | x_i), a value function that ignores
    the action ("copy"): mixture: Q = w p(l | x_i) + (1 - w) Q_dec(l | x_i, a), a mixture of
    two experts with w = sigmoid(gate(x_i, a)); copy: the decoder's logits plus p's (gradient
    stopped); gated: plus p's weighted by a gate from (x_i, a); none: the decoder alone (the
    paper; below copy on near pairs at the cpu scale, docs/results.md); auto: mixture for
    SimCLR and CLIP, none for DINO (the teacher's sharpened, centred distribution is no
    calibrated prior: with it the base loss rose on a fixed batch)"""

    @property
    def annotated_boot(self) -> bool:
        """``boot_annotated`` where it means something: SimCLR's and CLIP's annotations come
        from the base images (crops, captions); DINO's are prototypes."""
        return self.boot_annotated and self.base != "dino"

    @property
    def residual(self) -> str:
        """``value_residual`` with ``"auto"`` resolved for the base."""
        if self.value_residual != "auto":
            return self.value_residual
        return "none" if self.base == "dino" else "mixture"

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ValueError(f"base {self.base!r} is not one of {BASES}")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma ({self.gamma}) must be in [0, 1)")
        if self.ab_weight < 0:
            raise ValueError(f"ab_weight ({self.ab_weight}) must be >= 0")
        backbones = typing.get_args(typing.get_type_hints(ABConfig)["text_backbone"])
        if self.text_backbone not in backbones:
            raise ValueError(f"text_backbone {self.text_backbone!r} is not one of {backbones}")
