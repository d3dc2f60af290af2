"""One study cell = one ``agents/train_value.py`` run whose figures are kept as a JSON file.

Shared by the resumable studies (``studies.representation``, ``studies.value_factors``, and the
cell files of ``studies.find_object`` / ``studies.learned_rewards``): a finished cell
is a file ``<out>/<cell id>.json`` (written atomically, with the config, the figures, the wall
time, the machine and its load), and a rerun skips it; a cell's run folder under
``<out>/runs/`` is scratch (not committed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from agents.infra.checkpoint import atomic_write
from benchmarks._machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """The machine a cell ran on, as the JSON files record it."""
    return f"{cpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}"


def code_version() -> str:
    """The commit the cell ran (``-dirty``: with uncommitted changes), as git describes it."""
    res = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                         capture_output=True, text=True)
    return res.stdout.strip() or "unknown"


def load_cell(out: Path, cell_id: str) -> dict | None:
    """The finished cell's record, or None if it has not run. A cell written before the side
    of the generated scenes was named ``scene_size`` records it as ``settings.image_size``:
    read under the new name, so an unchanged cell still matches its settings and is kept."""
    path = out / f"{cell_id}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    settings = record.get("settings") if isinstance(record, dict) else None
    if isinstance(settings, dict) and "image_size" in settings:
        record["settings"] = {("scene_size" if k == "image_size" else k): v
                              for k, v in settings.items()}
    return record


def save_cell(out: Path, cell_id: str, record: dict) -> None:
    """Write a finished cell's record atomically (a torn file never counts as finished)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{cell_id}.json", json.dumps(record, indent=2).encode())


def views_per_step(flags: list[str], bootstrap: bool) -> int:
    """Training views of one step of the ``train_value.py`` run these flags describe, from the
    real sampler (so the base method can be given equal views seen)."""
    from agents.infra.sources import build_datasets
    from agents.infra.train_utils import build_agent
    from agents.train_value import parse_args

    args = parse_args([*flags, "--dataset-size", "64", "--no-probe"])
    _, sampler = build_agent(args, build_datasets(args))
    return sampler.views_per_step(bootstrap and args.ab.ab_weight > 0)


def run_train(flags: list[str], out: Path, name: str, threads: int) -> tuple[dict, float, str]:
    """Run ``train_value.py`` with ``flags`` into ``<out>/runs/<name>`` (a leftover folder of an
    interrupted attempt is resumed, so a cell is never trained twice from scratch); returns
    ``(summary.json, wall seconds, load average during the run)``. Raises RuntimeError with the
    run's stderr tail if it fails."""
    runs = out / "runs"
    run_dir = runs / name
    if (run_dir / "checkpoint.pt").exists():
        cmd = ["--resume", str(run_dir)]
    else:
        if run_dir.exists():  # created but never checkpointed: nothing to keep
            import shutil

            shutil.rmtree(run_dir)
        cmd = ["--runs-dir", str(runs), "--name", name, *flags]
    cmd = [sys.executable, str(ROOT / "agents" / "train_value.py"), *cmd,
           "--threads", str(threads), "--no-tensorboard"]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    wall = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(f"{name} failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    load = f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"
    return json.loads((run_dir / "summary.json").read_text()), wall, load
