"""agents/infra/checkpoint.py: one format, written atomically, verified on every load by every
reader
(--resume, load_encoder / load_agent, evaluate.py, the SB3 extractor), never non-finite."""

import os
from dataclasses import replace

import pytest
import torch

from agents.infra.checkpoint import (
    CheckpointError,
    read_checkpoint,
    remove_temporaries,
    save_checkpoint,
    write_checkpoint,
)
from agents.method.ab import load_agent, load_encoder


def test_round_trip_and_no_temporary_left(tmp_path):
    state = {"step": 3, "x": torch.arange(5.0), "args": {"lr": 1e-3, "scale": (0.1, 1.0)}}
    write_checkpoint(state, tmp_path / "checkpoint.pt")
    back = read_checkpoint(tmp_path)  # the run folder works too
    assert back["step"] == 3 and torch.equal(back["x"], state["x"])
    assert back["args"] == state["args"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    write_checkpoint({"step": 1}, path)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint({"step": 2}, path)
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_remove_temporaries(tmp_path):
    (tmp_path / "checkpoint.pt.tmp123").write_bytes(b"half")
    (tmp_path / "log.jsonl").write_text("")
    assert [p.name for p in remove_temporaries(tmp_path)] == ["checkpoint.pt.tmp123"]
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def _damage(path, how):
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(os.urandom(4096))
    elif how == "json":
        path.write_text('{"base": "simclr", "lr": 0.001}\n')
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit flip":
        i = len(data) - 1000
        path.write_bytes(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:])
    elif how == "plain torch.save":
        torch.save({"agent": {}}, path)


DAMAGE = {"empty": "it is empty", "random": "does not start with the checkpoint marker",
          "json": "it is JSON text", "truncated": "truncated", "bit flip": "corrupted",
          "plain torch.save": "plain torch.save file"}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    from agents.infra.config import with_flags
    from agents.infra.train_utils import build_agent, make_optimizer
    from agents.train_value import Args
    from imgmdp_env.datasets import make_dataset

    args = with_flags(Args(), dataset_size=4, base_batch=4, proj_dim=16, proj_hidden=32,
                      decoder_width=16, decoder_depth=1, view_size=32)
    ds = make_dataset("scenes", n=4, size=48, seed=0)
    torch.manual_seed(0)
    agent, sampler = build_agent(args, {"base": ds, "boot": ds})
    optimizer, scaler = make_optimizer(args, agent, None)
    path = tmp_path_factory.mktemp("good") / "checkpoint.pt"
    save_checkpoint(path, args, agent, optimizer, scaler, sampler, 0)
    return path.read_bytes(), agent, optimizer, sampler, args


@pytest.mark.parametrize("how", list(DAMAGE))
def test_every_reader_names_the_file_and_what_it_is_not(tmp_path, good, how):
    from gymnasium import spaces

    from agents.evaluate import Args as EvalArgs
    from agents.evaluate import _main as evaluate_main
    from agents.evaluation.sb3_extractor import PretrainedViewExtractor
    from agents.train_value import train

    run = tmp_path / "run"
    run.mkdir()
    path = run / "checkpoint.pt"
    path.write_bytes(good[0])
    _damage(path, how)
    want = DAMAGE[how]
    for read in (read_checkpoint, load_encoder, load_agent):
        with pytest.raises(CheckpointError, match=want) as e:
            read(path)
        assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match=f"PretrainedViewExtractor.*{want}"):
        PretrainedViewExtractor(spaces.Box(0, 255, (3, 32, 32), "uint8"), checkpoint=path)
    with pytest.raises(SystemExit, match=f"--checkpoint: {path}.*{want}"):
        evaluate_main(EvalArgs(checkpoint=run))
    with pytest.raises(SystemExit, match=f"--resume: {path}.*{want}"):
        train(replace(good[4], resume=str(run)))


def test_a_non_finite_state_is_never_written(tmp_path, good):
    _, agent, optimizer, sampler, args = good
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, args, agent, optimizer, None, sampler, 1)
    p = next(agent.online.parameters())
    keep = p.detach().clone()
    with torch.no_grad():
        p.view(-1)[0] = float("nan")
    try:
        with pytest.raises(FloatingPointError, match="non-finite values in.*step 2: not saved"):
            save_checkpoint(path, args, agent, optimizer, None, sampler, 2)
    finally:
        with torch.no_grad():
            p.copy_(keep)
    assert read_checkpoint(path)["step"] == 1
    assert [q.name for q in tmp_path.iterdir()] == ["checkpoint.pt"]


def _forge(state: dict, how: str) -> None:
    """A checkpoint whose checksum is valid but whose content no run writes (issue 23)."""
    if how == "negative step":
        state["step"] = -5
    elif how == "step past total_steps":
        state["step"] = state["args"]["total_steps"] + 1
    elif how == "float step":
        state["step"] = 3.0
    elif how == "bool step":
        state["step"] = True
    elif how == "torch_rng not a state":
        state["torch_rng"] = torch.zeros(3)
    elif how == "world_size 0":
        state["world_size"], state["ranks"] = 0, []
    elif how == "ranks short":
        state["world_size"], state["ranks"] = 2, [{"sampler": state["sampler"],
                                                   "torch_rng": state["torch_rng"]}]
    elif how == "args not a dict":
        state["args"] = "lr=1e-3"
    elif how == "NaN weight":
        key = next(k for k, v in state["agent"].items()
                   if v.is_floating_point() and v.numel() > 3)
        state["agent"][key].view(-1)[3] = float("nan")
    elif how == "inf optimizer moment":
        state["optimizer"]["state"][0] = {"step": torch.tensor(1.0),
                                          "exp_avg": torch.tensor([0.0, float("inf")])}


FORGED = {"negative step": r"'step' is -5; it must be an integer >= 0",
          "step past total_steps":
              r"'step' is \d+; it must be <= the run's total_steps \+ value_steps \(\d+\)",
          "float step": r"'step' is 3\.0; it must be an integer",
          "bool step": r"'step' is True; it must be an integer",
          "torch_rng not a state": r"'torch_rng' is a torch.float32 tensor of shape \(3,\)",
          "world_size 0": r"'world_size' is 0; it must be an integer >= 1",
          "ranks short": r"'ranks' is a list of 1; it must be a list of one state per rank \(2\)",
          "args not a dict": r"'args' is 'lr=1e-3'",
          "NaN weight": r"non-finite weights \(NaN or inf\), first in 'agent\.online\.",
          "inf optimizer moment": r"non-finite weights \(NaN or inf\), first in 'optimizer\.0\."}


@pytest.mark.parametrize("how", list(FORGED))
def test_every_reader_refuses_a_checksum_valid_but_insane_checkpoint(tmp_path, good, how):
    """Issue 23: a checkpoint whose step is -5 resumed at step -5; one with NaN weights was
    evaluated. The checksum only proves the file is the one written: the fields are checked."""
    from agents.evaluate import Args as EvalArgs
    from agents.evaluate import _main as evaluate_main
    from agents.train_value import train

    run = tmp_path / "run"
    run.mkdir()
    path = run / "checkpoint.pt"
    path.write_bytes(good[0])
    state = read_checkpoint(path)
    _forge(state, how)
    write_checkpoint(state, path)  # a valid checksum
    want = FORGED[how]
    for read in (read_checkpoint, load_encoder, load_agent):
        with pytest.raises(CheckpointError, match=want) as e:
            read(path)
        assert str(path) in str(e.value)
    with pytest.raises(SystemExit, match=f"--checkpoint: {path}.*{want}"):
        evaluate_main(EvalArgs(checkpoint=run, threads=1))
    with pytest.raises(SystemExit, match=f"--resume: {path}.*{want}"):
        train(replace(good[4], resume=str(run)))
    if how in ("NaN weight", "inf optimizer moment"):  # readable on purpose, to inspect it
        assert not read_checkpoint(path, finite=False)["step"]


def test_a_negative_step_is_never_written(tmp_path, good):
    _, agent, optimizer, sampler, args = good
    for step in (-5, 2.0, True):
        with pytest.raises(ValueError, match=rf"step \({step!r}\) must be an integer >= 0"):
            save_checkpoint(tmp_path / "checkpoint.pt", args, agent, optimizer, None, sampler,
                            step)
    assert not list(tmp_path.iterdir())
