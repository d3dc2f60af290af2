"""Video files as images: every ``frame_stride``-th frame of each video, decoded with PyAV.

The paper pre-trains on EpicKitchens by treating frames as independent images; so does this
source. PyAV (``pip install imgmdp[video]``, the ``av`` wheel bundles FFmpeg: no system
FFmpeg needed) decodes the frames; each kept frame is resized on load so that its longer side
is at most ``max_side`` (default 256), and the RAM the frames will take is estimated from the
streams' metadata (frame count, width, height) and checked against ``memory_budget`` before
anything is decoded. Where a container does not store its frame count, it is estimated from
the duration and the frame rate.

``path``: one video file, or a folder searched recursively for :data:`VIDEO_EXTENSIONS`
(sorted by relative path). Splits hold out whole videos (frames of one video are near
copies, so holding out frames would leak the test set into training):
``split="train"`` / ``"test"`` keep the videos outside / inside
:func:`imgmdp_env.datasets.holdout.held_out` of their relative paths. One video is split by
time instead: its last ``holdout`` of frames is the test split (one contiguous block, so only
the frames at the cut are near copies of training frames); of the kept frames, each split
takes at least one (a video with fewer than 2 kept frames is refused with the numbers).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets import decode
from imgmdp_env.datasets.base import ImageDataset
from imgmdp_env.datasets.folder import EXTENSIONS, VIDEO_EXTENSIONS, select

__all__ = ["VIDEO_EXTENSIONS", "is_video_spec", "load_video"]


def _av():
    try:
        import av
    except ImportError as err:
        raise ImportError("video sources need PyAV: pip install 'imgmdp[video]' (the av "
                          "wheel; it bundles FFmpeg)") from err
    return av


def is_video_spec(spec: object) -> bool:
    """A video file, or a folder holding video files and no image files."""
    if not isinstance(spec, str | os.PathLike):
        return False
    p = Path(os.fspath(spec))
    if p.is_file():
        return p.suffix.lower() in VIDEO_EXTENSIONS
    if p.is_dir():
        video = False
        for _, _, names in os.walk(p, followlinks=True):
            for name in names:
                ext = os.path.splitext(name)[1].lower()
                if ext in EXTENSIONS:
                    return False  # an image folder: answered at its first image file
                video = video or ext in VIDEO_EXTENSIONS
        return video
    return False


def _frame_count(stream) -> int:
    if stream.frames:
        return int(stream.frames)
    if stream.duration is not None and stream.time_base is not None and stream.average_rate:
        return int(math.ceil(float(stream.duration * stream.time_base * stream.average_rate)))
    raise ValueError("the container stores neither a frame count nor a duration")


def load_video(
    path: str | Path,
    frame_stride: int = 30,
    max_frames: int | None = None,
    max_side: int | None = decode.DEFAULT_MAX_SIDE,
    memory_budget: float | None = None,
    split: str = "all",
    holdout: float = 0.1,
    n: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Frames ``0, k, 2k, ...`` (``k = frame_stride``) of each video as an
    :class:`ImageDataset` of ``(h, w, 3)`` uint8 images, in video then frame order, with no
    annotations.

    max_frames: at most this many frames per video. max_side / memory_budget: as
    :func:`imgmdp_env.datasets.folder.load_folder` (MemoryError with the figure and the fixes,
    among them a larger ``frame_stride``). split / holdout: by whole video, or by time for one
    video (module docstring).
    n: then at most ``n`` frames, a seeded subset. Videos that cannot be opened are skipped
    and reported in one warning.
    """
    av = _av()
    root = Path(check.path_like("path", path))
    frame_stride = check.integer("frame_stride", frame_stride, 1)
    max_frames = check.optional_integer("max_frames", max_frames, 1)
    max_side = decode.check_max_side(max_side)
    decode.budget_bytes(memory_budget)
    if root.is_file():
        base, files = root.parent, [root.name]
    elif root.is_dir():
        base = root
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    else:
        raise ValueError(f"video {str(path)!r} is neither a video file nor a folder")
    if not files:
        raise ValueError(f"folder {str(path)!r} holds no video file {VIDEO_EXTENSIONS}")
    one = len(files) == 1
    if not one:
        files = select(files, split, holdout, None, seed, f"videos {str(path)!r}")
    else:  # one video: its last `holdout` of frames (by time) is the test split
        check.choice("split", split, ("all", "train", "test"))
        holdout = check.number("holdout", holdout, 0, 1, hi_open=True)
        if split == "test" and holdout == 0:
            raise ValueError(f"video {str(path)!r}: split='test' with holdout=0 holds no "
                             "frame; pass holdout > 0 or a separate test video")
    n = check.optional_integer("n", n, 1)
    plan, skipped = [], []
    for rel in files:
        try:
            with av.open(str(base / rel)) as container:
                stream = container.streams.video[0]
                count = _frame_count(stream)
                hw = decode.fit_size(stream.height, stream.width, max_side)
        except Exception as err:  # PyAV raises its own error types for broken files
            skipped.append(f"{rel} ({type(err).__name__}: {err})")
            continue
        frames = range(0, count, frame_stride)
        if one and split != "all":
            frames = _time_split(frames, count, split, holdout, frame_stride, str(path))
        if max_frames is not None:
            frames = frames[:max_frames]
        plan.append((rel, frames, hw))
    sizes = [hw for _, k, hw in plan for _ in k]
    if sizes:
        n_est = len(sizes) if n is None else min(n, len(sizes))
        decode.check_budget(sizes[:n_est], memory_budget, f"video {str(path)!r} "
                            f"(every {frame_stride}th frame)", "; or a larger --frame-stride / "
                            "max_frames")
    images: list[np.ndarray] = []
    for rel, frames, _ in plan:
        try:
            images += _frames(av, base / rel, frames, max_side)
        except Exception as err:
            skipped.append(f"{rel} ({type(err).__name__}: {err})")
    if skipped:
        warnings.warn(f"load_video: skipped {len(skipped)} video(s) of {len(files)}: "
                      f"{'; '.join(skipped[:10])}", stacklevel=2)
    if not images:
        raise ValueError(f"video {str(path)!r}: no frame could be decoded")
    if n is not None and len(images) > n:
        pick = np.sort(np.random.default_rng(check.seed("seed", seed) or 0).choice(
            len(images), n, replace=False))
        images = [images[i] for i in pick]
    name = root.stem if root.is_file() else (root.name or str(root))
    return ImageDataset(images=images, name=name if split == "all" else f"{name}[{split}]")


def _time_split(grid: range, count: int, split: str, holdout: float, stride: int,
                where: str) -> range:
    """The frames of ``split`` of one video: of its kept frames ``grid`` (``0, k, 2k, ...``),
    those before frame ``(1 - holdout) * count`` train and the others are held out, each side
    keeping at least one (a warning says so when that moves the cut). Refused (ValueError with
    the numbers and the flag to change) when ``grid`` has fewer than 2 frames."""
    if holdout == 0:  # split "train" (a "test" split of nothing is refused before)
        return grid
    if len(grid) < 2:
        fix = (f"a --frame-stride (frame_stride) of at most {count - 1} keeps 2 frames, "
               if count >= 2 else "")
        raise ValueError(
            f"video {where!r}: {count} frame(s), 1 in {stride} kept: {len(grid)} frame(s), "
            f"too few to hold out the last {holdout:g} of the video for testing and train on "
            f"the rest (each split needs at least 1 frame): {fix}or pass a separate test "
            "video (--test-dataset)")
    cut = int(round((1 - holdout) * count))
    k = len(range(0, cut, stride))  # kept frames before the cut: the training ones
    kept = min(max(k, 1), len(grid) - 1)
    if kept != k:
        warnings.warn(
            f"load_video: video {where!r}: {count} frames, 1 in {stride} kept: {len(grid)} "
            f"frames; holding out the last {holdout:g} of the video (from frame {cut}) would "
            f"leave the {'held-out' if k == len(grid) else 'training'} split empty, so the "
            f"training split takes {kept} frame(s) and the held-out split {len(grid) - kept} "
            f"(frames {list(grid[kept:][:5])}); a smaller --frame-stride (frame_stride) keeps "
            "more frames", stacklevel=3)
    return grid[:kept] if split == "train" else grid[kept:]


def _frames(av, path: Path, frames: range, max_side: int | None) -> list[np.ndarray]:
    """The frames at the indices ``frames`` (a stepped range) of one video, decoded in order."""
    from PIL import Image

    out: list[np.ndarray] = []
    if not len(frames):
        return out
    want = set(frames)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for i, frame in enumerate(container.decode(stream)):
            if i > frames[-1]:
                break
            if i not in want:
                continue
            img = frame.to_image()  # PIL RGB
            if max_side is not None and max(img.size) > max_side:
                h, w = decode.fit_size(img.size[1], img.size[0], max_side)
                img = img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=2.0)
            out.append(np.asarray(img.convert("RGB"), np.uint8).copy())
    return out
