"""The training loop's outputs (:class:`Progress`: ``log.jsonl``, TensorBoard, the progress
bar; rank 0 only) and the console line of the batch and learning rate
(:func:`describe_batch`)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from agents.infra.distributed import Ranks
from agents.infra.runs import repair_log
from agents.method.data import TransitionSampler

__all__ = ["COLLAPSED", "Progress", "describe_batch"]

COLLAPSED = 0.99
"""``emb_cos`` (:meth:`agents.method.ab.ABAgent.base_loss`) above this after the warm-up: the base
projections of different images are (nearly) one point, and :class:`Progress` warns once."""


def describe_batch(args, sampler: TransitionSampler, world_size: int) -> str:
    """One console line: the global batch of a step (every rank's) and the learning rate.
    The batch flags are per rank; the lr is ``--lr`` as given, never scaled with the number
    of ranks (docs/architecture.md, "How ranks divide the data")."""
    w = world_size
    per = "" if w == 1 else f" ({w} ranks x {args.base_batch})"
    line = f"batch per step: {w * args.base_batch} base images{per}"
    if args.ab.ab_weight > 0 and sampler.boot_images > 0:
        per = "" if w == 1 else f" ({w} ranks x {sampler.boot_images})"
        line += f", {w * sampler.boot_images} bootstrap images{per} x {sampler.n_views} views"
    boot = args.value_boot_images or sampler.boot_images
    how = (f"; {args.value_cache} batches of {boot} bootstrap images, encoded once and cycled"
           if args.value_cache else f"; {boot} bootstrap images" if args.value_boot_images
           else "")
    decay = ", cosine to 0" if args.value_schedule == "cosine" else ""
    decay += "" if args.value_gamma is None else f", gamma {args.value_gamma:g}"
    phase = (f"; then {args.phase_steps} steps of the value phase (the value function alone, "
             f"lr {args.value_lr:g}{decay}{how})" if args.phase_steps else "")
    return (line + f"; lr {args.lr:g} (peak, after {args.warmup_steps} warm-up steps; cosine "
            f"to {args.min_lr:g}" + (", not scaled with the world size)" if w > 1 else ")")
            + phase)


class Progress:
    """The loop's outputs, written by rank 0 only: ``log.jsonl`` (one JSON line per logged
    step: the metrics averaged over the ranks, the lr, the EMA rate, the world size and the
    global base batch, views/s and views seen counting every rank's views), TensorBoard
    scalars, and the tqdm bar or, without a TTY, plain progress lines. On the other ranks
    every method only takes part in the metrics' all-reduce. Use as a context (the log file).

    views_per_step: pre-training's views per step and rank; phase_views_per_step: the value
    phase's, the bootstrap views its value function learns from (drawn or cached)."""

    def __init__(self, args, run_dir: Path, step: int, views_per_step: int, ranks: Ranks,
                 last: int, phase_views_per_step: int = 0) -> None:
        from tqdm import tqdm

        self.args, self.ranks, self.last = args, ranks, last
        self.views = views_per_step * ranks.world_size
        self.phase_views = phase_views_per_step * ranks.world_size
        self.path, self.log, self.writer = run_dir / "log.jsonl", None, None
        self.bar = tqdm(total=args.all_steps, initial=step, desc=run_dir.name,
                        dynamic_ncols=True, disable=None if ranks.main else True)
        self.warned = False  # the collapse warning is printed once
        self.t_last = self.t_start = time.perf_counter()
        self.step_last = self.step_start = step
        self.plain_every = max(args.all_steps // 10, 1)  # progress lines when tqdm is off
        if not ranks.main:
            return
        repair_log(self.path, step)  # drop lines past the checkpoint (and a torn last line)
        if args.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1)

    def __enter__(self) -> Progress:
        if self.ranks.main:
            self.log = self.path.open("a")
        return self

    def __exit__(self, *exc) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def durable(self) -> None:
        """The log up to a checkpoint is made as durable as the checkpoint (rank 0)."""
        if self.log is None:
            return
        self.log.flush()
        os.fsync(self.log.fileno())

    def views_seen(self, step: int) -> int:
        """Views seen by every rank after ``step`` steps: pre-training's, then the phase's."""
        pre = min(step, self.args.total_steps)
        return pre * self.views + (step - pre) * self.phase_views

    def update(self, step: int, metrics: dict[str, float], lr: float, ema_rate: float) -> None:
        """After optimizer step ``step``: the bar, and on log steps a log line (every rank
        must call this: the metrics are averaged over the ranks on log steps)."""
        args = self.args
        if step % args.log_every == 0 or step == self.last:
            metrics = self.ranks.mean(metrics)
            now = time.perf_counter()
            seen = self.views_seen(step)
            vps = (seen - self.views_seen(self.step_last)) / max(now - self.t_last, 1e-9)
            self.t_last, self.step_last = now, step
            record = {"step": step, **metrics, "lr": lr, "ema_rate": ema_rate,
                      "views_per_s": vps, "views_seen": seen,
                      "world_size": self.ranks.world_size,
                      "global_base_batch": self.ranks.world_size * args.base_batch}
            if self.log is not None:
                self.log.write(json.dumps(record) + "\n")
                self.log.flush()
            if self.writer is not None:
                for k, v in record.items():
                    if k != "step":
                        self.writer.add_scalar(f"train/{k}", v, step)
            self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", views_s=f"{vps:.0f}")
            self.warn_collapse(step, metrics)
        self.bar.update(1)
        if self.ranks.main and self.bar.disable and (step % self.plain_every == 0
                                                     or step == self.last):
            rate = (step - self.step_start) / max(time.perf_counter() - self.t_start, 1e-9)
            print(f"step {step}/{args.all_steps} loss {metrics['loss']:.3f} "
                  f"{rate * self.views:.0f} views/s "
                  f"ETA {(args.all_steps - step) / max(rate, 1e-9):.0f} s", flush=True)

    def warn_collapse(self, step: int, metrics: dict[str, float]) -> None:
        """Once per run, on rank 0: a warning on stderr when ``emb_cos`` (logged on every log
        step) is above :data:`COLLAPSED` after the warm-up."""
        cos = metrics.get("emb_cos", 0.0)
        if self.warned or not self.ranks.main or step <= self.args.warmup_steps or not (
                cos > COLLAPSED):
            return
        self.warned = True
        print(f"\nwarning: at step {step} the base projections of different images have a mean "
              f"cosine of {cos:.4f} (emb_cos in log.jsonl; {COLLAPSED} and above counts as "
              f"collapsed): the {self.args.ab.base} representation has collapsed to nearly one "
              "point and its features will probe near chance. Training goes on. For DINO on a "
              "CNN, --head-norm batch avoids it (docs/results.md section 8).",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.flush()
