"""Argument checks of the two CLIs (``agents/train_value.py``, ``agents/evaluate.py``) and of
the source flags of the find-the-object scripts (:func:`check_object_args`), run before any
work: each names the flag, shows the bad value and says what is valid (the helpers of
:mod:`imgmdp_env.checks`). Errors become ``SystemExit`` with that message."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path

from agents.method.encoders import encoder_kind
from imgmdp_env import checks as check
from imgmdp_env.datasets import NAMED, is_source, source_kind

__all__ = ["OBJECT_NAMED", "check_eval_args", "check_object_args", "check_train_args",
           "dataset_spec", "labelled_source", "literal_choices"]

MAX_TRAIN_SEED = 2**63  # the sampler adds an offset to the seed for its second stream
OBJECT_NAMED = ("scenes", "fashion-scenes")  # the named datasets with object boxes
_VIEW_RULES = {"cnn": (16, 1), "vit": (8, 8), "vits16": (16, 16)}  # (minimum, multiple of)


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def dataset_spec(name: str, value, *, empty: bool = False) -> str:
    """A named dataset or an existing folder (checked now, not after training)."""
    value = check.string(name, value, empty=True)
    if empty and not value:
        return value
    if not value.strip():
        raise ValueError(f"{name} ({value!r}) is empty: pass a named dataset {list(NAMED)}, a "
                         "folder of images or videos ('.' for the current folder), a video "
                         "file, or webdataset shards (.tar paths or a pattern such as "
                         "data/shard-{000..009}.tar)")
    try:
        ok = is_source(value)
        if ok and source_kind(value) == "shards":
            from imgmdp_env.datasets.shards import expand_shards

            expand_shards(value)  # every shard of the pattern exists, checked now
    except ValueError as err:  # a malformed pattern, a missing shard
        raise ValueError(f"{name} ({value!r}): {err}") from None
    if ok:
        return value
    raise ValueError(f"{name} ({value!r}) is neither a named dataset {list(NAMED)}, an "
                     "existing folder of images or videos, a video file, nor webdataset shards "
                     "(.tar paths or a pattern such as data/shard-{000..009}.tar)")


def _file(name: str, value) -> None:
    value = check.string(name, value, empty=True)
    if value and not Path(value).is_file():
        raise ValueError(f"{name} ({value!r}) is not an existing file (a COCO JSON file)")


def _view_size(name: str, value, kind: str) -> int:
    lo, mult = _VIEW_RULES.get(kind, (1, 1))
    patch = re.search(r"patch(\d+)", kind) if kind.startswith("timm:") else None
    if patch:  # a timm ViT: its patch size, from its name
        lo = mult = int(patch.group(1))
    side = check.integer(name, value, lo)
    if side % mult:
        raise ValueError(f"{name} ({side}) must be a multiple of {mult} (the patch size of "
                         f"--encoder {kind})")
    return side


@cache
def _literal_fields(cls) -> tuple:
    """``(name, valid values or None, nested dataclass or None)`` of each field of dataclass
    ``cls`` that is typed ``Literal[...]`` (also ``Literal[...] | None``: None is valid then)
    or holds a dataclass, read from its annotations (``Annotated`` markers such as tyro's
    ``Suppress`` are dropped)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            out.append((f.name, None, hint))
            continue
        parts = (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union,
                                                                     types.UnionType)
                 else (hint,))
        literals = [p for p in parts if typing.get_origin(p) is typing.Literal]
        if literals and all(p in literals or p is type(None) for p in parts):
            valid = [v for p in literals for v in typing.get_args(p)]
            out.append((f.name, valid + [None] * (type(None) in parts), None))
    return tuple(out)


def literal_choices(a) -> None:
    """Every ``Literal``-typed field of dataclass ``a`` (and of the dataclasses it nests, such
    as ``Args.ab``, whose fields are flags of their own names) holds one of its type's values:
    the command line's parser enforces them, a programmatic ``Args(...)`` or ``with_flags``
    does not. Raises ValueError naming the flag, the bad value and the valid ones."""
    for name, valid, nested in _literal_fields(type(a)):
        value = getattr(a, name)
        if nested is None:
            check.choice(flag(name), value, valid)
        elif not isinstance(value, nested):
            raise TypeError(f"{name} ({check.show(value)}) must be an instance of "
                            f"{nested.__name__}, not {type(value).__name__}")
        else:
            literal_choices(value)


def _device(value) -> None:
    """``--device cuda`` needs a CUDA device here (its spelling: :func:`literal_choices`)."""
    if value == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available here (use auto or cpu)")


def _run(checks) -> None:
    try:
        checks()
    except (TypeError, ValueError, MemoryError) as e:  # MemoryError: an estimate, up front
        raise SystemExit(f"invalid argument: {e}") from None


def _frame_stride(a) -> None:
    """``--frame-stride`` changed from its default is refused unless a source of the run is
    video (it would be silently ignored)."""
    from agents.infra.config import PRESETS

    default = getattr(PRESETS.get(a.preset), "frame_stride", 30)
    if a.frame_stride == default:
        return
    keys = ("dataset", "boot_dataset", "test_dataset", "probe_dataset")
    given = {flag(k): getattr(a, k) for k in keys if getattr(a, k)}
    if not any(source_kind(v) == "video" for v in given.values()):
        shown = ", ".join(f"{k} {v!r} ({source_kind(v) or '?'})" for k, v in given.items())
        raise ValueError(f"--frame-stride ({a.frame_stride}) keeps every k-th frame of a "
                         f"video, but no source of this run is one ({shown}): pass a video "
                         "(file or folder of videos) as --dataset, or drop --frame-stride")


def _memory(a) -> None:
    """The RAM of the training images whose count is known before anything is read, checked
    against ``--memory-budget`` (0: half the RAM): generated datasets (``--dataset-size``
    images of ``--scene-size``) and the buffers of streamed shards (2 x ``--dataset-size``
    images of ``--max-side``). Folders, shards read into RAM and videos are checked by their
    loaders from the real sizes, before decoding. Raises MemoryError with the figure."""
    from imgmdp_env.datasets import decode

    n, parts, count, pixels = a.dataset_size, [], 0, 0
    names = [a.dataset] + ([a.boot_dataset] if a.boot_dataset not in ("", a.dataset) else [])
    for name in names:
        if name in ("scenes", "fashion-scenes"):  # generated: n images of scene_size
            parts.append(f"{name}: {n} images of {a.scene_size}x{a.scene_size}")
            count, pixels = count + n, pixels + n * a.scene_size ** 2
        elif source_kind(name) == "shards" and a.stream and a.max_side:
            parts.append(f"{name}: 2 stream buffers of {n} images of at most {a.max_side}x"
                         f"{a.max_side}")
            count, pixels = count + 2 * n, pixels + 2 * n * a.max_side ** 2
    if parts:
        decode.check_pixels(
            count, pixels, a.memory_budget or None,
            f"--dataset-size {n} ({'; '.join(parts)})",
            fixes="a smaller --dataset-size (or --scene-size / --max-side), or a larger "
                  "--memory-budget (GiB)")


def check_train_args(a) -> None:
    """Every field of ``agents.infra.config.Args`` (with its nested ``ab``); raises ``SystemExit``
    naming the first bad one."""
    from agents.infra.config import resolved

    def checks() -> None:
        f = flag
        literal_choices(a)  # --preset, --device, --precision, --base, --candidates, ...
        name = check.string(f("name"), a.name, empty=True)
        if name and (Path(name).name != name or name in (".", "..")):
            raise ValueError(f"--name ({name!r}) must be a plain folder name (no '/'); put "
                             "the parent folder in --runs-dir")
        check.path_like(f("runs_dir"), a.runs_dir)
        check.string(f("resume"), a.resume, empty=True)
        check.integer(f("seed"), a.seed, 0, MAX_TRAIN_SEED - 1)
        _device(a.device)
        check.integer(f("threads"), a.threads, 1)
        dataset_spec(f("dataset"), a.dataset)
        dataset_spec(f("boot_dataset"), a.boot_dataset, empty=True)
        dataset_spec(f("test_dataset"), a.test_dataset, empty=True)
        for key in ("captions", "instances", "test_captions", "test_instances"):
            _file(f(key), getattr(a, key))
        for key, of in (("captions", "dataset"), ("instances", "dataset"),
                        ("test_captions", "test_dataset"), ("test_instances", "test_dataset")):
            if getattr(a, key) and source_kind(getattr(a, of)) != "folder":
                raise ValueError(f"{f(key)} annotates the images of a folder; {f(of)} "
                                 f"({getattr(a, of)!r}) is not one (shards carry their own "
                                 "annotations in each sample's .json)")
        holdout = check.number(f("holdout"), a.holdout, 0, 1, hi_open=True)
        if (holdout == 0 and not a.test_dataset and a.probe and not a.probe_dataset
                and source_kind(a.boot_dataset or a.dataset) not in (None, "named")):
            raise ValueError("--holdout 0 leaves no held-out images for the probes and the "
                             "value accuracy (they would run on the training images): pass "
                             "--test-dataset, --holdout > 0 (e.g. 0.1), or --no-probe")
        if a.max_side != 0:
            check.integer(f("max_side"), a.max_side, 8)
        check.number(f("memory_budget"), a.memory_budget, 0)
        check.integer(f("decode_workers"), a.decode_workers, 1)
        check.flag(f("stream"), a.stream)
        check.integer(f("stream_refresh"), a.stream_refresh, 1)
        check.integer(f("frame_stride"), a.frame_stride, 1)
        _frame_stride(a)
        check.integer(f("dataset_size"), a.dataset_size, 1)
        check.integer(f("scene_size"), a.scene_size, 16)
        _memory(a)
        try:
            encoder_kind(a.encoder)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{f('encoder')}: {e}") from None
        _view_size(f("view_size"), a.view_size, a.encoder)
        check.integer(f("check_every"), a.check_every, 0)
        check.integer(f("base_batch"), a.base_batch, 2)
        check.integer(f("ann_batch"), a.ab.ann_batch, 0)
        check.integer(f("boot_images"), a.boot_images, 0)
        check.integer(f("n_views"), a.n_views, 2)
        check.number_range(f("boot_scale"), a.boot_scale, 0, 1, lo_open=True)
        check.number_range(f("base_scale"), a.base_scale, 0, 1, lo_open=True)
        check.number(f("color_jitter"), a.color_jitter, 0)
        check.number(f("boot_color_jitter"), a.boot_color_jitter, 0)
        if a.boot_source == "base":
            boot = resolved(a).boot_images
            if a.ab.base == "clip" or a.n_views != 2 or boot > a.base_batch \
                    or a.boot_color_jitter > 0:
                raise ValueError(
                    f"{f('boot_source')} base pairs the 2 crops of the first boot_images base "
                    f"images: it needs --base simclr or dino (got {a.ab.base}), --n-views 2 (got "
                    f"{a.n_views}), --boot-images <= --base-batch (got {boot} > "
                    f"{a.base_batch}) and --boot-color-jitter 0 (got {a.boot_color_jitter})")
        if a.ab.annotated_boot and a.ab.ab_weight > 0:
            r = resolved(a)
            if a.boot_source != "views" or r.boot_images > r.ab.ann_batch or a.boot_dataset:
                raise ValueError(
                    f"{f('boot_annotated')} takes the bootstrap images from the annotated base "
                    f"images: it needs {f('boot_source')} views (got {a.boot_source}), "
                    f"{f('boot_images')} <= {f('ann_batch')} (got {r.boot_images} > "
                    f"{r.ab.ann_batch}) and no {f('boot_dataset')} (got {a.boot_dataset!r}); "
                    f"or pass --no-boot-annotated")
        check.integer(f("proj_dim"), a.ab.proj_dim, 1)
        check.integer(f("proj_hidden"), a.ab.proj_hidden, 1)
        check.number(f("temperature"), a.ab.temperature, 0, lo_open=True)
        check.number(f("ab_temperature"), a.ab.ab_temperature, 0, lo_open=True)
        width = check.integer(f("decoder_width"), a.ab.decoder_width, 1)
        check.integer(f("decoder_depth"), a.ab.decoder_depth, 1)
        heads = check.integer(f("decoder_heads"), a.ab.decoder_heads, 1)
        if width % heads:
            raise ValueError(f"--decoder-heads ({heads}) must divide --decoder-width ({width})")
        check.integer(f("n_bins"), a.ab.n_bins, 2)
        check.number(f("max_shift"), a.ab.max_shift, 0, lo_open=True)
        check.number(f("max_log_scale"), a.ab.max_log_scale, 0, lo_open=True)
        check.flag(f("action_tokens"), a.ab.action_tokens)
        check.integer(f("n_prototypes"), a.ab.n_prototypes, 1)
        check.number(f("teacher_temperature"), a.ab.teacher_temperature, 0, lo_open=True)
        check.number(f("student_temperature"), a.ab.student_temperature, 0, lo_open=True)
        check.number(f("center_momentum"), a.ab.center_momentum, 0, 1)
        check.integer(f("text_width"), a.ab.text_width, 1)
        check.integer(f("text_depth"), a.ab.text_depth, 1)
        check.number(f("ab_weight"), a.ab.ab_weight, 0)
        check.number(f("gamma"), a.ab.gamma, 0, 1, hi_open=True)
        check.integer(f("n_random"), a.ab.n_random, 1)
        check.number(f("ema_rate"), a.ema_rate, 0, 1)  # 0 = auto (train_utils.ema_rates)
        check.integer(f("total_steps"), a.total_steps, 1)
        lr = check.number(f("lr"), a.lr, 0, lo_open=True)
        if check.number(f("min_lr"), a.min_lr, 0) > lr:
            raise ValueError(f"--min-lr ({a.min_lr!r}) must be <= --lr ({a.lr!r})")
        check.integer(f("warmup_steps"), a.warmup_steps, 0)
        check.number(f("weight_decay"), a.weight_decay, 0)
        check.number(f("grad_clip"), a.grad_clip, 0)
        check.number(f("value_lr_scale"), a.value_lr_scale, 0, lo_open=True)
        check.integer(f("value_steps"), a.value_steps, 0)
        check.number(f("value_lr"), a.value_lr, 0, lo_open=True)
        check.integer(f("value_cache"), a.value_cache, 0)
        check.integer(f("value_boot_images"), a.value_boot_images, 0)
        if a.value_gamma is not None:
            check.number(f("value_gamma"), a.value_gamma, 0, 1, hi_open=True)
        if (a.value_cache or a.value_boot_images or a.value_gamma is not None) and not (
                a.value_steps):
            raise ValueError(f"{f('value_cache')} ({a.value_cache}), "
                             f"{f('value_boot_images')} ({a.value_boot_images}) and "
                             f"{f('value_gamma')} ({a.value_gamma}) shape the value "
                             f"phase: they need {f('value_steps')} > 0")
        if a.value_boot_images and (a.boot_source == "base" or a.ab.annotated_boot):
            raise ValueError(f"{f('value_boot_images')} ({a.value_boot_images}) needs "
                             f"{f('boot_source')} views (got {a.boot_source}) and no "
                             f"{f('boot_annotated')}: their bootstrap images are base images")
        check.integer(f("log_every"), a.log_every, 1)
        check.integer(f("checkpoint_every"), a.checkpoint_every, 1)
        check.integer(f("stop_at"), a.stop_at, 0)
        check.flag(f("tensorboard"), a.tensorboard)
        check.flag(f("probe"), a.probe)
        dataset_spec(f("probe_dataset"), a.probe_dataset, empty=True)
        _probe_size(f("probe_train"), a.probe_train)
        check.integer(f("probe_test"), a.probe_test, 1)
        _probe_size(f("probe_max_samples"), a.probe_max_samples)
        check.integer(f("random_twins"), a.random_twins, 0)
        check.integer(f("value_batches"), a.value_batches, 1)

    _run(checks)


def labelled_source(a) -> None:
    """The flags of a labelled source: ``--dataset``, ``--test-dataset``, their COCO
    ``--instances`` / ``--test-instances``, ``--holdout`` and ``--max-side`` (``evaluate.py``,
    :func:`check_object_args`); raises ValueError naming the first bad one."""
    f = flag
    dataset_spec(f("dataset"), a.dataset)
    dataset_spec(f("test_dataset"), a.test_dataset, empty=True)
    for key, of in (("instances", "dataset"), ("test_instances", "test_dataset")):
        _file(f(key), getattr(a, key))
        if getattr(a, key) and source_kind(getattr(a, of)) != "folder":
            raise ValueError(f"{f(key)} annotates the images of a folder; {f(of)} "
                             f"({getattr(a, of)!r}) is not one")
    check.number(f("holdout"), a.holdout, 0, 1, hi_open=True)
    if a.holdout == 0 and not a.test_dataset and source_kind(a.dataset) not in (
            None, "named"):
        raise ValueError("--holdout 0 leaves no test images: pass --test-dataset or "
                         "--holdout > 0")
    if a.max_side != 0:
        check.integer(f("max_side"), a.max_side, 8)


def check_object_args(a) -> None:
    """The source flags of the find-the-object scripts (``examples/value_search.py``,
    ``studies/find_object.py``: :func:`agents.infra.sources.add_object_flags`): those of
    :func:`labelled_source`, then that the source can carry object boxes: a named dataset of
    :data:`OBJECT_NAMED`, a folder with its ``--instances`` (a ``--test-dataset`` folder with
    its ``--test-instances``), shards (their samples' boxes, checked once loaded:
    :func:`agents.infra.sources.object_split`). Raises ``SystemExit``."""
    def checks() -> None:
        f = flag
        labelled_source(a)
        kind = source_kind(a.dataset)
        if kind == "named" and a.dataset not in OBJECT_NAMED:
            raise ValueError(f"--dataset ({a.dataset!r}) has no object boxes (its labels are "
                             f"per image): pass one of {list(OBJECT_NAMED)}, or a folder of "
                             "images with --instances (a COCO instances_*.json)")
        if kind == "named" and a.test_dataset:
            raise ValueError(f"--test-dataset ({a.test_dataset!r}) is the test images of a "
                             f"folder or shards --dataset; {a.dataset!r} has its own test split")
        for key, coco in (("dataset", "instances"), ("test_dataset", "test_instances")):
            value = getattr(a, key)
            if not value:  # no --test-dataset ("" would read as the current folder)
                continue
            if source_kind(value) == "video":
                raise ValueError(f"{f(key)} ({value!r}) is video: frames carry no object boxes; "
                                 "pass a folder of images with its COCO instances file")
            if source_kind(value) == "folder" and not getattr(a, coco):
                raise ValueError(f"{f(key)} ({value!r}) is a folder without object boxes: "
                                 f"pass {f(coco)} path/to/instances.json (its COCO instances "
                                 "file: the boxes and category names of its images)")

    _run(checks)


def _probe_size(name: str, value) -> int:
    """A count of probe train images / samples: an integer >= 2 (one sample has no spread, and
    the probes standardise every feature by it: L-BFGS then overflowed)."""
    try:
        return check.integer(name, value, 2)
    except ValueError as e:
        raise ValueError(f"{e}: the probes standardise each feature by its spread over the "
                         "train samples, which one sample does not have") from None


def check_eval_args(a) -> None:
    """Every field of ``evaluate.Args``; raises ``SystemExit`` naming the first bad one."""
    def checks() -> None:
        f = flag
        literal_choices(a)  # --kind, --device
        if a.checkpoint is not None:
            p = Path(check.path_like(f("checkpoint"), a.checkpoint))
            if not p.exists():
                raise ValueError(f"--checkpoint ({str(p)!r}) does not exist: pass a run folder "
                                 "(runs/<name>) or its checkpoint.pt")
        labelled_source(a)
        _probe_size(f("n_train"), a.n_train)
        check.integer(f("n_test"), a.n_test, 1)
        check.integer(f("scene_size"), a.scene_size, 16)
        if a.view_size is not None:
            _view_size(f("view_size"), a.view_size, a.kind if a.checkpoint is None else "")
        _probe_size(f("max_samples"), a.max_samples)
        check.integer(f("random_twins"), a.random_twins, 0)
        check.integer(f("value_batches"), a.value_batches, 0)
        check.flag(f("raw_pixels"), a.raw_pixels)
        check.integer(f("threads"), a.threads, 1)
        _device(a.device)

    _run(checks)
