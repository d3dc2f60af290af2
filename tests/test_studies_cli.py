"""Every study (``studies/``) and benchmark (``benchmarks/``) runs as a module of the repository
root: ``python -m studies.<name> --help`` and ``python -m benchmarks.<name> --help`` exit 0
with their usage, with no ``sys.path`` set-up of their own and nothing on ``PYTHONPATH``."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("studies", "benchmarks")


def _scripts() -> list[str]:
    """The runnable modules: every ``<package>/<name>.py`` but ``__init__`` and the private
    helpers (``_cells``, ``_machine``)."""
    return [f"{pkg}.{p.stem}" for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))
            if not p.stem.startswith("_")]


def _help(module: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_two_folders_are_packages_and_hold_the_right_scripts():
    for pkg in PACKAGES:
        assert (ROOT / pkg / "__init__.py").is_file(), pkg
    scripts = _scripts()
    # the throughput tables stay benchmarks; the scripts that train runs or write results are
    # studies (a sample of each; the rest are listed in docs/architecture.md)
    assert {"benchmarks.env_throughput", "benchmarks.train_throughput",
            "benchmarks.shard_throughput"} <= set(scripts)
    assert {"studies.representation", "studies.value_factors", "studies.find_object",
            "studies.learned_rewards", "studies.gpu_value_check"} <= set(scripts)
    for module in scripts:  # no script puts itself on sys.path any more
        text = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert "sys.path.insert" not in text, module


def test_every_study_and_benchmark_prints_its_help_as_a_module():
    scripts = _scripts()
    assert len(scripts) >= 10
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(scripts, pool.map(_help, scripts), strict=True))
    failed = {m: r.stderr[-1500:] for m, r in results.items()
              if r.returncode != 0 or "usage:" not in r.stdout}
    if failed:
        pytest.fail("\n\n".join(f"python -m {m} --help failed:\n{err}"
                                for m, err in failed.items()))


def test_the_gpu_checks_rehearse_on_the_cpu(tmp_path):
    """benchmarks/gpu_checks.py --quick --device cpu: every step runs (throughput with the
    views rendered on the device and on the CPU, the training tests) and the report holds
    each step's exit code and the throughput tables with their MFU column."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu_checks", "--quick", "--device",
                          "cpu", "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    report = (tmp_path / "gpu_checks.md").read_text()
    for step in ("throughput_render_device", "throughput_render_cpu", "tests_training"):
        assert f"## {step}: exit 0" in report, report
    assert "| MFU |" in report and "| AB_SimCLR (ours, ab_weight=1) |" in report
    assert "| encoder alone: ours (cnn) |" in report


def test_find_object_pairs_search_with_its_baselines_per_seed():
    """The paired rows: search minus each baseline on the same episode seeds (a difference of
    the per-seed values, not of the means alone), the interval from the differences' spread."""
    from studies.find_object import paired_rows

    def cell(policy, seed, success, ret):
        return {"policy": policy, "seed": seed, "success": success, "mean_return": ret}

    cells = [cell("grid-random", 0, 0.30, 2.0), cell("grid-random", 1, 0.50, 2.0),
             cell("grid-random", 2, 0.40, 2.0), cell("search-softmax", 0, 0.40, 2.0),
             cell("search-softmax", 1, 0.61, 2.0), cell("search-softmax", 2, 0.49, 2.0),
             cell("search", 0, 0.1, 1.0)]  # one seed: no row
    rows = paired_rows(cells)
    assert len(rows) == 4 and rows[-1].startswith("| search-softmax - grid-random | +0.100 +- ")
    assert rows[-1].split("|")[2].strip().endswith("*")  # 0.10, 0.11, 0.09: outside the noise
    assert "+0.000 +- 0.000" in rows[-1] and rows[-1].endswith("| 3 |")
    assert paired_rows(cells[:3]) == []
