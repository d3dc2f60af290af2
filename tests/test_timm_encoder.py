"""A timm ViT as the encoder (``--encoder timm:<name>``): built by timm without weights, its
patch tokens are the tokens, and it goes through everything an encoder goes through (training,
random twins, the export and its loader). timm is the ``timm`` extra, which ``make`` installs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.method.encoders import TimmEncoder, encoder_kind, make_encoder

ROOT = Path(__file__).resolve().parents[1]
NAME = "timm:vit_tiny_patch16_224"


def test_timm_encoder_gives_the_patch_tokens_of_timms_model():
    torch.manual_seed(0)
    enc = make_encoder(NAME, view_size=32, depth=2)
    assert isinstance(enc, TimmEncoder) and enc.config == {
        "kind": "timm", "view_size": 32, "model": "vit_tiny_patch16_224", "depth": 2}
    views = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    tokens = enc(views)
    assert tokens.shape == (3, enc.num_tokens, enc.embed_dim) == (3, 4, 192)
    # timm's own features on the normalised views, the class token dropped
    want = enc.model.forward_features(enc.normalise(views))[:, 1:]
    assert torch.equal(tokens, want)
    twin = make_encoder(**enc.config)  # make_encoder(**config) rebuilds the architecture
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in enc.state_dict().items()}


def test_timm_kinds_name_what_is_valid():
    assert encoder_kind("timm:vit_small_patch16_224") == (
        "timm", {"model": "vit_small_patch16_224"})
    with pytest.raises(ValueError, match="needs a timm model name"):
        encoder_kind("timm:")
    with pytest.raises(ValueError, match="timm:<a timm ViT name>"):
        encoder_kind("resnet")
    with pytest.raises(ValueError, match="not one of timm's ViTs"):
        make_encoder("timm:resnet50", view_size=32)


def test_training_with_a_timm_encoder_and_loading_its_export(tmp_path):
    """Two training steps with --encoder timm:..., then the exported encoder, loaded in a fresh
    process by the documented line, gives the checkpoint's features."""
    run = tmp_path / "runs" / "t"
    cmd = [sys.executable, "agents/train_value.py", "--encoder", NAME, "--view-size", "32",
           "--dataset-size", "16", "--scene-size", "48", "--base-batch", "4", "--proj-dim", "16",
           "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth", "1",
           "--boot-images", "2", "--n-views", "3", "--warmup-steps", "1", "--total-steps", "2",
           "--no-probe", "--value-batches", "1", "--threads", "1", "--no-tensorboard",
           "--runs-dir", str(run.parent), "--name", "t"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    from agents.method.ab import load_encoder

    enc = load_encoder(str(run))
    views = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = enc.pool(enc.eval()(views))
    torch.save(views, tmp_path / "views.pt")
    code = ("import torch; from agents.evaluation.export import load_encoder; "
            f"enc = load_encoder({str(run / 'encoder')!r}); "
            f"v = torch.load({str(tmp_path / 'views.pt')!r}); "
            f"torch.save(enc(v), {str(tmp_path / 'got.pt')!r})")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.allclose(torch.load(tmp_path / "got.pt"), want, atol=1e-5)


def test_a_view_size_off_the_timm_patch_grid_is_refused(tmp_path):
    from agents.train_value import parse_args, train

    args = parse_args(["--encoder", NAME, "--view-size", "40", "--runs-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="multiple of 16"):
        train(args)
