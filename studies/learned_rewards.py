"""Learned rewards vs the truth: how well does a trained checkpoint's reward track the true
visibility of the goal object, beside the env's untrained default reward?

Over ``--views`` random views of the test images (``imgmdp_env.views.sample_boxes``, the
agent's behaviour policy, seeded by ``--seed``) and, per view, every goal class among its
image's own objects, each pair ``(view, goal)`` gets

- its true visibility: :class:`imgmdp_env.scorers.ObjectVisibilityScorer` (1 when the whole
  object is in view and fills >= half of it);
- each scorer's reward ``p(goal | view)``, every scorer an
  :class:`~imgmdp_env.scorers.AnnotationScorer` over the same goal crops (object crops of
  ``--curated-images`` images that are never test images, ``agents.infra.sources.goal_images``,
  grouped by class, at most ``--per-class`` each; an AB_CLIP run's goals are captions):

  - ``checkpoint (target)`` / ``(online)``:
    :func:`agents.evaluation.learned_rewards.learned_curation_scorer` of ``--checkpoint`` (a
    SimCLR or DINO ``train_value.py`` run), on its EMA target network (the default: what
    ``Q_AB`` is taught to predict) and on its online network; for an AB_CLIP run
    :func:`~agents.evaluation.learned_rewards.learned_caption_scorer` over captions that name
    each class (``"a sneaker"``; on ``scenes`` one per colour, summed per class: the goals of
    ``studies.find_object``), not crops;
  - ``random-init twin (target)`` / ``(online)``: the same scorer of ``--checkpoint``'s
    architecture with fresh weights (``agents.method.ab.random_twin_agent``): what training
    added;
  - ``base-checkpoint (target)`` / ``(online)``: the same for ``--base-checkpoint`` (a
    ``--ab-weight 0`` run: the control, its encoder trained without annotation bootstrapping);
  - ``untrained (EdgeThumbnail)``: :func:`imgmdp_env.scorers.curation_scorer` with its default,
    training-free embedding and temperature (the env's default curation reward), on the same
    crops and views.

Per scorer: the ROC AUC of the reward for separating "the goal is visible" (visibility >=
``--threshold``) from "not" (:func:`roc_auc`: Mann-Whitney U, ties counted half) and Spearman's
rank correlation of the reward with the visibility (``studies.find_object._spearman``), pooled
over all pairs, with the counts of positives and negatives::

    python -m studies.learned_rewards --checkpoint /tmp/runs/ab_s1 \
        --base-checkpoint /tmp/runs/ab0_s1 --views 2000 --out /tmp/learned_rewards
    python -m studies.learned_rewards --checkpoint ... --dataset path/to/images \
        --instances path/to/instances.json          # any COCO-style folder (find_object's flags)

``--out``: a folder (the cell is ``<dataset label>_learned-rewards_s<seed>.json``, named as
find_object names its cells) or a ``.json`` file (the cell itself). A rerun whose settings
match the cell's (the checkpoint files' size and modification time included, so a checkpoint
trained further is measured again) prints the recorded table without measuring.

Cost: one pass of each network's encoder over the views; Spearman's ranks are pairwise, so
memory grows as the square of the pairs (~2.3 per scenes view: 4000 views ~ 170 MB).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agents.infra.arg_checks import check_object_args
from agents.infra.sources import add_object_flags, source_kwargs
from studies._cells import ROOT, code_version, load_cell, machine, save_cell
from studies.find_object import _spearman, dataset_label

NETWORKS = ("target", "online")
TWIN = "random-init twin"  # --checkpoint's architecture with fresh weights
UNTRAINED = "untrained (EdgeThumbnail)"


def roc_auc(scores, positive) -> float:
    """ROC AUC of ``scores`` for separating ``positive`` from the rest: the Mann-Whitney U
    statistic over ``n_pos * n_neg``, i.e. the probability that a random positive scores above
    a random negative, ties counted half. scores: ``(M,)`` numbers; positive: ``(M,)`` bools.
    Ranks with ties averaged, so O(M log M). NaN when either class is empty."""
    s = np.asarray(scores, np.float64).reshape(-1)
    pos = np.asarray(positive, bool).reshape(-1)
    if s.shape != pos.shape:
        raise ValueError(f"roc_auc: {s.shape[0]} scores but {pos.shape[0]} labels")
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    top = np.cumsum(counts)  # 1-based rank of each distinct value's last member
    ranks = (top - (counts - 1) / 2)[inverse]  # tied values share their mean rank
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _fingerprint(path: str) -> dict:
    """The checkpoint file's path, size and modification time: a run trained further (or
    retrained) in the same folder does not match a recorded cell."""
    from agents.infra.checkpoint import resolve

    f = resolve(path)
    try:
        st = f.stat()
    except OSError as err:
        raise SystemExit(f"checkpoint {path!r}: {err}") from None
    return {"path": str(f.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def build_scorers(a, goal_source) -> list[tuple[str, object, int]]:
    """``[(name, scorer, view size)]``: the learned scorers of each checkpoint (both networks)
    and the untrained default curation scorer. A SimCLR or DINO checkpoint's goals are object
    crops of ``goal_source``; an AB_CLIP checkpoint's are captions naming each of its classes
    (:func:`agents.evaluation.search.class_captions`, summed per class)."""
    from agents.evaluation.learned_rewards import (
        learned_caption_scorer,
        learned_curation_scorer,
        object_crops,
    )
    from agents.evaluation.search import class_captions
    from agents.method.ab import load_agent, random_twin_agent
    from imgmdp_env.scorers import curation_scorer

    scorers, first_size, crops = [], None, {}
    names = list(goal_source.class_names)
    agents = [(label, load_agent(ckpt).eval()) for label, ckpt in
              (("checkpoint", a.checkpoint), ("base-checkpoint", a.base_checkpoint)) if ckpt]
    agents.append((TWIN, random_twin_agent(agents[0][1])))
    for label, agent in agents:
        size = agent.encoder.view_size
        first_size = first_size or size
        for network in NETWORKS:
            with torch.no_grad():  # the temperature is read off a parameter
                if agent.cfg.base == "clip":
                    captions, groups = class_captions(names, a.dataset)
                    scorer = learned_caption_scorer(agent, captions, network, names=names,
                                                    groups=groups)
                else:
                    if size not in crops:  # each view size's crops rendered once
                        crops[size] = object_crops(goal_source, size)
                    scorer = learned_curation_scorer(agent, crops[size], per_class=a.per_class,
                                                     network=network)
            scorers.append((f"{label} ({network})", scorer, size))
    # the env's default curation reward, on the views the checkpoint's env would render
    if first_size not in crops:  # CLIP runs alone: no crops rendered yet
        crops[first_size] = object_crops(goal_source, first_size)
    scorers.append((UNTRAINED, curation_scorer(crops[first_size], first_size,
                                               per_class=a.per_class),
                    first_size))
    return scorers


def sample_views(ds, n: int, seed: int, scale: tuple[float, float]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded random views of ``ds``: image indices ``(n,)`` (uniform) and cxcywh boxes
    ``(n, 4)`` from :func:`imgmdp_env.views.sample_boxes` at each image's own aspect."""
    from imgmdp_env.views import sample_boxes

    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(ds), (n,), generator=g)
    aspect = torch.tensor([im.shape[1] / im.shape[0] for im in ds.images], dtype=torch.float32)
    return idx, sample_boxes(n, scale=scale, image_aspect=aspect[idx], generator=g)


def measure(a) -> dict:
    """The figures of one cell: per scorer AUC, Spearman, counts and mean rewards."""
    from agents.infra.sources import goal_images, object_split
    from imgmdp_env.scorers import AnnotationScorer, ObjectVisibilityScorer, check_scores
    from imgmdp_env.views import render_views

    ds = object_split(a, "test", a.test_images, a.scene_size)
    scorers = build_scorers(a, goal_images(a, a.curated_images, a.scene_size))
    idx, boxes = sample_views(ds, a.views, a.seed, tuple(a.scale))
    truth = ObjectVisibilityScorer(ds, alpha=a.alpha)
    # every (view, goal class among its image's objects) pair
    pair_view, pair_goal = [], []
    for v, i in enumerate(idx.tolist()):
        for c in np.unique(np.asarray(ds.object_labels[i], np.int64)).tolist():
            pair_view.append(v)
            pair_goal.append(c)
    pv, pg = torch.tensor(pair_view, dtype=torch.int64), torch.tensor(pair_goal, dtype=torch.int64)
    if len(pv) == 0:
        raise SystemExit("no (view, goal) pairs: the test images have no objects")
    drawn = sorted({ds.class_names[c] for c in pair_goal})
    rendered = {size: render_views(ds.bank(), idx, boxes, size)
                for size in sorted({size for _, _, size in scorers})}
    views0 = next(iter(rendered.values()))
    vis = check_scores(truth(views0, idx, boxes), truth, len(idx), len(truth.vocabulary))[pv, pg]
    positive = vis >= a.threshold
    rows = []
    for name, scorer, size in scorers:
        assert isinstance(scorer, AnnotationScorer)
        missing = [c for c in drawn if c not in scorer.vocabulary]
        if missing:
            raise SystemExit(f"{name}: no goal crops of {missing} among the objects of "
                             f"{a.curated_images} goal images of {a.dataset}; raise "
                             "--curated-images")
        views, b = rendered[size], a.batch
        probs = torch.cat([check_scores(scorer(views[s:s + b], idx[s:s + b], boxes[s:s + b]),
                                        scorer, len(views[s:s + b]), len(scorer.vocabulary))
                           for s in range(0, len(views), b)])
        # the scorer's column of each of the dataset's classes (-1: never a goal here)
        column = torch.tensor([scorer.vocabulary.index(c) if c in scorer.vocabulary else -1
                               for c in ds.class_names])
        reward = probs[pv, column[pg]]
        auc = roc_auc(reward.numpy(), positive.numpy())
        rho = float(_spearman(reward[None].double(), vis[None].double())[0])
        rows.append({"scorer": name, "auc": None if np.isnan(auc) else auc, "spearman": rho,
                     "positives": int(positive.sum()), "negatives": int((~positive).sum()),
                     "mean_reward_pos": float(reward[positive].mean()) if positive.any() else None,
                     "mean_reward_neg": float(reward[~positive].mean()) if (~positive).any()
                     else None})
        print(f"{name}: AUC {_fmt(rows[-1]['auc'])}, Spearman {rho:.3f}", flush=True)
    return {"scorers": rows, "views": len(idx), "pairs": len(pv), "goals": drawn,
            "mean_visibility": float(vis.mean())}


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(cell: dict) -> str:
    thr = cell["settings"]["threshold"]
    rows = [f"| scorer | ROC AUC (visible: vis >= {thr}) | Spearman rho (reward, vis) | "
            "positives | negatives | mean reward, positives | mean reward, negatives |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in cell["scorers"]:
        rows.append(f"| {r['scorer']} | {_fmt(r['auc'])} | {r['spearman']:.3f} | "
                    f"{r['positives']} | {r['negatives']} | {_fmt(r['mean_reward_pos'])} | "
                    f"{_fmt(r['mean_reward_neg'])} |")
    return "\n".join(rows)


def cell_path(a) -> tuple[Path, str]:
    """``(folder, cell id)`` of ``--out``: a ``.json`` file is the cell itself."""
    out = Path(a.out)
    if out.suffix == ".json":
        return out.parent, out.stem
    return out, f"{dataset_label(a)}_learned-rewards_s{a.seed}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True,
                   help="a train_value.py run folder / checkpoint (SimCLR, DINO or CLIP)")
    p.add_argument("--base-checkpoint", default="",
                   help="its --ab-weight 0 control (optional)")
    add_object_flags(p)
    p.add_argument("--views", type=int, default=1000, help="random views of the test images")
    p.add_argument("--seed", type=int, default=0, help="of the views")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "learned_rewards"),
                   help="a folder of cells or one .json cell file")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="visibility from which the goal counts as visible (the positives)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="ObjectVisibilityScorer's alpha (the fraction of the view an object "
                        "must fill for full visibility)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.05, 1.0), metavar=("LO", "HI"),
                   help="area fractions of the random views (sample_boxes)")
    p.add_argument("--scene-size", type=int, default=96, help="side of generated scenes")
    p.add_argument("--test-images", type=int, default=512,
                   help="test images the views are drawn from (at most)")
    p.add_argument("--curated-images", type=int, default=128,
                   help="images of the goal crops (scenes: val scenes; a folder: its images "
                        "outside the test split)")
    p.add_argument("--per-class", type=int, default=32, help="goal crops per class")
    p.add_argument("--batch", type=int, default=256, help="views per scorer call")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    check_object_args(a)
    for key in ("views", "test_images", "curated_images", "per_class", "batch", "threads"):
        if getattr(a, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(a, key)}")
    if not 0 < a.scale[0] <= a.scale[1] <= 1:
        p.error(f"--scale must satisfy 0 < LO <= HI <= 1, got {a.scale}")
    if not 0 < a.alpha <= 1:
        p.error(f"--alpha must lie in (0, 1], got {a.alpha}")
    return a


def settings_of(a) -> dict:
    settings = {k: getattr(a, k) for k in ("dataset", "scene_size", "views", "seed", "threshold",
                                           "alpha", "test_images", "curated_images",
                                           "per_class")}
    settings["scale"] = list(a.scale)
    settings["checkpoint"] = _fingerprint(a.checkpoint)
    settings["base_checkpoint"] = _fingerprint(a.base_checkpoint) if a.base_checkpoint else None
    source = source_kwargs(a, a.dataset)  # named datasets: none
    if source:
        settings["source"] = source
    return settings


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    folder, cell_id = cell_path(a)
    settings = settings_of(a)
    cell = load_cell(folder, cell_id)
    if cell is not None and cell.get("settings") == settings:
        print(f"{folder / cell_id}.json: finished with these settings, not measured again")
    else:
        if cell is not None:
            print(f"{cell_id}.json: settings changed, measuring again")
        torch.set_num_threads(a.threads)
        t0 = time.time()
        res = measure(a)
        cell = {**res, "wall_s": round(time.time() - t0, 1), "settings": settings,
                "threads": a.threads, "machine": machine(), "code": code_version()}
        save_cell(folder, cell_id, cell)
    print(f"\n{a.dataset}: {cell['views']} random views (seed {a.seed}), {cell['pairs']} "
          f"(view, goal) pairs over the goals of each view's image; visible = visibility >= "
          f"{a.threshold}; {cell['wall_s']:.0f} s, {machine()}\n")
    print(table(cell))
    return cell


if __name__ == "__main__":
    main()
