"""Webdataset shards: patterns, the writer and reader round trip, splits, the reader split
over ranks and workers, the streaming buffer (deterministic, exact on a jump, swapped in
place under a sampler), and a streamed training run that resumes exactly."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.method.data import TransitionSampler
from agents.train_value import parse_args, train
from imgmdp_env.datasets import make_dataset, source_kind
from imgmdp_env.datasets.shards import (
    expand_shards,
    main,
    read_shards,
    split_shards,
    write_shards,
)
from imgmdp_env.datasets.stream import ShardStream
from imgmdp_env.views import ImageBank, render_views


@pytest.fixture(scope="module")
def scenes():
    return make_dataset("scenes", n=40, size=32, seed=3)


@pytest.fixture
def shards(tmp_path, scenes) -> str:
    write_shards(scenes, str(tmp_path / "s" / "shard-%03d.tar"), per_shard=10,
                 image_format="png")
    return str(tmp_path / "s" / "shard-{000..003}.tar")


def test_patterns_expand_in_order(tmp_path):
    for i in range(3):
        (tmp_path / f"a-{i:02d}.tar").write_bytes(b"")
    want = [str(tmp_path / f"a-{i:02d}.tar") for i in range(3)]
    assert expand_shards(str(tmp_path / "a-{00..02}.tar")) == want
    assert expand_shards(str(tmp_path / "a-{00,02}.tar")) == [want[0], want[2]]
    assert expand_shards(",".join(want[:2])) == want[:2]
    assert expand_shards(str(tmp_path)) == want  # a folder of .tar files
    assert source_kind(str(tmp_path)) == "shards" and source_kind(want[0]) == "shards"
    with pytest.raises(ValueError, match=r"1 of 4 shard\(s\) do not exist"):
        expand_shards(str(tmp_path / "a-{00..03}.tar"))
    with pytest.raises(ValueError, match="runs backwards"):
        expand_shards(str(tmp_path / "a-{03..01}.tar"))


def test_write_then_read_round_trip(shards, scenes):
    ds = read_shards(shards, max_side=64)
    assert len(ds) == len(scenes)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.images[i], scenes.images[i])  # png: lossless
        assert ds.captions[i] == scenes.captions[i]
        np.testing.assert_allclose(ds.object_boxes[i], scenes.object_boxes[i], rtol=1e-6)
        names = [ds.class_names[c] for c in ds.object_labels[i]]
        assert names == [scenes.class_names[c] for c in scenes.object_labels[i]]


def test_img2dataset_layout_is_read(tmp_path):
    """A shard as img2dataset writes it: jpg + txt caption + json without our keys."""
    from PIL import Image

    path = tmp_path / "00000.tar"
    with tarfile.open(path, "w") as tar:
        for k in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((20, 30, 3), 60 * k, np.uint8)).save(buf, "JPEG")
            files = {"jpg": buf.getvalue(), "txt": f"photo {k}".encode(),
                     "json": json.dumps({"url": "http://x", "width": 30}).encode()}
            for ext, data in files.items():
                info = tarfile.TarInfo(f"00000{k:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    ds = make_dataset(str(path))
    assert ds.captions == ["photo 0", "photo 1", "photo 2"] and ds.object_boxes is None
    assert ds.images[2].shape == (20, 30, 3) and abs(int(ds.images[2].mean()) - 120) < 3


def test_shard_splits_partition_by_key(shards):
    train = read_shards(shards, split="train", holdout=0.3)
    test = read_shards(shards, split="test", holdout=0.3)
    key = lambda ds: {im.tobytes() for im in ds.images}  # noqa: E731
    assert len(train) + len(test) == 40 and not key(train) & key(test) and len(test) > 3


def test_readers_split_the_shards_without_overlap():
    paths = [f"s{i}.tar" for i in range(12)]
    parts = [split_shards(paths, r, 3, w, 2) for r in range(3) for w in range(2)]
    assert sorted(p for part in parts for p in part) == sorted(paths)
    assert all(len(p) == 2 for p in parts)
    with pytest.raises(ValueError, match="write at least 16 shards"):
        split_shards(paths, 0, 8, 0, 2)


def _keys(stream: ShardStream) -> list[str]:
    return [s.key for s in stream._slots]


def test_stream_buffer_is_deterministic_and_exact_after_a_jump(shards):
    kw = dict(buffer=8, refresh_every=3, seed=5, max_side=64)
    a, b = ShardStream(shards, **kw), ShardStream(shards, **kw)
    first = _keys(a)
    assert len({k[:-1] for k in first}) > 1  # the first buffer mixes several shards
    history = []
    for step in range(12):
        changed = a.at_step(step)
        assert changed == (step > 0 and step % 3 == 0)
        history.append(_keys(a))
    assert sum(k != j for k, j in zip(history[2], history[3], strict=True)) == 4  # half
    b.at_step(11)  # a jump (resume): the same buffer without the steps in between
    assert _keys(b) == history[-1]
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    other = ShardStream(shards, **{**kw, "seed": 6})
    assert _keys(other) != first
    a.close(), b.close(), other.close()


def test_stream_reads_every_sample_each_epoch(shards):
    s = ShardStream(shards, buffer=4, refresh_every=1, replace=1.0, seed=0, max_side=64)
    seen = set()
    for step in range(10):  # 4 + 4 * 9 = 40 samples: one epoch
        s.at_step(step)
        seen |= set(_keys(s))
    assert len(seen) == 40
    s.close()


def test_ranks_stream_disjoint_shards(shards):
    kw = dict(buffer=6, refresh_every=1, replace=1.0, max_side=64, world_size=2)
    r0, r1 = ShardStream(shards, rank=0, **kw), ShardStream(shards, rank=1, **kw)
    k0, k1 = set(), set()
    for step in range(3):
        r0.at_step(step), r1.at_step(step)
        k0 |= {k[:-1] for k in _keys(r0)}
        k1 |= {k[:-1] for k in _keys(r1)}
    assert k0 and k1 and not k0 & k1  # shard-level split: no shard read by both ranks
    r0.close(), r1.close()


def test_sampler_sees_the_new_buffer_through_the_same_bank(shards):
    s = ShardStream(shards, buffer=8, refresh_every=2, seed=1, max_side=64)
    sampler = TransitionSampler(s, view_size=16, base_batch=4, boot_images=2)
    bank = s.bank()
    assert sampler.base_bank is bank
    sampler.sample()
    s.at_step(2)
    assert s.bank() is bank  # swapped in place
    fresh = ImageBank(s.images)
    idx = torch.arange(8)
    boxes = torch.tensor([[0.5, 0.5, 0.8, 0.6]]).repeat(8, 1)
    assert torch.equal(render_views(bank, idx, boxes, 16), render_views(fresh, idx, boxes, 16))
    assert len(s.captions) == 8 and len(s.object_boxes) == 8
    s.close()


def test_stream_memory_bound_is_checked_up_front(shards):
    with pytest.raises(MemoryError, match="ShardStream buffer.*GiB"):
        ShardStream(shards, buffer=10_000, max_side=256, memory_budget=0.1)
    with pytest.raises(ValueError, match="needs max_side"):
        ShardStream(shards, max_side=None)


def test_writer_cli_turns_a_folder_into_shards(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" /
                                                                      f"{i}.png")
    out = tmp_path / "out" / "part-%04d.tar"
    assert main([str(tmp_path / "imgs"), str(out), "--per-shard", "2", "--max-side",
                 "30", "--format", "png"]) == 0
    ds = make_dataset(str(tmp_path / "out" / "part-{0000..0002}.tar"))
    assert len(ds) == 5 and ds.images[4].shape == (20, 30, 3) and ds.images[4][0, 0, 0] == 160
    assert main([str(tmp_path / "imgs"), str(tmp_path / "bad.tar")]) == 2  # no %d field


TINY = ["--dataset-size", "8", "--view-size", "32", "--base-batch", "4", "--proj-dim", "16",
        "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth", "1",
        "--warmup-steps", "1", "--boot-images", "2", "--n-views", "2", "--threads", "1",
        "--stream-refresh", "2", "--max-side", "32", "--no-probe", "--no-tensorboard"]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text()
                                              .splitlines())}


@pytest.mark.parametrize("base", ["simclr", "clip"])
def test_streamed_training_resumes_exactly(tmp_path, shards, base):
    def args(name: str, **kw):
        a = parse_args(TINY + ["--runs-dir", str(tmp_path / "runs"), "--name", name,
                               "--dataset", shards, "--base", base])
        return replace(a, total_steps=6, log_every=1, checkpoint_every=1, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(args("full"))
        train(args("split", stop_at=3))
        train(replace(args("split"), resume=str(tmp_path / "runs" / "split")))
    full, split = _losses(tmp_path / "runs" / "full"), _losses(tmp_path / "runs" / "split")
    assert sorted(full) == list(range(1, 7))
    assert split == full  # steps 4..6 ran on the buffers (and captions) rebuilt at step 3


def test_clip_follows_the_stream_captions(tmp_path, shards):
    from agents.infra.sources import build_datasets, sync_streams
    from agents.infra.train_utils import build_agent

    args = parse_args(TINY + ["--runs-dir", str(tmp_path / "runs"), "--dataset", shards,
                              "--base", "clip"])
    data = build_datasets(args, 0, 1)
    agent, sampler = build_agent(args, data)
    stream = data["base"]
    before = list(stream.captions)
    sync_streams(data, 1, sampler, agent)  # same buffer: nothing recomputed
    assert torch.equal(sampler.caption_inputs, agent.caption_inputs(before))
    sync_streams(data, 2, sampler, agent)  # refreshed: the new buffer's captions
    assert stream.captions != before
    assert torch.equal(sampler.caption_inputs, agent.caption_inputs(stream.captions))
    batch = sampler.sample()
    want = agent.caption_inputs([stream.captions[i] for i in batch.base_index.tolist()])
    assert torch.equal(batch.captions, want)
    stream.close()


@pytest.mark.parametrize("meta,match", [
    ({"boxes": [[0.5, 0.5, 0.2]], "labels": ["a"]}, "needs 'boxes'"),
    ({"boxes": [[0.5, 0.5, 0.2, 0.0]], "labels": ["a"]}, "w and h > 0"),
    ({"boxes": [[0.5, 0.5, 0.2, 0.2]], "labels": []}, "one class name per box"),
    ({"caption": 3}, "not a string"),
    ([1, 2], "expected an object"),
])
def test_bad_sample_json_is_refused_naming_the_sample(tmp_path, meta, match):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for ext, data in {"png": buf.getvalue(), "json": json.dumps(meta).encode()}.items():
            info = tarfile.TarInfo(f"k1.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=rf"k1.*{match}|{match}.*"):
        read_shards(str(path))


def test_a_corrupt_image_names_its_shard_and_key(tmp_path, shards):
    path = tmp_path / "corrupt.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("k9.png")
        info.size = 30
        tar.addfile(info, io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(22)))
    with pytest.raises(ValueError, match=r"corrupt\.tar: the image of sample 'k9'"):
        read_shards(str(path))
    with pytest.raises(ValueError, match=r"corrupt\.tar: the image of sample 'k9'"):
        ShardStream(str(path), buffer=1, max_side=32)


def test_build_datasets_streams_this_ranks_shards(tmp_path, shards, scenes, monkeypatch):
    from agents.infra.sources import build_datasets, source_kwargs

    test = str(tmp_path / "t" / "val-%02d.tar")
    write_shards(scenes.subset(list(range(6))), test, per_shard=3, image_format="png")
    args = parse_args(TINY + ["--dataset", shards, "--test-dataset",
                              str(tmp_path / "t" / "val-{00..01}.tar")])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    data = build_datasets(args)
    stream = data["base"]
    assert isinstance(stream, ShardStream) and data["boot"] is stream
    assert stream.reader == (1, 2, 0, 1) and stream.split == "all"  # the test is separate
    assert stream.paths == expand_shards(shards)[1::2] and len(stream) == 8
    stream.close()
    kw = source_kwargs(args, args.dataset)
    from imgmdp_env.datasets.splits import load_split

    assert len(load_split(args.dataset, "test", 100, 0, 0, **kw)) == 6  # the test shards


def _shard_with_meta(path: Path, metas: list[dict]) -> Path:
    """A shard of 20x30 PNGs, sample ``k`` with ``metas[k]`` as its ``.json``."""
    from PIL import Image

    with tarfile.open(path, "w") as tar:
        for k, meta in enumerate(metas):
            buf = io.BytesIO()
            Image.fromarray(np.full((20, 30, 3), 50, np.uint8)).save(buf, "PNG")
            for ext, data in {"png": buf.getvalue(), "json": json.dumps(meta).encode()}.items():
                info = tarfile.TarInfo(f"s{k:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


OK_META = {"boxes": [[0.5, 0.5, 0.2, 0.2]], "labels": ["dog"]}


@pytest.mark.parametrize("meta,pattern", [
    ({"boxes": [[5, 5, 0.2, 0.2]], "labels": ["dog"]},
     r"box 0 \[5.0, 5.0, 0.2, 0.2\] \(label 'dog'\) is not inside the image"),
    ({"boxes": [[0.95, 0.5, 0.2, 0.2]], "labels": ["dog"]}, "is not inside the image"),
    ({"boxes": [[0.5, 0.5, -0.2, 0.2]], "labels": ["dog"]}, "is not inside the image"),
    ({"boxes": [[0.5, 0.5, float("nan"), 0.2]], "labels": ["dog"]}, r"has boxes \[\[0.5"),
    ({"boxes": [[0.5, 0.5, 0.2]], "labels": ["dog"]}, "has boxes"),
    ({"boxes": [[0.5, 0.5, 0.2, 0.2]], "labels": [""]}, r"has labels \[''\]"),
    ({"boxes": [[0.5, 0.5, 0.2, 0.2]], "labels": ["dog", "cat"]}, r"for 1 box\(es\)"),
    ({"boxes": "none", "labels": []}, "has boxes none"),
])
def test_bad_shard_boxes_are_refused_naming_shard_and_sample(tmp_path, meta, pattern):
    path = _shard_with_meta(tmp_path / "bad-000.tar", [OK_META, meta])
    with pytest.raises(ValueError, match=pattern) as err:
        read_shards(str(path))
    assert f"shard {path}: sample 's001'" in str(err.value)
    ds = read_shards(str(path), n=1)  # the good sample alone is read
    np.testing.assert_allclose(ds.object_boxes[0], [[0.5, 0.5, 0.2, 0.2]], rtol=1e-6)


def test_shard_box_past_the_edge_by_rounding_is_clipped(tmp_path):
    path = _shard_with_meta(tmp_path / "ok-000.tar", [{"boxes": [[0.9, 0.5, 0.205, 0.2]],
                                                        "labels": ["dog"]}])
    box = read_shards(str(path)).object_boxes[0][0]
    assert box[0] + box[2] / 2 == pytest.approx(1.0) and box[2] == pytest.approx(0.2025)


def test_writer_cli_refuses_frame_stride_for_a_folder(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    out = tmp_path / "out" / "part-%04d.tar"
    assert main([str(tmp_path / "imgs"), str(out), "--frame-stride", "5"]) == 2
    assert "--frame-stride (5) keeps every k-th frame of a video" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
