"""What the bootstrapping loss does to the encoder: its gradient beside the base loss's.

For each ``train_value.py`` run folder given, on the run's own data and sampler, at the run's
fresh initialisation (same seed) and at its saved checkpoint: the encoder gradient of the base
loss ``g_base`` and of the weighted bootstrapping term ``g_ab`` (the full loss's gradient minus
the base loss's, on the same batch), averaged over ``--batches`` batches. Prints, per state:

- ``|g_ab| / |g_base|``: how much of the encoder's update the bootstrapping loss makes;
- ``cos``: the mean cosine between ``g_ab`` and ``g_base`` on one batch (below 0: the two
  losses pull the features in opposed directions);
- ``cos of means``: the cosine between the two gradients averaged over the batches (the
  per-batch noise averaged out: the direction each loss drifts the encoder in);

- ``Adam share``: ``|g_ab| / |g_base|`` after dividing each coordinate by the checkpoint's
  Adam denominator ``sqrt(v_hat) + eps`` (what AdamW does to a gradient before stepping; the
  trained state only, since a fresh run has no second moments yet);

each with its spread over the batches. A diagnostic, not a result: it says whether the
bootstrapping loss has a say in the features at this budget, and whether it agrees with the
base loss.

    python -m studies.ab_gradients runs/default_s1 runs/default_s2 --batches 16
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from agents.infra.checkpoint import read_checkpoint, require
from agents.infra.config import Args
from agents.infra.flat_args import args_from
from agents.infra.sources import build_datasets
from agents.infra.train_utils import build_agent, make_optimizer
from agents.method.ab import ABAgent
from agents.method.data import Batch
from benchmarks._machine import cpu_model


def encoder_grad(agent: ABAgent, batch: Batch, ab_weight: float) -> torch.Tensor:
    """The gradient ``(P,)`` float32 of the loss with this ``ab_weight`` w.r.t. the online
    encoder's parameters, flattened. The weights and the DINO centre are left as they were
    (a BatchNorm head's running statistics move, but training mode never reads them)."""
    center = agent.center.clone()
    cfg = agent.cfg
    agent.cfg = replace(cfg, ab_weight=ab_weight)
    try:
        loss, _ = agent.loss(batch)
        params = [p for p in agent.encoder.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        agent.cfg = cfg
        agent.center.copy_(center)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten().float()
                      for p, g in zip(params, grads, strict=True)])


def adam_denominator(args: Args, agent: ABAgent, optimizer_state: dict) -> torch.Tensor:
    """``(P,)`` float32: AdamW's per-coordinate denominator ``sqrt(v / (1 - beta2^t)) + eps``
    for the online encoder's parameters (flattened as :func:`encoder_grad` flattens them), from
    a checkpoint's optimizer state."""
    optimizer, _ = make_optimizer(args, agent, None)
    optimizer.load_state_dict(optimizer_state)
    (_, beta2), eps = optimizer.defaults["betas"], optimizer.defaults["eps"]
    parts = []
    for p in agent.encoder.parameters():
        if p.requires_grad:
            st = optimizer.state[p]
            v_hat = st["exp_avg_sq"] / (1 - beta2 ** float(st["step"]))
            parts.append((v_hat.sqrt() + eps).flatten().float())
    return torch.cat(parts)


def gradient_stats(agent: ABAgent, batches: list[Batch], denominator: torch.Tensor | None = None
                   ) -> dict[str, tuple[float, float] | None]:
    """``{statistic: (mean, sd over batches)}`` of the base and bootstrapping gradients on the
    encoder (see the module docstring); ``cos of means`` has sd 0 (one value); ``Adam share``
    is None without the optimizer's ``denominator`` ``(P,)``."""
    ratio, cos, share, g_b, g_a = [], [], [], [], []
    for batch in batches:
        base = encoder_grad(agent, batch, 0.0)
        ab = encoder_grad(agent, batch, agent.cfg.ab_weight) - base
        ratio.append((ab.norm() / base.norm()).item())
        cos.append(torch.nn.functional.cosine_similarity(ab, base, dim=0).item())
        if denominator is not None:
            share.append(((ab / denominator).norm() / (base / denominator).norm()).item())
        g_b.append(base)
        g_a.append(ab)
    mean_cos = torch.nn.functional.cosine_similarity(
        torch.stack(g_a).mean(0), torch.stack(g_b).mean(0), dim=0).item()

    def ms(xs: list[float]) -> tuple[float, float]:
        return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    return {"|g_ab| / |g_base|": ms(ratio), "cos": ms(cos), "cos of means": (mean_cos, 0.0),
            "Adam share": ms(share) if share else None}


def run_states(run_dir: Path, n_batches: int) -> tuple[Args, dict[str, dict]]:
    """The run's args and the gradient statistics of its fresh and its trained agent, on the
    same ``n_batches`` batches of its sampler."""
    ckpt = read_checkpoint(run_dir, "cpu")
    require(ckpt, ("agent", "args", "step", "optimizer"), run_dir, "measuring gradients")
    args = args_from(Args, ckpt["args"], run_dir)
    if args.ab.ab_weight == 0:
        raise SystemExit(f"{run_dir}: a base-only run (--ab-weight 0) has no bootstrapping "
                         "gradient; give an AB run")
    torch.manual_seed(args.seed)
    agent, sampler = build_agent(args, build_datasets(args))
    agent.train()
    batches = [sampler.sample() for _ in range(n_batches)]
    states = {"init": gradient_stats(agent, batches)}
    agent.load_state_dict(ckpt["agent"])
    denominator = adam_denominator(args, agent, ckpt["optimizer"])
    states[f"step {ckpt['step']}"] = gradient_stats(agent, batches, denominator)
    return args, states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="train_value.py run folders (AB runs)")
    p.add_argument("--batches", type=int, default=16, help="batches per state")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    a = p.parse_args()
    if a.batches < 2:
        p.error(f"--batches ({a.batches}) must be >= 2 (the spread needs two)")
    torch.set_num_threads(a.threads)
    print(f"machine: {cpu_model()}, {a.threads} thread(s); {a.batches} batches per state\n")
    print("| run | data | base | state | |g_ab| / |g_base| | cos | cos of means | Adam share |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for run_dir in a.runs:
        args, states = run_states(run_dir, a.batches)
        for state, stats in states.items():
            cells = ["-" if v is None else f"{v[0]:.3f} +- {v[1]:.3f}" if v[1] else f"{v[0]:.3f}"
                     for v in stats.values()]
            print(f"| {run_dir.name} | {args.dataset} | {args.ab.base} | {state} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
