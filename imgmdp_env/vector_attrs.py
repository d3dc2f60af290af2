"""Gymnasium's vector helper methods, ``call``, ``get_attr`` and ``set_attr``, for the natively
batched ImageView-v0 env and its vector wrappers, answering as ``SyncVectorEnv`` does.

``SyncVectorEnv`` holds ``num_envs`` separate env objects, so each answer is a tuple with one
entry per sub-env. A natively batched env is one object; what a "sub-env attribute" means:

- **Per-sub-env attributes** (``per_env_attrs`` of each class): state that differs between
  sub-envs; one entry per sub-env, the row of the batch. The env: ``image_index`` (``int``),
  ``box`` (``(4,)`` float32 cxcywh), both read-only (set them with
  ``reset(options={"box": ..., "image_index": ..., "reset_mask": ...})``, which also renders
  the view); the reward wrappers: ``goal`` (``int``, settable: one id / name, or one per
  sub-env). :class:`~imgmdp_env.env.ImageViewEnv` and the single-env reward wrappers have the
  same names, so a ``SyncVectorEnv`` of single envs answers alike.
- ``observation_space`` / ``action_space``: a sub-env's, i.e. ``single_observation_space`` /
  ``single_action_space`` (read-only).
- ``render``: the frames, one per sub-env (``render()`` already returns them per sub-env).
- **Everything else is env-wide** (``max_pan``, ``dataset``, ``view_size``, ``reset``, ...):
  one object shared by all sub-envs. ``get_attr`` returns it once per sub-env (the same
  object); ``call`` calls a method **once** for the whole batch and returns its result once per
  sub-env; ``set_attr`` takes one value, or a list / tuple of ``num_envs`` values that are all
  equal (different values raise: they cannot be kept apart).

Lookup follows ``gymnasium.Wrapper.get_wrapper_attr``: the outermost wrapper that has the
attribute answers, else the next one in, down to the env; ``set_attr`` of a name nobody has
creates it on the outermost wrapper (Gymnasium's ``force=True``). Over a ``SyncVectorEnv`` or
``AsyncVectorEnv`` the names no wrapper has are passed to its own ``call`` / ``set_attr``.
Gymnasium's own vector wrappers (e.g. ``RecordEpisodeStatistics``) have no ``call``: put them
inside ours, or use :func:`vector_call` / :func:`vector_set_attr` on any wrapper stack.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper

__all__ = [
    "VectorAttrs",
    "vector_attr_values",
    "vector_call",
    "vector_get_attr",
    "vector_set_attr",
]

SUB_ENV_SPACES = {"observation_space": "single_observation_space",
                  "action_space": "single_action_space"}
BATCHED_METHODS = frozenset({"render"})  # methods whose result is already one per sub-env


class VectorAttrs:
    """Mixin giving a natively batched ``VectorEnv`` (or a ``VectorWrapper`` of one)
    ``SyncVectorEnv``'s ``call`` / ``get_attr`` / ``set_attr`` (see the module doc).

    A class lists its per-sub-env attributes in ``per_env_attrs`` and answers them in
    :meth:`_get_per_env` (and :meth:`_set_per_env` for settable ones).

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.rewards import VectorCaptionMatchReward
        >>> envs = VectorCaptionMatchReward(
        ...     gym.make_vec("ImageView-v0", num_envs=2, dataset_kwargs={"n": 8}))
        >>> _ = envs.reset(seed=0, options={"image_index": 3})
        >>> envs.get_attr("image_index"), envs.get_attr("max_pan")
        ((3, 3), (0.5, 0.5))
        >>> envs.set_attr("goal", ["circle", "star"])
        >>> [envs.vocabulary[g] for g in envs.get_attr("goal")]
        ['circle', 'star']
    """

    per_env_attrs: ClassVar[tuple[str, ...]] = ()
    num_envs: int

    def _get_per_env(self, name: str) -> tuple[Any, ...]:
        raise NotImplementedError(name)

    def _set_per_env(self, name: str, values: list[Any]) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} is per-sub-env state and "
                             "read-only here; set it with reset(options=...)")

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` (or read attribute ``name``): a tuple of ``num_envs`` results
        (an env-wide method runs once; its result is repeated)."""
        return vector_call(self, name, *args, **kwargs)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute ``name`` of each sub-env: a tuple of ``num_envs`` values (``call(name)``,
        as in ``SyncVectorEnv``)."""
        return vector_call(self, name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set ``name`` on the sub-envs: one value for all, or a list / tuple of ``num_envs``
        (per-sub-env attributes take one each; env-wide ones need them equal)."""
        vector_set_attr(self, name, values)


def _layers(envs: VectorEnv):
    """The wrapper stack, outermost first, ending with the base env."""
    env = envs
    while isinstance(env, VectorWrapper):
        yield env
        env = env.env
    yield env


def _is_foreign_base(env: Any) -> bool:
    """A vector env of separate sub-env objects (SyncVectorEnv, AsyncVectorEnv)."""
    return not isinstance(env, VectorWrapper | VectorAttrs) and callable(getattr(env, "call",
                                                                                 None))


def _check_envs(envs: Any, what: str) -> int:
    if not isinstance(envs, VectorEnv):
        raise TypeError(f"{what} takes a gymnasium VectorEnv, got {type(envs).__name__}")
    return envs.num_envs


def _owner(envs: VectorEnv, name: str) -> Any:
    """The layer that answers ``name``: the outermost with it as a per-sub-env attribute or an
    attribute, else a SyncVectorEnv / AsyncVectorEnv base (it asks its sub-envs), else None."""
    for env in _layers(envs):
        if (isinstance(env, VectorAttrs) and name in env.per_env_attrs) or _is_foreign_base(
                env) or hasattr(env, name):
            return env
    return None


def _missing(envs: VectorEnv, name: str) -> AttributeError:
    chain = " -> ".join(type(e).__name__ for e in _layers(envs))
    return AttributeError(f"no wrapper or env of {chain} has an attribute {name!r}")


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"the attribute name ({name!r}) must be a str")
    return name


def vector_attr_values(envs: VectorEnv, name: str) -> tuple[Any, ...]:
    """Attribute ``name`` of each sub-env, never calling it (methods come back bound): a tuple
    of ``num_envs`` entries (what SB3's ``VecEnv.get_attr`` returns)."""
    n, name = _check_envs(envs, "vector_attr_values"), _check_name(name)
    if name in SUB_ENV_SPACES:  # the outermost wrapper's: what a sub-env observes / takes
        return (getattr(envs, SUB_ENV_SPACES[name]),) * n
    env = _owner(envs, name)
    if env is None:
        raise _missing(envs, name)
    if isinstance(env, VectorAttrs) and name in env.per_env_attrs:
        return tuple(env._get_per_env(name))
    if _is_foreign_base(env):
        subs = getattr(env, "envs", None)  # SyncVectorEnv: no call; AsyncVectorEnv: get_attr
        return (tuple(e.get_wrapper_attr(name) for e in subs) if subs is not None
                else tuple(env.get_attr(name)))
    return (getattr(env, name),) * n


def vector_call(envs: VectorEnv, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """``envs.call(name, *args, **kwargs)`` on any stack of vector wrappers over ImageView-v0
    (or over a ``SyncVectorEnv``): a tuple with one entry per sub-env (see the module doc)."""
    n, name = _check_envs(envs, "vector_call"), _check_name(name)
    env = None if name in SUB_ENV_SPACES else _owner(envs, name)
    if env is not None and _is_foreign_base(env):
        return tuple(env.call(name, *args, **kwargs))  # each sub-env's own method
    values = vector_attr_values(envs, name)
    if (isinstance(env, VectorAttrs) and name in env.per_env_attrs) or not callable(values[0]):
        return values
    result = values[0](*args, **kwargs)  # an env-wide method: once for the batch
    if name in BATCHED_METHODS:
        return (None,) * n if result is None else tuple(result)
    return (result,) * n


def vector_get_attr(envs: VectorEnv, name: str) -> tuple[Any, ...]:
    """``envs.get_attr(name)`` on any stack of vector wrappers: ``vector_call(envs, name)``."""
    return vector_call(envs, name)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return bool(np.array_equal(a, b))
        return bool(a == b)
    except Exception:  # noqa: BLE001 - objects that cannot be compared are different
        return False


def _set_shared(envs: VectorEnv, env: Any, name: str, values: list[Any]) -> None:
    if not all(_same(v, values[0]) for v in values[1:]):
        per_env = sorted({a for e in _layers(envs) if isinstance(e, VectorAttrs)
                          for a in e.per_env_attrs})
        raise ValueError(
            f"set_attr({name!r}) got {len(values)} different values, but {name!r} is env-wide: "
            f"the {len(values)} sub-envs of the natively batched {type(env).__name__} share "
            f"one object, so they take one value (per-sub-env attributes: {per_env})")
    setattr(env, name, values[0])


def vector_set_attr(envs: VectorEnv, name: str, values: list[Any] | tuple[Any, ...] | Any
                    ) -> None:
    """``envs.set_attr(name, values)`` on any stack of vector wrappers (see the module doc):
    ``values`` one value for all sub-envs, or a list / tuple with one per sub-env."""
    n, name = _check_envs(envs, "vector_set_attr"), _check_name(name)
    if not isinstance(values, list | tuple):
        values = [values for _ in range(n)]
    if len(values) != n:
        raise ValueError("Values must be a list or tuple with length equal to the number of "
                         f"environments. Got `{len(values)}` values for {n} environments.")
    values = list(values)
    if name in SUB_ENV_SPACES:
        raise AttributeError(f"set_attr({name!r}): a sub-env's {name} is the vector env's "
                             f"{SUB_ENV_SPACES[name]}, which a wrapper defines; it is not set "
                             "from outside")
    env = _owner(envs, name)
    if env is None:  # nobody has it: create it on the outermost (Gymnasium's force=True)
        _set_shared(envs, envs, name, values)
    elif isinstance(env, VectorAttrs) and name in env.per_env_attrs:
        env._set_per_env(name, values)
    elif _is_foreign_base(env):
        env.set_attr(name, values)
    else:
        _set_shared(envs, env, name, values)
