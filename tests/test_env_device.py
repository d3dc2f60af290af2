"""ImageView-v0 on a device (``device=...``): the torch API, equal to the numpy API.

The CUDA path is the portable torch renderer; on the CPU the tests force it (no numba kernel) and
check the same bytes, so that a machine without a GPU runs the code a GPU runs."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import imgmdp_env  # noqa: F401
import imgmdp_env.views
from imgmdp_env import ImageViewVectorEnv
from imgmdp_env.rewards import VectorCaptionMatchReward, VectorCurationReward
from imgmdp_env.wrappers import VectorDiscreteViewActions

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 32, "size": 64}}
MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]


def make_vec(num_envs=4, **kw):
    return gym.make_vec("ImageView-v0", num_envs=num_envs, **{**SMALL, **kw})


def as_torch(x):
    """The numpy API's value as the tensor the torch API returns (reward: float32)."""
    if isinstance(x, dict):
        return {k: as_torch(v) for k, v in x.items()}
    t = torch.from_numpy(np.asarray(x))
    return t.float() if t.dtype == torch.float64 else t


def assert_same(t, n, what):
    if isinstance(n, dict):
        assert isinstance(t, dict) and set(t) == set(n), what
        for k in n:
            assert_same(t[k], n[k], f"{what}[{k!r}]")
        return
    assert isinstance(t, torch.Tensor), f"{what}: {type(t).__name__}, not a tensor"
    assert torch.equal(t.cpu(), as_torch(n)), what


def run_pair(mode, steps=9, n=4, seed=3, device="cpu", **kw):
    """Step a numpy env and a device env with the same seed and actions; compare every step."""
    np_env = make_vec(n, max_episode_steps=3, autoreset_mode=mode, **kw)
    dev_env = make_vec(n, max_episode_steps=3, autoreset_mode=mode, device=device, **kw)
    o_n, i_n = np_env.reset(seed=seed)
    o_t, i_t = dev_env.reset(seed=seed)
    assert_same(o_t, o_n, "reset obs")
    assert_same(i_t, i_n, "reset info")
    rng = np.random.default_rng(0)
    dims = np_env.single_action_space.shape[0]
    finals = 0
    for t in range(steps):
        a = rng.uniform(-1.3, 1.3, (n, dims)).astype(np.float32)  # some clipped
        out_n = np_env.step(a)
        out_t = dev_env.step(torch.from_numpy(a).to(device) if t % 2 else a)
        for name, x_t, x_n in zip(("obs", "reward", "terminated", "truncated"), out_t[:4],
                                  out_n[:4], strict=True):
            assert_same(x_t, x_n, f"step {t} {name}")
        info_n, info_t = out_n[4], out_t[4]
        for k in ("image_index", "_image_index", "box", "_box"):
            assert_same(info_t[k], info_n[k], f"step {t} info[{k!r}]")
        if "final_obs" in info_n:  # SAME_STEP: the finished rows of a batched tensor
            finals += 1
            done = info_n["_final_obs"]
            assert_same(info_t["_final_obs"], done, "_final_obs")
            assert_same(info_t["_final_info"], info_n["_final_info"], "_final_info")
            for i in np.flatnonzero(done):
                row = ({k: v[i] for k, v in info_t["final_obs"].items()}
                       if isinstance(info_t["final_obs"], dict) else info_t["final_obs"][i])
                assert_same(row, info_n["final_obs"][i], f"final_obs[{i}]")
            assert_same(info_t["final_info"], info_n["final_info"], "final_info")
        if mode == AutoresetMode.DISABLED and out_n[3].any():
            mask = out_n[3]
            o_n, i_n = np_env.reset(options={"reset_mask": mask})
            o_t, i_t = dev_env.reset(options={"reset_mask": torch.from_numpy(mask)})
            assert_same(o_t, o_n, f"step {t} masked reset obs")
            assert_same(i_t, i_n, f"step {t} masked reset info")
    if mode == AutoresetMode.SAME_STEP:
        assert finals >= 2  # the episodes ended (and reset) in the run
    return np_env, dev_env


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_device_cpu_equals_the_numpy_api(mode):
    np_env, dev_env = run_pair(mode)
    core = dev_env.unwrapped
    assert core.device == torch.device("cpu") and np_env.unwrapped.device is None
    assert torch.equal(core.steps, np_env.unwrapped.steps)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP],
                         ids=lambda m: m.value)
def test_device_cpu_equals_the_numpy_api_with_dict_obs_and_augmentation(mode):
    run_pair(mode, obs_mode="dict", augment=True)


def test_portable_torch_render_path_gives_the_same_bytes(monkeypatch):
    # what a CUDA env runs: render_views_unchecked's torch path (forced here: no numba kernel),
    # against the numpy API rendered by the compiled kernel
    np_env = make_vec(4, max_episode_steps=3)
    o_n, _ = np_env.reset(seed=5)
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (7, 4, 4)).astype(np.float32)
    expect = [o_n] + [np_env.step(a)[0] for a in actions]
    monkeypatch.setattr(imgmdp_env.views, "_bilinear_u8", None)
    dev_env = make_vec(4, max_episode_steps=3, device="cpu")
    got = [dev_env.reset(seed=5)[0]] + [dev_env.step(torch.from_numpy(a))[0] for a in actions]
    for t, (g, e) in enumerate(zip(got, expect, strict=True)):
        assert torch.equal(g, torch.from_numpy(e)), f"step {t}"


def test_device_env_takes_torch_or_numpy_actions_and_checks_them():
    envs = make_vec(2, device="cpu")
    envs.reset(seed=0)
    for a in (torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.int64),
              np.zeros((2, 4)), [[0.0] * 4] * 2):
        obs, reward, term, trunc, info = envs.step(a)
        assert obs.dtype == torch.uint8 and obs.shape == (2, 3, 64, 64)
        assert reward.dtype == torch.float32 and term.dtype == trunc.dtype == torch.bool
        assert info["image_index"].dtype == torch.int64 and info["box"].shape == (2, 4)
    bad = torch.zeros(2, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite action .*sub-env\(s\) \[1\]"):
        envs.step(bad)
    with pytest.raises(TypeError, match="numbers"):
        envs.step(torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        envs.step(torch.zeros(2, 3))
    envs.reset(options={"image_index": torch.tensor([1, 2]), "box": torch.tensor([0.5] * 4)})
    assert envs.unwrapped.image_idx.tolist() == [1, 2]
    assert envs.get_attr("image_index")[1] == 2 and isinstance(envs.get_attr("box")[0],
                                                                torch.Tensor)


def test_device_env_renders_frames():
    envs = make_vec(2, device="cpu", render_mode="rgb_array")
    envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and frames[0].dtype == np.uint8 and frames[0].shape[0] == 160


def test_default_is_the_numpy_api():
    envs = make_vec(2)
    assert envs.unwrapped.device is None
    obs, info = envs.reset(seed=0)
    assert isinstance(obs, np.ndarray) and isinstance(info["box"], np.ndarray)
    obs, reward, term, trunc, info = envs.step(np.zeros((2, 4), np.float32))
    assert isinstance(obs, np.ndarray) and reward.dtype == np.float64
    assert isinstance(term, np.ndarray) and isinstance(info["image_index"], np.ndarray)


def test_numpy_wrappers_refuse_a_device_env_by_name():
    envs = make_vec(2, device="cpu")
    with pytest.raises(ValueError, match="VectorCaptionMatchReward does not support device mode"):
        VectorCaptionMatchReward(envs)
    with pytest.raises(ValueError, match="VectorCurationReward does not support device mode"):
        VectorCurationReward(envs, "scenes")
    with pytest.raises(ValueError, match="VectorDiscreteViewActions does not support device"):
        VectorDiscreteViewActions(envs)
    pytest.importorskip("stable_baselines3")
    from imgmdp_env.sb3 import SB3VecEnv

    same = make_vec(2, device="cpu", autoreset_mode="SameStep")
    with pytest.raises(ValueError, match="SB3VecEnv does not support device mode"):
        SB3VecEnv(same)


def test_single_env_and_bad_devices_are_refused():
    with pytest.raises(TypeError, match=r"device .*gym.make_vec"):
        gym.make("ImageView-v0", device="cpu", **SMALL)
    with pytest.raises(ValueError, match="device"):
        ImageViewVectorEnv(device="tpu-of-dreams", **SMALL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_env_matches_the_cpu():
    np_env = make_vec(64, max_episode_steps=3)
    cuda = make_vec(64, max_episode_steps=3, device="cuda")
    o_n, _ = np_env.reset(seed=0)
    o_c, i_c = cuda.reset(seed=0)
    assert o_c.is_cuda and i_c["box"].is_cuda
    assert torch.equal(o_c.cpu(), torch.from_numpy(o_n))  # CPU draws, moved: the same bytes
    rng = np.random.default_rng(0)
    for _ in range(7):
        a = rng.uniform(-1, 1, (64, 4)).astype(np.float32)
        o_n, r_n, _, tr_n, info_n = np_env.step(a)
        o_c, r_c, _, tr_c, info_c = cuda.step(torch.from_numpy(a).cuda())
        assert o_c.is_cuda and r_c.is_cuda and tr_c.is_cuda
        assert torch.equal(tr_c.cpu(), torch.from_numpy(tr_n))
        assert torch.equal(info_c["image_index"].cpu(), torch.from_numpy(info_n["image_index"]))
        # the box arithmetic may differ in the last float bit on the GPU; a view then differs
        # by at most a rounding step at a few pixels
        assert torch.allclose(info_c["box"].cpu(), torch.from_numpy(info_n["box"]), atol=1e-5)
        diff = (o_c.cpu().int() - torch.from_numpy(o_n).int()).abs()
        assert (diff > 0).float().mean() < 0.01 and diff.max() <= 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_cuda_env_runs_every_supported_option(mode):
    envs = make_vec(8, max_episode_steps=2, autoreset_mode=mode, device="cuda", augment=True,
                    obs_mode="dict", render_mode="rgb_array")
    obs, info = envs.reset(seed=0, options={"image_index": torch.arange(8).cuda()})
    assert obs["view"].is_cuda and obs["box"].is_cuda and info["_box"].is_cuda
    for _ in range(5):
        obs, reward, term, trunc, info = envs.step(torch.rand(8, 8, device="cuda") * 2 - 1)
        assert all(t.is_cuda for t in (obs["view"], obs["box"], reward, term, trunc))
        if "final_obs" in info:
            assert info["final_obs"]["view"].is_cuda and info["_final_obs"].is_cuda
        if mode == AutoresetMode.DISABLED and bool(trunc.any()):
            envs.reset(options={"reset_mask": trunc})
    assert len(envs.render()) == 8 and envs.get_attr("box")[0].is_cuda
