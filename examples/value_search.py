"""Value-guided search: find a goal object with a trained checkpoint's Q_AB, no RL at all.

    python agents/train_value.py --name ab                # a SimCLR run (the default)
    python examples/value_search.py --checkpoint runs/ab --out search.png
    python agents/train_value.py --name clip --base clip --dataset fashion-scenes
    python examples/value_search.py --checkpoint runs/clip --dataset fashion-scenes
    python examples/value_search.py --checkpoint runs/ab --dataset path/to/images \
        --instances path/to/instances.json                # any images with COCO object boxes
    python examples/value_search.py --checkpoint runs/ab --dataset train2017/ \
        --instances instances_train2017.json --test-dataset val2017/ \
        --test-instances instances_val2017.json

Each step scores a grid of candidate moves of every view with Q_AB(goal | view, move) and takes
the best (agents.evaluation.search.ValueSearch). The goal is an object class. For a SimCLR
agent (its annotations are images) it is given as object crops of images the episodes never
start in: ``scenes`` episodes start in test scenes and the crops come from val scenes; a
folder's episodes start in its ``--holdout`` split (or the ``--test-dataset``) and the crops
come from its other images (``agents.infra.sources.goal_images``). For a CLIP agent
(``--base clip``) it is captions that name the class (``class_caption_goals``: "a sneaker"),
or with ``--goals object`` the phrase of the image's own caption that names the goal object
(``episode_object_goals``: "a red circle").
The reward printed is the ground-truth visibility of the goal object. The picture has one row
per episode: the full image with the boxes visited (yellow to red, the last one thick), the
goal crops (none for CLIP), and the views.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.evaluation.learned_rewards import object_crops
from agents.evaluation.search import (
    GoalValue,
    ValueSearch,
    class_caption_goals,
    curated_goals,
    episode_class_goals,
    episode_object_goals,
)
from agents.infra.arg_checks import check_object_args
from agents.infra.sources import add_object_flags, goal_images, object_env
from agents.method.ab import load_agent
from imgmdp_env.rewards import VectorCaptionMatchReward


def save_picture(path: str, images: list[np.ndarray], boxes: np.ndarray, views: np.ndarray,
                 goal_crops: list[list[np.ndarray]], titles: list[str], margin: float) -> None:
    """images: N ``(H, W, 3)``; boxes ``(T, N, 4)`` cxcywh; views ``(T, N, 3, h, w)`` uint8;
    goal_crops: per row, a few ``(h, w, 3)`` crops of the goal class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    t, n = boxes.shape[:2]
    cols = 2 + t
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols + 1.2, 1.5 * n), squeeze=False)
    colours = plt.cm.autumn_r(np.linspace(0.1, 1, t))
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(images[i], extent=(0, 1, 1, 0))
        for s in range(t):
            cx, cy, w, h = boxes[s, i]
            ax.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False,
                                   color=colours[s], lw=2.5 if s == t - 1 else 0.8))
        ax.set_xlim(-margin, 1 + margin)
        ax.set_ylim(1 + margin, -margin)
        ax.set_title(titles[i], fontsize=7)
        axes[i, 1].imshow(np.concatenate(goal_crops[i][:3], axis=0))
        axes[i, 1].set_title("goal", fontsize=7)
        for s in range(t):
            axes[i, 2 + s].imshow(views[s, i].transpose(1, 2, 0))
            axes[i, 2 + s].set_title(f"step {s}", fontsize=6)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a SimCLR train_value.py run / checkpoint")
    p.add_argument("--steps", type=int, default=10, help="steps per episode")
    p.add_argument("--num-envs", type=int, default=4, help="episodes (one picture row each)")
    p.add_argument("--candidates", default="grid", choices=("discrete", "grid", "random"))
    p.add_argument("--goals", default="class", choices=("class", "object"),
                   help="a CLIP agent's goal: captions naming the class, or the phrase of the "
                        "image's own caption naming the goal object ('a red circle')")
    p.add_argument("--inside", action=argparse.BooleanOptionalAction, default=True,
                   help="keep every candidate view inside the image (ValueSearch inside=True; "
                        "continuous candidates only)")
    p.add_argument("--images", type=int, default=256,
                   help="test images the episodes start in (at most)")
    p.add_argument("--curated-images", type=int, default=64,
                   help="images of the goal crops (scenes: val scenes; a folder: its images "
                        "outside the test split)")
    p.add_argument("--scene-size", type=int, default=96, help="side of generated scenes")
    add_object_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="value_search.png", help="the picture")
    args = p.parse_args(argv)
    check_object_args(args)
    torch.set_num_threads(1)

    agent = load_agent(args.checkpoint).eval()
    size = agent.encoder.view_size
    envs = gym.make_vec("ImageView-v0", num_envs=args.num_envs,
                        **object_env(args, "test", args.images, args.scene_size),
                        view_size=size, max_episode_steps=args.steps)
    envs = VectorCaptionMatchReward(envs, goals="image")
    crops = None
    if args.goals == "object":  # the caption phrase of the goal object ("a red circle")
        try:
            goals, pick = episode_object_goals(agent, envs)
        except ValueError as err:
            raise SystemExit(f"--goals object: {err}") from None
    else:
        if agent.cfg.base == "clip":  # captions that name each class ("a sneaker"); no crops
            goals = class_caption_goals(agent, list(envs.vocabulary), args.dataset)
        else:  # object crops of images the episodes never start in, summed per class
            crops = object_crops(goal_images(args, args.curated_images, args.scene_size), size)
            goals = curated_goals(agent, crops)
        try:
            pick = episode_class_goals(goals, envs)
        except ValueError as err:
            raise SystemExit(f"{err}: no goal crops of them in {args.curated_images} images of "
                             f"{args.dataset}; raise --curated-images") from None

    search = ValueSearch(GoalValue(agent, goals), envs, candidates=args.candidates,
                         inside=args.inside)

    obs, info = envs.reset(seed=args.seed)
    goal, idx = obs["goal"].copy(), info["image_index"].copy()
    named = [goals.vocabulary[j] for j in pick(obs, info)]  # "circle" or "a red circle"
    boxes, views, rewards = [info["box"]], [obs["view"]], []
    for _ in range(args.steps - 1):  # the last step truncates: stay within one episode
        obs, reward, _, _, info = envs.step(search.act(obs["view"], pick(obs, info),
                                                       boxes=info["box"]))
        boxes.append(info["box"])
        views.append(obs["view"])
        rewards.append(reward)
    rewards = np.array(rewards)
    ds = envs.unwrapped.dataset
    titles = [f"{n}: best {r:.2f}" for n, r in zip(named, rewards.max(0), strict=True)]
    blank = [np.zeros((size, size, 3), np.uint8)]
    goal_crops = [blank if crops is None else [crops.images[j] for j in np.flatnonzero(
        crops.labels == crops.class_names.index(envs.vocabulary[g]))] or blank for g in goal]
    save_picture(args.out, [ds.images[j] for j in idx], np.stack(boxes), np.stack(views),
                 goal_crops, titles, envs.unwrapped.margin)
    print(f"mean reward per step {rewards.mean():.3f}; best visibility per episode "
          f"{np.round(rewards.max(0), 2).tolist()}; picture: {args.out}")


if __name__ == "__main__":
    main()
