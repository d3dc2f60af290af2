"""PPO (Stable-Baselines3) on the caption-match env, through the SB3 adapter.

    python examples/sb3_ppo.py --steps 4096                                  # SB3's NatureCNN
    python examples/sb3_ppo.py --encoder frozen --checkpoint runs/<run>      # pretrained, frozen
    python examples/sb3_ppo.py --encoder finetune --checkpoint runs/<run>    # pretrained, tuned
    python examples/sb3_ppo.py --encoder scratch --checkpoint runs/<run>     # same net, random

--encoder picks the features extractor: "nature" (SB3's default CNN), or
agents.evaluation.sb3_extractor.PretrainedViewExtractor over the checkpoint's encoder, frozen (its
weights
never change, eval mode) or fine-tuned with the policy, or the same architecture from a random
init ("scratch", the control). The view size is then the encoder's (64 for the default run).

The env is natively batched (one Gymnasium VectorEnv); imgmdp_env.sb3.SB3VecEnv presents it as
an SB3 VecEnv (autoreset in the same step, terminal_observation in infos). The policy sees the
view and the goal id (a Dict observation, "MultiInputPolicy"); the reward is the ground-truth
visibility of the goal object; an episode ends once it reaches 0.8 or after 20 steps.
"""

import argparse

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

from imgmdp_env.rewards import VectorCaptionMatchReward
from imgmdp_env.sb3 import make_sb3_env


def mean_reward(model: PPO, venv, steps: int) -> float:
    """Mean reward per step of the model's stochastic policy over ``steps`` batched steps."""
    obs, rewards = venv.reset(), []
    for _ in range(steps):
        action, _ = model.predict(obs, deterministic=False)
        obs, reward, _, _ = venv.step(action)
        rewards.append(reward)
    return float(np.mean(rewards))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4096, help="PPO environment steps in all")
    p.add_argument("--num-envs", type=int, default=8, help="sub-environments")
    p.add_argument("--view-size", type=int, default=48, help="view pixels (>= 36 for SB3's CNN)")
    p.add_argument("--seed", type=int, default=0, help="seed of env, policy and PPO")
    p.add_argument("--encoder", default="nature",
                   choices=("nature", "scratch", "frozen", "finetune"),
                   help="features extractor (see the module doc)")
    p.add_argument("--checkpoint", default="", help="train_value.py run (not for 'nature')")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    policy_kwargs = {}
    if args.encoder != "nature":
        from agents.evaluation.sb3_extractor import PretrainedViewExtractor
        from agents.method.ab import load_encoder

        if not args.checkpoint:
            p.error(f"--encoder {args.encoder} needs --checkpoint (a train_value.py run)")
        encoder = load_encoder(args.checkpoint)
        if args.encoder == "scratch":  # the same architecture, randomly initialised
            from agents.method.networks import make_encoder

            encoder = make_encoder(**encoder.config)
        args.view_size = encoder.view_size
        policy_kwargs = dict(features_extractor_class=PretrainedViewExtractor,
                             features_extractor_kwargs=dict(
                                 encoder=encoder, freeze=args.encoder == "frozen",
                                 features_dim=128))

    venv = VecMonitor(make_sb3_env(
        num_envs=args.num_envs, dataset="scenes", dataset_kwargs={"n": 256, "size": 96},
        view_size=args.view_size, max_episode_steps=20,
        wrappers=[lambda e: VectorCaptionMatchReward(e, goals="image", terminate_at=0.8)]))
    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=128, n_epochs=4,
                learning_rate=3e-4, ent_coef=0.01, seed=args.seed, verbose=1,
                policy_kwargs=policy_kwargs)
    eval_steps = max(2, min(64, args.steps // args.num_envs))
    before = mean_reward(model, venv, eval_steps)
    print(f"PPO, {args.steps} env steps ({args.encoder} features); SB3 prints a table every "
          f"{64 * args.num_envs} steps", flush=True)
    model.learn(total_timesteps=args.steps)
    after = mean_reward(model, venv, eval_steps)
    returns = [ep["r"] for ep in model.ep_info_buffer]
    print(f"episodes: {len(returns)}, mean return of the last {len(returns)}: "
          f"{np.mean(returns) if returns else float('nan'):.3f}")
    print(f"mean reward per step: before {before:.3f}, after {after:.3f} ({args.steps} steps)")


if __name__ == "__main__":
    main()
