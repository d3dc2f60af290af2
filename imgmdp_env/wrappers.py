"""Action wrappers for ImageView-v0, for the single env and the vector env.

:class:`DiscreteViewActions` (a ``gym.ActionWrapper``) and :class:`VectorDiscreteViewActions`
(a ``VectorActionWrapper``) replace the continuous relative-box action with seven moves, for
DQN-style agents. Both map the move through one table to the env's own action, so the
dynamics stay those of :func:`imgmdp_env.actions.action_to_relative`.

Goal-conditioned observations live with the goals in :mod:`imgmdp_env.rewards`.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorActionWrapper, VectorEnv
from gymnasium.vector.utils import batch_space

from imgmdp_env import checks as check
from imgmdp_env.env import ImageViewVectorEnv, refuse_device
from imgmdp_env.vector_attrs import VectorAttrs

__all__ = [
    "VIEW_ACTIONS",
    "DiscreteViewActions",
    "VectorDiscreteViewActions",
    "view_action_table",
    "view_env_core",
]

VIEW_ACTIONS = ("stay", "left", "right", "up", "down", "zoom_in", "zoom_out")


def view_env_core(env: gym.Env | VectorEnv) -> ImageViewVectorEnv:
    """The natively batched :class:`ImageViewVectorEnv` under any wrapping of ImageView-v0:
    a ``gym.make`` env, a ``gym.make_vec`` env, or a ``SyncVectorEnv`` of single envs."""
    u = getattr(env, "unwrapped", None)
    if isinstance(u, ImageViewVectorEnv):
        return u
    if isinstance(getattr(u, "core", None), ImageViewVectorEnv):
        return u.core
    if getattr(u, "envs", None):
        return view_env_core(u.envs[0])
    name = type(env if u is None else u).__name__
    raise TypeError(f"{name} is not an ImageView-v0 environment: these wrappers need "
                    "gym.make('ImageView-v0') or gym.make_vec('ImageView-v0') underneath")


def numpy_only(env: Any, what: str) -> None:
    """Refuse an ImageView-v0 env made with ``device=`` (the torch API) under ``what``, a
    wrapper or adapter that speaks numpy (device mode supports it not yet). Envs that are not
    ImageView-v0 pass (the caller checks them as it always did)."""
    try:
        core = view_env_core(env)
    except TypeError:
        return
    refuse_device(core, what)


def view_action_table(core: ImageViewVectorEnv, pan: float, zoom: float) -> np.ndarray:
    """``(7, A)`` float32: the env action of each move in :data:`VIEW_ACTIONS`.

    pan: centre shift per move, in units of the current view's width (left/right) or height
    (up/down); at most the env's ``max_pan``. zoom: size ratio per move (zoom in divides both
    sides by it, zoom out multiplies); in ``(1, max_zoom]``. Augmentation dims stay 0 (none).
    """
    pan, zoom = check.number("pan", pan), check.number("zoom", zoom)
    if not 0 < pan <= core.max_pan:
        raise ValueError(f"pan ({pan}) must be in (0, {core.max_pan}], the env's max_pan")
    if not 1 < zoom <= core.max_zoom:
        raise ValueError(f"zoom ({zoom}) must be in (1, {core.max_zoom}], the env's max_zoom")
    a_pan, a_zoom = pan / core.max_pan, math.log(zoom) / math.log(core.max_zoom)
    table = np.zeros((len(VIEW_ACTIONS), core.single_action_space.shape[0]), np.float32)
    table[1, 0], table[2, 0] = -a_pan, a_pan  # x grows to the right
    table[3, 1], table[4, 1] = -a_pan, a_pan  # y grows downwards
    table[5, 2:4], table[6, 2:4] = -a_zoom, a_zoom
    return table


def _lookup(table: np.ndarray, actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(actions)
    whole = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and bool(np.all(a == np.round(a))))
    if a.size != math.prod(shape) or not whole:
        raise ValueError(f"discrete view actions must be {shape} integers in [0, "
                         f"{len(table)}), got {a.dtype} {a.shape}: {a.tolist()}")
    a = a.reshape(shape).astype(np.int64)
    if a.min() < 0 or a.max() >= len(table):
        raise ValueError(f"discrete view action(s) {a.tolist()} outside [0, {len(table)}): "
                         f"{dict(enumerate(VIEW_ACTIONS))}")
    return table[a]


class DiscreteViewActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Seven discrete moves for the single env: ``Discrete(7)`` over :data:`VIEW_ACTIONS`
    (0 stay, 1 left, 2 right, 3 up, 4 down, 5 zoom in, 6 zoom out).

    Args:
        env: a ``gym.make("ImageView-v0", ...)`` env (possibly wrapped).
        pan: shift per move in view widths/heights (default 0.25, at most the env's max_pan).
        zoom: size ratio per zoom move (default 1.5, at most the env's max_zoom).

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.wrappers import DiscreteViewActions
        >>> env = DiscreteViewActions(gym.make("ImageView-v0", dataset_kwargs={"n": 8}))
        >>> _ = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(5)  # zoom in
        >>> env.action_space
        Discrete(7)
    """

    def __init__(self, env: gym.Env, pan: float = 0.25, zoom: float = 1.5) -> None:
        if isinstance(env, VectorEnv):
            raise TypeError("DiscreteViewActions wraps a single env; use "
                            "VectorDiscreteViewActions for a vector env")
        if not isinstance(env, gym.Env):
            raise TypeError(f"DiscreteViewActions wraps a gym.make('ImageView-v0') env, not "
                            f"{type(env).__name__}")
        gym.utils.RecordConstructorArgs.__init__(self, pan=pan, zoom=zoom)
        super().__init__(env)
        self.table = view_action_table(view_env_core(env), pan, zoom)
        self.action_space = spaces.Discrete(len(VIEW_ACTIONS))

    def action(self, action: Any) -> np.ndarray:
        return _lookup(self.table, action, ())


class VectorDiscreteViewActions(VectorAttrs, VectorActionWrapper):
    """Seven discrete moves for the vector env: ``Discrete(7)`` per sub-env (``MultiDiscrete``
    for the batch), one table lookup per step. Same moves and arguments as
    :class:`DiscreteViewActions`.

    Example::

        >>> import gymnasium as gym, numpy as np, imgmdp_env
        >>> from imgmdp_env.wrappers import VectorDiscreteViewActions
        >>> envs = VectorDiscreteViewActions(
        ...     gym.make_vec("ImageView-v0", num_envs=4, dataset_kwargs={"n": 8}))
        >>> _ = envs.reset(seed=0)
        >>> obs, *_ = envs.step(np.array([0, 1, 5, 6]))
        >>> obs.shape
        (4, 3, 64, 64)
    """

    def __init__(self, env: VectorEnv, pan: float = 0.25, zoom: float = 1.5) -> None:
        if not isinstance(env, VectorEnv):
            raise TypeError("VectorDiscreteViewActions wraps a vector env; use "
                            "DiscreteViewActions for a single env")
        numpy_only(env, "VectorDiscreteViewActions")
        super().__init__(env)
        self.table = view_action_table(view_env_core(env), pan, zoom)
        self.single_action_space = spaces.Discrete(len(VIEW_ACTIONS))
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # read by third-party clients (TorchRL checks it); call / get_attr / set_attr as
        # SyncVectorEnv's come from VectorAttrs (imgmdp_env.vector_attrs)
        self.autoreset_mode = AutoresetMode(env.metadata.get("autoreset_mode",
                                                             AutoresetMode.NEXT_STEP))

    def actions(self, actions: Any) -> np.ndarray:
        return _lookup(self.table, actions, (self.num_envs,))
