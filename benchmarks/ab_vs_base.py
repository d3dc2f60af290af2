"""Probe accuracy of annotation bootstrapping (AB) vs its base method at equal views seen.

Runs ``agents/train_value.py`` (the ``cpu-small`` preset unless told otherwise) once with
bootstrapping and once with ``--ab-weight 0`` per seed. The base run gets more steps so that
both see the same number of training views (an AB step also renders the bootstrap views).
Prints each run's probe accuracies and the mean over seeds, as a markdown table.

    python benchmarks/ab_vs_base.py --seeds 1 2 --runs-dir /tmp/ab_vs_base
    python benchmarks/ab_vs_base.py --seeds 1 2 3 -- --base dino   # extra train_value flags
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import cpu_model  # noqa: E402

from agents.train_utils import build_agent, build_datasets  # noqa: E402
from agents.train_value import parse_args  # noqa: E402

PROBES = ("linear", "knn", "attentive")


def views_per_step(train_flags: list[str], bootstrap: bool) -> int:
    """Training views of one step of the run these flags describe (from the real sampler)."""
    args = parse_args(train_flags + ["--dataset-size", "64", "--no-probe"])
    _, sampler = build_agent(args, build_datasets(args))
    return sampler.views_per_step(bootstrap)


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
    p.add_argument("--steps", type=int, default=600, help="optimizer steps of the AB run")
    p.add_argument("--runs-dir", default="runs/ab_vs_base", help="where the runs go")
    p.add_argument("train_flags", nargs="*", help="extra flags for train_value.py (after --)")
    args = p.parse_args()
    runs_dir = Path(args.runs_dir)
    flags = list(args.train_flags)
    ab_views = views_per_step(flags, bootstrap=True)
    base_views = views_per_step(flags + ["--ab-weight", "0"], bootstrap=False)
    base_steps = round(args.steps * ab_views / base_views)
    cpu = cpu_model()
    print(f"machine: {cpu}, python {platform.python_version()}; AB {args.steps} steps x "
          f"{ab_views} views, base {base_steps} steps x {base_views} views "
          f"(= {args.steps * ab_views} views each); train_value flags: {flags or 'none'}")

    results: dict[str, list[dict]] = {"AB": [], "base": []}
    for seed in args.seeds:
        common = [*flags, "--seed", str(seed)]
        results["AB"].append(run([*common, "--total-steps", str(args.steps)], runs_dir,
                                 f"ab_s{seed}"))
        results["base"].append(run([*common, "--ab-weight", "0", "--total-steps",
                                    str(base_steps)], runs_dir, f"base_s{seed}"))

    print("\n| method | seed | " + " | ".join(PROBES) + " | wall s |")
    print("|---|---:|" + "---:|" * (len(PROBES) + 1))
    for method, runs in results.items():
        for seed, r in zip(args.seeds, runs, strict=True):
            acc = r["probes"]["trained"]
            print(f"| {method} | {seed} | " + " | ".join(f"{acc[k]:.3f}" for k in PROBES)
                  + f" | {r['wall_s']:.0f} |")
    rand = [r["probes"]["random init"] for r in results["AB"]]
    for method, runs in [*results.items(), ("random init", None)]:
        accs = rand if runs is None else [r["probes"]["trained"] for r in runs]
        cells = []
        for k in PROBES:
            xs = [a[k] for a in accs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.3f} +- {sd:.3f}")
        print(f"| **{method}** | mean of {len(accs)} | " + " | ".join(cells) + " | |")


if __name__ == "__main__":
    main()
