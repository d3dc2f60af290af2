"""Annotation scorers and reward wrappers: ground truth on hand-placed boxes, goals across
autoresets, composition with Gymnasium's wrappers, and bad input."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import NormalizeReward, RecordEpisodeStatistics

import imgmdp_env  # noqa: F401
from imgmdp_env.datasets import ImageDataset, make_dataset
from imgmdp_env.rewards import (
    AnnotationReward,
    CaptionMatchReward,
    EmbeddingScorer,
    ObjectVisibilityScorer,
    VectorAnnotationReward,
    VectorCaptionMatchReward,
    VectorCurationReward,
)
from imgmdp_env.wrappers import DiscreteViewActions, VectorDiscreteViewActions

SMALL = {"dataset": "scenes", "dataset_kwargs": {"n": 32, "size": 64}, "view_size": 36}
ROOT = Path(__file__).resolve().parents[1]


def make_vec(num_envs=4, **kw):
    return gym.make_vec("ImageView-v0", num_envs=num_envs, **{**SMALL, **kw})


# Two blank images with hand-placed objects: image 0 has two cats and a dog.
CAT, CAT2, DOG = [0.25, 0.25, 0.2, 0.2], [0.7, 0.3, 0.1, 0.1], [0.75, 0.75, 0.4, 0.2]
HAND = ImageDataset(
    images=[np.zeros((64, 64, 3), np.uint8) for _ in range(2)],
    object_boxes=[np.array([CAT, CAT2, DOG], np.float32), np.zeros((0, 4), np.float32)],
    object_labels=[np.array([0, 0, 1]), np.zeros(0, np.int64)],
    class_names=["cat", "dog"], name="hand",
)
# view box -> (p(cat), p(dog)) with alpha = 0.5, worked out by hand
HAND_CASES = [
    ([0.25, 0.25, 0.2, 0.2], (1.0, 0.0)),  # exactly the cat
    ([0.25, 0.25, 0.4, 0.4], (0.5, 0.0)),  # whole cat, fills 1/4 of the view: 0.25 / 0.5
    ([0.35, 0.25, 0.2, 0.2], (0.5, 0.0)),  # half the cat inside, it fills half the view
    ([0.70, 0.30, 0.2, 0.2], (0.5, 0.0)),  # the small cat: whole, fills 1/4 of the view
    ([0.75, 0.75, 0.5, 0.3], (0.0, 1.0)),  # the dog, filling > alpha of the view
    ([0.50, 0.50, 1.5, 1.5], (0.04 / 1.125, 0.08 / 1.125)),  # zoomed out past the image
]


def test_visibility_scorer_on_hand_placed_boxes():
    scorer = ObjectVisibilityScorer(HAND, alpha=0.5)
    boxes = torch.tensor([b for b, _ in HAND_CASES])
    p = scorer(None, torch.zeros(len(boxes), dtype=torch.int64), boxes)
    assert p.numpy() == pytest.approx(np.array([e for _, e in HAND_CASES]), abs=1e-5)
    empty = scorer(None, torch.tensor([1]), boxes[:1])  # an image with no objects
    assert empty.tolist() == [[0.0, 0.0]]


def test_visibility_scorer_matches_a_per_object_reference():
    ds = make_dataset("scenes", n=32, size=64)
    scorer = ObjectVisibilityScorer(ds, alpha=0.3)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(ds), (64,), generator=g)
    boxes = torch.cat([torch.rand(64, 2, generator=g) * 1.2 - 0.1,
                       torch.rand(64, 2, generator=g) * 0.8 + 0.05], 1)
    got = scorer(None, idx, boxes).numpy()
    for row, (i, v) in enumerate(zip(idx.tolist(), boxes.tolist(), strict=True)):
        want = np.zeros(len(ds.class_names))
        for o, lab in zip(ds.object_boxes[i].tolist(), ds.object_labels[i].tolist(),
                          strict=True):
            ix = min(o[0] + o[2] / 2, v[0] + v[2] / 2) - max(o[0] - o[2] / 2, v[0] - v[2] / 2)
            iy = min(o[1] + o[3] / 2, v[1] + v[3] / 2) - max(o[1] - o[3] / 2, v[1] - v[3] / 2)
            inter = max(ix, 0) * max(iy, 0)
            vis = min(1, inter / (o[2] * o[3])) * min(1, inter / (0.3 * v[2] * v[3]))
            want[lab] = max(want[lab], vis)
        assert got[row] == pytest.approx(want, abs=1e-5), row
    assert got.max() > 0.5  # the random boxes do find objects


@pytest.mark.parametrize("discrete", [False, True])
def test_reward_is_the_goal_objects_visibility(discrete):
    envs = gym.make_vec("ImageView-v0", num_envs=2, dataset=HAND, view_size=36, max_zoom=2.0)
    if discrete:
        envs = VectorDiscreteViewActions(envs, pan=0.5, zoom=2.0)
    envs = VectorCaptionMatchReward(envs, goals="cat", goal_text=True)
    start = np.array([[0.25, 0.25, 0.4, 0.4], [0.35, 0.25, 0.2, 0.2]], np.float32)
    obs, info = envs.reset(seed=0, options={"image_index": 0, "box": start})
    assert obs["goal"].tolist() == [0, 0] and list(info["goal_text"]) == ["cat", "cat"]
    assert info["annotation_probs"][:, 0] == pytest.approx([0.5, 0.5], abs=1e-5)
    # env 0 zooms in 2x onto the cat; env 1 pans left by half a view onto it
    act = np.array([5, 1]) if discrete else np.array([[0, 0, -1, -1], [-1, 0, 0, 0]], np.float32)
    _, reward, terminated, _, info = envs.step(act)
    assert np.allclose(info["box"], [CAT, CAT], atol=1e-6)
    assert reward == pytest.approx([1.0, 1.0], abs=1e-5)
    assert not terminated.any()  # no terminate_at
    stay = np.array([0, 6]) if discrete else np.array([[0, 0, 0, 0], [0, 0, 1, 1]], np.float32)
    _, reward, *_ = envs.step(stay)  # env 1 zooms back out 2x: whole cat, a quarter of the view
    assert reward == pytest.approx([1.0, 0.5], abs=1e-5)


def test_single_env_reward_and_terminate_at():
    env = CaptionMatchReward(gym.make("ImageView-v0", dataset=HAND, view_size=36),
                             goals="dog", terminate_at=0.99)
    obs, info = env.reset(seed=0, options={"image_index": 0, "box": [0.75, 0.75, 0.8, 0.4]})
    assert obs["goal"] == 1 and info["annotation_probs"] == pytest.approx([0, 0.5], abs=1e-5)
    _, reward, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
    assert reward == pytest.approx(0.5, abs=1e-5) and not terminated
    _, reward, terminated, truncated, _ = env.step(np.array([0, 0, -1, -1], np.float32))
    # success pays p / (1 - gamma) (terminal_payment="stay", gamma=0.99 by default)
    assert reward == pytest.approx(100.0, abs=1e-3) and terminated and not truncated


def _classes(ds, i):
    return set(np.asarray(ds.object_labels[i]).tolist())


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_goals_come_from_the_image_and_are_redrawn_at_every_autoreset(mode):
    envs = VectorCaptionMatchReward(make_vec(num_envs=8, max_episode_steps=2,
                                             autoreset_mode=mode))
    ds = envs.unwrapped.dataset
    obs, info = envs.reset(seed=1)
    prev_done, resets = np.zeros(8, bool), 0
    for _ in range(12):
        prev = info["goal"].copy()
        obs, reward, term, trunc, info = envs.step(envs.action_space.sample())
        done = term | trunc
        assert np.array_equal(obs["goal"], info["goal"])
        for i in range(8):  # the current episode's goal is one of its image's objects
            assert info["goal"][i] in _classes(ds, info["image_index"][i])
        if mode == "NextStep":  # sub-envs done on the last step reset now and pay 0
            kept = ~prev_done
            assert (reward[prev_done] == 0).all()
            prev_done = done
        else:  # sub-envs done now reset now; their finished episode is in final_*
            kept = ~done
            for i in np.flatnonzero(done):
                g = info["final_info"]["goal"][i]
                assert g == prev[i] and info["final_obs"][i]["goal"] == g
                assert g in _classes(ds, info["final_info"]["image_index"][i])
                assert reward[i] == pytest.approx(info["final_info"]["annotation_probs"][i, g])
                f_idx, f_box = info["final_info"]["image_index"][i], info["final_info"]["box"][i]
                truth = ObjectVisibilityScorer(ds)(None, torch.tensor([f_idx]),
                                                   torch.tensor(f_box[None]))
                assert reward[i] == pytest.approx(float(truth[0, g]), abs=1e-6)
                assert not info["_annotation_probs"][i]  # the reset view is not scored
        assert np.array_equal(info["goal"][kept], prev[kept])  # fixed within an episode
        p = info["annotation_probs"][kept, info["goal"][kept]]
        assert reward[kept] == pytest.approx(p)
        resets += int(done.sum())
    assert resets >= 24


def test_vector_env_matches_single_env_step_for_step():
    single = CaptionMatchReward(gym.make("ImageView-v0", max_episode_steps=3, **SMALL))
    vector = VectorCaptionMatchReward(make_vec(num_envs=1, max_episode_steps=3))
    s_obs, _ = single.reset(seed=5)
    v_obs, _ = vector.reset(seed=5)
    rng, prev_done = np.random.default_rng(0), False
    for t in range(10):
        assert s_obs["goal"] == v_obs["goal"][0] and np.array_equal(s_obs["view"],
                                                                     v_obs["view"][0]), t
        action = rng.uniform(-1, 1, (4,)).astype(np.float32)
        v_obs, v_rew, v_term, v_trunc, _ = vector.step(action[None])
        if prev_done:
            s_obs, _ = single.reset()
        else:
            s_obs, s_rew, _, _, _ = single.step(action)
            assert s_rew == pytest.approx(v_rew[0]), t
        prev_done = bool(v_term[0] or v_trunc[0])


class Brightness:
    """A stand-in scorer that reads pixels: p("bright") = mean pixel value / 255."""

    vocabulary = ["bright", "dark"]

    def __call__(self, views, image_idx, boxes):
        b = views.float().mean((1, 2, 3)) / 255
        return torch.stack([b, 1 - b], 1)


def test_same_step_pays_for_the_view_reached_not_the_reset_view():
    envs = VectorAnnotationReward(make_vec(num_envs=3, max_episode_steps=2,
                                           autoreset_mode="SameStep"), Brightness(),
                                  goals="bright")
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    obs, reward, _, trunc, info = envs.step(envs.action_space.sample())
    assert trunc.all()
    for i in range(3):
        final = info["final_obs"][i]["view"]
        assert reward[i] == pytest.approx(final.mean() / 255, abs=1e-5)
        assert not np.array_equal(final, obs["view"][i])


class Switch:
    """A stand-in scorer: p(annotation 0) = 1 for the rows switched on, 0 elsewhere."""

    vocabulary = ["on", "off"]

    def __init__(self, n):
        self.on = np.zeros(n, bool)

    def __call__(self, views, image_idx, boxes):
        p = torch.zeros(len(views), 2)
        p[:, 0] = torch.from_numpy(self.on[: len(views)].astype(np.float32))
        return p


@pytest.mark.parametrize("mode", ["NextStep", "SameStep", "Disabled"])
def test_terminate_at_ends_episodes_in_every_autoreset_mode(mode):
    scorer = Switch(2)
    inner = make_vec(num_envs=2, autoreset_mode=mode)
    envs = RecordEpisodeStatistics(VectorAnnotationReward(inner, scorer, goals="on",
                                                          terminate_at=0.5,
                                                          terminal_payment="none"))
    envs.reset(seed=0)
    zero = np.zeros((2, 4), np.float32)
    envs.step(zero)
    scorer.on[:] = [True, False]
    box_before = inner.unwrapped.boxes.clone()
    obs, reward, term, trunc, info = envs.step(zero)
    assert term.tolist() == [True, False] and reward.tolist() == [1.0, 0.0]
    assert info["_episode"].tolist() == [True, False] and info["episode"]["l"][0] == 2
    if mode == "SameStep":  # reset in this step; the final view and goal are kept
        assert info["_final_obs"].tolist() == [True, False]
        assert info["final_obs"][0]["goal"] == 0 and info["final_info"]["goal"][0] == 0
        assert np.allclose(info["final_info"]["box"][0], box_before[0].numpy())
        assert inner.unwrapped.steps.tolist() == [0, 2]
    elif mode == "NextStep":  # the next step resets env 0, pays 0, ignores the action
        obs, reward, term, trunc, info = envs.step(zero)
        assert reward.tolist() == [0.0, 0.0] and not term.any()
        assert inner.unwrapped.steps.tolist() == [0, 3]
        assert not np.allclose(info["box"][0], box_before[0].numpy())
        obs, reward, term, trunc, info = envs.step(zero)
        assert term.tolist() == [True, False] and info["episode"]["l"][0] == 1
    else:  # DISABLED: nothing resets until the user asks
        assert inner.unwrapped.steps.tolist() == [2, 2]
        envs.reset(options={"reset_mask": np.array([True, False])})
        assert inner.unwrapped.steps.tolist() == [0, 2]


def test_goal_modes_and_reset_option():
    envs = VectorCaptionMatchReward(make_vec(num_envs=8), goals="vocabulary")
    seen = set()
    for seed in range(4):
        seen |= set(envs.reset(seed=seed)[0]["goal"].tolist())
    assert len(seen) >= 5
    obs, info = envs.reset(seed=0, options={"goal": "star"})
    assert (obs["goal"] == envs.vocabulary.index("star")).all()
    assert (VectorCaptionMatchReward(make_vec(), goals=3).reset(seed=0)[0]["goal"] == 3).all()
    a = VectorCaptionMatchReward(make_vec(), goals="vocabulary").reset(seed=7)[0]["goal"]
    b = VectorCaptionMatchReward(make_vec(), goals="vocabulary").reset(seed=7)[0]["goal"]
    assert np.array_equal(a, b)


def test_goal_obs_off_and_dict_env_observations():
    envs = VectorCaptionMatchReward(make_vec(obs_mode="dict"))
    assert set(envs.single_observation_space.spaces) == {"view", "box", "goal"}
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    plain = VectorCaptionMatchReward(make_vec(), goal_obs=False)
    assert plain.single_observation_space == make_vec().single_observation_space
    obs, _ = plain.reset(seed=0)
    assert obs.shape == (4, 3, 36, 36)


def test_composes_with_gymnasium_statistics_and_normalisation():
    envs = NormalizeReward(RecordEpisodeStatistics(VectorCaptionMatchReward(
        make_vec(num_envs=3, max_episode_steps=4))))
    envs.reset(seed=0)
    returns = np.zeros(3)
    for _ in range(4):
        _, _, _, _, info = envs.step(envs.action_space.sample())
        returns += info["annotation_probs"][np.arange(3), info["goal"]]  # the raw rewards
    assert info["_episode"].all()
    assert info["episode"]["r"] == pytest.approx(returns, abs=1e-5)
    single = gym.wrappers.NormalizeReward(gym.wrappers.RecordEpisodeStatistics(
        CaptionMatchReward(gym.make("ImageView-v0", max_episode_steps=3, **SMALL))))
    single.reset(seed=0)
    raw = 0.0
    for _ in range(3):
        _, _, _, truncated, info = single.step(single.action_space.sample())
        raw += info["annotation_probs"][info["goal"]]
    assert truncated and info["episode"]["r"] == pytest.approx(raw, abs=1e-5)


def test_gym_make_rebuilds_the_wrapped_single_env_from_its_spec():
    env = CaptionMatchReward(DiscreteViewActions(gym.make("ImageView-v0", **SMALL)),
                             goals="star", terminate_at=0.9)
    again = gym.make(env.spec)
    assert isinstance(again, CaptionMatchReward) and isinstance(again.env, DiscreteViewActions)
    assert again.task.fixed == env.task.fixed and again.task.terminate_at == 0.9


def test_embedding_scorer_with_a_stand_in_model_over_captions():
    ds = make_dataset("scenes", n=32, size=64)
    captions = sorted(set(ds.captions))

    def text_encoder(texts):  # bag of letters: a deterministic stand-in for a text model
        out = torch.zeros(len(texts), 26)
        for i, t in enumerate(texts):
            for ch in t:
                if ch.isalpha():
                    out[i, ord(ch) - 97] += 1
        return out

    torch.manual_seed(0)
    image_encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, 4), torch.nn.Flatten(),
                                        torch.nn.LazyLinear(26)).eval()
    image_encoder(torch.zeros(1, 3, 36, 36))
    scorer = EmbeddingScorer(lambda v: image_encoder(v.float() / 255), captions,
                             text_encoder=text_encoder, temperature=0.5)
    envs = VectorAnnotationReward(make_vec(num_envs=4), scorer, goal_text=True)
    obs, info = envs.reset(seed=0)
    for i in range(4):  # goals="image": each sub-env's goal is its image's own caption
        assert info["goal_text"][i] == ds.captions[info["image_index"][i]]
    _, reward, _, _, info = envs.step(envs.action_space.sample())
    p = info["annotation_probs"]
    assert p.shape == (4, len(captions)) and p.sum(1) == pytest.approx(np.ones(4), abs=1e-5)
    assert reward == pytest.approx(p[np.arange(4), info["goal"]])


def test_embedding_scorer_prefers_the_matching_annotation():
    scorer = EmbeddingScorer(lambda v: v.float().mean((2, 3)), ["red", "green", "blue"],
                             text_embeddings=torch.eye(3), temperature=0.1)
    views = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    for c in range(3):
        views[c, c] = 200
    p = scorer(views, torch.zeros(3), torch.zeros(3, 4))
    assert p.argmax(1).tolist() == [0, 1, 2] and (p.diagonal() > 0.9).all()
    with pytest.raises(ValueError, match="EmbeddingScorer.*image_encoder returned shape"):
        EmbeddingScorer(lambda v: torch.zeros(len(v), 5), ["a"], torch.ones(1, 3))(
            views, None, None)


def _square(size, centre, side, value=255):
    img = np.zeros((size, size, 3), np.uint8)
    lo, hi = int((centre - side / 2) * size), int((centre + side / 2) * size)
    img[lo:hi, lo:hi] = value
    return img


def test_curation_reward_pays_for_framing_like_the_curated_items():
    bar = np.zeros((32, 32, 3), np.uint8)
    bar[13:19, 2:30] = 255
    curated = ImageDataset(images=[_square(32, 0.5, 0.5), _square(32, 0.5, 0.5, 200), bar],
                           labels=np.array([0, 0, 1]), class_names=["square", "bar"])
    scene = _square(128, 0.3, 0.2)  # a square at (0.3, 0.3), side 0.2
    scene[92:100, 64:120] = 255  # and a bar at the bottom right
    envs = gym.make_vec("ImageView-v0", num_envs=2, dataset=ImageDataset(images=[scene]),
                        view_size=36)
    envs = VectorCurationReward(envs, curated, goals="square")
    assert envs.vocabulary == ["square", "bar"]
    framed = [[0.3, 0.3, 0.4, 0.4], [0.72, 0.75, 0.5, 0.5]]  # like the curated square / not
    _, info = envs.reset(seed=0, options={"image_index": 0, "box": np.array(framed)})
    p = info["annotation_probs"]
    assert p[0, 0] > 0.9 and p[1, 0] < 0.5 and p[1, 1] > 0.5
    by_image = VectorCurationReward(envs.env, curated, prototypes="images")
    assert by_image.vocabulary == ["dataset[0]", "dataset[1]", "dataset[2]"]


class WrongShape:
    vocabulary = ["a", "b"]

    def __call__(self, views, image_idx, boxes):
        return torch.zeros(len(views), 3)


class HasNaN(WrongShape):
    def __call__(self, views, image_idx, boxes):
        return torch.full((len(views), 2), float("nan"))


class Logits(WrongShape):
    def __call__(self, views, image_idx, boxes):
        return torch.randn(len(views), 2) * 5


@pytest.mark.parametrize("scorer, what", [(WrongShape(), r"shape \(4, 3\); expected \(4, 2\)"),
                                          (HasNaN(), "NaN"), (Logits(), r"\[0, 1\]")])
def test_bad_scorer_outputs_name_the_scorer(scorer, what):
    envs = VectorAnnotationReward(make_vec(), scorer, goals="vocabulary")
    with pytest.raises(ValueError, match=f"{type(scorer).__name__}.*{what}"):
        envs.reset(seed=0)
    single = AnnotationReward(gym.make("ImageView-v0", **SMALL), scorer, goals="a")
    with pytest.raises(ValueError, match=type(scorer).__name__):
        single.reset(seed=0)


def test_bad_goals_and_vocabularies_are_refused():
    with pytest.raises(ValueError, match="unknown goal 'unicorn'.*'circle', 'square'"):
        VectorCaptionMatchReward(make_vec(), goals="unicorn")
    envs = VectorCaptionMatchReward(make_vec())
    with pytest.raises(ValueError, match="unknown goal 'unicorn'.*star"):
        envs.reset(options={"goal": "unicorn"})
    with pytest.raises(ValueError, match="goal 99"):
        VectorCaptionMatchReward(make_vec(), goals=99)

    class Empty(WrongShape):
        vocabulary = []

    with pytest.raises(ValueError, match="Empty: the vocabulary is empty"):
        VectorAnnotationReward(make_vec(), Empty())
    with pytest.raises(ValueError, match="EmbeddingScorer: the vocabulary is empty"):
        EmbeddingScorer(lambda v: v, [], text_embeddings=torch.zeros(0, 3))
    with pytest.raises(ValueError, match="duplicate"):
        EmbeddingScorer(lambda v: v, ["a", "a"], text_embeddings=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no object_boxes"):
        ObjectVisibilityScorer(ImageDataset(images=[np.zeros((8, 8, 3), np.uint8)]))
    with pytest.raises(ValueError, match="goals='image'.*no image"):
        VectorAnnotationReward(make_vec(), WrongShape(), goals="image")
    with pytest.raises(ValueError, match="terminate_at"):
        VectorCaptionMatchReward(make_vec(), terminate_at=1.5)
    with pytest.raises(TypeError, match="VectorCaptionMatchReward"):
        CaptionMatchReward(make_vec())
    with pytest.raises(TypeError, match="not an AnnotationScorer"):
        VectorAnnotationReward(make_vec(), object())


@pytest.mark.parametrize("script", ["caption_match.py", "curation.py"])
def test_example_runs(script, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--steps", "6"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mean reward" in out.stdout
