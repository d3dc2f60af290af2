"""Under torchrun, the process group is started before the run's arguments are known (rank 0
reads a resumed run's and sends them), so it must not depend on the training device: a run
saved with ``--device cpu`` and resumed with ``--resume`` alone trains on the CPU, on any
machine. Here a 1-GPU machine is simulated on the CPU (``torch.cuda`` patched) for rank 1 of
2: the command line's ``auto`` would have asked for a GPU that rank does not have."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from agents.infra.distributed import Ranks


class Started(Exception):
    """Raised by the patched ``init_process_group``: the group would start here."""


@pytest.fixture
def one_gpu_machine(monkeypatch):
    """torch.cuda says one GPU; the process group and ``set_device`` are recorded."""
    calls = {"init": [], "set_device": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, *a, **k: calls["init"].append(backend))
    return calls


def test_the_process_group_needs_no_device(one_gpu_machine):
    ranks = Ranks(rank=1, world_size=2, local_rank=1)
    assert ranks.start() is True  # before the run's flags are read: no device chosen yet
    assert one_gpu_machine["init"] == ["cpu:gloo,cuda:nccl"]  # one group serves both devices
    assert one_gpu_machine["set_device"] == []
    # the saved run's --device cpu: the CPU, no GPU touched
    assert ranks.device("cpu") == torch.device("cpu")
    assert one_gpu_machine["set_device"] == []
    # what the command line's default (auto) asks of this rank: a GPU it does not have
    with pytest.raises(SystemExit, match="LOCAL_RANK 1 has no GPU"):
        ranks.device("auto")
    # rank 0 has one: it becomes the current CUDA device (NCCL's collectives run there)
    assert Ranks(0, 2, 0).device("auto") == torch.device("cuda", 0)
    assert one_gpu_machine["set_device"] == [torch.device("cuda", 0)]
    assert Ranks(0, 2, 0).start(torch.device("cuda", 0)) is True  # older callers' argument
    assert one_gpu_machine["set_device"] == [torch.device("cuda", 0)]  # ... changes nothing


def test_train_starts_the_group_before_choosing_a_device(tmp_path, monkeypatch,
                                                           one_gpu_machine):
    from agents.train_value import parse_args, train

    run = tmp_path / "saved"
    run.mkdir()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")

    def init(backend, *a, **k):
        one_gpu_machine["init"].append(backend)
        raise Started  # stop here: the rest needs rank 0

    monkeypatch.setattr(dist, "init_process_group", init)
    with pytest.raises(Started):  # before: SystemExit "LOCAL_RANK 1 has no GPU" (auto's pick)
        train(parse_args(["--resume", str(run), "--no-probe", "--no-tensorboard"]))
    assert one_gpu_machine["init"] == ["cpu:gloo,cuda:nccl"]
    assert one_gpu_machine["set_device"] == []
