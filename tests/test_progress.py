"""The training loop's outputs: the collapse warning of :class:`agents.infra.progress.Progress`."""

from __future__ import annotations

import json

import pytest

from agents.infra.distributed import Ranks
from agents.infra.progress import COLLAPSED, Progress
from agents.train_value import parse_args


def metrics(emb_cos: float) -> dict[str, float]:
    return {"loss": 1.0, "base_loss": 1.0, "t": 10.0, "emb_cos": emb_cos}


@pytest.mark.parametrize("base", ["dino", "simclr"])
def test_collapse_is_warned_once_after_the_warmup_and_logged(tmp_path, capsys, base):
    args = parse_args(["--base", base, "--warmup-steps", "4", "--log-every", "2",
                       "--total-steps", "20"])
    with Progress(args, tmp_path, 0, views_per_step=8, ranks=Ranks(), last=20) as progress:
        progress.update(2, metrics(0.9999), 1e-3, 0.01)  # in the warm-up: no warning
        assert "collapsed" not in capsys.readouterr().err
        progress.update(6, metrics(COLLAPSED - 0.01), 1e-3, 0.01)  # below the bar
        assert "collapsed" not in capsys.readouterr().err
        progress.update(8, metrics(0.9995), 1e-3, 0.01)
        err = capsys.readouterr().err
        assert "at step 8" in err and "0.9995" in err and f"{base} representation" in err
        progress.update(10, metrics(0.9999), 1e-3, 0.01)  # once per run
        assert "collapsed" not in capsys.readouterr().err
        progress.close()
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["emb_cos"] for r in logged] == [0.9999, COLLAPSED - 0.01, 0.9995, 0.9999]


def test_views_seen_count_the_value_phase_at_its_own_batch(tmp_path):
    """In the value phase a step trains on its bootstrap views alone (drawn or cached), not on
    pre-training's batch: views seen and views/s count those after ``total_steps``."""
    args = parse_args(["--total-steps", "4", "--value-steps", "4", "--log-every", "2"])
    with Progress(args, tmp_path, 0, views_per_step=8, ranks=Ranks(), last=8,
                  phase_views_per_step=3) as progress:
        for step in range(1, 9):
            progress.update(step, metrics(0.1), 1e-3, 0.01)
        progress.close()
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["views_seen"] for r in logged] == [16, 32, 38, 44]
    assert all(r["views_per_s"] > 0 for r in logged)
