"""A minimal CleanRL-style REINFORCE on the natively batched Gymnasium API (no RL library).

    python examples/reinforce.py --iterations 50

The task is caption match on the procedural scenes: find the goal object (the reward is its
ground-truth visibility). A small CNN sees the view, an embedding the goal id; a Gaussian
policy (tanh-squashed mean, learned log-std) acts in Box(-1, 1, (4,)). Each iteration runs one
episode of ``--horizon`` steps in every sub-env at once (they all start at reset and truncate
together), then takes one policy-gradient step on the discounted returns-to-go minus a
per-step baseline (their mean over the sub-envs), normalised.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch
from torch import nn

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from imgmdp_env.rewards import VectorCaptionMatchReward


class Policy(nn.Module):
    """views ``(N, 3, h, w)`` uint8 + goals ``(N,)`` -> a Normal over ``(N, 4)`` actions."""

    def __init__(self, n_goals: int, view: int, width: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, width, 4, 4), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.goal = nn.Embedding(n_goals, 16 * width)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(16 * width, 64), nn.ReLU(),
                                  nn.Linear(64, 4))
        self.log_std = nn.Parameter(torch.full((4,), -0.5))

    def forward(self, views: torch.Tensor, goals: torch.Tensor) -> torch.distributions.Normal:
        h = self.conv(views.float() / 255) + self.goal(goals)
        return torch.distributions.Normal(torch.tanh(self.head(h)), self.log_std.exp())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=50, help="policy-gradient steps")
    p.add_argument("--num-envs", type=int, default=32, help="episodes per iteration")
    p.add_argument("--horizon", type=int, default=10, help="steps per episode")
    p.add_argument("--view-size", type=int, default=32)
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    envs = gym.make_vec("ImageView-v0", num_envs=args.num_envs, dataset="scenes",
                        dataset_kwargs={"n": 512, "size": 96}, view_size=args.view_size,
                        max_episode_steps=args.horizon)
    envs = VectorCaptionMatchReward(envs, goals="image")
    policy = Policy(len(envs.vocabulary), args.view_size)
    optim = torch.optim.Adam(policy.parameters(), lr=args.lr)
    discount = args.gamma ** torch.arange(args.horizon, dtype=torch.float32)

    for it in range(args.iterations):
        obs, _ = envs.reset(seed=args.seed + it)  # every sub-env starts an episode here
        logps, rewards = [], []
        for _ in range(args.horizon):
            dist = policy(torch.from_numpy(obs["view"]), torch.from_numpy(obs["goal"]))
            action = dist.sample()
            logps.append(dist.log_prob(action).sum(-1))
            obs, reward, _, _, _ = envs.step(action.clamp(-1, 1).numpy())
            rewards.append(torch.as_tensor(reward, dtype=torch.float32))
        r = torch.stack(rewards)  # (T, N)
        # returns-to-go G_t = sum_{s >= t} gamma^(s - t) r_s, via one reversed cumulative sum
        g = (r * discount[:, None]).flip(0).cumsum(0).flip(0) / discount[:, None]
        adv = g - g.mean(1, keepdim=True)  # per-step baseline over the sub-envs
        adv = adv / (adv.std() + 1e-8)
        loss = -(torch.stack(logps) * adv).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if it % max(1, args.iterations // 10) == 0 or it == args.iterations - 1:
            print(f"iteration {it:4d}: mean return {r.sum(0).mean():.3f}, "
                  f"best visibility {r.max(0).values.mean():.3f}, std "
                  f"{policy.log_std.exp().mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
