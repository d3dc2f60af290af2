"""How long idle OpenMP threads spin before they sleep (``GOMP_SPINCOUNT``): the training step
on free cores and beside a process that keeps one core busy.

``agents/train_value.py`` sets ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once) unless
the caller set it; ``GOMP_SPINCOUNT`` (libgomp, the OpenMP runtime of the PyTorch wheels)
overrides how many spins an idle thread makes first (about 100,000 per millisecond). Each row
runs the real loop, ``train_value.py`` in a child process with that environment: a fresh
``cpu-small`` run of ``--steps`` pre-training steps, then ``--steps`` value-phase steps on 10
cached batches of 40 bootstrap images at gamma 0 (``make train``'s phase), and reports the
median time of the loop's ``train_step`` in each part. ``busy``: a ``yes > /dev/null``
process runs beside the child (one core kept busy by another program).

    .venv/bin/python -m benchmarks.omp_spin [--spins 0 100000] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def child(steps: int, out: str) -> None:
    """Run the loop, timing each ``train_step``; print ``{"pretraining": ms, "phase": ms}``."""
    import agents.train_value as tv  # sets OMP_WAIT_POLICY before torch loads

    times: list[float] = []
    step = tv.train_step

    def timed(*a, **k):
        t = time.perf_counter()
        result = step(*a, **k)
        times.append(1000 * (time.perf_counter() - t))
        return result

    tv.train_step = timed
    tv.main(["--total-steps", str(steps), "--value-steps", str(steps), "--value-cache", "10",
             "--value-boot-images", "40", "--value-gamma", "0", "--no-probe", "--threads", "2",
             "--runs-dir", out, "--name", "run", "--log-every", str(steps)])
    warm = steps // 4  # the first steps of each part: allocation and warm-up
    print(json.dumps({"pretraining": statistics.median(times[warm:steps]),
                      "phase": statistics.median(times[steps + warm:])}))


def measure(spins: int | None, busy: bool, steps: int) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    if spins is not None:
        env["GOMP_SPINCOUNT"] = str(spins)
    hog = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if busy else None
    try:
        with tempfile.TemporaryDirectory() as out:
            res = subprocess.run([sys.executable, "-m", "benchmarks.omp_spin", "--child",
                                  "--steps", str(steps), "--out", out],
                                 env=env, capture_output=True, text=True, check=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spins", type=int, nargs="+", default=[0, 100000],
                   help="GOMP_SPINCOUNT values (0: train_value.py's default, sleep at once)")
    p.add_argument("--steps", type=int, default=40, help="steps of each part")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.steps, a.out)
    from benchmarks._machine import cpu_model

    print(f"{cpu_model()} ({os.cpu_count()} cores); cpu-small, 2 threads, median train_step "
          f"of {a.steps} pre-training and {a.steps} value-phase steps (after a quarter)\n")
    print("| GOMP_SPINCOUNT | other load | pre-training ms / step | phase ms / step |")
    print("|---:|---|---:|---:|")
    for busy in (False, True):
        for spins in a.spins:
            r = measure(spins, busy, a.steps)
            print(f"| {spins} | {'one core busy' if busy else 'none'} | "
                  f"{r['pretraining']:.0f} | {r['phase']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
