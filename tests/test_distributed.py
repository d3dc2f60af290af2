"""agents/infra/distributed.py and train_value.py under torchrun: 2 ranks on the CPU (gloo, 1 thread
each) in one launch of tests/_ddp_worker.py, plus the one-process pieces.

What the launch checks (the worker's docstring has the details):

- DINO + AB, a 2-rank run with per-rank batch B equals a 1-rank run with batch 2B on the same
  samples: its loss is a mean over images and over view pairs, and the centre's update is
  all-reduced, so the averaged gradient is the 2B batch's gradient;
- SimCLR + AB and CLIP + AB cannot equal the 2B run: NT-Xent's and InfoNCE's negatives (and
  the bootstrapping loss's annotations) are the rank's own batch (agents/infra/distributed.py; no
  all-gather), so the 2-rank run equals the mean of the two halves' losses computed in one
  process, which it is checked against; likewise a base-only run (``--ab-weight 0``), whose
  unused AB branch DDP must tolerate;
- the ranks' states are identical (digests of the whole agent: online, EMA target, centre),
  and ``Ranks.check_same`` refuses ranks that differ;
- the real training job: a run stopped and resumed at the same world size ends where the
  uninterrupted run does; a SIGTERM that reaches one rank (twice) stops every rank after the
  same step with one checkpoint; only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents import train_value
from agents.infra.checkpoint import read_checkpoint
from agents.infra.distributed import (
    Ranks,
    check_world_size,
    launched,
    mean_over_ranks,
    rank_info,
    rank_seed,
)
from agents.infra.runs import Stopped, StopSignals
from agents.train_value import parse_args, train

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One ``torchrun --nproc-per-node 2`` launch of the worker; its per-rank results."""
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "HF_HUB_OFFLINE": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           str(ROOT / "tests" / "_ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, ranks, proc.stdout


def test_dino_two_ranks_equal_one_rank_with_twice_the_batch(launch):
    _, ranks, _ = launch
    got = ranks[0]["same_samples"]["dino"]
    # the first step's gradients: a sum over ranks instead of the mean (or a rank's own
    # centre) would be off by the gradients' own size
    assert got["grad_diff"] <= 1e-4 * got["grad_scale"], got
    assert got["weight_diff"] < 1e-4, got  # 3 AdamW steps at lr 1e-3, centre included
    assert got["center_norm"] > 0  # the centre moved (and is compared above)


@pytest.mark.parametrize("case", ["simclr", "clip", "simclr_base_only"])
def test_in_batch_losses_equal_the_mean_of_per_rank_losses(launch, case):
    _, ranks, _ = launch
    got = ranks[0]["same_samples"][case]
    assert got["grad_diff"] <= 1e-4 * got["grad_scale"], got
    assert got["weight_diff"] < 1e-4, got


def test_ranks_hold_identical_states(launch):
    _, ranks, _ = launch
    for case, got in ranks[0]["same_samples"].items():
        assert got["digest"] == ranks[1]["same_samples"][case]["digest"], case
    for name in ("whole", "stopped", "resumed", "signalled", "phase", "cached"):
        assert ranks[0]["runs"][name]["digest"] == ranks[1]["runs"][name]["digest"], name
    for name in ("phase", "cached"):  # 3 + 2 of the value phase
        assert [r["runs"][name]["step"] for r in ranks] == [5, 5], name
    assert ranks[0]["runs"]["cached"]["digest"] != ranks[0]["runs"]["phase"]["digest"]
    for r in ranks:  # a nudged weight on rank 1 is caught on every rank, by name
        assert "rank 1's state differs" in r["diverged"], r["diverged"]
        assert "online.encoder" in r["diverged"]


def test_resume_at_the_same_world_size_is_exact(launch):
    out, ranks, _ = launch
    for r in ranks:
        assert r["runs"]["stopped"]["step"] == 2 and r["runs"]["resumed"]["step"] == 4
        assert r["runs"]["resumed"]["digest"] == r["runs"]["whole"]["digest"]
    log = lambda name: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k != "views_per_s"}
        for line in (out / "runs" / name / "log.jsonl").read_text().splitlines()]
    assert log("split") == log("whole")  # one line per step (rank 0 alone writes), same values
    assert [rec["step"] for rec in log("whole")] == [1, 2, 3, 4]
    assert {(rec["world_size"], rec["global_base_batch"]) for rec in log("whole")} == {(2, 8)}


def test_checkpoint_holds_every_ranks_streams(launch):
    out, ranks, _ = launch
    state = read_checkpoint(out / "runs" / "whole")
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    a, b = (s["sampler"]["base_gen"] for s in state["ranks"])
    assert not torch.equal(a, b)  # each rank draws its own batches
    assert torch.equal(state["sampler"]["base_gen"], a)


def test_resume_with_another_world_size_is_refused(launch):
    out, _, _ = launch
    config = (out / "runs" / "split" / "config.json").read_text()
    with pytest.raises(SystemExit, match=r"trained with 2 process.*this launch has 1"):
        train(parse_args(["--resume", str(out / "runs" / "split"), "--total-steps", "6"]))
    assert (out / "runs" / "split" / "config.json").read_text() == config  # nothing written


def test_a_signal_on_one_rank_stops_every_rank_after_the_same_step(launch):
    out, ranks, stdout = launch
    for r in ranks:  # rank 1 got SIGTERM twice in step 2: no rank stopped at once
        assert r["runs"]["signalled"]["step"] == 2, r
        assert r["runs"]["signalled"]["signal"] == 128 + signal.SIGTERM
    assert read_checkpoint(out / "runs" / "signalled")["step"] == 2
    lines = (out / "runs" / "signalled" / "log.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2]
    assert stdout.count("every rank stops after this step") == 1  # announced by rank 0 alone


def test_rank_seeds_and_rank_info(monkeypatch):
    assert rank_seed(7, 0) == 7  # one process: the seed of a plain run
    seeds = {rank_seed(7, r) for r in range(8)} | {rank_seed(8, r) for r in range(8)}
    assert len(seeds) == 16 and max(seeds) < 2**63  # no rank reproduces another run's stream
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_info() == (3, 4)  # what a streaming source reads to take its shards
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert rank_info() == (0, 1)


def test_one_process_is_unchanged(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ranks = launched()
    assert ranks == Ranks(0, 1, 0) and ranks.main and not ranks.distributed
    assert ranks.start(torch.device("cpu")) is False  # no process group
    t = torch.randn(3)
    assert mean_over_ranks(t) is t
    assert ranks.mean({"b": 1.0, "a": 2.0}) == {"b": 1.0, "a": 2.0}
    assert ranks.gather("x") == ["x"] and ranks.broadcast("y") == "y"
    assert not isinstance(ranks.wrap(torch.nn.Linear(1, 1), torch.device("cpu")),
                          torch.nn.parallel.DistributedDataParallel)
    stop = StopSignals()
    stop.sync(lambda s: 1 / 0)  # one process: never a collective
    check_world_size(None, 1, "run")
    check_world_size({"step": 3}, 1, "run")  # a one-process checkpoint has no world size


def test_bad_torchrun_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(SystemExit, match="RANK=2, WORLD_SIZE=2"):
        launched()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(SystemExit, match="RANK='one'"):
        launched()
    with pytest.raises(SystemExit, match="trained with 1 process.*this launch has 2"):
        check_world_size({"step": 1}, 2, "runs/x")


def test_shared_signals_wait_for_the_ranks_agreement():
    stop = StopSignals(shared=True, announce=False)
    stop.defer = True
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGINT, None)  # a forwarded duplicate: ignored, no KeyboardInterrupt
    assert stop.received == [] and stop.pending == signal.SIGTERM
    stop.sync(lambda mine: mine)
    assert stop.received == ["SIGTERM"] and stop.exit_code() == 128 + signal.SIGTERM
    other = StopSignals(shared=True, announce=False)  # a rank that got no signal itself
    other.sync(lambda mine: max(mine, int(signal.SIGINT)))
    assert other.received == ["SIGINT"]


def test_a_signal_that_stops_at_once_carries_its_exit_code(monkeypatch):
    stop = StopSignals(announce=False)  # not deferring: the start-up, before the loop
    with pytest.raises(Stopped) as e:
        stop._handle(signal.SIGTERM, None)
    assert isinstance(e.value, KeyboardInterrupt) and e.value.exit_code == 128 + signal.SIGTERM
    stop = StopSignals(announce=False)
    stop.defer = True  # the loop: the first is noted, the second stops at once
    stop._handle(signal.SIGINT, None)
    with pytest.raises(Stopped) as e:
        stop._handle(signal.SIGTERM, None)
    assert e.value.exit_code == 128 + signal.SIGTERM and stop.exit_code() == 128 + signal.SIGINT
    # train_value exits with the signal's code, also when it lands before the loop started

    def stopped(*a, **k):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(train_value, "train", stopped)
    assert train_value.main(["--total-steps", "1"]) == 128 + signal.SIGTERM

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_value, "train", ctrl_c)
    assert train_value.main(["--total-steps", "1"]) == 130


def test_args_digest_and_differing_flags():
    from agents.infra.distributed import args_digest, differing_flags
    from agents.infra.flat_args import flat_fields

    a = flat_fields(parse_args(["--lr", "1e-3", "--boot-scale", "0.1", "1.0"]))
    same = flat_fields(parse_args(["--boot-scale", "0.1", "1.0", "--lr", "0.001"]))
    other = flat_fields(parse_args(["--lr", "2e-3", "--gamma", "0.25"]))  # gamma: args.ab
    assert args_digest(a) == args_digest(dict(reversed(list(same.items()))))
    assert args_digest(a) != args_digest(other)
    assert differing_flags(a, same) == []
    assert differing_flags(a, other) == ["boot_scale", "gamma", "lr"]
    assert differing_flags({"x": 1}, {}) == ["x"] and differing_flags({"x": 1}, {"x": 1.0})


RANK_TRAIN = """
import sys
sys.path.insert(0, sys.argv[1])
from agents.train_value import parse_args, train
train(parse_args(sys.argv[2:]))
"""


def test_ranks_launched_with_different_flags_are_refused(tmp_path):
    """Issue 23: rank 1 launched with other flags than rank 0 trained with rank 0's, silently.
    Two processes joined by gloo (as torchrun would start them); each must refuse, naming the
    flags, before a run folder exists."""
    port = str(free_port())
    base = ["--runs-dir", str(tmp_path), "--name", "run", "--total-steps", "1", "--threads",
            "1", "--no-probe", "--no-tensorboard", "--dataset-size", "4", "--device", "cpu"]
    argv = [base + ["--lr", "1e-3"], base + ["--lr", "2e-3", "--seed", "3"]]
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_TRAIN, str(ROOT),
                                       *argv[rank]], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    want = ("the ranks were launched with different arguments: rank 1 differs from rank 0 in 2 "
            "flag(s): --lr 0.002 (rank 0: 0.001), --seed 3 (rank 0: 1)")
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 1 and want in out, out[-3000:]
    assert not list(tmp_path.iterdir())  # refused before rank 0 opened the run folder
