"""Video frames as images: a tiny synthetic video encoded with PyAV and read back at a frame
stride, resized on load within the memory bound, split by whole video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from imgmdp_env.datasets import make_dataset, source_kind  # noqa: E402
from imgmdp_env.datasets.video import load_video  # noqa: E402

N_FRAMES = 20


def _level(i: int) -> int:
    # frame i is a flat grey of this level: the frame index is readable (for i < 21)
    return (10 + 12 * i) % 256


def encode(path: Path, n: int = N_FRAMES, h: int = 48, w: int = 64) -> Path:
    """``n`` flat grey frames (level ``_level(i)``), MPEG-4 at high quality."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "1"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), _level(i), np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_frames_at_a_stride_are_the_right_frames(tmp_path):
    path = encode(tmp_path / "clip.mp4")
    assert source_kind(str(path)) == "video"
    ds = make_dataset(str(path), frame_stride=6, max_side=None)
    assert len(ds) == len(range(0, N_FRAMES, 6)) == 4
    for img, i in zip(ds.images, range(0, N_FRAMES, 6), strict=True):
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        nearest = int(np.argmin([abs(float(img.mean()) - _level(j)) for j in range(N_FRAMES)]))
        assert nearest == i  # frame i, not a neighbour (levels 12 apart; YUV shifts a few)


def test_frames_are_resized_and_bounded(tmp_path):
    path = encode(tmp_path / "clip.mp4")
    ds = load_video(path, frame_stride=5, max_side=32, max_frames=3)
    assert [im.shape for im in ds.images] == [(24, 32, 3)] * 3
    need = 4 * 24 * 32 * 8.34 / 2**30  # 4 frames at stride 5, estimated from the metadata
    with pytest.raises(MemoryError, match=r"every 5th frame.*--frame-stride"):
        load_video(path, frame_stride=5, max_side=32, memory_budget=need / 2)


def test_a_folder_of_videos_splits_by_video(tmp_path):
    for k in range(4):
        encode(tmp_path / f"v{k}.mp4", n=6)
    assert source_kind(str(tmp_path)) == "video"
    train = load_video(tmp_path, frame_stride=3, split="train", holdout=0.3)
    test = load_video(tmp_path, frame_stride=3, split="test", holdout=0.3)
    assert len(train) + len(test) == 8 and len(test) % 2 == 0 and len(test) > 0


def test_one_video_splits_by_time(tmp_path):
    path = encode(tmp_path / "clip.mp4")  # 20 frames: the last 5 (holdout 0.25) are the test
    level = lambda im: int(np.argmin([abs(float(im.mean()) - _level(j))  # noqa: E731
                                      for j in range(N_FRAMES)]))
    train = load_video(path, frame_stride=2, split="train", holdout=0.25, max_side=None)
    test = load_video(path, frame_stride=2, split="test", holdout=0.25, max_side=None)
    assert [level(im) for im in train.images] == [0, 2, 4, 6, 8, 10, 12, 14]
    assert [level(im) for im in test.images] == [16, 18]


def test_train_value_reads_a_video_with_held_out_frames(tmp_path):
    from agents.infra.sources import source_kwargs
    from agents.train_value import parse_args
    from imgmdp_env.datasets.splits import load_split

    path = encode(tmp_path / "clip.mp4")
    args = parse_args(["--dataset", str(path), "--frame-stride", "2", "--holdout", "0.25",
                       "--max-side", "32"])
    kw = source_kwargs(args, args.dataset)
    train = load_split(args.dataset, "train", 100, 0, 1, **kw)
    test = load_split(args.dataset, "test", 100, 0, 0, **kw)
    assert (len(train), len(test)) == (8, 2) and train.images[0].shape == (24, 32, 3)


def test_a_short_video_at_the_default_stride_keeps_a_held_out_frame(tmp_path):
    """40 frames at the default --frame-stride 30 keep frames 0 and 30: the held-out part
    (from frame 36) held none, so the final report found no frame; now each split takes one."""
    from agents.infra.sources import source_kwargs
    from agents.train_value import parse_args
    from imgmdp_env.datasets.splits import load_split

    path = encode(tmp_path / "clip.mp4", n=40, h=16, w=16)
    args = parse_args(["--dataset", str(path), "--max-side", "16"])
    kw = source_kwargs(args, args.dataset)
    assert kw["frame_stride"] == 30
    with pytest.warns(UserWarning, match=r"40 frames, 1 in 30 kept: 2 frames.*the held-out "
                                         r"split empty.*training split takes 1.*held-out split 1"):
        train = load_split(args.dataset, "train", 100, 0, 1, **kw)
    with pytest.warns(UserWarning, match="held-out split 1"):
        test = load_split(args.dataset, "test", 100, 0, 0, **kw)
    assert (len(train), len(test)) == (1, 1)
    level = lambda im: int(np.argmin([abs(float(im.mean()) - _level(j))  # noqa: E731
                                      for j in (0, 30)]))
    assert (level(train.images[0]), level(test.images[0])) == (0, 1)  # frames 0 and 30


def test_a_video_too_short_for_both_splits_is_refused_with_the_numbers(tmp_path):
    path = encode(tmp_path / "clip.mp4", n=N_FRAMES, h=16, w=16)
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"clip.mp4'.*20 frame\(s\), 1 in 30 kept: 1 "
                                             r"frame\(s\), too few .*--frame-stride.* at most 19"):
            load_video(path, split=split)
    assert len(load_video(path, split="train", holdout=0)) == 1  # nothing held out: fine
    assert len(load_video(path, split="all")) == 1
