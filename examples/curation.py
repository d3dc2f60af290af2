"""Curation: pay p(curated item | view) and compare a random policy with one that frames the
goal object.

    python examples/curation.py --steps 50
    python examples/curation.py --dataset fashion-scenes --curated fashion   # Fashion-MNIST
    python examples/curation.py --dataset path/to/classes     # root/<class>/<image> folders
    python examples/curation.py --dataset coco/val2017 --instances instances_val2017.json

The curated set is a set of single items labelled by class, one prototype per class. By default
("objects") it comes from the --dataset images the episodes never start in
(``agents.infra.sources.goal_images``): the object crops of a dataset with object boxes (scenes,
fashion-scenes, a folder with --instances, shards with boxes), or the whole images of a dataset
labelled per image (a folder of class sub-folders, fashion, shards with labels). Or any
labelled dataset (--curated: a name or a class-sub-folder folder). The episodes start in the
--dataset test images (its --holdout split, or --test-dataset) and are after their image's own
class; "frame-goal" jumps to that object (or to the whole image when labels are per image). The
scorer is the training-free default: 12x12 edge maps, a softmax over cosine similarities to the
curated items, summed per class. It is weak: it rewards framing *like the curated items*, not
recognising the object.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import imgmdp_env  # noqa: F401  (registers ImageView-v0)
from agents.evaluation.learned_rewards import object_crops
from agents.infra.arg_checks import labelled_source
from agents.infra.sources import add_object_flags, goal_images, object_env
from imgmdp_env.actions import relative_to_action
from imgmdp_env.datasets import ImageDataset, make_dataset
from imgmdp_env.rewards import VectorCurationReward
from imgmdp_env.views import relative_box

WHOLE = np.array([0.5, 0.5, 1.0, 1.0], np.float32)  # the whole image, cxcywh


def frame_goal(envs, info: dict, context: float = 1.4) -> np.ndarray:
    """Jump straight to the goal object (the dataset's boxes), framed like the crops, or to the
    whole image when the dataset is labelled per image: the action is the relative box, through
    the env's own parameterisation. Returns ``(num_envs, 4)`` float32 actions."""
    core = envs.unwrapped
    ds, names = core.dataset, envs.vocabulary
    a = np.zeros((core.num_envs, 4), np.float32)
    for i, (idx, goal) in enumerate(zip(info["image_index"], info["goal"], strict=True)):
        if ds.object_boxes is None:
            target = WHOLE
        else:
            hits = ds.object_boxes[idx][np.array(ds.class_names)[ds.object_labels[idx]]
                                        == names[goal]]
            if not len(hits):
                continue
            target = hits[0] * np.array([1, 1, context, context], np.float32)
        rel = relative_box(torch.from_numpy(info["box"][i]), torch.from_numpy(target))
        a[i] = relative_to_action(rel, core.max_pan, core.max_zoom).numpy()
    return a


def curated_set(args, size: int = 32) -> ImageDataset:
    """Single items labelled by class: ``--curated objects``: the object crops (``size`` px)
    of the --dataset images apart from the test ones, or those whole images when they are
    labelled per image; else the ``--curated`` dataset. Raises ``SystemExit`` naming the flag
    when the set has no class labels."""
    if args.curated == "objects":
        ds = goal_images(args, args.curated_images, args.scene_size, image_labels=True)
        return object_crops(ds, size) if ds.object_boxes is not None else ds
    try:
        ds = make_dataset(args.curated)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"--curated ({args.curated!r}): {err}") from None
    if ds.labels is None or ds.class_names is None:
        raise SystemExit(f"--curated ({args.curated!r}) has no class labels: pass 'objects', "
                         "a folder of class sub-folders (root/<class>/<image>) or a labelled "
                         "named dataset such as fashion")
    return ds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="steps per policy")
    add_object_flags(p, image_labels=True)
    p.add_argument("--curated", default="objects",
                   help="'objects' (from --dataset) or a labelled dataset: a name, a folder of "
                        "class sub-folders")
    p.add_argument("--images", type=int, default=256,
                   help="test images the episodes start in (at most)")
    p.add_argument("--curated-images", type=int, default=128,
                   help="--dataset images of the curated set (never test images)")
    p.add_argument("--scene-size", type=int, default=96, help="side of generated scenes")
    p.add_argument("--num-envs", type=int, default=16, help="sub-environments")
    p.add_argument("--seed", type=int, default=0, help="seed of env and policy")
    args = p.parse_args(argv)
    try:
        labelled_source(args)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"invalid argument: {err}") from None

    curated = curated_set(args)
    source = object_env(args, "test", args.images, args.scene_size, image_labels=True)
    classes = source["dataset"].class_names
    if not set(curated.class_names) & set(classes):
        raise SystemExit(f"--curated ({args.curated!r}) shares no class with --dataset "
                         f"({args.dataset!r}), so no episode has a goal it can score: classes "
                         f"{curated.class_names[:5]} vs {classes[:5]}")
    envs = gym.make_vec("ImageView-v0", num_envs=args.num_envs, max_episode_steps=10, **source)
    envs = VectorCurationReward(envs, curated, goals="image", goal_text=True)
    print(f"curated set: {len(envs.curated)} items; prototypes: {envs.vocabulary}")
    for policy in ("random", "frame-goal"):
        _, info = envs.reset(seed=args.seed)
        envs.action_space.seed(args.seed)
        rewards = []
        for _ in range(args.steps):
            act = envs.action_space.sample() if policy == "random" else frame_goal(envs, info)
            _, reward, _, _, info = envs.step(act)
            rewards.append(reward)
        print(f"{policy:>10} policy: mean reward per step {np.mean(rewards):.3f} "
              f"(chance {1 / len(envs.vocabulary):.3f})")


if __name__ == "__main__":
    main()
