"""Training views per second: the AB step beside the base-only step and lightly's SimCLR.

Rows, measured in one run, on the same backbone (one initial encoder, copied), the same data
(the same :class:`agents.method.data.TransitionSampler` stream) and the same base batch:

- ``AB_SimCLR``: :meth:`agents.method.ab.ABAgent.loss` with ``ab_weight=1``: ``2 B`` augmented base
  views and ``B/8`` images x 4 un-augmented bootstrap views (the paper's ratios), the EMA
  target on the bootstrap views, then AdamW and the EMA update.
- ``SimCLR (ours, ab_weight=0)``: the same agent and code path with the bootstrapping term off:
  ``2 B`` base views; AdamW and the EMA update.
- ``AB_SimCLR, pairs = base crops``: the cheap variant (``--boot-source base``): the two
  augmented crops of the first ``B/2`` base images are the bootstrap pairs, so the online
  encoder sees no extra view; the target encodes the annotation crops and the second crops.
- ``SimCLR (lightly)``: the same encoder -> ``encoder.pool`` -> lightly's
  ``SimCLRProjectionHead`` -> ``lightly.loss.NTXentLoss`` (lightly's SimCLR recipe), AdamW, on
  the same ``2 B`` base views.

A step is: sample the batch (crop kernel + augmentation, on the CPU), forward, backward, optimiser
step (and EMA update for ours). ``views/s`` counts the views that go through the online encoder
with gradients. Goals: the AB step costs at most 1.3x the base step (``step vs base``); our
SimCLR step is at least as fast as lightly's. Each row is warmed up, then timed
in ``--rounds`` interleaved rounds of ``--steps`` steps (so load changes hit every row alike);
the median round is reported. ``CPU ms/step`` is the process CPU time (all threads): on a shared
machine, with ``--threads 1``, it is the cost of the step without the time spent descheduled.
``GFLOP/step`` counts the floating-point operations of one loss + backward
(``torch.utils.flop_counter``: matmuls, convolutions, attention; not the elementwise ops or the
optimiser), which no machine load changes: ``FLOPs vs base`` is the ratio the method's batch
implies, the floor of ``step vs base`` once the encoder dominates (large encoders, GPUs).

    .venv/bin/python -m benchmarks.train_throughput [--device cuda] [--encoder vit]

Needs lightly (the ``bench`` extra): ``.venv/bin/pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from agents.infra.config import with_flags
from agents.infra.distributed import Ranks
from agents.infra.train_utils import build_agent, make_optimizer
from agents.method.encoders import Encoder
from agents.method.networks import make_encoder
from agents.train_value import PRESETS, Args, train_step
from benchmarks._machine import cpu_model
from imgmdp_env.datasets import make_dataset


def import_lightly():
    try:
        import lightly
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
    except ImportError as e:
        raise SystemExit(
            f"benchmarks.train_throughput compares against lightly's SimCLR, but lightly is "
            f"not installed ({e}). Install the benchmark extra:\n"
            f"    .venv/bin/pip install -e \".[bench]\"    (or: pip install lightly==1.6.0)\n"
            f"or run with --skip-lightly.") from e
    return lightly.__version__, NTXentLoss, SimCLRProjectionHead


def machine(device: torch.device) -> str:
    cpu = cpu_model()
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"threads={torch.get_num_threads()}, device {dev}, Python {platform.python_version()}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Row:
    """One training set-up: ``step()`` runs one full training step and returns its data time."""

    def __init__(self, name: str, views: int, step: Callable[[], float],
                 flops: float = math.nan) -> None:
        self.name, self.views, self.step, self.flops = name, views, step, flops
        self.rounds: list[float] = []  # seconds per step
        self.cpu: list[float] = []  # process CPU seconds per step (all threads)
        self.data: list[float] = []  # of which, seconds sampling the batch


def ours(name: str, args: Args, ds, device: torch.device, amp: bool,
         render_device: torch.device | str = "cpu") -> Row:
    """The training step of ``agents/train_value.py`` (its own ``train_value.train_step``:
    loss, clipped AdamW update, EMA update, finiteness checks), built by its own helpers from
    ``args``, its views rendered on ``render_device``; the encoder is seeded with 0."""
    torch.manual_seed(0)
    agent, sampler = build_agent(args, {"base": ds, "boot": ds}, render_device=render_device)
    agent.to(device).train()
    optimizer, _ = make_optimizer(args, agent, None)
    bootstrap = args.ab.ab_weight > 0

    ranks = Ranks()  # one process
    with FlopCounterMode(display=False) as counter:  # one loss + backward, not timed
        agent.loss(sampler.sample(device, bootstrap=bootstrap))[0].backward()
    agent.zero_grad(set_to_none=True)

    def step() -> float:
        t0 = time.perf_counter()
        batch = sampler.sample(device, bootstrap=bootstrap)
        t_data = time.perf_counter() - t0
        train_step(agent.loss, agent, optimizer, None, batch, torch.bfloat16 if amp else None,
                   args.grad_clip, args.ema_rate or 0.01, ranks, 0)
        return t_data

    return Row(name, sampler.views_per_step(bootstrap), step, counter.get_total_flops())


def matmul_peak(device: torch.device, amp: bool, n: int = 8192, reps: int = 20) -> float:
    """The FLOP/s of one large matrix product on ``device`` (bf16 with ``amp``, else fp32),
    measured now: the peak the MFU column is a fraction of (n = 1024 on the CPU)."""
    n = n if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if amp else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def encoder_only(name: str, encoder: torch.nn.Module, view_size: int, batch: int,
                 device: torch.device, amp: bool) -> Row:
    """The encoder alone: ``batch`` random uint8 views already on the device, forward + mean
    of the pooled features + backward + fused AdamW (where the device has it): the reference
    that compares our backbone with timm's at the same FLOPs."""
    encoder = encoder.to(device).train()
    views = torch.randint(0, 256, (batch, 3, view_size, view_size), dtype=torch.uint8,
                          device=device)
    opt = torch.optim.AdamW(encoder.parameters(), lr=1e-4, fused=device.type == "cuda")
    is_ours = isinstance(encoder, Encoder)

    def loss() -> torch.Tensor:
        x = views if is_ours else views.float().div_(255.0)  # ours normalises uint8 itself
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            out = encoder(x)
            feats = encoder.pool(out) if is_ours else out
            return feats.float().square().mean()

    with FlopCounterMode(display=False) as counter:
        loss().backward()
    opt.zero_grad(set_to_none=True)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()
        return 0.0

    return Row(name, batch, step, counter.get_total_flops())


def timm_vit(view_size: int):
    """timm's ``vit_small_patch16_224`` at ``view_size`` (no weights downloaded, no head), or
    None when timm is not installed."""
    try:
        import timm
    except ImportError:
        return None
    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0,
                             img_size=view_size)


def lightly_simclr(args: Args, ds, device: torch.device, amp: bool, ntxent, head_cls) -> Row:
    """lightly's SimCLR on the same encoder (seeded with 0) and the same base batches:
    backbone -> pool -> ``SimCLRProjectionHead`` -> ``NTXentLoss``, AdamW at the same lr."""
    torch.manual_seed(0)
    backbone = make_encoder(args.encoder, args.view_size).to(device).train()
    head = head_cls(backbone.embed_dim, args.ab.proj_hidden, args.ab.proj_dim).to(device)
    criterion = ntxent(temperature=args.ab.temperature)
    opt = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=args.lr,
                            weight_decay=args.weight_decay)
    _, sampler = build_agent(args, {"base": ds, "boot": ds})  # the same data stream

    def step() -> float:
        t0 = time.perf_counter()
        views = sampler.sample_base(device)["base_views"]  # (2, B, 3, h, w) uint8
        t_data = time.perf_counter() - t0
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            z = head(backbone.pool(backbone(views.flatten(0, 1))))
            z0, z1 = z.float().chunk(2)
            loss = criterion(z0, z1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return t_data

    return Row("SimCLR (lightly NTXentLoss)", sampler.views_per_step(bootstrap=False), step)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=list(PRESETS), default="cpu-small",
                   help="train_value preset whose heads and decoder every row uses (gpu-vits16: "
                   "ViT-S/16 at 224 by default)")
    p.add_argument("--encoder", default="", help="encoder kind for make_encoder (cnn, vit, "
                   "vits16; default: the preset's)")
    p.add_argument("--view-size", type=int, default=0,
                   help="side of every view in pixels (default: the preset's)")
    p.add_argument("--batch", type=int, default=64, help="base batch B (images, 2 crops each)")
    p.add_argument("--n-views", type=int, default=4, help="views per bootstrap image")
    p.add_argument("--images", type=int, default=512, help="procedural scenes in RAM")
    p.add_argument("--steps", type=int, default=4, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row first")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for every row (default: on for cuda, off for cpu)")
    p.add_argument("--skip-lightly", action="store_true", help="leave out the lightly row")
    p.add_argument("--render-on", choices=("device", "cpu"), default="device",
                   help="where the sampler renders the views (train_value.py --render-on)")
    p.add_argument("--encoder-rows", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the encoder alone, ours and (if installed) timm's ViT-S/16")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    amp = device.type == "cuda" if args.amp is None else args.amp
    lightly_version = None
    if not args.skip_lightly:
        lightly_version, ntxent, head_cls = import_lightly()

    ds = make_dataset("scenes", n=args.images, size=96, seed=0)
    render = device if args.render_on == "device" else torch.device("cpu")
    preset = PRESETS[args.preset]
    args.encoder, args.view_size = (args.encoder or preset.encoder,
                                    args.view_size or preset.view_size)
    train = with_flags(preset, base="simclr", encoder=args.encoder,
                       view_size=args.view_size, base_batch=args.batch, n_views=args.n_views,
                       boot_images=0, seed=0)  # 0: the paper's ratio, base batch / 8 (as printed)
    rows = [
        ours("AB_SimCLR (ours, ab_weight=1)", with_flags(train, ab_weight=1.0), ds, device, amp,
             render),
        ours("SimCLR (ours, ab_weight=0)", with_flags(train, ab_weight=0.0), ds, device, amp,
             render),
        # the cheap variant: the pairs are the base crops of half the base images (no extra
        # online encoder pass; the target encodes the annotation crops and the second crops)
        ours("AB_SimCLR, pairs = base crops (boot_source=base)",
             with_flags(train, ab_weight=1.0, boot_source="base", n_views=2,
                        boot_images=max(args.batch // 2, 1)), ds, device, amp, render),
    ]
    if lightly_version is not None:
        rows.append(lightly_simclr(train, ds, device, amp, ntxent, head_cls))
    lightly_row = 3
    encoder = make_encoder(args.encoder, args.view_size)
    if args.encoder_rows:
        torch.manual_seed(0)
        rows.append(encoder_only(f"encoder alone: ours ({args.encoder})",
                                 make_encoder(args.encoder, args.view_size), args.view_size,
                                 2 * args.batch, device, amp))
        reference = timm_vit(args.view_size)
        if reference is not None:
            rows.append(encoder_only("encoder alone: timm vit_small_patch16_224", reference,
                                     args.view_size, 2 * args.batch, device, amp))
        else:
            print("timm is not installed: no timm reference row (pip install timm)")
    peak = matmul_peak(device, amp)

    for row in rows:
        for _ in range(args.warmup):
            row.step()
        sync(device)
    for _ in range(args.rounds):
        for row in rows:
            data = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                data += row.step()
            sync(device)
            row.rounds.append((time.perf_counter() - t0) / args.steps)
            row.cpu.append((time.process_time() - c0) / args.steps)
            row.data.append(data / args.steps)

    base = statistics.median(rows[1].rounds)
    print(f"machine: {machine(device)}")
    n_params = sum(p.numel() for p in encoder.parameters()) / 1e6
    print(f"preset {args.preset}, encoder {args.encoder} ({n_params:.2f}M params, "
          f"{encoder.num_tokens} tokens x {encoder.embed_dim}), views "
          f"{args.view_size}x{args.view_size}, base batch {args.batch} images x 2 crops, "
          f"bootstrap {max(args.batch // 8, 1)} images x {args.n_views} views, "
          f"amp {'bf16' if amp else 'off'}, lightly {lightly_version or 'not run'}; median of "
          f"{args.rounds} rounds x {args.steps} steps; views rendered on {render}; "
          f"matmul peak measured now: {peak / 1e12:.1f} TFLOP/s "
          f"({'bf16' if amp else 'fp32'})\n")
    print("| step | views/step | ms/step | of which data ms (share) | CPU ms/step | views/s "
          "| step vs base | GFLOP/step | FLOPs vs base | TFLOP/s | MFU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        t, data = statistics.median(row.rounds), statistics.median(row.data)
        flops, ratio, rate, mfu = ("-",) * 4 if math.isnan(row.flops) else (
            f"{row.flops / 1e9:.2f}", f"{row.flops / rows[1].flops:.2f}x",
            f"{row.flops / t / 1e12:.2f}", f"{100 * row.flops / t / peak:.0f}%")
        print(f"| {row.name} | {row.views} | {1e3 * t:.0f} | {1e3 * data:.0f} "
              f"({100 * data / t:.0f}%) | {1e3 * statistics.median(row.cpu):.0f} "
              f"| {row.views / t:,.0f} | {t / base:.2f}x | {flops} | {ratio} | {rate} | {mfu} |")
    if lightly_version is not None:
        ratio = statistics.median(rows[lightly_row].rounds) / base
        print(f"\nAB step / base step: {statistics.median(rows[0].rounds) / base:.2f}x "
              f"(goal <= 1.3x); pairs from the base crops: "
              f"{statistics.median(rows[2].rounds) / base:.2f}x; ours vs lightly SimCLR speed: "
              f"{ratio:.2f}x (goal >= 1.0x)")


if __name__ == "__main__":
    main()
