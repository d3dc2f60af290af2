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

from agents.infra.checkpoint import read_checkpoint
from agents.infra.config import resolved, with_flags
from agents.method.ab import ABAgent
from agents.method.networks import make_encoder
from agents.train_value import Args, parse_args, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset-size", "24", "--scene-size", "48", "--view-size", "32", "--base-batch", "8",
        "--proj-dim", "16", "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth",
        "1", "--warmup-steps", "2", "--probe-train", "12", "--probe-test", "8",
        "--probe-max-samples", "24", "--random-twins", "2", "--value-batches", "2",
        "--boot-images", "2", "--n-views", "4", "--threads", "1"]


def tiny(tmp_path, name, **kw) -> Args:
    args = parse_args(TINY + ["--runs-dir", str(tmp_path), "--name", name])
    return with_flags(args, **{"total_steps": 6, "log_every": 1, "checkpoint_every": 2,
                            "tensorboard": False, "probe": False, **kw})


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.mark.parametrize("base,candidates,extra", [
    ("simclr", "views", {}), ("dino", "random", {}),
    ("simclr", "views", {"value_residual": "gated", "decoder_geometry": True,
                         "boot_annotated": True, "exclude_return": True, "value_lr_scale": 3.0}),
    ("simclr", "views", {"value_residual": "mixture", "value_lr_scale": 3.0})])
def test_resume_gives_the_same_next_losses(tmp_path, base, candidates, extra):
    kw = {"base": base, "candidates": candidates, **extra}
    train(tiny(tmp_path, "full", **kw))
    train(tiny(tmp_path, "split", stop_at=3, **kw))
    assert sorted(losses(tmp_path / "split")) == [1, 2, 3]
    train(replace(tiny(tmp_path, "split"), resume=str(tmp_path / "split")))
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 7))
    assert [split[s] for s in range(1, 7)] == [full[s] for s in range(1, 7)]
    ckpt = read_checkpoint(tmp_path / "split")
    assert ckpt["step"] == 6 and ckpt["args"]["ab"]["base"] == base
    assert (tmp_path / "split" / "value_accuracy_iou.png").exists()
    if "value_lr_scale" in extra:  # the value branch learns at its multiple of the schedule
        from agents.infra.train_utils import make_optimizer

        args = tiny(tmp_path, "x", **kw)
        opt, _ = make_optimizer(args, ABAgent(make_encoder("cnn", 32), resolved(args).ab), None)
        scales = [g["lr_scale"] for g in opt.param_groups]
        assert scales == [1.0, 1.0, 3.0, 3.0]
        value = {id(p) for g in opt.param_groups[2:] for p in g["params"]}
        decoder = ABAgent(make_encoder("cnn", 32), resolved(args).ab).online.decoder
        assert len(value) > len(list(decoder.parameters()))  # the decoder and its heads


def test_ctrl_c_saves_after_the_step_and_resume_is_exact(tmp_path, monkeypatch):
    train(tiny(tmp_path, "full"))
    calls = {"n": 0}
    real = ABAgent.loss

    def loss_with_ctrl_c(self, batch, gauges=True, to_host=True, enc=None):
        calls["n"] += 1
        if calls["n"] == 4:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of step 4
        return real(self, batch, gauges, to_host, enc)

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

    def loss_then_interrupt(self, batch, gauges=True, to_host=True, enc=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch, gauges, to_host, enc)

    monkeypatch.setattr(ABAgent, "loss", loss_then_interrupt)
    assert train(tiny(tmp_path, "run")) == {"step": 2, "interrupted": True, "signal": 0}
    assert read_checkpoint(tmp_path / "run")["step"] == 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ABAgent.loss

    def nan_at_step_5(self, batch, gauges=True, to_host=True, enc=None):
        calls["n"] += 1
        loss, metrics = real(self, batch, gauges, to_host, enc)
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
    gpu = parse_args(["gpu-vits16", "--lr", "1e-4", "--gamma", "0"])
    assert (gpu.preset, gpu.encoder, gpu.view_size, gpu.scene_size, gpu.lr) == (
        "gpu-vits16", "timm:vit_small_patch16_224", 224, 256, 1e-4)  # timm's ViT-S/16 (3d6f2a1)
    assert (gpu.ab.proj_dim, gpu.ab.n_prototypes, gpu.ab.gamma) == (256, 4096, 0.0)
    assert parse_args(["cpu-small", "--lr", "1e-4"]) == replace(Args(), lr=1e-4)
    with pytest.raises(SystemExit):
        parse_args(["tpu"])
    with pytest.raises(SystemExit, match="the preset is now the first word"):
        parse_args(["--preset", "gpu-vits16"])


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
    assert all(row in res.stdout for row in ("| trained", "| random init", "| raw pixels",
                                            "| majority class"))
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["probes"]) == {"trained", "random init", "raw pixels", "majority class"}
    assert {"linear", "knn", "attentive", "n_test"} <= set(summary["probes"]["trained"])
    assert {"linear_sd", "knn_sd", "attentive_sd"} <= set(summary["probes"]["random init"])
    # the value function's diagnostics: Q beside copy and beside itself with permuted actions,
    # in the summary per IoU bin and far / near, in the log on every logged step, and printed
    value = summary["value_accuracy_by_iou"]
    for b in ("0.00-0.05", "0.60-1.00"):
        assert {f"iou_{b}", f"copy_{b}", f"permuted_{b}", f"count_{b}"} <= set(value)
    assert {"far", "far_copy", "far_permuted", "near", "near_copy", "kl", "kl_permuted",
            "far_se", "near_se"} <= set(value)
    rows = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert all({"value_acc", "copy_acc", "value_acc_permuted"} <= set(r) for r in rows)
    assert "Q_AB, actions permuted within the bin" in res.stdout and "verdict:" in res.stdout
    # the run ends with its verdict against copy, random init and raw pixels, then what to run
    tail = res.stdout.strip().splitlines()
    assert tail[-1].startswith("next:") and summary["verdict"].splitlines()[-1] == tail[-1]
    assert "random init" in summary["verdict"] or "raw pixels" in summary["verdict"]


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
    summary = train(with_flags(tiny(tmp_path, "clip"), base="clip", text_backbone="minilm"))
    assert summary["step"] == 6
    log = [json.loads(x) for x in (tmp_path / "clip" / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


# ---------------------------------------------------------------------------------------------
# Issue 8: nothing lost, nothing overwritten
# ---------------------------------------------------------------------------------------------
def records(run_dir: Path) -> list[dict]:
    """The log without its timing column (the one thing a resumed run may not reproduce)."""
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "views_per_s"} for r in rows]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    train(tiny(root, "full"))
    return records(root / "full")


def test_a_fresh_run_never_overwrites_a_run(tmp_path, capsys):
    train(tiny(tmp_path, "run", total_steps=2))
    log = (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(SystemExit, match=r"already holds a run.*--resume .*run.*--name"):
        train(tiny(tmp_path, "run", total_steps=2))
    assert (tmp_path / "run" / "log.jsonl").read_text() == log
    # the default name (`make train` twice) gets the next free suffix instead
    for _ in range(2):
        train(tiny(tmp_path, "", total_steps=1, stop_at=1))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["run", "simclr_cnn_ab1_g0.5_s1", "simclr_cnn_ab1_g0.5_s1-2"]
    assert "this run is simclr_cnn_ab1_g0.5_s1-2" in capsys.readouterr().out


def test_a_second_process_on_a_run_folder_refuses(tmp_path):
    from agents.infra.runs import RunLock

    train(tiny(tmp_path, "run", stop_at=2))
    with RunLock(tmp_path / "run"):  # what another live process holds
        with pytest.raises(SystemExit, match=f"in use by another training process.*{os.getpid()}"):
            train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))
    assert not (tmp_path / "run" / "lock").exists()
    train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))  # released: it runs


def test_resume_applies_the_flags_that_may_change_and_refuses_the_others(tmp_path, capsys):
    train(tiny(tmp_path, "run", stop_at=3))
    resume = replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run"))
    with pytest.raises(SystemExit, match=r"--base 'dino' \(the run has 'simclr'\).*--lr"):
        train(with_flags(resume, base="dino", lr=1e-4))
    with pytest.raises(SystemExit, match=r"--view-size 48 \(the run has 32\)"):
        train(replace(resume, view_size=48))
    # the CLI passes the flags it saw (a programmatic call: those that differ from the preset)
    train(replace(resume, lr=1e-4, total_steps=8, threads=2),
          given={"resume", "lr", "total_steps", "threads"})
    out = capsys.readouterr().out
    assert "--lr 0.001 -> 0.0001" in out and "--total-steps 6 -> 8" in out
    assert "--threads 2 (the run had 1)" in out and "not guaranteed to be bit-exact" in out
    rows = records(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert max(r["lr"] for r in rows[3:]) <= 1e-4 < rows[2]["lr"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 1e-4


def test_a_torn_log_line_and_a_leftover_temporary_never_block_a_resume(tmp_path, full):
    train(tiny(tmp_path, "run", stop_at=3))
    run = tmp_path / "run"
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 3.9')  # cut by a crash or a full disk
    (run / "checkpoint.pt.tmp99999").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="dropped 1 unreadable line"):
        train(replace(tiny(tmp_path, "run"), resume=str(run)))
    assert records(run) == full
    assert not list(run.glob("*.tmp*"))


def test_a_non_finite_update_never_replaces_the_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ABAgent.update_target

    def poison_at_step_5(self, rate):
        calls["n"] += 1
        real(self, rate)
        if calls["n"] == 5:  # a finite loss, but the update blew the weights up
            with torch.no_grad():
                next(self.online.parameters()).view(-1)[0] = float("inf")

    monkeypatch.setattr(ABAgent, "update_target", poison_at_step_5)
    with pytest.raises(SystemExit, match=r"non-finite weights .* after step 5.*\(step 4\).*"
                                         r"--resume .*run --lr 0\.0001"):
        train(tiny(tmp_path, "run", checkpoint_every=1))
    ckpt = read_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["agent"].values() if v.is_floating_point())


def test_sigterm_saves_like_ctrl_c(tmp_path, monkeypatch, full):
    calls = {"n": 0}
    real = ABAgent.loss

    def loss_with_sigterm(self, batch, gauges=True, to_host=True, enc=None):
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(self, batch, gauges, to_host, enc)

    monkeypatch.setattr(ABAgent, "loss", loss_with_sigterm)
    out = train(tiny(tmp_path, "run"))
    assert out == {"step": 3, "interrupted": True, "signal": 128 + signal.SIGTERM}
    assert read_checkpoint(tmp_path / "run")["step"] == 3
    monkeypatch.setattr(ABAgent, "loss", real)
    train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))
    assert records(tmp_path / "run") == full


def test_a_second_ctrl_c_names_the_step_actually_saved(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = ABAgent.loss

    def loss_with_two_ctrl_c(self, batch, gauges=True, to_host=True, enc=None):
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return real(self, batch, gauges, to_host, enc)

    monkeypatch.setattr(ABAgent, "loss", loss_with_two_ctrl_c)
    assert train(tiny(tmp_path, "run"))["step"] == 2
    assert "stopped at once (SIGINT then SIGINT): the last checkpoint is kept: " in \
        capsys.readouterr().out
    assert read_checkpoint(tmp_path / "run")["step"] == 2


def test_an_interrupt_between_the_update_and_the_step_count_saves_no_half_step(
        tmp_path, monkeypatch, full):
    calls = {"n": 0}
    real = ABAgent.update_target

    def interrupt_after_step_3s_update(self, rate):
        calls["n"] += 1
        real(self, rate)
        if calls["n"] == 3:  # optimizer.step() is done, step += 1 is not
            raise KeyboardInterrupt

    monkeypatch.setattr(ABAgent, "update_target", interrupt_after_step_3s_update)
    assert train(tiny(tmp_path, "run"))["step"] == 2
    assert read_checkpoint(tmp_path / "run")["step"] == 2
    monkeypatch.setattr(ABAgent, "update_target", real)
    train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))
    assert records(tmp_path / "run") == full


def test_an_interrupt_in_the_final_report_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    import agents.infra.train_utils as tu

    real = tu.final_report
    monkeypatch.setattr(tu, "final_report", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    assert train(tiny(tmp_path, "run"))["interrupted"]
    assert "training is complete and" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "run")["step"] == 6
    monkeypatch.setattr(tu, "final_report", real)
    summary = train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))
    assert summary["step"] == 6 and (tmp_path / "run" / "summary.json").exists()


def test_resume_of_a_run_killed_before_its_first_checkpoint_restarts_it(tmp_path, full):
    train(tiny(tmp_path, "run", stop_at=1, checkpoint_every=5))
    (tmp_path / "run" / "checkpoint.pt").unlink()  # as if killed before the first checkpoint
    train(replace(tiny(tmp_path, "run"), resume=str(tmp_path / "run")))
    assert records(tmp_path / "run") == full


# ---------------------------------------------------------------------------------------------
# Issue 8: arguments are refused at the door, naming the flag
# ---------------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
BAD_TRAIN = [
    ("ema_rate", NAN), ("ema_rate", -0.1), ("ema_rate", 1.5), ("proj_dim", 0),
    ("proj_dim", -3), ("total_steps", 0), ("base_batch", 1), ("color_jitter", -1.0),
    ("color_jitter", INF), ("log_every", 0), ("checkpoint_every", 0), ("min_lr", 1.0),
    ("lr", NAN), ("decoder_heads", 3), ("view_size", 0), ("view_size", 32.5),
    ("view_size", 36), ("seed", 2**64), ("seed", -1), ("probe_dataset", "/no/such/folder"),
    ("dataset", "imagenet"), ("n_bins", 1), ("boot_scale", (0.5, 0.1)), ("threads", 0),
    ("name", "a/b"), ("temperature", 0.0), ("n_views", 1), ("grad_clip", -1.0),
    ("text_width", 0), ("center_momentum", 1.5),
]


@pytest.mark.parametrize("field,bad", BAD_TRAIN, ids=[f"{f}={v!r}" for f, v in BAD_TRAIN])
def test_train_refuses_bad_arguments_before_any_work(tmp_path, field, bad):
    args = with_flags(tiny(tmp_path, "run"), **{field: bad})
    if field == "view_size" and bad == 36:
        args = replace(args, encoder="vit")
    flag = "--" + field.replace("_", "-")
    with pytest.raises(SystemExit, match=f"invalid argument: {flag}") as e:
        train(args)
    assert repr(bad) in str(e.value) or str(bad) in str(e.value)
    assert not list(tmp_path.iterdir())  # no run folder was even created


def test_evaluate_refuses_bad_arguments():
    from agents.evaluate import Args as EvalArgs
    from agents.evaluate import _main

    for field, bad in [("n_train", 0), ("threads", -1), ("view_size", 0),
                       ("checkpoint", Path("/no/such/run")), ("dataset", "imagenet")]:
        with pytest.raises(SystemExit, match="--" + field.replace("_", "-")):
            _main(EvalArgs(**{field: bad}))


def test_flags_given_reads_the_command_line():
    from agents.infra.flat_args import flags_given

    argv = ["--lr", "1e-4", "--no-probe", "--total-steps=9", "--boot-scale", "0.1", "1.0"]
    assert flags_given(argv, Args) == {"lr", "probe", "total_steps", "boot_scale"}


def test_train_leaves_the_callers_thread_count(tmp_path):
    """train() sets --threads for the run and restores the caller's count after: a larger
    OpenMP pool left behind made a later fork (AsyncVectorEnv's workers) hang."""
    torch.set_num_threads(1)
    train(replace(tiny(tmp_path, "threads"), threads=2, total_steps=2))
    assert torch.get_num_threads() == 1


def test_compile_wraps_the_loss_module_the_loop_calls(tmp_path, monkeypatch):
    """--compile hands the module the loop calls (the agent's loss, DDP-wrapped with several
    ranks) to torch.compile once, and the loop trains through what it returns. (Compiling for
    real takes minutes on the CPU: the compiler is replaced by a recorder here.)"""
    from agents.infra.distributed import LossModule

    calls = []

    def recorder(module):
        calls.append(module)

        def compiled(*a, **kw):
            calls.append("called")
            return module(*a, **kw)
        return compiled

    monkeypatch.setattr(torch, "compile", recorder)
    summary = train(tiny(tmp_path, "compiled", total_steps=2, compile=True))
    assert isinstance(calls[0], LossModule) and calls[1:] == ["called", "called"]
    assert summary["step"] == 2
    calls.clear()
    train(tiny(tmp_path, "plain", total_steps=2))
    assert calls == []


def test_check_every_keeps_the_run_and_names_the_steps_of_a_late_caught_nan(tmp_path,
                                                                             monkeypatch):
    """--check-every 3 (a GPU's way to skip the host's wait between checks): on the CPU the
    run is the same, bit for bit; a non-finite loss at an unchecked step is caught at the next
    check, named by its range of steps, and the last good checkpoint is kept."""
    every = train(tiny(tmp_path, "every", total_steps=6, checkpoint_every=6, log_every=6))
    third = train(tiny(tmp_path, "third", total_steps=6, checkpoint_every=6, log_every=6,
                       check_every=3))
    timing = ("views_per_s",)
    assert ({k: v for k, v in third["final"].items() if k not in timing}
            == {k: v for k, v in every["final"].items() if k not in timing})
    a, b = (read_checkpoint(tmp_path / n)["agent"] for n in ("every", "third"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    calls = {"n": 0}
    real = ABAgent.loss

    def nan_at_step_4(self, batch, gauges=True, to_host=True, enc=None):
        calls["n"] += 1
        loss, metrics = real(self, batch, gauges, to_host, enc)
        if calls["n"] == 4:
            assert not to_host  # an unchecked step: nothing waited for
            loss = loss * float("nan")
            metrics = {**metrics, "loss": metrics["loss"] * float("nan")}
        return loss, metrics

    monkeypatch.setattr(ABAgent, "loss", nan_at_step_4)
    with pytest.raises(SystemExit, match=r"non-finite loss \(nan\) at a step in 4-6.*step 3"):
        train(tiny(tmp_path, "nan", total_steps=9, checkpoint_every=3, log_every=9,
                   check_every=3))
    assert read_checkpoint(tmp_path / "nan")["step"] == 3
