"""The cheap variant: bootstrap pairs drawn from the base batch's own crops (boot_source="base")."""

import pytest
import torch

from agents.infra.arg_checks import check_train_args
from agents.method.ab import ABAgent, ABConfig
from agents.method.data import TransitionSampler
from agents.method.networks import make_encoder
from agents.train_value import parse_args
from imgmdp_env.datasets import make_dataset
from imgmdp_env.views import apply_relative, render_views

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ds():
    return make_dataset("scenes", n=16, size=48, seed=0)


def sampler(ds, base="simclr", **kw):
    return TransitionSampler(ds, base=base, view_size=32, base_batch=8, boot_images=4,
                             n_views=2, boot_source="base", seed=3, **kw)


def test_pairs_are_the_base_crops_and_actions_their_relative_boxes(ds):
    s = sampler(ds, color_jitter=0.0)  # only flips and grayscale: a crop's mirror is testable
    batch = s.sample()
    assert batch.boot_from_base and s.views_per_step(True) == s.views_per_step(False) == 16
    for b in range(4):
        for c in range(2):
            assert torch.equal(batch.boot_views[2 * b + c], batch.base_views[c, b])
    gray = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    boxes = batch.boot_boxes  # (4, 2, 4)
    flips = []
    for b in range(4):
        for c in range(2):
            plain = render_views(ds.bank(), batch.boot_index[b:b + 1], boxes[b, c][None], 32)
            view = batch.boot_views[2 * b + c][None].float()
            lum = lambda x: (x.float() * gray).sum(1)  # noqa: E731 - grayscale is allowed
            err = [(lum(plain) - lum(view)).abs().mean(), (lum(plain.flip(-1)) - lum(view))
                   .abs().mean()]
            flips.append(bool(err[1] < err[0]))
    assert any(flips) and not all(flips)  # the seed gives both kinds
    for m in range(8):
        b, c = divmod(m, 2)
        a = batch.actions[m, 0].clone()
        if flips[m]:  # the action is in the displayed (mirrored) frame of the source view
            a[0] = -a[0]
        assert torch.allclose(apply_relative(boxes[b, c], a), boxes[b, 1 - c], atol=1e-5)


@pytest.mark.parametrize("base", ["simclr", "dino"])
def test_encode_reuses_the_base_crops_exactly(ds, base):
    torch.manual_seed(0)
    agent = ABAgent(make_encoder("cnn", 32), ABConfig(base=base, ann_batch=6))
    batch = sampler(ds, base).sample()
    enc = agent.encode(batch)
    # the same tokens as encoding the pair views themselves, online and target
    assert torch.allclose(enc.boot_tokens, agent.online.encoder(batch.boot_views), atol=1e-5)
    with torch.no_grad():
        ema = agent.target.encoder(batch.boot_views)
    assert torch.allclose(enc.ema_boot_tokens, ema, atol=1e-5)
    if base == "simclr":  # the annotations stay crop 0 of the first ann_batch images
        with torch.no_grad():
            ann = agent.target.encoder.pool(agent.target.encoder(batch.base_views[0, :6]))
        assert torch.allclose(enc.ema_ann_pooled, ann, atol=1e-5)
    loss, metrics = agent.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and "ab_loss" in metrics
    grads = [p.grad for p in agent.online.decoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("flags", [["--base", "clip"], ["--n-views", "4"],
                                   ["--boot-images", "99"], ["--boot-color-jitter", "0.5"]])
def test_refused_where_the_variant_cannot_form_pairs(flags):
    base = ["--boot-source", "base", "--n-views", "2", "--boot-images", "8"]
    with pytest.raises(SystemExit, match="boot-source"):
        check_train_args(parse_args(base + flags))
    check_train_args(parse_args(base))  # the valid combination passes
