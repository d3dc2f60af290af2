"""Smoke tests of the examples of issue 9 at tiny settings: value-guided search saves its
picture, SB3 PPO runs over a checkpoint's encoder (frozen: unchanged), REINFORCE learns steps;
curation (issue 23) runs on a folder of class sub-folders and names the flag of a source
without class labels."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint(folder, base: str = "simclr"):
    """A real train_value.py checkpoint (untrained, 64 px) in ``folder``: its path."""
    from tests.helpers import write_checkpoint

    path = folder / "checkpoint.pt"
    write_checkpoint(path, base=base)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One SimCLR checkpoint for the module, built once."""
    return _checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_value_search_saves_its_trajectories(tmp_path, checkpoint, capsys):
    out = tmp_path / "search.png"
    example("value_search").main(["--checkpoint", str(checkpoint), "--steps", "3",
                                  "--num-envs", "2", "--images", "8", "--curated-images", "40",
                                  "--out", str(out)])
    assert "mean reward per step" in capsys.readouterr().out
    from PIL import Image

    w, h = Image.open(out).size
    assert w > 2 * h > 0  # one row per episode: image, goal, 3 views


def test_value_search_of_a_clip_run_names_the_goal_in_captions(tmp_path, capsys, monkeypatch):
    """A CLIP checkpoint searches for captions naming the class (no goal crops are made)."""
    module = example("value_search")
    seen = {}
    real = module.class_caption_goals

    def spy(agent, names, dataset):
        seen["names"], seen["dataset"] = names, dataset
        return real(agent, names, dataset)

    def no_crops(*args):
        raise AssertionError("a CLIP search needs no goal crops")

    monkeypatch.setattr(module, "class_caption_goals", spy)
    monkeypatch.setattr(module, "goal_images", no_crops)
    out = tmp_path / "search.png"
    module.main(["--checkpoint", str(_checkpoint(tmp_path, "clip")), "--steps", "3",
                 "--num-envs", "2", "--images", "8", "--out", str(out)])
    assert "mean reward per step" in capsys.readouterr().out and out.exists()
    assert seen == {"names": ["circle", "square", "triangle", "ring", "cross", "star",
                              "crescent", "arrow"], "dataset": "scenes"}


def test_value_search_with_object_goals(tmp_path, checkpoint, capsys, monkeypatch):
    """--goals object: a CLIP run searches each episode for its goal object's caption phrase
    (the same ids as agents.evaluation.search.episode_object_goals picks); a SimCLR run is
    refused with the reason."""
    module = example("value_search")
    picked = []
    real = module.episode_object_goals

    def spy(agent, envs):
        goals, pick = real(agent, envs)

        def keep(obs, info):
            picked.append((info["image_index"].copy(), pick(obs, info)))
            return picked[-1][1]

        return goals, keep

    monkeypatch.setattr(module, "episode_object_goals", spy)
    out = tmp_path / "search.png"
    module.main(["--checkpoint", str(_checkpoint(tmp_path, "clip")), "--steps", "3",
                 "--num-envs", "2", "--images", "8", "--goals", "object", "--out", str(out)])
    assert "mean reward per step" in capsys.readouterr().out and out.exists()
    assert len(picked) == 3  # the titles, then one per step: the same episodes' goals
    assert all(np.array_equal(ids, picked[0][1]) for _, ids in picked)
    with pytest.raises(SystemExit, match="object goals needs a 'clip' agent"):
        module.main(["--checkpoint", str(checkpoint), "--steps", "2", "--num-envs", "2",
                     "--images", "8", "--goals", "object", "--out", str(out)])


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


def _class_folder(root: Path, classes=("cat", "dog"), per_class: int = 4) -> Path:
    """root/<class>/<i>.png: tiny PNGs, a bright square at a class-specific place."""
    import numpy as np
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = np.full((24, 24, 3), 20 + i, np.uint8)
            img[4 + 8 * k: 12 + 8 * k, 4:20] = 230
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_curation_on_a_class_folder(tmp_path, capsys):
    root = _class_folder(tmp_path / "classes")
    example("curation").main(["--dataset", str(root), "--holdout", "0.5", "--steps", "2",
                              "--num-envs", "2"])
    out = capsys.readouterr().out
    assert "prototypes: ['cat', 'dog']" in out  # one per class, not one per image
    assert out.count("mean reward per step") == 2


def test_curation_names_the_flag_of_a_source_without_labels(tmp_path):
    import numpy as np
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(flat / f"{i}.png")
    curation = example("curation")
    with pytest.raises(SystemExit, match=r"--dataset \('.*flat'\) has neither object boxes nor "
                                         r"class labels: pass a folder of class sub-folders"):
        curation.main(["--dataset", str(flat), "--steps", "1"])
    with pytest.raises(SystemExit, match=r"--curated \('.*flat'\) has no class labels"):
        curation.main(["--curated", str(flat), "--steps", "1"])
    classes = _class_folder(tmp_path / "classes")
    with pytest.raises(SystemExit, match=r"--curated \('.*classes'\) shares no class with "
                                         r"--dataset \('scenes'\)"):
        curation.main(["--curated", str(classes), "--steps", "1"])
