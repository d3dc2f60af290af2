"""The prepared GPU check of the value function: AB_SimCLR and its equal-steps base (SimCLR,
``--ab-weight 0``) at the CPU-scale flags (``cpu-small``: the CNN on 64-pixel views of the
default scenes), several seeds each, all runs side by side on one device, for many more steps
than a CPU affords. Every ``--steps / --segments`` steps each run stops with a checkpoint, its
value function is measured on the fixed probe test images (accuracy by IoU beside copy and
beside itself with permuted actions: ``agents/evaluate.py --no-probes``), and it resumes. At the
end every run is probed (linear, kNN, attentive). Writes ``<out>/check.json`` and
``<out>/check.md`` (the tables).

    python -m studies.gpu_value_check --device cuda --steps 20000            # on a GPU
    python -m studies.gpu_value_check --device cpu --steps 40 --segments 2 \\
        --out /tmp/gpu_check --no-probe                                     # a rehearsal

Run from the repository root; that also serves a machine without the project installed (the
runs it starts get the repository on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agents.evaluate import SPLIT_IOU  # far pairs below, near at or above

ROOT = Path(__file__).resolve().parents[1]

TRAIN = [sys.executable, str(ROOT / "agents" / "train_value.py")]
EVAL = [sys.executable, str(ROOT / "agents" / "evaluate.py")]
ROW = re.compile(r"^\| (value function Q_AB|copy x_i's own annotation|Q_AB, actions permuted"
                 r" within the bin|pairs) \|(.*)\|$")
HEAD = re.compile(r"^\| IoU\(x_i, x_j\) \|(.*)\|$")


def run(cmd: list[str], log: Path) -> str:
    """Run a command, append its output to ``log``; raise with its tail if it fails."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{res.stdout}\n{res.stderr}\n")
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return res.stdout


def parse_value(text: str) -> dict[str, list[float]]:
    """The rows of the value table that ``evaluate.py`` prints, by name."""
    rows = {}
    for line in text.splitlines():
        m, h = ROW.match(line.strip()), HEAD.match(line.strip())
        if m:
            rows[m.group(1)] = [float(x) for x in m.group(2).split("|")]
        elif h:  # the bins, "LO-HI": their upper edges
            rows["bin_hi"] = [float(b.split("-")[1]) for b in h.group(1).split("|")]
    return rows


def one_run(name: str, flags: list[str], a, out: Path) -> dict:
    """Train one run in segments, measuring its value function after each."""
    log = out / f"{name}.log"
    run_dir = out / "runs" / name
    points = []
    t0 = time.perf_counter()
    for k in range(1, a.segments + 1):
        stop = a.steps * k // a.segments
        if not (run_dir / "checkpoint.pt").exists():
            cmd = [*TRAIN, "--runs-dir", str(out / "runs"), "--name", name, *flags]
        else:
            cmd = [*TRAIN, "--resume", str(run_dir)]
        last = k == a.segments
        run(cmd + ["--device", a.device, "--threads", "1", "--no-tensorboard",
                   *([] if last else ["--stop-at", str(stop)]),
                   *(["--probe"] if (last and a.probe) else ["--no-probe"])] +
            (["--total-steps", str(a.steps)] if k == 1 else []), log)
        if "--ab-weight" in flags:  # the base: no value function to measure
            continue
        text = run([*EVAL, "--checkpoint", str(run_dir), "--no-probes", "--device", a.device,
                    "--threads", "1", "--value-batches", str(a.value_batches)], log)
        points.append({"step": stop, "value": parse_value(text),
                       "wall_s": time.perf_counter() - t0})
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"name": name, "flags": flags, "points": points, "probes": summary["probes"],
            "final": summary["final"], "wall_s": time.perf_counter() - t0}


def _avg(xs: list[float], counts: list[float], sel: list[int]) -> float:
    """The pair-weighted mean of per-bin accuracies over the bins ``sel``."""
    return sum(xs[i] * counts[i] for i in sel) / max(sum(counts[i] for i in sel), 1)


def tables(results: list[dict]) -> str:
    lines = [f"| run | step | far pairs (IoU < {SPLIT_IOU}): Q / copy / permuted | near pairs: "
             "Q / copy |",
             "|---|---:|---|---|"]
    for r in results:
        for p in r["points"]:
            v = p["value"]
            q, c, pm, n = (v.get(k, []) for k in ("value function Q_AB",
                                                  "copy x_i's own annotation",
                                                  "Q_AB, actions permuted within the bin",
                                                  "pairs"))
            if not n:
                continue
            hi = v.get("bin_hi", [])
            far = [i for i, h in enumerate(hi) if h <= SPLIT_IOU + 1e-9]
            near = [i for i in range(len(n)) if i not in far]
            lines.append(f"| {r['name']} | {p['step']} | {_avg(q, n, far):.3f} / "
                         f"{_avg(c, n, far):.3f} / {_avg(pm, n, far):.3f} | "
                         f"{_avg(q, n, near):.3f} / {_avg(c, n, near):.3f} |")
    lines += ["", "| run | linear | kNN | attentive |", "|---|---:|---:|---:|"]
    for r in results:
        acc = r["probes"].get("trained") or next(iter(r["probes"].values()), {})
        if acc:
            lines.append(f"| {r['name']} | {acc['linear']:.3f} | {acc['knn']:.3f} | "
                         f"{acc['attentive']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20000, help="optimizer steps per run")
    p.add_argument("--segments", type=int, default=4, help="value measurements per AB run")
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2])
    p.add_argument("--value-batches", type=int, default=64)
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", default="gpu_value_check")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in a.seeds:
        jobs.append((f"ab_s{s}", ["--seed", str(s)]))
        jobs.append((f"base_s{s}", ["--seed", str(s), "--ab-weight", "0"]))
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda j: one_run(j[0], j[1], a, out), jobs))
    (out / "check.json").write_text(json.dumps(results, indent=2))
    text = tables(results)
    (out / "check.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
