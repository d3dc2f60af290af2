"""What makes the bootstrapped value function work at CPU scale: one factor at a time, several
seeds, each cell paired with the reference cell of the same seed.

Each cell is one ``agents/train_value.py`` run of the default (``cpu-small``) preset with one
group of flags changed, without probes. Its figures are the value function's accuracy by IoU on
the fixed probe test images beside "copy the source view's own annotation" and beside itself
with the actions permuted among pairs of the same IoU bin (``agents.evaluate``), measured twice:
with the bootstrap images among the annotated images (``own``: the question the default
answers) and drawn apart from them (``others``: the question of ``--no-boot-annotated``), so
that cells trained on either question are compared on both. Cells are written to ``--out`` as
JSON as they finish and are skipped when rerun (the sweep resumes cell by cell).

    python -m studies.value_factors                                   # the default cells
    python -m studies.value_factors --only default plain --seeds 1 2 3 --parallel 2
    python -m studies.value_factors --report                          # tables only

Differences are paired per seed (the same seed gives both cells the same initial weights and
data streams): the mean over seeds of ``cell - reference`` and its 95% t interval
(``studies.representation.paired_difference``: ``n - 1`` degrees of freedom, the quantile from
``scipy.stats.t.ppf``).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from studies._cells import ROOT, code_version, load_cell, machine, run_train, save_cell
from studies.representation import paired_difference

# name -> (flags changed from the default run, what the cell measures)
CELLS: dict[str, tuple[list[str], str]] = {
    "default": ([], "the default run: Q a mixture of copy and the decoder, box geometry"),
    "plain": (["--value-residual", "none", "--no-decoder-geometry"],
              "the earlier default (the paper's head): the decoder alone, box tokens only"),
    "no-action-tokens": (["--no-action-tokens"], "the decoder never sees the action"),
    "no-geometry": (["--no-decoder-geometry"], "the mixture, box tokens only"),
    "no-residual": (["--value-residual", "none"], "the decoder alone, with box geometry"),
    "gated": (["--value-residual", "gated"], "copy's logits added, weighted by a gate"),
    "annotated": (["--boot-annotated"], "bootstrap images among the annotated images"),
    "exclude-return": (["--exclude-return"], "the return box a_j->i out of the max"),
    "gamma-0": (["--gamma", "0"], "gamma = 0 (the earlier loss)"),
    "value-lr-5": (["--value-lr-scale", "5"], "the value branch at 5x the learning rate"),
    "value-detached": (["--value-input", "detached"],
                       "the decoder reads the online tokens without sending them gradients"),
    "value-ema": (["--value-input", "ema"], "the decoder reads the target encoder's tokens"),
}
DEFAULT_CELLS = ["default", "plain", "no-action-tokens"]
REFERENCE = "default"
VOCABULARIES = {"own": True, "others": False}


def cell_id(name: str, seed: int) -> str:
    return f"{name}_s{seed}"


def measure(run_dir: Path, batches: int) -> dict[str, dict[str, float]]:
    """The value diagnostic of a finished run on the fixed probe test images, for both
    relations of the bootstrap images to the annotations."""
    import torch

    from agents.evaluate import PROBE_TEST, PROBE_TRAIN, probe_sets, value_accuracy_by_iou
    from agents.method.ab import load_agent

    torch.set_num_threads(1)
    agent = load_agent(str(run_dir / "checkpoint.pt"))
    _, test = probe_sets("scenes", PROBE_TRAIN, PROBE_TEST, 96)
    return {vocab: value_accuracy_by_iou(agent, test, n_batches=batches, seed=0,
                                         boot_annotated=own)
            for vocab, own in VOCABULARIES.items()}


def run_cell(name: str, seed: int, out: Path, threads: int, steps: int, batches: int) -> dict:
    cid = cell_id(name, seed)
    done = load_cell(out, cid)
    if done is not None:
        return done
    flags = CELLS[name][0]
    train_flags = ["--no-probe", "--seed", str(seed), "--value-batches", "1",
                   *(["--total-steps", str(steps)] if steps else []), *flags]
    summary, wall, load = run_train(train_flags, out, cid, threads)
    cell = {"name": name, "seed": seed, "flags": flags, "steps": summary["step"],
            "value": measure(out / "runs" / cid, batches), "final": summary["final"],
            "wall_s": wall, "threads": threads, "load": load, "machine": machine(),
            "code": code_version()}
    save_cell(out, cid, cell)
    return cell


def _row(values: list[float], ref: list[float] | None) -> str:
    mean = sum(values) / len(values)
    if ref is None or len(ref) != len(values):
        return f"{mean:.3f}"
    d, half, sig = paired_difference(values, ref)
    return f"{mean:.3f} ({d:+.3f} +- {half:.3f}{'*' if sig else ''})"


METRICS = [("far", "Q, IoU < 0.4"), ("far_copy", "copy, IoU < 0.4"),
           ("far_gain", "Q - copy, IoU < 0.4"), ("far_drop", "permuting costs, IoU < 0.4"),
           ("near", "Q, IoU >= 0.4"), ("near_copy", "copy, IoU >= 0.4")]


def _metric(v: dict[str, float], key: str) -> float:
    if key == "far_gain":
        return v["far"] - v["far_copy"]
    if key == "far_drop":  # relative: 1 - permuted / true
        return 1 - v["far_permuted"] / v["far"] if v["far"] > 0 else float("nan")
    return v[key]


def table(cells: list[dict], vocab: str) -> str:
    """One row per cell: the mean over its seeds of each metric, and (in brackets) the paired
    difference from the reference cell with its 95% half-width (* = outside the noise)."""
    by_name: dict[str, dict[int, dict]] = {}
    for c in cells:
        by_name.setdefault(c["name"], {})[c["seed"]] = c
    ref = by_name.get(REFERENCE, {})
    lines = [f"| cell ({vocab}) | seeds | " + " | ".join(m[1] for m in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for name, seeds in by_name.items():
        common = sorted(set(seeds) & set(ref)) if name != REFERENCE else []
        row = []
        for key, _ in METRICS:
            vals = [_metric(seeds[s]["value"][vocab], key) for s in sorted(seeds)]
            if common:
                vals = [_metric(seeds[s]["value"][vocab], key) for s in common]
                refs = [_metric(ref[s]["value"][vocab], key) for s in common]
                row.append(_row(vals, refs))
            else:
                row.append(_row(vals, None))
        n = len(common) if common else len(seeds)
        lines.append(f"| {name} | {n} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def bins_table(cells: list[dict], vocab: str) -> str:
    """Per IoU bin, the mean over seeds of Q, copy and Q with permuted actions, per cell."""
    first = cells[0]["value"][vocab]
    bins = [k[4:] for k in first if k.startswith("iou_")]
    lines = [f"| cell ({vocab}) | " + " | ".join(bins) + " |", "|---|" + "---:|" * len(bins)]
    names = list(dict.fromkeys(c["name"] for c in cells))
    for name in names:
        group = [c["value"][vocab] for c in cells if c["name"] == name]
        cell = []
        for b in bins:
            q, cp, pm = (sum(v[f"{k}_{b}"] for v in group) / len(group)
                         for k in ("iou", "copy", "permuted"))
            cell.append(f"{q:.3f} / {cp:.3f} / {pm:.3f}")
        lines.append(f"| {name} | " + " | ".join(cell) + " |")
    return "\n".join(lines) + "\n\n(each entry: Q / copy / Q with permuted actions)"


def report(out: Path) -> str:
    cells = [json.loads(p.read_text()) for p in sorted(out.glob("*_s*.json"))]
    if not cells:
        return f"no finished cells in {out}"
    order = {n: k for k, n in enumerate(CELLS)}
    cells.sort(key=lambda c: (order.get(c["name"], 99), c["seed"]))
    head = (f"{len(cells)} cells; machine: {cells[0]['machine']}; {cells[0]['steps']} steps; "
            f"code {', '.join(sorted({c['code'] for c in cells}))}")
    parts = [head]
    for vocab in VOCABULARIES:
        parts += [table(cells, vocab), bins_table(cells, vocab)]
    return "\n\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs/results/value_function"),
                   help="one JSON per cell and seed")
    p.add_argument("--only", nargs="*", default=None,
                   help=f"cells to run (default {DEFAULT_CELLS}); all: {list(CELLS)}")
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--parallel", type=int, default=2, help="cells at once (1 thread each)")
    p.add_argument("--steps", type=int, default=0, help="steps per cell (0: the preset's)")
    p.add_argument("--value-batches", type=int, default=64,
                   help="bootstrap batches of probe test images per measurement")
    p.add_argument("--report", action="store_true", help="print the tables of finished cells")
    args = p.parse_args()
    out = Path(args.out)
    if not args.report:
        names = args.only or DEFAULT_CELLS
        unknown = set(names) - set(CELLS)
        if unknown:
            raise SystemExit(f"unknown cells {sorted(unknown)}; valid: {list(CELLS)}")
        out.mkdir(parents=True, exist_ok=True)
        threads = 1 if args.parallel > 1 else 2
        jobs = [(n, s) for s in args.seeds for n in names]
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda j: run_cell(j[0], j[1], out, threads, args.steps,
                                             args.value_batches), jobs))
    print(report(out))


if __name__ == "__main__":
    main()
