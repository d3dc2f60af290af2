"""Curation: pay p(curated item | view) and compare a random policy with one that frames the
goal object.

    python examples/curation.py --steps 50
    python examples/curation.py --dataset fashion-scenes --curated fashion   # Fashion-MNIST

The curated set is a set of single, centred items: by default ("objects") the object crops of
a held-out split of the procedural scenes, labelled by class; or any dataset name. The scorer
is the training-free default: 12x12 edge maps, a softmax over cosine similarities to the
curated items, summed per class. It is weak: it rewards framing *like the curated items*, not
recognising the object.
"""

import argparse

import gymnasium as gym
import numpy as np
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.learned_rewards import object_crops
from imgmdp_env.actions import relative_to_action
from imgmdp_env.datasets import make_dataset
from imgmdp_env.rewards import VectorCurationReward
from imgmdp_env.views import relative_box


def frame_goal(envs, info: dict, context: float = 1.4) -> np.ndarray:
    """Jump straight to the goal object (the dataset's boxes), framed like the crops: the
    action is the relative box, through the env's own parameterisation."""
    core = envs.unwrapped
    ds, names = core.dataset, envs.vocabulary
    a = np.zeros((core.num_envs, 4), np.float32)
    for i, (idx, goal) in enumerate(zip(info["image_index"], info["goal"], strict=True)):
        hits = ds.object_boxes[idx][np.array(ds.class_names)[ds.object_labels[idx]] == names[goal]]
        if len(hits):
            target = hits[0] * np.array([1, 1, context, context], np.float32)
            rel = relative_box(torch.from_numpy(info["box"][i]), torch.from_numpy(target))
            a[i] = relative_to_action(rel, core.max_pan, core.max_zoom).numpy()
    return a


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="steps per policy")
    p.add_argument("--dataset", default="scenes", help="the env's images")
    p.add_argument("--curated", default="objects", help="'objects' or a dataset name")
    p.add_argument("--num-envs", type=int, default=16, help="sub-environments")
    p.add_argument("--seed", type=int, default=0, help="seed of env and policy")
    args = p.parse_args()

    kwargs = {"n": 256, "size": 96} if args.dataset == "scenes" else {}
    envs = gym.make_vec("ImageView-v0", num_envs=args.num_envs, dataset=args.dataset,
                        dataset_kwargs=kwargs, max_episode_steps=10)
    curated = args.curated
    if curated == "objects":
        curated = object_crops(make_dataset("scenes", n=128, size=96, split="val"), 32)
    envs = VectorCurationReward(envs, curated, goals="image", goal_text=True)
    print(f"curated set: {len(envs.curated)} items; prototypes: {envs.vocabulary}")
    for policy in ("random", "frame-goal"):
        _, info = envs.reset(seed=args.seed)
        envs.action_space.seed(args.seed)
        rewards = []
        for _ in range(args.steps):
            act = envs.action_space.sample() if policy == "random" else frame_goal(envs, info)
            _, reward, _, _, info = envs.step(act)
            rewards.append(reward)
        print(f"{policy:>10} policy: mean reward per step {np.mean(rewards):.3f} "
              f"(chance {1 / len(envs.vocabulary):.3f})")


if __name__ == "__main__":
    main()
