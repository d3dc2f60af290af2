"""Multi-process and multi-machine training of ``agents/train_value.py`` with ``torchrun``
(PyTorch DDP: gloo on the CPU, NCCL on GPUs).

    torchrun --nproc-per-node 2 agents/train_value.py ...    # 2 ranks on this machine

How the ranks divide the work (docs/architecture.md, "Training on several processes"):

- every rank builds the same agent (the same ``--seed``; DDP also broadcasts rank 0's weights
  when it wraps them) and draws its own batches from the whole dataset, with a sampler seeded by
  rank (:func:`rank_seed`; rank 0 keeps the plain seed). ``--base-batch`` and
  ``--boot-images`` are per rank; the global batch is ``world_size`` times them;
- DDP averages the gradients of the loss (:class:`LossModule`: a module whose forward is
  ``ABAgent.loss``, wrapped with ``static_graph=True`` so the parameters a run never uses, such
  as the AB branch of a base-only run, need no ``find_unused_parameters`` pass), so every
  rank takes the same optimizer step and the EMA target stays identical; the DINO centre is
  updated from the mean of the teacher's batch means over the ranks (:func:`mean_over_ranks`);
- contrastive losses (SimCLR's NT-Xent, CLIP's InfoNCE, the bootstrapping loss's in-batch
  annotations) take their negatives / annotations within each rank's batch;
- only rank 0 opens the run folder, writes logs, checkpoints and plots and runs the probes.

A source that streams its data (shards) reads only its rank's shards: :func:`rank_info` gives
``(rank, world_size)``, :func:`imgmdp_env.datasets.shards.split_shards` the share. A plain
``python agents/train_value.py`` (or torchrun with one process) never creates a process group
and trains exactly as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "LossModule",
    "Ranks",
    "args_digest",
    "check_world_size",
    "differing_flags",
    "launched",
    "mean_over_ranks",
    "rank_info",
    "rank_seed",
]

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"environment variable {name}={value!r} is not an integer (torchrun "
                         "sets RANK, LOCAL_RANK and WORLD_SIZE to integers)") from None


def rank_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from the process group if one is running, else
    from torchrun's ``RANK`` / ``WORLD_SIZE`` (``(0, 1)`` in a plain process). The hook a
    streaming source uses to read only its share
    (:func:`imgmdp_env.datasets.shards.split_shards`)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s batch sampler: ``seed`` itself on rank 0 (a one-process run
    is unchanged), else an independent stream (numpy's ``SeedSequence``) below ``2**63``."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def args_digest(flags: Mapping[str, Any]) -> str:
    """sha256 of a flat ``{flag field: value}`` dict (``agents.infra.flat_args.flat_fields``): equal
    for equal arguments whatever the dict's order (values compared by ``repr``)."""
    text = "\n".join(f"{k}={flags[k]!r}" for k in sorted(flags))
    return hashlib.sha256(text.encode()).hexdigest()


def differing_flags(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The fields (sorted) whose values differ between two flat argument dicts (by ``repr``;
    a field one of them lacks differs)."""
    missing = object()
    return sorted(k for k in set(a) | set(b)
                  if repr(a.get(k, missing)) != repr(b.get(k, missing)))


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks (an all-reduce; every rank must call it); ``t`` itself
    when no process group runs. Any shape and float dtype (a new tensor with several ranks)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out.div_(dist.get_world_size())


class LossModule(nn.Module):
    """What DDP wraps: a module whose forward is ``agent.loss(batch)``. ``ABAgent.loss``
    calls several submodules of ``agent.online`` (encoder, heads, decoder), so DDP must wrap
    one module whose forward runs them all: its gradient hooks then see one backward pass."""

    def __init__(self, agent: nn.Module) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, batch, gauges: bool = True, to_host: bool = True, enc=None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.agent.loss(batch, gauges, to_host, enc)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks, and the few collectives the loop needs (each a
    no-op with one rank, so a one-process run is unchanged)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, flag: str) -> torch.device:
        """The training device for ``--device`` (``auto``: CUDA if available); under torchrun,
        GPU ``LOCAL_RANK`` of this machine, made the current CUDA device (where NCCL's
        collectives run). Call it with the run's own flag, i.e. after ``--resume`` has read
        the saved one: the command line's may be another (``auto``, not given)."""
        cuda = flag == "cuda" or (flag == "auto" and torch.cuda.is_available())
        if not cuda:
            return torch.device("cpu")
        if not self.distributed:
            return torch.device("cuda")
        if self.local_rank >= torch.cuda.device_count():
            raise SystemExit(f"LOCAL_RANK {self.local_rank} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; pass --nproc-per-node <= that")
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def start(self, device: torch.device | None = None) -> bool:
        """Join the process group (``env://``: torchrun's variables) unless one runs already:
        gloo for CPU tensors and, on a machine with GPUs, NCCL for CUDA tensors. One group
        serves both devices, so it is started before the run's arguments are known (rank 0
        reads a resumed run's, then sends them): the training device is not chosen here but
        by :meth:`device` from the run's flag (``--resume`` of a run saved with ``--device
        cpu`` trains on the CPU, whatever the command line's ``auto`` would pick). ``device``
        is ignored (accepted from older callers). Returns whether this call created the
        group (then :meth:`leave` destroys it)."""
        del device  # the run's device is chosen after its arguments are read
        if not self.distributed or dist.is_initialized():
            return False
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        return True

    def leave(self, created: bool) -> None:
        """Leave the process group if :meth:`start` created it (no barrier: after training,
        rank 0's final report, probes and plots run alone, and no collective waits for them
        with a timeout)."""
        if created and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, agent: nn.Module, device: torch.device) -> nn.Module:
        """The module the loop calls: ``model(batch) -> (loss, metrics)``, DDP-wrapped with
        more than one rank. ``static_graph``: the set of parameters that get gradients is the
        same every step (DINO never uses the SimCLR temperature, a base-only run never uses the
        AB branch), and DDP learns it in the first step instead of searching every step.
        ``forward_sync_buffers=False``: the only buffer, the DINO centre, is kept equal by
        :func:`mean_over_ranks` instead of being overwritten by rank 0's at every forward
        (it is synced once, when DDP wraps the module: the same value on every rank)."""
        module = LossModule(agent)
        if not self.distributed:
            return module
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # torch 2.14 names the switch forward_sync_buffers; older ones (2.11) broadcast_buffers
        known = inspect.signature(DistributedDataParallel.__init__).parameters
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in known
                else "broadcast_buffers")
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            static_graph=True, **{sync: False})

    def _reduce(self, values: list[float], op) -> list[float]:
        if not self.distributed:
            return values
        dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """Whether any rank passed True (every rank gets the same answer)."""
        return bool(self._reduce([float(flag)], dist.ReduceOp.MAX)[0])

    def max(self, value: int) -> int:
        """The largest ``value`` over the ranks (e.g. a pending signal's number)."""
        return int(self._reduce([float(value)], dist.ReduceOp.MAX)[0])

    def mean(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The ranks' mean of each metric (for the log: the global batch's loss)."""
        if not self.distributed:
            return dict(metrics)
        keys = list(metrics)  # the same order on every rank: the same code made the dict
        values = self._reduce([float(metrics[k]) for k in keys], dist.ReduceOp.SUM)
        return {k: v / self.world_size for k, v in zip(keys, values, strict=True)}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; e.g. the resumed run's arguments and
        checkpoint, so the other ranks need no shared filesystem)."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run by rank 0 alone (e.g. claiming the run folder), its
        result on every rank. If rank 0's call exits (``SystemExit``: a refusal, whose message
        rank 0 prints), every rank exits (the others with status 1, silently)."""
        if not self.distributed:
            return fn(*args, **kwargs)
        out: tuple[bool, Any] = (False, None)
        if self.main:
            try:
                out = (True, fn(*args, **kwargs))
            except SystemExit as e:
                out = (False, e.code)
        ok, value = self.broadcast(out)
        if not ok:
            raise SystemExit(value if self.main else 1)
        return value

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (small objects: sampler states)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def check_same_args(self, flags: Mapping[str, Any]) -> None:
        """Refuse ranks launched with different arguments (every rank calls it, with its own
        flat ``{flag field: value}``, before anything uses them). Rank 0's arguments are the
        run's (it opens the run folder and sends them to the others), so a rank given other
        flags (on another machine, say) would silently train with rank 0's. A digest per rank
        is gathered; only if they differ are the values gathered, and every rank exits
        (``SystemExit``) with the differing flags of each rank beside rank 0's."""
        if not self.distributed:
            return
        digests = self.gather(args_digest(flags))
        if len(set(digests)) == 1:
            return
        everyone = self.gather({k: repr(v) for k, v in flags.items()})
        lines = []
        for r, other in enumerate(everyone[1:], 1):
            diff = differing_flags(everyone[0], other)
            if diff:
                shown = ", ".join(f"--{k.replace('_', '-')} {other.get(k, '(none)')} (rank 0: "
                                  f"{everyone[0].get(k, '(none)')})" for k in diff[:8])
                lines.append(f"rank {r} differs from rank 0 in {len(diff)} flag(s): {shown}"
                             + (" ..." if len(diff) > 8 else ""))
        raise SystemExit(
            "the ranks were launched with different arguments: " + "; ".join(lines) + ". "
            "Every rank must get the same flags (rank 0's would be used silently): launch "
            "each machine's torchrun with the same command line")

    def check_same(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Refuse ranks whose tensors differ (a fingerprint per tensor: its float64 sum and
        sum of squares, gathered and compared exactly). Run at every checkpoint: DDP only keeps
        the ranks equal if every rank applies the same update, and a state written by rank 0
        must be every rank's."""
        if not self.distributed:
            return
        named = [(k, v) for k, v in tensors.items() if v.is_floating_point() and v.numel()]
        prints = torch.stack([torch.stack([v.double().sum(), v.double().square().sum()])
                              for _, v in named]).cpu()
        everyone = self.gather(prints)
        for r, other in enumerate(everyone[1:], 1):
            differ = (other != everyone[0]).any(1)
            if differ.any():
                names = [k for (k, _), d in zip(named, differ.tolist(), strict=True) if d]
                raise RuntimeError(f"rank {r}'s state differs from rank 0's in {len(names)} "
                                   f"tensor(s) {names[:5]}: the ranks diverged (a bug; not "
                                   "saved)")


def launched() -> Ranks:
    """This process's :class:`Ranks` from torchrun's ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` (a plain process: rank 0 of 1), checked."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise SystemExit(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local} (need 0 <= RANK < WORLD_SIZE)")
    return Ranks(rank, world, local)


def check_world_size(state: dict | None, world_size: int, where: str) -> None:
    """Refuse to resume a checkpoint written at another world size (each rank's sampler stream
    is in it, and the global batch would change): the message names both."""
    if state is None:
        return
    saved = int(state.get("world_size", 1))
    if saved != world_size:
        raise SystemExit(
            f"--resume {where}: the run was trained with {saved} process(es) (world size "
            f"{saved}) and this launch has {world_size}; resume it with the same number "
            f"(torchrun --nnodes ... --nproc-per-node ... giving {saved} in all"
            + (", or a plain python agents/train_value.py" if saved == 1 else "")
            + "), or start a new run with --name")
