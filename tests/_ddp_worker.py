"""One rank of tests/test_distributed.py, launched by ``torchrun --nproc-per-node 2``.

    python -m torch.distributed.run --nproc-per-node 2 tests/_ddp_worker.py OUT

Writes ``OUT/rank<r>.json``:

- ``same_samples``: per base, the largest difference of the first step's gradients and of
  the weights after 3 steps between this 2-rank DDP run (each rank its half of one 2B batch)
  and a one-process reference on the same samples (computed before the process group starts):
  DINO on the whole 2B batch; SimCLR, CLIP and a base-only SimCLR run (``--ab-weight 0``: the
  AB branch gets no gradient) on the mean of the two halves' losses (their negatives are per
  rank); plus the weights' digest (the ranks must agree bit for bit);
- ``diverged``: the message of ``Ranks.check_same`` after rank 1's weights were nudged;
- ``runs``: the digest of the agent after each ``train()`` call of the real training job
  (4 steps; the same stopped at 2 and resumed to 4; one where rank 1 alone gets SIGTERM
  twice during step 2), recorded by a wrapper of ``train_step``, and what ``train`` returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import agents.train_value as tv  # noqa: E402
from agents.infra.distributed import LossModule, Ranks, launched  # noqa: E402
from agents.infra.sources import build_datasets  # noqa: E402
from agents.infra.train_utils import build_agent, cosine_schedule, make_optimizer  # noqa: E402
from agents.method.data import Batch  # noqa: E402
from agents.train_value import train_step  # noqa: E402

TINY = ["--dataset-size", "16", "--scene-size", "48", "--view-size", "32", "--base-batch", "4",
        "--proj-dim", "16", "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth",
        "1", "--warmup-steps", "1", "--boot-images", "2", "--n-views", "3", "--threads", "1",
        "--n-prototypes", "32", "--no-tensorboard", "--no-probe", "--log-every", "1",
        "--checkpoint-every", "2", "--value-batches", "1", "--probe-test", "4",
        "--probe-train", "4", "--device", "cpu"]  # gloo on the CPU, also on a 1-GPU machine
STEPS = 3
CASES = {"dino": ["--base", "dino"], "simclr": ["--base", "simclr"], "clip": ["--base", "clip"],
         "simclr_base_only": ["--base", "simclr", "--ab-weight", "0"]}  # AB branch unused


def digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def half(batch: Batch, r: int, world: int) -> Batch:
    """Rank ``r``'s share of a global batch: its block of base images and bootstrap images."""
    b, bb = batch.base_views.shape[1] // world, batch.boot_boxes.shape[0] // world
    m = batch.boot_views.shape[0] // world
    rows = slice(r * m, (r + 1) * m)
    return Batch(
        base_views=batch.base_views[:, r * b:(r + 1) * b],
        base_index=batch.base_index[r * b:(r + 1) * b],
        captions=None if batch.captions is None else batch.captions[r * b:(r + 1) * b],
        boot_views=batch.boot_views[rows], boot_boxes=batch.boot_boxes[r * bb:(r + 1) * bb],
        boot_index=batch.boot_index[r * bb:(r + 1) * bb], actions=batch.actions[rows])


class MeanOfHalves(nn.Module):
    """The one-process reference of a per-rank loss: the mean of the halves' losses."""

    def __init__(self, agent, world: int) -> None:
        super().__init__()
        self.agent, self.world = agent, world

    def forward(self, batch, gauges: bool = True, to_host: bool = True, enc=None):
        out = [self.agent.loss(half(batch, r, self.world), gauges) for r in range(self.world)]
        return sum(loss for loss, _ in out) / self.world, out[0][1]


def steps(args, data, world: int, rank: int | None, ranks: Ranks) -> dict:
    """STEPS steps on 2B-image batches drawn identically on every rank: the whole batch
    (rank None, one process) or rank ``rank``'s half (DDP)."""
    big = replace(args, base_batch=args.base_batch * world, boot_images=args.boot_images * world)
    _, sampler = build_agent(big, data)  # the global batches, the same stream everywhere
    torch.manual_seed(args.seed)
    agent, _ = build_agent(args, data)
    optimizer, _ = make_optimizer(args, agent, None)
    if rank is None:
        model = LossModule(agent) if args.ab.base == "dino" else MeanOfHalves(agent, world)
    else:
        model = ranks.wrap(agent, torch.device("cpu"))
    lr = cosine_schedule(args.lr, args.min_lr, STEPS, args.warmup_steps)
    grads = None
    for k in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = float(lr[k])
        batch = sampler.sample("cpu", bootstrap=True)
        train_step(model, agent, optimizer, None, batch if rank is None else half(
            batch, rank, world), None, args.grad_clip, 0.5, ranks, k)
        if k == 0:
            grads = {n: p.grad.clone() for n, p in agent.online.named_parameters()
                     if p.grad is not None}
    return {"agent": agent, "grads": grads}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].numel())


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ranks = launched()
    world = ranks.world_size
    results: dict = {"rank": ranks.rank, "same_samples": {}}
    cases = {}
    for case, flags in CASES.items():
        args = tv.parse_args(TINY + flags + ["--runs-dir", str(out / "runs")])
        data = build_datasets(args)
        cases[case] = (args, data, steps(args, data, world, None, Ranks()))  # no group yet
    ranks.start(torch.device("cpu"))
    for case, (args, data, ref) in cases.items():
        got = steps(args, data, world, ranks.rank, ranks)
        results["same_samples"][case] = {
            "grad_diff": max_diff(got["grads"], ref["grads"]),
            "weight_diff": max_diff(got["agent"].state_dict(), ref["agent"].state_dict()),
            "grad_scale": max(float(g.abs().max()) for g in ref["grads"].values()),
            "digest": digest(got["agent"])}
        if case == "dino":
            results["same_samples"]["dino"]["center_norm"] = float(got["agent"].center.norm())
    agent = got["agent"]
    with torch.no_grad():
        if ranks.rank == 1:
            next(agent.online.parameters()).view(-1)[0] += 1e-3
    try:
        ranks.check_same(agent.state_dict())
        results["diverged"] = ""
    except RuntimeError as e:
        results["diverged"] = str(e)

    # the real training job: 4 steps; the same stopped at 2 and resumed at this world size
    last: dict[str, str] = {}
    real_step = tv.train_step

    def recording_step(model, agent, *a, **kw):
        metrics = real_step(model, agent, *a, **kw)
        last["digest"] = digest(agent)
        if signal_at.get(ranks.rank) == kw.get("step", a[-1]) + 1:  # this rank alone, twice
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    tv.train_step = recording_step
    results["runs"] = {}
    # (--stop-at 4 of 5 steps: no final report, whose plots take longer than the training)
    base = TINY + ["--base", "dino", "--runs-dir", str(out / "runs"), "--total-steps", "5"]
    signal_at: dict[int, int] = {}
    for name, argv in [("whole", base + ["--name", "whole", "--stop-at", "4"]),
                       ("stopped", base + ["--name", "split", "--stop-at", "2"]),
                       ("resumed", ["--resume", str(out / "runs" / "split"), "--stop-at", "4",
                                    "--device", "cpu"]),
                       # the value phase: a second DDP wrapper, of the branch alone (steps 4-5)
                       ("phase", TINY + ["--base", "dino", "--runs-dir", str(out / "runs"),
                                         "--total-steps", "3", "--value-steps", "3",
                                         "--stop-at", "5", "--name", "phase"]),
                       # and on cached batches: each rank's own pool, one averaged gradient
                       ("cached", TINY + ["--base", "dino", "--runs-dir", str(out / "runs"),
                                          "--total-steps", "3", "--value-steps", "3",
                                          "--value-cache", "2", "--stop-at", "5",
                                          "--name", "cached"]),
                       ("signalled", base + ["--name", "signalled"])]:  # the last: signal_at
        if name == "signalled":
            signal_at[1] = 2  # SIGTERM reaches rank 1 only, twice, during step 2
        summary = tv.train(tv.parse_args(argv), given=tv.cli_given(argv))
        results["runs"][name] = {"digest": last["digest"], "step": summary.get("step"),
                                 "signal": summary.get("signal", 0)}
    (out / f"rank{ranks.rank}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
