"""studies/learned_rewards.py: the rank AUC (Mann-Whitney U, ties half) against a brute-force
pair count and on hand-made cases, and the benchmark's main path on tiny scenes with a tiny
untrained checkpoint: one row per scorer, AUCs in [0, 1], a resumable cell."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from studies import learned_rewards as lr


def brute_auc(scores, positive) -> float:
    s, pos = np.asarray(scores, float), np.asarray(positive, bool)
    p, n = s[pos][:, None], s[~pos][None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def test_auc_hand_made_cases():
    pos = [False, False, True, True]
    assert lr.roc_auc([0.1, 0.2, 0.8, 0.9], pos) == 1.0  # perfect ranking
    assert lr.roc_auc([0.9, 0.8, 0.2, 0.1], pos) == 0.0  # reversed
    assert lr.roc_auc([0.5, 0.5, 0.5, 0.5], pos) == 0.5  # all ties
    assert lr.roc_auc([0.1, 0.5, 0.5, 0.9], pos) == 0.875  # one tied pair of four: 3.5 / 4
    assert math.isnan(lr.roc_auc([0.1, 0.2], [True, True]))  # no negatives: undefined
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        lr.roc_auc([0.1, 0.2, 0.3], [True, False])


@pytest.mark.parametrize("levels", [3, 20, 1000])  # many ties ... almost none
def test_auc_matches_a_brute_force_pair_count(rng, levels):
    for _ in range(5):
        m = int(rng.integers(2, 60))
        scores = rng.integers(0, levels, m) / levels
        positive = rng.random(m) < 0.4
        positive[:2] = [True, False]  # both classes present
        assert lr.roc_auc(scores, positive) == pytest.approx(brute_auc(scores, positive),
                                                             abs=1e-12)


def test_main_path_on_tiny_scenes(tmp_path, make_checkpoint, capsys, monkeypatch):
    ckpt = tmp_path / "ckpt" / "checkpoint.pt"
    ckpt.parent.mkdir()
    make_checkpoint(ckpt)  # untrained SimCLR, 64 px views
    out = tmp_path / "cell.json"
    argv = ["--checkpoint", str(ckpt), "--base-checkpoint", str(ckpt), "--views", "48",
            "--test-images", "6", "--curated-images", "24", "--per-class", "4",
            "--scene-size", "64", "--scale", "0.02", "1", "--seed", "3", "--out", str(out)]
    cell = lr.main(argv)
    printed = capsys.readouterr().out
    names = ["checkpoint (target)", "checkpoint (online)", "base-checkpoint (target)",
             "base-checkpoint (online)", f"{lr.TWIN} (target)", f"{lr.TWIN} (online)",
             lr.UNTRAINED]
    assert [r["scorer"] for r in cell["scorers"]] == names
    rows = [line for line in printed.splitlines() if line.startswith("| ")][1:]  # no header
    assert [r.split(" | ")[0][2:] for r in rows] == names  # one table row per scorer
    first = cell["scorers"][0]
    assert first["positives"] > 0 and first["negatives"] > 0
    assert first["positives"] + first["negatives"] == cell["pairs"] >= cell["views"] == 48
    for r in cell["scorers"]:
        assert 0.0 <= r["auc"] <= 1.0 and -1.0 <= r["spearman"] <= 1.0
        assert (r["positives"], r["negatives"]) == (first["positives"], first["negatives"])
        assert f"| {r['scorer']} | {r['auc']:.3f} | " in printed
    # the same checkpoint as its own control: the same rewards, the same figures
    assert cell["scorers"][0]["auc"] == cell["scorers"][2]["auc"]
    assert json.loads(out.read_text())["scorers"] == cell["scorers"]

    # a rerun with the same settings reads the cell back; new settings measure again
    monkeypatch.setattr(lr, "measure", lambda a: pytest.fail("measured a finished cell"))
    assert lr.main(argv)["scorers"] == cell["scorers"]
    assert "not measured again" in capsys.readouterr().out
    # a cell written before the rename (settings.image_size, today scene_size) is still finished
    saved = json.loads(out.read_text())
    assert saved["settings"]["scene_size"] == 64
    saved["settings"] = {("image_size" if k == "scene_size" else k): v
                         for k, v in saved["settings"].items()}
    out.write_text(json.dumps(saved))
    assert lr.main(argv)["scorers"] == cell["scorers"]
    assert "not measured again" in capsys.readouterr().out
    with pytest.raises(pytest.fail.Exception):
        lr.main([*argv[:-2], "--seed", "4", "--out", str(out)])


def test_the_truth_as_a_scorer_ranks_perfectly(tmp_path, make_checkpoint, monkeypatch):
    """The pairs line up: ObjectVisibilityScorer itself, run as one more scorer, gets AUC 1
    and Spearman 1 (the rewards of each (view, goal) pair are read where the truth is)."""
    from agents.infra.sources import object_split
    from imgmdp_env.scorers import ObjectVisibilityScorer

    ckpt = tmp_path / "checkpoint.pt"
    make_checkpoint(ckpt)
    real = lr.build_scorers

    def with_truth(a, goal_source):
        truth = ObjectVisibilityScorer(object_split(a, "test", a.test_images, a.scene_size))
        return [*real(a, goal_source), ("truth", truth, 64)]

    monkeypatch.setattr(lr, "build_scorers", with_truth)
    cell = lr.main(["--checkpoint", str(ckpt), "--views", "40", "--test-images", "6",
                    "--curated-images", "24", "--per-class", "2", "--scene-size", "64",
                    "--scale", "0.02", "1", "--out", str(tmp_path / "cells")])
    truth = cell["scorers"][-1]
    assert truth["scorer"] == "truth" and truth["positives"] > 0
    assert truth["auc"] == 1.0 and truth["spearman"] == pytest.approx(1.0)
    assert len(list((tmp_path / "cells").glob("scenes_learned-rewards_s0.json"))) == 1


def test_clip_checkpoint_is_scored_by_captions_naming_the_classes(tmp_path, make_checkpoint):
    ckpt = tmp_path / "clip" / "checkpoint.pt"
    ckpt.parent.mkdir()
    make_checkpoint(ckpt, base="clip")  # untrained AB_CLIP, 64 px views
    cell = lr.main(["--checkpoint", str(ckpt), "--views", "32", "--test-images", "6",
                    "--curated-images", "24", "--per-class", "4", "--scene-size", "64",
                    "--seed", "3", "--out", str(tmp_path / "cell.json")])
    assert [r["scorer"] for r in cell["scorers"]] == [
        "checkpoint (target)", "checkpoint (online)", f"{lr.TWIN} (target)",
        f"{lr.TWIN} (online)", lr.UNTRAINED]
    for r in cell["scorers"]:
        assert 0.0 <= r["auc"] <= 1.0 and r["positives"] + r["negatives"] == cell["pairs"]
