"""Smoke tests of the examples of issue 9 at tiny settings: value-guided search saves its
picture, SB3 PPO runs over a checkpoint's encoder (frozen: unchanged), REINFORCE learns steps."""

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One real train_value.py checkpoint (untrained, 64 px) for the module: as conftest's
    make_checkpoint, built once."""
    from dataclasses import replace

    from agents.train_utils import build_agent, make_optimizer, save_checkpoint
    from agents.train_value import Args
    from imgmdp_env.datasets import make_dataset

    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    args = replace(Args(), dataset_size=4, base_batch=4)
    ds = make_dataset("scenes", n=4, size=64, seed=0)
    torch.manual_seed(0)
    agent, sampler = build_agent(args, {"base": ds, "boot": ds})
    save_checkpoint(path, args, agent, *make_optimizer(args, agent, None), sampler, 0)
    return path


def test_value_search_saves_its_trajectories(tmp_path, checkpoint, capsys):
    out = tmp_path / "search.png"
    example("value_search").main(["--checkpoint", str(checkpoint), "--steps", "3",
                                  "--num-envs", "2", "--images", "8", "--curated-images", "40",
                                  "--out", str(out)])
    assert "mean reward per step" in capsys.readouterr().out
    from PIL import Image

    w, h = Image.open(out).size
    assert w > 2 * h > 0  # one row per episode: image, goal, 3 views


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_sb3_ppo_with_the_pretrained_encoder(checkpoint, capsys, monkeypatch, mode):
    module = example("sb3_ppo")
    seen = {}
    real = module.PPO

    def spy(*args, **kwargs):  # keep the model to look at its encoder after learn()
        seen["model"] = real(*args, **kwargs)
        enc = seen["model"].policy.features_extractor.encoder
        seen["before"] = {k: v.clone() for k, v in enc.state_dict().items()}
        return seen["model"]

    monkeypatch.setattr(module, "PPO", spy)
    module.main(["--steps", "32", "--num-envs", "2", "--encoder", mode,
                 "--checkpoint", str(checkpoint)])
    assert "mean reward per step" in capsys.readouterr().out
    after = seen["model"].policy.features_extractor.encoder.state_dict()
    same = all(torch.equal(seen["before"][k], v) for k, v in after.items())
    assert same == (mode == "frozen")


def test_sb3_ppo_encoder_needs_a_checkpoint():
    with pytest.raises(SystemExit):
        example("sb3_ppo").main(["--encoder", "frozen"])


def test_reinforce_runs(capsys):
    example("reinforce").main(["--iterations", "2", "--num-envs", "4", "--horizon", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("mean return" in line for line in lines)
