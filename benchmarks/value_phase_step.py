"""The value phase's step: batches drawn and encoded every step against cached ones.

Rows, one process, the ``cpu-small`` agent (fresh weights: the cost does not depend on them)
in the value phase (``ABAgent.fit_value_only``), each step the training loop's own
``train_step`` (loss, backward, clip, AdamW, EMA, finiteness check):

- ``drawn, B images``: every step draws a batch (``B`` bootstrap images x ``n_views`` views)
  and encodes it, as ``--value-steps`` alone does;
- ``cached, B images``: the batches come from a :class:`agents.infra.train_utils.ValuePool`
  (``--value-cache``), encoded once before the timing; ``B`` is ``--value-boot-images``.

Rows are warmed up, then timed in ``--rounds`` interleaved rounds of ``--steps`` steps; the
median round is reported, with the cost per thousand ordered view pairs (what the value
function learns from).

    .venv/bin/python -m benchmarks.value_phase_step [--threads 2] [--sizes 10 40] \
        [--value-gamma 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from agents.infra.config import parse_args
from agents.infra.distributed import launched
from agents.infra.sources import build_datasets
from agents.infra.train_utils import ValuePool, build_agent, make_optimizer
from agents.train_value import train_step
from benchmarks._machine import cpu_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 40],
                   help="bootstrap images per batch of the cached rows (the drawn row: the first)")
    p.add_argument("--pool", type=int, default=20, help="cached batches per cached row")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds per row")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--value-gamma", type=float, default=None,
                   help="the phase's discount (--value-gamma; none: the agent's, 0.5)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    args = parse_args(["--no-probe", "--dataset-size", "512"])
    data = build_datasets(args)
    torch.manual_seed(0)
    agent, sampler = build_agent(args, data)
    optimizer, _ = make_optimizer(args, agent, None)
    agent.fit_value_only(gamma=a.value_gamma)
    ranks = launched()
    model = ranks.wrap(agent, torch.device("cpu"))

    def cached(size):  # the pool draws at the sampler's batch size
        sampler.boot_images = size
        return ValuePool(agent, sampler, a.pool, "cpu")

    sources = [(f"drawn, {a.sizes[0]} images", a.sizes[0], lambda i: (sampler.sample(), None))]
    sources += [(f"cached, {s} images", s, cached(s)) for s in a.sizes]
    times: dict[str, list[float]] = {name: [] for name, _, _ in sources}
    step = 0
    for r in range(a.rounds + 1):  # round 0: warm-up
        for name, size, source in sources:
            sampler.boot_images = size
            t = time.perf_counter()
            for _ in range(a.steps):
                batch, enc = source(step)
                train_step(model, agent, optimizer, None, batch, None, 3.0, 0.01, ranks, step,
                           gauges=False, enc=enc)
                step += 1
            if r:
                times[name].append((time.perf_counter() - t) / a.steps)
    pairs = {name: size * args.n_views * (args.n_views - 1) for name, size, _ in sources}
    print(f"{cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__}")
    print(f"value-phase step, cpu-small, {args.n_views} views per image, gamma {agent.gamma:g}, "
          f"{a.threads} threads, median of {a.rounds} rounds of {a.steps} steps\n")
    print("| batches | ordered pairs / step | ms / step | ms / 1000 pairs |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        ms = 1000 * statistics.median(ts)
        print(f"| {name} | {pairs[name]} | {ms:.0f} | {1000 * ms / pairs[name]:.0f} |")


if __name__ == "__main__":
    main()
