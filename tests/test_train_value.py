"""agents/train_value.py: exact resumption, failure handling, presets, and a subprocess smoke
run that writes the log, the checkpoint and the plots."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from agents.ab import ABAgent
from agents.checkpoint import read_checkpoint
from agents.train_value import Args, parse_args, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset-size", "24", "--image-size", "48", "--view-size", "32", "--base-batch", "8",
        "--proj-dim", "16", "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth",
        "1", "--warmup-steps", "2", "--probe-train", "12", "--probe-test", "8",
        "--probe-max-samples", "24", "--random-twins", "2", "--value-batches", "2",
        "--threads", "1"]


def tiny(tmp_path, name, **kw) -> Args:
    args = parse_args(TINY + ["--runs-dir", str(tmp_path), "--name", name])
    return replace(args, total_steps=6, log_every=1, checkpoint_every=2, tensorboard=False,
                   probe=False, **kw)


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.mark.parametrize("base,candidates", [("simclr", "views"), ("dino", "random")])
def test_resume_gives_the_same_next_losses(tmp_path, base, candidates):
    kw = {"base": base, "candidates": candidates}
    train(tiny(tmp_path, "full", **kw))
    train(tiny(tmp_path, "split", stop_at=3, **kw))
    assert sorted(losses(tmp_path / "split")) == [1, 2, 3]
    train(replace(tiny(tmp_path, "split"), resume=str(tmp_path / "split")))
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 7))
    assert [split[s] for s in range(1, 7)] == [full[s] for s in range(1, 7)]
    ckpt = read_checkpoint(tmp_path / "split")
    assert ckpt["step"] == 6 and ckpt["args"]["base"] == base
    assert (tmp_path / "split" / "value_accuracy_iou.png").exists()


def test_ctrl_c_saves_after_the_step_and_resume_is_exact(tmp_path, monkeypatch):
    train(tiny(tmp_path, "full"))
    calls = {"n": 0}
    real = ABAgent.loss

    def loss_with_ctrl_c(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of step 4
        return real(self, batch)

    monkeypatch.setattr(ABAgent, "loss", loss_with_ctrl_c)
    out = train(tiny(tmp_path, "run"))
    assert out == {"step": 4, "interrupted": True, "signal": 128 + signal.SIGINT}
    ckpt = read_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 4
    monkeypatch.setattr(ABAgent, "loss", real)
    train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))
    assert losses(tmp_path / "run") == losses(tmp_path / "full")


def test_keyboard_interrupt_mid_step_still_saves(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ABAgent.loss

    def loss_then_interrupt(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(ABAgent, "loss", loss_then_interrupt)
    assert train(tiny(tmp_path, "run")) == {"step": 2, "interrupted": True, "signal": 0}
    assert read_checkpoint(tmp_path / "run")["step"] == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ABAgent.loss

    def nan_at_step_5(self, batch):
        calls["n"] += 1
        loss, metrics = real(self, batch)
        if calls["n"] == 5:
            loss, metrics = loss * float("nan"), {**metrics, "loss": float("nan")}
        return loss, metrics

    monkeypatch.setattr(ABAgent, "loss", nan_at_step_5)
    with pytest.raises(SystemExit, match=r"non-finite loss \(nan\) at step 5.*step 4"):
        train(tiny(tmp_path, "run"))
    ckpt = read_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["agent"].values() if v.is_floating_point())


def test_presets_and_overrides():
    assert parse_args([]) == Args()
    gpu = parse_args(["--preset", "gpu-vits16", "--lr", "1e-4"])
    assert (gpu.encoder, gpu.view_size, gpu.lr) == ("vits16", 224, 1e-4)
    with pytest.raises(SystemExit):
        parse_args(["--preset", "tpu"])


def test_script_smoke_run_writes_log_checkpoint_and_plots(tmp_path):
    cmd = [sys.executable, "agents/train_value.py", *TINY, "--total-steps", "4",
           "--log-every", "2", "--runs-dir", str(tmp_path), "--name", "smoke"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "smoke"
    for f in ("config.json", "log.jsonl", "checkpoint.pt", "summary.json", "losses.png",
              "value_accuracy_iou.png", "probes.png"):
        assert (run / f).stat().st_size > 0, f
    assert list((run / "tb").glob("events.*"))
    assert sorted(losses(run)) == [2, 4]
    assert all(row in res.stdout for row in ("| trained", "| random init", "| raw pixels"))
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["probes"]) == {"trained", "random init", "raw pixels"}
    assert {"linear", "knn", "attentive", "n_test"} <= set(summary["probes"]["trained"])
    assert {"linear_sd", "knn_sd", "attentive_sd"} <= set(summary["probes"]["random init"])


def test_probes_do_not_move_with_the_training_seed(tmp_path):
    """The fixed probe sets and the random-init twins do not depend on --seed: two runs of
    different seeds report identical baseline rows (and differ in the trained row's weights)."""
    rows = []
    for seed in (1, 2):
        args = replace(tiny(tmp_path, f"s{seed}", seed=seed), probe=True, total_steps=2)
        rows.append(train(args)["probes"])
    assert rows[0]["random init"] == rows[1]["random init"]
    assert rows[0]["raw pixels"] == rows[1]["raw pixels"]


def test_clip_run_on_the_frozen_sentence_backbone(tmp_path):
    summary = train(replace(tiny(tmp_path, "clip"), base="clip", text_backbone="minilm"))
    assert summary["step"] == 6
    log = [json.loads(x) for x in (tmp_path / "clip" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
