"""Third-party vector clients: ``call`` / ``get_attr`` / ``set_attr`` of the natively batched env
and its wrappers compared with ``SyncVectorEnv`` on the same calls, the reward dtype of every
wrapper, and smoke tests through TorchRL and skrl (the ``rl`` extra; skipped without it)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics

import imgmdp_env
from imgmdp_env.datasets import make_dataset
from imgmdp_env.rewards import (
    AnnotationReward,
    CaptionMatchReward,
    CurationReward,
    ObjectVisibilityScorer,
    VectorAnnotationReward,
    VectorCaptionMatchReward,
    VectorCurationReward,
)
from imgmdp_env.sb3 import SB3VecEnv
from imgmdp_env.wrappers import DiscreteViewActions, VectorDiscreteViewActions

N = 3
SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 8, "size": 64}, "view_size": 16}
START = {"image_index": 2, "box": [0.4, 0.5, 0.3, 0.3], "goal": "circle"}


def native(render_mode=None, **kw):
    envs = gym.make_vec("ImageView-v0", num_envs=N, render_mode=render_mode, **SMALL, **kw)
    return VectorCaptionMatchReward(VectorDiscreteViewActions(envs))


def sync(render_mode=None):
    wrap = [DiscreteViewActions, CaptionMatchReward]
    return gym.make_vec("ImageView-v0", num_envs=N, vectorization_mode="sync", wrappers=wrap,
                        render_mode=render_mode, **SMALL)


def both(render_mode=None):
    pair = native(render_mode), sync(render_mode)
    for envs in pair:
        envs.reset(seed=0, options=START)
    return pair


def same(a, b):
    assert type(a) is tuple and type(b) is tuple and len(a) == len(b) == N
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y


@pytest.mark.parametrize("name", ["image_index", "box", "goal", "observation_space",
                                  "action_space", "vocabulary", "render_mode"])
def test_get_attr_and_call_answer_as_sync_vector_env(name):
    a, b = both()
    same(a.get_attr(name), b.get_attr(name))
    same(a.call(name), b.call(name))


def test_attributes_pass_through_every_layer_and_over_a_sync_base():
    a, b = both()
    assert a.get_attr("action_space") == (gym.spaces.Discrete(7),) * N  # the action wrapper's
    assert a.get_attr("box")[0].dtype == np.float32 and a.get_attr("image_index") == (2,) * N
    # our vector wrappers over a SyncVectorEnv of bare single envs: sub-env names go to it
    over = VectorCaptionMatchReward(gym.make_vec("ImageView-v0", num_envs=N,
                                                 vectorization_mode="sync", **SMALL))
    over.reset(seed=0, options=START)
    same(over.get_attr("box"), a.get_attr("box"))
    same(over.get_attr("goal"), a.get_attr("goal"))
    # Gymnasium's own vector wrappers have no call(): the functions reach through them
    wrapped = RecordEpisodeStatistics(a)
    assert not hasattr(wrapped, "get_attr")
    same(imgmdp_env.vector_get_attr(wrapped, "box"), b.get_attr("box"))


def test_render_through_call_gives_one_frame_per_sub_env():
    a, b = both(render_mode="rgb_array")
    fa, fb = a.call("render"), b.call("render")
    same(fa, fb)  # the same state renders the same pixels
    assert fa[0].ndim == 3 and fa[0].dtype == np.uint8
    a, b = both()
    with pytest.warns(UserWarning, match="render_mode"):
        assert a.call("render") == (None,) * N


def test_set_attr_per_sub_env_goal_as_sync_vector_env():
    a, b = both()
    for envs in (a, b):
        envs.set_attr("goal", [0, 1, 2])
    same(a.get_attr("goal"), b.get_attr("goal"))
    assert a.get_attr("goal") == (0, 1, 2)
    obs, *_ = a.step(np.zeros(N, np.int64))  # the next step pays and shows the new goals
    assert obs["goal"].tolist() == [0, 1, 2]
    a.set_attr("goal", "star")  # one value for all; names are resolved
    assert a.get_attr("goal") == (a.vocabulary.index("star"),) * N
    with pytest.raises(ValueError, match="unknown goal 'nope'"):
        a.set_attr("goal", "nope")


@pytest.mark.parametrize("call, error", [
    (lambda e: e.set_attr("goal", [1, 2]), ValueError),  # wrong length: Gymnasium's message
    (lambda e: e.set_attr("box", np.array([0.5, 0.5, 0.2, 0.2])), AttributeError),  # state
    (lambda e: e.get_attr("no_such_thing"), AttributeError),
    (lambda e: e.call("no_such_thing", 1), AttributeError),
])
def test_bad_calls_raise_what_sync_vector_env_raises(call, error):
    for envs in both():
        with pytest.raises(error):
            call(envs)


def test_new_and_env_wide_attributes():
    a, b = both()
    for envs in (a, b):  # a name nobody has is created (Gymnasium's force=True)
        envs.set_attr("note", "x")
    same(a.get_attr("note"), b.get_attr("note"))
    # env-wide: one shared object, set once, seen by every sub-env
    a.set_attr("max_pan", 0.25)
    assert a.unwrapped.max_pan == 0.25 and a.get_attr("max_pan") == (0.25,) * N
    a.set_attr("max_pan", [0.3] * N)  # equal per-env values are one value
    assert a.unwrapped.max_pan == 0.3
    with pytest.raises(ValueError, match="env-wide.*share one object"):
        a.set_attr("max_pan", [0.1, 0.2, 0.3])  # SyncVectorEnv could; one object cannot
    # an env-wide method runs once for the batch; its result is repeated per sub-env
    frames = a.call("render_frames", 24)
    assert len(frames) == N and all(f is frames[0] for f in frames) and len(frames[0]) == N


def test_sb3_adapter_attributes_use_the_same_rules():
    venv = SB3VecEnv(native(autoreset_mode="SameStep"))
    venv.reset()
    assert venv.get_attr("box", indices=[1])[0].shape == (4,)
    others = list(venv.get_attr("goal")[1:])  # drawn at reset: any goal, star included
    venv.set_attr("goal", "star", indices=[0])  # per-sub-env: a subset is fine
    star = venv.envs.vocabulary.index("star")
    assert venv.get_attr("goal")[0] == star and list(venv.get_attr("goal")[1:]) == others
    assert callable(venv.get_attr("reset")[0])  # SB3's get_attr never calls


# ---------------------------------------------------------------------------- reward dtype
CURATED = make_dataset("scenes", n=4, size=32, seed=1)
SINGLE = {
    "annotation": lambda e: AnnotationReward(e, ObjectVisibilityScorer(e.unwrapped.core.dataset)),
    "caption": lambda e: CaptionMatchReward(e, terminate_at=0.5),
    "curation": lambda e: CurationReward(e, CURATED),
    "discrete+caption": lambda e: CaptionMatchReward(DiscreteViewActions(e)),
}
VECTOR = {
    "bare": lambda e: e,
    "annotation": lambda e: VectorAnnotationReward(e, ObjectVisibilityScorer(
        e.unwrapped.dataset)),
    "caption": lambda e: VectorCaptionMatchReward(e, terminate_at=0.5),
    "curation": lambda e: VectorCurationReward(e, CURATED),
    "discrete+caption": lambda e: VectorCaptionMatchReward(VectorDiscreteViewActions(e)),
}


@pytest.mark.parametrize("name", list(SINGLE))
def test_single_env_rewards_are_python_floats(name):
    env = SINGLE[name](gym.make("ImageView-v0", **SMALL))
    env.reset(seed=0)
    assert type(env.step(env.action_space.sample())[1]) is float


@pytest.mark.parametrize("mode", ["native", "sync"])
@pytest.mark.parametrize("name", list(VECTOR))
def test_vector_rewards_are_float64_as_sync_vector_envs(name, mode):
    if mode == "native":
        envs = VECTOR[name](gym.make_vec("ImageView-v0", num_envs=2, **SMALL))
    else:  # SyncVectorEnv of single envs, the reference
        envs = gym.make_vec("ImageView-v0", num_envs=2, vectorization_mode="sync", **SMALL,
                            wrappers=[] if name == "bare" else [SINGLE[name]])
    envs.reset(seed=0)
    reward = envs.step(envs.action_space.sample())[1]
    assert reward.dtype == np.float64 and reward.shape == (2,)


def test_sb3_rewards_are_float32_as_dummy_vec_env():
    venv = SB3VecEnv(VectorCaptionMatchReward(gym.make_vec(
        "ImageView-v0", num_envs=2, autoreset_mode="SameStep", **SMALL)))
    venv.reset()
    venv.step_async(np.zeros((2, 4), np.float32))
    assert venv.step_wait()[1].dtype == np.float32


# ---------------------------------------------------------------------------- clients
def _client_env(mode="SameStep"):
    envs = gym.make_vec("ImageView-v0", num_envs=2, autoreset_mode=mode, max_episode_steps=3,
                        render_mode="rgb_array", **SMALL)
    return VectorCaptionMatchReward(VectorDiscreteViewActions(envs), terminate_at=0.8)


@pytest.mark.parametrize("mode", ["SameStep", "Disabled"])
def test_torchrl_gym_wrapper_rollout(mode):
    pytest.importorskip("torchrl")
    from torchrl.envs.libs.gym import GymWrapper

    env = GymWrapper(_client_env(mode))
    env.set_seed(0)  # the env's images
    torch.manual_seed(0)  # the rollout's random actions: no episode of this one ends early
    td = env.rollout(7, break_when_any_done=False)  # crosses two time limits: autoresets
    assert td.batch_size == (2, 7)
    assert td["next", "view"].shape == (2, 7, 3, 16, 16)
    assert td["next", "reward"].shape == (2, 7, 1) and td["next", "truncated"][:, 2].all()
    # the time limit (3 steps) counted from each env's own last reset: an episode that
    # terminates early (caption match >= 0.8) restarts the count
    truncated = td["next", "truncated"].squeeze(-1)
    terminated = td["next", "terminated"].squeeze(-1)
    for i in range(2):
        t = 0
        for s in range(7):
            t += 1
            if t == 3:
                assert truncated[i, s] or terminated[i, s], (i, s)
            else:
                assert not truncated[i, s], (i, s)
            if truncated[i, s] or terminated[i, s]:
                t = 0
    assert truncated.any()  # the rollout crossed a time limit


def test_skrl_gymnasium_wrapper_steps_and_renders():
    pytest.importorskip("skrl")
    from skrl.envs.wrappers.torch import wrap_env

    env = wrap_env(_client_env(), wrapper="gymnasium")
    assert env.num_envs == 2
    obs, _ = env.reset()
    assert obs.shape[0] == 2
    ended = []
    for _ in range(4):  # stay: the time limit (3) ends both episodes once
        obs, reward, terminated, truncated, _ = env.step(torch.zeros(2, 1, dtype=torch.int64))
        ended.append((terminated | truncated).flatten().tolist())
    assert reward.shape == (2, 1) and reward.dtype == torch.float32
    assert [e for e in ended if any(e)] and obs.shape[0] == 2
    frames = env.render()  # skrl renders a vector env through envs.call("render")
    assert len(frames) == 2 and frames[0].ndim == 3
