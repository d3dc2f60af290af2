"""Does the value phase (``train_value.py --value-steps N``) lift the value function above copy?

For each seed: a pre-training run (``train_value.py --seed S --no-probe`` plus ``--flags``; an
existing run folder ``<out>/s<S>`` is reused), then a copy of it resumed with ``--value-steps N``
(the representation stays the pre-training's, so the pair differs only in the value branch).
Reports, from the two ``summary.json`` files, Q - copy and the cost of permuting the actions on
far (IoU < 0.4) and near pairs, before and after, paired per seed with 95% t intervals.

    python -m studies.value_phase --out /tmp/value_phase --seeds 1 2 3 --value-steps 1000
    python -m studies.value_phase --out /tmp/value_phase --seeds 1 2 3 --report
    python -m studies.value_phase --out /tmp/value_phase --value-steps 700 --value-cache 100 \
        --value-boot-images 40          # the phase on cached batches (make train's)
    ... --value-schedule cosine --value-lr 2e-3    # the phase's learning rate
    python -m studies.value_phase --out /tmp/nat ... --flags --no-action-tokens   # a control
    python -m studies.value_phase --out /tmp/value_phase ... --report --control /tmp/nat

``--control DIR`` also prints, after the phase, this study's runs minus those of ``DIR`` (the
same seeds and phase flags, e.g. the runs of ``--flags --no-action-tokens``), paired per seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from studies.representation import paired_difference

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(ROOT / "agents" / "train_value.py")]


def run(cmd: list[str], log: Path) -> None:
    print(" ".join(cmd[1:]), f"> {log}", flush=True)
    with log.open("w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)


def phase_name(seed: int, steps: int, phase_flags: list[str]) -> str:
    """The folder of a seed's value-phase copy: ``s1_phase1000``, or with phase flags
    ``s1_phase700_value-cache100_value-boot-images40``."""
    tag = "".join(f"_{f.lstrip('-')}" if f.startswith("--") else f for f in phase_flags)
    return f"s{seed}_phase{steps}{tag}"


def pair(out: Path, seed: int, steps: int, flags: list[str], threads: int,
         phase_flags: tuple[str, ...] | list[str] = ()) -> tuple[Path, Path]:
    """The seed's pre-training run and its value-phase copy, made if missing."""
    pre, phase = out / f"s{seed}", out / phase_name(seed, steps, list(phase_flags))
    if not (pre / "summary.json").exists():
        run([*TRAIN, "--seed", str(seed), "--no-probe", "--threads", str(threads), "--runs-dir",
             str(out), "--name", pre.name, *flags], out / f"{pre.name}.log")
    if not (phase / "summary.json").exists():
        shutil.rmtree(phase, ignore_errors=True)
        shutil.copytree(pre, phase, ignore=shutil.ignore_patterns("encoder", "tb"))
        (phase / "summary.json").unlink()
        run([*TRAIN, "--resume", str(phase), "--value-steps", str(steps), "--threads",
             str(threads), "--no-probe", *phase_flags], out / f"{phase.name}.log")
    return pre, phase


def measures(run_dir: Path) -> dict[str, float]:
    v = json.loads((run_dir / "summary.json").read_text())["value_accuracy_by_iou"]
    out = {}
    for side in ("far", "near"):
        out[f"{side} Q"] = v[side]
        out[f"{side} copy"] = v[f"{side}_copy"]
        out[f"{side} Q - copy"] = v[side] - v[f"{side}_copy"]
        out[f"{side} permuting costs"] = (v[side] - v[f"{side}_permuted"]) / max(v[side], 1e-9)
    return out


def interval(after: np.ndarray, before: np.ndarray) -> str:
    """``after - before`` paired per seed (the study's :func:`paired_difference`), ``*`` when
    outside the noise."""
    d, half, sig = paired_difference(list(after), list(before))
    if not np.isfinite(half):
        return f"{d:+.3f}"
    return f"{d:+.3f} +- {half:.3f}" + ("*" if sig else "")


def table(head: str, left: str, right: str, ours: list[dict], base: list[dict]) -> list[str]:
    """Rows of each measure: the mean of ``base`` (column ``left``), of ``ours`` (``right``)
    and ``ours - base`` paired per seed."""
    lines = [f"| {head} | {left} | {right} | {right.split(' (')[0]} - {left.split(' (')[0]} "
             "(95% t, paired) |", "|---|---:|---:|---:|"]
    for k in base[0]:
        b = np.array([m[k] for m in base])
        a = np.array([m[k] for m in ours])
        lines.append(f"| {k} | {b.mean():.3f} | {a.mean():.3f} | {interval(a, b)} |")
    return lines


def report(pairs: list[tuple[Path, Path]], steps: int) -> str:
    before = [measures(p) for p, _ in pairs]
    after = [measures(q) for _, q in pairs]
    lines = table(f"{len(pairs)} seeds", "before (pre-training alone)",
                  f"after {steps} value-phase steps", after, before)
    per_seed = ", ".join(f"{p.name}: {m['far Q - copy']:+.3f} -> {n['far Q - copy']:+.3f}"
                         for (p, _), m, n in zip(pairs, before, after, strict=True))
    return "\n".join(lines) + f"\n\nfar Q - copy per seed: {per_seed}"


def versus(pairs: list[tuple[Path, Path]], control: list[tuple[Path, Path]]) -> str:
    """After the phase: each seed's run minus the control's of the same seed (95% t)."""
    ours, theirs = [measures(q) for _, q in pairs], [measures(q) for _, q in control]
    return "\n".join(table(f"after the phase, {len(pairs)} seeds",
                           f"control ({control[0][1].parent})", "this study", ours, theirs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder of the runs (reused when present)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--value-steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--value-cache", type=int, default=0,
                   help="the phase's --value-cache (0: a new batch every step)")
    p.add_argument("--value-boot-images", type=int, default=0,
                   help="the phase's --value-boot-images (0: the run's --boot-images)")
    p.add_argument("--value-lr", type=float, default=0,
                   help="the phase's --value-lr (0: the run's)")
    p.add_argument("--value-schedule", choices=["constant", "cosine"], default="",
                   help="the phase's --value-schedule (none: the run's)")
    p.add_argument("--value-gamma", type=float, default=None,
                   help="the phase's --value-gamma (none: the run's --gamma)")
    p.add_argument("--report", action="store_true", help="only report the runs in --out")
    p.add_argument("--control", default="",
                   help="a finished study folder of the same seeds and phase flags: also "
                        "print this study's phase runs minus its, paired per seed")
    p.add_argument("--flags", nargs=argparse.REMAINDER, default=[],
                   help="more train_value.py flags of the pre-training runs (last)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ("value_cache", "value_boot_images", "value_lr", "value_schedule", "value_gamma")
    phase_flags = [f for k in keys if getattr(a, k) or (k == "value_gamma" and a.value_gamma == 0)
                   for f in (f"--{k.replace('_', '-')}", str(getattr(a, k)))]
    pairs = []
    for seed in a.seeds:
        if a.report:
            pairs.append((out / f"s{seed}", out / phase_name(seed, a.value_steps, phase_flags)))
        else:
            pairs.append(pair(out, seed, a.value_steps, a.flags, a.threads, phase_flags))
    print(report(pairs, a.value_steps))
    if a.control:
        control = [(Path(a.control) / pre.name, Path(a.control) / phase.name)
                   for pre, phase in pairs]
        missing = [str(q) for _, q in control if not (q / "summary.json").exists()]
        if missing:
            raise SystemExit(f"--control {a.control}: no finished phase run {missing}")
        print("\n" + versus(pairs, control))


if __name__ == "__main__":
    main()
