"""Inside the mixture value head: how much it trusts copy, and how good its decoder expert is.

For a run trained with ``--value-residual mixture`` (the SimCLR default), on bootstrap pairs of
the fixed probe test images: the gate's weight on the copy expert, ``w = sigmoid(gate(x_i, a))``,
and the accuracy of each expert alone (the decoder's ``Q_dec``, the online copy ``p(l | x_i)``)
beside the mixture's, on far (IoU < 0.4) and near pairs. The targets are
``argmax_l p_ema(l | x_j)``, as in ``agents.evaluate.value_accuracy_by_iou``.

    python -m studies.value_gate runs/<run> [runs/<run2> ...] --batches 48
"""

from __future__ import annotations

import argparse

import torch

from agents.evaluate import PROBE_TEST, PROBE_TRAIN, SPLIT_IOU, probe_sets
from agents.method.ab import load_agent
from agents.method.data import TransitionSampler, pair_index
from imgmdp_env.views import box_iou


@torch.no_grad()
def gate_report(run: str, batches: int) -> list[str]:
    agent = load_agent(run).eval()
    if agent.cfg.residual != "mixture":
        raise SystemExit(f"{run}: its value head is {agent.cfg.residual!r}, not the mixture")
    _, test = probe_sets("scenes", PROBE_TRAIN, PROBE_TEST, 96)
    cfg = agent.cfg
    sampler = TransitionSampler(test, view_size=agent.encoder.view_size,
                                base_batch=2 * cfg.ann_batch, boot_images=cfg.ann_batch // 4,
                                n_views=4, seed=0)
    net = agent.online
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("w", "dec", "copy", "mix", "iou")}
    for _ in range(batches):
        b = sampler.sample()
        enc = agent.encode(b)
        pred, p_logits, _, j = agent.bootstrap_logits(b, enc)
        want = p_logits.argmax(-1)[j]
        psi, psi_ab = net.annotations(net.encoder.pool(enc.base_tokens[:cfg.ann_batch]))
        dec, copy, gate = net.value_parts(enc.boot_tokens, b.actions, psi, psi_ab)
        n = b.boot_boxes.shape[1]
        cols["w"].append(torch.sigmoid(gate)[..., 0].flatten())
        cols["dec"].append((dec.argmax(-1) == want).flatten().float())
        cols["copy"].append((copy.argmax(-1) == want).flatten().float())
        cols["mix"].append((pred.argmax(-1) == want).flatten().float())
        cols["iou"].append(box_iou(b.boot_boxes[:, :, None],
                                   b.boot_boxes[:, pair_index(n)]).flatten())
    c = {k: torch.cat(v) for k, v in cols.items()}
    lines = []
    for name, sel in (("far", c["iou"] < SPLIT_IOU), ("near", c["iou"] >= SPLIT_IOU)):
        lines.append(f"| {run} | {name} | {c['w'][sel].mean():.3f} +- {c['w'][sel].std():.3f} | "
                     f"{c['dec'][sel].mean():.3f} | {c['copy'][sel].mean():.3f} | "
                     f"{c['mix'][sel].mean():.3f} | {int(sel.sum())} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="train_value.py run folders / checkpoints")
    p.add_argument("--batches", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print("| run | pairs | copy's weight w (mean +- sd) | decoder expert alone | copy alone "
          "| mixture | pairs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for run in a.runs:
        print("\n".join(gate_report(run, a.batches)))


if __name__ == "__main__":
    main()
