"""A bounded in-RAM buffer of images streamed from webdataset shards (:class:`ShardStream`):
training on corpora that do not fit in RAM. The shard format and its reader are in
:mod:`imgmdp_env.datasets.shards`."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imgmdp_env import checks as check
from imgmdp_env.datasets import decode
from imgmdp_env.datasets.base import ImageDataset
from imgmdp_env.datasets.shards import (
    SPLITS,
    Sample,
    dataset_fields,
    decode_sample,
    expand_shards,
    in_split,
    iter_tar,
    split_shards,
)

__all__ = ["ShardStream"]


class ShardStream(ImageDataset):
    """An :class:`ImageDataset` over a bounded buffer of ``buffer`` images streamed from
    shards; the crop kernel (``bank()``) and the annotations always describe the buffer.

    Schedule (deterministic in ``seed``, ``rank``, ``world_size``, ``worker``, ``num_workers``
    and ``split``, whatever the timing): the stream reads this reader's shards
    (:func:`split_shards`) in an order reshuffled every epoch, ``interleave`` shards open at
    once, each next sample taken from a random open one (shuffle across shards). The buffer
    holds the first ``buffer`` samples for steps ``[0, refresh_every)``; at every multiple of
    ``refresh_every`` a random ``replace`` fraction of its slots takes the next samples (the
    sampler's uniform draws shuffle within the buffer). :meth:`at_step` moves the buffer to the
    one of a step; the next buffer is decoded in a background thread while training runs, and
    swapped in place: the ``ImageBank`` objects handed out by :meth:`bank` keep their
    identity and take the new contents, so a sampler built on the stream needs no change.
    Jumping to any step (``--resume``) rebuilds that step's buffer exactly.

    Memory: two buffers (the current one and the one being decoded) of at most ``max_side``
    pixels a side, checked against ``memory_budget`` (GiB) up front; ``max_side`` is required.
    """

    def __init__(self, shards: str | Sequence[str], buffer: int = 1024,
                 refresh_every: int = 100, replace: float = 0.5, split: str = "all",
                 holdout: float = 0.1, seed: int = 0, rank: int = 0, world_size: int = 1,
                 worker: int = 0, num_workers: int = 1, interleave: int = 4,
                 max_side: int | None = decode.DEFAULT_MAX_SIDE,
                 memory_budget: float | None = None) -> None:
        self.paths = split_shards(expand_shards(shards), rank, world_size, worker, num_workers)
        self.capacity = check.integer("buffer", buffer, 1)
        self.refresh_every = check.integer("refresh_every", refresh_every, 1)
        self.replace = check.number("replace", replace, 0, 1, lo_open=True)
        self.split = check.choice("split", split, SPLITS)
        self.holdout = check.number("holdout", holdout, 0, 1, hi_open=True)
        self.seed = check.seed("seed", seed) or 0
        self.reader = (rank, world_size, worker, num_workers)
        self.interleave = check.integer("interleave", interleave, 1)
        self.max_side = decode.check_max_side(max_side)
        if self.max_side is None:
            raise ValueError("ShardStream needs max_side (the buffer's memory bound is "
                             "buffer x max_side^2 pixels); pass e.g. max_side=256")
        decode.check_pixels(2 * self.capacity, 2 * self.capacity * self.max_side ** 2,
                            memory_budget, f"ShardStream buffer ({self.capacity} images, two "
                            "buffers while refreshing)", "; or a smaller buffer (--dataset-size)")
        self.where = f"shards {shards!r}"
        self.n_new = max(1, round(self.replace * self.capacity))
        self._classes: list[str] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="shard-stream")
        self._next: Future | None = None
        self._seek(0)
        fields = dataset_fields(self._slots, self._classes, Path(self.paths[0]).parent.name or
                                "shards")
        super().__init__(**fields)
        self.bank()  # the sampler's default bank, known before the first prefetch packs it
        self._prefetch()

    # -- the sample stream
    def _stream(self) -> Iterator[dict[str, bytes]]:
        """This reader's raw samples of its split, forever (epoch after epoch)."""
        epoch = 0
        while True:
            rng = np.random.default_rng([self.seed, epoch, *self.reader, 0x5A4D])
            order = [self.paths[i] for i in rng.permutation(len(self.paths))]
            pending, open_ = list(order), []
            count = 0
            while pending or open_:
                while pending and len(open_) < self.interleave:
                    open_.append(iter_tar(pending.pop(0)))
                k = int(rng.integers(len(open_)))
                try:
                    raw = next(open_[k])
                except StopIteration:
                    open_.pop(k)
                    continue
                if in_split(raw["__key__"], self.split, self.holdout):
                    count += 1
                    yield raw
            if count == 0:
                raise ValueError(f"{self.where}: reader {self.reader} found no sample of split "
                                 f"{self.split!r} (holdout={self.holdout}) in its "
                                 f"{len(self.paths)} shard(s)")
            epoch += 1

    def _plan(self, chunk: int) -> list[int]:
        """Stream index of the sample in each buffer slot during ``chunk``."""
        slots = list(range(self.capacity))
        nxt = self.capacity
        for c in range(1, chunk + 1):
            rng = np.random.default_rng([self.seed, c, *self.reader, 0xB0F])
            for s in np.sort(rng.choice(self.capacity, self.n_new, replace=False)):
                slots[s] = nxt
                nxt += 1
        return slots

    def _seek(self, chunk: int) -> None:
        """Rebuild the buffer of ``chunk`` from the stream's start (decoding only the samples
        it holds) and leave the stream just past them."""
        plan = self._plan(chunk)
        want = {j: s for s, j in enumerate(plan)}
        self._iter = self._stream()
        slots: list[Sample | None] = [None] * self.capacity
        for j in range(max(plan) + 1):
            raw = next(self._iter)
            if j in want:
                slots[want[j]] = decode_sample(raw, self.max_side, self.where)
        self._slots: list[Sample] = slots  # type: ignore[assignment]
        self.chunk = chunk

    def _build(self, chunk: int, slots: list[Sample]) -> tuple[list[Sample], dict, dict]:
        """The buffer of ``chunk`` (the one after ``slots``) and its banks (background)."""
        rng = np.random.default_rng([self.seed, chunk, *self.reader, 0xB0F])
        new = list(slots)
        for s in np.sort(rng.choice(self.capacity, self.n_new, replace=False)):
            new[s] = decode_sample(next(self._iter), self.max_side, self.where)
        with self._lock:
            fields = dataset_fields(new, self._classes, self.name)
            keys = list(self._banks)
        from imgmdp_env.views import ImageBank

        banks = {key: ImageBank(fields["images"], levels=key[0], fill=key[1]) for key in keys}
        return new, fields, banks

    def _prefetch(self) -> None:
        self._next = self._pool.submit(self._build, self.chunk + 1, self._slots)

    def _install(self, chunk: int, slots: list[Sample], fields: dict, banks: dict) -> None:
        self._slots, self.chunk = slots, chunk
        for k in ("images", "captions", "object_boxes", "object_labels", "labels",
                  "class_names"):
            setattr(self, k, fields[k])
        from imgmdp_env.views import ImageBank

        for key, bank in list(self._banks.items()):
            fresh = banks.get(key)
            if fresh is None:  # a bank asked for after the prefetch started: packed now
                fresh = ImageBank(self.images, levels=key[0], fill=key[1])
            bank.__dict__.update(fresh.__dict__)  # same object: samplers and envs see it

    def at_step(self, step: int) -> bool:
        """Make the buffer the one of training step ``step`` (``step // refresh_every``).
        Returns whether it changed. The next step's buffer is already being decoded; a jump
        (resume) rebuilds the buffer of ``step`` exactly."""
        chunk = check.integer("step", step, 0) // self.refresh_every
        if chunk == self.chunk:
            return False
        if chunk == self.chunk + 1 and self._next is not None:
            slots, fields, banks = self._next.result()
        else:
            if self._next is not None:
                self._next.result()  # the stream iterator is the worker's until it returns
            self._seek(chunk)
            with self._lock:
                fields = dataset_fields(self._slots, self._classes, self.name)
            slots, banks = self._slots, {}
        self._install(chunk, slots, fields, banks)
        self._prefetch()
        return True

    def bank(self, levels: int = 4, fill: tuple[int, int, int] = (0, 0, 0)):
        """The buffer packed for the crop kernel (one object per ``(levels, fill)``, updated in
        place by :meth:`at_step`)."""
        with self._lock:  # the background build reads the keys to pack
            return super().bank(levels, fill)

    def subset(self, indices: np.ndarray | list[int]) -> ImageDataset:
        """A plain in-RAM :class:`ImageDataset` of buffer images (a snapshot)."""
        return ImageDataset.subset(self, indices)

    def close(self) -> None:
        """Stop the background thread (the buffer stays readable)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __reduce__(self):  # a snapshot travels (AsyncVectorEnv workers), not the stream
        warnings.warn("pickling a ShardStream sends a snapshot of its buffer", stacklevel=2)
        return ImageDataset.subset(self, list(range(len(self)))).__reduce__()
