"""A golden run: ``make train``'s code path (``agents/train_value.py``'s ``main``, the default
``cpu-small`` preset, CPU, one thread) shrunk to a few tiny steps gives recorded numbers, bit
for bit: the SHA-256 of the final agent's weights (online and EMA target, as saved in the
checkpoint) and the logged losses rounded to 1e-6. A refactoring that moves code without
meaning to change training must keep both. Recorded at 6eec57a; 5bd3473, the last commit
before issue 22 moved the code, gives the same digest and losses (the same run on a copy of
that tree, ``--image-size`` for ``--scene-size``). Checked to fail on a 1% change of ``--lr``
and on a 1e-4 relative change of the EMA rate.

The constants hold for the torch pinned in ``constraints.txt`` (read from there); under another
torch the test is skipped, saying which (kernels may round differently).

Updating the constants, only when a change is *meant* to alter training (a new default, a
fixed bug in the loss, another sampler): run

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_golden_run.py

read the new digest and losses from the failure message, paste them into ``DIGEST`` and
``LOSSES`` below, and say in the commit message why training changed."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from agents.infra.checkpoint import read_checkpoint
from agents.train_value import main

ROOT = Path(__file__).resolve().parents[1]

# the default preset (cpu-small, `make train`), shrunk: every flag below only sizes the run
FLAGS = ["--dataset-size", "16", "--scene-size", "48", "--view-size", "32", "--base-batch", "4",
         "--boot-images", "2", "--n-views", "3", "--proj-dim", "16", "--proj-hidden", "32",
         "--decoder-width", "16", "--decoder-depth", "1", "--n-prototypes", "32",
         "--total-steps", "4", "--warmup-steps", "1", "--log-every", "1",
         "--checkpoint-every", "4", "--threads", "1", "--device", "cpu", "--no-probe",
         "--no-tensorboard", "--value-batches", "1", "--seed", "1"]

DIGEST = "fbed1788049b6852d5aa723ca5a13c6df3b94d07386ca627702eabd3bf83d784"
LOSSES = {1: 2.662894, 2: 2.533485, 3: 2.527852, 4: 2.899428}


def pinned_torch() -> str:
    """The torch version ``constraints.txt`` pins (``torch==X``)."""
    text = (ROOT / "constraints.txt").read_text()
    found = re.search(r"^torch==(\S+)", text, re.MULTILINE)
    assert found, "constraints.txt pins no torch version"
    return found.group(1)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}".encode())
        h.update(v.numpy().tobytes() if v.dtype != torch.bfloat16
                 else v.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.skipif(torch.__version__.split("+")[0] != pinned_torch(),
                    reason=f"the golden numbers are recorded for torch {pinned_torch()} "
                           f"(constraints.txt); this is torch {torch.__version__}")
def test_make_train_gives_the_recorded_numbers(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(FLAGS + ["--runs-dir", str(tmp_path), "--name", "golden"]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    run = tmp_path / "golden"
    state = read_checkpoint(run)
    assert state["step"] == 4
    digest = weights_digest(state["agent"])
    lines = map(json.loads, (run / "log.jsonl").read_text().splitlines())
    losses = {r["step"]: round(r["loss"], 6) for r in lines}
    assert (digest, losses) == (DIGEST, LOSSES), (
        "training changed: if that is meant, record the new numbers (module docstring):\n"
        f"DIGEST = {digest!r}\nLOSSES = {losses!r}")
