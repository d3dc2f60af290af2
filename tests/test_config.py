"""agents/infra/config.py and agents/method/ab_config.py: one configuration. The agent's fields are
one
nested ``ABConfig`` (``args.ab``) whose flags keep their plain names; the presets are tyro
subcommands; the "0 = auto" sizes are resolved in one place; run folders and checkpoints
written before the nesting (flat keys) still resume."""

import json
import os
import subprocess
import sys
import typing
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest

from agents.infra.checkpoint import read_checkpoint, write_checkpoint
from agents.infra.config import (
    PRESETS,
    Args,
    cli_given,
    given_fields,
    parse_args,
    resolved,
    with_flags,
)
from agents.infra.flat_args import (
    RENAMED_ARGS,
    args_from,
    flags_given,
    flat_fields,
    merge_resume_args,
    nest_flat,
)
from agents.method.ab import ABConfig as ABConfigFromAb
from agents.method.ab_config import ABConfig
from agents.method.data import BASES
from agents.train_value import train

ROOT = Path(__file__).resolve().parents[1]
# config.json of two real runs written before the nesting (studies/value_factors.py cells)
OLD_CONFIGS = Path(__file__).resolve().parent / "data" / "old_flat_configs"
NEW_AB_FIELDS = {"center_momentum", "text_width", "text_depth"}  # flags the nesting added


def _other_value(f, value):
    """A valid value of field ``f`` unlike ``value`` (and its command-line words)."""
    hint = typing.get_type_hints(ABConfig)[f.name]
    if typing.get_origin(hint) is typing.Literal:
        new = next(c for c in typing.get_args(hint) if c != value)
        return new, [new]
    if hint is bool:
        return not value, []
    if hint is int:
        return value + 3, [str(value + 3)]
    new = round(value / 2, 6) if value else 0.25  # gamma stays in [0, 1)
    return new, [repr(new)]


def test_every_agent_flag_keeps_its_name_and_sets_the_nested_field():
    """``--gamma 0.25``, ``--no-action-tokens``, ``--base dino``, ...: one flag per ABConfig
    field, without a prefix, landing in ``args.ab`` and nowhere else."""
    default = parse_args([])
    for f in fields(ABConfig):
        value, words = _other_value(f, getattr(default.ab, f.name))
        flag = "--" + ("no-" if value is False else "") + f.name.replace("_", "-")
        args = parse_args([flag, *words])
        assert getattr(args.ab, f.name) == value, flag
        assert flat_fields(args) == {**flat_fields(default), f.name: value}, flag
        assert flags_given([flag, *words], Args) == {f.name}, flag


def test_the_agent_fields_are_declared_once():
    names = {f.name for f in fields(Args)}
    assert not names & {f.name for f in fields(ABConfig)}  # no copy of a field in Args
    assert ABConfigFromAb is ABConfig  # `from agents.method.ab import ABConfig` keeps working
    assert set(typing.get_args(typing.get_type_hints(ABConfig)["base"])) == set(BASES)
    help_text = subprocess.run([sys.executable, "agents/train_value.py", "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "COLUMNS": "200"}).stdout
    for line in ("--gamma FLOAT", "discount of the bootstrapping target",
                 "--action-tokens, --no-action-tokens", "--base {simclr,dino,clip}",
                 "--text-backbone {words,minilm}", "gpu-vits16", "(default: cpu-small)"):
        assert line in help_text, line
    assert "--ab." not in help_text  # no prefixed flag


def test_abconfig_validates_on_construction_and_the_cli_names_the_field():
    with pytest.raises(ValueError, match=r"gamma \(1.0\) must be in \[0, 1\)"):
        with_flags(Args(), gamma=1.0)
    with pytest.raises(SystemExit) as e:
        parse_args(["--gamma", "1"])
    assert e.value.code == 2
    with pytest.raises(TypeError, match="no flag"):
        with_flags(Args(), gama=0.1)
    from agents.method.ab import ABAgent
    from agents.method.networks import make_encoder

    with pytest.raises(ValueError, match=r"ann_batch \(0\) must be >= 1.*resolved"):
        ABAgent(make_encoder("cnn", 32), ABConfig())  # "auto" never reaches the agent as 0


# ---------------------------------------------------------------------------------------------
# the "0 = auto" sizes: one function
# ---------------------------------------------------------------------------------------------
def test_the_presets_leave_the_sizes_to_the_rule():
    assert Args().ab == ABConfig()  # one default: ABConfig's own
    gpu = resolved(PRESETS["gpu-vits16"])
    assert (gpu.ab.ann_batch, gpu.boot_images) == (128, 32)  # 256 / 2, 256 / 8
    cpu = resolved(PRESETS["cpu-small"])
    assert (cpu.ab.ann_batch, cpu.boot_images) == (32, 10)  # 64 / 2; cpu-small sets 10


@pytest.mark.parametrize("base_batch,ann,boot", [(64, 32, 8), (256, 128, 32), (2, 2, 1),
                                                  (3, 2, 1), (9, 4, 1), (17, 8, 2)])
def test_auto_sizes_follow_the_documented_rule(base_batch, ann, boot):
    """ann_batch 0 = base_batch / 2 (min 2); boot_images 0 = base_batch / 8 (min 1)."""
    args = with_flags(Args(), base_batch=base_batch, ann_batch=0, boot_images=0)
    r = resolved(args)
    assert (r.ab.ann_batch, r.boot_images) == (ann, boot)
    assert (args.ab.ann_batch, args.boot_images) == (0, 0)  # the recorded config stays as given
    explicit = with_flags(args, ann_batch=5, boot_images=3)
    assert resolved(explicit) == explicit
    assert resolved(r) == r


def test_build_agent_and_the_checks_use_the_resolved_sizes(monkeypatch):
    from agents.infra.arg_checks import check_train_args
    from agents.infra.train_utils import build_agent
    from imgmdp_env.datasets import make_dataset

    args = with_flags(Args(), base_batch=16, ann_batch=0, boot_images=0, dataset_size=4,
                      view_size=32, proj_dim=8, proj_hidden=16, decoder_width=8,
                      decoder_depth=1)
    ds = make_dataset("scenes", n=4, size=48, seed=0)
    agent, sampler = build_agent(args, {"base": ds, "boot": ds})
    assert (agent.cfg.ann_batch, sampler.boot_images) == (8, 2)
    assert agent.cfg is not args.ab and args.ab.ann_batch == 0
    # the argument checks ask the same function (a copy of the rule would ignore this patch)
    monkeypatch.setattr("agents.infra.config.resolved",
                        lambda a: replace(a, boot_images=a.base_batch + 1))
    with pytest.raises(SystemExit, match=r"--boot-images <= --base-batch \(got 17 > 16\)"):
        check_train_args(with_flags(args, boot_source="base", n_views=2))


# ---------------------------------------------------------------------------------------------
# presets: tyro subcommands
# ---------------------------------------------------------------------------------------------
def test_presets_are_subcommands_with_their_defaults():
    for name, preset in PRESETS.items():
        assert parse_args([name]) == preset, name
        assert preset.preset == name
    assert parse_args([]) == PRESETS["cpu-small"] == Args()  # `make train`: no arguments
    gpu = parse_args(["gpu-vits16", "--base", "dino", "--no-action-tokens", "--boot-images",
                      "4", "--boot-scale", "0.1", "0.9"])
    assert (gpu.encoder, gpu.ab.proj_dim, gpu.ab.base, gpu.ab.action_tokens, gpu.boot_images,
            gpu.boot_scale) == ("timm:vit_small_patch16_224", 256, "dino", False, 4, (0.1, 0.9))
    assert PRESETS["cpu-small"] == Args()  # parsing never changes a preset's defaults


def test_the_command_line_reports_what_it_was_given():
    argv = ["gpu-vits16", "--gamma", "0", "--no-action-tokens", "--lr=1e-4"]
    assert cli_given(argv) == {"preset", "gamma", "action_tokens", "lr"}
    assert cli_given(["--gamma", "0"]) == {"gamma"}
    args = parse_args(argv)
    assert given_fields(args) == {"gamma", "action_tokens", "lr"}  # against gpu-vits16's own
    assert given_fields(with_flags(Args(), n_bins=8, seed=3)) == {"n_bins", "seed"}


# ---------------------------------------------------------------------------------------------
# run folders and checkpoints: nested, and the flat ones of earlier runs
# ---------------------------------------------------------------------------------------------
def _flat_like_before(args: Args) -> dict:
    """What the code before the nesting wrote for ``args``: one flat dict of the old fields,
    by their old names (``image_size``, today ``scene_size``: RENAMED_ARGS)."""
    old_name = {new: old for old, new in RENAMED_ARGS.items()}
    return {old_name.get(k, k): v for k, v in flat_fields(args).items()
            if k not in NEW_AB_FIELDS}


def test_nest_flat_moves_the_agent_keys_into_ab():
    old = {"seed": 3, "gamma": 0.0, "base": "dino", "ann_batch": 0, "lr": 1e-4}
    assert nest_flat(Args, old) == {"seed": 3, "lr": 1e-4,
                                    "ab": {"gamma": 0.0, "base": "dino", "ann_batch": 0}}
    new = asdict(with_flags(Args(), gamma=0.0))
    assert nest_flat(Args, new) == new  # a nested config is left as it is


@pytest.mark.parametrize("run", ["default", "gamma-0"])
def test_an_old_flat_config_json_reads_back(run):
    saved = json.loads((OLD_CONFIGS / f"{run}.json").read_text())
    assert "gamma" in saved and "ab" not in saved  # the old format
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "ignoring saved argument(s)": an old key lost
        args = args_from(Args, saved, OLD_CONFIGS / f"{run}.json")
    for k, v in saved.items():  # an old name (image_size) read under its new one (scene_size)
        assert flat_fields(args)[RENAMED_ARGS.get(k, k)] == (
            tuple(v) if isinstance(v, list) else v), k
    assert "image_size" in saved and args.scene_size == saved["image_size"] == 96
    assert args.ab.gamma == saved["gamma"] and args.ab.ann_batch == 0
    # fields added since take the values the run had, not today's defaults
    assert args.ab.residual == "none" and args.ab.decoder_geometry is False
    assert parse_args([]).ab.residual == "mixture" and parse_args([]).ab.decoder_geometry


def test_an_old_checkpoint_with_flat_args_resumes_exactly(tmp_path):
    """A run stopped before the nesting (flat "args" in its checkpoint and config.json)
    continues to the same losses as an uninterrupted run; a changed agent flag is refused
    by its name with both values."""
    from test_train_value import losses, tiny  # pytest puts tests/ on the path

    train(tiny(tmp_path, "full"))
    train(tiny(tmp_path, "split", stop_at=3))
    run = tmp_path / "split"
    state = read_checkpoint(run)
    flat = _flat_like_before(args_from(Args, state["args"], run))
    write_checkpoint({**state, "args": flat}, run / "checkpoint.pt")
    (run / "config.json").write_text(json.dumps(flat, indent=2))
    assert "gamma" in read_checkpoint(run)["args"] and "image_size" in read_checkpoint(run)["args"]
    resume = replace(tiny(tmp_path, "split"), resume=str(run))
    with pytest.raises(SystemExit, match=r"--gamma 0.0 \(the run has 0.5\)"):
        train(with_flags(resume, gamma=0.0), given={"resume", "gamma"})
    train(resume, given={"resume"})
    full, split = losses(tmp_path / "full"), losses(run)
    assert [split[s] for s in range(1, 7)] == [full[s] for s in range(1, 7)]
    saved = json.loads((run / "config.json").read_text())
    assert "gamma" not in saved and saved["ab"]["gamma"] == 0.5  # rewritten nested
    assert "image_size" not in saved and saved["scene_size"] == 48  # and by today's names


def test_resume_compares_nested_fields_by_their_flag_names(capsys):
    saved = with_flags(Args(), gamma=0.5, lr=1e-3)
    may_change, per_run = {"lr"}, {"resume"}
    new = merge_resume_args(saved, {"lr": 1e-4, "resume": "r", "gamma": 0.5}, may_change,
                            per_run)
    assert (new.lr, new.resume, new.ab) == (1e-4, "r", saved.ab)
    assert "--lr 0.001 -> 0.0001" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"--decoder-width 64 \(the run has 128\)"):
        merge_resume_args(saved, {"decoder_width": 64}, may_change, per_run)
    with pytest.raises(SystemExit, match=r"--action-tokens False \(the run has True\)"):
        merge_resume_args(saved, {"action_tokens": False}, may_change, per_run)
    with pytest.raises(SystemExit, match=r"the preset 'gpu-vits16' \(the run has 'cpu-small'\)"):
        merge_resume_args(saved, {"preset": "gpu-vits16"}, may_change, per_run)


def test_an_old_checkpoint_evaluates_and_its_agent_is_what_resolved_builds(tmp_path):
    """A checkpoint with flat args, as written before the nesting, loads (``load_agent``, what
    evaluate.py and the examples use), and the agent config saved beside those args equals the
    resolved nested config of today (the "0 = auto" rule did not move)."""
    from test_train_value import tiny  # pytest puts tests/ on the path

    from agents.method.ab import load_agent

    train(with_flags(tiny(tmp_path, "old"), gamma=0.0, ann_batch=0))
    path = tmp_path / "old" / "checkpoint.pt"
    state = read_checkpoint(path)
    flat = _flat_like_before(args_from(Args, state["args"], path))
    write_checkpoint({**state, "args": flat}, path)
    agent = load_agent(str(path))
    state = read_checkpoint(path)
    assert "gamma" in state["args"] and "ab" not in state["args"]
    args = args_from(Args, state["args"], path)
    assert resolved(args).ab == agent.cfg == ABConfig(**state["ab_config"])
    assert agent.cfg.gamma == 0.0 and agent.cfg.ann_batch == max(args.base_batch // 2, 2)


def test_the_old_image_size_flag_is_refused_naming_scene_size(tmp_path):
    """``--image-size`` was the side of the generated scenes: refused, naming --scene-size (one
    name per quantity; --view-size is the views'); a run saved with ``image_size`` resumes."""
    for argv in (["--image-size", "48"], ["--image-size=48"], ["gpu-vits16", "--image-size", "48"]):
        with pytest.raises(SystemExit, match=r"--image-size.*now --scene-size.*--view-size"):
            parse_args(argv)
    assert parse_args(["--scene-size", "48"]).scene_size == 48
    assert PRESETS["gpu-vits16"].scene_size == 256 and Args().scene_size == 96
    saved = {**asdict(Args()), "image_size": 48}
    del saved["scene_size"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not "ignoring saved argument(s) ['image_size']"
        assert args_from(Args, saved, tmp_path / "config.json").scene_size == 48
