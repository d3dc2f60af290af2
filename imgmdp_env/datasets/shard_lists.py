"""Which shards a spec names and which of them one reader reads: ``spec`` is a ``.tar`` path, a
brace pattern ``data/shard-{000..009}.tar`` (zero-padded like its first bound) or list
``{a,b}``, a comma list of those, a list of paths, or a folder of ``.tar`` files
(:func:`expand_shards`); :func:`split_shards` gives each DDP rank and data worker its own
shards. The shards' format and readers: :mod:`imgmdp_env.datasets.shards`."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imgmdp_env import checks as check

__all__ = ["expand_shards", "is_shard_spec", "split_shards"]


def _braces(pattern: str) -> list[str]:
    """Expand ``{000..009}`` (zero-padded like its first bound) and ``{a,b}``, left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        lo, hi = int(r.group(1)), int(r.group(2))
        if hi < lo:
            raise ValueError(f"shard pattern {pattern!r}: range {{{body}}} runs backwards")
        width = len(r.group(1))
        items = [f"{i:0{width}d}" for i in range(lo, hi + 1)]
    elif "," in body:
        items = body.split(",")
    else:
        raise ValueError(f"shard pattern {pattern!r}: {{{body}}} is neither a range {{000..009}} "
                         "nor a list {a,b}")
    return [x for item in items for x in _braces(head + item + tail)]


def _top_level(text: str) -> list[str]:
    """``text`` split at the commas outside braces (``a-{0,1}.tar,b.tar`` -> 2 parts)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def is_shard_spec(spec: Any) -> bool:
    """Whether ``spec`` names shards: a ``.tar`` path or pattern, a comma list of them, a list
    of ``.tar`` paths, or a folder holding ``.tar`` files and no images."""
    if isinstance(spec, list | tuple):
        return bool(spec) and all(isinstance(s, str | os.PathLike) and
                                  os.fspath(s).endswith(".tar") for s in spec)
    if not isinstance(spec, str | os.PathLike):
        return False
    text = os.fspath(spec)
    if isinstance(text, bytes):
        return False
    if any(p.strip().endswith(".tar") for p in _top_level(text)) and not Path(text).is_dir():
        return True
    if Path(text).is_dir():
        from imgmdp_env.datasets.folder import EXTENSIONS

        names = os.listdir(text)
        return any(n.endswith(".tar") for n in names) and not any(
            n.lower().endswith(EXTENSIONS) for n in names)
    return False


def expand_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The shard paths of ``spec`` (module docstring), in order; every one must exist."""
    if isinstance(spec, list | tuple):
        paths = [check.path_like("shards", s) for s in spec]
    else:
        text = check.path_like("shards", spec)
        if Path(text).is_dir():
            paths = sorted(str(p) for p in Path(text).glob("*.tar"))
        else:
            paths = [x for part in _top_level(text) if part.strip()
                     for x in _braces(part.strip())]
    if not paths:
        raise ValueError(f"shards {spec!r} name no .tar file")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"shards {spec!r}: {len(missing)} of {len(paths)} shard(s) do not "
                         f"exist: {missing[:5]}")
    return paths


def split_shards(paths: Sequence[str], rank: int = 0, world_size: int = 1, worker: int = 0,
                 num_workers: int = 1) -> list[str]:
    """The shards of one reader: rank ``rank`` of ``world_size`` (DDP) and data worker
    ``worker`` of ``num_workers`` within it read every ``world_size * num_workers``-th shard,
    so no two readers share a shard. Refuses fewer shards than readers (the fix: write more,
    smaller shards)."""
    world_size = check.integer("world_size", world_size, 1)
    rank = check.integer("rank", rank, 0, world_size - 1)
    num_workers = check.integer("num_workers", num_workers, 1)
    worker = check.integer("worker", worker, 0, num_workers - 1)
    parts = world_size * num_workers
    if len(paths) < parts:
        raise ValueError(f"{len(paths)} shard(s) for {world_size} rank(s) x {num_workers} "
                         f"worker(s): every reader needs its own shard; write at least {parts} "
                         "shards (python -m imgmdp_env.datasets.shards SRC OUT --per-shard N "
                         "with a smaller N)")
    return list(paths[rank * num_workers + worker::parts])
