"""Learned rewards (agents/evaluation/learned_rewards.py): scorers from a checkpoint's base head
p(l | x)
are exactly that head, pass check_scores, and plug into the env's reward wrappers."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.evaluation.learned_rewards import (
    learned_caption_scorer,
    learned_curation_scorer,
    object_crops,
)
from imgmdp_env.datasets import make_dataset
from imgmdp_env.rewards import VectorAnnotationReward, VectorCaptionMatchReward
from imgmdp_env.scorers import AnnotationScorer, check_scores
from tests.helpers import VIEW, tiny_agent


def envs(n=3, view=VIEW, **kw):
    return gym.make_vec("ImageView-v0", num_envs=n, dataset="scenes",
                        dataset_kwargs={"n": 4, "size": 48, "seed": 0}, view_size=view, **kw)


def head(net, views, psi, center=None):
    """The base head p(l | x) as the agent computes it in training."""
    return net.base_logits(net.encoder.pool(net.encoder(views)), psi, center).softmax(-1)


@torch.no_grad()
def test_simclr_curation_scorer_is_the_base_head_and_pays_through_the_wrapper():
    agent, ds = tiny_agent("simclr")
    crops = object_crops(ds, VIEW)
    scorer = learned_curation_scorer(agent, crops, prototypes="images")
    assert isinstance(scorer, AnnotationScorer) and len(scorer.vocabulary) == len(crops)
    env = VectorAnnotationReward(envs(), scorer, goals="vocabulary")
    obs, info = env.reset(seed=0)
    views = torch.from_numpy(obs["view"])
    tgt = agent.target
    whole = torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im in crops.images])
    psi, _ = tgt.annotations(tgt.encoder.pool(tgt.encoder(whole)))
    assert torch.allclose(torch.from_numpy(info["annotation_probs"]), head(tgt, views, psi),
                          atol=1e-5)
    obs, reward, *_, info = env.step(np.zeros((3, 4), np.float32))
    probs = check_scores(scorer(torch.from_numpy(obs["view"]), torch.zeros(3), torch.zeros(3, 4)),
                         scorer, 3, len(crops))
    assert np.allclose(reward, probs.numpy()[np.arange(3), obs["goal"]], atol=1e-6)
    # per class: the image probabilities summed over each class's images
    classes = learned_curation_scorer(agent, crops)
    assert classes.vocabulary == [ds.class_names[c] for c in sorted(set(crops.labels))]
    by_class = classes(views, None, None)
    first = crops.labels == crops.labels.min()
    assert torch.allclose(by_class[:, 0], head(tgt, views, psi)[:, first].sum(-1), atol=1e-5)


@torch.no_grad()
def test_clip_caption_scorer_gives_a_caption_match_reward():
    agent, ds = tiny_agent("clip")
    scorer = learned_caption_scorer(agent, ds.captions, network="online")
    env = VectorCaptionMatchReward(envs(), scorer=scorer, goals="image", goal_text=True)
    obs, info = env.reset(seed=0)
    assert all(t == ds.captions[i] for t, i in zip(info["goal_text"], info["image_index"],
                                                    strict=True))
    net = agent.online
    psi, _ = net.annotations(agent.caption_inputs(ds.captions))
    want = head(net, torch.from_numpy(obs["view"]), psi)
    assert torch.allclose(torch.from_numpy(info["annotation_probs"]), want, atol=1e-5)
    _, reward, *_ = env.step(env.action_space.sample())
    assert reward.shape == (3,) and ((reward >= 0) & (reward <= 1)).all()


def test_checkpoint_files_and_dino_load(tmp_path, make_checkpoint):
    make_checkpoint(tmp_path / "checkpoint.pt")  # a real train_value.py checkpoint (SimCLR, 64)
    curated = object_crops(make_dataset("scenes", n=4, size=64, seed=1, split="val"), 64)
    scorer = learned_curation_scorer(tmp_path / "checkpoint.pt", curated)
    env = VectorAnnotationReward(envs(view=64), scorer)
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert reward.shape == (3,)
    dino, ds = tiny_agent("dino")
    d_scorer = learned_curation_scorer(dino, object_crops(ds, VIEW), network="online")
    assert d_scorer.temperature == pytest.approx(dino.cfg.student_temperature)
    views = torch.from_numpy(envs().reset(seed=0)[0])
    check_scores(d_scorer(views, None, None), d_scorer, 3, len(d_scorer.vocabulary))


def test_wrong_base_and_view_size_are_named():
    simclr, ds = tiny_agent("simclr")
    with pytest.raises(ValueError, match="AB_CLIP.*'simclr'"):
        learned_caption_scorer(simclr, ["a red circle"])
    clip, _ = tiny_agent("clip")
    with pytest.raises(ValueError, match="learned_caption_scorer"):
        learned_curation_scorer(clip, object_crops(ds, VIEW))
    with pytest.raises(ValueError, match="network"):
        learned_curation_scorer(simclr, object_crops(ds, VIEW), network="ema")
    scorer = learned_curation_scorer(simclr, object_crops(ds, VIEW))
    with pytest.raises(ValueError, match="view_size 32"):
        scorer(torch.zeros(1, 3, 48, 48, dtype=torch.uint8), None, None)
    with pytest.raises(TypeError, match="checkpoint path"):
        learned_curation_scorer(3, object_crops(ds, VIEW))


@torch.no_grad()
def test_clip_class_caption_scorer_sums_each_class_captions():
    from agents.evaluation.search import class_captions

    agent, ds = tiny_agent("clip")
    names = ["circle", "square"]
    captions, groups = class_captions(names, "scenes")  # one caption per colour and shape
    assert len(captions) == len(groups) > 2 and captions[0] != captions[1]
    scorer = learned_caption_scorer(agent, captions, names=names, groups=groups)
    assert scorer.vocabulary == names
    views = torch.from_numpy(np.stack([im[:VIEW, :VIEW] for im in ds.images[:3]])
                             ).permute(0, 3, 1, 2).contiguous()
    each = learned_caption_scorer(agent, captions)(views, None, None)  # (3, P) per caption
    want = torch.stack([each[:, groups == k].sum(-1) for k in range(len(names))], -1)
    assert torch.allclose(scorer(views, None, None), want, atol=1e-6)
    with pytest.raises(ValueError, match="names and groups together"):
        learned_caption_scorer(agent, captions, names=names)


def test_random_twin_agent_is_fresh_and_leaves_the_random_state_alone():
    from agents.method.ab import random_twin_agent

    agent, _ = tiny_agent("clip")
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(1.0)  # "trained" weights
    state = torch.random.get_rng_state()
    twin, again = random_twin_agent(agent), random_twin_agent(agent)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not twin.training and twin.tokenizer is agent.tokenizer
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in agent.named_parameters()]
    pairs = list(zip(twin.parameters(), agent.parameters(), again.parameters(), strict=True))
    assert all(torch.equal(t, a2) for t, _, a2 in pairs)  # the same seed, the same weights
    assert not any(torch.equal(t, a) for t, a, _ in pairs)  # none of the trained ones
