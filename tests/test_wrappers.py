"""Discrete view actions, single and vector: each move changes the box as its name says."""

import doctest

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import imgmdp_env  # noqa: F401
from imgmdp_env import relative_box
from imgmdp_env.rewards import VectorCaptionMatchReward
from imgmdp_env.wrappers import (
    VIEW_ACTIONS,
    DiscreteViewActions,
    VectorDiscreteViewActions,
    view_env_core,
)

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 32, "size": 64}, "view_size": 36}
START = [0.5, 0.5, 0.4, 0.3]  # far from the edges: no move is clamped
MOVES = {  # relative box (dx, dy, sw, sh) of each move with pan=0.25, zoom=1.5
    "stay": [0, 0, 1, 1], "left": [-0.25, 0, 1, 1], "right": [0.25, 0, 1, 1],
    "up": [0, -0.25, 1, 1], "down": [0, 0.25, 1, 1],
    "zoom_in": [0, 0, 1 / 1.5, 1 / 1.5], "zoom_out": [0, 0, 1.5, 1.5],
}


def test_vector_moves_change_the_box_as_named():
    envs = VectorDiscreteViewActions(
        gym.make_vec("ImageView-v0", num_envs=7, max_pan=0.5, max_zoom=2.0, **SMALL),
        pan=0.25, zoom=1.5)
    assert envs.single_action_space == gym.spaces.Discrete(7)
    assert envs.action_space == gym.spaces.MultiDiscrete([7] * 7)
    envs.reset(seed=0, options={"box": START})
    _, _, _, _, info = envs.step(np.arange(7))
    rel = relative_box(torch.tensor(START), torch.from_numpy(info["box"])).numpy()
    for i, name in enumerate(VIEW_ACTIONS):
        assert rel[i] == pytest.approx(MOVES[name], abs=1e-5), name


@pytest.mark.parametrize("name", VIEW_ACTIONS)
def test_single_moves_change_the_box_as_named(name):
    env = DiscreteViewActions(gym.make("ImageView-v0", **SMALL), pan=0.25, zoom=1.5)
    env.reset(seed=0, options={"box": START})
    _, _, _, _, info = env.step(VIEW_ACTIONS.index(name))
    rel = relative_box(torch.tensor(START), torch.from_numpy(info["box"])).numpy()
    assert rel == pytest.approx(MOVES[name], abs=1e-5)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")
def test_single_env_passes_gymnasium_check_env():
    env = DiscreteViewActions(gym.make("ImageView-v0", augment=True, **SMALL))
    assert env.table.shape == (7, 8) and not env.table[:, 4:].any()  # no augmentation
    check_env(env, skip_render_check=True)


def test_sync_vector_env_of_single_envs():
    # the wrappers find the ImageView core under Gymnasium's own vectorisation too
    envs = gym.make_vec("ImageView-v0", num_envs=2, vectorization_mode="sync", **SMALL)
    assert view_env_core(envs).view_size == (36, 36)
    envs = VectorCaptionMatchReward(VectorDiscreteViewActions(envs))
    obs, info = envs.reset(seed=0)
    _, reward, _, _, info = envs.step(np.array([5, 6]))
    assert reward == pytest.approx(info["annotation_probs"][[0, 1], info["goal"]])


def test_bad_settings_and_actions_raise():
    with pytest.raises(ValueError, match=r"pan \(0.8\) must be in \(0, 0.5\]"):
        DiscreteViewActions(gym.make("ImageView-v0", **SMALL), pan=0.8)
    with pytest.raises(ValueError, match=r"zoom \(3.0\) must be in \(1, 2.0\]"):
        DiscreteViewActions(gym.make("ImageView-v0", **SMALL), zoom=3.0)
    env = DiscreteViewActions(gym.make("ImageView-v0", **SMALL))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action\(s\) 7 outside \[0, 7\)"):
        env.step(7)
    envs = VectorDiscreteViewActions(gym.make_vec("ImageView-v0", num_envs=2, **SMALL))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="integers"):
        envs.step(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\(2,\) integers"):
        envs.step(np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="VectorDiscreteViewActions"):
        DiscreteViewActions(gym.make_vec("ImageView-v0", num_envs=2, **SMALL))
    with pytest.raises(TypeError, match="not an ImageView-v0"):
        DiscreteViewActions(gym.make("CartPole-v1"))


@pytest.mark.parametrize("module", ["wrappers", "scorers", "rewards", "sb3", "single_env",
                                    "vector_attrs"])
def test_docstring_examples_run(module):
    import importlib

    result = doctest.testmod(importlib.import_module(f"imgmdp_env.{module}"))
    assert result.failed == 0 and result.attempted > 0
