"""Find the object: success rate and return on held-out images, for a random policy,
value-guided search with zero RL steps, and PPO from scratch / with a pretrained encoder.

The task: an episode starts at a random view of a test image with a goal object class (one of
the image's own objects); the reward is the ground-truth visibility of the goal
(``ObjectVisibilityScorer``: 1 when the whole object is in view and fills >= half of it);
success = visibility >= ``--threshold`` at some step within ``--horizon`` steps. Every policy is
evaluated on the same episodes (same images, start views and goals: one seeded reset of
``--eval-envs`` sub-envs per seed).

Images (``agents.infra.sources``): ``--dataset scenes`` (default) or ``fashion-scenes``, generated:
test-split scenes, goal crops of ``val`` scenes (fashion-scenes: ``train``), PPO on ``train``
scenes; or any images with object boxes: a folder with its COCO ``--instances`` (the episodes
start in its ``--holdout`` test split, at most ``--test-images`` of those with an object; the
goal crops and PPO's images come from the rest), optionally with a separate
``--test-dataset`` and ``--test-instances`` (then the whole ``--dataset`` is the rest).

Policies (one JSON per (dataset, policy, seed) cell under ``--out``; a rerun skips finished
cells whose settings match, so the benchmark resumes cell by cell):

- ``oracle``: moves straight toward 1.4 x the goal object's true box (the ceiling: privileged).
- ``random``: uniform actions in ``Box(-1, 1, (4,))``.
- ``grid-random``: uniform over the search's candidate moves (the search without the value).
  With ``--inside`` (the default) the candidate moves of ``grid-random``, ``search*`` and
  ``value-ranking*`` are moved to keep the view inside the image (``ValueSearch(inside=True)``);
  ``--no-inside`` asks the moves as they are, which mostly leave the image.
- ``search``: :class:`agents.evaluation.search.ValueSearch` (greedy over the ``--candidates``
  moves) on ``Q_AB`` of ``--checkpoint``; no RL at all. The goals (:func:`search_goals`): for
  a SimCLR run, object crops of ``--curated-images`` images that are never test images
  (``agents.infra.sources.goal_images``) grouped by class; for a CLIP run, captions naming
  each class as the dataset's captions do (``"a sneaker"``), or with ``--goals object`` the
  phrase of the image's own caption that names the goal object (``"a red circle"``: on
  ``scenes`` the class captions name a shape in any colour, which a short CLIP run does not
  learn; its caption names one object).
- ``search-softmax``: the same, sampling moves with probabilities proportional to ``Q``
  (``policy="softmax"``, temperature 1, untuned).
- ``search-base``: the same with ``--base-checkpoint`` (a ``--ab-weight 0`` run: its decoder
  was never trained, so this is the control of an untrained value head on a trained encoder).
- ``ppo-scratch``, ``ppo-frozen``, ``ppo-finetune``: SB3 PPO on train-split images, the same
  network (the checkpoint's CNN architecture + goal one-hot -> linear) from a random init, or
  from the checkpoint's encoder frozen, or fine-tuned; ``--ppo-steps`` env steps each, evaluated
  at 4 points along training (the curve) on the test episodes.

    python -m studies.find_object --checkpoint /tmp/fo_runs/ab_s1           # all but the control
    python -m studies.find_object --checkpoint /tmp/fo_runs/ab_s1 \
        --base-checkpoint /tmp/fo_runs/base_s1 --only search-base value-ranking-base
    python -m studies.find_object --checkpoint ... --only random search --seeds 0
    python -m studies.find_object --checkpoint ... --dataset path/to/images \
        --instances path/to/instances.json --only random search   # any COCO-style folder
    python -m studies.find_object --checkpoint ... --dataset train2017/ \
        --instances instances_train2017.json --test-dataset val2017/ \
        --test-instances instances_val2017.json

A folder's cells are named ``<folder name>-<hash of its source flags>_<policy>_s<seed>.json``
and record those flags in their settings.

``value-ranking`` (and ``-base``) is a diagnostic, not a policy: over the candidate moves of
each test start view, the rank correlation of ``Q_AB(goal | x, a)`` with the goal's true
visibility in the box reached, and the true visibility of the greedy pick beside the average
and the best move's. Results and the commands of the checkpoints: docs/results.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.infra.arg_checks import check_object_args
from agents.infra.sources import add_object_flags, object_env, source_kwargs
from imgmdp_env.datasets import source_kind
from imgmdp_env.rewards import VectorCaptionMatchReward
from studies._cells import ROOT, code_version, load_cell, machine, save_cell

POLICIES = ("oracle", "random", "grid-random", "search", "search-softmax", "search-base",
            "ppo-scratch", "ppo-frozen", "ppo-finetune", "value-ranking", "value-ranking-base")
RANKING = ("value-ranking", "value-ranking-base")


def _once(a, key: tuple, make):
    """``make()``, kept on ``a`` under ``key``: a folder is read once per split, not per cell."""
    loaded = vars(a).setdefault("_loaded", {})
    if key not in loaded:
        loaded[key] = make()
    return loaded[key]


def env_kwargs(a, split: str, n: int) -> dict:
    """ImageView-v0's kwargs for ``n`` images of ``split``: a named dataset by name (as ever),
    any other source loaded once (``agents.infra.sources.object_env``)."""
    source = _once(a, ("env", split, n), lambda: object_env(a, split, n, a.scene_size))
    return dict(**source, view_size=a.view_size, max_episode_steps=a.horizon)


def dataset_label(a) -> str:
    """The dataset's part of a cell id: a named dataset's name; else the folder (or shard)
    name and a hash of the source flags, so two sources never share a cell file."""
    if source_kind(a.dataset) == "named":
        return a.dataset
    stem = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(a.dataset.rstrip("/\\")).name).strip("-.")
    spec = json.dumps([str(Path(a.dataset).resolve()), source_kwargs(a, a.dataset)],
                      sort_keys=True, default=str)
    return f"{stem or 'images'}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def eval_envs(a):
    """The test episodes: ``eval_envs`` sub-envs, one episode each of ``horizon`` steps."""
    envs = gym.make_vec("ImageView-v0", num_envs=a.eval_envs,
                        **env_kwargs(a, "test", a.test_images))
    return VectorCaptionMatchReward(envs, goals="image")


def evaluate(a, seed: int, policy) -> dict:
    """``policy(obs, info) -> actions`` over the test episodes of ``seed``: success rate (goal
    visibility >= threshold at some step), mean return (sum of visibilities over the horizon),
    and the standard error of the success rate."""
    envs = eval_envs(a)
    obs, info = envs.reset(seed=10_000 + seed)
    best = np.zeros(a.eval_envs)
    ret = np.zeros(a.eval_envs)
    for _ in range(a.horizon):
        obs, reward, _, _, info = envs.step(policy(obs, info))
        ret += reward
        best = np.maximum(best, reward)
    success = best >= a.threshold
    return {"success": float(success.mean()),
            "success_se": float(success.std() / np.sqrt(len(success))),
            "success_at_0.8": float((best >= 0.8).mean()),
            "mean_return": float(ret.mean()), "mean_best_visibility": float(best.mean())}


def oracle_policy(envs):
    """Actions toward 1.4 x the first goal-class object's box (ground truth: the ceiling)."""
    from imgmdp_env.actions import relative_to_action
    from imgmdp_env.views import relative_box

    core = envs.unwrapped
    ds = core.dataset

    def act(obs, info):
        target = np.stack([ds.object_boxes[i][ds.object_labels[i] == g][0]
                           for i, g in zip(info["image_index"], obs["goal"], strict=True)])
        target[:, 2:] *= 1.4
        rel = relative_box(torch.from_numpy(info["box"]), torch.from_numpy(target))
        return relative_to_action(rel, core.max_pan, core.max_zoom).numpy()

    return act


def search_goals(a, agent, envs):
    """The goal annotations of ``agent``'s search for the env's episodes, and ``pick(obs, info)
    -> (N,) int64`` the goal id of each episode. SimCLR: object crops of ``--curated-images``
    images that are never test images, summed per class (``agents.infra.sources.goal_images``).
    CLIP, ``--goals class``: captions that name each class as the dataset's captions do
    (:func:`agents.evaluation.search.class_caption_goals`); ``--goals object``: the phrase of
    the image's own caption that names the episode's goal object (the first of its class, as
    :func:`oracle_policy` takes: ``"a red circle"``;
    :func:`agents.evaluation.search.episode_object_goals`)."""
    from agents.evaluation.search import (
        class_caption_goals,
        curated_goals,
        episode_class_goals,
        episode_object_goals,
    )

    if a.goals == "object":
        try:
            return episode_object_goals(agent, envs)
        except ValueError as err:
            raise SystemExit(f"--goals object: {err}") from None
    if agent.cfg.base == "clip":
        goals = class_caption_goals(agent, list(envs.vocabulary), a.dataset)
    else:
        from agents.evaluation.learned_rewards import object_crops
        from agents.infra.sources import goal_images

        images = _once(a, ("goals",), lambda: goal_images(a, a.curated_images, a.scene_size))
        goals = curated_goals(agent, object_crops(images, agent.encoder.view_size),
                              per_class=a.per_class)
    try:
        return goals, episode_class_goals(goals, envs)
    except ValueError as err:
        raise SystemExit(f"{err}: no goal crops of them in {a.curated_images} images of "
                         f"{a.dataset}; raise --curated-images") from None


def search_policy(a, checkpoint: str, envs_probe, policy: str = "greedy", seed: int = 0):
    from agents.evaluation.search import GoalValue, ValueSearch
    from agents.method.ab import load_agent

    agent = load_agent(checkpoint).eval()
    goals, pick = search_goals(a, agent, envs_probe)
    search = ValueSearch(GoalValue(agent, goals), envs_probe, candidates=a.candidates,
                         policy=policy, seed=seed, inside=a.inside)

    def act(obs, info):
        return search.act(obs["view"], pick(obs, info), boxes=info["box"])

    act.search, act.pick = search, pick
    return act


def _spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of each row of ``x`` and ``y`` ``(N, K)`` -> ``(N,)``
    (tied values share their mean rank, as scipy.stats.spearmanr)."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        below = (v[:, :, None] > v[:, None, :]).sum(-1)
        tied = (v[:, :, None] == v[:, None, :]).sum(-1)
        return below + (tied + 1) / 2

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(1, keepdim=True), ry - ry.mean(1, keepdim=True)
    return (rx * ry).sum(1) / (rx.norm(dim=1) * ry.norm(dim=1)).clamp(min=1e-12)


def goal_class_accuracy(dataset, value_fn, limit: int = 1024,
                        object_ids: list[np.ndarray] | None = None) -> float:
    """How often the goals' base head names the goal of a whole test object: the share of
    the first ``limit`` objects of ``dataset``, each cropped at 1.4 x its box as the goal crops
    are, whose most probable goal (:meth:`agents.evaluation.search.GoalValue.view_probs`) is
    their own class, or with ``object_ids`` (per image, each object's goal id: ``--goals
    object``) their own caption phrase (chance: 1 / the number of goals). Near chance,
    ``p(goal | view)`` cannot tell the goal object from the others, and neither can any
    ``Q_AB`` trained to predict it."""
    from agents.evaluation.learned_rewards import object_crops

    crops = object_crops(dataset, value_fn.view_size)
    if object_ids is not None:
        target = np.concatenate(object_ids)
    else:
        vocab = list(value_fn.vocabulary)
        goal_of = np.array([vocab.index(c) if c in vocab else -1 for c in dataset.class_names])
        target = goal_of[crops.labels]
    keep = np.flatnonzero(target >= 0)[:limit]
    if not len(keep):
        return float("nan")
    views = torch.from_numpy(np.stack([crops.images[i] for i in keep])).permute(0, 3, 1, 2)
    pick = value_fn.view_probs(views.contiguous()).argmax(1).numpy()
    return float((pick == target[keep]).mean())


def value_ranking(a, checkpoint: str, seed: int) -> dict:
    """Does ``Q_AB`` rank the candidate moves of the test start views by the goal's true
    visibility in the box each reaches? Per view: the rank correlation over the candidates,
    and the true visibility of the greedy pick beside the candidates' mean and best. Beside
    them the same for the oracle of the value, the base head's ``p(goal | x')`` of each
    reached view rendered (``oracle_*``: what ``Q_AB`` is trained to predict; if it does not
    rank moves by visibility, no value function of these goals can), the rank correlation of
    ``Q_AB`` with it, the share of candidate boxes that leave the image, and
    :func:`goal_class_accuracy`."""
    from agents.evaluation.search import ValueSearch, object_captions
    from imgmdp_env.actions import action_to_relative
    from imgmdp_env.scorers import ObjectVisibilityScorer
    from imgmdp_env.views import apply_relative, clamp_boxes, render_views

    envs = eval_envs(a)
    policy = search_policy(a, checkpoint, envs)  # builds the goals as the search cell does
    search: ValueSearch = policy.search
    obs, info = envs.reset(seed=10_000 + seed)
    goal = policy.pick(obs, info)
    values, acts = search.scores(obs["view"], goal, boxes=info["box"])
    core = envs.unwrapped
    b = torch.from_numpy(info["box"])[:, None]
    reached = clamp_boxes(apply_relative(b, action_to_relative(acts, core.max_pan,
                                                                core.max_zoom)),
                          core.min_size, core.margin)
    n, k = values.shape
    vis = ObjectVisibilityScorer(core.dataset).visibility(
        torch.from_numpy(info["image_index"]).repeat_interleave(k), reached.reshape(-1, 4))
    true = vis.reshape(n, k, -1)[torch.arange(n), :, torch.from_numpy(obs["goal"])]
    views2 = render_views(core.bank, torch.from_numpy(info["image_index"]).repeat_interleave(k),
                          reached.reshape(-1, 4), search.value_fn.view_size)
    oracle = search.value_fn.view_prob(views2, goal.repeat(k)).reshape(n, k)
    lo, hi = reached[..., :2] - reached[..., 2:] / 2, reached[..., :2] + reached[..., 2:] / 2
    outside = ((lo < -1e-6) | (hi > 1 + 1e-6)).any(-1)
    varied = true.std(1) > 1e-6  # views where the moves differ at all
    rho = _spearman(values[varied], true[varied])
    rho_oracle = _spearman(oracle[varied], true[varied])
    return {"rank_corr_mean": float(rho.mean()), "rank_corr_median": float(rho.median()),
            "views": int(varied.sum()),
            "oracle_rank_corr_mean": float(rho_oracle.mean()),
            "q_oracle_rank_corr_mean": float(_spearman(values, oracle).mean()),
            "candidates_leaving_image": float(outside.float().mean()),
            "true_vis_oracle_pick": float(true[torch.arange(n), oracle.argmax(1)].mean()),
            "goal_class_accuracy": goal_class_accuracy(
                core.dataset, search.value_fn,
                object_ids=object_captions(core.dataset)[1] if a.goals == "object" else None),
            "true_vis_greedy_pick": float(true[torch.arange(n), values.argmax(1)].mean()),
            "true_vis_mean_candidate": float(true.mean()),
            "true_vis_best_candidate": float(true.max(1).values.mean())}


def ppo_cell(a, seed: int, mode: str) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.evaluation.sb3_extractor import PretrainedViewExtractor
    from imgmdp_env.sb3 import make_sb3_env

    torch.manual_seed(seed)
    venv = VecMonitor(make_sb3_env(
        num_envs=a.ppo_envs, **env_kwargs(a, "train", a.train_images),
        wrappers=[lambda e: VectorCaptionMatchReward(e, goals="image")]))
    if mode == "scratch":
        from agents.method.ab import load_encoder
        from agents.method.networks import make_encoder

        config = dict(load_encoder(a.checkpoint).config)
        extractor = dict(encoder=make_encoder(**config), freeze=False)
    else:
        extractor = dict(checkpoint=a.checkpoint, freeze=mode == "frozen")
    model = PPO("MultiInputPolicy", venv, n_steps=a.ppo_n_steps, batch_size=a.ppo_batch,
                n_epochs=a.ppo_epochs, learning_rate=a.ppo_lr, ent_coef=0.01, gamma=0.95,
                seed=seed, device="cpu", verbose=0,
                policy_kwargs=dict(features_extractor_class=PretrainedViewExtractor,
                                   features_extractor_kwargs=dict(features_dim=128,
                                                                  **extractor)))
    curve = []
    rollout = a.ppo_envs * a.ppo_n_steps
    per = a.ppo_steps // 4
    if per % rollout:
        raise SystemExit(f"--ppo-steps ({a.ppo_steps}) must be a multiple of 4 x ppo_envs x "
                         f"ppo_n_steps = {4 * rollout} (4 curve points of whole rollouts)")
    for _ in range(4):
        model.learn(per, reset_num_timesteps=False)
        res = evaluate(a, seed, lambda obs, info: model.predict(obs, deterministic=False)[0])
        curve.append({"env_steps": int(model.num_timesteps), **res})
    return {**curve[-1], "curve": curve}


def run_cell(a, policy: str, seed: int, out: Path) -> dict | None:
    settings = {k: getattr(a, k) for k in ("dataset", "scene_size", "view_size", "horizon",
                                           "threshold", "eval_envs", "test_images")}
    if policy == "grid-random":
        settings.update(candidates=a.candidates)
    if a.inside and (policy == "grid-random" or policy.startswith("search")
                     or policy in RANKING):
        settings.update(inside=True)  # only when set: --no-inside matches earlier cells
    if policy.startswith("search") or policy in RANKING:
        ckpt = a.base_checkpoint if policy.endswith("-base") else a.checkpoint
        if not ckpt:
            return None
        settings.update(checkpoint=ckpt, candidates=a.candidates, curated_images=a.curated_images,
                        per_class=a.per_class)
        if a.goals != "class":
            settings.update(goals=a.goals)  # only when set: earlier cells keep matching
    if policy.startswith("ppo"):
        settings.update({k: getattr(a, k) for k in (
            "checkpoint", "ppo_steps", "ppo_envs", "ppo_n_steps", "ppo_batch", "ppo_epochs",
            "ppo_lr", "train_images")})
    source = source_kwargs(a, a.dataset)  # named datasets: none (their cells are unchanged)
    if source:
        settings.update(source=source)
    cell_id = f"{dataset_label(a)}_{policy}_s{seed}"
    cell = load_cell(out, cell_id)
    if cell is not None:
        if cell.get("settings") == settings:
            return cell
        print(f"{cell_id}.json: settings changed, measuring again")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    if policy == "random":
        space = eval_envs(a).action_space
        space.seed(seed)
        res = evaluate(a, seed, lambda obs, info: space.sample())
    elif policy == "oracle":
        envs = eval_envs(a)
        res = evaluate(a, seed, oracle_policy(envs))
    elif policy == "grid-random":
        from agents.evaluation.search import ValueSearch

        uniform = ValueSearch(lambda v, rel, g: torch.ones(rel.shape[:2]), eval_envs(a),
                              candidates=a.candidates, policy="softmax", seed=seed,
                              inside=a.inside)
        res = evaluate(a, seed, lambda obs, info: uniform.act(obs["view"], obs["goal"],
                                                              boxes=info["box"]))
    elif policy in RANKING:
        res = value_ranking(a, settings["checkpoint"], seed)
    elif policy.startswith("search"):
        mode = "softmax" if policy == "search-softmax" else "greedy"
        res = evaluate(a, seed, search_policy(a, settings["checkpoint"], eval_envs(a), mode,
                                              seed))
    else:
        res = ppo_cell(a, seed, policy.removeprefix("ppo-"))
    cell = {"policy": policy, "seed": seed, **res, "wall_s": round(time.time() - t0, 1),
            "settings": settings, "threads": a.threads, "machine": machine(),
            "code": code_version()}
    save_cell(out, cell_id, cell)
    shown = {k: round(v, 3) for k, v in res.items() if k != "curve"}
    print(f"{policy} seed {seed}: {shown} ({cell['wall_s']:.0f} s)", flush=True)
    return cell


def paired_rows(cells: list[dict]) -> list[str]:
    """Each search policy against each baseline, paired per episode seed (one seed: the same
    episodes for every policy): the mean difference of success and of mean return with its
    95% t interval, ``*`` when outside the noise. Empty when fewer than 2 seeds pair."""
    from studies.representation import paired_difference

    rows = []
    for policy in ("search", "search-softmax"):
        for base in ("random", "grid-random"):
            a = {c["seed"]: c for c in cells if c["policy"] == policy}
            b = {c["seed"]: c for c in cells if c["policy"] == base}
            seeds = sorted(a.keys() & b.keys())
            if len(seeds) < 2:
                continue
            cols = []
            for key in ("success", "mean_return"):
                d, half, sig = paired_difference([a[s][key] for s in seeds],
                                                 [b[s][key] for s in seeds])
                cols.append(f"{d:+.3f} +- {half:.3f}" + ("*" if sig else ""))
            rows.append(f"| {policy} - {base} | {cols[0]} | {cols[1]} | {len(seeds)} |")
    if not rows:
        return []
    return ["", "| paired per episode seed (95% t; * outside the noise) | success | mean return "
            "| seeds |", "|---|---:|---:|---:|", *rows]


def table(cells: list[dict]) -> str:
    thr = cells[0]["settings"]["threshold"] if cells else 0.5
    rows = [f"| policy | RL env steps | success, vis >= {thr} (mean +- sd over seeds) | "
            "success, vis >= 0.8 | mean return | seeds |", "|---|---|---|---|---|---|"]
    for policy in POLICIES:
        cs = [c for c in cells if c["policy"] == policy]
        if not cs or policy in RANKING:
            continue
        s = np.array([c["success"] for c in cs])
        s8 = np.array([c["success_at_0.8"] for c in cs])
        r = np.array([c["mean_return"] for c in cs])
        steps = cs[0]["settings"].get("ppo_steps", 0)
        rows.append(f"| {policy} | {steps} | {s.mean():.3f} +- {s.std():.3f} | "
                    f"{s8.mean():.3f} +- {s8.std():.3f} | {r.mean():.2f} +- {r.std():.2f} | "
                    f"{len(cs)} |")
    rows += paired_rows(cells)
    curves = [c for c in cells if "curve" in c]
    if curves:
        rows += ["", "| policy | " + " | ".join(
            f"success at {p['env_steps']}" for p in curves[0]["curve"]) + " |",
            "|---|" + "---|" * len(curves[0]["curve"])]
        for policy in POLICIES:
            cs = [c for c in curves if c["policy"] == policy]
            if cs:
                m = np.array([[p["success"] for p in c["curve"]] for c in cs])
                rows.append(f"| {policy} | " + " | ".join(
                    f"{mu:.3f} +- {sd:.3f}" for mu, sd in zip(m.mean(0), m.std(0),
                                                               strict=True)) + " |")
    ranking = [c for c in cells if c["policy"] in RANKING]
    if ranking:
        keys = ("rank_corr_mean", "rank_corr_median", "true_vis_greedy_pick",
                "true_vis_mean_candidate", "true_vis_best_candidate")
        if all("oracle_rank_corr_mean" in c for c in ranking):  # cells since the oracle
            keys += ("oracle_rank_corr_mean", "true_vis_oracle_pick", "q_oracle_rank_corr_mean",
                     "candidates_leaving_image", "goal_class_accuracy")
        rows += ["", "| value ranking of the candidate moves | " + " | ".join(keys) + " |",
                 "|---|" + "---|" * len(keys)]
        for policy in RANKING:
            cs = [c for c in ranking if c["policy"] == policy]
            if cs:
                rows.append(f"| {policy} ({len(cs)} seeds) | " + " | ".join(
                    f"{np.mean([c[k] for c in cs]):.3f} +- {np.std([c[k] for c in cs]):.3f}"
                    for k in keys) + " |")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="an AB (SimCLR) run folder / checkpoint")
    p.add_argument("--base-checkpoint", default="", help="its --ab-weight 0 control (optional)")
    add_object_flags(p)
    p.add_argument("--only", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "find_object"))
    p.add_argument("--scene-size", type=int, default=96, help="side of generated scenes")
    p.add_argument("--view-size", type=int, default=64, help="the checkpoint encoder's size")
    p.add_argument("--horizon", type=int, default=20, help="steps per episode")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="visibility that counts as found (0.8 is recorded too)")
    p.add_argument("--eval-envs", type=int, default=128, help="test episodes per seed")
    p.add_argument("--test-images", type=int, default=512,
                   help="test images the episodes start in (at most)")
    p.add_argument("--train-images", type=int, default=1024, help="PPO's training images")
    p.add_argument("--curated-images", type=int, default=128,
                   help="images of the goal crops (scenes: val scenes; a folder: its images "
                        "outside the test split)")
    p.add_argument("--per-class", type=int, default=32, help="goal crops per class")
    p.add_argument("--candidates", default="grid", choices=("discrete", "grid", "random"))
    p.add_argument("--goals", default="class", choices=("class", "object"),
                   help="CLIP search: 'class', captions naming the goal class (scenes: one per "
                        "colour, summed); 'object', the phrase of the image's own caption that "
                        "names the goal object ('a red circle'; captions that name each object "
                        "in order, as the built-in scenes')")
    p.add_argument("--inside", action=argparse.BooleanOptionalAction, default=True,
                   help="search, grid-random and value-ranking: move every candidate box into "
                        "the image (agents.evaluation.search.ValueSearch inside=True; the value "
                        "function "
                        "never saw the out-of-image padding, and 80%% of the asked grid moves "
                        "leave the image). --no-inside: the moves as asked, as before")
    p.add_argument("--ppo-steps", type=int, default=4096)
    p.add_argument("--ppo-envs", type=int, default=16)
    p.add_argument("--ppo-n-steps", type=int, default=64)
    p.add_argument("--ppo-batch", type=int, default=256)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--ppo-lr", type=float, default=3e-4)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    check_object_args(a)
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # seeds outer: an interrupted run has every policy at its first seed(s)
    cells = [c for seed in a.seeds for policy in a.only
             if (c := run_cell(a, policy, seed, out)) is not None]
    print(f"\n{a.dataset}, horizon {a.horizon}, success = visibility >= {a.threshold}, "
          f"{a.eval_envs} test episodes per seed; {time.time() - t0:.0f} s this call, "
          f"{a.threads} thread(s), {machine()}\n")
    print(table(cells))


if __name__ == "__main__":
    main()
