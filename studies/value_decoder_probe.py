"""Can the annotation decoder learn to use the action at all? Train a fresh AB branch (decoder,
``phi_AB``, ``psi_AB``, gate) on a FROZEN trained encoder and its frozen base head, at a
constant learning rate, and measure ``Q_AB`` against copy and against itself with permuted
actions on held-out pairs.

In a training run the encoder, the annotation embeddings and the target all move and the
learning rate decays; here nothing moves but the branch, so this isolates the question "is the
target predictable from (x_i, a) beyond what x_i alone gives?" from the question "does joint
training get there in 1200 steps?".

    python -m studies.value_decoder_probe --checkpoint runs/<run> --value-residual gated \\
        --decoder-geometry --steps 3000

Pairs are drawn as in training (the run's bootstrap batch: ``--boot-images`` x ``--n-views``
views) from the scenes train split (``--train-batches`` cached batches, cycled) and the fixed
probe test images (``--test-batches``); the targets are the checkpoint's EMA target
``argmax_l p_ema(l | x_j)`` over each batch's annotation crops, as in
``agents.evaluate.value_accuracy_by_iou``. Prints one line per ``--every`` steps.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from agents.evaluate import PROBE_TEST, PROBE_TRAIN, SPLIT_IOU, probe_sets
from agents.method.ab import ABNetwork, load_agent
from agents.method.data import TransitionSampler, pair_index
from imgmdp_env.datasets.splits import load_split
from imgmdp_env.views import box_iou


@torch.no_grad()
def cache(agent, sampler: TransitionSampler, n: int) -> list[tuple[torch.Tensor, ...]]:
    """``n`` batches of (EMA source tokens, actions, EMA annotation features, EMA target
    logits ``p_ema(. | x)`` per view, pair index ``j``, pair IoU)."""
    out = []
    for _ in range(n):
        b = sampler.sample()
        enc = agent.encode(b)
        _, p_logits, _, j = agent.bootstrap_logits(b, enc)
        nv = b.boot_boxes.shape[1]
        iou = box_iou(b.boot_boxes[:, :, None], b.boot_boxes[:, pair_index(nv)]).reshape(-1, nv - 1)
        out.append((enc.ema_boot_tokens, b.actions, enc.ema_ann_pooled, p_logits, j, iou))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a SimCLR train_value.py run")
    p.add_argument("--value-residual", default="none", choices=("none", "copy", "gated",
                                                                 "mixture"))
    p.add_argument("--decoder-geometry", action="store_true")
    p.add_argument("--no-action-tokens", action="store_true")
    p.add_argument("--boot-annotated", action="store_true")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-batches", type=int, default=200)
    p.add_argument("--test-batches", type=int, default=40)
    p.add_argument("--every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="fresh", choices=("fresh", "run"),
                   help="the branch's initial weights: fresh, or the run's EMA branch (needs "
                        "the run's own --value-residual / --decoder-geometry)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", default="",
                   help="write a run folder whose agent is the checkpoint's EMA network with "
                        "the probed branch (online and target), for agents.evaluation.search / "
                        "studies.find_object; refused if it exists")
    a = p.parse_args()
    if a.save and Path(a.save).exists():
        raise SystemExit(f"--save {a.save}: exists; name a new folder (nothing is overwritten)")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    agent = load_agent(a.checkpoint).eval()
    if agent.cfg.base != "simclr":
        raise SystemExit(f"--checkpoint: a SimCLR run is needed (this one: {agent.cfg.base})")
    cfg = replace(agent.cfg, value_residual=a.value_residual,
                  decoder_geometry=a.decoder_geometry, action_tokens=not a.no_action_tokens)
    view = agent.encoder.view_size

    def sampler(ds, seed):
        return TransitionSampler(ds, view_size=view, base_batch=2 * cfg.ann_batch,
                                 boot_images=10, n_views=6, boot_annotated=a.boot_annotated,
                                 seed=seed)

    train = cache(agent, sampler(load_split("scenes", "train", 2048, 96, 0), 1), a.train_batches)
    _, test_ds = probe_sets("scenes", PROBE_TRAIN, PROBE_TEST, 96)
    test = cache(agent, sampler(test_ds, 2), a.test_batches)
    torch.manual_seed(a.seed)
    net = ABNetwork(agent.target.encoder, cfg)  # the frozen encoder; a fresh branch
    if a.init == "run":
        if replace(cfg, value_residual=cfg.residual) != replace(
                agent.cfg, value_residual=agent.cfg.residual):
            raise SystemExit("--init run: the branch must be the run's (same --value-residual, "
                             "--decoder-geometry, --no-action-tokens)")
        net.load_state_dict(agent.target.state_dict())
    net.phi, net.scale = agent.target.phi, agent.target.scale  # the frozen base head
    frozen = {"encoder.", "phi.", "scale."}
    params = [q for n, q in net.named_parameters() if not n.startswith(tuple(frozen))]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)

    def q_logits(batch, permute: bool = False):
        tok, act, ann, _, _, _ = batch
        if permute:
            flat = act.flatten(0, 1)
            act = flat[torch.randperm(len(flat), generator=gen)].view_as(act)
        psi = F.normalize(net.phi(ann), dim=-1).detach()
        psi_ab = F.normalize(net.psi_ab(ann), dim=-1)
        return net.q_logits(tok, act, psi, psi_ab)

    @torch.no_grad()
    def report() -> str:
        hit, perm, copy, ious = [], [], [], []
        for b in test:
            labels = b[3].argmax(-1)
            want = labels[b[4]]
            hit.append((q_logits(b).argmax(-1) == want).flatten())
            perm.append((q_logits(b, True).argmax(-1) == want).flatten())
            copy.append((labels[:, None] == want).flatten())
            ious.append(b[5].flatten())
        h, pm, c, i = (torch.cat(x).float() for x in (hit, perm, copy, ious))
        far = i < SPLIT_IOU
        return (f"far Q {h[far].mean():.3f} copy {c[far].mean():.3f} permuted "
                f"{pm[far].mean():.3f} | near Q {h[~far].mean():.3f} copy {c[~far].mean():.3f} "
                f"permuted {pm[~far].mean():.3f}")

    print(f"{a.checkpoint}: {cfg.value_residual}, geometry {cfg.decoder_geometry}; "
          f"{len(train)} train / {len(test)} test batches cached in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    for step in range(1, a.steps + 1):
        b = train[(step - 1) % len(train)]
        target = F.softmax(b[3][b[4]].float(), -1)
        loss = -(target * F.log_softmax(q_logits(b).float(), -1)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % a.every == 0 or step == a.steps:
            print(f"step {step} loss {loss.item():.3f} | {report()} | "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    if a.save:
        save_probed(a.checkpoint, Path(a.save), net, frozen, cfg)


def save_probed(checkpoint: str, out: Path, net: ABNetwork, frozen: set[str], cfg) -> None:
    """A run folder at ``out`` whose agent is ``checkpoint``'s EMA network (online and target:
    the frozen encoder and base head the branch was trained on) with ``net``'s probed AB
    branch, and ``cfg`` as its AB configuration. The optimizer and streams stay the source's
    (a probed agent is for evaluation and search, not for resuming)."""
    import json
    from dataclasses import asdict

    from agents.infra.checkpoint import read_checkpoint, resolve, write_checkpoint

    src = resolve(checkpoint)
    ck = read_checkpoint(src)
    state = ck["agent"]
    for k in [k for k in state if k.startswith("online.")]:
        state[k] = state["target." + k[len("online."):]].clone()
    for k, v in net.state_dict().items():
        if not k.startswith(tuple(frozen)):
            state["online." + k], state["target." + k] = v.detach().clone(), v.detach().clone()
    ck["ab_config"] = asdict(cfg)
    out.mkdir(parents=True)
    write_checkpoint(ck, out / "checkpoint.pt")
    config = json.loads((src.parent / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config, indent=2))
    print(f"wrote {out} (the probed branch on {src})")


if __name__ == "__main__":
    main()
