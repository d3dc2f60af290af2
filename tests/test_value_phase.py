"""The value phase (``train_value.py --value-steps``): after pre-training, the AB branch alone
is fitted on the frozen encoders. It must not touch the representation, must move the branch,
must keep the target ``p_ema`` fixed, and must resume exactly like the rest of a run."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from agents.infra.checkpoint import read_checkpoint
from agents.infra.config import parse_args
from agents.infra.train_utils import schedules
from agents.method.ab import VALUE_BRANCH
from agents.train_value import train
from tests.test_train_value import losses, tiny


def _state(run) -> dict[str, torch.Tensor]:
    return read_checkpoint(run)["agent"]


def _split(state: dict[str, torch.Tensor], net: str) -> tuple[dict, dict]:
    """(the AB branch, everything else) of ``net`` ("online." or "target.")."""
    own = {k[len(net):]: v for k, v in state.items() if k.startswith(net)}
    branch = {k: v for k, v in own.items() if k.startswith(VALUE_BRANCH)}
    return branch, {k: v for k, v in own.items() if k not in branch}


@pytest.mark.parametrize("base", ["simclr", "clip", "dino"])
def test_the_phase_fits_the_branch_alone(tmp_path, base):
    torch.set_num_threads(1)
    train(tiny(tmp_path, "pre", base=base))  # 6 steps of pre-training
    train(tiny(tmp_path, "phase", base=base, value_steps=4, value_lr=1e-2))
    pre, phase = _state(tmp_path / "pre"), _state(tmp_path / "phase")
    assert read_checkpoint(tmp_path / "phase")["step"] == 10
    for net in ("online.", "target."):
        (b0, rest0), (b1, rest1) = _split(pre, net), _split(phase, net)
        assert rest0.keys() == rest1.keys() and len(b0) > 1
        frozen = [k for k in rest0 if not torch.equal(rest0[k], rest1[k])]
        assert not frozen, f"{net}: the phase moved {frozen[:3]}"
        moved = [k for k in b0 if not torch.equal(b0[k], b1[k])]
        assert len(moved) > len(b0) // 2, f"{net}: the phase moved only {moved}"
    # the branch's Adam moments started afresh with the phase (4 steps), the rest kept (6)
    steps = {float(v["step"]) for v in read_checkpoint(tmp_path / "phase")["optimizer"]["state"]
             .values()}
    assert steps == {4.0, 6.0}, steps
    log = losses(tmp_path / "phase")
    assert sorted(log) == list(range(1, 11))
    assert [log[s] for s in range(1, 7)] == list(losses(tmp_path / "pre").values())


def test_resume_inside_the_phase_is_exact(tmp_path):
    torch.set_num_threads(1)
    train(tiny(tmp_path, "full", value_steps=4))
    train(tiny(tmp_path, "split", value_steps=4, stop_at=8))
    train(replace(tiny(tmp_path, "split", value_steps=4), resume=str(tmp_path / "split")))
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 11)) and split == full
    a, b = _state(tmp_path / "full"), _state(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_takes_a_phase_on_resume(tmp_path):
    torch.set_num_threads(1)
    train(tiny(tmp_path, "full", value_steps=3))
    train(tiny(tmp_path, "later"))
    train(replace(tiny(tmp_path, "later", value_steps=3), resume=str(tmp_path / "later")))
    assert losses(tmp_path / "later") == losses(tmp_path / "full")
    with pytest.raises(SystemExit, match="value phase"):  # pre-training is over
        train(replace(tiny(tmp_path, "later", total_steps=7, value_steps=3),
                      resume=str(tmp_path / "later")))


@pytest.mark.parametrize("base", ["simclr", "clip", "dino"])
def test_a_cached_batch_gives_the_loss_of_a_fresh_pass(tmp_path, base):
    """--value-cache: the pool's encodings are those a fresh pass gives (the encoders are
    frozen in the phase), so a step on the pool computes the uncached step's loss; drawing
    the pool leaves the sampler's own streams where they were, and a second pool (a resume
    inside the phase) is the same."""
    from agents.infra.sources import build_datasets
    from agents.infra.train_utils import ValuePool, build_agent, make_optimizer, start_value_phase

    torch.set_num_threads(1)
    args = tiny(tmp_path, "pool", base=base, value_steps=4, value_cache=3, value_boot_images=3)
    data = build_datasets(args)
    agent, sampler = build_agent(args, data)
    optimizer, _ = make_optimizer(args, agent, None)
    with pytest.raises(ValueError, match="fit_value_only"):  # pre-training's encodings move
        ValuePool(agent, sampler, 2, "cpu")
    streams = sampler.state_dict()
    pool = start_value_phase(args, agent, optimizer, sampler, data, "cpu", args.total_steps)
    assert len(pool) == 3 and sampler.boot_images == 3
    assert all(torch.equal(streams[k], v) for k, v in sampler.state_dict().items())
    again = ValuePool(agent, sampler, 3, "cpu")
    for i in range(3):
        batch, enc = pool(i + 3)  # cycled
        assert batch.boot_views.shape[0] == 3 * args.n_views
        assert batch.base_views.shape[1] == agent.n_annotations(batch)  # the annotations only
        cached, _ = agent.loss(batch, gauges=False, enc=enc)
        fresh, _ = agent.loss(batch, gauges=False)
        assert torch.equal(cached, fresh)
        assert torch.equal(again(i)[1].boot_tokens, enc.boot_tokens)
    # different batches, not one repeated
    assert not torch.equal(pool(0)[0].boot_views, pool(1)[0].boot_views)


def test_resume_inside_a_cached_phase_is_exact(tmp_path):
    torch.set_num_threads(1)
    kw = {"value_steps": 5, "value_cache": 2, "value_boot_images": 3}
    train(tiny(tmp_path, "full", **kw))
    train(tiny(tmp_path, "split", stop_at=8, **kw))
    train(replace(tiny(tmp_path, "split", **kw), resume=str(tmp_path / "split")))
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 12)) and split == full
    a, b = _state(tmp_path / "full"), _state(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the phase cycles 2 batches: the branch moves, so the losses of one batch still differ
    assert len({full[s] for s in range(7, 12)}) == 5
    with pytest.raises(SystemExit, match="--value-steps > 0"):
        train(tiny(tmp_path, "nophase", value_cache=2))
    # more than 8 passes over the pool is warned, naming a pool that keeps to 8
    with pytest.warns(UserWarning, match=r"cycles the --value-cache 1 batches 9 times.*"
                                         r"--value-cache 2 keeps it to 8"):
        train(tiny(tmp_path, "overfit", value_steps=9, value_cache=1, stop_at=7))


def test_the_base_method_alone_has_no_phase(tmp_path):
    torch.set_num_threads(1)
    train(tiny(tmp_path, "base", value_steps=3, ab_weight=0.0))
    assert read_checkpoint(tmp_path / "base")["step"] == 6
    assert sorted(losses(tmp_path / "base")) == list(range(1, 7))


def test_the_study_pairs_each_seed_before_and_after(tmp_path):
    """studies.value_phase --report: the paired difference per seed, not of the means alone."""
    import json

    from studies.value_phase import main

    def summary(run, far, copy, permuted):
        run.mkdir()
        v = {"far": far, "far_copy": copy, "far_permuted": permuted,
             "near": 0.6, "near_copy": 0.6, "near_permuted": 0.6}
        (run / "summary.json").write_text(json.dumps({"value_accuracy_by_iou": v}))

    for seed, base in ((1, 0.25), (2, 0.30), (3, 0.20)):
        summary(tmp_path / f"s{seed}", base, base, base)
        summary(tmp_path / f"s{seed}_phase10", base + 0.02, base, base)
    import sys
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    argv, sys.argv = sys.argv, ["value_phase", "--out", str(tmp_path), "--seeds", "1", "2", "3",
                                "--value-steps", "10", "--report"]
    try:
        with redirect_stdout(out):
            main()
    finally:
        sys.argv = argv
    rows = {r.split("|")[1].strip(): r for r in out.getvalue().splitlines() if r.startswith("|")}
    # +0.02 on every seed: no seed noise, so the interval is zero and the gain is marked
    assert "+0.020 +- 0.000*" in rows["far Q - copy"], rows["far Q - copy"]
    assert "| 0.000 | 0.020 |" in rows["far Q - copy"]
    assert "+0.000" in rows["near Q"]

    # --control: after the phase, this study minus the control's runs of the same seeds
    control = tmp_path / "control"
    control.mkdir()
    for seed, base, gain in ((1, 0.25, 0.01), (2, 0.30, 0.0), (3, 0.20, 0.005)):
        summary(control / f"s{seed}", base, base, base)
        summary(control / f"s{seed}_phase10", base + gain, base, base)
    out = StringIO()
    argv, sys.argv = sys.argv, ["value_phase", "--out", str(tmp_path), "--seeds", "1", "2", "3",
                                "--value-steps", "10", "--report", "--control", str(control)]
    try:
        with redirect_stdout(out):
            main()
    finally:
        sys.argv = argv
    text = out.getvalue()
    assert "after the phase, 3 seeds" in text
    versus = {r.split("|")[1].strip(): r for r in text.split("after the phase")[1].splitlines()
              if r.startswith("|")}
    # per seed +0.010, +0.020, +0.015: mean +0.015, sd 0.005, t(2) 4.303 / sqrt(3) -> 0.012
    assert "+0.015 +- 0.012*" in versus["far Q"], versus["far Q"]
    assert "+0.000" in versus["far copy"]
    (control / "s3_phase10" / "summary.json").unlink()
    sys.argv = ["value_phase", "--out", str(tmp_path), "--seeds", "1", "2", "3",
                "--value-steps", "10", "--report", "--control", str(control)]
    try:
        with redirect_stdout(StringIO()), pytest.raises(SystemExit, match="s3_phase10"):
            main()
    finally:
        sys.argv = argv


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_phase_learning_rate_follows_its_schedule(schedule):
    args = parse_args(["--total-steps", "40", "--value-steps", "100", "--value-lr", "2e-3",
                       "--value-schedule", schedule])
    lr, ema = schedules(args)
    assert lr.shape == ema.shape == (140,)
    phase = lr[40:]
    assert phase[0] == 2e-3  # the phase starts at --value-lr, whatever pre-training ended at
    if schedule == "constant":
        assert (phase == 2e-3).all()
    else:  # a cosine to 0: falling every step, half way at the middle, ~0 at the end
        assert (np.diff(phase) < 0).all()
        assert phase[50] == pytest.approx(1e-3) and phase[-1] < 1e-6
    assert (lr[:40] == schedules(parse_args(["--total-steps", "40"]))[0]).all()


def test_the_phase_discount_is_its_own(tmp_path):
    """--value-gamma: in the phase the target is the one a run with that --gamma computes (the
    same weights, the same batch), pre-training's discount comes back after it, and the final
    report's KL is measured against the phase's target."""
    from agents.evaluate import value_accuracy_by_iou
    from agents.infra.sources import build_datasets
    from agents.infra.train_utils import build_agent

    torch.set_num_threads(1)
    args = tiny(tmp_path, "g", value_steps=2)
    data = build_datasets(args)
    agent, sampler = build_agent(args, data)
    assert agent.cfg.gamma > 0
    zero = replace(args, ab=replace(args.ab, gamma=0.0))
    agent0, _ = build_agent(zero, data)
    agent0.load_state_dict(agent.state_dict())
    batch = sampler.sample()
    with torch.no_grad():
        agent.fit_value_only(gamma=0.0)
        agent0.fit_value_only()
        assert agent.gamma == 0.0 and agent.cfg.gamma == args.ab.gamma
        phase, m = agent.loss(batch, gauges=False)
        reference, m0 = agent0.loss(batch, gauges=False)
        assert torch.equal(phase, reference) and m["ab_kl"] == m0["ab_kl"]
        agent.fit_value_only(False)
        assert agent.gamma == args.ab.gamma and agent.value_gamma is None
        assert not torch.equal(agent.fit_value_only().loss(batch, gauges=False)[0], phase)
        agent.fit_value_only(False)
    kl = {g: value_accuracy_by_iou(agent, batch, gamma=g)["kl"] for g in (None, 0.0)}
    assert kl[0.0] == value_accuracy_by_iou(agent0, batch)["kl"] != kl[None]
    assert agent.value_gamma is None  # restored
    with pytest.raises(ValueError, match=r"gamma \(1.0\) must be in \[0, 1\)"):
        agent.fit_value_only(gamma=1.0)
    with pytest.raises(SystemExit, match="--value-steps > 0"):
        train(tiny(tmp_path, "nophase", value_gamma=0.0))
    with pytest.raises(SystemExit, match="value-gamma"):
        train(tiny(tmp_path, "bad", value_steps=2, value_gamma=1.0))
