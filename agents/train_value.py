"""Pre-train an encoder with annotation bootstrapping (AB) on the image view MDP.

    python agents/train_value.py                        # cpu-small preset, embedded "scenes"
    python agents/train_value.py --base dino --gamma 0  # any field of Args, see --help
    python agents/train_value.py --ab-weight 0          # the base method alone (the baseline)
    python agents/train_value.py --preset gpu-vits16    # ViT-S/16 at 224 on a GPU
    python agents/train_value.py --resume runs/<name>   # continue a run exactly

Writes ``runs/<name>/``: ``config.json``, ``log.jsonl`` (one JSON object per logged step),
TensorBoard events, ``checkpoint.pt`` (atomic; the latest state) and PNG plots (losses, probe
accuracy, value accuracy by IoU). Ends with probe accuracies of the trained encoder beside a
randomly initialised twins and raw pixels (``agents.evaluate.probe_report``).

A fresh run never writes into an existing run (``--name`` of one is refused; the default name
takes the next free ``-2``, ``-3``); one process per run folder (``<run>/lock``); ``--resume``
applies the flags that may change (``RESUME_MAY_CHANGE``) and refuses the others; SIGTERM
saves like Ctrl-C. What survives which fault: docs/architecture.md.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):  # `python agents/train_value.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Idle OpenMP threads sleep instead of spinning: with 2 threads on 2 cores, one busy core
# (any other process) otherwise slows each step about 10x. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from agents.arg_checks import check_train_args  # noqa: E402
from agents.checkpoint import CHECKPOINT, restore_checkpoint, save_checkpoint  # noqa: E402
from agents.distributed import Ranks, launched  # noqa: E402
from agents.evaluate import PROBE_MAX_SAMPLES, PROBE_TEST, PROBE_TRAIN  # noqa: E402
from agents.progress import Progress, describe_batch  # noqa: E402
from agents.runs import StopSignals, flags_given, open_run  # noqa: E402
from agents.sources import build_datasets, sync_streams  # noqa: E402
from agents.train_utils import (  # noqa: E402
    build_agent,
    cosine_schedule,
    ema_rates,
    final_report,
    make_optimizer,
    train_step,
)


@dataclass
class Args:
    preset: Literal["cpu-small", "gpu-vits16"] = "cpu-small"
    """named defaults: cpu-small (a few minutes on 2 CPU cores) or gpu-vits16 (ViT-S/16, 224)"""
    name: str = ""
    """run name: the folder runs_dir/name (empty: built from base, encoder, ab_weight, seed)"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    resume: str = ""
    """a run folder or checkpoint to continue exactly (its saved config is used)"""
    seed: int = 1
    """seed of the weights and the data streams"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to train: auto = cuda if available, else cpu"""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """autocast dtype on CUDA (auto = bf16); the CPU always trains in fp32"""
    threads: int = 2
    """torch CPU threads"""

    # data: transitions of the view MDP
    dataset: str = "scenes"
    """images of the base loss: "scenes", "fashion", "fashion-scenes", a folder of images or
    videos, a video file, or webdataset shards (.tar paths, data/shard-{000..009}.tar)"""
    captions: str = ""
    """COCO captions_*.json of a --dataset folder (each image's first caption: --base clip)"""
    instances: str = ""
    """COCO instances_*.json of a --dataset folder (object boxes and classes: the probes)"""
    test_dataset: str = ""
    """held-out source of a file-backed --dataset for the probes and the value accuracy
    (empty: a deterministic --holdout split of --dataset)"""
    test_captions: str = ""
    """COCO captions_*.json of --test-dataset"""
    test_instances: str = ""
    """COCO instances_*.json of --test-dataset"""
    holdout: float = 0.1
    """fraction of a file-backed --dataset held out for testing, chosen by a hash of each file
    name / sample key (the same for every seed and machine); unused with --test-dataset"""
    max_side: int = 256
    """file-backed images are resized on load to this longer side in pixels (0: full size)"""
    memory_budget: float = 0.0
    """GiB the decoded images may take (0: half the RAM): estimated before decoding, refused
    with the figure and the fixes when over"""
    decode_workers: int = 1
    """processes decoding a folder's images (1: the training process)"""
    stream: bool = True
    """shards: stream through a buffer of --dataset-size images (--no-stream: load
    --dataset-size samples into RAM); with --base clip the words of the first buffer's
    captions are the vocabulary"""
    stream_refresh: int = 100
    """shards: steps between buffer refreshes (half the buffer's images are replaced)"""
    frame_stride: int = 30
    """videos: keep every k-th frame"""
    boot_dataset: str = ""
    """images of the bootstrapping loss (empty: the same as dataset; else the decoupled setting)"""
    dataset_size: int = 2048
    """images per training dataset (generated scenes; a random subset of larger sources)"""
    image_size: int = 96
    """side of generated scene images in pixels"""
    view_size: int = 64
    """side of every view (the encoder's input) in pixels"""
    base_batch: int = 64
    """images per base-loss batch (SimCLR/DINO: 2 augmented crops each)"""
    ann_batch: int = 0
    """annotations per step for SimCLR/CLIP (0: base_batch / 2, the paper's ratio)"""
    boot_images: int = 16
    """images per bootstrapping batch (0: base_batch / 8, the paper's ratio; cpu-small: 16 =
    base_batch / 4, since 8 images (96 pairs) a step left the value function far behind)"""
    n_views: int = 4
    """views per bootstrapping image; all n (n - 1) ordered pairs are used"""
    boot_scale: tuple[float, float] = (0.05, 1.0)
    """area range of bootstrapping crops (random resized crop, no other augmentation)"""
    base_scale: tuple[float, float] = (0.08, 1.0)
    """area range of base-loss crops"""
    color_jitter: float = 1.0
    """SimCLR/DINO colour-jitter strength s of the base crops (0 = flip and grayscale only)"""
    boot_color_jitter: float = 0.0
    """colour-jitter strength of the bootstrap views (0: none, the paper's method; > 0: the
    "augmentations" ablation; never flipped)"""
    boot_source: Literal["views", "base"] = "views"
    """bootstrap pairs: fresh un-augmented views (the method), or the 2 augmented crops of the
    first boot_images base images (the cheap variant: no extra encoder pass; needs n_views 2)"""

    # model
    encoder: Literal["cnn", "vit", "vits16"] = "cnn"
    """encoder: small ResNet (cnn), small ViT (vit, patch 8) or ViT-S/16 (vits16)"""
    base: Literal["simclr", "dino", "clip"] = "simclr"
    """base annotation loss: SimCLR crops, DINO prototypes or CLIP captions"""
    proj_dim: int = 128
    """dimension of the embeddings phi, psi, phi_AB, psi_AB"""
    proj_hidden: int = 512
    """hidden width of the projection heads"""
    temperature: float = 0.1
    """initial temperature of p(l|x) (learned)"""
    ab_temperature: float = 0.1
    """initial temperature of Q_AB(l|x,a) (learned, separate)"""
    decoder_width: int = 128
    """width of the annotation decoder"""
    decoder_depth: int = 2
    """transformer decoder layers"""
    decoder_heads: int = 4
    """attention heads of the decoder"""
    n_bins: int = 64
    """bins per box coordinate (the 4 action tokens)"""
    max_shift: float = 4.0
    """box centre offsets are binned on [-max_shift, max_shift] (units of the source view)"""
    max_log_scale: float = 2.5
    """box size ratios are binned on log scale in [-max_log_scale, max_log_scale]"""
    action_tokens: bool = True
    """feed the box tokens to the decoder (False: the paper's no-action-tokens ablation)"""
    n_prototypes: int = 256
    """DINO prototypes (the annotations of the DINO variant)"""
    teacher_temperature: float = 0.04
    """DINO teacher temperature (sharpening)"""
    student_temperature: float = 0.1
    """DINO student temperature"""
    text_backbone: Literal["words", "minilm"] = "words"
    """CLIP text side: a small transformer on words, or frozen all-MiniLM-L6-v2 (optional pkg)"""

    # annotation bootstrapping
    ab_weight: float = 1.0
    """weight of the bootstrapping loss (the paper: 1.0; 0 = the base method alone)"""
    gamma: float = 0.5
    """discount of the bootstrapping target (0 = the earlier version's loss)"""
    candidates: Literal["views", "random"] = "views"
    """candidate a' for max Q: boxes to the other views, or n_random random boxes"""
    n_random: int = 4
    """random candidate boxes per view (candidates = random)"""
    max_mode: Literal["annotation", "scalar"] = "annotation"
    """max over a' per annotation then renormalise, or one a' by its max probability"""
    ema_rate: float = 0.0
    """EMA rate of the target network (1 - momentum; 1.0 = no EMA, the ablation); 0 = auto:
    max(0.004, 40 / total_steps), a time constant of 1/40 of the run, never slower than the
    paper's 0.004"""
    ema_schedule: Literal["constant", "cosine"] = "constant"
    """EMA rate schedule: constant, or cosine-annealed to 0 (the paper's for SimCLR/DINO)"""

    # optimisation
    total_steps: int = 1200
    """optimizer steps"""
    lr: float = 1e-3
    """peak AdamW learning rate"""
    min_lr: float = 1e-5
    """final learning rate of the cosine decay"""
    warmup_steps: int = 50
    """linear learning-rate warm-up steps"""
    weight_decay: float = 0.05
    """AdamW weight decay (matrices only; not biases, norms, temperatures, embeddings)"""
    grad_clip: float = 3.0
    """clip the gradient norm (0 = off)"""

    # logging, checkpoints, evaluation
    log_every: int = 10
    """steps between log lines (JSON lines, TensorBoard, tqdm)"""
    checkpoint_every: int = 200
    """steps between checkpoints (one file, replaced atomically)"""
    stop_at: int = 0
    """stop (with a checkpoint) after this many steps of the schedule; continue with --resume"""
    tensorboard: bool = True
    """write TensorBoard events"""
    probe: bool = True
    """at the end, probe the trained and a random encoder (linear, kNN, attentive)"""
    probe_dataset: str = ""
    """labelled probe data (empty: the bootstrapping dataset)"""
    probe_train: int = PROBE_TRAIN
    """images of the fixed probe train set (the same for every run and seed)"""
    probe_test: int = PROBE_TEST
    """images of the fixed probe test set (also the value-accuracy images)"""
    probe_max_samples: int = PROBE_MAX_SAMPLES
    """at most this many probe samples (objects or images) per split"""
    random_twins: int = 3
    """randomly initialised encoders probed beside the trained one (their mean and sd)"""
    probe_baselines: bool = True
    """probe the baselines (random-init twins, raw pixels) beside the trained encoder; they
    depend only on the probe sets, so a study computes them once (benchmarks/representation.py)"""
    value_batches: int = 16
    """bootstrap batches of probe test images for the value accuracy by IoU"""


PRESETS = {
    "cpu-small": Args(),
    "gpu-vits16": Args(
        preset="gpu-vits16", encoder="vits16", view_size=224, image_size=256, dataset_size=20000,
        base_batch=256, boot_images=0, total_steps=20000, lr=5e-4, min_lr=1e-6, warmup_steps=1000,
        proj_dim=256, proj_hidden=2048, decoder_width=384, decoder_heads=6, n_prototypes=4096,
        log_every=50, checkpoint_every=1000, probe_max_samples=8000, threads=8,
    ),
}

# --resume: these flags may change (applied, each change printed; the schedules are recomputed
# for the new values); any other flag that differs from the run's is refused (data, model,
# loss, seed: the run's identity). RESUME_PER_RUN belong to one invocation, never inherited.
RESUME_MAY_CHANGE = {
    "total_steps", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
    "log_every", "checkpoint_every", "tensorboard", "probe", "probe_dataset", "probe_train",
    "probe_test", "probe_max_samples", "random_twins", "probe_baselines", "value_batches",
    "threads", "device", "precision", "decode_workers", "memory_budget",
}
RESUME_PER_RUN = {"resume", "stop_at"}


def parse_args(argv: list[str] | None = None) -> Args:
    """``--preset NAME`` picks the defaults; every other flag overrides them."""
    import tyro

    argv = sys.argv[1:] if argv is None else argv
    preset = "cpu-small"
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif a.startswith("--preset="):
            preset = a.split("=", 1)[1]
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return tyro.cli(Args, default=PRESETS[preset], args=argv, description=__doc__)


def default_name(args: Args) -> str:
    return f"{args.base}_{args.encoder}_ab{args.ab_weight:g}_g{args.gamma:g}_s{args.seed}"


def given_fields(args: Args) -> set[str]:
    """For a programmatic ``train(args)``: the fields that differ from the preset's defaults
    count as given (the CLI passes the flags it saw instead)."""
    default = PRESETS.get(args.preset, Args())
    return {f.name for f in fields(Args) if getattr(args, f.name) != getattr(default, f.name)}


def train(args: Args, given: set[str] | None = None) -> dict:
    """Run (or resume) one training job; returns the final summary (also in summary.json).

    given: the fields set on the command line (None: those that differ from the preset); on
    ``--resume`` they are applied (RESUME_MAY_CHANGE) or refused (any other that differs).
    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this; rank 0 alone opens the run
    folder and sends the run's arguments and checkpoint to the others (agents/distributed.py)."""
    check_train_args(args)
    ranks = launched()
    with StopSignals(ranks.distributed, ranks.main) as stop, ExitStack() as held:
        created = ranks.start(ranks.device(args.device))  # several ranks: the process group
        args, run_dir, resumed = ranks.on_main(
            open_run, args, given_fields(args) if given is None else given, held,
            default_name(args), RESUME_MAY_CHANGE, RESUME_PER_RUN, ranks.world_size)
        check_train_args(args)
        threads = torch.get_num_threads()
        try:
            return _run(args, run_dir, resumed, stop, ranks)
        finally:  # the caller's thread pool as it was: a larger one left behind makes a later
            torch.set_num_threads(threads)  # fork (e.g. AsyncVectorEnv) hang in libgomp
            ranks.leave(created)


def _run(args: Args, run_dir: Path, resumed: dict | None, stop: StopSignals,
         ranks: Ranks) -> dict:
    torch.set_num_threads(args.threads)
    device = ranks.device(args.device)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
           "auto": torch.bfloat16}[args.precision] if device.type == "cuda" else None
    ckpt_path = run_dir / CHECKPOINT

    # data, agent, optimiser, schedules
    torch.manual_seed(args.seed)
    data = build_datasets(args)
    agent, sampler = build_agent(args, data, ranks.rank)
    agent.to(device)
    optimizer, scaler = make_optimizer(args, agent, amp)
    # schedules, precomputed per step (DINO style)
    lr_schedule = cosine_schedule(args.lr, args.min_lr, args.total_steps, args.warmup_steps)
    ema_schedule = ema_rates(args.ema_rate, args.ema_schedule, args.total_steps)
    step = 0
    if resumed is not None:
        step = restore_checkpoint(resumed, agent, optimizer, scaler, sampler, args.weight_decay,
                                  ranks.rank)
        if ranks.main:
            print(f"resumed {run_dir} at step {step}/{args.total_steps}")
    model = ranks.wrap(agent, device)  # DDP with several ranks
    last = args.total_steps if not args.stop_at else min(args.stop_at, args.total_steps)
    progress = Progress(args, run_dir, step, sampler.views_per_step(args.ab_weight > 0), ranks,
                        last)
    if ranks.main:
        print(describe_batch(args, sampler, ranks.world_size), flush=True)
    saved_step = step if resumed is not None else None

    def checkpoint() -> None:  # every rank: rank 0 writes every rank's streams, the others wait
        nonlocal saved_step
        streams = ranks.gather({"sampler": sampler.state_dict(),
                                "torch_rng": torch.get_rng_state()})
        ranks.check_same(agent.state_dict())
        if ranks.main:
            progress.durable()
            with stop.blocked():  # a second Ctrl-C waits until the file is complete
                save_checkpoint(ckpt_path, args, agent, optimizer, scaler, sampler, step,
                                streams if ranks.distributed else None)
        ranks.barrier()
        saved_step = step

    def kept() -> str:
        return (f"the last checkpoint is kept: {ckpt_path} (step {saved_step})"
                if saved_step is not None else "no checkpoint was written yet")

    # ALGO LOGIC: the training loop
    # Ctrl-C / SIGTERM: finish the current step, save, exit (exact resumption); a second one
    # stops at once. `between` marks the part of a step after which the state is half-updated
    # (sampler and RNG advanced, weights maybe stepped, `step` not yet incremented).
    between = False
    stop.defer = True
    try:
        with progress:
            while step < last and not stop.received:
                for group in optimizer.param_groups:
                    group["lr"] = float(lr_schedule[step])
                between = True
                sync_streams(data, step, sampler, agent)  # streaming shards: this step's buffer
                batch = sampler.sample(device, bootstrap=args.ab_weight > 0)
                metrics = train_step(model, agent, optimizer, scaler, batch, amp,
                                     args.grad_clip, float(ema_schedule[step]), ranks, step)
                step += 1
                between = False
                stop.sync(ranks.max)  # several ranks: all stop after the same step
                progress.update(step, metrics, float(lr_schedule[step - 1]),
                                float(ema_schedule[step - 1]))
                if step % args.checkpoint_every == 0 or step == last or stop.received:
                    checkpoint()
            if stop.received and saved_step != step:  # a signal between the check and here
                checkpoint()
    except KeyboardInterrupt:  # a second signal, or raised by code: stop at once
        if (not stop.received and not between and step != saved_step
                and not ranks.distributed):  # a clean step boundary: it can still be saved
            with progress:
                checkpoint()
        progress.close()
        why = (f"stopped at once ({' then '.join(stop.received)})" if stop.received
               else "interrupted")
        print(f"\n{why}: {kept()}"
              + (f"; continue with --resume {run_dir}" if saved_step is not None else ""))
        return {"step": saved_step, "interrupted": True, "signal": stop.exit_code()}
    except FloatingPointError as e:
        progress.close()
        raise SystemExit(
            f"{e}: stopping; {kept()}. Try a lower --lr (e.g. --lr {args.lr / 10:g}) or "
            f"--precision fp32: --resume {run_dir} --lr {args.lr / 10:g} applies it"
            if ranks.main else 1) from None
    finally:
        stop.defer = False
    progress.close()
    writer = progress.writer
    ranks.barrier()  # every rank is done; rank 0 reports alone
    if not ranks.main:
        return {"step": step, "interrupted": bool(stop.received), "signal": stop.exit_code(),
                "rank": ranks.rank}
    if stop.received:
        print(f"\n{stop.received[0]}: saved {ckpt_path} at step {step}; continue with "
              f"--resume {run_dir}")
        return {"step": step, "interrupted": True, "signal": stop.exit_code()}
    if step < args.total_steps:
        print(f"stopped at step {step}/{args.total_steps}: continue with --resume {run_dir}")
        return {"step": step, "interrupted": False}
    try:
        summary = final_report(args, agent, data, run_dir, writer)
    except KeyboardInterrupt:
        print(f"\ninterrupted during the final report: training is complete and {ckpt_path} "
              f"(step {step}) is kept; --resume {run_dir} runs the report again")
        return {"step": step, "interrupted": True, "signal": stop.exit_code() or 130}
    if writer is not None:
        writer.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        out = train(parse_args(argv), given=flags_given(argv, Args))
    except KeyboardInterrupt:  # before the loop started: nothing new to save
        print("interrupted before training started: nothing new was saved", file=sys.stderr)
        return 130
    return (out.get("signal") or 130) if out.get("interrupted") else 0


if __name__ == "__main__":
    raise SystemExit(main())
