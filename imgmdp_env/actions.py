"""The env's action parameterisation: box actions in ``[-1, 1]^4`` <-> relative boxes.

One pair of maps, used by the env (:func:`action_to_relative` in each step), by value-guided
search and the examples (:func:`relative_to_action`: which action reaches a box)."""

from __future__ import annotations

import math

import torch

from imgmdp_env import checks as check

__all__ = ["BOX_ACTIONS", "action_to_relative", "relative_to_action"]

BOX_ACTIONS = 4  # dx, dy, log-scale x, log-scale y


def action_to_relative(action: torch.Tensor, max_pan: float, max_zoom: float) -> torch.Tensor:
    """Map box actions in ``[-1, 1]^4`` to relative boxes ``(dx, dy, sw, sh)``.

    ``dx, dy = a[:2] * max_pan`` (centre shift in units of the current view's width / height);
    ``sw, sh = max_zoom ** a[2:]`` (size ratio per step in ``[1/max_zoom, max_zoom]``).
    The zero action keeps the view. action: ``(..., >=4)``. Returns ``(..., 4)``.
    """
    max_pan = check.number("max_pan", max_pan, 0, lo_open=True)
    max_zoom = check.number("max_zoom", max_zoom, 1)
    a = action[..., :BOX_ACTIONS]
    return torch.cat([a[..., :2] * max_pan, torch.exp(a[..., 2:] * math.log(max_zoom))], -1)


def relative_to_action(rel: torch.Tensor, max_pan: float, max_zoom: float) -> torch.Tensor:
    """The inverse of :func:`action_to_relative`: relative boxes
    ``(..., 4)`` ``(dx, dy, sw, sh)`` -> box actions ``(..., 4)`` in ``[-1, 1]``.

    ``a[:2] = (dx, dy) / max_pan``, ``a[2:] = log(sw, sh) / log(max_zoom)``, then clipped to
    ``[-1, 1]`` (the env clips too): a relative box within the per-step bounds maps back
    exactly; one beyond them becomes the largest move toward it in each coordinate. With
    ``max_zoom == 1`` the size cannot change and ``a[2:] = 0``. Sizes must be positive.
    """
    max_pan = check.number("max_pan", max_pan, 0, lo_open=True)
    max_zoom = check.number("max_zoom", max_zoom, 1)
    if not bool((rel[..., 2:] > 0).all()):
        raise ValueError(f"relative boxes need positive size ratios (sw, sh), got "
                         f"{rel[..., 2:].min().item():.4g}")
    log_zoom = math.log(max_zoom)
    zoom = rel[..., 2:].log() / log_zoom if log_zoom > 0 else torch.zeros_like(rel[..., 2:])
    return torch.cat([rel[..., :2] / max_pan, zoom], -1).clamp(-1.0, 1.0)
