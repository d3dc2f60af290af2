"""The configuration of ``agents/train_value.py``: every flag (:class:`Args`, one field each,
its docstring the ``--help`` line; the agent's own fields are one nested
:class:`agents.method.ab_config.ABConfig`, ``args.ab``, whose flags keep their plain names), the
named
presets (tyro subcommands: ``train_value.py gpu-vits16 --lr 1e-4``), which flags ``--resume``
may change, the parser, and :func:`resolved` (the "0 = auto" sizes, computed once). Checked by
:func:`agents.infra.arg_checks.check_train_args`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, Union

import tyro

from agents.evaluation.probes import PROBE_MAX_SAMPLES, PROBE_TEST, PROBE_TRAIN
from agents.infra.flat_args import flags_given, flat_fields, from_flat
from agents.method.ab_config import ABConfig

__all__ = ["PRESETS", "RESUME_MAY_CHANGE", "RESUME_PER_RUN", "Args", "cli_given",
           "default_name", "given_fields", "parse_args", "resolved", "with_flags"]


@dataclass
class Args:
    preset: tyro.conf.Suppress[Literal["cpu-small", "gpu-vits16"]] = "cpu-small"
    """the preset whose defaults these are (set by the command line's first word, the
    subcommand: cpu-small, or gpu-vits16 for ViT-S/16 at 224)"""
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
    check_every: int = 0
    """steps between the host's checks that the loss and the weights are finite (each check
    waits for the device): 0 = every step on the CPU, every --log-every steps on a GPU; log and
    checkpoint steps are always checked, and a non-finite step is never saved"""
    compile: bool = False
    """torch.compile the loss module (its forward and backward) at the first step: for GPU
    runs; on the CPU compiling costs minutes before the first step"""
    render_on: Literal["device", "cpu"] = "device"
    """where the training views are rendered: device = where the model trains (on a GPU the
    images live there and only boxes cross; the same bytes as the CPU kernel), cpu = the
    numba kernel on the CPU, then copied"""
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
    scene_size: int = 96
    """side of generated scene images in pixels (scenes, fashion-scenes; not the views: those
    are --view-size)"""
    view_size: int = 64
    """side of every view (the encoder's input) in pixels"""
    base_batch: int = 64
    """images per base-loss batch (SimCLR/DINO: 2 augmented crops each)"""
    boot_images: int = 10
    """images per bootstrapping batch (0: base_batch / 8, the paper's ratio; cpu-small: 10 with
    6 views each, 300 ordered pairs a step: the paper's 8 images of 4 views (96 pairs) left the
    value function at the majority baseline)"""
    n_views: int = 6
    """views per bootstrapping image; all n (n - 1) ordered pairs are used (cpu-small: 6; the
    gpu-vits16 preset: 4)"""
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
    encoder: str = "cnn"
    """encoder: small ResNet (cnn), small ViT (vit, patch 8), ViT-S/16 (vits16), or a timm ViT
    by name, built by timm without weights (timm:vit_small_patch16_224; the timm extra)"""
    ab: Annotated[ABConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=ABConfig)
    """the agent: heads, decoder, losses (agents/method/ab_config.py; flags without a prefix)"""

    # annotation bootstrapping: the target network
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
    value_lr_scale: float = 1.0
    """the value function's branch (annotation decoder, phi_AB, psi_AB, t_AB) learns at this
    multiple of the learning rate"""
    value_steps: int = 0
    """the value phase: after the total_steps of pre-training, this many more steps train the
    value function's branch alone on the frozen encoder, base head and EMA target (the
    bootstrapping loss only, at the constant --value-lr); the representation is unchanged;
    none with --ab-weight 0"""
    value_lr: float = 1e-3
    """the learning rate of the value phase (--value-steps): its peak with --value-schedule
    cosine"""
    value_schedule: Literal["constant", "cosine"] = "constant"
    """the value phase's learning rate: constant at --value-lr, or a cosine from --value-lr
    to 0 over the phase's steps"""
    value_gamma: float | None = None
    """the discount of the value phase's bootstrapping target (none = --gamma, the run's): 0
    fits Q to the target view's own annotation p_ema(l | x_j), a fixed target in the phase (no
    max over the EMA value function's candidates, so a step skips that decoder pass)"""
    value_cache: int = 0
    """the value phase draws and encodes this many batches once, at its start, and cycles
    through them (0 = a new batch every step). The encoders are frozen in the phase, so a
    cached encoding equals a fresh one: each step then costs the value function's branch
    alone, at the price of fewer distinct views (keep value_steps / value_cache <= 8: more
    passes fit the pool, and are warned)"""
    value_boot_images: int = 0
    """bootstrap images per batch of the value phase (0 = --boot-images); with --value-cache
    a larger batch costs the branch alone"""

    @property
    def phase_steps(self) -> int:
        """The value phase's steps: ``value_steps``, or none with ``--ab-weight 0`` (the base
        method alone trains no value function)."""
        return self.value_steps if self.ab.ab_weight > 0 else 0

    @property
    def all_steps(self) -> int:
        """The run's optimizer steps: pre-training, then the value phase."""
        return self.total_steps + self.phase_steps

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
    depend only on the probe sets, so a study computes them once (studies/representation.py)"""
    value_batches: int = 64
    """bootstrap batches of probe test images for the value accuracy by IoU"""


PRESET_HELP = {
    "cpu-small": "the default: a CNN on 96-pixel scenes, 6-11 minutes on 2 CPU cores",
    "gpu-vits16": "ViT-S/16 (timm's, the timm extra) at 224 pixels, 20000 steps of 256 images: "
                  "a GPU (bf16 autocast)",
}
PRESETS = {
    "cpu-small": Args(),
    "gpu-vits16": Args(
        preset="gpu-vits16", encoder="timm:vit_small_patch16_224", view_size=224,
        scene_size=256, dataset_size=20000,
        base_batch=256, boot_images=0, n_views=4, total_steps=20000, lr=5e-4, min_lr=1e-6,
        warmup_steps=1000,
        ab=ABConfig(proj_dim=256, proj_hidden=2048, decoder_width=384, decoder_heads=6,
                    n_prototypes=4096),
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
    "threads", "device", "precision", "decode_workers", "memory_budget", "render_on",
    "compile", "check_every", "value_steps", "value_lr", "value_schedule", "value_gamma",
    "value_cache", "value_boot_images",
}
RESUME_PER_RUN = {"resume", "stop_at"}


def _preset_cli_type():
    """``Args`` as one tyro subcommand per preset, each with the preset as its defaults."""
    return Union[tuple(  # noqa: UP007 - a runtime Union of the subcommands
        Annotated[Args, tyro.conf.subcommand(name, default=default,
                                             description=PRESET_HELP[name])]
        for name, default in PRESETS.items())]


def parse_args(argv: list[str] | None = None, description: str | None = None) -> Args:
    """The command line: an optional first word names the preset (``gpu-vits16 --lr 1e-4``;
    none: cpu-small), whose values are the defaults of every flag (tyro subcommands, one per
    preset). description: the ``--help`` text (``train_value.py`` passes its usage)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    old = [a for a in argv if a == "--preset" or a.startswith("--preset=")]
    if old:  # the flag of earlier versions: say what replaced it
        raise SystemExit(f"{old[0]}: the preset is now the first word of the command line, "
                         f"e.g. train_value.py gpu-vits16 --lr 1e-4 (presets: "
                         f"{', '.join(PRESETS)}; none: cpu-small)")
    old = [a for a in argv if a == "--image-size" or a.startswith("--image-size=")]
    if old:  # renamed: one name per quantity (a run's saved image_size loads as scene_size)
        raise SystemExit(f"{old[0]}: the side of the generated scene images is now --scene-size "
                         "(e.g. --scene-size 96); the side of the views is --view-size")
    if argv[:1] not in [[name] for name in PRESETS] + [["-h"], ["--help"]]:
        # No preset named: name the default one. tyro 1.0.16 selects a default subcommand by
        # itself (CascadeSubcommandArgs) for --flag but not for --no-flag: a line starting
        # with --no-probe was refused as unrecognised (tests/test_config.py)
        argv = ["cpu-small", *argv]
    return tyro.cli(_preset_cli_type(), default=PRESETS["cpu-small"], args=argv,
                    description=description or __doc__,
                    config=(tyro.conf.CascadeSubcommandArgs,))  # --help: every preset's flags


def cli_given(argv: list[str]) -> set[str]:
    """The fields a command line of :func:`parse_args` sets: its flags
    (:func:`agents.infra.flat_args.flags_given`) and ``preset`` when it names one."""
    return flags_given(argv, Args) | ({"preset"} if argv[:1] and argv[0] in PRESETS else set())


def resolved(args: Args) -> Args:
    """``args`` with its "0 = auto" sizes made explicit, the one place they are computed:
    ``ab.ann_batch`` 0 = base_batch / 2 (at least 2), ``boot_images`` 0 = base_batch / 8 (at
    least 1), the paper's ratios. (The EMA rate's auto, ``ema_rate`` 0, stays in
    :func:`agents.infra.train_utils.ema_rates`: it depends on ``total_steps``, which ``--resume``
    may
    change.) A new object; ``args`` (what ``config.json`` records) is left as given."""
    ab = replace(args.ab, ann_batch=args.ab.ann_batch or max(args.base_batch // 2, 2))
    return replace(args, ab=ab, boot_images=args.boot_images or max(args.base_batch // 8, 1))


def with_flags(args: Args, **flags) -> Args:
    """``dataclasses.replace`` by flag names: ``with_flags(args, gamma=0, lr=1e-4)`` sets
    ``args.ab.gamma`` and ``args.lr`` (the fields of ``args.ab`` by their own names, as on the
    command line). A new object; an unknown name raises ``TypeError``."""
    unknown = sorted(set(flags) - set(flat_fields(args)))
    if unknown:
        raise TypeError(f"with_flags: no flag {unknown} in Args")
    return from_flat(Args, flags, args)


def default_name(args: Args) -> str:
    ab = args.ab
    return f"{ab.base}_{args.encoder}_ab{ab.ab_weight:g}_g{ab.gamma:g}_s{args.seed}"


def given_fields(args: Args) -> set[str]:
    """For a programmatic ``train(args)``: the fields that differ from the preset's defaults
    count as given (the CLI passes the flags it saw instead), by their flag names (a field of
    ``args.ab`` by its own name: :func:`agents.infra.flat_args.flat_fields`)."""
    now, default = flat_fields(args), flat_fields(PRESETS.get(args.preset, Args()))
    return {k for k, v in now.items() if v != default[k]}
