"""The boilerplate of ``agents/train_value.py``: agent and optimiser construction (the datasets:
:mod:`agents.infra.sources`), the per-step schedules, and the final report (value accuracy by IoU,
probes, plots). Checkpoints live in :mod:`agents.infra.checkpoint`, run folders (names, locks,
resume) in
:mod:`agents.infra.runs`, the ranks of a torchrun launch in :mod:`agents.infra.distributed`, the
loop's
outputs in :mod:`agents.infra.progress`. The training step and loop live in the script."""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from agents.evaluation.export import ENCODER_DIR, export_encoder
from agents.infra.checkpoint import (
    CHECKPOINT,
    save_checkpoint,  # noqa: F401 - re-exported (tests, benchmarks)
)
from agents.infra.checkpoint import write_checkpoint as atomic_save  # noqa: F401 - re-exported
from agents.infra.config import resolved
from agents.infra.distributed import rank_seed
from agents.infra.sources import source_kwargs, sync_streams
from agents.method.ab import VALUE_BRANCH, ABAgent, Encoded
from agents.method.data import Batch, TransitionSampler
from agents.method.networks import make_encoder
from agents.method.text import WordTokenizer
from imgmdp_env.datasets import ImageDataset

__all__ = [
    "build_agent",
    "cosine_schedule",
    "ema_rates",
    "final_report",
    "finish_run",
    "make_optimizer",
    "start_value_phase",
    "ValuePool",
]


def cosine_schedule(base: float, final: float, steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """DINO-style per-step schedule: linear warm-up from ``warmup_start`` to ``base`` over
    ``warmup_steps``, then a cosine from ``base`` to ``final``. Returns ``(steps,)`` float64."""
    warmup_steps = min(warmup_steps, steps)
    warm = np.linspace(warmup_start, base, warmup_steps, endpoint=False)
    t = np.arange(steps - warmup_steps) / max(steps - warmup_steps, 1)
    return np.concatenate([warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * t))])


PAPER_EMA_RATE = 0.004  # the paper's rate per step (momentum 0.996), set for 800M views
EMA_RUN_FRACTION = 40  # auto rate: the target's time constant is 1/40 of the run


def ema_rates(rate: float, schedule: str, total_steps: int) -> np.ndarray:
    """Per-step EMA rates ``(total_steps,)`` float64 of the target network.

    rate: 1 - momentum; ``0`` = auto: ``max(0.004, 40 / total_steps)``, computed here and
    not in :func:`agents.infra.config.resolved` (with the other "0 = auto" values) because it
    depends on ``total_steps``, which ``--resume`` may change: each (re)start recomputes it.
    Why this rule: the paper's 0.004, annealed to 0, was set for runs of ~10^5 steps; in a run
    of 10^3 steps a target with a time constant of 250 steps lags behind the online network
    for most of the run (at 600 steps it still held ~30% of its initial weights) and its flat
    annotation distribution gives the bootstrapping loss nothing to predict. Tying the time
    constant to the run length keeps the target a recent copy at any budget and gives back the
    paper's rate for long runs.
    schedule: ``"constant"`` or ``"cosine"`` (annealed to 0). ``rate = 1`` (no EMA: the target
    is the online network) is never annealed.
    """
    if rate == 0:
        rate = max(PAPER_EMA_RATE, EMA_RUN_FRACTION / max(total_steps, 1))
    rate = min(rate, 1.0)
    if schedule == "cosine" and rate < 1:
        return cosine_schedule(rate, 0.0, total_steps)
    return np.full(total_steps, rate)


def schedules(args) -> tuple[np.ndarray, np.ndarray]:
    """The learning rate and the EMA rate of every step, ``(all_steps,)`` float64 each:
    pre-training's (:func:`cosine_schedule`, :func:`ema_rates`), then the value phase's
    (``--value-steps``): ``--value-lr``, constant or a cosine to 0 (``--value-schedule``),
    and the auto EMA rule applied to the phase's length (or ``--ema-rate``), so that the
    target's branch follows within a fortieth of the phase."""
    phase = args.phase_steps
    lr = cosine_schedule(args.lr, args.min_lr, args.total_steps, args.warmup_steps)
    ema = ema_rates(args.ema_rate, args.ema_schedule, args.total_steps)
    value_lr = (cosine_schedule(args.value_lr, 0.0, phase) if args.value_schedule == "cosine"
                else np.full(phase, args.value_lr))
    return (np.concatenate([lr, value_lr]),
            np.concatenate([ema, ema_rates(args.ema_rate, "constant", phase)]))


VALUE_POOL_SEED = 7_000_003  # the value phase's cached batches (--value-cache): their streams
MAX_POOL_PASSES = 8  # more passes over the cached batches than this: warned (the pool is fitted)


def start_value_phase(args, agent: ABAgent, optimizer: torch.optim.Optimizer,
                      sampler: TransitionSampler, data: dict[str, ImageDataset],
                      device: torch.device | str, step: int) -> ValuePool | None:
    """The value phase's mode (:meth:`agents.method.ab.ABAgent.fit_value_only`), at ``step``:
    its first (``args.total_steps``) or one inside it (a resume). At the first step the AB
    branch's Adam moments start afresh, since those of pre-training's last, decayed steps
    would scale the phase's first thousand updates (beta2 = 0.999; measured: the phase gains
    half as much over copy with them, docs/results.md). ``--value-boot-images`` resizes the
    sampler's bootstrap batch. Returns the :class:`ValuePool` of ``--value-cache`` (None
    without one)."""
    agent.fit_value_only(gamma=args.value_gamma)
    if step == args.total_steps:
        for p in agent.value_parameters():
            optimizer.state.pop(p, None)
    if args.value_boot_images:
        sampler.boot_images = args.value_boot_images
    if not args.value_cache:
        return None
    passes = args.phase_steps / args.value_cache
    if step == args.total_steps and passes > MAX_POOL_PASSES:
        warnings.warn(
            f"--value-steps {args.phase_steps} cycles the --value-cache {args.value_cache} "
            f"batches {passes:.0f} times: the value function then fits the pool (on scenes, "
            "seed 1, 700 -> 2500 steps on 100 batches: far pairs +0.044 -> +0.038 over copy; "
            f"docs/results.md section 2); --value-cache "
            f"{math.ceil(args.phase_steps / MAX_POOL_PASSES)} keeps it to {MAX_POOL_PASSES} "
            "passes", stacklevel=2)
    sync_streams(data, args.total_steps, sampler, agent)  # the buffer of the phase's start
    return ValuePool(agent, sampler, args.value_cache, device)


class ValuePool:
    """The value phase's batches, drawn and encoded once (``--value-cache``) and cycled.

    In the phase the encoders, the base head and the annotations are frozen, so a cached
    :class:`~agents.method.ab.Encoded` is bit for bit what a fresh pass would give: a step on
    the pool computes the same loss as one on a new batch, without rendering or encoding (on
    2 CPU threads about 1.7x faster at 10 bootstrap images; the branch alone is left). What
    is given up is variety: ``n`` batches of views, not a new one per step.

    The batches come from ``sampler``'s streams reseeded from its seed (``--seed`` and the
    rank) plus :data:`VALUE_POOL_SEED`, then restored: the pool depends on the seed, the rank
    and the frozen weights alone, so a resume inside the phase rebuilds the same pool, and the
    sampler's own streams are untouched. Each cached batch keeps only its annotation crops of
    ``base_views`` (``(V, L, 3, h, w)``: the phase reads nothing else of them)."""

    def __init__(self, agent: ABAgent, sampler: TransitionSampler, n: int,
                 device: torch.device | str) -> None:
        if not agent.value_only:
            raise ValueError("ValuePool caches the value phase's encodings: the agent must be "
                             "in the phase (agent.fit_value_only())")
        state = sampler.state_dict()
        sampler.reseed(sampler.seed + VALUE_POOL_SEED)
        self.items: list[tuple[Batch, Encoded]] = []
        try:
            with torch.no_grad():
                for _ in range(n):
                    batch = sampler.sample(device, bootstrap=True)
                    enc = agent.encode(batch)
                    ann = batch.base_views[:, :agent.n_annotations(batch)].clone()
                    self.items.append((replace(batch, base_views=ann), enc))
        finally:
            sampler.load_state_dict(state)

    def __len__(self) -> int:
        return len(self.items)

    def __call__(self, i: int) -> tuple[Batch, Encoded]:
        """The ``i``-th step's batch and its encodings (``i`` counted from the phase's start;
        the pool is cycled)."""
        return self.items[i % len(self.items)]


def build_agent(args, data: dict[str, ImageDataset], rank: int = 0,
                render_device: torch.device | str = "cpu") -> tuple[ABAgent, TransitionSampler]:
    """The agent (fresh weights from the current torch seed) and its batch sampler (its
    streams seeded by ``--seed`` and the rank: :func:`agents.infra.distributed.rank_seed`; its
    views rendered on ``render_device``)."""
    args = resolved(args)  # the "0 = auto" sizes (ann_batch, boot_images) made explicit
    cfg = args.ab
    tokenizer, text_dim, captions = None, 384, None
    if cfg.base == "clip":
        captions = data["base"].captions
        if captions is None:
            raise SystemExit(f"--base clip needs captions; dataset {args.dataset!r} has none")
        if cfg.text_backbone == "words":
            tokenizer = WordTokenizer.from_captions(captions)
    agent = ABAgent(make_encoder(args.encoder, args.view_size), cfg, tokenizer, text_dim)
    inputs = agent.caption_inputs(captions)
    if inputs is not None and inputs.is_floating_point():
        agent.text_dim = inputs.shape[1]
    sampler = TransitionSampler(
        data["base"], data["boot"], base=cfg.base, view_size=args.view_size,
        base_batch=args.base_batch, boot_images=args.boot_images,
        n_views=args.n_views, boot_scale=tuple(args.boot_scale),
        base_scale=tuple(args.base_scale), candidates=cfg.candidates, n_random=cfg.n_random,
        caption_inputs=inputs, color_jitter=args.color_jitter,
        boot_color_jitter=args.boot_color_jitter, boot_source=args.boot_source,
        boot_annotated=cfg.annotated_boot,
        seed=rank_seed(args.seed, rank), render_device=render_device,
    )
    return agent, sampler




def make_optimizer(args, agent: ABAgent, amp: torch.dtype | None):
    """AdamW on the online network (no weight decay on vectors, positions and embeddings),
    and a GradScaler for fp16. Each parameter group carries ``lr_scale``, the factor the
    training loop applies to the scheduled learning rate: ``--value-lr-scale`` for the AB
    branch (:data:`VALUE_BRANCH`, in groups of their own only when the scale is not 1, so
    that the optimizer state keeps its two groups by default), 1 for the rest; ``decay``
    marks the groups ``--weight-decay`` applies to (a resume may change it)."""
    scale = args.value_lr_scale
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in agent.online.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "pos" in name or "embed" in name
        value = scale != 1.0 and name.startswith(VALUE_BRANCH)
        groups.setdefault((value, plain), []).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": groups.get((value, plain), []),
          "weight_decay": 0.0 if plain else args.weight_decay, "decay": not plain,
          "lr_scale": scale if value else 1.0}
         for value in ((False, True) if scale != 1.0 else (False,)) for plain in (False, True)],
        lr=args.lr)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    return optimizer, scaler


def _plot(run_dir: Path, log: list[dict], value_acc: dict, probes: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r["step"] for r in log]
    for key in ("loss", "base_loss", "ab_loss"):
        if any(key in r for r in log):
            ax[0].plot(steps, [r.get(key, np.nan) for r in log], label=key)
    ax[0].set(xlabel="step", ylabel="loss", title="losses")
    ax[0].legend()
    for key, label in (("value_acc", "value function"), ("copy_acc", "copy the source"),
                       ("value_acc_permuted", "actions moved to other pairs")):
        if any(key in r for r in log):
            ax[1].plot(steps, [r.get(key, np.nan) for r in log], label=label)
    ax[1].set(xlabel="step", ylabel="accuracy", title="value accuracy (train batches)")
    if any("value_acc" in r for r in log):
        ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "losses.png", dpi=100)
    plt.close(fig)
    bins = [k[4:] for k in value_acc if k.startswith("iou_")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(len(bins))
    ax.bar(x - 0.27, [value_acc[f"iou_{b}"] for b in bins], 0.27, label="value function")
    ax.bar(x, [value_acc.get(f"permuted_{b}", np.nan) for b in bins], 0.27,
           label="value function, actions permuted")
    ax.bar(x + 0.27, [value_acc.get(f"copy_{b}", np.nan) for b in bins], 0.27,
           label="copy the source view's annotation")
    ax.set_xticks(x, bins)
    ax.axhline(value_acc["chance"], color="k", ls="--", label="chance (1 / annotations)")
    ax.axhline(value_acc["majority"], color="grey", ls=":", label="most frequent target")
    ax.set(xlabel="IoU(source view, target view)", ylabel="accuracy",
           title="value accuracy by IoU (test images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "value_accuracy_iou.png", dpi=100)
    plt.close(fig)
    if probes:
        names = [p for p in ("linear", "knn", "attentive") if p in next(iter(probes.values()))]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        width = 0.8 / len(probes)
        for k, (label, acc) in enumerate(probes.items()):
            ax.bar(np.arange(len(names)) + k * width, [acc[n] for n in names], width,
                   yerr=[acc.get(f"{n}_sd", 0.0) for n in names], label=label)
        ax.set_xticks(np.arange(len(names)) + width * (len(probes) - 1) / 2, names)
        ax.set(ylabel="test accuracy", title="frozen-encoder probes")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "probes.png", dpi=100)
        plt.close(fig)


def final_report(args, agent: ABAgent, data: dict[str, ImageDataset], run_dir: Path,
                 writer=None) -> dict:
    """Value accuracy by IoU on the fixed probe test images, probes of the trained encoder
    beside random-init twins and raw pixels (:func:`agents.evaluate.probe_report`), plots, and
    ``summary.json``. Prints both tables; returns the summary."""
    from agents.evaluate import (
        describe_probe_sets,
        probe_report,
        probe_sets,
        probe_table,
        run_verdict,
        value_accuracy_by_iou,
        value_table,
    )

    name = args.probe_dataset or args.boot_dataset or args.dataset
    source = source_kwargs(args, name)
    print(f"\nfinal report: loading the fixed probe sets of {name} ...", flush=True)
    train, test = probe_sets(name, args.probe_train, args.probe_test, args.scene_size, **source)
    t0 = time.perf_counter()
    value_acc = value_accuracy_by_iou(agent, test, n_batches=args.value_batches, seed=0,
                                      gamma=args.value_gamma)  # Q's target in the phase
    print(f"value accuracy by IoU of source and target view ({name}, probe test images; "
          f"{time.perf_counter() - t0:.0f} s):")
    print(value_table(value_acc))
    probes: dict[str, dict[str, float]] = {}
    labelled = test.labels is not None or test.object_boxes is not None
    if not args.probe:
        print("probes skipped (--no-probe)")
    elif not labelled:
        print(f"probes skipped: {name!r} has no labels or object boxes to classify (a folder "
              "needs --instances, a COCO instances_*.json, or class subfolders; or pass "
              "--probe-dataset with a labelled dataset such as scenes)")
    else:
        n_twins = args.random_twins if args.probe_baselines else 0
        print(f"\nprobes ({describe_probe_sets(name, train, test, **source)}), the encoder, "
              f"{n_twins} random-init twins and raw pixels:", flush=True)
        probes = probe_report(agent.encoder, train, test, view_size=args.view_size,
                              n_random=n_twins, raw_pixels=args.probe_baselines,
                              max_samples=args.probe_max_samples,
                              log=lambda line: print(line, flush=True))
        print(probe_table(probes))
    log = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln]
    _plot(run_dir, log, value_acc, probes)
    verdict = run_verdict(value_acc, probes, run_dir, args.phase_steps > 0)
    summary = {"step": args.all_steps, "value_accuracy_by_iou": value_acc, "probes": probes,
               "verdict": verdict, "final": log[-1] if log else {}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if writer is not None:
        for label, acc in probes.items():
            for k, v in acc.items():
                writer.add_scalar(f"probe/{label}/{k}", v, args.all_steps)
    print(f"run folder: {run_dir}")
    print(verdict)
    return summary


def finish_run(args, agent: ABAgent, data: dict[str, ImageDataset], run_dir: Path, step: int,
               stop, ranks, writer) -> dict:
    """After the loop: what a stopped or partial run says, or, once training is complete (rank
    0), the exported encoder and the final report. Returns the run's summary."""
    ckpt_path = run_dir / CHECKPOINT
    if not ranks.main:
        return {"step": step, "interrupted": bool(stop.received), "signal": stop.exit_code(),
                "rank": ranks.rank}
    if stop.received:
        print(f"\n{stop.received[0]}: saved {ckpt_path} at step {step}; continue with "
              f"--resume {run_dir}")
        return {"step": step, "interrupted": True, "signal": stop.exit_code()}
    if step < args.all_steps:
        print(f"stopped at step {step}/{args.all_steps}: continue with --resume {run_dir}")
        return {"step": step, "interrupted": False}
    export_encoder(agent.encoder, run_dir / ENCODER_DIR, step=step, source=ckpt_path, replace=True)
    try:
        summary = final_report(args, agent, data, run_dir, writer)
    except KeyboardInterrupt:
        print(f"\ninterrupted during the final report: training is complete and {ckpt_path} "
              f"(step {step}) is kept; --resume {run_dir} runs the report again")
        return {"step": step, "interrupted": True, "signal": stop.exit_code() or 130}
    if writer is not None:
        writer.close()
    return summary
