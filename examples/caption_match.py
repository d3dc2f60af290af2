"""Caption match: pay p(goal object | view) and compare a random policy with one that moves
straight to the goal object (its action is the relative box of the target view, the paper's
bb_{1->2}).

    python examples/caption_match.py --steps 50

The reward is the ground-truth visibility of the goal object (imgmdp_env.scorers.
ObjectVisibilityScorer): 1 when the whole object is in view and fills at least half of it.
"""

import argparse

import gymnasium as gym
import numpy as np
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from imgmdp_env import relative_box
from imgmdp_env.actions import relative_to_action
from imgmdp_env.rewards import VectorCaptionMatchReward


def to_goal(envs, info: dict, context: float = 1.4) -> np.ndarray:
    """Actions toward a view ``context`` x the goal object's box (it then fills ~half the view)."""
    core = envs.unwrapped
    ds = core.dataset
    targets = []
    for idx, goal in zip(info["image_index"], info["goal"], strict=True):
        box = ds.object_boxes[idx][ds.object_labels[idx] == goal][0].copy()
        box[2:] *= context
        targets.append(box)
    rel = relative_box(torch.from_numpy(info["box"]), torch.from_numpy(np.stack(targets)))
    return relative_to_action(rel, core.max_pan, core.max_zoom).numpy()  # the env's inverse


def run(envs, policy: str, steps: int, seed: int) -> float:
    obs, info = envs.reset(seed=seed)
    envs.action_space.seed(seed)
    rewards = []
    for _ in range(steps):
        action = envs.action_space.sample() if policy == "random" else to_goal(envs, info)
        obs, reward, terminated, truncated, info = envs.step(action)
        rewards.append(reward)
    return float(np.mean(rewards))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="steps per policy")
    p.add_argument("--num-envs", type=int, default=16, help="sub-environments")
    p.add_argument("--seed", type=int, default=0, help="seed of env and policy")
    args = p.parse_args()

    envs = gym.make_vec("ImageView-v0", num_envs=args.num_envs, dataset="scenes",
                        dataset_kwargs={"n": 256, "size": 96}, max_episode_steps=10)
    envs = VectorCaptionMatchReward(envs, goals="image", goal_text=True)
    _, info = envs.reset(seed=args.seed)
    print("vocabulary:", envs.vocabulary)
    print("first goals:", list(info["goal_text"][:6]))
    for policy in ("random", "to-goal"):
        mean = run(envs, policy, args.steps, args.seed)
        print(f"{policy:>8} policy: mean reward per step {mean:.3f}")


if __name__ == "__main__":
    main()
