"""The training images of a run, from its flags: which kwargs each source takes
(:func:`source_kwargs`: the memory bound, the split, COCO files, a test source), the datasets
(:func:`build_datasets`) and the per-step buffer of a streaming source (:func:`sync_streams`).
Shared by ``agents/train_value.py``, its final report and ``agents/evaluate.py``.

The find-the-object scripts (``examples/value_search.py``, ``studies/find_object.py``) take
the same source flags (:func:`add_object_flags`) and ask here for images with object boxes:
the test images the episodes start in (:func:`object_env`, :func:`object_split`) and the
images of the goal crops, never the test ones (:func:`goal_images`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.infra.distributed import rank_info
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.datasets.splits import load_split, reference_split

if TYPE_CHECKING:
    from agents.method.ab import ABAgent
    from agents.method.data import TransitionSampler

__all__ = ["add_object_flags", "build_datasets", "goal_images", "object_env", "object_split",
           "source_kwargs", "sync_streams"]


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
            return load_split(name, "train", args.dataset_size, args.scene_size, args.seed,
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
        if not (isinstance(ds, ShardStream) and ds.at_step(step)) or sampler is None:
            continue
        if sampler.render_device.type != "cpu":  # its banks are copies of the old buffer
            sampler.refresh_banks()
        if ds is data["base"] and sampler.caption_inputs is not None:
            sampler.caption_inputs = agent.caption_inputs(ds.captions)


# ---------------------------------------------------------------------------------------------
# Images with object boxes: the find-the-object scripts
# ---------------------------------------------------------------------------------------------
def add_object_flags(p, image_labels: bool = False) -> None:
    """The source flags of the find-the-object scripts on an ``argparse`` parser ``p``, named
    as ``train_value.py`` / ``evaluate.py`` name them and read by :func:`source_kwargs`;
    checked by :func:`agents.infra.arg_checks.check_object_args`. image_labels: ``--dataset`` may
    also be labelled per image (see :func:`object_split`)."""
    p.add_argument("--dataset", default="scenes",
                   help="images with object boxes: scenes, fashion-scenes, a folder of images "
                        "with --instances, or shards whose samples carry boxes" + (
                            "; or labelled per image: a folder of class sub-folders "
                            "(root/<class>/<image>), fashion" if image_labels else ""))
    p.add_argument("--instances", default="",
                   help="COCO instances_*.json of a --dataset folder: its object boxes and "
                        "category names (the goals)")
    p.add_argument("--test-dataset", default="",
                   help="a separate folder / shards of test images, the episodes' (empty: the "
                        "--holdout split of a folder / shards --dataset)")
    p.add_argument("--test-instances", default="", help="COCO instances_*.json of --test-dataset")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="fraction of a folder / shards --dataset held out as its test images "
                        "(by file name); the goal crops come from the other images")
    p.add_argument("--max-side", type=int, default=256,
                   help="folder / shard images are resized on load to this longer side (0: "
                        "full size)")


def object_split(args, split: str, n: int, size: int, seed: int = 0,
                 image_labels: bool = False) -> ImageDataset:
    """``n`` images of ``split`` of ``args.dataset`` with their object boxes:
    :func:`~imgmdp_env.datasets.splits.load_split` with :func:`source_kwargs` (a folder's
    ``--instances``, its ``--holdout`` split, or ``--test-dataset`` for ``"test"``). A
    file-backed source keeps only its images with at least one object (an episode's goal is one
    of its image's own objects), so it may give fewer than ``n``. size: side of generated
    images (named datasets). image_labels: a source without object boxes whose images carry
    class labels (a folder of class sub-folders, ``fashion``, shards with labels) is taken
    whole instead (curation's goals are classes). Raises ``SystemExit`` naming the flag when
    the source cannot be loaded or has no object boxes (nor, with image_labels, labels)."""
    from imgmdp_env.datasets import source_kind

    test = split == "test" and bool(getattr(args, "test_dataset", ""))
    key = "test_dataset" if test else "dataset"
    where = f"--{key.replace('_', '-')} ({getattr(args, key)!r})"
    try:
        ds = load_split(args.dataset, split, n, size, seed, **source_kwargs(args, args.dataset))
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"{where}: {err}") from None
    if ds.object_boxes is None or ds.object_labels is None or ds.class_names is None:
        coco = "--test-instances" if test else "--instances"
        if image_labels and ds.labels is not None and ds.class_names is not None:
            return ds
        if image_labels:
            raise SystemExit(f"{where} has neither object boxes nor class labels: pass a folder "
                             "of class sub-folders (root/<class>/<image>), a folder of images "
                             f"with {coco} (its COCO instances file), shards whose samples "
                             "carry boxes or labels, or scenes / fashion-scenes / fashion")
        raise SystemExit(f"{where} has no object boxes: pass a folder of images with {coco} "
                         "(its COCO instances file), shards whose samples carry boxes, or "
                         "scenes / fashion-scenes")
    if source_kind(args.dataset) == "named":
        return ds
    keep = [i for i, b in enumerate(ds.object_boxes) if len(b)]
    if not keep:
        raise SystemExit(f"{where}: none of its {len(ds)} {split} image(s) has an object box "
                         "(are the file names in the instances file those of the folder?)")
    return ds if len(keep) == len(ds) else ds.subset(keep)


def object_env(args, split: str, n: int, size: int, seed: int = 0,
               image_labels: bool = False) -> dict:
    """``dataset=`` / ``dataset_kwargs=`` of ``ImageView-v0`` for the images of ``split``: a
    named dataset by name, generated by the env (``n``, ``size``, ``split``, ``seed``); any
    other source (or any, with ``image_labels``) loaded once by :func:`object_split` and
    passed as the ``ImageDataset``."""
    from imgmdp_env.datasets import source_kind

    if source_kind(args.dataset) == "named" and not image_labels:
        return {"dataset": args.dataset,
                "dataset_kwargs": {"n": n, "size": size, "split": split, "seed": seed}}
    return {"dataset": object_split(args, split, n, size, seed, image_labels)}


def goal_images(args, n: int, size: int, image_labels: bool = False) -> ImageDataset:
    """The images whose objects are the goal crops
    (:func:`agents.evaluation.learned_rewards.object_crops`):
    ``n`` images of :func:`~imgmdp_env.datasets.splits.reference_split`, never the test images
    the episodes start in (``scenes``: ``"val"``; a folder: the images outside its
    ``--holdout`` split, or the whole ``--dataset`` beside a ``--test-dataset``), seed 0.
    image_labels: see :func:`object_split`."""
    return object_split(args, reference_split(args.dataset), n, size, 0, image_labels)
