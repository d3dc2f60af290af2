"""Gymnasium vector-info helpers shared by the reward wrappers and the SB3 adapter: rows of a
batched observation / info (dicts of ``(N, ...)`` arrays with ``_key`` masks), and ending or
resetting chosen sub-envs from a wrapper (the reward wrappers' ``terminate_at``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import VectorEnv

FINAL_KEYS = ("final_obs", "_final_obs", "final_info", "_final_info")


def row(obs: Any, i: int) -> Any:
    """Sub-env ``i``'s observation (a copy) from a batched array or Dict observation."""
    return {k: np.array(v[i]) for k, v in obs.items()} if isinstance(obs, dict) else np.array(
        obs[i])


def info_rows(info: dict, n: int) -> list[dict[str, Any]]:
    """Gymnasium's vector info (dict of arrays with ``_key`` masks) -> SB3's list of dicts."""
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for k, v in info.items():
        if k.startswith("_") or k in FINAL_KEYS:
            continue
        mask = np.asarray(info.get("_" + k, np.ones(n, bool)), bool)
        sub = info_rows(v, n) if isinstance(v, dict) else None
        for i in np.flatnonzero(mask):
            rows[i][k] = sub[i] if sub is not None else v[i]
    return rows


def set_rows(dst: dict, src: dict, mask: np.ndarray) -> None:
    """Copy the rows ``mask`` of every entry of the vector info ``src`` into ``dst`` (in place),
    keeping Gymnasium's ``_key`` masks: a row is set where ``mask`` and src's own mask hold."""
    n = len(mask)
    for k, v in src.items():
        if k.startswith("_") or k in FINAL_KEYS:
            continue
        have = mask & np.asarray(src.get("_" + k, np.ones(n, bool)), bool)
        if isinstance(v, dict):
            sub = dict(dst[k]) if isinstance(dst.get(k), dict) else {}
            set_rows(sub, v, have)
            dst[k] = sub
        else:
            v, old = np.asarray(v), dst.get(k)
            new = v.copy() if not isinstance(old, np.ndarray) or old.shape != v.shape else (
                old.astype(np.result_type(old.dtype, v.dtype)))
            new[have] = v[have]
            dst[k] = new
        dst["_" + k] = np.asarray(dst.get("_" + k, np.zeros(n, bool)), bool) | have


def reset_rows(env: VectorEnv, obs: Any, info: dict, mask: np.ndarray) -> tuple[Any, dict]:
    """Reset the sub-envs ``mask`` ``(N,)`` bool of ``env`` now (``options["reset_mask"]``) and
    merge their reset obs / info rows into ``obs`` / ``info``."""
    r_obs, r_info = env.reset(options={"reset_mask": mask.copy()})
    if isinstance(obs, dict):
        obs = {k: np.where(mask.reshape(-1, *[1] * (v.ndim - 1)), r_obs[k], v)
               for k, v in obs.items()}
    else:
        obs = np.where(mask.reshape(-1, *[1] * (obs.ndim - 1)), r_obs, obs)
    info = dict(info)
    set_rows(info, r_info, mask)
    return obs, info


def end_now(env: VectorEnv, obs: Any, info: dict, extra: np.ndarray) -> tuple[Any, dict]:
    """SAME_STEP: end the episodes ``extra`` ``(N,)`` bool in this step, as the env ends its
    own: their last obs / info go to ``final_obs`` / ``final_info``, then they reset."""
    n = len(extra)
    old = np.asarray(info.get("_final_obs", np.zeros(n, bool)), bool)
    final_obs = np.array(info.get("final_obs", np.full(n, None, object)), dtype=object)
    for i in np.flatnonzero(extra):  # per finished sub-env, as Gymnasium lays out final_obs
        final_obs[i] = row(obs, i)
    final_info = dict(info.get("final_info", {}))
    set_rows(final_info, info, extra)
    obs, info = reset_rows(env, obs, info, extra)
    info.update(final_obs=final_obs, _final_obs=old | extra, final_info=final_info,
                _final_info=old | extra)
    return obs, info
