"""The AB agent and its data: EMA target, losses on real batches, diagnostics, loading."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.evaluate import value_accuracy_by_iou
from agents.infra.train_utils import atomic_save, cosine_schedule, ema_rates
from agents.method.ab import (
    ABAgent,
    ABConfig,
    ema_update,
    load_agent,
    load_encoder,
)
from agents.method.data import TransitionSampler, pair_index, simclr_augment
from agents.method.networks import make_encoder
from agents.method.text import WordTokenizer
from imgmdp_env.datasets import ImageDataset
from imgmdp_env.views import apply_relative

VIEW = 32


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(12)]
    words = ["red circle", "blue square", "green ring", "white star"]
    caps = [f"a {words[i % 4]} and a {words[(i // 4) % 4]}" for i in range(12)]
    return ImageDataset(images=images, captions=caps, name="tiny")


def make(dataset, base="simclr", **cfg):
    torch.manual_seed(0)
    tok = WordTokenizer.from_captions(dataset.captions) if base == "clip" else None
    cfg = ABConfig(base=base, ann_batch=4, proj_dim=16, proj_hidden=32, decoder_width=16,
                   decoder_depth=1, decoder_heads=2, n_prototypes=16, text_width=16,
                   text_depth=1, **cfg)
    agent = ABAgent(make_encoder("cnn", VIEW, widths=(8, 16)), cfg, tokenizer=tok)
    sampler = TransitionSampler(dataset, base=base, view_size=VIEW, base_batch=8, boot_images=2,
                                n_views=3, candidates=cfg.candidates,
                                caption_inputs=tok(dataset.captions) if tok else None)
    return agent, sampler


def test_sampler_batch_is_the_environment_dynamics(dataset):
    _, sampler = make(dataset)
    b = sampler.sample()
    assert b.base_views.shape == (2, 8, 3, VIEW, VIEW)
    assert b.base_views.dtype == torch.uint8  # one dtype for every view (the encoder's)
    assert b.boot_views.shape == (6, 3, VIEW, VIEW) and b.boot_views.dtype == torch.uint8
    boxes, actions = b.boot_boxes, b.actions.view(2, 3, 2, 4)
    # the action from view i to its s-th other view lands exactly on that view's box
    others = pair_index(3)
    reached = apply_relative(boxes[:, :, None], actions)
    assert torch.allclose(reached, boxes[:, others], atol=1e-5)
    assert sampler.views_per_step() == 16 + 6
    assert not sampler.sample(bootstrap=False).bootstrap


def test_base_batches_do_not_depend_on_bootstrapping(dataset):
    _, s1 = make(dataset)
    _, s2 = make(dataset)
    a = [s1.sample(bootstrap=True).base_views for _ in range(2)]
    b = [s2.sample(bootstrap=False).base_views for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_simclr_augment_is_seeded_and_in_range():
    views = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    x = simclr_augment(views, torch.Generator().manual_seed(0))
    y = simclr_augment(views, torch.Generator().manual_seed(0))
    assert torch.equal(x, y) and x.shape == views.shape and x.dtype == torch.uint8
    none = simclr_augment(views, torch.Generator().manual_seed(0), jitter=0, hue=0, p_gray=0)
    flipped = (none != views).flatten(1).any(1)
    assert torch.equal(none[flipped], views.flip(-1)[flipped])  # the identity or a flip, exactly
    assert torch.equal(none[~flipped], views[~flipped])


def test_ema_update():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, 0.25)
    for t, before, o in zip(target.parameters(), t0, online.parameters(), strict=True):
        assert torch.allclose(t, 0.75 * before + 0.25 * o)
    ema_update(target, online, 1.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters(),
                                                 strict=True))


def test_cosine_schedule():
    s = cosine_schedule(1.0, 0.1, 10, warmup_steps=2)
    assert len(s) == 10 and s[0] == 0.0 and s[2] == 1.0
    assert s[-1] == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 7 / 8)))
    assert np.all(np.diff(s[2:]) < 0)


@pytest.mark.parametrize("base", ["simclr", "clip", "dino"])
def test_target_gets_no_gradient_and_follows_the_ema(dataset, base):
    agent, sampler = make(dataset, base=base)
    loss, metrics = agent.loss(sampler.sample())
    assert {"loss", "base_loss", "ab_loss", "t", "t_ab", "value_acc"} <= set(metrics)
    assert metrics["loss"] == pytest.approx(metrics["base_loss"] + metrics["ab_loss"], rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in agent.target.parameters())
    assert agent.online.decoder.token_embed.weight.grad.abs().sum() > 0
    before = [p.detach().clone() for p in agent.target.parameters()]
    with torch.no_grad():
        for p in agent.online.parameters():
            p.add_(1.0)
    agent.update_target(0.5)
    for b, t, o in zip(before, agent.target.parameters(), agent.online.parameters(),
                       strict=True):
        assert torch.allclose(t, 0.5 * b + 0.5 * o, atol=1e-6)


@pytest.mark.parametrize("base", ["simclr", "clip", "dino"])
def test_every_encoder_pass_of_a_step_gets_uint8_views(dataset, base):
    """Base crops (augmented) and bootstrap views reach the online and the target encoder in
    the one input dtype, so a joint pass never promotes one part to another scale."""
    agent, sampler = make(dataset, base=base)
    seen = []
    for enc in (agent.online.encoder, agent.target.encoder):
        enc.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    agent.loss(sampler.sample())
    assert len(seen) >= 2 and all(d == torch.uint8 for d in seen), seen


@pytest.mark.parametrize("base,cand,mode", [("simclr", "views", "annotation"),
                                            ("dino", "random", "scalar"),
                                            ("clip", "views", "annotation")])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(dataset, base, cand, mode):
    agent, sampler = make(dataset, base=base, candidates=cand, max_mode=mode)
    batch = sampler.sample()
    opt = torch.optim.Adam(agent.online.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss, m = agent.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        agent.update_target(0.004)
        losses.append(m["loss"])
    assert losses[-1] < losses[0] - 0.05, losses


def test_ab_weight_zero_is_the_base_method(dataset):
    agent, sampler = make(dataset, ab_weight=0.0)
    loss, metrics = agent.loss(sampler.sample())
    assert "ab_loss" not in metrics and loss.item() == pytest.approx(metrics["base_loss"])
    loss.backward()
    assert agent.online.decoder.token_embed.weight.grad is None


def test_value_and_value_accuracy(dataset):
    agent, sampler = make(dataset)
    b = sampler.sample()
    q = agent.value(b.boot_views[:2], b.actions[:2], b.base_views[0, :5])
    assert q.shape == (2, 2, 5) and torch.allclose(q.sum(-1), torch.ones(2, 2))
    acc = value_accuracy_by_iou(agent, sampler, bins=(0.0, 0.3, 1.0), n_batches=3)
    counts = acc["count_0.00-0.30"] + acc["count_0.30-1.00"]
    assert counts == 3 * 2 * 3 * 2  # batches x images x ordered pairs
    assert 0 <= acc["all"] <= 1 and acc["chance"] == pytest.approx(1 / 4)
    from_dataset = value_accuracy_by_iou(agent, dataset, bins=(0.0, 1.0), n_batches=2)
    assert from_dataset["count_0.00-1.00"] == 2 * 1 * 4 * 3  # 2 batches of 1 image x 4 views
    # the sampler's streams are restored: it goes on as if the diagnostic had not run
    twin = make(dataset)[1]
    twin.sample()
    assert torch.equal(sampler.sample().boot_views, twin.sample().boot_views)


def test_load_encoder_and_agent_round_trip(dataset, tmp_path):
    agent, sampler = make(dataset, base="clip")
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"encoder": agent.encoder.config, "ab_config": vars(agent.cfg),
                 "tokenizer": agent.tokenizer.state_dict(), "agent": agent.state_dict()}, path)
    views = sampler.sample().boot_views
    enc = load_encoder(path)
    assert not enc.training
    assert torch.allclose(enc(views), agent.encoder(views), atol=1e-6)
    assert torch.allclose(load_encoder(path, ema=True)(views), agent.target.encoder(views))
    assert torch.allclose(load_encoder(tmp_path)(views), enc(views))  # the run folder works too
    again = load_agent(path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 agent.state_dict().values(), strict=True))


@pytest.mark.parametrize("base", ["simclr", "dino"])
def test_the_diagnostic_and_the_training_loss_score_the_same_pairs(dataset, base):
    """value_accuracy_by_iou runs the loss's own path (encode, bootstrap_logits): on one batch
    its overall accuracy is the loss's value_acc metric."""
    agent, sampler = make(dataset, base=base)
    batch = sampler.sample()
    agent.eval()
    _, metrics = agent.loss(batch)
    acc = value_accuracy_by_iou(agent, batch, bins=(0.0, 1.0))
    assert acc["all"] == pytest.approx(metrics["value_acc"])
    assert acc["count_0.00-1.00"] == 2 * 3 * 2


def test_ema_rate_auto_ties_the_time_constant_to_the_run():
    assert np.all(ema_rates(0.0, "constant", 1200) == 40 / 1200)  # 30-step time constant
    assert np.all(ema_rates(0.0, "constant", 100_000) == 0.004)  # long runs: the paper's rate
    cos = ema_rates(0.02, "cosine", 50)
    assert cos[0] == 0.02 and cos[-1] < 1e-4 and np.all(np.diff(cos) <= 0)
    assert np.all(ema_rates(1.0, "cosine", 10) == 1.0)  # no EMA stays no EMA


def test_copy_baseline_is_exact_when_target_and_source_views_are_the_same(dataset):
    """With every view of an image the same view (IoU 1), answering the source view's own
    annotation is always right; a value function that ignores the action can reach that."""
    from dataclasses import replace as dc_replace

    from imgmdp_env.views import relative_box

    agent, sampler = make(dataset)
    b = sampler.sample()
    n = b.boot_boxes.shape[1]
    first = torch.arange(0, len(b.boot_views), n).repeat_interleave(n)
    boxes = b.boot_boxes[:, :1].expand_as(b.boot_boxes).contiguous()
    same = dc_replace(b, boot_views=b.boot_views[first], boot_boxes=boxes,
                      actions=relative_box(boxes.view(-1, 1, 4), boxes.view(-1, 1, 4)).expand(
                          -1, n - 1, -1).contiguous())
    acc = value_accuracy_by_iou(agent, same, bins=(0.0, 0.99, 1.0))
    assert acc["count_0.99-1.00"] == len(b.boot_views) * (n - 1)
    assert acc["copy_0.99-1.00"] == 1.0


@pytest.mark.parametrize("base", ["simclr", "clip", "dino"])
def test_emb_cos_is_the_mean_cosine_between_images_and_one_when_collapsed(dataset, base):
    agent, sampler = make(dataset, base=base)
    batch = sampler.sample()
    _, metrics = agent.loss(batch)
    net = agent.online
    with torch.no_grad():
        z = net.phi(net.encoder.pool(net.encoder(batch.base_views[0])))
        cos = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(z, dim=-1).T
        b = len(z)
        expected = cos[~torch.eye(b, dtype=torch.bool)].mean().item()
    assert metrics["emb_cos"] == pytest.approx(expected, abs=1e-5)
    assert metrics["emb_cos"] < 0.999  # distinct images, random weights: not one point
    with torch.no_grad():  # a head that maps every image to the same vector: collapsed
        last = net.phi.net[-1]
        last.weight.zero_()
        last.bias.fill_(0.5)
    _, metrics = agent.loss(batch)
    assert metrics["emb_cos"] == pytest.approx(1.0, abs=1e-5)


def test_head_norm_batch_puts_batch_norm_in_phi_of_both_networks(dataset):
    agent, sampler = make(dataset, base="dino", head_norm="batch")
    for net in (agent.online, agent.target):
        assert isinstance(net.phi.net[1], torch.nn.BatchNorm1d)
        assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.phi_ab.modules())
    loss, metrics = agent.loss(sampler.sample())
    loss.backward()
    assert np.isfinite(metrics["loss"]) and agent.online.phi.net[1].weight.grad.abs().sum() > 0
    assert agent.target.phi.net[1].num_batches_tracked > 0  # the teacher ran on batch statistics


def _ab_gradients(*names):
    """Functions of ``studies/ab_gradients.py`` (a study, outside the installed package)."""
    import importlib

    module = importlib.import_module("studies.ab_gradients")
    return [getattr(module, n) for n in names]


@pytest.mark.parametrize("base", ["simclr", "dino"])
def test_gradient_diagnostic_splits_the_encoder_gradient_by_loss(dataset, base):
    """studies/ab_gradients.py: at weight 0 the gradient is the base loss's alone, the
    bootstrapping part scales with the weight, and measuring leaves the agent as it was."""
    encoder_grad, gradient_stats = _ab_gradients("encoder_grad", "gradient_stats")

    agent, sampler = make(dataset, base)
    batch = sampler.sample()
    agent.center.fill_(0.25)
    cfg, center = agent.cfg, agent.center.clone()
    base_loss, _, _ = agent.base_loss(batch, agent.encode(batch, bootstrap=False))
    direct = torch.autograd.grad(base_loss, list(agent.encoder.parameters()))
    g0 = encoder_grad(agent, batch, 0.0)
    assert torch.allclose(g0, torch.cat([g.flatten() for g in direct]), atol=1e-6)
    g1, g3 = (encoder_grad(agent, batch, w) - g0 for w in (1.0, 3.0))
    assert g1.norm() > 1e-3 * g0.norm()  # the bootstrapping loss reaches the encoder
    assert torch.allclose(g3, 3 * g1, rtol=1e-3, atol=1e-6)
    assert agent.cfg is cfg and torch.equal(agent.center, center)
    stats = gradient_stats(agent, [batch, batch])  # the same batch twice: no spread
    ratio, cos = stats["|g_ab| / |g_base|"], stats["cos"]
    assert ratio[0] == pytest.approx((g1.norm() / g0.norm()).item(), rel=1e-4)
    assert cos[0] == pytest.approx(torch.cosine_similarity(g1, g0, dim=0).item(), abs=1e-4)
    assert ratio[1] < 1e-6 and stats["cos of means"][0] == pytest.approx(cos[0], abs=1e-4)


def test_gradient_diagnostic_adam_denominator_after_one_step(dataset):
    """After one AdamW step v_hat = g^2, so the denominator is |g| + eps, coordinate by
    coordinate, in encoder_grad's order."""
    adam_denominator, encoder_grad = _ab_gradients("adam_denominator", "encoder_grad")

    from agents.infra.config import Args
    from agents.infra.train_utils import make_optimizer

    agent, sampler = make(dataset)
    batch = sampler.sample()
    g = encoder_grad(agent, batch, 1.0)
    optimizer, _ = make_optimizer(Args(), agent, None)
    loss, _ = agent.loss(batch)
    loss.backward()
    optimizer.step()
    denom = adam_denominator(Args(), agent, optimizer.state_dict())
    assert denom.shape == g.shape
    assert torch.allclose(denom, g.abs() + optimizer.defaults["eps"], rtol=1e-4, atol=1e-9)


def test_action_sensitivity_diagnostic(dataset):
    """The permuted-action accuracy is reported per bin; a value function that ignores the
    action (no action tokens) scores exactly the same with permuted actions, and the loss's
    training gauges (copy, actions moved to other pairs) are logged."""
    agent, sampler = make(dataset)
    acc = value_accuracy_by_iou(agent, sampler, bins=(0.0, 0.3, 1.0), n_batches=2)
    assert {"permuted_0.00-0.30", "permuted_0.30-1.00"} <= set(acc)
    assert all(np.isfinite(acc[k]) for k in ("permuted", "copy", "kl", "kl_permuted"))
    assert 0 <= acc["permuted"] <= 1 and acc["kl"] >= 0
    blind = make(dataset, action_tokens=False)[0]
    acc = value_accuracy_by_iou(blind, sampler, bins=(0.0, 0.3, 1.0), n_batches=2)
    assert acc["permuted"] == acc["all"] and acc["kl_permuted"] == pytest.approx(acc["kl"])
    _, metrics = agent.loss(sampler.sample())
    assert {"copy_acc", "value_acc_permuted"} <= set(metrics)


def test_permute_within_moves_items_only_inside_their_group():
    from agents.evaluate import permute_within

    groups = torch.tensor([0, 1, 0, 2, 1, 0, 0])
    perm = permute_within(groups, torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(7))
    assert torch.equal(groups[perm], groups)


@pytest.mark.parametrize("mode", ["copy", "gated"])
def test_value_residual_adds_the_source_views_own_logits(dataset, mode):
    """value_residual='copy' / 'gated' add the source view's base logits p(. | x_i) to the
    decoder's (the gate is 1 at the start): with t_AB near 0 the decoder's term vanishes and
    Q_AB is p(. | x_i) for every action; the decoder learns from the first step, and the
    bootstrapping loss reaches the encoder through it."""
    agent, sampler = make(dataset, value_residual=mode)
    batch = sampler.sample()
    enc = agent.encode(batch)
    net = agent.online
    psi, _ = net.annotations(net.encoder.pool(enc.base_tokens[:4]))
    base = net.base_logits(net.encoder.pool(enc.boot_tokens), psi)
    with torch.no_grad():
        net.ab_scale.log_scale.fill_(-30.0)
    pred = agent.online_q(batch, enc)
    assert torch.allclose(pred, base[:, None].expand_as(pred), atol=1e-4)
    with torch.no_grad():
        net.ab_scale.log_scale.fill_(2.0)
    agent.loss(batch)[0].backward()
    assert net.decoder.token_embed.weight.grad.abs().sum() > 0


def test_boot_annotated_draws_the_bootstrap_images_from_the_annotated_base_images(dataset):
    agent, _ = make(dataset)
    sampler = TransitionSampler(dataset, view_size=VIEW, base_batch=8, boot_images=2, n_views=3,
                                boot_annotated=True)
    b = sampler.sample()
    assert torch.equal(b.boot_index, b.base_index[:2])  # among the first ann_batch = 4 images
    loss, _ = agent.loss(b)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="boot_annotated"):
        TransitionSampler(dataset, view_size=VIEW, base_batch=8, boot_images=2, n_views=2,
                          boot_source="base", boot_annotated=True)


def test_exclude_return_drops_exactly_the_return_box(dataset):
    """With exclude_return, the candidates of pair (i, j) are the boxes from x_j to every view
    but x_i and x_j: n - 2 of them, the return box a_j->i left out."""
    agent, sampler = make(dataset, gamma=0.5, exclude_return=True)
    batch = sampler.sample()
    n = batch.boot_boxes.shape[1]
    _, _, q_logits, j = agent.bootstrap_logits(batch, agent.encode(batch))
    # tag every candidate with the view it points to: q_logits[v, s, 0] = others[v % n, s]
    others = pair_index(n)
    tags = others.repeat(len(q_logits) // n, 1).float()
    tagged = q_logits.clone()
    tagged[..., 0] = tags
    kept = agent.pair_candidates(tagged, j)[..., 0]  # (M (n - 1), n - 2)
    assert kept.shape == (len(j) * (n - 1), n - 2)
    src = torch.arange(len(j)).repeat_interleave(n - 1) % n  # each pair's source view i
    dst = others[src, torch.arange(n - 1).repeat(len(j))]  # and its target view j
    assert not (kept == src[:, None].float()).any()  # never the return box
    assert not (kept == dst[:, None].float()).any()
    agent.cfg.exclude_return = False
    assert agent.pair_candidates(tagged, j).shape[1] == n - 1


def test_decoder_geometry_window_pools_the_tokens_under_the_box():
    """The geometry prior's window: a box over one token of the 4x4 grid pools mostly that
    token, the whole view pools every token, and the decoder runs with it."""
    from agents.method.networks import AnnotationDecoder

    dec = AnnotationDecoder(8, 16, width=16, depth=1, heads=2, geometry=True)
    memory = torch.eye(16)[None].expand(1, 16, 16)  # token t is the one-hot e_t
    # token (row 1, col 2): centre x = 2.5 / 4 - 0.5 = 0.125, y = 1.5 / 4 - 0.5 = -0.125
    one = torch.tensor([[[0.125, -0.125, 0.05, 0.05]]])
    w = dec.box_window(memory, one)[0, 0]
    assert w.argmax() == 1 * 4 + 2 and w[1 * 4 + 2] > 0.5  # the nearest neighbours: the rest
    whole = dec.box_window(memory, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))[0, 0]
    assert whole.min() > 0.3 / 16 and torch.allclose(whole.sum(), torch.tensor(1.0))
    out = dec(torch.randn(2, 16, 8), torch.rand(2, 3, 4) + 0.1)
    assert out.shape == (2, 3, 16)


def test_value_mixture_is_a_distribution_between_copy_and_the_decoder(dataset):
    """value_residual='mixture': Q = w p(. | x_i) + (1 - w) Q_dec with w = 1/2 at the start;
    its logits are log-probabilities (they sum to 1 in probability), and every probability
    lies between the copy expert's and the decoder's."""
    agent, sampler = make(dataset, value_residual="mixture")
    batch = sampler.sample()
    enc = agent.encode(batch)
    q = agent.online_q(batch, enc).exp()
    assert torch.allclose(q.sum(-1), torch.ones(q.shape[:2]), atol=1e-5)
    net = agent.online
    psi, psi_ab = net.annotations(net.encoder.pool(enc.base_tokens[:4]))
    copy = net.base_logits(net.encoder.pool(enc.boot_tokens), psi).softmax(-1)[:, None]
    dec = (net.ab_scale() * F.normalize(net.phi_ab(net.decoder(enc.boot_tokens, batch.actions)),
                                        dim=-1) @ psi_ab.T).softmax(-1)
    assert torch.allclose(q, 0.5 * copy + 0.5 * dec, atol=1e-5)


def test_a_checkpoint_saved_before_the_value_head_options_loads_as_it_ran(dataset, tmp_path):
    """A checkpoint whose ab_config predates value_residual / decoder_geometry (the paper's
    head) loads as that head, not as today's default (whose weights would not even fit)."""
    agent, sampler = make(dataset, value_residual="none", decoder_geometry=False)
    old = {k: v for k, v in vars(agent.cfg).items()
           if k not in ("value_residual", "decoder_geometry", "exclude_return", "boot_annotated")}
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"encoder": agent.encoder.config, "ab_config": old,
                 "agent": agent.state_dict()}, path)
    again = load_agent(path)
    assert again.cfg.residual == "none" and not again.cfg.decoder_geometry
    b = sampler.sample()
    q = again.value(b.boot_views[:2], b.actions[:2], b.base_views[0, :4])
    assert torch.allclose(q, agent.value(b.boot_views[:2], b.actions[:2], b.base_views[0, :4]))


def test_a_checkpoint_whose_encoder_config_says_image_size_loads_the_same_encoder(dataset,
                                                                                tmp_path):
    """A checkpoint written before the rename stores its encoder as ``{"kind": ...,
    "image_size": ...}``: load_agent and load_encoder build the same encoder from it (read as
    ``view_size``, agents.method.encoders.upgrade_encoder_config), and so does random_twin of an
    encoder that still carries such a config."""
    from agents.evaluate import random_twin
    from agents.method.encoders import upgrade_encoder_config

    agent, sampler = make(dataset)
    new = dict(agent.encoder.config)
    old = {("image_size" if k == "view_size" else k): v for k, v in new.items()}
    assert "image_size" in old and "view_size" not in old
    assert upgrade_encoder_config(old) == new and upgrade_encoder_config(new) == new
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"encoder": old, "ab_config": vars(agent.cfg), "agent": agent.state_dict()},
                path)
    views = sampler.sample().boot_views
    enc = load_encoder(path)
    assert enc.config == new and enc.view_size == agent.encoder.view_size
    assert torch.allclose(enc(views), agent.encoder(views), atol=1e-6)
    again = load_agent(path)
    assert again.encoder.config == new
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 agent.state_dict().values(), strict=True))
    legacy = make_encoder(**new)
    legacy.config = old
    assert random_twin(legacy).config == new
    assert all(torch.equal(a, b) for a, b in zip(random_twin(legacy).state_dict().values(),
                                                 random_twin(enc).state_dict().values(),
                                                 strict=True))
    with pytest.raises(TypeError, match=r"view_size now, not image_size.*view_size=64"):
        make_encoder("cnn", image_size=64)


def test_value_input_chooses_the_tokens_the_decoder_reads(dataset):
    """--value-input: online tokens with gradients (the paper), the same tokens detached (no
    gradient into the encoder through the decoder), or the target's tokens (the online encoder
    then skips the bootstrap views)."""
    grads = {}
    for mode in ("online", "detached"):
        agent, sampler = make(dataset, value_input=mode)
        batch = sampler.sample()
        enc = agent.encode(batch)
        q = agent.online_q(batch, enc)
        grads[mode] = torch.autograd.grad(q.float().square().sum(), enc.boot_tokens,
                                          allow_unused=True)[0]
    assert grads["online"] is not None and grads["online"].abs().sum() > 0
    assert grads["detached"] is None
    agent, sampler = make(dataset, value_input="ema")
    batch = sampler.sample()
    enc = agent.encode(batch)
    assert enc.boot_tokens is None and enc.ema_boot_tokens is not None
    src = agent.online.encoder.pool(enc.base_tokens[:4])
    psi, psi_ab = agent.online.annotations(src)
    want = agent.online.q_logits(enc.ema_boot_tokens, batch.actions, psi, psi_ab, agent.center)
    assert torch.equal(agent.online_q(batch, enc), want)
    loss, _ = agent.loss(batch)  # the whole step runs without the online bootstrap views
    assert torch.isfinite(loss)


@pytest.mark.parametrize("base", ["simclr", "clip"])
def test_batches_rendered_by_the_portable_path_are_the_cpu_kernels(dataset, base, monkeypatch):
    """--render-on device: on a GPU the sampler renders with the portable torch path; on the
    CPU the same path (numba switched off) gives the same batch, field by field, bit for bit,
    and leaves the random streams where the kernel leaves them."""
    import imgmdp_env.views as views

    _, kernel = make(dataset, base)
    _, portable = make(dataset, base)
    want = kernel.sample()
    monkeypatch.setattr(views, "_bilinear_u8", None)
    got = portable.sample()
    for field in ("base_views", "boot_views", "actions", "boot_boxes", "base_index"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    assert torch.equal(portable.base_gen.get_state(), kernel.base_gen.get_state())
    assert torch.equal(portable.boot_gen.get_state(), kernel.boot_gen.get_state())


def test_the_sampler_renders_where_its_banks_are(dataset):
    """render_device: the banks are taken from the datasets again by refresh_banks (a stream's
    new buffer); on the CPU they are the datasets' own banks, not copies."""
    _, sampler = make(dataset)
    assert sampler.render_device == torch.device("cpu")
    assert sampler.base_bank is dataset.bank() and sampler.boot_bank is dataset.bank()
    sampler.refresh_banks()
    assert sampler.base_bank is dataset.bank()
