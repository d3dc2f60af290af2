"""Training views per second streaming from webdataset shards vs from RAM, on the same images.

The images: ``--images`` procedural scenes at 96 px written once as JPEG shards (``--per-shard``
samples each, the img2dataset layout) in a temporary folder. Rows, one training set-up each
(the step of ``agents/train_value.py``: ``sync_streams``, sample, AB_SimCLR loss, backward,
AdamW, EMA update; the same agent seeded with 0 and the same sampler seed):

- ``RAM``: every image of the shards decoded into RAM first (``read_shards``), the sampler
  over all of them.
- ``stream, refresh every R``: a :class:`imgmdp_env.datasets.stream.ShardStream` of
  ``--buffer`` images; every ``R`` steps half of them are replaced by the next samples of the
  shards, decoded by the stream's background thread while the steps run. ``--refresh``
  (default 25: 256 new images every 25 steps, 10 a step, the rate of ``train_value.py``'s
  defaults, 1024 of a 2048-image buffer every 100 steps) and ``--fast-refresh`` (default 5:
  5x that rate). Both refresh within the timed steps.

Each row is warmed up, then timed in ``--rounds`` interleaved rounds of ``--steps`` steps (so
load changes hit every row alike); the median round is reported, with the process CPU time
per step (all threads, the stream's decoder included) and, for the streams, the seconds the
training thread waited on a refresh. Goal: a stream within 10% of RAM.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.shard_throughput --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch

from agents.infra.config import with_flags
from agents.infra.sources import sync_streams
from agents.infra.train_utils import build_agent, make_optimizer
from agents.train_value import PRESETS
from benchmarks._machine import cpu_model
from imgmdp_env.datasets import make_dataset
from imgmdp_env.datasets.shards import read_shards, write_shards
from imgmdp_env.datasets.stream import ShardStream


class Row:
    def __init__(self, name: str, args, data) -> None:
        torch.manual_seed(0)
        self.name, self.args, self.data = name, args, data
        self.agent, self.sampler = build_agent(args, {"base": data, "boot": data})
        self.agent.train()
        self.optimizer, _ = make_optimizer(args, self.agent, None)
        self.views = self.sampler.views_per_step(True)
        self.step_no, self.rounds, self.cpu, self.waits = 0, [], [], []

    def step(self) -> float:
        """One training step; returns the seconds spent moving the stream to this step."""
        t0 = time.perf_counter()
        sync_streams({"base": self.data}, self.step_no)
        wait = time.perf_counter() - t0
        batch = self.sampler.sample("cpu", bootstrap=True)
        loss, _ = self.agent.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.agent.online.parameters(), self.args.grad_clip)
        self.optimizer.step()
        self.agent.update_target(0.01)
        self.step_no += 1
        return wait


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048, help="scenes written to the shards")
    p.add_argument("--per-shard", type=int, default=256, help="samples per shard")
    p.add_argument("--buffer", type=int, default=512, help="images in the stream's buffer")
    p.add_argument("--refresh", type=int, default=25, help="steps between refreshes of the "
                   "first stream row")
    p.add_argument("--fast-refresh", type=int, default=5, help="steps between refreshes of the "
                   "harsher stream row")
    p.add_argument("--batch", type=int, default=64, help="base batch (the cpu-small preset)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=6, help="interleaved timed rounds per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    tmp = tempfile.TemporaryDirectory(prefix="shards-")
    t0 = time.perf_counter()
    scenes = make_dataset("scenes", n=a.images, size=96, seed=0)
    paths = write_shards(scenes, os.path.join(tmp.name, "shard-%04d.tar"), a.per_shard, "jpg")
    print(f"wrote {a.images} scenes (96 px, JPEG q95) to {len(paths)} shards in "
          f"{time.perf_counter() - t0:.1f} s")
    spec = ",".join(paths)
    t0 = time.perf_counter()
    ram = read_shards(spec, max_side=256)
    print(f"RAM: decoded {len(ram)} images in {time.perf_counter() - t0:.1f} s")

    args = with_flags(PRESETS["cpu-small"], base="simclr", base_batch=a.batch, seed=0,
                      threads=a.threads)
    rows = [Row("RAM (every image decoded first)", args, ram)]
    for every in (a.refresh, a.fast_refresh):
        stream = ShardStream(spec, buffer=a.buffer, refresh_every=every, seed=0, max_side=256)
        rows.append(Row(f"stream, {a.buffer}-image buffer, half replaced every {every} steps",
                        args, stream))
    for row in rows:
        for _ in range(a.warmup):
            row.step()
    for _ in range(a.rounds):
        for row in rows:
            t0, c0, wait = time.perf_counter(), time.process_time(), 0.0
            for _ in range(a.steps):
                wait += row.step()
            row.rounds.append((time.perf_counter() - t0) / a.steps)
            row.cpu.append((time.process_time() - c0) / a.steps)
            row.waits.append(wait / a.steps)
    refreshes = [(a.warmup + a.rounds * a.steps - 1) // every for every in (a.refresh,
                                                                              a.fast_refresh)]

    base = statistics.median(rows[0].rounds)
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}"
          f", threads={torch.get_num_threads()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"base batch {a.batch} (2 crops each) + {rows[0].sampler.boot_images} bootstrap "
          f"images x {rows[0].sampler.n_views} views at {args.view_size} px, cnn encoder; "
          f"median of {a.rounds} interleaved rounds of {a.steps} steps\n")
    print("| source | views/s | vs RAM | ms/step | CPU ms/step | refresh wait ms/step |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        sec = statistics.median(row.rounds)
        print(f"| {row.name} | {row.views / sec:.0f} | {base / sec:.2f}x | {1000 * sec:.0f} | "
              f"{1000 * statistics.median(row.cpu):.0f} | "
              f"{1000 * statistics.median(row.waits):.1f} |")
    print(f"\nrefreshes during the run: {refreshes[0]} and {refreshes[1]} "
          f"({a.buffer // 2} new images each)")
    for row in rows[1:]:
        row.data.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
