"""agents/evaluation/export.py: an encoder export loads in a fresh process without the training
code and
gives the checkpoint's features; folders are never overwritten; a broken export is named; the
SB3 extractor and the end of training use the same format."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.evaluation.export import (
    CONFIG,
    WEIGHTS,
    ExportError,
    export_checkpoint,
    export_encoder,
    load_encoder,
)
from agents.method.ab import load_encoder as load_checkpoint_encoder
from agents.method.encoders import make_encoder

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ("agents.method.ab", "agents.method.losses", "agents.train_value",
            "agents.infra.train_utils",
            "agents.method.data", "agents.infra.checkpoint", "tyro", "gymnasium")
LOADER = """
import json, sys, torch
torch.set_num_threads(1)
from agents.evaluation.export import load_encoder; enc = load_encoder(sys.argv[1])
views = torch.load(sys.argv[2])
with torch.no_grad():
    out = {"features": enc(views), "tokens": enc.tokens(views)}
torch.save(out, sys.argv[3])
ours = ("agents", "imgmdp_env", "tyro", "gymnasium")
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in ours),
                  "eval": not enc.training, "type": type(enc).__qualname__}))
"""


def views(n: int = 5, side: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


def reference(checkpoint: Path, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and tokens by the project's normal loader (agents.method.ab.load_encoder)."""
    enc = load_checkpoint_encoder(checkpoint)
    with torch.no_grad():
        tokens = enc(v)
        return enc.pool(tokens), tokens


@pytest.fixture
def exported(tmp_path, make_checkpoint) -> tuple[Path, Path]:
    """(checkpoint, export folder) of a fresh agent's checkpoint."""
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    make_checkpoint(ckpt)
    return ckpt, export_checkpoint(ckpt, tmp_path / "export")


def test_cli_export_loads_in_a_fresh_process_without_the_training_code(tmp_path,
                                                                       make_checkpoint):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    make_checkpoint(ckpt)
    out = tmp_path / "enc"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = subprocess.run([sys.executable, str(ROOT / "agents" / "evaluate.py"), "--checkpoint",
                          str(ckpt.parent), "--export", str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "from agents.evaluation.export import load_encoder" in cli.stdout
    assert sorted(p.name for p in out.iterdir()) == [CONFIG, WEIGHTS]
    config = json.loads((out / CONFIG).read_text())
    assert config["architecture"] == "cnn" and config["source"]["step"] == 0
    assert config["input"]["dtype"] == "uint8" and config["pooling"] == "mean"
    assert config["weights_sha256"] == hashlib.sha256((out / WEIGHTS).read_bytes()).hexdigest()
    v = views()
    torch.save(v, tmp_path / "views.pt")
    run = subprocess.run([sys.executable, "-c", LOADER, str(out), str(tmp_path / "views.pt"),
                          str(tmp_path / "out.pt")], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    imported = [m for m in report["modules"] if any(m == t or m.startswith(t + ".")
                                                    for t in TRAINING + ("imgmdp_env",))]
    assert imported == [] and "agents.evaluation.export" in report["modules"], report["modules"]
    assert report["eval"] and report["type"] == "ExportedEncoder"
    got = torch.load(tmp_path / "out.pt")
    features, tokens = reference(ckpt, v)
    assert got["features"].dtype == torch.float32
    assert got["features"].shape == (5, config["feature_dim"])
    assert got["tokens"].shape == (5, config["tokens"]["count"], config["tokens"]["dim"])
    assert torch.allclose(got["features"], features, rtol=1e-6, atol=1e-6)
    assert torch.allclose(got["tokens"], tokens, rtol=1e-6, atol=1e-6)


def test_a_non_empty_folder_is_never_overwritten(tmp_path, exported):
    ckpt, out = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError, match="not empty"):
        export_checkpoint(ckpt, out)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"todo\.txt"):
        export_checkpoint(ckpt, other)
    with pytest.raises(ExportError, match="not empty"):  # replace= only replaces an export
        export_encoder(load_checkpoint_encoder(ckpt), other, replace=True)
    assert [p.name for p in other.iterdir()] == ["todo.txt"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_checkpoint(ckpt, empty) == empty and (empty / WEIGHTS).is_file()
    from agents.evaluate import Args, _main

    with pytest.raises(SystemExit, match="--export: .*not empty"):
        _main(Args(checkpoint=ckpt, export=out))
    with pytest.raises(SystemExit, match="--export needs --checkpoint"):
        _main(Args(export=tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_broken_exports_are_named_with_what_is_valid(tmp_path, exported):
    ckpt, out = exported
    config = json.loads((out / CONFIG).read_text())

    def write(**changes) -> None:
        (out / CONFIG).write_text(json.dumps({**config, **changes}))

    write(weights_sha256="0" * 64)
    with pytest.raises(ExportError, match=rf"{WEIGHTS} does not match .*{CONFIG}.*sha256"):
        load_encoder(out)
    write()
    data = bytearray((out / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a weight
    (out / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ExportError, match="corrupted or partly copied"):
        load_encoder(out)
    (out / WEIGHTS).write_bytes(b"not safetensors")
    write(weights_sha256=hashlib.sha256(b"not safetensors").hexdigest())
    with pytest.raises(ExportError, match=f"{WEIGHTS} is not a readable safetensors file"):
        load_encoder(out)
    (out / WEIGHTS).unlink()
    with pytest.raises(ExportError, match=f"{WEIGHTS} is missing"):
        load_encoder(out)
    write(architecture="resnet9")
    with pytest.raises(ExportError, match=r"unknown architecture 'resnet9'; valid: \['cnn', "
                                          r"'timm', 'vit', 'vits16'\]"):
        load_encoder(out)
    with pytest.raises(ExportError, match="no encoder export at"):
        load_encoder(tmp_path / "nowhere")
    with pytest.raises(ExportError, match="is a run folder.*encoder"):
        load_encoder(ckpt.parent)
    with pytest.raises(ExportError, match="not an encoder export's config"):
        (ckpt.parent / "exp").mkdir()
        (ckpt.parent / "exp" / CONFIG).write_text('{"lr": 0.001}')
        load_encoder(ckpt.parent / "exp")


def test_sb3_extractor_built_from_an_export_gives_the_same_features(exported):
    from agents.evaluation.sb3_extractor import PretrainedViewExtractor

    ckpt, out = exported
    space = spaces.Box(0, 255, (3, 64, 64), np.uint8)
    ext = PretrainedViewExtractor(space, features_dim=8, checkpoint=str(out))
    v = views(4)
    features, _ = reference(ckpt, v)
    with torch.no_grad():
        assert torch.allclose(ext._pooled(v), features, rtol=1e-6, atol=1e-6)
        assert torch.allclose(ext._pooled(v.float() / 255), features, rtol=1e-6, atol=1e-6)
    assert not ext.encoder.training and ext(v.float() / 255).shape == (4, 8)
    (out / WEIGHTS).write_bytes(b"x")
    with pytest.raises(ExportError, match=r"PretrainedViewExtractor\(checkpoint=...\).*sha256"):
        PretrainedViewExtractor(space, features_dim=8, checkpoint=str(out))


def test_vit_round_trip_records_its_architecture_and_tokens(tmp_path):
    torch.manual_seed(0)
    vit = make_encoder("vit", view_size=32, patch_size=8, width=24, depth=1, heads=2).eval()
    out = export_encoder(vit, tmp_path / "vit", step=7)
    config = json.loads((out / CONFIG).read_text())
    assert config["arguments"] == {"view_size": 32, "patch_size": 8, "width": 24, "depth": 1,
                                   "heads": 2, "mlp_ratio": 4.0}
    assert config["tokens"] == {"count": 16, "dim": 24, "grid": [4, 4]}
    assert config["source"] == {"checkpoint": None, "step": 7, "network": "online"}
    enc = load_encoder(out)
    assert not enc.training and (enc.embed_dim, enc.num_tokens, enc.view_size) == (24, 16, 32)
    v = views(3, 32)
    with torch.no_grad():
        assert torch.allclose(enc.tokens(v), vit(v), rtol=1e-6, atol=1e-6)
        assert torch.allclose(enc(v), vit.pool(vit(v)), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        enc(v.float())


def test_training_ends_by_writing_the_export_and_a_resumed_run_replaces_it(tmp_path):
    from agents.infra.config import with_flags
    from agents.train_value import parse_args, train

    flags = ["--dataset-size", "8", "--scene-size", "48", "--view-size", "32", "--base-batch",
             "4", "--proj-dim", "8", "--proj-hidden", "16", "--decoder-width", "16",
             "--decoder-depth", "1", "--warmup-steps", "1", "--boot-images", "2", "--n-views",
             "3", "--probe-train", "12", "--probe-test", "8", "--probe-max-samples", "24",
             "--value-batches", "1", "--threads", "1", "--runs-dir", str(tmp_path), "--name",
             "r"]
    args = with_flags(parse_args(flags), total_steps=2, tensorboard=False, probe=False)
    train(args)
    run = tmp_path / "r"
    assert json.loads((run / "encoder" / CONFIG).read_text())["source"]["step"] == 2
    train(with_flags(args, resume=str(run), total_steps=3))
    assert json.loads((run / "encoder" / CONFIG).read_text())["source"]["step"] == 3
    v = views(2, 32)
    with torch.no_grad():
        features, _ = reference(run, v)
        assert torch.allclose(load_encoder(run / "encoder")(v), features, rtol=1e-6, atol=1e-6)
    assert not [p for p in run.iterdir() if p.name.startswith(".encoder")]


def test_a_version_1_export_loads_as_it_was_written(tmp_path, exported):
    """An export written before the rename (format_version 1: the view's side is
    ``image_size``, top level and in ``arguments``) loads as before: the same encoder, read
    under today's name ``view_size``; a new export is version 2 and names only ``view_size``."""
    ckpt, out = exported
    new = json.loads((out / CONFIG).read_text())
    assert new["format_version"] == 2 and new["view_size"] == 64
    assert new["arguments"]["view_size"] == 64
    assert "image_size" not in new and "image_size" not in new["arguments"]
    old = {k: v for k, v in new.items() if k != "view_size"}
    old.update(format_version=1, image_size=64,
               arguments={("image_size" if k == "view_size" else k): v
                          for k, v in new["arguments"].items()})
    (out / CONFIG).write_text(json.dumps(old, indent=2))  # the weights (and sha256) unchanged
    enc = load_encoder(out)
    assert enc.view_size == 64 and enc.export_config["view_size"] == 64
    assert enc.export_config["arguments"] == new["arguments"]
    v = views(4)
    features, tokens = reference(ckpt, v)
    with torch.no_grad():
        assert torch.allclose(enc(v), features, rtol=1e-6, atol=1e-6)
        assert torch.allclose(enc.tokens(v), tokens, rtol=1e-6, atol=1e-6)
    again = export_encoder(enc, tmp_path / "again")  # re-exported: version 2, same weights
    config = json.loads((again / CONFIG).read_text())
    assert config["format_version"] == 2 and config["arguments"] == new["arguments"]
    with torch.no_grad():
        assert torch.allclose(load_encoder(again)(v), features, rtol=1e-6, atol=1e-6)
