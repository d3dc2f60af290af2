"""Value-guided search (agents/evaluation/search.py): the best-valued move is taken, actions are
valid in
both action spaces and reach the intended relative box, batched equals per-env, and the
values are the agent's Q_AB."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.evaluation.learned_rewards import object_crops
from agents.evaluation.search import (
    GoalValue,
    ValueSearch,
    caption_goals,
    curated_goals,
    prototype_goals,
)
from imgmdp_env.actions import action_to_relative, relative_to_action
from imgmdp_env.views import apply_relative, clamp_boxes
from imgmdp_env.wrappers import VIEW_ACTIONS, VectorDiscreteViewActions
from tests.helpers import VIEW, tiny_agent


def envs(n=3, **kw):
    return gym.make_vec("ImageView-v0", num_envs=n, dataset="scenes",
                        dataset_kwargs={"n": 8, "size": 48}, view_size=VIEW, **kw)


def right_and_down(views, rel, goal):
    """A stub value with a known argmax: the further right (then down) the better."""
    return rel[..., 0] + 0.1 * rel[..., 1]


def unique_best(views, rel, goal):
    """A probability-like stub with one best grid move: right, down, then zoomed out."""
    return torch.sigmoid(rel[..., 0] + 0.1 * rel[..., 1] + 0.01 * rel[..., 2])


def test_relative_to_action_inverts_the_env_mapping_and_clips():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(64, 4, generator=g) * 2 - 1
    for pan, zoom in [(0.5, 2.0), (0.3, 1.7)]:
        rel = action_to_relative(a, pan, zoom)
        assert torch.allclose(relative_to_action(rel, pan, zoom), a, atol=1e-5)
    far = torch.tensor([[1.5, -2.0, 8.0, 0.1]])  # beyond the per-step bounds: the largest move
    assert relative_to_action(far, 0.5, 2.0).tolist() == [[1.0, -1.0, 1.0, -1.0]]
    assert relative_to_action(torch.tensor([[0.1, 0, 3.0, 1]]), 0.5, 1.0)[0, 2:].tolist() == [0, 0]
    with pytest.raises(ValueError, match="positive size"):
        relative_to_action(torch.tensor([[0, 0, 0.0, 1]]), 0.5, 2.0)


def test_greedy_takes_the_best_valued_move_and_reaches_its_box():
    env = envs()
    obs, info = env.reset(seed=0)
    goal = np.zeros(3, np.int64)
    discrete = ValueSearch(right_and_down, env, candidates="discrete")
    act = discrete.act(obs, goal)
    assert act.shape == (3, 4) and env.action_space.contains(act)
    assert np.array_equal(act, np.repeat(discrete.fixed[VIEW_ACTIONS.index("right")][None]
                                         .numpy(), 3, 0))
    grid = ValueSearch(right_and_down, env, candidates="grid", grid=(5, 3))
    act = grid.act(obs, goal)
    assert len(grid.fixed) == 75 and np.allclose(act[:, :2], [1.0, 1.0])
    # the action reaches the relative box that was scored best, through the env's own mapping
    rel = action_to_relative(torch.from_numpy(act), env.unwrapped.max_pan, env.unwrapped.max_zoom)
    values, cands = grid.scores(obs, goal)
    best = action_to_relative(cands[0, values[0].argmax()], 0.5, 2.0)
    assert torch.allclose(rel[0], best)
    _, _, _, _, info2 = env.step(act)
    want = clamp_boxes(apply_relative(torch.from_numpy(info["box"]), rel), 0.05, 0.25)
    assert np.allclose(info2["box"], want.numpy(), atol=1e-6)


def test_discrete_action_space_gets_move_ids():
    env = VectorDiscreteViewActions(envs(), pan=0.2, zoom=1.25)
    obs, _ = env.reset(seed=0)
    zoom_in = ValueSearch(lambda v, rel, g: -rel[..., 2], env)  # smaller is better
    act = zoom_in.act(obs, np.zeros(3, np.int64))
    assert act.dtype == np.int64 and env.action_space.contains(act)
    assert act.tolist() == [VIEW_ACTIONS.index("zoom_in")] * 3
    assert np.array_equal(zoom_in.fixed.numpy(), env.table)  # the wrapper's own moves
    env.step(act)
    with pytest.raises(ValueError, match="candidates='discrete'"):
        ValueSearch(right_and_down, env, candidates="grid")


def test_boxes_score_the_box_the_env_reaches():
    env = envs(n=1)
    obs, _ = env.reset(seed=0, options={"box": [1.25 - 0.3, 0.5, 0.6, 0.6]})  # right edge
    search = ValueSearch(right_and_down, env, candidates="discrete")
    free, _ = search.scores(obs, [0])
    edge, _ = search.scores(obs, [0], boxes=[[0.95, 0.5, 0.6, 0.6]])
    right = VIEW_ACTIONS.index("right")
    assert free[0, right] == pytest.approx(0.25) and edge[0, right] == pytest.approx(0.0)
    assert search.act(obs, [0], boxes=[[0.95, 0.5, 0.6, 0.6]]).tolist() == [
        search.fixed[VIEW_ACTIONS.index("down")].tolist()]


def test_random_candidates_and_softmax_are_valid_actions():
    env = envs(augment=True)
    obs, _ = env.reset(seed=0)
    search = ValueSearch(right_and_down, env, candidates="random", n_random=16, seed=1,
                         policy="softmax", temperature=0.5)
    act = search.act(obs, np.zeros(3, np.int64))
    assert act.shape == (3, 8) and env.action_space.contains(act)
    assert np.all(act[:, 4:] == 0)  # no augmentation
    cold = ValueSearch(unique_best, env, candidates="grid", policy="softmax",
                       temperature=1e-4)
    greedy = ValueSearch(unique_best, env, candidates="grid")
    assert np.array_equal(cold.act(obs, [0, 0, 0]), greedy.act(obs, [0, 0, 0]))
    assert np.allclose(greedy.act(obs, [0, 0, 0])[:, :4], [1, 1, 1, 1])


def test_goal_value_is_the_agents_q_ab_and_batched_equals_per_env():
    agent, ds = tiny_agent("simclr")
    crops = object_crops(ds, VIEW)
    images = curated_goals(agent, crops, prototypes="images")
    value = GoalValue(agent, images)
    env = envs(n=4)
    obs, info = env.reset(seed=0)
    search = ValueSearch(value, env, candidates="grid")
    goal = np.array([0, 1, 2, 3])
    values, cands = search.scores(obs, goal)
    rel = action_to_relative(cands, 0.5, 2.0)
    q = agent.value(torch.from_numpy(obs), rel, images.images)  # (N, K, L)
    assert torch.allclose(values, q[torch.arange(4), :, goal], atol=1e-6)
    batched = search.act(obs, goal, boxes=info["box"])
    single = np.stack([search.act(obs[i], goal[i], boxes=info["box"][i]) for i in range(4)])
    assert np.allclose(batched, single, atol=1e-6)
    # per class: Q summed over the class's images
    classes = curated_goals(agent, crops)
    assert classes.vocabulary == [ds.class_names[c] for c in sorted(set(crops.labels))]
    per_class = GoalValue(agent, classes)(torch.from_numpy(obs), rel,
                                          torch.zeros(4, dtype=torch.long))
    first = [i for i, c in enumerate(crops.labels) if c == crops.labels.min()]
    assert torch.allclose(per_class, q[..., first].sum(-1), atol=1e-5)


def test_clip_and_dino_goals():
    clip, ds = tiny_agent("clip")
    goals = caption_goals(clip, ds.captions)
    env = envs(n=2)
    obs, _ = env.reset(seed=0)
    act = ValueSearch(GoalValue(clip, goals), env, candidates="grid").act(obs, [0, 1])
    assert env.action_space.contains(act)
    dino, _ = tiny_agent("dino")
    goals = prototype_goals(dino)
    assert len(goals.vocabulary) == 16
    value = GoalValue(dino, goals, network="target")
    v, _ = ValueSearch(value, env).scores(obs, [3, 5])
    assert v.shape == (2, 7) and bool(((v >= 0) & (v <= 1)).all())
    with pytest.raises(ValueError, match="base is 'dino'"):
        caption_goals(dino, ["a red circle"])
    with pytest.raises(ValueError, match="built for a 'clip'"):
        GoalValue(dino, caption_goals(clip, ["a red circle"]))


def test_a_clip_search_names_each_class_in_captions():
    """find_object's goals of a CLIP run: captions naming each object class as the dataset's
    captions do (scenes: one per colour, "a red circle", summed per class), grouped by class
    so that the env's goal ids map onto them."""
    from argparse import Namespace

    from agents.evaluation.search import env_goal_ids
    from imgmdp_env.rewards import VectorCaptionMatchReward
    from studies.find_object import search_goals

    clip, _ = tiny_agent("clip")
    env = VectorCaptionMatchReward(envs(n=2), goals="image")
    names = list(env.vocabulary)
    goals, pick = search_goals(Namespace(dataset="scenes", goals="class"), clip, env)
    assert goals.vocabulary == names and names[:2] == ["circle", "square"]
    assert goals.groups.tolist() == [g for g in range(len(names)) for _ in range(8)]
    first = ["a red circle", "an orange circle", "a yellow circle"]
    assert torch.equal(goals.source[:3], clip.caption_inputs(first))
    assert env_goal_ids(goals, env).tolist() == list(range(len(names)))
    obs, _ = env.reset(seed=0)
    assert np.array_equal(pick(obs, {}), obs["goal"])  # the env's names are the goals' own
    other, _ = search_goals(Namespace(dataset="my-folder", goals="class"), clip,
                            env)  # "a circle", "an arrow"
    plain = [("an " if n[0] in "aeiou" else "a ") + n for n in names]
    assert torch.equal(other.source, clip.caption_inputs(plain))


def test_bad_arguments_are_named():
    env = envs()
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match="candidates"):
        ValueSearch(right_and_down, env, candidates="beam")
    with pytest.raises(ValueError, match="temperature"):
        ValueSearch(right_and_down, env, policy="softmax", temperature=0)
    with pytest.raises(TypeError, match="value_fn"):
        ValueSearch(None, env)
    search = ValueSearch(right_and_down, env)
    with pytest.raises(ValueError, match="one id per view"):
        search.act(obs, [0, 1])
    with pytest.raises(ValueError, match="needs the goal"):
        search.act(obs)
    bad = ValueSearch(lambda v, r, g: torch.zeros(3, 2), env)
    with pytest.raises(ValueError, match=r"expected \(3, 7\)"):
        bad.act(obs, [0, 0, 0])


# ---------------------------------------------------------------------------------------------
# Issue 23: bad goals, boxes and values are refused, never silently used
# ---------------------------------------------------------------------------------------------
class Vocab:
    """A stub value with a vocabulary of 3 goals (as GoalValue has)."""

    vocabulary = ["circle", "square", "star"]

    def __call__(self, views, rel, goal):
        return right_and_down(views, rel, goal)


@pytest.mark.parametrize("goal, error, shown", [
    ([1.7, 0.2, 0.0], TypeError, "1.7"),  # was truncated to goals 1 and 0
    (np.array([1.0, 0.0, 2.0]), TypeError, "float64"),  # integral floats too
    (torch.tensor([1.0, 0.0, 2.0]), TypeError, "float32"),
    ([True, False, True], TypeError, "bool"),
    ([0, -1, 2], ValueError, "-1"),  # env_goal_ids' "missing" id
    ([0, 3, 2], ValueError, "[0, 3)"),  # past the vocabulary
])
def test_act_refuses_non_integer_and_out_of_range_goals(goal, error, shown):
    env = envs()
    obs, _ = env.reset(seed=0)
    with pytest.raises(error, match="goal") as e:
        ValueSearch(Vocab(), env).act(obs, goal)
    assert shown in str(e.value)
    with pytest.raises(ValueError, match=r"integers >= 0.*-1"):  # no vocabulary: >= 0
        ValueSearch(right_and_down, env).act(obs, [0, -1, 2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("policy", ["greedy", "softmax"])
def test_non_finite_values_are_refused_naming_the_views(bad, policy):
    def broken(views, rel, goal):  # view 1: NaN (inf) in 2 of its 7 candidates
        v = unique_best(views, rel, goal).clone()
        v[1, 3:5] = bad
        return v

    env = envs()
    obs, _ = env.reset(seed=0)
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\) \((NaN|inf)\) of 21: "
                                         r"view\(s\) \[1\] have \[2\] non-finite of their 7"):
        ValueSearch(broken, env, policy=policy).act(obs, [0, 0, 0])


@pytest.mark.parametrize("boxes, shown", [
    ([[float("nan"), 0.5, 0.5, 0.5]] * 3, "nan"),  # was an IndexError inside torch
    ([[0.5, 0.5, float("inf"), 0.5]] * 3, "inf"),
    ([[0.5, 0.5, 0.0, 0.5]] * 3, "0.0"),
    ([[3.0, 0.5, 0.5, 0.5]] * 3, "3.0"),  # far outside the image's margin
    ([[0.5, 0.5, 0.5, 0.5]] * 2, "one cxcywh box per view"),
])
def test_act_refuses_bad_boxes_up_front(boxes, shown):
    agent, _ = tiny_agent("dino")
    env = envs()
    obs, _ = env.reset(seed=0)
    search = ValueSearch(GoalValue(agent, prototype_goals(agent)), env, candidates="grid")
    with pytest.raises(ValueError, match="boxes") as e:
        search.act(obs, [0, 0, 0], boxes=boxes)
    assert shown in str(e.value)
    with pytest.raises(TypeError, match="bool"):
        search.act(obs, [0, 0, 0], boxes=np.ones((3, 4), bool))


def test_goal_value_refuses_bad_goals_and_non_finite_boxes():
    agent, _ = tiny_agent("dino")
    value = GoalValue(agent, prototype_goals(agent))  # 16 goals
    views = torch.zeros(2, 3, VIEW, VIEW, dtype=torch.uint8)
    rel = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]).expand(2, 3, 4).clone()
    assert value(views, rel, torch.tensor([0, 15])).shape == (2, 3)
    with pytest.raises(TypeError, match=r"goal \(tensor\(\[1\.7000, 0\.2000\]\)\)"):
        value(views, rel, torch.tensor([1.7, 0.2]))  # was truncated by .long()
    with pytest.raises(ValueError, match=r"goal .* must be integers in \[0, 16\): \[16\]"):
        value(views, rel, torch.tensor([0, 16]))
    rel[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rel holds NaN or inf for view\(s\) \[1\]"):
        value(views, rel, torch.tensor([0, 1]))


def test_inside_moves_every_candidate_box_into_the_image():
    env = envs(n=2)
    start = [[0.3, 0.5, 0.6, 0.6], [0.5, 0.5, 0.9, 0.9]]  # 0.0-0.6 wide; nearly whole
    obs, info = env.reset(seed=0, options={"box": np.array(start, np.float32)})
    core = env.unwrapped
    asked = ValueSearch(right_and_down, env, candidates="grid")
    inside = ValueSearch(right_and_down, env, candidates="grid", inside=True)
    b = torch.from_numpy(info["box"])[:, None]

    def reached(acts):
        rel = action_to_relative(acts, core.max_pan, core.max_zoom)
        return clamp_boxes(apply_relative(b, rel), core.min_size, core.margin)

    _, acts = asked.scores(obs, [0, 0], boxes=info["box"])
    lo, hi = reached(acts)[..., :2] - reached(acts)[..., 2:] / 2, \
        reached(acts)[..., :2] + reached(acts)[..., 2:] / 2
    assert ((lo < -1e-6) | (hi > 1 + 1e-6)).any()  # the asked grid leaves the image
    values, acts = inside.scores(obs, [0, 0], boxes=info["box"])
    box = reached(acts)
    lo, hi = box[..., :2] - box[..., 2:] / 2, box[..., :2] + box[..., 2:] / 2
    assert (lo >= -1e-5).all() and (hi <= 1 + 1e-5).all()
    assert env.action_space.contains(inside.act(obs, [0, 0], boxes=info["box"]))
    # the value is that of the box reached: the right-most reachable inside the image
    assert torch.allclose(values, (box[..., 0] - b[..., 0]) / b[..., 2]
                          + 0.1 * (box[..., 1] - b[..., 1]) / b[..., 3], atol=1e-5)
    act = inside.act(obs, [0, 0], boxes=info["box"])
    _, _, _, _, info2 = env.step(act)
    edges = np.concatenate([info2["box"][:, :2] - info2["box"][:, 2:] / 2,
                            info2["box"][:, :2] + info2["box"][:, 2:] / 2], 1)
    assert (edges >= -1e-5).all() and (edges <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="current boxes"):
        inside.scores(obs, [0, 0])
    with pytest.raises(ValueError, match="continuous"):
        ValueSearch(right_and_down, VectorDiscreteViewActions(envs()), inside=True)


def test_view_prob_is_the_base_heads_goal_probability_and_qs_copy_expert():
    agent, ds = tiny_agent("simclr")
    goals = curated_goals(agent, object_crops(ds, VIEW))
    value = GoalValue(agent, goals)
    env = envs(n=4)
    obs, _ = env.reset(seed=0)
    goal = torch.tensor([0, 1, 0, 1])
    p = value.view_prob(torch.from_numpy(obs), goal)
    assert p.shape == (4,) and ((p > 0) & (p < 1)).all()
    with torch.no_grad():
        net = value.net
        logits = net.base_logits(net.encoder.pool(value.token_net.encoder(torch.from_numpy(obs))),
                                 value.psi, value.center).softmax(-1)
    want = torch.stack([logits[i, goals.groups == g].sum() for i, g in enumerate(goal.tolist())])
    assert torch.allclose(p, want, atol=1e-6)
    every = value.view_probs(torch.from_numpy(obs), batch_size=3)  # in two chunks
    assert every.shape == (4, len(goals.vocabulary))
    assert torch.allclose(every.sum(1), torch.ones(4), atol=1e-5)
    assert torch.allclose(every[torch.arange(4), goal], p, atol=1e-6)


def test_object_goals_name_each_episode_object_by_its_caption_phrase():
    """--goals object: the vocabulary is the caption phrases of the images' objects; each
    episode's goal is the phrase of the first object of its goal class in its own image, and
    captions that do not name each object in order are refused."""
    import re
    from argparse import Namespace

    from agents.evaluation.search import object_captions
    from imgmdp_env.datasets import ImageDataset
    from imgmdp_env.rewards import VectorCaptionMatchReward
    from studies.find_object import search_goals

    clip, _ = tiny_agent("clip")
    env = VectorCaptionMatchReward(envs(n=3), goals="image")
    ds = env.unwrapped.dataset
    goals, pick = search_goals(Namespace(dataset="scenes", goals="object"), clip, env)
    vocab, ids = object_captions(ds)
    assert goals.vocabulary == vocab and goals.groups is None
    assert torch.equal(goals.source, clip.caption_inputs(vocab))
    obs, info = env.reset(seed=3)
    got = pick(obs, info)
    for n, (i, g) in enumerate(zip(info["image_index"], obs["goal"], strict=True)):
        cls = ds.class_names.index(env.vocabulary[g])
        k = int(np.flatnonzero(ds.object_labels[i] == cls)[0])
        phrase = re.split(r", | and ", ds.captions[i])[k]  # the k-th object's phrase
        assert vocab[got[n]] == phrase and phrase.endswith(ds.class_names[cls])
    bad = ImageDataset(images=ds.images[:2], captions=["a red circle", "two blobs"],
                       object_boxes=ds.object_boxes[:2], object_labels=ds.object_labels[:2],
                       class_names=ds.class_names)
    with pytest.raises(ValueError, match="image [01]'s caption .* does not name its objects"):
        object_captions(bad)
    dino, _ = tiny_agent("dino")
    with pytest.raises(SystemExit, match="object goals needs a 'clip' agent"):
        search_goals(Namespace(dataset="scenes", goals="object"), dino, env)
