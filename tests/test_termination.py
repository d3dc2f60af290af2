"""The terminal payment of ``terminate_at``: hand-built episodes with scripted scores, so every
reward and flag is known exactly (gamma = 0.75: the success step pays 4 p)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import imgmdp_env  # noqa: F401
from imgmdp_env.rewards import AnnotationReward, VectorAnnotationReward, VectorCaptionMatchReward
from imgmdp_env.sb3 import SB3VecEnv

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 8, "size": 64}, "view_size": 16}
GAMMA, AT = 0.75, 0.75  # 1 / (1 - gamma) = 4; all scores below are exact in float32
STAY = np.zeros(4, np.float32)


class Scripted:
    """A scorer with one annotation whose score per sub-env the test sets before each step."""

    vocabulary = ["goal"]

    def __init__(self, n):
        self.p = np.zeros(n, np.float32)

    def __call__(self, views, image_idx, boxes):
        return torch.from_numpy(self.p[: len(views), None].copy())


def single(scorer, steps, **kw):
    env = gym.make("ImageView-v0", max_episode_steps=steps, **SMALL)
    return AnnotationReward(env, scorer, goals="goal", terminate_at=AT, gamma=GAMMA, **kw)


def run(env, scorer, scores, action=STAY):
    out = []
    for p in scores:
        scorer.p[:] = p
        _, reward, term, trunc, _ = env.step(action)
        out.append((reward, term, trunc))
    return out


def test_single_env_success_pays_the_return_of_staying_and_truncation_does_not():
    scorer = Scripted(1)
    env = single(scorer, steps=3)
    env.reset(seed=0)
    # success at step 3 of 3: terminated (and truncated by the time limit), paid 4 p
    assert run(env, scorer, [0.25, 0.5, 0.875]) == [(0.25, False, False), (0.5, False, False),
                                                    (3.5, True, True)]
    env.reset()
    assert run(env, scorer, [0.875]) == [(3.5, True, False)]  # success at once
    env.reset()
    # below the threshold to the time limit: truncated, the last step pays p only
    assert run(env, scorer, [0.5, 0.5, 0.625]) == [(0.5, False, False), (0.5, False, False),
                                                   (0.625, False, True)]


def test_single_env_without_payment_or_threshold_pays_p():
    scorer = Scripted(1)
    env = single(scorer, steps=3, terminal_payment="none")
    env.reset(seed=0)
    assert run(env, scorer, [0.25, 0.875]) == [(0.25, False, False), (0.875, True, False)]
    scorer = Scripted(1)  # the payment belongs to terminate_at: without it nothing terminates
    env = AnnotationReward(gym.make("ImageView-v0", **SMALL), scorer, goals="goal", gamma=GAMMA)
    env.reset(seed=0)
    assert run(env, scorer, [1.0]) == [(1.0, False, False)]


# Two sub-envs, time limit 3. Sub-env 0 succeeds at step 2 (and scores 0.875 again at step 3);
# sub-env 1 stays at 0.5 and is truncated at step 3.
SCORES = [[0.25, 0.25], [0.875, 0.5], [0.875, 0.5]]
STEP_1_2 = [([0.25, 0.25], [False, False], [False, False]),
            ([3.5, 0.5], [True, False], [False, False])]
STEP_3 = {
    # the step after a termination resets sub-env 0: it pays 0 and cannot succeed
    "NextStep": ([0.0, 0.5], [False, False], [False, True]),
    # sub-env 0 was reset in step 2: step 3 is its new episode's first step, a success
    "SameStep": ([3.5, 0.5], [True, False], [False, True]),
    "Disabled": ([3.5, 0.5], [True, False], [False, True]),  # after reset(reset_mask=[T, F])
}


@pytest.mark.parametrize("mode", list(STEP_3))
def test_vector_env_pays_at_success_only_in_every_autoreset_mode(mode):
    scorer = Scripted(2)
    envs = gym.make_vec("ImageView-v0", num_envs=2, max_episode_steps=3, autoreset_mode=mode,
                        **SMALL)
    envs = VectorAnnotationReward(envs, scorer, goals="goal", terminate_at=AT, gamma=GAMMA)
    envs.reset(seed=0)
    got = []
    for t, p in enumerate(SCORES):
        if mode == "Disabled" and t == 2:
            envs.reset(options={"reset_mask": np.array([True, False])})
        scorer.p[:] = p
        _, reward, term, trunc, info = envs.step(np.zeros((2, 4), np.float32))
        assert reward.dtype == np.float64
        got.append((reward.tolist(), term.tolist(), trunc.tolist()))
        if mode == "SameStep" and t == 1:  # the finished episode's last probabilities
            assert info["_final_info"].tolist() == [True, False]
            assert info["final_info"]["annotation_probs"][0].tolist() == [0.875]
    assert got == [*STEP_1_2, STEP_3[mode]]


def test_sb3_adapter_passes_the_payment_and_flags_a_success_as_not_truncated():
    scorer = Scripted(2)
    envs = gym.make_vec("ImageView-v0", num_envs=2, max_episode_steps=2, autoreset_mode="SameStep",
                        **SMALL)
    venv = SB3VecEnv(VectorAnnotationReward(envs, scorer, goals="goal", terminate_at=AT,
                                            gamma=GAMMA))
    venv.reset()
    scorer.p[:] = [0.25, 0.25]
    venv.step(np.zeros((2, 4), np.float32))
    scorer.p[:] = [0.875, 0.5]  # sub-env 0 succeeds at the time limit, sub-env 1 is truncated
    _, reward, done, infos = venv.step(np.zeros((2, 4), np.float32))
    assert reward.tolist() == [3.5, 0.5] and done.tolist() == [True, True]
    assert [i["TimeLimit.truncated"] for i in infos] == [False, True]


@pytest.mark.parametrize("kw, match", [
    ({"gamma": 1.0}, r"gamma \(1.0\) must be a finite number in \[0, 1\)"),
    ({"gamma": -0.1}, r"gamma \(-0.1\)"),
    ({"terminal_payment": "bonus"}, r"terminal_payment 'bonus' is not one of \['stay', 'none'\]"),
])
def test_bad_payment_arguments_are_refused_by_name(kw, match):
    envs = gym.make_vec("ImageView-v0", num_envs=2, **SMALL)
    with pytest.raises(ValueError, match=match):
        VectorCaptionMatchReward(envs, terminate_at=0.8, **kw)
