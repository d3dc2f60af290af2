"""The single-environment ImageView-v0: :class:`ImageViewEnv`, a thin adaptor over the batched
core :class:`~imgmdp_env.env.ImageViewVectorEnv` with ``num_envs=1`` (``gym.make``'s entry
point; ``gym.make_vec`` builds the core itself)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from imgmdp_env import checks as check
from imgmdp_env.env import ImageViewVectorEnv

__all__ = ["ImageViewEnv"]


class ImageViewEnv(gym.Env):
    """The single-environment view MDP: a thin adaptor over :class:`ImageViewVectorEnv` with
    ``num_envs=1`` (same spaces, same dynamics, same random stream).

    Truncation comes from Gymnasium's ``TimeLimit`` (``gym.make`` adds it from the registered
    ``max_episode_steps``); pass ``max_episode_steps`` here only when not using ``gym.make``.

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> env = gym.make("ImageView-v0", dataset="scenes", dataset_kwargs={"n": 64})
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape
        (3, 64, 64)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, max_episode_steps: int | None = None,
                 **kwargs: Any) -> None:
        if "autoreset_mode" in kwargs:  # silently dropped before: the caller got NEXT_STEP
            raise TypeError(
                f"autoreset_mode ({kwargs['autoreset_mode']!r}) applies to vector envs, not to "
                "ImageViewEnv: use gym.make_vec('ImageView-v0', autoreset_mode=...) (the native "
                "vector env), or vector_kwargs={'autoreset_mode': ...} with "
                "vectorization_mode='sync' / 'async'")
        if kwargs.get("device") is not None:
            raise TypeError(
                f"device ({kwargs['device']!r}) applies to the natively batched vector env: "
                "use gym.make_vec('ImageView-v0', device=...); the single env (gym.make) "
                "supports device mode not yet")
        self.core = ImageViewVectorEnv(num_envs=1, autoreset_mode=AutoresetMode.DISABLED,
                                       render_mode=render_mode,
                                       max_episode_steps=max_episode_steps, **kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self.render_mode = render_mode

    @property
    def image_index(self) -> int:
        """The image of the current view (as ``get_attr("image_index")`` of the vector env)."""
        return int(self.core.image_idx[0])

    @property
    def box(self) -> np.ndarray:
        """The current view's box ``(4,)`` float32 cxcywh (as ``get_attr("box")``)."""
        return self.core.boxes[0].numpy().copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        seed = check.seed("seed", seed)  # numpy ints too (gym.Env.reset takes only int)
        super().reset(seed=seed)
        obs, info = self.core.reset(seed=seed, options=options)
        return _first(obs), _first_info(info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.core.step(np.asarray(action)[None])
        return (_first(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                _first_info(info))

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode='rgb_array'")
            return None
        return self.core.render_frames()[0]


def _first(obs: Any) -> Any:
    return {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]


def _first_info(info: dict) -> dict:
    return {k: v[0] for k, v in info.items() if not k.startswith("_")}
