"""Reward wrappers: pay ``p(goal | next view)``, the likelihood of a goal annotation.

The bare ImageView-v0 env pays nothing. These wrappers score the views the env already
rendered with an :class:`~imgmdp_env.scorers.AnnotationScorer` (once per step, batched), pay
the probability of each sub-env's current goal annotation, and put the whole ``p(. | view)``
vector in ``info["annotation_probs"]`` (the general-value-function view: one reward channel per
annotation, docs/method.md section 1).

Goals: per episode, drawn from the image's own annotations (``goals="image"``: its object
classes, image label or caption, wherever they are in the vocabulary; an image with none draws
from the whole vocabulary), drawn uniformly from the vocabulary (``"vocabulary"``), or fixed (an
annotation name or id). ``reset(options={"goal": ...})`` fixes the goal of the episodes that
reset. The goal id is ``info["goal"]`` and, with ``goal_obs=True``, the ``"goal"`` key
(``Discrete(L)``) of a Dict observation (the view goes under ``"view"``); ``goal_text=True``
adds ``info["goal_text"]``. ``terminate_at=p`` ends an episode once ``p(goal | view) >= p``.

Success is worth reaching: with ``terminate_at``, the step that ends an episode by success pays
``p / (1 - gamma)`` in all (``terminal_payment="stay"``, the default; ``gamma=0.99`` as SB3's
and CleanRL's PPO / DQN): the discounted return of staying at that view forever. Without it
(``terminal_payment="none"``) the dense, non-negative reward makes ending the episode a loss,
and hovering just below the threshold beats reaching it. With the payment the episode is worth
what it would be if the view froze at the first success, so a success view is worth more than
any view below the threshold held forever. Truncation (the time limit) never pays it. Set
``gamma`` to the learner's discount.

Wrappers, grouped by what they pay:

- :class:`AnnotationReward` / :class:`VectorAnnotationReward`: any scorer.
- :class:`CaptionMatchReward` / :class:`VectorCaptionMatchReward`: captions or object names;
  by default the ground-truth :class:`~imgmdp_env.scorers.ObjectVisibilityScorer`.
- :class:`CurationReward` / :class:`VectorCurationReward`: a curated image set; by default
  edge-thumbnail embeddings and class (or image) prototypes
  (:func:`~imgmdp_env.scorers.curation_scorer`).

The plain names wrap a ``gym.make`` env, the ``Vector`` names a ``gym.make_vec`` env (any
autoreset mode: goals are redrawn whenever a sub-env resets, and under ``SAME_STEP`` the
``final_obs`` / ``final_info`` keep the finished episode's goal and probabilities). Put them
directly over the env (or over :mod:`imgmdp_env.wrappers` action wrappers): they read
``info["image_index"]`` and ``info["box"]``. Gymnasium's ``RecordEpisodeStatistics`` and
``NormalizeReward`` go outside, so that they see the reward and the threshold terminations.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from imgmdp_env import checks as check
from imgmdp_env.datasets import make_dataset
from imgmdp_env.goals import (
    GOAL_MODES,
    GoalTask,
    image_annotations,
    info_state,
    obs_views,
)
from imgmdp_env.scorers import (
    AnnotationScorer,
    EdgeThumbnail,
    EmbeddingScorer,
    ObjectVisibilityScorer,
    check_scores,
    curation_scorer,
)
from imgmdp_env.vector_attrs import VectorAttrs
from imgmdp_env.vector_info import end_now, reset_rows
from imgmdp_env.wrappers import numpy_only, view_env_core

__all__ = [
    "GOAL_MODES",
    "AnnotationReward",
    "AnnotationScorer",
    "CaptionMatchReward",
    "CurationReward",
    "EdgeThumbnail",
    "EmbeddingScorer",
    "ObjectVisibilityScorer",
    "VectorAnnotationReward",
    "VectorCaptionMatchReward",
    "VectorCurationReward",
    "check_scores",
    "curation_scorer",
    "image_annotations",
]

class AnnotationReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Pays ``p(goal | view)`` from any :class:`AnnotationScorer`, on the single env (in place
    of the env's own reward, which is 0).

    Args:
        env: a ``gym.make("ImageView-v0", ...)`` env (possibly action-wrapped).
        scorer: the :class:`AnnotationScorer`; its vocabulary is the set of goals.
        goals: ``"image"``, ``"vocabulary"``, or a fixed annotation name or id (see module doc).
        goal_obs: observe ``{"view": ..., "goal": Discrete(L)}`` (or add ``"goal"`` to a Dict).
        terminate_at: end the episode once ``p(goal | view) >= terminate_at`` (None: never).
        goal_text: add the goal's name as ``info["goal_text"]``.
        terminal_payment: ``"stay"`` (default): the success step pays ``p / (1 - gamma)``, the
            return of staying at the view forever; ``"none"``: it pays ``p``, like any step.
            Only ``terminate_at`` terminations pay it, never truncation (see module doc).
        gamma: the discount of that payment, in ``[0, 1)``; set it to the learner's.

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.rewards import AnnotationReward, ObjectVisibilityScorer
        >>> env = gym.make("ImageView-v0", dataset_kwargs={"n": 8})
        >>> env = AnnotationReward(env, ObjectVisibilityScorer(env.unwrapped.core.dataset))
        >>> obs, info = env.reset(seed=0)
        >>> sorted(obs), info["annotation_probs"].shape
        (['goal', 'view'], (8,))
    """

    def __init__(self, env: gym.Env, scorer: AnnotationScorer, goals: str | int = "image",
                 goal_obs: bool = True, terminate_at: float | None = None,
                 goal_text: bool = False, terminal_payment: str = "stay",
                 gamma: float = 0.99) -> None:
        if isinstance(env, VectorEnv):
            raise TypeError(f"{type(self).__name__} wraps a single env; use "
                            f"Vector{type(self).__name__} for a vector env")
        if not isinstance(env, gym.Env):
            raise TypeError(f"{type(self).__name__} wraps a gym.make('ImageView-v0') env, not "
                            f"{type(env).__name__}")
        gym.utils.RecordConstructorArgs.__init__(  # lets gym.make(env.spec) rebuild the stack
            self, _disable_deepcopy=True, scorer=scorer, goals=goals, goal_obs=goal_obs,
            terminate_at=terminate_at, goal_text=goal_text, terminal_payment=terminal_payment,
            gamma=gamma)
        super().__init__(env)
        self.task = GoalTask(env, scorer, goals, goal_obs, terminate_at, goal_text,
                             type(self).__name__, terminal_payment=terminal_payment, gamma=gamma)
        self.vocabulary = self.task.vocabulary
        self.observation_space = self.task.observation_space(env.observation_space)
        self.goal = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[Any, dict]:
        seed, options = self.task.reset_args(seed, options)
        goal = options.pop("goal", None)
        obs, info = self.env.reset(seed=seed, options=options)
        idx, boxes = info_state(info, type(self).__name__)
        self.goal = int(self.task.goals_from_option(goal, 1)[0] if goal is not None
                        else self.task.draw(idx)[0])
        return self.task.observe(obs, self.goal), self._info(info, obs, idx, boxes)[0]

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, _, terminated, truncated, info = self.env.step(action)
        info, p_goal = self._info(info, obs, *info_state(info, type(self).__name__))
        hit = bool(self.task.reached(p_goal))
        reward = float(self.task.pay(p_goal, hit))
        return self.task.observe(obs, self.goal), reward, bool(terminated) or hit, truncated, info

    def _info(self, info: dict, obs: Any, idx: np.ndarray, boxes: np.ndarray
              ) -> tuple[dict, float]:
        probs = self.task.score(obs_views(obs, type(self).__name__)[None], idx, boxes)[0]
        info = {**info, "annotation_probs": probs, "goal": self.goal}
        if self.task.goal_text:
            info["goal_text"] = self.vocabulary[self.goal]
        return info, float(probs[self.goal])


class VectorAnnotationReward(VectorAttrs, VectorWrapper):
    """Pays ``p(goal | view)`` from any :class:`AnnotationScorer`, on the vector env: one scorer
    call per step on all sub-envs' views. Same arguments as :class:`AnnotationReward`;
    ``goals`` holds the current goal id of each sub-env ``(num_envs,)``.

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.rewards import VectorAnnotationReward, ObjectVisibilityScorer
        >>> envs = gym.make_vec("ImageView-v0", num_envs=4, dataset_kwargs={"n": 8})
        >>> envs = VectorAnnotationReward(envs, ObjectVisibilityScorer(envs.unwrapped.dataset))
        >>> obs, info = envs.reset(seed=0)
        >>> obs["goal"].shape, info["annotation_probs"].shape
        ((4,), (4, 8))
    """

    def __init__(self, env: VectorEnv, scorer: AnnotationScorer, goals: str | int = "image",
                 goal_obs: bool = True, terminate_at: float | None = None,
                 goal_text: bool = False, terminal_payment: str = "stay",
                 gamma: float = 0.99) -> None:
        name = type(self).__name__
        if not isinstance(env, VectorEnv):
            raise TypeError(f"{name} wraps a vector env; use {name.removeprefix('Vector')} "
                            "for a single env")
        numpy_only(env, name)
        super().__init__(env)
        self.task = GoalTask(env, scorer, goals, goal_obs, terminate_at, goal_text, name,
                             terminal_payment=terminal_payment, gamma=gamma)
        self.vocabulary = self.task.vocabulary
        self.single_observation_space = self.task.observation_space(env.single_observation_space)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.autoreset_mode = AutoresetMode(env.metadata.get("autoreset_mode",
                                                             AutoresetMode.NEXT_STEP))
        n = self.num_envs
        self.goals = np.zeros(n, np.int64)
        self._autoreset = np.zeros(n, bool)  # NEXT_STEP: the env resets these on the next step
        self._pending = np.zeros(n, bool)  # NEXT_STEP: episodes this wrapper ended, to reset

    per_env_attrs = ("goal",)  # get_attr("goal") / set_attr("goal", ...): imgmdp_env.vector_attrs

    def _get_per_env(self, name: str) -> tuple[Any, ...]:
        return tuple(int(g) for g in self.goals)  # "goal", as AnnotationReward.goal

    def _set_per_env(self, name: str, values: list[Any]) -> None:
        self.goals[:] = [self.task.resolve(v) for v in values]  # names or ids, checked

    def reset(self, *, seed: int | None = None, options: dict | None = None
              ) -> tuple[Any, dict]:
        """Reset (all, or ``options["reset_mask"]``) and draw their goals (or take
        ``options["goal"]``: one name / id, or one per sub-env)."""
        seed, options = self.task.reset_args(seed, options)
        goal = options.pop("goal", None)
        obs, info = self.env.reset(seed=seed, options=options)
        n = self.num_envs
        mask = np.asarray(options.get("reset_mask", np.ones(n, bool)), bool)
        idx, boxes = info_state(info, type(self).__name__)
        if goal is not None:
            self.goals[mask] = self.task.goals_from_option(goal, n)[mask]
        else:
            self.goals[mask] = self.task.draw(idx[mask])
        self._autoreset[mask] = self._pending[mask] = False
        probs = np.zeros((n, len(self.vocabulary)), np.float32)
        probs[mask] = self.task.score(obs_views(obs, type(self).__name__)[mask], idx[mask],
                                      boxes[mask])
        return self.task.observe(obs, self.goals), self._annotate(dict(info), probs, mask)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, _, term, trunc, info = self.env.step(actions)
        name, n = type(self).__name__, self.num_envs
        info = dict(info)
        fresh = self._autoreset.copy()  # NEXT_STEP: these sub-envs start a new episode here
        if self._pending.any():  # episodes ended by terminate_at on the last step
            obs, info = reset_rows(self.env, obs, info, self._pending)
            term, trunc = term & ~self._pending, trunc & ~self._pending
            fresh |= self._pending
            self._pending = np.zeros(n, bool)
        views = obs_views(obs, name)
        idx, boxes = info_state(info, name)
        ended = np.zeros(n, bool)  # SAME_STEP: sub-envs whose episode ended (and reset) here
        if self.autoreset_mode == AutoresetMode.SAME_STEP and "_final_obs" in info:
            ended = np.asarray(info["_final_obs"], bool).copy()
            rows = np.flatnonzero(ended)
            if len(rows):  # the reward is for the view reached, not the reset view
                views = views.copy()
                views[rows] = np.stack([obs_views(info["final_obs"][i], name) for i in rows])
                f_idx, f_boxes = info_state(info["final_info"], name)
                idx[rows], boxes[rows] = f_idx[rows], f_boxes[rows]
        probs = self.task.score(views, idx, boxes)
        if fresh.any():
            self.goals[fresh] = self.task.draw(idx[fresh])
        p_goal = probs[np.arange(n), self.goals].astype(np.float64)
        p_goal[fresh] = 0.0
        hit = self.task.reached(p_goal) & ~fresh
        reward = self.task.pay(p_goal, hit)
        extra = hit & ~(term | trunc)  # episodes only this wrapper ends
        term = term | hit
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            if extra.any():
                obs, info = end_now(self.env, obs, info, extra)
            ended |= extra
            if ended.any():
                info = self._finalise(info, probs, ended)
        elif self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset = term | trunc
            self._pending = extra
        return (self.task.observe(obs, self.goals), reward, term, trunc,
                self._annotate(info, probs, ~ended))

    # ------------------------------------------------------------------ autoreset helpers
    def _finalise(self, info: dict, probs: np.ndarray, ended: np.ndarray) -> dict:
        """SAME_STEP: the finished episodes' goal and probabilities go with final_obs /
        final_info; then those sub-envs draw the goal of their new episode."""
        final_obs = np.array(info["final_obs"], dtype=object)
        for i in np.flatnonzero(ended):
            final_obs[i] = self.task.observe(final_obs[i], self.goals[i])
        info["final_obs"] = final_obs
        info["final_info"] = self._annotate(dict(info["final_info"]), probs, ended, ended)
        idx, _ = info_state(info, type(self).__name__)
        self.goals[ended] = self.task.draw(idx[ended])
        return info

    def _annotate(self, info: dict, probs: np.ndarray, mask: np.ndarray,
                  goal_mask: np.ndarray | None = None) -> dict:
        goal_mask = np.ones(self.num_envs, bool) if goal_mask is None else goal_mask
        info.update(annotation_probs=probs, _annotation_probs=mask.copy(),
                    goal=self.goals.copy(), _goal=goal_mask.copy())
        if self.task.goal_text:
            info.update(goal_text=self.task.names[self.goals], _goal_text=goal_mask.copy())
        return info


# ---------------------------------------------------------------------------- caption match
def _record(wrapper: Any, **kwargs: Any) -> None:
    """Record the outermost constructor's arguments (single-env wrappers: gym.make(env.spec))."""
    if isinstance(wrapper, gym.utils.RecordConstructorArgs):
        gym.utils.RecordConstructorArgs.__init__(wrapper, _disable_deepcopy=True, **kwargs)


class _CaptionMatch:
    def __init__(self, env: Any, scorer: AnnotationScorer | None = None,
                 goals: str | int = "image", goal_obs: bool = True,
                 terminate_at: float | None = None, goal_text: bool = False,
                 terminal_payment: str = "stay", gamma: float = 0.99) -> None:
        _record(self, scorer=scorer, goals=goals, goal_obs=goal_obs, terminate_at=terminate_at,
                goal_text=goal_text, terminal_payment=terminal_payment, gamma=gamma)
        if scorer is None:
            scorer = ObjectVisibilityScorer(view_env_core(env).dataset)
        super().__init__(env, scorer, goals=goals, goal_obs=goal_obs,
                         terminate_at=terminate_at, goal_text=goal_text,
                         terminal_payment=terminal_payment, gamma=gamma)


class CaptionMatchReward(_CaptionMatch, AnnotationReward):
    """Pays how well the view matches a caption or object name (single env).

    The default scorer is the ground truth :class:`ObjectVisibilityScorer` over the env
    dataset's object classes (needs object boxes: e.g. ``"scenes"``); pass any
    :class:`AnnotationScorer` (e.g. an :class:`EmbeddingScorer` over a learned image-text model,
    with captions as its vocabulary) for anything else. Other arguments: see
    :class:`AnnotationReward`; goals default to the image's own annotations.

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.rewards import CaptionMatchReward
        >>> env = CaptionMatchReward(gym.make("ImageView-v0", dataset_kwargs={"n": 8}),
        ...                          goal_text=True, terminate_at=0.9)
        >>> obs, info = env.reset(seed=0)
        >>> info["goal_text"] in env.vocabulary
        True
    """


class VectorCaptionMatchReward(_CaptionMatch, VectorAnnotationReward):
    """:class:`CaptionMatchReward` on the vector env (see :class:`VectorAnnotationReward`).

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.rewards import VectorCaptionMatchReward
        >>> envs = VectorCaptionMatchReward(
        ...     gym.make_vec("ImageView-v0", num_envs=4, dataset_kwargs={"n": 8}))
        >>> _ = envs.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        >>> reward.shape, info["annotation_probs"].shape
        ((4,), (4, 8))
    """


# ---------------------------------------------------------------------------- curation
class _Curation:
    def __init__(self, env: Any, curated: Any, curated_kwargs: dict | None = None,
                 embedding: Any = None, prototypes: str = "auto", temperature: float = 0.05,
                 goals: str | int = "vocabulary", goal_obs: bool = True,
                 terminate_at: float | None = None, goal_text: bool = False,
                 terminal_payment: str = "stay", gamma: float = 0.99) -> None:
        _record(self, curated=curated, curated_kwargs=curated_kwargs, embedding=embedding,
                prototypes=prototypes, temperature=temperature, goals=goals, goal_obs=goal_obs,
                terminate_at=terminate_at, goal_text=goal_text,
                terminal_payment=terminal_payment, gamma=gamma)
        view_env_core(env)  # an ImageView-v0 env underneath, before any work
        numpy_only(env, type(self).__name__)
        self.curated = make_dataset(curated, **check.mapping("curated_kwargs", curated_kwargs))
        space = env.single_observation_space if isinstance(env, VectorEnv) else (
            env.observation_space)
        view_space = space["view"] if isinstance(space, spaces.Dict) else space
        scorer = curation_scorer(self.curated, tuple(view_space.shape[1:]), embedding,
                                 prototypes, temperature)
        super().__init__(env, scorer, goals=goals, goal_obs=goal_obs,
                         terminate_at=terminate_at, goal_text=goal_text,
                         terminal_payment=terminal_payment, gamma=gamma)


class CurationReward(_Curation, AnnotationReward):
    """Pays how much the view looks like a curated image (single env).

    The vocabulary is a curated image set: ``curated`` is anything
    :func:`~imgmdp_env.datasets.make_dataset` accepts (e.g. ``"fashion"``, single centred
    items, or an :class:`ImageDataset`), with ``curated_kwargs``. ``p(l | view)`` is a softmax
    at ``temperature`` over cosine similarities between the view's ``embedding`` and the
    curated images' (see :func:`curation_scorer`: ``prototypes="auto"`` makes each labelled
    class one annotation, a soft nearest neighbour over its images; else each image is one).
    The default embedding, :class:`EdgeThumbnail`, needs no training and is weak: it rewards
    framing an object the way the curated items are framed, not recognising it. Goals default
    to ``"vocabulary"``; ``"image"`` works when the env dataset's class names match the
    prototypes' (e.g. ``"fashion-scenes"`` vs ``"fashion"``). Other arguments: see
    :class:`AnnotationReward`.

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.datasets import make_dataset
        >>> from imgmdp_env.rewards import CurationReward
        >>> curated = make_dataset("scenes", n=6, size=64, seed=1)
        >>> env = CurationReward(gym.make("ImageView-v0", dataset_kwargs={"n": 8}), curated)
        >>> obs, info = env.reset(seed=0)
        >>> round(float(info["annotation_probs"].sum()), 4)  # a softmax over the prototypes
        1.0
    """


class VectorCurationReward(_Curation, VectorAnnotationReward):
    """:class:`CurationReward` on the vector env (see :class:`VectorAnnotationReward`).

    Example::

        >>> import gymnasium as gym, imgmdp_env
        >>> from imgmdp_env.datasets import make_dataset
        >>> from imgmdp_env.rewards import VectorCurationReward
        >>> envs = gym.make_vec("ImageView-v0", num_envs=2, dataset_kwargs={"n": 8})
        >>> envs = VectorCurationReward(envs, make_dataset("scenes", n=6, size=64, seed=1))
        >>> obs, info = envs.reset(seed=0)
        >>> obs["goal"].shape
        (2,)
    """
