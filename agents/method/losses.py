"""Loss functions of the AB agent: base annotation losses and the bootstrapping target.

Pure functions of tensors (no modules, no state), each tested against a loop-based reference
in ``tests/test_losses.py``.

Base losses define ``p(l | x) = softmax_l(t * phi(x) . psi(l))`` over a batch of annotations:

- :func:`nt_xent_loss`: SimCLR (Chen et al. 2020, eq. 1), annotations = the other crops.
- :func:`clip_loss`: CLIP (Radford et al. 2021), symmetric InfoNCE between images and captions.
- :func:`dino_loss`: DINO (Caron et al. 2021), cross-entropy between the teacher's centred,
  sharpened distribution over prototypes and the student's, across views.

Bootstrapping (Ghosh & Levine 2025, Sec. 3): for an ordered pair of views ``(x_i, x_j)`` of one
image with relative box ``a_ij``::

    target(l) = (1 - gamma) p_ema(l | x_j) + gamma max_{a'} Q_ema(l | x_j, a')
    loss      = CE(target, Q_AB(. | x_i, a_ij))

:func:`bootstrap_target` builds the target, :func:`soft_cross_entropy` is the divergence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agents.infra.distributed import mean_over_ranks

__all__ = [
    "MAX_MODES",
    "bootstrap_loss",
    "bootstrap_target",
    "clip_loss",
    "dino_loss",
    "dino_teacher_probs",
    "nt_xent_loss",
    "soft_cross_entropy",
    "update_center",
]

MAX_MODES = ("annotation", "scalar")


def soft_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_l target(l) log softmax(logits)(l)``.

    target: ``(..., L)`` probabilities (rows sum to 1); logits: ``(..., L)``. Returns a scalar.
    """
    if target.shape != logits.shape:
        raise ValueError(f"target {tuple(target.shape)} and logits {tuple(logits.shape)} differ")
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """SimCLR's NT-Xent: each of the ``2B`` embeddings must pick its partner among the others.

    z1, z2: ``(B, d)`` embeddings of two crops of the same ``B`` images (normalised here);
    scale: inverse temperature ``t`` (scalar). Returns the mean loss over the ``2B`` anchors.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} must both be (B, d)")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = z1.shape[0]
    logits = scale * z @ z.T
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -torch.inf)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: image ``b`` matches caption ``b``.

    image, text: ``(B, d)`` embeddings (normalised here); scale: inverse temperature ``t``.
    Returns ``(CE(image -> text) + CE(text -> image)) / 2``.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} must be (B, d)")
    logits = scale * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    labels = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def dino_teacher_probs(teacher: torch.Tensor, center: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """DINO's teacher distribution: ``softmax((teacher - center) / temperature)``.

    teacher: ``(..., K)`` prototype scores; center: ``(K,)``. Returns ``(..., K)``.
    """
    return F.softmax((teacher.float() - center) / temperature, dim=-1)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              student_temperature: float = 0.1,
              teacher_temperature: float = 0.04) -> torch.Tensor:
    """DINO: cross-entropy from the teacher's centred, sharpened distribution on each view to
    the student's distribution on every *other* view of the same image.

    student, teacher: ``(V, B, K)`` prototype scores of ``V`` views of ``B`` images;
    center: ``(K,)`` running mean of teacher scores. Returns the mean over the ``V (V - 1)``
    ordered view pairs and the ``B`` images.
    """
    if student.shape != teacher.shape or student.ndim != 3:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must both be (V, B, K)")
    v = student.shape[0]
    if v < 2:
        raise ValueError("DINO needs at least 2 views per image")
    t = dino_teacher_probs(teacher, center, teacher_temperature)
    log_s = F.log_softmax(student.float() / student_temperature, dim=-1)
    ce = -(t[:, None] * log_s[None]).sum(-1).mean(-1)  # (V_teacher, V_student)
    off_diagonal = ~torch.eye(v, dtype=torch.bool, device=ce.device)
    return ce[off_diagonal].mean()


def update_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float) -> torch.Tensor:
    """DINO's centre: ``momentum * center + (1 - momentum) * mean(teacher)``.

    center: ``(K,)``; teacher: ``(..., K)``. Returns the new ``(K,)`` (the input is untouched).
    Under torchrun the batch mean is averaged over the ranks (DINO's all-reduce), so every
    rank keeps the same centre; the ranks' batches are equal in size, so that is the global
    batch's mean.
    """
    mean = mean_over_ranks(teacher.detach().float().reshape(-1, center.shape[-1]).mean(0))
    return center * momentum + mean * (1 - momentum)


def bootstrap_target(p_logits: torch.Tensor, q_logits: torch.Tensor, gamma: float,
                     max_mode: str = "annotation") -> torch.Tensor:
    """The bootstrapping target for each target view ``x_j``.

    ``(1 - gamma) p_ema(l | x_j) + gamma max_{a'} Q_ema(l | x_j, a')``, where

    - ``max_mode="annotation"`` (default): the max over ``a'`` is taken per annotation ``l``
      and the result is renormalised over ``l`` so the target stays a distribution;
    - ``max_mode="scalar"``: one ``a'`` per view, the candidate whose distribution is the most
      confident (largest ``max_l Q_ema(l | x_j, a')``), is used for every ``l``.

    p_logits: ``(M, L)`` logits of ``p_ema(. | x_j)``; q_logits: ``(M, C, L)`` logits of
    ``Q_ema(. | x_j, a')`` for ``C`` candidate actions. Returns ``(M, L)`` probabilities.
    With ``gamma = 0`` it is exactly ``softmax(p_logits)`` (``1 * p + 0 * q == p`` in floating
    point), whatever the candidates.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma ({gamma}) must be in [0, 1)")
    if max_mode not in MAX_MODES:
        raise ValueError(f"max_mode {max_mode!r} is not one of {MAX_MODES}")
    p = F.softmax(p_logits.float(), dim=-1)
    if q_logits.shape[1] == 0:  # no candidates (the agent skips them when gamma = 0)
        return p
    q = F.softmax(q_logits.float(), dim=-1)  # (M, C, L)
    if max_mode == "annotation":
        q_max = q.max(dim=1).values
        q_max = q_max / q_max.sum(-1, keepdim=True)
    else:
        best = q.max(dim=-1).values.argmax(dim=1)  # (M,) the most confident candidate
        q_max = q[torch.arange(len(q), device=q.device), best]
    return (1.0 - gamma) * p + gamma * q_max


def bootstrap_loss(pred_logits: torch.Tensor, p_logits: torch.Tensor, q_logits: torch.Tensor,
                   gamma: float, max_mode: str = "annotation") -> torch.Tensor:
    """Soft cross-entropy between :func:`bootstrap_target` and ``Q_AB(. | x_i, a_ij)``.

    pred_logits: ``(P, L)`` online logits for ``P`` pairs; p_logits ``(P, L)`` and q_logits
    ``(P, C, L)``: the EMA target's logits for each pair's target view. Returns a scalar.
    With ``gamma = 0`` this equals ``soft_cross_entropy(softmax(p_logits), pred_logits)``.
    """
    target = bootstrap_target(p_logits.detach(), q_logits.detach(), gamma, max_mode)
    return soft_cross_entropy(target, pred_logits)
