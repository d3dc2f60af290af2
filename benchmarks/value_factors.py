"""What makes the bootstrapped value function learn at CPU scale: one factor at a time.

Each cell is one ``agents/train_value.py`` run of the default (``cpu-small``) preset with one
group of flags changed, without probes; its value accuracy by IoU on the fixed probe test
images is the figure. Cells are written to ``--out`` as JSON as they finish and are skipped when
rerun, so the sweep resumes cell by cell. Prints a markdown table.

    python benchmarks/value_factors.py --out docs/results/value_factors      # the whole sweep
    python benchmarks/value_factors.py --only default ema-paper --parallel 1
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cells import code_version, load_cell, machine, run_train, save_cell  # noqa: E402

# name -> (flags changed from the default run, what the cell measures)
CELLS: dict[str, tuple[list[str], str]] = {
    "default": ([], "the default run"),
    "ema-paper": (["--ema-rate", "0.004", "--ema-schedule", "cosine"],
                  "the paper's EMA: rate 0.004 cosine-annealed to 0 (set for 800M views)"),
    "ema-0.004-const": (["--ema-rate", "0.004", "--ema-schedule", "constant"],
                        "the paper's rate, not annealed"),
    "ema-cosine": (["--ema-schedule", "cosine"], "the default rate, cosine-annealed to 0"),
    "ema-0.1": (["--ema-rate", "0.1"], "a target 10 steps behind"),
    "boot-8": (["--boot-images", "0"], "the paper's bootstrap batch: base_batch / 8 = 8 images"),
    "gamma-0": (["--gamma", "0"], "gamma = 0 (the earlier loss)"),
    "gamma-0.9": (["--gamma", "0.9"], "gamma = 0.9"),
    "ann-16": (["--ann-batch", "16"], "16 annotations per step (fewer, easier targets)"),
    "temp-0.05": (["--temperature", "0.05", "--ab-temperature", "0.05"],
                  "sharper initial temperatures (both heads)"),
    "decoder-1": (["--decoder-depth", "1"], "a one-layer annotation decoder"),
    "decoder-256": (["--decoder-width", "256", "--decoder-heads", "8"], "a wider decoder"),
    "near-crops": (["--boot-scale", "0.3", "1.0"], "bootstrap crops of 30-100% area (near pairs)"),
}


# the cells a plain run measures (the others on request with --only)
DEFAULT_CELLS = ["default", "ema-paper", "ema-cosine", "boot-8", "gamma-0", "temp-0.05",
                 "decoder-1", "near-crops"]


def run_cell(name: str, flags: list[str], out: Path, threads: int, steps: int) -> dict:
    done = load_cell(out, name)
    if done is not None:
        return done
    train_flags = ["--no-probe", *(["--total-steps", str(steps)] if steps else []), *flags]
    summary, wall, load = run_train(train_flags, out, name, threads)
    cell = {"name": name, "flags": flags, "steps": summary["step"],
            "value_accuracy_by_iou": summary["value_accuracy_by_iou"],
            "final": summary["final"], "wall_s": wall, "threads": threads, "load": load,
            "machine": machine(), "code": code_version()}
    save_cell(out, name, cell)
    return cell


def table(cells: list[dict]) -> str:
    bins = [k[4:] for k in cells[0]["value_accuracy_by_iou"] if k.startswith("iou_")]
    lines = ["| cell | flags | " + " | ".join(f"IoU {b}" for b in bins)
             + " | copy x_i, IoU >= 0.4 | majority | ab_kl | base_loss |",
             "|---|---|" + "---:|" * (len(bins) + 4)]
    for c in cells:
        v, f = c["value_accuracy_by_iou"], c["final"]
        lines.append(f"| {c['name']} | `{' '.join(c['flags']) or '(default)'}` | "
                     + " | ".join(f"{v[f'iou_{b}']:.3f}" for b in bins)
                     + f" | {v['copy_0.40-0.60']:.3f} / {v['copy_0.60-1.00']:.3f}"
                     + f" | {v['majority']:.3f} | {f.get('ab_kl', float('nan')):.3f} | "
                     f"{f['base_loss']:.3f} |")
    counts = cells[0]["value_accuracy_by_iou"]
    lines.append(f"| pairs per bin ({cells[0]['name']}) | | "
                 + " | ".join(f"{counts[f'count_{b}']:.0f}" for b in bins)
                 + " | | | | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/results/value_factors", help="one JSON per cell")
    p.add_argument("--only", nargs="*", default=None,
                   help=f"cells to run (default {DEFAULT_CELLS}); all: {list(CELLS)}")
    p.add_argument("--parallel", type=int, default=2, help="cells at once (1 thread each)")
    p.add_argument("--steps", type=int, default=0, help="steps per cell (0: the preset's)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or DEFAULT_CELLS
    unknown = set(names) - set(CELLS)
    if unknown:
        raise SystemExit(f"unknown cells {sorted(unknown)}; valid: {list(CELLS)}")
    threads = 1 if args.parallel > 1 else 2
    with ThreadPoolExecutor(args.parallel) as pool:
        cells = list(pool.map(lambda n: run_cell(n, CELLS[n][0], out, threads, args.steps),
                              names))
    print(f"machine: {cells[0]['machine']}; each cell one seed (1), {cells[0]['steps']} steps")
    print(table(cells))


if __name__ == "__main__":
    main()
