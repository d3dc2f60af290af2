"""ImageView-v0 against Gymnasium's own clients and conventions."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import imgmdp_env  # noqa: F401
from imgmdp_env import ImageViewEnv, ImageViewVectorEnv, relative_box
from imgmdp_env.views import render_views

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 32, "size": 64}}


def make_vec(num_envs=4, **kw):
    return gym.make_vec("ImageView-v0", num_envs=num_envs, **{**SMALL, **kw})


@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
@pytest.mark.parametrize("obs_mode", ["view", "dict"])
def test_check_env(render_mode, obs_mode):
    env = gym.make("ImageView-v0", render_mode=render_mode, obs_mode=obs_mode, **SMALL)
    check_env(env.unwrapped, skip_render_check=render_mode is None)
    if render_mode:
        env.reset(seed=0)
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_check_env_with_augmentation():
    check_env(gym.make("ImageView-v0", augment=True, **SMALL).unwrapped)


def test_spaces_defaults():
    env = gym.make("ImageView-v0", **SMALL)
    assert env.observation_space == gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
    assert env.action_space.shape == (4,)
    assert env.spec.max_episode_steps == 50


def test_make_vec_uses_vector_entry_point_and_passes_max_episode_steps():
    envs = make_vec(num_envs=3)
    assert isinstance(envs.unwrapped, ImageViewVectorEnv)
    assert envs.unwrapped.max_episode_steps == 50
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    short = make_vec(num_envs=3, max_episode_steps=7)
    assert short.unwrapped.max_episode_steps == 7


def test_vector_matches_single_env_step_for_step():
    # Gymnasium's CartPole pattern: the vector env at num_envs=1 equals the single env
    single = gym.make("ImageView-v0", max_episode_steps=5, **SMALL)
    vector = make_vec(num_envs=1, max_episode_steps=5)
    s_obs, s_info = single.reset(seed=3)
    v_obs, v_info = vector.reset(seed=3)
    rng = np.random.default_rng(0)
    prev_done = False
    for t in range(23):
        assert np.array_equal(s_obs, v_obs[0]), t
        assert np.allclose(s_info["box"], v_info["box"][0]), t
        action = rng.uniform(-1.5, 1.5, (4,)).astype(np.float32)
        v_obs, v_rew, v_term, v_trunc, v_info = vector.step(action[None])
        if prev_done:  # NEXT_STEP: the vector env resets on the step after done
            s_obs, s_info = single.reset()
            assert not v_trunc[0]
        else:
            s_obs, s_rew, s_term, s_trunc, s_info = single.step(action)
            assert (s_rew, s_term, s_trunc) == (v_rew[0], v_term[0], v_trunc[0]), t
        prev_done = bool(v_term[0] or v_trunc[0])


def test_dynamics_follow_the_relative_box():
    envs = make_vec(num_envs=2, max_pan=0.5, max_zoom=2.0)
    start = np.array([[0.5, 0.5, 0.4, 0.4], [0.3, 0.6, 0.2, 0.3]], np.float32)
    _, info = envs.reset(seed=0, options={"image_index": [0, 1], "box": start})
    action = np.array([[1.0, -0.5, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    obs, _, _, _, info = envs.step(action)
    rel = relative_box(torch.tensor(start), torch.tensor(info["box"]))
    assert rel[0].tolist() == pytest.approx([0.5, -0.25, 2.0, 0.5], abs=1e-5)
    assert rel[1].tolist() == pytest.approx([0, 0, 1, 1], abs=1e-6)
    # the observation is the crop kernel's view of that box
    expect = render_views(envs.unwrapped.bank, torch.tensor([0, 1]), torch.tensor(info["box"]), 64)
    assert np.array_equal(obs, expect.numpy())


def test_actions_are_clipped_and_bad_actions_raise():
    envs = make_vec(num_envs=2)
    envs.reset(seed=0, options={"box": [0.5, 0.5, 0.3, 0.3]})
    _, _, _, _, big = envs.step(np.full((2, 4), 5.0, np.float32))
    envs.reset(seed=0, options={"box": [0.5, 0.5, 0.3, 0.3]})
    _, _, _, _, one = envs.step(np.full((2, 4), 1.0, np.float32))
    assert np.allclose(big["box"], one["box"])
    bad = np.zeros((2, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"sub-env\(s\) \[1\]"):
        envs.step(bad)
    with pytest.raises(ValueError, match=r"expected \(2, 4\)"):
        envs.step(np.zeros((4,), np.float32))


def test_boxes_stay_in_the_allowed_region():
    envs = make_vec(num_envs=16, margin=0.25, min_size=0.05)
    envs.reset(seed=1)
    envs.action_space.seed(1)
    for _ in range(40):
        _, _, _, _, info = envs.step(envs.action_space.sample())
        b = info["box"]
        assert (b[:, 2:] >= 0.05 - 1e-6).all() and (b[:, 2:] <= 1.5 + 1e-6).all()
        assert (b[:, :2] - b[:, 2:] / 2 >= -0.25 - 1e-5).all()
        assert (b[:, :2] + b[:, 2:] / 2 <= 1.25 + 1e-5).all()


def test_seeding_is_reproducible():
    runs = []
    for _ in range(2):
        envs = make_vec(num_envs=3)
        obs, _ = envs.reset(seed=42)
        trace = [obs]
        for _ in range(5):
            trace.append(envs.step(np.full((3, 4), 0.3, np.float32))[0])
        runs.append(np.stack(trace))
    assert np.array_equal(runs[0], runs[1])
    other = make_vec(num_envs=3).reset(seed=43)[0]
    assert not np.array_equal(other, runs[0][0])


def test_next_step_autoreset():
    envs = make_vec(num_envs=2, max_episode_steps=2)
    envs.reset(seed=0)
    zero = np.zeros((2, 4), np.float32)
    *_, trunc, _ = envs.step(zero)
    assert not trunc.any()
    *_, trunc, _ = envs.step(zero)
    assert trunc.all()
    obs, rew, term, trunc, info = envs.step(zero)  # this step resets, ignoring the action
    assert not trunc.any() and not term.any() and (rew == 0).all()
    assert (envs.unwrapped.steps == 0).all()


def test_same_step_autoreset_reports_final_obs():
    envs = make_vec(num_envs=2, max_episode_steps=2, autoreset_mode="SameStep")
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    envs.reset(seed=0)
    act = np.array([[0.5, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    envs.step(act)
    before = envs.unwrapped.boxes.clone()
    obs, _, _, trunc, info = envs.step(act)
    assert trunc.all() and info["_final_obs"].all() and info["_final_info"].all()
    final_box = info["final_info"]["box"]
    assert final_box.shape == (2, 4)
    assert not np.allclose(final_box[0], before[0].numpy())  # moved by the action, then reset
    expect = render_views(envs.unwrapped.bank, torch.from_numpy(info["final_info"]["image_index"]),
                          torch.from_numpy(final_box), 64).numpy()
    assert np.array_equal(info["final_obs"][0], expect[0])
    assert np.array_equal(obs[0], envs.unwrapped.views[0].numpy())  # obs is the reset view
    assert (envs.unwrapped.steps == 0).all()


def test_disabled_autoreset_with_reset_mask():
    envs = make_vec(num_envs=3, max_episode_steps=1, autoreset_mode=AutoresetMode.DISABLED)
    obs, info = envs.reset(seed=0)
    obs2, _, _, trunc, info2 = envs.step(np.zeros((3, 4), np.float32))
    assert trunc.all()
    mask = np.array([True, False, True])
    obs3, info3 = envs.reset(options={"reset_mask": mask})
    assert np.array_equal(obs3[1], obs2[1]) and np.allclose(info3["box"][1], info2["box"][1])
    assert (envs.unwrapped.steps.numpy() == [0, 1, 0]).all()
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.ones(2, bool)})


def test_reset_options_fix_start_and_validate():
    envs = make_vec(num_envs=2)
    _, info = envs.reset(seed=0, options={"image_index": 5, "box": [0.5, 0.5, 1.0, 1.0]})
    assert (info["image_index"] == 5).all() and np.allclose(info["box"], [0.5, 0.5, 1, 1])
    with pytest.raises(ValueError, match="image_index"):
        envs.reset(options={"image_index": 10_000})
    with pytest.raises(ValueError, match="box"):
        envs.reset(options={"box": [0.5, 0.5]})


def test_dict_observation_carries_the_box():
    envs = make_vec(num_envs=2, obs_mode="dict")
    obs, info = envs.reset(seed=0)
    assert set(obs) == {"view", "box"} and np.allclose(obs["box"], info["box"])
    assert envs.observation_space.contains(obs)


def test_augmentation_actions():
    envs = make_vec(num_envs=4, augment=True)
    start = {"image_index": 0, "box": [0.5, 0.5, 0.5, 0.5]}
    envs.reset(seed=0, options=start)
    plain = envs.step(np.zeros((4, 8), np.float32))[0]
    a = np.zeros((4, 8), np.float32)
    a[0, 4] = 1  # flip
    a[1, 5] = 0.5  # rotate 90
    a[2, 7] = -1  # grayscale
    envs.reset(seed=0, options=start)
    out = envs.step(a)[0]
    assert np.array_equal(out[0], plain[0][:, :, ::-1])
    assert np.array_equal(out[1], np.rot90(plain[1], 1, axes=(1, 2)))
    assert np.abs(out[2].astype(int) - out[2][[1]]).max() <= 1  # channels equal
    assert np.array_equal(out[3], plain[3])


def test_env_errors_name_bad_values():
    with pytest.raises(ValueError, match="obs_mode"):
        ImageViewVectorEnv(obs_mode="pixels", **SMALL)
    with pytest.raises(ValueError, match="num_envs"):
        ImageViewVectorEnv(num_envs=0, **SMALL)
    with pytest.raises(RuntimeError, match="reset"):
        ImageViewVectorEnv(**SMALL).step(np.zeros((1, 4)))


def test_async_vector_env_over_gym_make():
    envs = gym.make_vec("ImageView-v0", num_envs=2, vectorization_mode="async", **SMALL)
    try:
        obs, _ = envs.reset(seed=0)
        obs, *_ = envs.step(envs.action_space.sample())
        assert obs.shape == (2, 3, 64, 64)
    finally:
        envs.close()


def test_single_env_pickles():
    import pickle

    env = ImageViewEnv(**SMALL)
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    a = np.full(4, 0.2, np.float32)
    assert np.array_equal(env.step(a)[0], clone.step(a)[0])


def test_in_memory_arrays_as_dataset(rng):
    arr = rng.integers(0, 256, (5, 3, 40, 50), dtype=np.uint8)
    env = gym.make("ImageView-v0", dataset=arr, view_size=(32, 48))
    obs, info = env.reset(seed=0, options={"image_index": 2, "box": [0.5, 0.5, 1, 1]})
    assert obs.shape == (3, 32, 48)
    full = render_views(torch.from_numpy(arr), torch.tensor([2]), torch.tensor([[0.5, 0.5, 1, 1]]),
                        (32, 48))
    assert np.array_equal(obs, full[0].numpy())


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_observations_handed_out_are_never_overwritten(mode):
    # the env returns its view arrays without a copy: it must never write into them again
    envs = ImageViewVectorEnv(3, max_episode_steps=2, autoreset_mode=mode, **SMALL)
    obs, _ = envs.reset(seed=0)
    kept = [(obs, obs.copy())]
    envs.action_space.seed(0)
    for _ in range(6):
        obs, *_, info = envs.step(envs.action_space.sample())
        kept.append((obs, obs.copy()))
        kept += [(o, o.copy()) for o in info.get("final_obs", []) if o is not None]
    envs.reset(options={"reset_mask": np.array([True, False, True])})
    assert all(np.array_equal(a, b) for a, b in kept)


# ---------------------------------------------------------------------------------------------
# Issue 23: bad inputs are refused with a message naming them, never silently used
# ---------------------------------------------------------------------------------------------
BANK = make_vec(num_envs=1).unwrapped.bank  # 32 images
ONE_BOX = torch.tensor([[0.5, 0.5, 1.0, 1.0]])


@pytest.mark.parametrize("idx, error, shown", [
    (torch.tensor([0.7]), TypeError, "0.7"),  # was truncated: rendered image 0
    (torch.tensor([1.0]), TypeError, "1."),  # integral floats too, as numpy indexing
    (np.array([0.0]), TypeError, "0."),
    (torch.tensor([True]), TypeError, "True"),
    (torch.tensor([-1]), ValueError, "-1"),  # was counted from the end: the last image
    (torch.tensor([32]), ValueError, "32"),
    (np.array([2**40]), ValueError, str(2**40)),
    (torch.tensor([[0]]), ValueError, "shape"),
    (torch.tensor([0, 1]), ValueError, "shape"),
])
def test_render_views_refuses_bad_image_indices(idx, error, shown):
    with pytest.raises(error, match="image_idx") as e:
        render_views(BANK, idx, ONE_BOX, 8)
    assert shown in str(e.value) and "[0, 32)" in str(e.value) or "shape" in str(e.value)


@pytest.mark.parametrize("boxes, error, shown", [
    (torch.tensor([[float("nan"), 0.5, 1.0, 1.0]]), ValueError, "nan"),  # was: the fill colour
    (torch.tensor([[0.5, 0.5, float("inf"), 1.0]]), ValueError, "inf"),
    (torch.tensor([[0.5, 0.5, 0.0, 1.0]]), ValueError, "0.0"),
    (torch.tensor([[0.5, 0.5, -1.0, 1.0]]), ValueError, "-1.0"),
    (torch.tensor([[True, True, True, True]]), TypeError, "bool"),
    (torch.zeros(1, 3), ValueError, "(1, 3)"),
    (torch.zeros(4), ValueError, "(B, 4)"),
])
def test_render_views_refuses_bad_boxes(boxes, error, shown):
    with pytest.raises(error, match="boxes") as e:
        render_views(BANK, torch.tensor([0]), boxes, 8)
    assert shown in str(e.value)


def test_render_views_takes_numpy_and_integer_inputs_as_the_tensors_they_equal():
    want = render_views(BANK, torch.tensor([3]), ONE_BOX, 8)
    for idx, boxes in [(np.array([3]), ONE_BOX.numpy()), ([3], [[0.5, 0.5, 1, 1]]),
                       (torch.tensor([3], dtype=torch.int32), ONE_BOX.double())]:
        assert torch.equal(render_views(BANK, idx, boxes, 8), want)
    assert render_views(BANK, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), 8).shape == (
        0, 3, 8, 8)
    with pytest.raises(ValueError, match=r"index \(-1\) must be an integer in \[0, 31\]"):
        BANK.image(-1)


def test_step_refuses_non_numeric_actions():
    envs = make_vec(num_envs=2)
    envs.reset(seed=0)
    with pytest.raises(TypeError, match="actions .* not bool values"):
        envs.step(np.ones((2, 4), bool))  # was: read as 1.0
    with pytest.raises(TypeError, match="not <U1 values"):
        envs.step(np.full((2, 4), "a"))
    with pytest.raises(ValueError, match=r"NaN or inf.*\[1\]"):
        envs.step(np.array([[0.0] * 4, [0.0, np.inf, 0.0, 0.0]]))


ASYNC_AFTER_NATIVE = """
import gymnasium as gym, numpy as np, torch, imgmdp_env
torch.set_num_threads(2)  # an OpenMP thread pool in the parent (OMP_NUM_THREADS=1 hid it)
small = dict(dataset="scenes", dataset_kwargs={"n": 8, "size": 64})
native = gym.make_vec("ImageView-v0", num_envs=16, **small)  # its view buffer: 2e5 bytes
native.reset(seed=0)
native.step(native.action_space.sample())
envs = gym.make_vec("ImageView-v0", num_envs=2, vectorization_mode="async", **small)
obs, _ = envs.reset(seed=0)
obs, *_ = envs.step(envs.action_space.sample())
envs.close()
assert torch.get_num_threads() == 2  # the caller's own threads are left alone
print("ok", obs.shape)
"""


def test_async_vector_env_after_a_native_env_does_not_hang():
    """Issue 23: the async workers are forked from a process whose OpenMP pool is live; their
    first multi-threaded torch op hung forever. In a subprocess, with a timeout."""
    import os
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.Popen([sys.executable, "-c", ASYNC_AFTER_NATIVE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own group: hung workers die with it
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("gym.make_vec(..., vectorization_mode='async') hung after a native env ran "
                    "a multi-threaded torch op in the same process")
    assert proc.returncode == 0 and "ok (2, 3, 64, 64)" in out, err[-2000:]


def test_render_views_refuses_a_truthy_antialias():
    with pytest.raises(TypeError, match=r"antialias \('no'\) must be True or False"):
        render_views(BANK, torch.tensor([0]), ONE_BOX, 8, antialias="no")
