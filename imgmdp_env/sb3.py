"""Stable-Baselines3 adapter: a Gymnasium vector env (ImageView-v0, possibly wrapped) as an SB3
``VecEnv``. SB3 does not accept Gymnasium vector envs; this adapter gives it what its own
``DummyVecEnv`` gives it, without unbatching the natively batched env:

- *Autoreset in the same step*: ``dones = terminated | truncated``; a finished sub-env's
  ``infos[i]`` is the info of its last step (Gymnasium's ``final_info`` row, plus top-level keys
  it lacks, such as ``RecordEpisodeStatistics``'s ``"episode"``) with
  ``"terminal_observation"`` (the last view, before the reset) and ``"TimeLimit.truncated"``
  (``truncated and not terminated``, on every row as SB3 sets it); the reset info goes to
  ``reset_infos[i]``. The env must be in ``AutoresetMode.SAME_STEP`` (used as is) or
  ``DISABLED`` (the adapter resets finished sub-envs with ``options={"reset_mask": ...}``).
- *Seeding*: ``venv.seed(s)`` (what SB3 calls for ``PPO(..., seed=s)``) seeds the next
  ``reset()`` with ``s``: the batched env is seeded as a whole. ``set_options`` is passed to it.
- *Attributes* follow :mod:`imgmdp_env.vector_attrs` (the Gymnasium ``get_attr`` / ``call`` /
  ``set_attr`` of the vector env): per-sub-env attributes (``box``, ``image_index``, ``goal``)
  have one value per index, and ``set_attr`` may set a subset of them; an env-wide attribute
  is one object shared by all sub-envs: ``get_attr`` returns it per index, ``set_attr`` on a
  subset that would make sub-envs differ raises, ``env_method`` calls an env-wide method once
  and returns its result per index; ``env_is_wrapped`` looks through the wrapper chain.
- *Rewards* are float32, as in SB3's own ``DummyVecEnv`` (Gymnasium's side is float64).
- Box and Dict observations pass through unchanged (uint8 ``(3, H, W)`` views are already
  channel-first, so SB3 adds no transpose).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from imgmdp_env import checks as check
from imgmdp_env.vector_attrs import vector_attr_values, vector_call, vector_set_attr
from imgmdp_env.vector_info import info_rows, row
from imgmdp_env.wrappers import numpy_only

__all__ = ["SB3VecEnv", "make_sb3_env"]

class SB3VecEnv(VecEnv):
    """A Gymnasium ``VectorEnv`` as a Stable-Baselines3 ``VecEnv`` (see the module doc).

    Args:
        envs: a vector env in ``AutoresetMode.SAME_STEP`` or ``DISABLED``, e.g.
            ``gym.make_vec("ImageView-v0", num_envs=8, autoreset_mode="SameStep")`` with any
            wrappers (see :func:`make_sb3_env` for the one-liner).

    Example::

        >>> import gymnasium as gym
        >>> from stable_baselines3 import PPO
        >>> from imgmdp_env.sb3 import SB3VecEnv
        >>> envs = gym.make_vec("ImageView-v0", num_envs=2, autoreset_mode="SameStep",
        ...                     dataset_kwargs={"n": 8}, view_size=36)
        >>> model = PPO("CnnPolicy", SB3VecEnv(envs), n_steps=16, batch_size=32, n_epochs=1)
        >>> _ = model.learn(32)
    """

    def __init__(self, envs: VectorEnv) -> None:
        if not isinstance(envs, VectorEnv):
            raise TypeError(f"SB3VecEnv adapts a gymnasium VectorEnv, got {type(envs).__name__}"
                            "; for a single env use SB3's DummyVecEnv([lambda: env])")
        numpy_only(envs, "SB3VecEnv")
        mode = AutoresetMode(envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if mode == AutoresetMode.NEXT_STEP:
            raise ValueError(
                "SB3VecEnv needs autoreset in the same step, but the env's autoreset_mode is "
                "NEXT_STEP (Gymnasium's default): make it with gym.make_vec('ImageView-v0', ..., "
                "autoreset_mode='SameStep') (or 'Disabled'), or use make_sb3_env()")
        self.envs, self.autoreset_mode = envs, mode
        self._actions: np.ndarray | None = None
        super().__init__(envs.num_envs, envs.single_observation_space, envs.single_action_space)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> Any:
        seed = self._seeds[0]
        options = self._options[0]
        if any(o != options for o in self._options):
            raise ValueError("the sub-envs of a batched env take one options dict; "
                             f"set_options gave different ones: {self._options}")
        obs, info = self.envs.reset(seed=seed, options=dict(options) if options else None)
        self.reset_infos = info_rows(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, list[dict]]:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        obs, reward, terminated, truncated, info = self.envs.step(self._actions)
        self._actions = None
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        dones = terminated | truncated
        infos = info_rows(info, self.num_envs)
        done_rows = np.flatnonzero(dones)
        if len(done_rows) and self.autoreset_mode == AutoresetMode.SAME_STEP:
            if "final_obs" not in info:
                raise RuntimeError(f"{self.envs} reported done sub-envs {done_rows.tolist()} "
                                   "without info['final_obs']: is it really SAME_STEP?")
            finals = info_rows(info.get("final_info", {}), self.num_envs)
            for i in done_rows:
                self.reset_infos[i] = infos[i]
                infos[i] = {**infos[i], **finals[i],
                            "terminal_observation": info["final_obs"][i]}
        elif len(done_rows):  # DISABLED: reset the finished sub-envs ourselves
            last = {i: row(obs, i) for i in done_rows}
            obs, reset_info = self.envs.reset(options={"reset_mask": dones.copy()})
            resets = info_rows(reset_info, self.num_envs)
            for i in done_rows:
                infos[i]["terminal_observation"] = last[i]
                self.reset_infos[i] = resets[i]
        for i, info_i in enumerate(infos):
            info_i["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, np.asarray(reward, np.float32), dones, infos

    def close(self) -> None:
        self.envs.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.envs.render()
        return [None] * self.num_envs if frames is None else list(frames)

    # ------------------------------------------------------------------ attributes
    def _chain(self) -> Iterator[Any]:
        env = self.envs
        while isinstance(env, VectorWrapper):
            yield env
            env = env.env
        yield env

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        values = vector_attr_values(self.envs, attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = list(self._get_indices(indices))
        if sorted(idx) == list(range(self.num_envs)):
            values = [value] * self.num_envs
        else:  # the others keep theirs (an env-wide attribute then raises: one shared object)
            values = list(vector_attr_values(self.envs, attr_name))
            for i in idx:
                values[i] = value
        vector_set_attr(self.envs, attr_name, values)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        results = vector_call(self.envs, method_name, *method_args, **method_kwargs)
        return [results[i] for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper],
                       indices: VecEnvIndices = None) -> list[bool]:
        from stable_baselines3.common.env_util import is_wrapped

        chain = list(self._chain())
        wrapped = any(isinstance(env, wrapper_class) for env in chain)
        sub_envs = getattr(chain[-1], "envs", None) or []  # a SyncVectorEnv of single envs
        wrapped = wrapped or any(is_wrapped(e, wrapper_class) for e in sub_envs)
        return [wrapped for _ in self._get_indices(indices)]


def make_sb3_env(
    num_envs: int = 8,
    wrappers: Sequence[Callable[[VectorEnv], VectorEnv]] = (),
    env_id: str = "ImageView-v0",
    **env_kwargs: Any,
) -> SB3VecEnv:
    """``gym.make_vec(env_id, num_envs, autoreset_mode=SAME_STEP, **env_kwargs)``, wrapped by
    each of ``wrappers`` in order (callables ``VectorEnv -> VectorEnv``, e.g.
    ``VectorDiscreteViewActions`` or ``lambda e: VectorCaptionMatchReward(e, goal_obs=False)``),
    as an :class:`SB3VecEnv`.
    """
    env_id = check.string("env_id", env_id)
    if callable(wrappers) or isinstance(wrappers, str) or not isinstance(wrappers, Iterable):
        raise TypeError(f"wrappers ({wrappers!r:.80}) must be a sequence of callables "
                        "VectorEnv -> VectorEnv (for one wrapper: wrappers=[wrap])")
    wrappers = list(wrappers)
    bad = [i for i, w in enumerate(wrappers) if not callable(w)]
    if bad:
        raise TypeError(f"wrappers[{bad[0]}] ({wrappers[bad[0]]!r:.80}) is not callable; each "
                        "wrapper is a callable VectorEnv -> VectorEnv")
    mode = env_kwargs.pop("autoreset_mode", AutoresetMode.SAME_STEP)
    if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
        raise ValueError(f"autoreset_mode ({mode!r}) must be SAME_STEP in make_sb3_env (SB3 "
                         "resets in the same step); build SB3VecEnv yourself for DISABLED")
    envs = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=AutoresetMode.SAME_STEP,
                        **env_kwargs)
    for i, wrap in enumerate(wrappers):
        envs = wrap(envs)
        if not isinstance(envs, VectorEnv):
            raise TypeError(f"wrappers[{i}] ({wrap!r:.80}) returned {type(envs).__name__}, "
                            "not a gymnasium VectorEnv")
    return SB3VecEnv(envs)
