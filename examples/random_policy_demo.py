"""Run a random policy on ImageView-v0 and save a picture of a few trajectories.

Each row is one trajectory: every frame shows the full image (with the allowed margin past its
edge, the image border in grey and the current view's box in red) beside the view itself.

    python examples/random_policy_demo.py --out demo.png --episodes 3 --steps 6
"""

import argparse

import gymnasium as gym
import numpy as np
from PIL import Image

import imgmdp_env  # noqa: F401  (registers ImageView-v0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo.png", help="where to write the PNG")
    p.add_argument("--dataset", default="scenes", help="dataset name or image folder")
    p.add_argument("--episodes", type=int, default=3, help="trajectories (rows)")
    p.add_argument("--steps", type=int, default=6, help="steps per trajectory (columns - 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of env and policy")
    args = p.parse_args()

    envs = gym.make_vec("ImageView-v0", num_envs=args.episodes, dataset=args.dataset,
                        render_mode="rgb_array")
    envs.action_space.seed(args.seed)
    envs.reset(seed=args.seed)
    rows = [[frame] for frame in envs.render()]
    for _ in range(args.steps):
        envs.step(envs.action_space.sample())
        for row, frame in zip(rows, envs.render(), strict=True):
            row.append(frame)
    pad = lambda f: np.pad(f, ((4, 4), (4, 4), (0, 0)), constant_values=255)  # noqa: E731
    grid = np.concatenate([np.concatenate([pad(f) for f in row], 1) for row in rows], 0)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {args.out}: {args.episodes} trajectories x {args.steps} random steps")


if __name__ == "__main__":
    main()
