"""Probe accuracy of annotation bootstrapping (AB) vs its base method at equal views seen,
beside the fixed baselines (random-init twins, raw pixels), and the value accuracy by IoU.

Runs ``agents/train_value.py`` (the ``cpu-small`` preset, i.e. ``make train``, unless told
otherwise) once with bootstrapping and once with ``--ab-weight 0`` per seed. The base run gets
more steps so that both see the same number of training views (an AB step also renders the
bootstrap views). Every run is probed on the same fixed probe sets (``agents.evaluate``), so
the baseline rows are the same for every run. Prints per-run rows, the mean +- sd over seeds,
and the value accuracy by IoU of the AB runs, as markdown tables.

    python -m studies.ab_vs_base --seeds 1 2 3 --runs-dir /tmp/ab_vs_base
    python -m studies.ab_vs_base --seeds 1 2 3 --no-base      # the default run's table only
    python -m studies.ab_vs_base --seeds 1 2 3 -- --base dino   # extra train_value flags
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agents.train_value import parse_args
from benchmarks._machine import cpu_model
from studies._cells import ROOT, views_per_step

PROBES = ("linear", "knn", "attentive")


def run(flags: list[str], runs_dir: Path, name: str) -> dict:
    cmd = [sys.executable, str(ROOT / "agents" / "train_value.py"), "--runs-dir", str(runs_dir),
           "--name", name, *flags]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    summary = json.loads((runs_dir / name / "summary.json").read_text())
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds to run")
    p.add_argument("--steps", type=int, default=0,
                   help="optimizer steps of the AB run (0: the preset's total_steps)")
    p.add_argument("--no-base", action="store_true", help="skip the base-method runs")
    p.add_argument("--runs-dir", default="runs/ab_vs_base", help="where the runs go")
    p.add_argument("train_flags", nargs="*", help="extra flags for train_value.py (after --)")
    args = p.parse_args()
    runs_dir = Path(args.runs_dir)
    flags = list(args.train_flags)
    if not args.steps:
        args.steps = parse_args(flags).total_steps
    ab_views = views_per_step(flags, bootstrap=True)
    base_views = views_per_step(flags + ["--ab-weight", "0"], bootstrap=False)
    base_steps = round(args.steps * ab_views / base_views)
    cpu = cpu_model()
    print(f"machine: {cpu}, python {platform.python_version()}; AB {args.steps} steps x "
          f"{ab_views} views, base {base_steps} steps x {base_views} views "
          f"(= {args.steps * ab_views} views each); train_value flags: {flags or 'none'}")

    results: dict[str, list[dict]] = {"AB": []} if args.no_base else {"AB": [], "base": []}
    for seed in args.seeds:
        common = [*flags, "--seed", str(seed)]
        results["AB"].append(run([*common, "--total-steps", str(args.steps)], runs_dir,
                                 f"ab_s{seed}"))
        if not args.no_base:
            results["base"].append(run([*common, "--ab-weight", "0", "--total-steps",
                                        str(base_steps)], runs_dir, f"base_s{seed}"))

    print("\n| method | seed | " + " | ".join(PROBES) + " | wall s |")
    print("|---|---:|" + "---:|" * (len(PROBES) + 1))
    for method, runs in results.items():
        for seed, r in zip(args.seeds, runs, strict=True):
            acc = r["probes"]["trained"]
            print(f"| {method} | {seed} | " + " | ".join(f"{acc[k]:.3f}" for k in PROBES)
                  + f" | {r['wall_s']:.0f} |")
    first = results["AB"][0]["probes"]
    print("\n| encoder | runs | " + " | ".join(PROBES) + " |")
    print("|---|---:|" + "---:|" * len(PROBES))
    for method, runs in results.items():
        accs = [r["probes"]["trained"] for r in runs]
        cells = []
        for k in PROBES:
            xs = [a[k] for a in accs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.3f} +- {sd:.3f}")
        base = parse_args(flags).ab.base.upper()
        name = f"AB_{base}" if method == "AB" else f"{base} alone, equal views"
        print(f"| {name} | {len(accs)} seeds | " + " | ".join(cells) + " |")
    rand = first["random init"]
    print("| random init | 3 twins | " + " | ".join(
        f"{rand[k]:.3f} +- {rand[k + '_sd']:.3f}" for k in PROBES) + " |")
    print("| raw pixels | - | " + " | ".join(f"{first['raw pixels'][k]:.3f}" for k in PROBES)
          + " |")
    print(f"test samples: {int(first['trained']['n_test'])} (standard error of one accuracy "
          f"near 0.5: {0.5 / first['trained']['n_test'] ** 0.5:.3f})")

    vals = [r["value_accuracy_by_iou"] for r in results["AB"]]
    bins = [k[4:] for k in vals[0] if k.startswith("iou_")]
    print("\nvalue accuracy by IoU of source and target view (probe test images, AB runs):")
    print("| IoU | " + " | ".join(bins) + " | chance | majority |")
    print("|---|" + "---:|" * (len(bins) + 2))
    for label, key in (("value function Q_AB", "iou"), ("copy x_i's own annotation", "copy")):
        cells = []
        for b in bins:
            xs = [v[f"{key}_{b}"] for v in vals]
            cells.append(f"{statistics.mean(xs):.3f} +- "
                         f"{statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}")
        maj = statistics.mean(v["majority"] for v in vals)
        print(f"| {label} ({len(vals)} seeds) | " + " | ".join(cells)
              + f" | {vals[0]['chance']:.3f} | {maj:.3f} |")
    print("| pairs per seed | " + " | ".join(f"{vals[0][f'count_{b}']:.0f}" for b in bins)
          + " | | |")


if __name__ == "__main__":
    main()
