"""The GPU checks in one prepared command: everything a short GPU window should measure, each
step with its own time limit, each output kept, and one table file at the end.

    python -m benchmarks.gpu_checks --out gpu_checks            # on the GPU machine (at most 7 min)
    python -m benchmarks.gpu_checks --quick --device cpu --out /tmp/rehearsal   # CPU rehearsal

Steps (in order; a failed or timed-out step is recorded and the next one runs):

1. ``train_throughput``: the ``gpu-vits16`` step (AB_SimCLR, SimCLR, the cheap variant) with
   the views rendered on the device, beside the encoder alone (ours and timm's ViT-S/16 when
   timm is installed), with MFU against a bf16 matmul peak measured in the same run and the
   data share of each step.
2. The same with the views rendered on the CPU (``--render-on cpu``): what rendering on the
   device saves.
3. The training and distributed tests of the suite on this machine's torch
   (``tests/test_train_value.py``, ``tests/test_distributed.py``).

Writes ``<out>/<step>.txt`` (each step's output) and ``<out>/gpu_checks.md`` (the tables and a
line per step: exit code and seconds).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def steps(device: str, quick: bool) -> list[tuple[str, list[str], int]]:
    """``(name, command, time limit in s)`` of every check."""
    py = sys.executable
    if quick:  # the CPU rehearsal: the same commands at a toy size
        size = ["--preset", "cpu-small", "--batch", "8", "--rounds", "1", "--steps", "1",
                "--warmup", "1", "--threads", "1"]
        tests = ["-k", "compile or check_every or presets"]
    else:
        size = ["--preset", "gpu-vits16", "--batch", "256", "--rounds", "3", "--steps", "4"]
        tests = []
    bench = [py, "-m", "benchmarks.train_throughput", "--device", device, "--skip-lightly",
             *size]
    return [
        ("throughput_render_device", [*bench, "--render-on", "device"], 150),
        ("throughput_render_cpu", [*bench, "--render-on", "cpu", "--no-encoder-rows"], 100),
        ("tests_training", [py, "-m", "pytest", "-q", "-x", "tests/test_train_value.py",
                            "tests/test_distributed.py", "tests/test_timm_encoder.py", *tests],
         180),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the outputs (created)")
    p.add_argument("--device", default="cuda", help="cuda (the checks) or cpu (a rehearsal)")
    p.add_argument("--quick", action="store_true", help="toy sizes: rehearse on the CPU")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    report = ["# GPU checks", "", f"device {args.device}; quick {args.quick}", ""]
    failed = 0
    for name, cmd, limit in steps(args.device, args.quick):
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=limit)
            code, text = res.returncode, res.stdout + res.stderr
        except subprocess.TimeoutExpired as e:
            code = "timeout"
            text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
                else (e.stdout or "")
        took = time.perf_counter() - t0
        failed += code != 0
        (out / f"{name}.txt").write_text(f"$ {' '.join(cmd)}\n\n{text}")
        tables = [ln for ln in text.splitlines() if ln.startswith(("|", "machine:", "preset"))]
        report += [f"## {name}: exit {code}, {took:.0f} s", "", *tables, ""]
        print(f"{name}: exit {code}, {took:.0f} s", flush=True)
    (out / "gpu_checks.md").write_text("\n".join(report) + "\n")
    print(f"wrote {out / 'gpu_checks.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
