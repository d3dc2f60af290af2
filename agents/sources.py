"""The training images of a run, from its flags: which kwargs each source takes
(:func:`source_kwargs`: the memory bound, the split, COCO files, a test source), the datasets
(:func:`build_datasets`) and the per-step buffer of a streaming source (:func:`sync_streams`).
Shared by ``agents/train_value.py``, its final report and ``agents/evaluate.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.distributed import rank_info
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.datasets.splits import load_split

if TYPE_CHECKING:
    from agents.ab import ABAgent
    from agents.data import TransitionSampler

__all__ = ["build_datasets", "source_kwargs", "sync_streams"]


def source_kwargs(args, name: str) -> dict:
    """The kwargs of :func:`imgmdp_env.datasets.splits.load_split` for dataset ``name``: for a
    file-backed source (folder, shards, video) the memory bound and the split (``--max-side``,
    ``--memory-budget``, ``--holdout``, ...); for ``--dataset`` itself also its COCO files and
    its test source (``--captions``, ``--instances``, ``--test-dataset`` with
    ``--test-captions`` / ``--test-instances``). Named datasets take none. ``args``: the
    ``Args`` of ``train_value.py`` or ``evaluate.py`` (a flag it lacks takes its default)."""
    from imgmdp_env.datasets import source_kind

    def get(key: str, default=""):
        return getattr(args, key, default)

    def own(kind: str | None) -> dict:
        if kind in (None, "named"):
            return {}
        kw = {"max_side": get("max_side", 256) or None,
              "memory_budget": get("memory_budget", 0.0) or None}
        if kind == "folder":
            kw["workers"] = get("decode_workers", 1)
        if kind == "video":
            kw["frame_stride"] = get("frame_stride", 30)
        return kw

    kw = own(source_kind(name))
    if not kw:
        return kw
    if name == args.dataset:
        kw.update({k: get(k) for k in ("captions", "instances") if get(k)})
        if get("test_dataset"):
            kw["test"] = get("test_dataset")
            test = own(source_kind(kw["test"]))
            test.update({k: get(f"test_{k}") for k in ("captions", "instances")
                         if get(f"test_{k}")})
            kw.update({f"test_{k}": v for k, v in test.items()})
    if "test" not in kw:
        kw["holdout"] = get("holdout", 0.1)
    return kw


def build_datasets(args, rank: int | None = None, world_size: int | None = None
                   ) -> dict[str, ImageDataset]:
    """``{"base": ..., "boot": ...}``: the training images (one object when coupled): the
    ``"train"`` split of each source (:func:`source_kwargs`). Shards with ``--stream`` give a
    :class:`imgmdp_env.datasets.stream.ShardStream` of ``--dataset-size`` images, refreshed
    every ``--stream-refresh`` steps (the loop calls :func:`sync_streams`), reading the shards
    of rank ``rank`` of ``world_size`` (None: from torchrun's ``RANK`` / ``WORLD_SIZE``)."""
    from imgmdp_env.datasets import make_dataset, source_kind

    env_rank, env_world = rank_info()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size

    def load(name: str) -> ImageDataset:
        kw = source_kwargs(args, name)
        if source_kind(name) != "shards" or not args.stream:
            return load_split(name, "train", args.dataset_size, args.image_size, args.seed,
                              **kw)
        split = "all" if "test" in kw else "train"
        kw = {k: v for k, v in kw.items() if not k.startswith("test")}
        return make_dataset(name, stream=True, buffer=args.dataset_size,
                            refresh_every=args.stream_refresh, split=split, seed=args.seed,
                            rank=rank, world_size=world_size, **kw)

    base = load(args.dataset)
    boot = base
    if args.boot_dataset and args.boot_dataset != args.dataset:
        boot = load(args.boot_dataset)
    return {"base": base, "boot": boot}


def sync_streams(data: dict[str, ImageDataset], step: int,
                 sampler: TransitionSampler | None = None, agent: ABAgent | None = None) -> None:
    """Before the batch of ``step``: move every streaming dataset of ``data`` to its buffer
    for that step (a no-op for datasets in RAM; exact on ``--resume``). With CLIP, when the
    base buffer changed, the sampler's caption inputs are recomputed from its captions
    (``agent.caption_inputs``: the tokenizer built from the first buffer's captions, so later
    words it never saw are ``[UNK]``; or the frozen sentence model)."""
    from imgmdp_env.datasets.stream import ShardStream

    for ds in {id(d): d for d in data.values()}.values():
        if isinstance(ds, ShardStream) and ds.at_step(step) and ds is data["base"] and (
                sampler is not None and sampler.caption_inputs is not None):
            sampler.caption_inputs = agent.caption_inputs(ds.captions)
