"""Stable-Baselines3 through the adapter: SB3's env checker, VecEnv semantics, and PPO / DQN
learning a few hundred steps."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecMonitor

import imgmdp_env  # noqa: F401
from imgmdp_env.rewards import CaptionMatchReward, VectorCaptionMatchReward
from imgmdp_env.sb3 import SB3VecEnv, make_sb3_env
from imgmdp_env.wrappers import DiscreteViewActions, VectorDiscreteViewActions

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 32, "size": 64}, "view_size": 36}
ROOT = Path(__file__).resolve().parents[1]


def make_vec(num_envs=3, **kw):
    return gym.make_vec("ImageView-v0", num_envs=num_envs, **{**SMALL, **kw})


@pytest.mark.parametrize("stack", ["plain", "goal", "discrete-goal", "dict-goal"])
def test_sb3_check_env_on_the_single_env(stack):
    env = gym.make("ImageView-v0", obs_mode="dict" if stack == "dict-goal" else "view", **SMALL)
    if stack.startswith("discrete"):
        env = DiscreteViewActions(env)
    if stack != "plain":
        env = CaptionMatchReward(env, terminate_at=0.9)
    check_env(env, warn=False)


def test_adapter_refuses_next_step_autoreset():
    with pytest.raises(ValueError, match="autoreset_mode='SameStep'"):
        SB3VecEnv(make_vec())
    with pytest.raises(TypeError, match="DummyVecEnv"):
        SB3VecEnv(gym.make("ImageView-v0", **SMALL))


def _run(mode, steps=5, seed=0):
    envs = VectorCaptionMatchReward(make_vec(max_episode_steps=2, autoreset_mode=mode))
    venv = SB3VecEnv(envs)
    venv.seed(seed)
    trace = [venv.reset()]
    rng = np.random.default_rng(0)
    for _ in range(steps):
        trace.append(venv.step(rng.uniform(-1, 1, (3, 4)).astype(np.float32)))
    return venv, trace


def test_same_step_semantics_terminal_observation_and_truncation():
    venv, trace = _run("SameStep", steps=2)
    obs, reward, dones, infos = trace[2]
    assert dones.all() and reward.dtype == np.float32
    for i, info in enumerate(infos):
        last = info["terminal_observation"]
        assert set(last) == {"view", "goal"} and last["goal"] == info["goal"]
        assert not np.array_equal(last["view"], obs["view"][i])  # obs is the reset view
        assert info["TimeLimit.truncated"] is True
        assert reward[i] == pytest.approx(info["annotation_probs"][info["goal"]])
        assert venv.reset_infos[i]["goal"] == obs["goal"][i]
        assert venv.reset_infos[i]["image_index"] != info["image_index"] or not np.allclose(
            venv.reset_infos[i]["box"], info["box"])
    assert not any("terminal_observation" in info for info in trace[1][3])


def test_disabled_autoreset_gives_the_same_transitions_as_same_step():
    _, same = _run("SameStep")
    _, disabled = _run("Disabled")
    for a, b in zip(same[1:], disabled[1:], strict=True):
        assert np.array_equal(a[0]["view"], b[0]["view"]) and np.array_equal(a[2], b[2])
        assert np.allclose(a[1], b[1])
        for ia, ib in zip(a[3], b[3], strict=True):
            assert ("terminal_observation" in ia) == ("terminal_observation" in ib)
            if "terminal_observation" in ia:
                assert np.array_equal(ia["terminal_observation"]["view"],
                                      ib["terminal_observation"]["view"])


def test_termination_is_not_reported_as_truncation():
    envs = make_vec(num_envs=1, autoreset_mode="SameStep")
    ds = envs.unwrapped.dataset
    i = next(i for i, lab in enumerate(ds.object_labels) if 0 in lab)  # an image with a circle
    venv = SB3VecEnv(VectorCaptionMatchReward(envs, goals="circle", terminate_at=0.9))
    box = ds.object_boxes[i][ds.object_labels[i] == 0][0]
    venv.set_options({"image_index": i, "box": box * [1, 1, 1.2, 1.2]})
    venv.reset()
    _, reward, dones, infos = venv.step(np.zeros((1, 4), np.float32))
    assert dones[0] and reward[0] > 0.9 and infos[0]["TimeLimit.truncated"] is False


def test_seeding_is_reproducible():
    a = _run("SameStep", steps=2, seed=3)[1]
    b = _run("SameStep", steps=2, seed=3)[1]
    c = _run("SameStep", steps=2, seed=4)[1]
    assert np.array_equal(a[0]["view"], b[0]["view"]) and np.array_equal(a[2][0]["view"],
                                                                          b[2][0]["view"])
    assert not np.array_equal(a[0]["view"], c[0]["view"])


def test_attributes_methods_and_wrappers():
    venv = SB3VecEnv(VectorCaptionMatchReward(make_vec(autoreset_mode="SameStep")))
    assert venv.get_attr("vocabulary") == [venv.envs.vocabulary] * 3
    assert venv.get_attr("max_pan", indices=[1]) == [0.5] and venv.render_mode is None
    assert venv.has_attr("dataset") and not venv.has_attr("no_such_thing")
    venv.set_attr("max_pan", 0.25)
    assert venv.get_attr("max_pan") == [0.25] * 3 and venv.envs.unwrapped.max_pan == 0.25
    with pytest.raises(ValueError, match="share one object"):
        venv.set_attr("max_pan", 0.3, indices=[0])
    assert venv.env_method("reset", seed=0)[0][0]["goal"].shape == (3,)
    assert venv.env_is_wrapped(VectorCaptionMatchReward) == [True] * 3
    assert venv.env_is_wrapped(Monitor) == [False] * 3



@pytest.mark.parametrize("case", ["ppo-cnn", "ppo-multiinput", "dqn-discrete"])
def test_sb3_algorithms_learn_through_the_adapter(case):
    goal_obs = case == "ppo-multiinput"
    wrappers = [lambda e: VectorCaptionMatchReward(e, goal_obs=goal_obs, terminate_at=0.8)]
    if case == "dqn-discrete":
        wrappers.insert(0, VectorDiscreteViewActions)
    venv = VecMonitor(make_sb3_env(num_envs=2, wrappers=wrappers, max_episode_steps=8, **SMALL))
    if case == "dqn-discrete":
        model = DQN("CnnPolicy", venv, buffer_size=500, learning_starts=64, batch_size=32,
                    train_freq=4, target_update_interval=50, seed=0, device="cpu")
    else:
        model = PPO("MultiInputPolicy" if goal_obs else "CnnPolicy", venv, n_steps=64,
                    batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    returns = [ep["r"] for ep in model.ep_info_buffer]
    # at most 8 steps paying p <= 1, one of them a success paying p / (1 - 0.99)
    assert len(returns) >= 256 // 8 and all(0 <= r <= 7 + 100 for r in returns)
    if case == "dqn-discrete":
        assert model._n_updates > 0
    obs = venv.reset()
    action, _ = model.predict(obs)
    assert venv.action_space.contains(action[0])


def test_example_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "sb3_ppo.py"), "--steps",
                          "256", "--num-envs", "2", "--view-size", "36"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mean reward per step" in out.stdout
