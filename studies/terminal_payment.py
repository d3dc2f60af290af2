"""Does the terminal payment make success worth reaching? SB3 PPO with and without it.

The task: caption match on ``scenes`` (goal: one of the image's own object classes, observed as
``obs["goal"]``), the seven discrete moves (``VectorDiscreteViewActions``), an episode ends when
the goal's visibility reaches ``--terminate-at`` (success) or after ``--horizon`` steps. Two
arms differ only in the reward wrapper's ``terminal_payment``:

- ``none``: every step pays ``p(goal | view)``; ending the episode forfeits the rest, so
  hovering below the threshold pays more than reaching it.
- ``stay``: the success step pays ``p / (1 - gamma)``, the return of staying there forever.

Each arm trains PPO (a tiny CNN on the view, the goal one-hot beside it) for the same env steps
on train-split images, for each seed; the final policy is evaluated on held-out test-split
images (``--eval-episodes`` episodes, the policy sampled as in training, and greedy): success
rate, episode length, the return of the dense reward (sum of ``p``, the same scale for both
arms) and the return with the payment. A uniformly random policy is the reference row.
Mean +- sd over seeds.

    OMP_NUM_THREADS=1 .venv/bin/python -m studies.terminal_payment [--steps 20000]
        [--seeds 0 1 2] [--num-envs 8] [--view-size 24] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium import spaces  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402
from torch import nn  # noqa: E402

import imgmdp_env  # noqa: E402, F401
from benchmarks._machine import cpu_model  # noqa: E402
from imgmdp_env.datasets.splits import load_split  # noqa: E402
from imgmdp_env.rewards import VectorCaptionMatchReward  # noqa: E402
from imgmdp_env.sb3 import SB3VecEnv  # noqa: E402
from imgmdp_env.wrappers import VectorDiscreteViewActions  # noqa: E402

GAMMA = 0.99  # PPO's discount and the payment's


class TinyGoalCNN(BaseFeaturesExtractor):
    """Two strided convolutions on the view ``(3, h, w)`` (SB3 gives floats in [0, 1]), then a
    linear layer over the flattened map and the goal one-hot: ``(B, features_dim)``."""

    def __init__(self, space: spaces.Dict, features_dim: int = 64) -> None:
        super().__init__(space, features_dim)
        c, h, w = space["view"].shape
        self.conv = nn.Sequential(nn.Conv2d(c, 16, 5, 2, 2), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.head = nn.Sequential(nn.Linear(n + int(space["goal"].n), features_dim), nn.ReLU())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.conv(obs["view"]), obs["goal"].flatten(1)], 1))


def make_envs(args: argparse.Namespace, split: str, payment: str, num_envs: int) -> gym.Env:
    """The vector env: discrete moves under the caption-match reward, SAME_STEP autoreset."""
    ds = load_split("scenes", split, n=args.train_images if split == "train" else
                    args.test_images, size=args.scene_size, seed=0)
    envs = gym.make_vec("ImageView-v0", num_envs=num_envs, dataset=ds,
                        view_size=args.view_size, max_episode_steps=args.horizon,
                        autoreset_mode="SameStep")
    return VectorCaptionMatchReward(VectorDiscreteViewActions(envs), goals="image",
                                    terminate_at=args.terminate_at, terminal_payment=payment,
                                    gamma=GAMMA)


def evaluate(policy, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """``policy(obs) -> actions`` on test-split images for ``--eval-episodes`` episodes (the
    first ones each sub-env finishes): success rate, mean length, mean dense return (sum of
    ``p``), mean return with the payment."""
    n = args.eval_envs
    envs = make_envs(args, "test", "none", n)  # pays p: both returns are computed from it
    obs, _ = envs.reset(seed=10_000 + seed)
    per_env = -(-args.eval_episodes // n)
    ret, length = np.zeros(n), np.zeros(n, int)
    episodes: list[tuple[bool, int, float, float]] = []
    count = np.zeros(n, int)
    while count.min() < per_env:
        obs, p, term, trunc, _ = envs.step(policy(obs))
        ret += p
        length += 1
        for i in np.flatnonzero(term | trunc):
            if count[i] < per_env:
                paid = ret[i] + (GAMMA * p[i] / (1 - GAMMA) if term[i] else 0.0)
                episodes.append((bool(term[i]), int(length[i]), float(ret[i]), paid))
                count[i] += 1
            ret[i], length[i] = 0.0, 0
    e = np.array(episodes[: args.eval_episodes], dtype=float)
    return {"success": e[:, 0].mean(), "length": e[:, 1].mean(), "dense": e[:, 2].mean(),
            "paid": e[:, 3].mean()}


def train(args: argparse.Namespace, payment: str, seed: int) -> PPO:
    venv = SB3VecEnv(make_envs(args, "train", payment, args.num_envs))
    model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=256, n_epochs=4,
                learning_rate=3e-4, ent_coef=0.01, gamma=GAMMA, seed=seed, device="cpu",
                policy_kwargs={"features_extractor_class": TinyGoalCNN}, verbose=0)
    model.learn(total_timesteps=args.steps)
    return model


def row(name: str, results: list[dict[str, float]]) -> str:
    cells = []
    for key, fmt in (("success", ".3f"), ("greedy", ".3f"), ("length", ".1f"),
                     ("dense", ".2f"), ("paid", ".1f")):
        v = np.array([r[key] for r in results if key in r])
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        cells.append("-" if len(v) == 0 else f"{v.mean():{fmt}} +- {sd:{fmt}}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20_000, help="PPO env steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--view-size", type=int, default=24)
    p.add_argument("--scene-size", type=int, default=64)
    p.add_argument("--train-images", type=int, default=512)
    p.add_argument("--test-images", type=int, default=256)
    p.add_argument("--horizon", type=int, default=20, help="max_episode_steps")
    p.add_argument("--terminate-at", type=float, default=0.8)
    p.add_argument("--eval-episodes", type=int, default=256)
    p.add_argument("--eval-envs", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()

    results: dict[str, list[dict[str, float]]] = {"random": [], "none": [], "stay": []}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        results["random"].append(evaluate(lambda o, r=rng: r.integers(7, size=len(o["goal"])),
                                          args, seed))
        for payment in ("none", "stay"):
            t0 = time.time()
            model = train(args, payment, seed)
            res = evaluate(lambda o, m=model: m.predict(o, deterministic=False)[0], args, seed)
            res["greedy"] = evaluate(lambda o, m=model: m.predict(o, deterministic=True)[0],
                                     args, seed)["success"]
            results[payment].append(res)
            print(f"seed {seed} terminal_payment={payment}: success {res['success']:.3f} "
                  f"(greedy {res['greedy']:.3f}), dense return {res['dense']:.2f}, "
                  f"{time.time() - t0:.0f} s", flush=True)

    print(f"\n{args.steps} PPO env steps per run, seeds {args.seeds}; eval: "
          f"{args.eval_episodes} episodes on {args.test_images} test-split scenes; "
          f"terminate_at={args.terminate_at}, horizon {args.horizon}, view {args.view_size} px, "
          f"gamma {GAMMA}\n")
    print("| policy | success (sampled) | success (greedy) | episode length | dense return "
          "(sum p) | return with payment |")
    print("|---|---|---|---|---|---|")
    print(row("random", results["random"]))
    print(row("PPO, terminal_payment='none'", results["none"]))
    print(row("PPO, terminal_payment='stay'", results["stay"]))
    print(f"\nmachine: {cpu_model()}, {platform.python_version()}, torch {torch.__version__}, "
          f"{args.threads} thread(s); wall {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
