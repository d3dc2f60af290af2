"""Goals of the reward wrappers: which annotation each episode is after, and the scoring of
views against it. The wrappers themselves (single and vector env) are in
:mod:`imgmdp_env.rewards`; :class:`GoalTask` is the part they share: the scorer and its
vocabulary, the goal mode and its draws, the goal observation, the threshold termination, and
the checks of their arguments (:mod:`imgmdp_env.checks`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from imgmdp_env import checks as check
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.env import RESET_OPTIONS
from imgmdp_env.scorers import AnnotationScorer, check_scores, check_vocabulary
from imgmdp_env.wrappers import view_env_core

__all__ = ["GOAL_MODES", "TERMINAL_PAYMENTS", "WRAPPER_RESET_OPTIONS", "image_annotations"]

WRAPPER_RESET_OPTIONS = (*RESET_OPTIONS, "goal")  # what a reward wrapper's reset() reads
GOAL_MODES = ("image", "vocabulary")
TERMINAL_PAYMENTS = ("stay", "none")  # what a success termination (terminate_at) pays


def image_annotations(dataset: ImageDataset, vocabulary: list[str]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Which vocabulary entries each image carries: its object class names, its label's class
    name and its caption, matched by exact string.

    Returns ``ids`` ``(N, M)`` int64 (vocabulary indices, padded with -1) and ``counts`` ``(N,)``.
    """
    index = {name: i for i, name in enumerate(vocabulary)}
    names = dataset.class_names or []
    rows = []
    for i in range(len(dataset)):
        own = []
        if dataset.object_labels is not None:
            own += [names[c] for c in np.asarray(dataset.object_labels[i]).tolist()
                    if 0 <= c < len(names)]
        if dataset.labels is not None and 0 <= int(dataset.labels[i]) < len(names):
            own.append(names[int(dataset.labels[i])])
        if dataset.captions is not None:
            own.append(dataset.captions[i])
        rows.append(sorted({index[a] for a in own if a in index}))
    counts = np.array([len(r) for r in rows], np.int64)
    ids = np.full((len(rows), max(1, int(counts.max()))), -1, np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, counts


class GoalTask:
    """What the single and vector wrappers share: scorer, vocabulary, goals, observations."""

    def __init__(self, env: Any, scorer: AnnotationScorer, goals: str | int, goal_obs: bool,
                 terminate_at: float | None, goal_text: bool, owner: str, *,
                 terminal_payment: str = "stay", gamma: float = 0.99) -> None:
        if not isinstance(scorer, AnnotationScorer):
            raise TypeError(f"{owner}: scorer {type(scorer).__name__} is not an AnnotationScorer "
                            "(a callable (views, image_idx, boxes) -> (B, L) with a vocabulary)")
        self.scorer, self.owner = scorer, owner
        self.vocabulary = check_vocabulary(scorer.vocabulary, type(scorer).__name__)
        self.names = np.array(self.vocabulary, dtype=object)
        self.index = {name: i for i, name in enumerate(self.vocabulary)}
        if terminate_at is not None:
            terminate_at = check.number("terminate_at", terminate_at, 0, 1, lo_open=True)
        goal_obs, goal_text = check.flag("goal_obs", goal_obs), check.flag("goal_text", goal_text)
        self.terminal_payment = check.choice("terminal_payment", terminal_payment,
                                             TERMINAL_PAYMENTS)
        self.gamma = check.number("gamma", gamma, 0, 1, hi_open=True)
        self.terminate_at, self.goal_obs, self.goal_text = terminate_at, goal_obs, goal_text
        if isinstance(goals, str) and goals in GOAL_MODES:
            self.mode, self.fixed = goals, None
        else:
            self.mode, self.fixed = "fixed", self.resolve(goals)
        if self.mode == "image":
            dataset = view_env_core(env).dataset
            self.ids, self.counts = image_annotations(dataset, self.vocabulary)
            if self.counts.sum() == 0:
                raise ValueError(f"{owner}: goals='image' but no image of dataset "
                                 f"{dataset.name!r} carries an annotation of the vocabulary "
                                 f"{self.vocabulary[:8]}...; use goals='vocabulary' or a name")
        self.rng = np.random.default_rng()

    def resolve(self, goal: Any) -> int:
        """An annotation name or id -> its id; unknown names list the valid ones."""
        if isinstance(goal, str):
            if goal not in self.index:
                shown = self.vocabulary if len(self.vocabulary) <= 40 else (
                    self.vocabulary[:40] + [f"... ({len(self.vocabulary)} in all)"])
                raise ValueError(f"{self.owner}: unknown goal {goal!r}; valid goals are the "
                                 f"sampling modes {list(GOAL_MODES)} or one of {shown}")
            return self.index[goal]
        if isinstance(goal, bool | np.bool_) or not isinstance(goal, int | np.integer):
            raise TypeError(f"{self.owner}: goal {goal!r} must be an annotation name (str) or "
                            f"an integer id in [0, {len(self.vocabulary)}), not "
                            f"{type(goal).__name__}")
        if 0 <= goal < len(self.vocabulary):
            return int(goal)
        raise ValueError(f"{self.owner}: goal {goal!r} must be an annotation name or an id in "
                         f"[0, {len(self.vocabulary)})")

    def reset_args(self, seed: Any, options: Any) -> tuple[int | None, dict]:
        """Check a wrapper's ``reset(seed, options)`` (seeding the goal draws) before any
        reset: ``seed`` an integer in ``[0, 2**64)`` or None, ``options`` a dict of
        :data:`WRAPPER_RESET_OPTIONS`."""
        seed = check.seed("seed", seed)
        options = check.mapping("options", options)
        check.check_keys(f"{self.owner}.reset options", options, WRAPPER_RESET_OPTIONS)
        if seed is not None:
            self.seed(seed)
        return seed, options

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng([int(seed), 0x60A1])

    def draw(self, image_idx: np.ndarray) -> np.ndarray:
        """One goal per image index ``(k,)`` -> ``(k,)`` int64, batched."""
        k = len(image_idx)
        if self.mode == "fixed":
            return np.full(k, self.fixed, np.int64)
        uniform = self.rng.integers(len(self.vocabulary), size=k)
        if self.mode == "vocabulary":
            return uniform
        c = self.counts[image_idx]
        j = np.minimum((self.rng.random(k) * c).astype(np.int64), np.maximum(c - 1, 0))
        return np.where(c > 0, self.ids[image_idx, j], uniform)

    def goals_from_option(self, goal: Any, n: int) -> np.ndarray:
        if isinstance(goal, str | int | np.integer):
            return np.full(n, self.resolve(goal), np.int64)
        if not isinstance(goal, Iterable) or isinstance(goal, bytes | dict):
            raise TypeError(f"{self.owner}: options['goal'] ({goal!r:.80}) must be one "
                            "annotation name or id, or a list of them (one per sub-env)")
        goal = list(goal.tolist() if isinstance(goal, np.ndarray) else goal)
        if len(goal) != n:
            raise ValueError(f"{self.owner}: options['goal'] has {len(goal)} entries for {n} "
                             "sub-envs; pass one goal or one per sub-env")
        return np.array([self.resolve(g) for g in goal], np.int64)

    def score(self, views: np.ndarray, image_idx: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """views ``(B, 3, h, w)`` uint8, image_idx ``(B,)``, boxes ``(B, 4)`` -> ``(B, L)``."""
        b = len(views)
        if b == 0:
            return np.zeros((0, len(self.vocabulary)), np.float32)
        out = self.scorer(torch.from_numpy(views), torch.from_numpy(image_idx),
                          torch.from_numpy(boxes))
        return check_scores(out, self.scorer, b, len(self.vocabulary)).numpy()

    def reached(self, p_goal: np.ndarray) -> np.ndarray:
        if self.terminate_at is None:
            return np.zeros(np.shape(p_goal), bool)
        return np.asarray(p_goal >= self.terminate_at)

    def pay(self, p_goal: Any, hit: Any) -> np.ndarray:
        """The reward of a step: ``p(goal | view)``, except on a success step (``hit``: the
        step that ``terminate_at`` ends) with ``terminal_payment="stay"``, which pays
        ``p / (1 - gamma)`` in all: the discounted return of staying at that view forever
        (``p`` now plus ``gamma p / (1 - gamma)`` for the steps it no longer gets). Truncation
        pays nothing extra. p_goal, hit: ``(N,)`` (or scalars) -> float64 of the same shape."""
        p = np.asarray(p_goal, np.float64)
        if self.terminal_payment == "none":
            return p
        return np.where(hit, p / (1.0 - self.gamma), p)

    def observation_space(self, inner: spaces.Space) -> spaces.Space:
        if not self.goal_obs:
            return inner
        goal = spaces.Discrete(len(self.vocabulary))
        if isinstance(inner, spaces.Dict):
            return spaces.Dict({**inner.spaces, "goal": goal})
        return spaces.Dict({"view": inner, "goal": goal})

    def observe(self, obs: Any, goal: Any) -> Any:
        if not self.goal_obs:
            return obs
        goal = np.array(goal, np.int64) if np.ndim(goal) else np.int64(goal)  # batch / single
        return {**obs, "goal": goal} if isinstance(obs, dict) else {"view": obs, "goal": goal}


def obs_views(obs: Any, owner: str) -> np.ndarray:
    v = np.asarray(obs["view"] if isinstance(obs, dict) else obs)
    if v.dtype != np.uint8 or v.ndim < 3 or v.shape[-3] != 3:
        raise TypeError(f"{owner} reads uint8 (3, h, w) views from the observation, got "
                        f"{v.dtype} {v.shape}: wrap ImageView-v0 before observation wrappers")
    return v


def info_state(info: dict, owner: str) -> tuple[np.ndarray, np.ndarray]:
    if "image_index" not in info or "box" not in info:
        raise KeyError(f"{owner} needs info['image_index'] and info['box'] from ImageView-v0; "
                       f"got keys {sorted(info)}: put reward wrappers directly over the env")
    return (np.array(info["image_index"], np.int64, ndmin=1),
            np.array(info["box"], np.float32, ndmin=2))
