"""Issue 8, fault test: a real training process killed (SIGKILL, SIGTERM) at random points,
then resumed, reproduces the uninterrupted run's log exactly. The kill points are drawn from a
seed printed on failure (set FAULT_SEED to replay one)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_train_value import TINY, records  # noqa: E402 - pytest puts tests/ on the path

from agents.infra.checkpoint import read_checkpoint
from agents.train_value import parse_args, train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
FLAGS = [*TINY, "--total-steps", str(STEPS), "--log-every", "1", "--checkpoint-every", "3",
         "--no-tensorboard", "--no-probe"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "agents/train_value.py", *args], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    train(replace(parse_args(FLAGS + ["--runs-dir", str(root), "--name", "ref"])))
    return records(root / "ref")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_and_resumed_reproduces_the_uninterrupted_log(tmp_path, reference, sig):
    seed = int(os.environ.get("FAULT_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    run = tmp_path / "run"
    log, kills = run / "log.jsonl", []
    args = FLAGS + ["--runs-dir", str(tmp_path), "--name", "run"]
    for _ in range(2):
        proc = start(args)
        target = lines(log) + rng.randrange(0, 4)  # a few steps into this process's work
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not (
                (run / "config.json").exists() and lines(log) >= target):
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))  # anywhere inside a step, or a checkpoint write
        if proc.poll() is None:
            proc.send_signal(sig)
            kills.append(lines(log))
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode in (0, -signal.SIGKILL, 128 + signal.SIGTERM, -signal.SIGTERM), \
            f"seed {seed}: exit {proc.returncode}\n{out[-3000:]}"
        if sig == signal.SIGTERM and proc.returncode == 128 + signal.SIGTERM:
            assert "SIGTERM: saved" in out or "nothing new" in out, out[-2000:]
        args = ["--resume", str(run)]
    print(f"FAULT_SEED={seed}: {sig.name} at log lines {kills}")
    proc = start(args)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, f"seed {seed}, kills at log lines {kills}:\n{out[-3000:]}"
    assert records(run) == reference, f"seed {seed}, kills at log lines {kills}"
    assert read_checkpoint(run)["step"] == STEPS
    assert not list(run.glob("*.tmp*"))
    assert json.loads((run / "config.json").read_text())["total_steps"] == STEPS
