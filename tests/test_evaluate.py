"""Frozen-encoder probes (agents.evaluation.probes): they read what is decodable, not what is not;
scene
samples are the objects' boxes. The probe protocol (agents.evaluate): fixed sets, baselines."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from agents.evaluate import LONG_PHASE, RawPixels, probe_report, probe_sets
from agents.evaluation.probes import (
    AttentiveProbe,
    attentive_probe,
    extract_features,
    knn_probe,
    linear_probe,
    probe_all,
    probe_samples,
)
from imgmdp_env.datasets import ImageDataset

COLOURS = np.array([[220, 40, 40], [40, 180, 60], [40, 70, 220], [230, 210, 40]], np.float32)


class PatchColourEncoder(nn.Module):
    """Identity-like fixed encoder: mean colour of each 8x8 patch, embedded by a fixed random
    linear map into D = 16 (nothing learned). tokens ``(B, T, 16)``; pool = mean."""

    embed_dim = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Linear(3, self.embed_dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.embed_dim, 3, generator=g))
            self.proj.bias.copy_(torch.randn(self.embed_dim, generator=g))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        x = views.float() / 255 if views.dtype == torch.uint8 else views
        x = nn.functional.avg_pool2d(x, 8)  # (B, 3, H/8, W/8)
        return self.proj(x.flatten(2).transpose(1, 2))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(1)


class PixelEncoder(nn.Module):
    """tokens = the view's pixels ``(B, H*W, 3)`` as floats in [0, 255]: shows the crop."""

    embed_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return views.float().flatten(2).transpose(1, 2) + self.dummy

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(1)


def colour_items(n: int, seed: int) -> ImageDataset:
    """Single-item images: a noisy, randomly shaded field of one of 4 colours = the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(COLOURS), n)
    shade = rng.uniform(0.6, 1.1, (n, 1, 1, 1))
    noise = rng.normal(0, 25, (n, 32, 32, 3))
    imgs = np.clip(COLOURS[labels][:, None, None] * shade + noise, 0, 255).astype(np.uint8)
    return ImageDataset(images=list(imgs), labels=labels, name="colours")


def colour_scenes(n: int, seed: int, size: int = 64) -> ImageDataset:
    """Grey noisy scenes with 2 squares of different colours; an object's label is its colour,
    so only a crop of the object's own box tells it (the whole image shows both)."""
    rng = np.random.default_rng(seed)
    images, boxes, labels = [], [], []
    for _ in range(n):
        img = rng.normal(110, 20, (size, size, 3))
        cls = rng.choice(len(COLOURS), 2, replace=False)
        side = int(rng.integers(14, 22))
        xs = [int(rng.integers(0, size // 2 - side)), int(rng.integers(size // 2, size - side))]
        ys = rng.integers(0, size - side, 2)
        b = []
        for c, x, y in zip(cls, xs, ys, strict=True):
            img[y:y + side, x:x + side] = COLOURS[c]
            b.append([(x + side / 2) / size, (y + side / 2) / size, side / size, side / size])
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        boxes.append(np.array(b, np.float32))
        labels.append(cls.astype(np.int64))
    return ImageDataset(images=images, object_boxes=boxes, object_labels=labels,
                        labels=np.array([lab[0] for lab in labels]), name="colour-scenes")


def shuffled(ds: ImageDataset, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    return ImageDataset(images=ds.images, labels=rng.permutation(ds.labels), name="shuffled")


def test_probes_read_decodable_class_and_not_shuffled_labels():
    enc = PatchColourEncoder()
    train, test = colour_items(400, 0), colour_items(200, 1)
    acc = probe_all(enc, train, test, view_size=32)
    assert set(acc) == {"linear", "knn", "attentive"}
    for name, a in acc.items():
        assert a > 0.95, (name, acc)
    # labels independent of the images: chance is 1/4; 200 test samples -> sd ~0.03
    acc = probe_all(enc, shuffled(train, 2), shuffled(test, 3), view_size=32)
    for name, a in acc.items():
        assert 0.1 < a < 0.4, (name, acc)


def test_scene_samples_are_the_object_boxes():
    ds = colour_scenes(3, 0)
    idx, boxes, labels = probe_samples(ds, box_scale=1.2)
    assert idx.tolist() == [0, 0, 1, 1, 2, 2]
    assert labels.tolist() == np.concatenate(ds.object_labels).tolist()
    ref = torch.from_numpy(np.concatenate(ds.object_boxes))
    torch.testing.assert_close(boxes[:, :2], ref[:, :2])
    torch.testing.assert_close(boxes[:, 2:], ref[:, 2:] * 1.2)
    # the crop shows the object: its colour fills the centre, the grey background the corners
    feats = extract_features(PixelEncoder(), ds, view_size=24)
    views = feats.tokens.view(-1, 24, 24, 3)
    colours = torch.from_numpy(COLOURS)[labels]
    centre = views[:, 4:20, 4:20].reshape(len(labels), -1, 3)
    assert (centre - colours[:, None]).abs().max() <= 2
    corner = views[:, :2, :2].reshape(len(labels), -1, 3)
    assert ((corner - colours[:, None]).abs().amax(-1) > 40).all()


def test_scene_probes_classify_objects_that_the_whole_image_cannot():
    enc = PatchColourEncoder()
    train, test = colour_scenes(150, 0), colour_scenes(80, 1)
    acc = probe_all(enc, train, test, view_size=32, probes=("linear", "knn"))
    assert acc["linear"] > 0.95 and acc["knn"] > 0.95, acc


def test_non_square_images_get_square_object_views():
    img = np.zeros((40, 80, 3), np.uint8)
    ds = ImageDataset(images=[img], object_boxes=[np.array([[0.5, 0.5, 0.1, 0.2]], np.float32)],
                      object_labels=[np.array([1])])
    _, boxes, _ = probe_samples(ds, box_scale=1.0)
    # 0.1 * 80 px = 8 px wide, 0.2 * 40 px = 8 px high: square in pixels already
    torch.testing.assert_close(boxes, torch.tensor([[0.5, 0.5, 0.1, 0.2]]))


def test_single_item_samples_are_whole_images_and_max_samples_subsets():
    ds = colour_items(10, 0)
    idx, boxes, labels = probe_samples(ds)
    assert idx.tolist() == list(range(10))
    assert (boxes == torch.tensor([0.5, 0.5, 1.0, 1.0])).all()
    idx2, _, labels2 = probe_samples(ds, max_samples=4, seed=1)
    assert len(idx2) == 4 and labels2.tolist() == labels[idx2].tolist()
    assert idx2.tolist() == sorted(idx2.tolist())


def test_unlabelled_dataset_error_names_the_need():
    ds = ImageDataset(images=[np.zeros((8, 8, 3), np.uint8)], name="plain")
    with pytest.raises(ValueError, match="plain.*labelled"):
        probe_samples(ds)
    with pytest.raises(ValueError, match="unknown probes"):
        probe_all(PatchColourEncoder(), ds, ds, probes=("linear", "svm"))


def test_extraction_freezes_and_restores_the_encoder_mode():
    enc = PatchColourEncoder().train()
    seen = []
    enc.register_forward_pre_hook(lambda m, _: seen.append(m.training))
    feats = extract_features(enc, colour_items(8, 0), view_size=16)
    assert seen == [False] and enc.training and not feats.pooled.requires_grad
    assert feats.tokens.shape == (8, 4, 16) and feats.pooled.shape == (8, 16)


def test_fast_attention_pooling_equals_nn_multihead_attention():
    torch.manual_seed(0)
    probe = AttentiveProbe(dim=24, num_classes=5, num_heads=3)
    with torch.no_grad():  # non-zero biases, which the fast form must handle
        probe.attn.in_proj_bias.normal_()
        probe.attn.out_proj.bias.normal_()
    tokens = torch.randn(6, 11, 24)
    torch.testing.assert_close(probe(tokens), probe(tokens, exact=True), atol=1e-5, rtol=1e-5)


def test_knn_matches_a_hand_written_reference():
    g = torch.Generator().manual_seed(0)
    tr, te = torch.randn(50, 8, generator=g), torch.randn(20, 8, generator=g)
    ytr, yte = torch.randint(0, 3, (50,), generator=g), torch.randint(0, 3, (20,), generator=g)
    pred = []
    for x in te:
        sim = torch.nn.functional.cosine_similarity(tr, x[None], dim=-1)
        top = sim.argsort(descending=True)[:5]
        votes = [sum(float(torch.exp(sim[i] / 0.1)) for i in top if ytr[i] == c)
                 for c in range(3)]
        pred.append(int(np.argmax(votes)))
    ref = float(np.mean(np.array(pred) == yte.numpy()))
    assert knn_probe(tr, ytr, te, yte, k=5, temperature=0.1, chunk=7,
                     standardise=False) == pytest.approx(ref)


def test_linear_and_attentive_probes_are_deterministic():
    g = torch.Generator().manual_seed(0)
    tok, y = torch.randn(60, 5, 8, generator=g), torch.randint(0, 3, (60,), generator=g)
    a = linear_probe(tok[:40].mean(1), y[:40], tok[40:].mean(1), y[40:])
    assert a == linear_probe(tok[:40].mean(1), y[:40], tok[40:].mean(1), y[40:])
    state = torch.get_rng_state()
    b = attentive_probe(tok[:40], y[:40], tok[40:], y[40:], epochs=3, seed=1)
    assert b == attentive_probe(tok[:40], y[:40], tok[40:], y[40:], epochs=3, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global random state is untouched


def test_random_twin_has_the_architecture_not_the_weights(tmp_path, make_checkpoint):
    from agents.evaluate import random_twin
    from agents.method.ab import load_encoder

    make_checkpoint(tmp_path / "checkpoint.pt")
    enc = load_encoder(tmp_path / "checkpoint.pt")
    twin, again = random_twin(enc, seed=3), random_twin(enc, seed=3)
    assert twin.config == enc.config and not twin.training
    a, b, c = enc.state_dict(), twin.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    assert all(torch.equal(b[k], c[k]) for k in b)  # seeded
    assert not all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TypeError, match="make_encoder"):
        random_twin(PatchColourEncoder())


def test_cli_prints_the_checkpoint_beside_a_random_encoder(tmp_path, make_checkpoint):
    import subprocess
    import sys
    from pathlib import Path

    make_checkpoint(tmp_path / "checkpoint.pt")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "agents" / "evaluate.py"), "--checkpoint",
         str(tmp_path), "--n-train", "12", "--n-test", "6", "--random-twins", "2",
         "--threads", "1", "--value-batches", "2"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # first the value function's table: Q beside copy and beside itself with permuted actions
    value_rows = [ln.split("|")[1].strip() for ln in lines if ln.startswith("| ")][:6]
    assert value_rows[1:4] == ["value function Q_AB", "copy x_i's own annotation",
                               "Q_AB, actions permuted within the bin"]
    assert any(ln.startswith("verdict: on far pairs") for ln in lines)
    start = next(k for k, ln in enumerate(lines) if ln.startswith("| encoder |"))
    rows = [ln for ln in lines[start:] if ln.startswith("| ")]
    assert rows[0].split("|")[2:5] == [" linear ", " knn ", " attentive "]
    assert "checkpoint" in rows[1] and "random init" in rows[2] and "raw pixels" in rows[3]
    assert "majority class" in rows[4]
    assert "+-" in rows[2]  # the twins' spread
    accs = [float(x.split("+-")[0]) for row in rows[2:5] for x in row.split("|")[2:5]]
    assert len(accs) == 9 and all(0 <= a <= 1 for a in accs)
    # the split probed is named, and the run's verdict ends the output with the next command
    assert any("probes trained on" in ln and "tested on" in ln for ln in lines)
    end = lines[next(k for k, ln in enumerate(lines) if ln == "verdict:"):]
    assert any(ln.strip().startswith("value function:") for ln in end)
    assert sum(ln.strip().startswith(("linear probe", "knn probe", "attentive probe"))
               for ln in end) == 3
    assert end[-1].startswith("next:") and "agents/evaluate.py --checkpoint" in end[-1]


# ---------------------------------------------------------------------------------------------
# The probe protocol
# ---------------------------------------------------------------------------------------------
def test_probe_sets_are_fixed_and_apart_from_the_training_images():
    from imgmdp_env.datasets.splits import load_split

    train, test = probe_sets("scenes", 6, 5, 48)
    again_train, again_test = probe_sets("scenes", 6, 5, 48)
    assert all(np.array_equal(a, b) for a, b in zip(train.images, again_train.images,
                                                    strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(test.images, again_test.images, strict=True))
    seen = {img.tobytes() for seed in (0, 1, 2) for img in
            load_split("scenes", "train", 6, 48, seed).images}  # what training seeds draw
    assert not seen & {img.tobytes() for img in train.images + test.images}
    assert not {i.tobytes() for i in train.images} & {i.tobytes() for i in test.images}


def test_raw_pixels_tokens_are_patches_and_pooled_is_all_of_them():
    raw = RawPixels(grid=8, patch=4)
    views = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    views[0, 1, 16:, :16] = 255  # green bottom-left quarter = patch (1, 0) of the 2x2 grid
    tokens = raw(views)
    assert tokens.shape == (1, 4, 48)
    lit = tokens.view(1, 4, 3, 16).amax(-1)  # (1, patch, channel)
    assert lit[0, 2, 1] == 1 and lit.sum() == 1
    assert raw.pool(tokens).shape == (1, 192)
    with pytest.raises(ValueError, match="divide"):
        RawPixels(grid=10, patch=4)


def test_knn_standardises_so_a_loud_channel_does_not_drown_the_signal():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    loud = 30 * torch.randn(400, 2, generator=g)  # label-free channels, 30x the signal's scale
    x = torch.cat([loud, (y + 0.1 * torch.randn(400, generator=g))[:, None]], 1)
    plain = knn_probe(x[:300], y[:300], x[300:], y[300:], standardise=False)
    assert knn_probe(x[:300], y[:300], x[300:], y[300:]) > 0.85 and plain < 0.7


def test_probe_report_puts_the_twins_mean_and_raw_pixels_beside_the_encoder():
    from agents.evaluate import random_twin
    from agents.method.networks import make_encoder

    train, test = colour_scenes(20, 0), colour_scenes(10, 1)
    enc = make_encoder("cnn", 32, widths=(8, 16))
    rep = probe_report(enc, train, test, view_size=32, n_random=2, probes=("linear", "knn"))
    assert list(rep) == ["trained", "random init", "raw pixels", "majority class"]
    labels = probe_samples(test)[2]
    top = float(torch.bincount(labels).max()) / len(labels)
    assert rep["majority class"] == {"linear": top, "knn": top, "n_test": 20}
    twins = [probe_all(random_twin(enc, s), train, test, view_size=32, probes=("linear", "knn"),
                       seed=0, max_samples=6000) for s in (0, 1)]
    for p in ("linear", "knn"):
        vals = np.array([t[p] for t in twins])
        assert rep["random init"][p] == pytest.approx(vals.mean())
        assert rep["random init"][f"{p}_sd"] == pytest.approx(vals.std(ddof=1))
    assert rep["trained"]["n_test"] == 20  # 2 objects per test image


def test_the_gpu_check_reads_the_value_table_that_evaluate_prints():
    """studies/gpu_value_check.py parses evaluate.py's printed value table: its rows must
    come back as the numbers value_table printed (a renamed row would silently drop)."""
    import importlib

    from agents.evaluate import value_table

    check = importlib.import_module("studies.gpu_value_check")
    bins = ["0.00-0.40", "0.40-1.00"]
    acc = {"chance": 0.1, "majority": 0.2}
    for k, b in enumerate(bins):
        acc.update({f"iou_{b}": 0.3 + k / 10, f"copy_{b}": 0.25 + k / 10,
                    f"permuted_{b}": 0.2 + k / 10, f"count_{b}": 100.0 + k})
    rows = check.parse_value("some line\n" + value_table(acc) + "\nanother")
    assert rows["value function Q_AB"] == [0.3, 0.4]
    assert rows["copy x_i's own annotation"] == [0.25, 0.35]
    assert rows["Q_AB, actions permuted within the bin"] == [0.2, 0.3]
    assert rows["pairs"] == [100.0, 101.0] and rows["bin_hi"] == [0.4, 1.0]
    point = {"name": "ab_s1", "points": [{"step": 10, "value": rows}], "probes": {}}
    assert "| ab_s1 | 10 | 0.300 / 0.250 / 0.200 | 0.400 / 0.350 |" in check.tables([point])


def _rows(trained: float, twins: float, sd: float, raw: float, n: float = 400.0) -> dict:
    return {"trained": {"knn": trained, "n_test": n},
            "random init": {"knn": twins, "knn_sd": sd, "n_test": n},
            "raw pixels": {"knn": raw, "n_test": n},
            "majority class": {"knn": 0.1, "n_test": n}}


def test_probe_verdict_compares_with_the_strongest_baseline_and_its_noise():
    from agents.evaluate import probe_verdict

    # raw pixels is the stronger baseline: 0.60 vs 0.50 is below it, far outside the noise
    (line,) = probe_verdict(_rows(0.50, 0.30, 0.01, 0.60))
    assert "below raw pixels" in line and "-0.100" in line and "majority class 0.100" in line
    (line,) = probe_verdict(_rows(0.70, 0.30, 0.01, 0.60))
    assert "above raw pixels" in line
    # 0.02 above random init, but the twins' own spread (0.03) makes it no difference
    (line,) = probe_verdict(_rows(0.52, 0.50, 0.03, 0.20))
    assert "no different from random init" in line
    # the noise: 2 sqrt(se_a^2 + se_b^2 + sd^2) with se = sqrt(p (1 - p) / n)
    noise = 2 * math.sqrt(0.52 * 0.48 / 400 + 0.5 * 0.5 / 400 + 0.03 ** 2)
    assert f"noise +-{noise:.3f}" in line
    assert probe_verdict({"random init": {"knn": 0.3}}) == []  # no encoder row


def test_run_verdict_names_the_failures_and_the_next_command():
    from agents.evaluate import run_verdict

    value = {"far": 0.20, "far_copy": 0.25, "far_permuted": 0.199, "near": 0.5, "near_copy": 0.6,
             "far_se": 0.01}
    text = run_verdict(value, _rows(0.7, 0.3, 0.01, 0.6), "runs/x")
    assert "is below copying" in text and "above raw pixels" in text
    assert text.splitlines()[-1].startswith("next:") and "--total-steps" in text
    # +0.007 with a paired standard error of 0.004 is inside the noise: level, not a win
    level = dict(value, far=0.257, far_copy=0.25, far_se=0.004)
    assert "is level with copying" in run_verdict(level, {}, None)
    assert "noise +-0.008" in run_verdict(level, {}, None)
    good = dict(value, far=0.4)
    text = run_verdict(good, _rows(0.7, 0.3, 0.01, 0.6), "runs/x")
    assert " beats copying" in text and "scale it up" in text and "runs/x" in text
    assert "not probed" in run_verdict(good, {}, None)
    # a run without a value phase whose Q is not above copy is pointed to one
    text = run_verdict(value, _rows(0.7, 0.3, 0.01, 0.6), "runs/x", value_phase=False)
    assert f"--resume runs/x {LONG_PHASE}" in text.splitlines()[-1]
    assert "--value-steps" not in run_verdict(good, {}, "runs/x", value_phase=False)
    # after a phase, Q above copy but the probes not above their baselines: train longer, and
    # a longer phase is named beside it; a run without a value function gets no such advice
    text = run_verdict(good, _rows(0.2, 0.3, 0.01, 0.6), "runs/x")
    assert "--total-steps" in text and f"--resume runs/x {LONG_PHASE}" in text
    # the phase it names is a valid one (a renamed flag would leave the advice dead)
    from agents.infra.arg_checks import check_train_args
    from agents.infra.config import parse_args

    named = parse_args(LONG_PHASE.split())
    check_train_args(named)
    assert named.value_steps > 0 and named.value_cache > 0
    assert "--value-steps" not in run_verdict(None, _rows(0.2, 0.3, 0.01, 0.6), "runs/x")


# ---------------------------------------------------------------------------------------------
# Issue 23: sizes the probes cannot work with are refused up front, naming the valid range
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, bad, want", [
    ("max_samples", 1, r"--max-samples \(1\) must be an integer >= 2: the probes standardise"),
    ("max_samples", 0, r"--max-samples \(0\) must be an integer >= 2"),
    ("max_samples", 2.5, r"--max-samples \(2\.5\) must be an integer >= 2, not float"),
    ("n_train", 1, r"--n-train \(1\) must be an integer >= 2"),
    ("n_test", 0, r"--n-test \(0\) must be an integer >= 1"),
])
def test_cli_refuses_probe_sizes_outside_their_range(field, bad, want):
    """`evaluate.py --max-samples 1` gave "value cannot be converted to type float without
    overflow" from inside L-BFGS (one sample has no spread to standardise by)."""
    from agents.evaluate import Args as EvalArgs
    from agents.evaluate import _main

    with pytest.raises(SystemExit, match=want):
        _main(EvalArgs(**{field: bad}))


def test_probes_refuse_a_single_train_sample():
    with pytest.raises(ValueError, match=r"at least 2 labelled train samples.*gave 1"):
        probe_all(PatchColourEncoder(), colour_items(1, 0), colour_items(4, 1), view_size=16,
                  max_samples=None)


def test_cli_refuses_a_checkpoint_with_non_finite_weights(tmp_path, make_checkpoint):
    """Issue 23: a checkpoint (valid checksum) holding NaN weights printed probe accuracies."""
    from agents.evaluate import Args as EvalArgs
    from agents.evaluate import _main
    from agents.infra.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
    from agents.method.ab import load_agent, load_encoder

    path = tmp_path / "checkpoint.pt"
    make_checkpoint(path)
    state = read_checkpoint(path)
    name = next(k for k, v in state["agent"].items() if v.is_floating_point() and v.numel())
    state["agent"][name].view(-1)[0] = float("nan")
    write_checkpoint(state, path)
    want = rf"non-finite weights \(NaN or inf\), first in 'agent\.{name}'"
    for load in (load_agent, load_encoder):
        with pytest.raises(CheckpointError, match=want):
            load(path)
    with pytest.raises(SystemExit, match=f"--checkpoint: {path}.*{want}"):
        _main(EvalArgs(checkpoint=tmp_path, threads=1))


def test_clustered_se_counts_images_not_pairs():
    """The noise of Q - copy: with one pair per image it is the plain standard error; when
    every image's pairs repeat one outcome, more pairs per image must not shrink it."""
    from agents.evaluate import _clustered_se

    g = torch.Generator().manual_seed(0)
    d = (torch.rand(200, generator=g) < 0.3).float() - (torch.rand(200, generator=g) < 0.2).float()
    plain = _clustered_se(d, torch.arange(200))
    assert plain == pytest.approx(float(d.std() / math.sqrt(200)), rel=1e-6)
    repeated = _clustered_se(d.repeat_interleave(12), torch.arange(200).repeat_interleave(12))
    assert repeated == pytest.approx(plain, rel=1e-6)
    naive = float(d.repeat_interleave(12).std() / math.sqrt(2400))
    assert repeated > 3 * naive
