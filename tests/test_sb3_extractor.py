"""PretrainedViewExtractor: SB3 learns through it, a frozen encoder never changes, and a wrong
observation space is named."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.evaluation.sb3_extractor import PretrainedViewExtractor
from agents.method.networks import make_encoder

SMALL = dict(widths=(8, 16))  # a tiny CNN: fast enough for a unit test


def image_view_env(**kw) -> gym.Env:
    return gym.make("ImageView-v0", dataset="scenes", dataset_kwargs={"n": 8, "size": 64},
                    view_size=64, max_episode_steps=20, **kw)


def ppo(env: gym.Env, policy: str, **extractor_kwargs) -> PPO:
    return PPO(policy, env, n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu",
               policy_kwargs=dict(features_extractor_class=PretrainedViewExtractor,
                                  features_extractor_kwargs=extractor_kwargs))


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_ppo_learns_with_a_frozen_encoder_that_never_changes():
    torch.manual_seed(0)
    encoder = make_encoder("cnn", view_size=64, **SMALL)
    before = params(encoder)
    model = ppo(image_view_env(), "CnnPolicy", encoder=encoder, features_dim=32)
    extractor = model.policy.features_extractor
    head_before = params(extractor.linear)
    seen = []
    encoder.register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].dtype,
                                                                   float(args[0].max()))))
    model.learn(64)
    assert extractor.features_dim == 32 and extractor.encoder is encoder
    after = params(encoder)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in encoder.parameters())
    # the head did learn, the encoder stayed in eval mode and saw the uint8 views (SB3's
    # floats in [0, 1] turned back into the bytes they were)
    assert any(not torch.equal(head_before[k], v) for k, v in params(extractor.linear).items())
    assert seen and all(not training for training, _, _ in seen)
    assert all(dtype == torch.uint8 for _, dtype, _ in seen)


def test_unfrozen_encoder_is_fine_tuned():
    torch.manual_seed(0)
    encoder = make_encoder("cnn", view_size=64, **SMALL)
    before = params(encoder)
    model = ppo(image_view_env(), "CnnPolicy", encoder=encoder, features_dim=16, freeze=False)
    # SB3's orthogonal init left the encoder alone; then training changed it
    assert all(torch.equal(before[k], v) for k, v in params(encoder).items())
    model.learn(32)
    after = params(encoder)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_dict_observation_concatenates_the_extras():
    env = image_view_env(obs_mode="dict")
    assert set(env.observation_space.spaces) == {"view", "box"}
    model = ppo(env, "MultiInputPolicy", kind="cnn", encoder_kwargs=SMALL, features_dim=24)
    extractor = model.policy.features_extractor
    assert extractor.extra_keys == ["box"]
    assert extractor.linear[0].in_features == extractor.encoder.embed_dim + 4
    model.learn(32)
    obs = {k: torch.as_tensor(np.stack([v] * 3)) for k, v in env.observation_space.sample().items()}
    obs["view"] = obs["view"].float() / 255
    assert extractor(obs).shape == (3, 24)


def test_widths_are_inferred_not_hard_coded():
    space = spaces.Box(0, 255, (3, 48, 48), np.uint8)
    ext = PretrainedViewExtractor(space, features_dim=8, kind="vit",
                                  encoder_kwargs=dict(patch_size=8, width=24, depth=1, heads=2))
    assert ext.linear[0].in_features == 24
    out = ext(torch.rand(2, 3, 48, 48))
    assert out.shape == (2, 8)


@pytest.mark.parametrize("space, match", [
    (spaces.Box(0, 255, (64, 64, 3), np.uint8), "channel-last"),
    (spaces.Box(0, 1, (3, 64, 64), np.float32), "float32"),
    (spaces.Box(-1, 1, (8,), np.float32), r"\(8,\)"),
    (spaces.Dict({"image": spaces.Box(0, 255, (3, 64, 64), np.uint8)}), "no 'view'"),
    (spaces.Discrete(3), "Discrete"),
])
def test_wrong_observation_space_is_named_with_what_is_accepted(space, match):
    with pytest.raises(ValueError, match=match) as err:
        PretrainedViewExtractor(space, features_dim=8, encoder_kwargs=SMALL)
    assert "accepts" in str(err.value)


def test_size_mismatch_and_unnormalised_views_teach_the_fix():
    vit = make_encoder("vit", view_size=32, patch_size=8, width=24, depth=1, heads=2)
    with pytest.raises(ValueError, match="32x32"):
        PretrainedViewExtractor(spaces.Box(0, 255, (3, 64, 64), np.uint8), encoder=vit)
    ext = PretrainedViewExtractor(spaces.Box(0, 255, (3, 64, 64), np.uint8), features_dim=8,
                                  encoder_kwargs=SMALL)
    with pytest.raises(ValueError, match="normalize_images=True"):
        ext(torch.full((1, 3, 64, 64), 200.0))
    with pytest.raises(ValueError, match="either encoder= or checkpoint="):
        PretrainedViewExtractor(spaces.Box(0, 255, (3, 64, 64), np.uint8), encoder=vit,
                                checkpoint="x.pt")


def test_checkpoint_from_train_value_loads_and_survives_sb3_init(tmp_path, make_checkpoint):
    trained = params(make_checkpoint(tmp_path / "checkpoint.pt"))
    model = ppo(image_view_env(), "CnnPolicy", checkpoint=str(tmp_path / "checkpoint.pt"),
                features_dim=16)
    loaded = params(model.policy.features_extractor.encoder)
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)
    obs = torch.as_tensor(model.observation_space.sample())[None].float() / 255
    assert model.policy.features_extractor(obs).shape == (1, 16)
