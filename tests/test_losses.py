"""agents.method.losses against hand-written loop references (float64 Python math)."""

import math

import pytest
import torch

from agents.method.losses import (
    bootstrap_loss,
    bootstrap_target,
    clip_loss,
    dino_loss,
    dino_teacher_probs,
    nt_xent_loss,
    soft_cross_entropy,
    update_center,
)


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [x / sum(e) for x in e]


def _log_softmax(xs):
    m = max(xs)
    lse = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - lse for x in xs]


def test_nt_xent_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    t = 3.0
    z = [_unit(r) for r in torch.cat([z1, z2]).tolist()]
    n, total = 5, 0.0
    for k in range(2 * n):
        partner = (k + n) % (2 * n)
        logits = {m: t * _dot(z[k], z[m]) for m in range(2 * n) if m != k}
        lse = math.log(sum(math.exp(v) for v in logits.values()))
        total += lse - logits[partner]
    assert nt_xent_loss(z1, z2, t).item() == pytest.approx(total / (2 * n), rel=1e-5)


def test_clip_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    t = 5.0
    a, b = [_unit(r) for r in img.tolist()], [_unit(r) for r in txt.tolist()]
    i2t = sum(-_log_softmax([t * _dot(a[i], b[j]) for j in range(6)])[i] for i in range(6)) / 6
    t2i = sum(-_log_softmax([t * _dot(a[i], b[j]) for i in range(6)])[j] for j in range(6)) / 6
    assert clip_loss(img, txt, t).item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_dino_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(2)
    v, b, k = 3, 4, 6
    student, teacher = torch.randn(v, b, k, generator=g), torch.randn(v, b, k, generator=g)
    center = torch.randn(k, generator=g) * 0.1
    ts, tt = 0.1, 0.04
    terms = []
    for a in range(v):
        for s in range(v):
            if a == s:
                continue
            for i in range(b):
                p = _softmax([(teacher[a, i, c].item() - center[c].item()) / tt for c in range(k)])
                log_q = _log_softmax([student[s, i, c].item() / ts for c in range(k)])
                terms.append(-sum(p[c] * log_q[c] for c in range(k)))
    got = dino_loss(student, teacher, center, ts, tt).item()
    assert got == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    probs = dino_teacher_probs(teacher, center, tt)
    assert torch.allclose(probs.sum(-1), torch.ones(v, b))


def test_update_center_is_an_ema_of_the_batch_mean():
    center = torch.tensor([1.0, -1.0])
    teacher = torch.tensor([[[0.0, 2.0], [2.0, 0.0]]])
    new = update_center(center, teacher, 0.9)
    assert new.tolist() == pytest.approx([0.9 + 0.1 * 1.0, -0.9 + 0.1 * 1.0])
    assert center.tolist() == [1.0, -1.0]


def test_soft_cross_entropy_matches_loop_and_hard_labels():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, generator=g)
    target = torch.softmax(torch.randn(4, 5, generator=g), -1)
    ref = sum(-_dot(target[r].tolist(), _log_softmax(logits[r].tolist())) for r in range(4)) / 4
    assert soft_cross_entropy(target, logits).item() == pytest.approx(ref, rel=1e-5)
    labels = torch.tensor([0, 3, 1, 4])
    hard = torch.nn.functional.one_hot(labels, 5).float()
    assert soft_cross_entropy(hard, logits).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


def _target_reference(p_logits, q_logits, gamma, mode):
    out = []
    for m in range(p_logits.shape[0]):
        p = _softmax(p_logits[m].tolist())
        qs = [_softmax(q_logits[m, c].tolist()) for c in range(q_logits.shape[1])]
        if mode == "annotation":
            q = [max(q[l] for q in qs) for l in range(len(p))]  # noqa: E741
            q = [x / sum(q) for x in q]
        else:
            q = max(qs, key=max)
        out.append([(1 - gamma) * a + gamma * b for a, b in zip(p, q, strict=True)])
    return out


@pytest.mark.parametrize("mode", ["annotation", "scalar"])
def test_bootstrap_target_matches_loop_reference(mode):
    g = torch.Generator().manual_seed(4)
    p_logits, q_logits = torch.randn(5, 6, generator=g), torch.randn(5, 3, 6, generator=g) * 2
    got = bootstrap_target(p_logits, q_logits, 0.7, mode)
    ref = _target_reference(p_logits, q_logits, 0.7, mode)
    assert got.tolist() == [pytest.approx(r, rel=1e-5) for r in ref]
    assert torch.allclose(got.sum(-1), torch.ones(5))


def test_bootstrap_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(5)
    pred, p_logits = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    q_logits = torch.randn(4, 3, 6, generator=g)
    ref = _target_reference(p_logits, q_logits, 0.5, "annotation")
    want = sum(-_dot(ref[r], _log_softmax(pred[r].tolist())) for r in range(4)) / 4
    got = bootstrap_loss(pred, p_logits, q_logits, 0.5).item()
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("mode", ["annotation", "scalar"])
def test_gamma_zero_is_exactly_the_earlier_loss(mode):
    """With gamma = 0 the loss is the earlier version's soft-label cross-entropy between
    softmax(target logits) and the prediction, bit for bit, whatever the candidates say."""
    g = torch.Generator().manual_seed(6)
    pred = torch.randn(8, 10, generator=g, requires_grad=True)
    p_logits, q_logits = torch.randn(8, 10, generator=g), torch.randn(8, 3, 10, generator=g) * 5
    ours = bootstrap_loss(pred, p_logits, q_logits, 0.0, mode)
    earlier = soft_cross_entropy(torch.softmax(p_logits, -1), pred)
    assert torch.equal(ours, earlier)
    assert torch.equal(bootstrap_target(p_logits, q_logits, 0.0, mode), torch.softmax(p_logits, -1))
    g1 = torch.autograd.grad(ours, pred)[0]
    g2 = torch.autograd.grad(earlier, pred)[0]
    assert torch.equal(g1, g2)
    # and gamma > 0 does change it (the test above could not pass by ignoring q)
    assert not torch.allclose(bootstrap_loss(pred, p_logits, q_logits, 0.5, mode), earlier)


def test_bootstrap_target_validates_arguments():
    p, q = torch.zeros(2, 3), torch.zeros(2, 1, 3)
    with pytest.raises(ValueError, match="gamma"):
        bootstrap_target(p, q, 1.0)
    with pytest.raises(ValueError, match="max_mode"):
        bootstrap_target(p, q, 0.5, "mean")
    with pytest.raises(ValueError, match="differ"):
        soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
