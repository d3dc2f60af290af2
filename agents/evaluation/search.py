"""Value-guided view search: the AB value function ``Q_AB(l | x, a)`` used as a policy.

The agent learns how likely annotation ``l`` becomes if the view ``x`` moves by the relative box
``a``. To find a goal annotation, score ``K`` candidate moves of every view and take the best
(greedy) or sample ``a ~ Q^(1/T)`` (softmax over ``log Q / T``)::

    from agents.method.ab import load_agent
    from agents.evaluation.search import ValueSearch, GoalValue, curated_goals
    agent = load_agent("runs/<run>/checkpoint.pt")
    goals = curated_goals(agent, curated)          # SimCLR: curated images, summed per class
    search = ValueSearch(GoalValue(agent, goals), envs, candidates="grid")
    actions = search.act(obs, goal=obs["goal"], boxes=info["box"])   # env's own action space

Goals (the annotation set the softmax of ``Q_AB`` runs over): :func:`caption_goals` (CLIP:
captions; :func:`class_caption_goals`: the captions of :func:`class_captions`, naming object
classes; :func:`object_caption_goals`: the phrase of each image's caption that names each of
its objects, ``"a red circle"``; :func:`episode_object_goals` picks each episode's),
:func:`curated_goals` (SimCLR: curated images, optionally grouped by class) and
:func:`prototype_goals` (DINO: the AB head's prototypes). A goal is an id into
``goals.vocabulary``; :func:`env_goal_ids` maps an env's goal ids to them
(:func:`episode_class_goals` gives each episode's).

Candidates (per view, ``K`` actions in the env's action space, scored as the relative boxes
they reach): ``"discrete"``, the 7 moves of :data:`imgmdp_env.wrappers.VIEW_ACTIONS` (the
env's own table under ``VectorDiscreteViewActions``); ``"grid"``, pan levels ``x`` pan levels
``x`` isotropic zoom levels spread over ``[-1, 1]``; ``"random"``, ``n_random`` uniform
actions per view per step. With the views' current ``boxes`` (``info["box"]`` or a Dict
observation's ``"box"``), each candidate is scored as the box the env will actually reach
(``clamp_boxes`` at the image margin), not the one it asks for.

Cost per step: one encoder pass over all ``N`` views, one decoder pass over the ``N x K``
candidates (:meth:`agents.method.ab.ABNetwork.query`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from imgmdp_env import checks as check
from imgmdp_env.actions import action_to_relative, relative_to_action
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.views import apply_relative, clamp_boxes, relative_box
from imgmdp_env.wrappers import view_action_table, view_env_core

__all__ = [
    "CANDIDATES",
    "POLICIES",
    "GoalValue",
    "Goals",
    "ValueSearch",
    "caption_goals",
    "class_caption_goals",
    "class_captions",
    "curated_goals",
    "env_goal_ids",
    "episode_class_goals",
    "episode_object_goals",
    "object_caption_goals",
    "object_captions",
    "prototype_goals",
]

CANDIDATES = ("discrete", "grid", "random")
POLICIES = ("greedy", "softmax")
NETWORKS = ("online", "target")


# ---------------------------------------------------------------------------------------------
# Goals: the annotation set of Q_AB
# ---------------------------------------------------------------------------------------------
@dataclass
class Goals:
    """An annotation set for ``Q_AB``: ``source`` is what :meth:`ABNetwork.annotations` takes
    (caption inputs ``(P, ...)`` for CLIP, pooled image features are computed from ``images``
    for SimCLR, None for DINO's prototypes); ``groups`` ``(P,)`` int64 maps each of the ``P``
    annotations to a goal id in ``[0, len(vocabulary))`` (None: one goal per annotation):
    ``Q(goal) = sum of Q over its annotations``, as :class:`imgmdp_env.scorers.EmbeddingScorer`
    sums prototypes. ``base`` is the agent base the set was built for."""

    vocabulary: list[str]
    base: str
    source: torch.Tensor | None = None
    images: torch.Tensor | None = None
    groups: torch.Tensor | None = None


def caption_goals(agent: Any, captions: Sequence[str]) -> Goals:
    """CLIP goals: each caption is one goal (the vocabulary), encoded by the agent's text side."""
    _need_base(agent, "clip", "caption_goals")
    captions = check.string_list("captions", list(captions))
    return Goals(list(captions), "clip", source=agent.caption_inputs(list(captions)))


def class_captions(names: Sequence[str], dataset: str = "") -> tuple[list[str], torch.Tensor]:
    """Captions that name each object class as ``dataset``'s captions do, ``"a sneaker"``
    (``caption_for``); for the built-in ``"scenes"``, whose captions give every object a
    colour, one caption per colour (``"a red circle"``, ``"an orange circle"``, ...). Returns
    the ``P`` captions and ``(P,)`` int64 the class (index into ``names``) of each."""
    from imgmdp_env.datasets.scenes import COLOUR_NAMES, caption_for

    names = check.string_list("names", list(names))
    colours = COLOUR_NAMES if dataset == "scenes" else [""]
    phrases = [f"{c} {n}".strip() for n in names for c in colours]
    return ([caption_for([p]) for p in phrases],
            torch.arange(len(names)).repeat_interleave(len(colours)))


def class_caption_goals(agent: Any, names: Sequence[str], dataset: str = "") -> Goals:
    """CLIP goals for finding object classes: the captions of :func:`class_captions`, ``Q``
    summed over each class's. The goals are named by ``names``, so an object-finding env's
    goal ids map onto them (:func:`env_goal_ids`)."""
    captions, groups = class_captions(names, dataset)
    return Goals(list(names), "clip", source=caption_goals(agent, captions).source,
                 groups=groups)


def object_captions(dataset: ImageDataset) -> tuple[list[str], list[np.ndarray]]:
    """The phrase of each image's caption that names each of its objects, for captions that
    name every object in box order as :func:`imgmdp_env.datasets.scenes.caption_for` writes
    them (the built-in ``scenes`` and ``fashion-scenes``: ``"a red circle and a blue
    square"``). Returns the distinct phrases, sorted (``"a red circle"``: each a caption of its
    own), and per image ``(K_i,)`` int64 the phrase id of each of its ``K_i`` objects.

    Raises ValueError naming the first image whose caption does not name its objects in order
    (a phrase per object, ending in the object's class name), e.g. a COCO folder's captions.
    """
    from imgmdp_env.datasets.scenes import caption_phrases

    if dataset.object_labels is None or dataset.class_names is None or dataset.captions is None:
        raise ValueError(f"object captions need a dataset with captions, object labels and "
                         f"class names; {dataset.name!r} lacks one of them")
    per_image = []
    for i, (caption, labels) in enumerate(zip(dataset.captions, dataset.object_labels,
                                              strict=True)):
        names = [dataset.class_names[k] for k in np.asarray(labels)]
        phrases = caption_phrases(caption) if names else []
        if len(phrases) != len(names) or not all(
                p.lower().endswith(n.lower()) for p, n in zip(phrases, names, strict=True)):
            raise ValueError(f"image {i}'s caption {caption!r} does not name its objects "
                             f"{names} one phrase each, in order: object goals need captions "
                             f"written as the built-in scenes' are")
        per_image.append(phrases)
    vocab = sorted({p for phrases in per_image for p in phrases})
    index = {p: j for j, p in enumerate(vocab)}
    return vocab, [np.array([index[p] for p in phrases], np.int64) for phrases in per_image]


def object_caption_goals(agent: Any, dataset: ImageDataset) -> tuple[Goals, list[np.ndarray]]:
    """CLIP goals that name one object of an image as the image's caption does (``"a red
    circle"``, not every circle): :func:`caption_goals` of the phrases of
    :func:`object_captions`, and per image ``(K_i,)`` int64 the goal id of each object."""
    captions, ids = object_captions(dataset)
    return caption_goals(agent, captions), ids


def episode_class_goals(goals: Goals, env: Any) -> Callable[..., np.ndarray]:
    """``pick(obs, info) -> (N,)`` int64, each episode's goal id in ``goals`` for ``env``'s
    goal ids (:func:`env_goal_ids`, whose ValueError it raises)."""
    ids = env_goal_ids(goals, env)
    return lambda obs, info: ids[obs["goal"]]


def episode_object_goals(agent: Any, env: Any) -> tuple[Goals, Callable[..., np.ndarray]]:
    """:func:`object_caption_goals` for an object-finding env (``VectorCaptionMatchReward``
    with ``goals="image"``: each episode's goal is a class of its image's objects), and
    ``pick(obs, info) -> (N,)`` int64, each episode's goal id: the phrase that names the first
    object of the episode's goal class in its own image (``"a red circle"`` when the goal is
    ``"circle"``; -1 where the image has no object of the class)."""
    _need_base(agent, "clip", "object goals")
    ds = view_env_core(env).dataset
    goals, ids = object_caption_goals(agent, ds)
    names = list(ds.class_names)
    class_of = np.array([names.index(v) if v in names else -1 for v in env.vocabulary])
    first = np.full((len(ids), len(names) + 1), -1, np.int64)  # column -1: not a class
    for i, (labels, phrase) in enumerate(zip(ds.object_labels, ids, strict=True)):
        classes, at = np.unique(np.asarray(labels, np.int64), return_index=True)  # first of each
        first[i, classes] = phrase[at]

    def pick(obs: dict, info: dict) -> np.ndarray:
        return first[np.asarray(info["image_index"]), class_of[np.asarray(obs["goal"])]]

    return goals, pick


def curated_goals(agent: Any, curated: ImageDataset, prototypes: str = "auto",
                  per_class: int = 64) -> Goals:
    """SimCLR goals: curated images rendered whole at the encoder's size (the same rendering
    and grouping as :func:`imgmdp_env.scorers.curation_scorer`): one goal per image, or per
    labelled class (``prototypes="classes"``, the default with labels; up to ``per_class``
    images each, ``Q`` summed over them)."""
    from imgmdp_env.scorers import curation_scorer

    _need_base(agent, "simclr", "curated_goals")
    size = agent.encoder.view_size
    holder: list[torch.Tensor] = []

    def keep(views: torch.Tensor) -> torch.Tensor:  # the rendered views, in order
        holder.append(views)
        return views.flatten(1).float()

    scorer = curation_scorer(curated, size, embedding=keep, prototypes=prototypes,
                             per_class=per_class)
    return Goals(scorer.vocabulary, "simclr", images=torch.cat(holder), groups=scorer.groups)


def env_goal_ids(goals: Goals, env: Any) -> np.ndarray:
    """``(L,)`` int64: the id in ``goals.vocabulary`` of each goal of ``env`` (the names of a
    reward wrapper's ``env.vocabulary``; ``-1`` for one the goals lack), so that
    ``ids[obs["goal"]]`` is the goal :meth:`ValueSearch.act` takes. Raises ValueError listing
    the goals ``env``'s episodes can draw that ``goals`` lacks: with an object-finding env
    (``VectorCaptionMatchReward``, goals of each image's own objects), the object classes of
    its images; else every name of its vocabulary."""
    vocab = list(env.vocabulary)
    ds = view_env_core(env).dataset
    drawn = set(vocab)
    if ds.object_labels is not None and ds.class_names is not None:
        drawn &= {ds.class_names[k] for lab in ds.object_labels for k in np.asarray(lab)}
    missing = sorted(drawn - set(goals.vocabulary))
    if missing:
        raise ValueError(f"the goals have no annotation of {missing}, which the episodes can "
                         f"draw (goals: {goals.vocabulary})")
    return np.array([goals.vocabulary.index(v) if v in goals.vocabulary else -1
                     for v in vocab], np.int64)


def prototype_goals(agent: Any) -> Goals:
    """DINO goals: the AB head's prototypes, named ``prototype[k]``."""
    _need_base(agent, "dino", "prototype_goals")
    return Goals([f"prototype[{k}]" for k in range(agent.cfg.n_prototypes)], "dino")


def _need_base(agent: Any, base: str, what: str) -> None:
    have = getattr(getattr(agent, "cfg", None), "base", None)
    if have != base:
        fixes = {"clip": "caption_goals", "simclr": "curated_goals", "dino": "prototype_goals"}
        raise ValueError(f"{what} needs a {base!r} agent; this agent's base is {have!r} (use "
                         f"{fixes.get(have, 'an ABAgent')})")


class GoalValue:
    """``Q_AB(goal | x, a)`` of an :class:`agents.method.ab.ABAgent` over a :class:`Goals` set.

    ``__call__(views (N, 3, H, W) uint8, rel (N, K, 4) relative boxes, goal (N,) int64)``
    -> ``(N, K)`` float32 probabilities: one encoder pass over the views, one decoder pass over
    all ``N x K`` boxes. The annotation embeddings ``psi_AB`` are computed once, here.
    network: ``"online"`` (as :meth:`ABAgent.value`) or ``"target"`` (the EMA copy).
    """

    def __init__(self, agent: Any, goals: Goals, network: str = "online") -> None:
        network = check.choice("network", network, NETWORKS)
        if goals.base != agent.cfg.base:
            raise ValueError(f"goals were built for a {goals.base!r} agent; this agent's base is "
                             f"{agent.cfg.base!r}")
        self.net = agent.online if network == "online" else agent.target
        # the encoder whose tokens the decoder was trained on (--value-input ema: the target's)
        self.token_net = agent.target if agent.cfg.value_input == "ema" else self.net
        self.vocabulary = list(goals.vocabulary)
        self.view_size = agent.encoder.view_size
        self.groups = goals.groups
        device = next(self.net.parameters()).device
        with torch.no_grad():
            src = goals.source
            if goals.base == "simclr":
                src = self.net.encoder.pool(self.net.encoder(goals.images.to(device)))
            elif src is not None:
                src = src.to(device)
            self.psi, self.psi_ab = self.net.annotations(src)  # (P, d) unit
        self.center = agent.center
        self.device = device

    @torch.no_grad()
    def __call__(self, views: torch.Tensor, rel: torch.Tensor, goal: torch.Tensor
                 ) -> torch.Tensor:
        views, rel = torch.as_tensor(views), torch.as_tensor(rel)
        if views.dtype != torch.uint8 or views.ndim != 4 or views.shape[1] != 3:
            raise ValueError(f"views must be (N, 3, H, W) uint8, got {views.dtype} "
                             f"{tuple(views.shape)}")
        n = len(views)
        if rel.ndim != 3 or rel.shape[0] != n or rel.shape[2] != 4 or not (
                rel.is_floating_point()):
            raise ValueError(f"rel must be ({n}, K, 4) float relative boxes, got {rel.dtype} "
                             f"{tuple(rel.shape)}")
        if not torch.isfinite(rel).all():  # a NaN box token is an index error in the decoder
            rows = (~torch.isfinite(rel)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"rel holds NaN or inf for view(s) {rows[:10]}: relative boxes "
                             "must be finite")
        goal = torch.from_numpy(check.index_array("goal", goal, len(self.vocabulary), [(n,)]))
        net = self.net
        tokens = self.token_net.encoder(views.to(self.device))  # (N, T, D): one pass
        logits = net.q_logits(tokens, rel.to(self.device), self.psi, self.psi_ab, self.center)
        p = logits.float().softmax(-1)  # (N, K, P)
        if self.groups is not None:
            p = p.new_zeros(*p.shape[:2], len(self.vocabulary)).index_add_(
                2, self.groups.to(p.device), p)
        idx = goal.to(p.device).long()[:, None, None].expand(-1, p.shape[1], 1)
        return p.gather(2, idx)[..., 0].cpu()

    @torch.no_grad()
    def view_prob(self, views: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """``p(goal | view)`` of the base head on views ``(N, 3, H, W)`` uint8 themselves
        (goal ``(N,)`` ids) -> ``(N,)``: the annotation ``Q_AB`` is trained to predict of the
        view a move reaches. On the rendered reached views it is the oracle of the value: a
        goal set whose ``view_prob`` does not rank views by the goal's presence cannot be
        searched for with any ``Q_AB``."""
        views = torch.as_tensor(views)
        goal = torch.from_numpy(check.index_array("goal", goal, len(self.vocabulary),
                                                  [(len(views),)]))
        p = self.view_probs(views)
        return p[torch.arange(len(p)), goal.long()]

    @torch.no_grad()
    def view_probs(self, views: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """``p(. | view)`` of the base head over the whole vocabulary: views
        ``(N, 3, H, W)`` uint8 -> ``(N, len(vocabulary))`` (:meth:`view_prob` of every goal)."""
        views = torch.as_tensor(views)
        if views.dtype != torch.uint8 or views.ndim != 4 or views.shape[1] != 3:
            raise ValueError(f"views must be (N, 3, H, W) uint8, got {views.dtype} "
                             f"{tuple(views.shape)}")
        out = []
        for chunk in views.split(batch_size):
            pooled = self.net.encoder.pool(self.token_net.encoder(chunk.to(self.device)))
            p = self.net.base_logits(pooled, self.psi, self.center).float().softmax(-1)
            if self.groups is not None:
                p = p.new_zeros(len(p), len(self.vocabulary)).index_add_(
                    1, self.groups.to(p.device), p)
            out.append(p.cpu())
        if not out:
            return torch.zeros(0, len(self.vocabulary))
        return torch.cat(out)


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------
def _discrete_table(env: Any) -> np.ndarray | None:
    """The ``(7, A)`` table of a ``(Vector)DiscreteViewActions`` in the wrapper chain, if any."""
    e = env
    while e is not None:
        if isinstance(getattr(e, "table", None), np.ndarray):
            return e.table
        e = getattr(e, "env", None)
    return None


class ValueSearch:
    """A policy that takes, per view, the candidate move of highest goal value.

    Args:
        value_fn: ``(views (N, 3, H, W) uint8, rel (N, K, 4), goal (N,) int64) -> (N, K)``
            values, e.g. a :class:`GoalValue` (any callable: tests pass a stub).
        env: the (vector or single) ImageView-v0 env the actions are for, possibly wrapped:
            its action space (continuous ``Box(-1, 1, (A,))`` or ``Discrete(7)`` from
            ``(Vector)DiscreteViewActions``) is the one :meth:`act` returns, and its
            ``max_pan``, ``max_zoom``, ``min_size``, ``margin`` map actions to boxes.
        candidates: ``"discrete"``, ``"grid"`` or ``"random"`` (module doc); a discrete action
            space allows only ``"discrete"``.
        pan, zoom: the moves of ``"discrete"`` on a continuous env (as
            :func:`imgmdp_env.wrappers.view_action_table`).
        grid: ``(pan levels, zoom levels)`` of ``"grid"``: ``pan^2 * zoom`` candidates.
        n_random: candidates per view of ``"random"``.
        policy: ``"greedy"`` (ties: the first candidate, ``stay`` for ``"discrete"``) or
            ``"softmax"``: sample with probabilities ``Q^(1/temperature)`` normalised.
        temperature: of ``"softmax"``, > 0.
        seed: of the random candidates and the softmax draws.
        inside: with the views' ``boxes`` (continuous actions only), move every candidate's
            box into the image (``clamp_boxes`` with margin 0) and return the action that
            reaches it (:func:`imgmdp_env.actions.relative_to_action`; what is scored is still
            the box the env reaches with that action). The value function was trained on views
            inside the image (random resized crops), never on views that show the env's
            out-of-image padding. Measured on the default scenes episodes (studies.find_object,
            3 seeds): 80% of the 27 asked grid moves of a start view leave the image; there a
            re-fit value branch's Q is 2.7x further from the base head's own p(. | x') of the
            rendered view (KL 2.6 vs 0.96 nats), and Q's ranking of the moves agrees with that
            oracle at rank correlation 0.04 (0.32 inside); uniform grid moves succeed 0.161
            asked, 0.331 inside. Default False (the moves as asked; needs no boxes).
    """

    def __init__(self, value_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                          torch.Tensor],
                 env: Any, candidates: str = "discrete", pan: float = 0.25, zoom: float = 1.5,
                 grid: tuple[int, int] = (3, 3), n_random: int = 32, policy: str = "greedy",
                 temperature: float = 1.0, seed: int | None = None,
                 inside: bool = False) -> None:
        if not callable(value_fn):
            raise TypeError(f"value_fn ({value_fn!r:.80}) must be callable (views, rel, goal) "
                            "-> (N, K) values, e.g. agents.evaluation.search.GoalValue")
        self.candidates = check.choice("candidates", candidates, CANDIDATES)
        self.policy = check.choice("policy", policy, POLICIES)
        self.temperature = check.number("temperature", temperature, 0, lo_open=True)
        self.n_random = check.integer("n_random", n_random, 1)
        if not isinstance(inside, bool | np.bool_):
            raise TypeError(f"inside must be a bool, got {inside!r:.40}")
        self.inside = bool(inside)
        seed = check.seed("seed", seed)
        self.value_fn = value_fn
        core = view_env_core(env)
        self.core = core
        self.max_pan, self.max_zoom = core.max_pan, core.max_zoom
        self.min_size, self.margin = core.min_size, core.margin
        self.action_dim = core.single_action_space.shape[0]
        space = env.single_action_space if isinstance(env, VectorEnv) else env.action_space
        self.discrete = isinstance(space, spaces.Discrete)
        table = _discrete_table(env)
        if self.discrete:
            if table is None:
                raise TypeError(f"a Discrete action space ({space}) needs DiscreteViewActions / "
                                "VectorDiscreteViewActions in the wrapper chain")
            if self.candidates != "discrete":
                raise ValueError(f"candidates={candidates!r} on a discrete action space: its "
                                 "actions are the 7 moves, use candidates='discrete'")
            if self.inside:
                raise ValueError("inside=True needs a continuous action space: the 7 discrete "
                                 "moves cannot be changed to stay inside the image")
        elif table is None and self.candidates == "discrete":
            table = view_action_table(core, pan, zoom)
        if self.candidates == "discrete":
            fixed = torch.from_numpy(table)
        elif self.candidates == "grid":
            n_pan, n_zoom = (check.integer(f"grid[{i}]", g, 1) for i, g in enumerate(grid))
            p = torch.linspace(-1, 1, n_pan) if n_pan > 1 else torch.zeros(1)
            z = torch.linspace(-1, 1, n_zoom) if n_zoom > 1 else torch.zeros(1)
            dx, dy, s = torch.meshgrid(p, p, z, indexing="ij")
            fixed = torch.stack([dx, dy, s, s], -1).reshape(-1, 4)
            fixed = F.pad(fixed, (0, self.action_dim - 4))
        else:
            fixed = None
        self.fixed = fixed  # (K, A) env actions, or None (random)
        self.generator = torch.Generator().manual_seed(0 if seed is None else seed)

    # ------------------------------------------------------------------ candidates and values
    def candidate_actions(self, n: int) -> torch.Tensor:
        """``(n, K, A)`` float32 env actions to score for ``n`` views."""
        if self.fixed is not None:
            return self.fixed[None].expand(n, -1, -1)
        a = torch.rand(n, self.n_random, 4, generator=self.generator) * 2 - 1
        return F.pad(a, (0, self.action_dim - 4))

    def scores(self, views: Any, goal: Any, boxes: Any = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``(N, K)`` and the candidate env actions ``(N, K, A)`` they belong to.

        views: ``(N, 3, H, W)`` uint8; goal: ``(N,)`` integer ids (in
        ``[0, len(value_fn.vocabulary))`` for a :class:`GoalValue`); boxes: ``(N, 4)`` current
        cxcywh boxes (optional; finite, sizes > 0, within the env's ``margin`` of the image):
        each candidate is then scored as the box the env reaches (``clamp_boxes``), else as
        the relative box the action asks for. With ``inside``, the candidate actions are
        those that keep each box in the image (``boxes`` required). Bad ids or boxes, and
        non-finite values from ``value_fn``, raise naming them."""
        views = torch.as_tensor(np.asarray(views))
        if views.dtype != torch.uint8 or views.ndim != 4 or views.shape[1] != 3:
            raise ValueError(f"views must be (N, 3, H, W) uint8, got {views.dtype} "
                             f"{tuple(views.shape)}")
        n = len(views)
        goal = torch.from_numpy(self._goal_ids(goal, n))
        acts = self.candidate_actions(n)
        rel = action_to_relative(acts, self.max_pan, self.max_zoom)  # (N, K, 4)
        if boxes is not None:
            b = check.box_array("boxes", boxes, margin=self.margin)
            if b.size != 4 * n:
                raise ValueError(f"boxes must hold one cxcywh box per view ({n}, 4), got shape "
                                 f"{b.shape}")
            b = torch.from_numpy(b).reshape(n, 1, 4)
            if self.inside:  # the action toward the asked box moved into the image
                wanted = clamp_boxes(apply_relative(b, rel), self.min_size, 0.0)
                acts = acts.clone()
                acts[..., :4] = relative_to_action(relative_box(b, wanted), self.max_pan,
                                                   self.max_zoom)
                rel = action_to_relative(acts, self.max_pan, self.max_zoom)
            reached = clamp_boxes(apply_relative(b, rel), self.min_size, self.margin)
            rel = relative_box(b, reached)
        elif self.inside:
            raise ValueError("inside=True needs the views' current boxes (boxes=, or a Dict "
                             "observation's 'box')")
        values = torch.as_tensor(self.value_fn(views, rel, goal))
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"value_fn returned {values.dtype} values; expected real numbers "
                            "(N, K) = (views, candidates)")
        values = values.float()
        if values.shape != (n, acts.shape[1]):
            raise ValueError(f"value_fn returned shape {tuple(values.shape)}; expected "
                             f"({n}, {acts.shape[1]}) = (views, candidates)")
        bad = ~torch.isfinite(values)
        if bad.any():  # a greedy argmax over NaN would take the first candidate, silently
            per_view = bad.sum(1)
            rows = per_view.nonzero().flatten().tolist()
            kinds = sorted({"NaN" if v != v else "inf" for v in values[bad].tolist()})
            raise ValueError(
                f"value_fn returned {int(bad.sum())} non-finite value(s) ({' and '.join(kinds)}) "
                f"of {values.numel()}: view(s) {rows[:10]}{' ...' if len(rows) > 10 else ''} "
                f"have {per_view[rows[:10]].tolist()} non-finite of their {values.shape[1]} "
                "candidates; no move can be chosen from them (a NaN weight in the agent? "
                "check it with agents.infra.checkpoint.non_finite)")
        return values, acts

    def _goal_ids(self, goal: Any, n: int) -> np.ndarray:
        """``goal`` as ``(n,)`` int64 ids: integers (never floats, which would be truncated,
        nor bools) in ``[0, len(value_fn.vocabulary))`` when the value function has a
        vocabulary (a :class:`GoalValue`), else ``>= 0``."""
        vocab = getattr(self.value_fn, "vocabulary", None)
        k = len(vocab) if vocab is not None else None
        try:
            ids = check.index_array("goal", goal, k)
        except ValueError as e:
            hint = (f" (ids into the goals' vocabulary of {k} names" if k is not None
                    else " (goal ids") + "; env_goal_ids gives -1 for an env goal the goal " \
                "set lacks)"
            raise ValueError(f"{e}{hint}") from None
        ids = ids.reshape(-1)
        if ids.shape != (n,):
            raise ValueError(f"goal must hold one id per view ({n}), got shape "
                             f"{tuple(np.shape(goal))}")
        return ids

    def act(self, obs: Any, goal: Any = None, boxes: Any = None) -> np.ndarray:
        """Actions in the env's action space for a batch of observations.

        obs: views ``(N, 3, H, W)`` uint8 (or one ``(3, H, W)`` view: one action back), or a
        Dict observation with ``"view"`` (and ``"goal"``, ``"box"`` used when ``goal`` /
        ``boxes`` are not given). Returns ``(N, A)`` float32 in ``[-1, 1]`` (continuous) or
        ``(N,)`` int64 move ids (discrete)."""
        if isinstance(obs, dict):
            goal = obs.get("goal") if goal is None else goal
            boxes = obs.get("box") if boxes is None else boxes
            obs = obs["view"]
        if goal is None:
            raise ValueError("act() needs the goal ids: pass goal= or a Dict observation with "
                             "'goal' (the reward wrappers' goal_obs=True)")
        views = np.asarray(obs)
        single = views.ndim == 3
        if single:  # one goal id and one box (4,) for it
            views = views[None]
        values, acts = self.scores(views, goal, boxes)
        if self.policy == "greedy":
            k = values.argmax(1)
        else:
            logits = values.clamp(min=1e-12).log() / self.temperature
            k = torch.multinomial(logits.softmax(1), 1, generator=self.generator)[:, 0]
        if self.discrete:
            out = k.numpy().astype(np.int64)
        else:
            out = acts[torch.arange(len(k)), k].numpy().astype(np.float32)
        return out[0] if single else out
