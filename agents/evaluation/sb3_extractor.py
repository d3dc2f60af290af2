"""A Stable-Baselines3 features extractor around a (pre-trained) view encoder.

::

    from stable_baselines3 import PPO
    from agents.evaluation.sb3_extractor import PretrainedViewExtractor

    policy_kwargs = dict(
        features_extractor_class=PretrainedViewExtractor,
        features_extractor_kwargs=dict(checkpoint="runs/<run>/checkpoint.pt", features_dim=256),
    )  # checkpoint= also takes an encoder export folder, e.g. "runs/<run>/encoder"
    model = PPO("CnnPolicy", env, policy_kwargs=policy_kwargs)  # "MultiInputPolicy" for a Dict

Observations: a uint8 ``Box(0, 255, (3, H, W))`` view, or a ``Dict`` with such a ``"view"`` and
any other keys (e.g. ``"box"``, ``"goal"``), which are flattened and concatenated to the pooled
view feature. Features: ``encoder tokens -> encoder.pool -> concat(other keys) -> Linear ->
ReLU``. With ``freeze=True`` (the default) the encoder's weights never change: no gradient, and
the encoder stays in eval mode even while SB3 puts the policy in training mode. Whether frozen
or not, SB3's orthogonal initialisation (``ortho_init``) is kept off the encoder: it would
overwrite the pre-trained weights.

SB3 divides uint8 image observations by 255 (``normalize_images=True``, its default), so the
extractor receives floats in ``[0, 1]``; it turns them back into the uint8 views they were
(``x * 255`` rounded: exact, since they were ``uint8 / 255``), the encoders' one input contract.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["PretrainedViewExtractor"]

VIEW_KEY = "view"
_ACCEPTED = ("a uint8 Box(0, 255, (3, H, W)) view (use CnnPolicy), or a Dict with that view "
             f"under {VIEW_KEY!r} and flat Box/Discrete/MultiDiscrete/MultiBinary extras (use "
             "MultiInputPolicy)")


def _check_view_space(space: spaces.Space, where: str) -> None:
    ok = (isinstance(space, spaces.Box) and space.dtype == "uint8" and len(space.shape) == 3
          and space.shape[0] == 3)
    if not ok:
        got = space if not isinstance(space, spaces.Box) else (
            f"Box(shape={space.shape}, dtype={space.dtype})")
        hint = ""
        if isinstance(space, spaces.Box) and len(space.shape) == 3 and space.shape[-1] == 3:
            hint = (" It looks channel-last: transpose it to (3, H, W) (SB3's VecTransposeImage "
                    "or gymnasium.wrappers.TransformObservation).")
        raise ValueError(f"PretrainedViewExtractor: {where} is {got}; it accepts {_ACCEPTED}."
                         + hint)


class PretrainedViewExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: a view encoder's pooled tokens (+ flat extras) -> features.

    observation_space: ``Box(0, 255, (3, H, W), uint8)`` or ``Dict`` with key ``"view"``.
    features_dim: output width.
    encoder: an encoder following the ``agents.method.networks`` contract (``forward(views) -> (B,
    T,
        D)`` tokens, ``pool(tokens) -> (B, D)``); or
    checkpoint: a file written by ``agents/train_value.py`` or its run folder (loaded by
        ``agents.method.ab.load_encoder``), or an encoder export folder (``runs/<run>/encoder``,
        ``evaluate.py --export DIR``; loaded by ``agents.evaluation.export.load_encoder``); or
        neither: a
        fresh ``agents.method.networks.make_encoder(kind, view_size=H, **encoder_kwargs)``.
    freeze: keep the encoder's weights fixed (``requires_grad=False``, eval mode, no graph).

    forward: observations (after SB3's ``preprocess_obs``) -> ``(B, features_dim)``.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 256,
        encoder: nn.Module | None = None,
        checkpoint: str | os.PathLike | None = None,
        kind: str = "cnn",
        freeze: bool = True,
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(observation_space, spaces.Dict):
            if VIEW_KEY not in observation_space.spaces:
                raise ValueError(f"PretrainedViewExtractor: the Dict observation space has keys "
                                 f"{sorted(observation_space.spaces)} but no {VIEW_KEY!r}; it "
                                 f"accepts {_ACCEPTED}")
            view_space = observation_space[VIEW_KEY]
            _check_view_space(view_space, f"observation_space[{VIEW_KEY!r}]")
            extras = [k for k in observation_space.spaces if k != VIEW_KEY]
            for k in extras:
                if isinstance(observation_space[k], spaces.Dict | spaces.Tuple):
                    raise ValueError(f"PretrainedViewExtractor: extra key {k!r} is a nested "
                                     f"{type(observation_space[k]).__name__}; it accepts "
                                     f"{_ACCEPTED}")
        else:
            view_space, extras = observation_space, []
            _check_view_space(view_space, "the observation space")
        if features_dim < 1:
            raise ValueError(f"features_dim ({features_dim}) must be positive")
        super().__init__(observation_space, features_dim)
        if encoder is not None and checkpoint is not None:
            raise ValueError("pass either encoder= or checkpoint=, not both")
        if encoder is None and checkpoint is not None:
            from agents.evaluation.export import ExportError, is_export
            from agents.evaluation.export import load_encoder as load_export

            if is_export(checkpoint):  # an export folder: its one loader (checksum checked)
                try:
                    encoder = load_export(checkpoint).backbone
                except ExportError as e:
                    raise ExportError(f"PretrainedViewExtractor(checkpoint=...): {e}") from None
            else:
                from agents.infra.checkpoint import CheckpointError
                from agents.method.ab import load_encoder

                try:  # the one verified reader: a foreign / truncated / corrupted file is refused
                    encoder = load_encoder(checkpoint, map_location="cpu")
                except CheckpointError as e:
                    raise CheckpointError(f"PretrainedViewExtractor(checkpoint=...): {e}"
                                          ) from None
        elif encoder is None:
            from agents.method.networks import make_encoder

            encoder = make_encoder(kind, view_size=view_space.shape[1], **(encoder_kwargs or {}))
        self.encoder = encoder
        self.extra_keys = extras
        self.freeze = freeze
        if freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        # one dry forward on a sample, exactly as SB3 will preprocess it, to infer the widths
        sample = {k: torch.as_tensor(v)[None] for k, v in observation_space.sample().items()} \
            if isinstance(observation_space, spaces.Dict) \
            else torch.as_tensor(observation_space.sample())[None]
        sample = preprocess_obs(sample, observation_space, normalize_images=True)
        view = sample[VIEW_KEY] if isinstance(sample, dict) else sample
        param = next(iter(self.encoder.parameters()), None)
        with torch.no_grad():
            try:
                pooled = self._pooled(view if param is None else view.to(param.device))
            except Exception as e:  # noqa: BLE001 - re-raised with the likely cause
                size = getattr(self.encoder, "view_size", None)
                raise ValueError(
                    f"PretrainedViewExtractor: the encoder failed on a {tuple(view_space.shape)} "
                    f"view{f' (it was built for {size}x{size} views)' if size else ''}: {e}. "
                    "Make the environment's view size match the encoder's view_size."
                ) from e
        extra_dim = sum(get_flattened_obs_dim(observation_space[k]) for k in extras)
        self.linear = nn.Sequential(nn.Linear(pooled.shape[-1] + extra_dim, features_dim),
                                    nn.ReLU())

    def apply(self, fn: Callable[[nn.Module], None]) -> PretrainedViewExtractor:
        """Apply ``fn`` to the head only: the encoder keeps the weights it came with.

        SB3's actor-critic policies (``ortho_init=True``, their default) run
        ``features_extractor.apply(init_weights)``, which would overwrite the pre-trained
        weights with orthogonal ones.
        """
        for child in self.children():
            if child is not self.encoder:
                child.apply(fn)
        fn(self)
        return self

    def train(self, mode: bool = True) -> PretrainedViewExtractor:
        """Set training mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self

    def _pooled(self, views: torch.Tensor) -> torch.Tensor:
        """views ``(B, 3, H, W)`` float in [0, 1] (SB3's normalised images) or uint8
        -> ``(B, D)``."""
        if views.is_floating_point():
            if views.numel() and views.amax() > 1.0 + 1e-3:
                raise ValueError(
                    "PretrainedViewExtractor: views arrive as floats above 1 (max "
                    f"{views.amax().item():.1f}); the encoder expects floats in [0, 1] or uint8. "
                    "Keep SB3's default normalize_images=True in policy_kwargs.")
            views = views.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self.encoder.pool(self.encoder(views))

    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """observations: ``(B, 3, H, W)`` float in [0, 1], or a dict with ``"view"`` and flat
        extras ``(B, ...)``. Returns ``(B, features_dim)``."""
        if isinstance(observations, dict):
            feats = [self._pooled(observations[VIEW_KEY])]
            feats += [observations[k].flatten(1).float() for k in self.extra_keys]
            return self.linear(torch.cat(feats, dim=-1))
        return self.linear(self._pooled(observations))
