"""The README's Python snippets run as pasted: each in a fresh interpreter, from a folder
outside the repository, with ``runs/<name>`` pointing at a tiny run trained here. A snippet of
docs/guide.md runs too unless the line before it is ``<!-- fragment -->`` (a piece that needs
names from the text around it or data this machine lacks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)
TINY = ["--dataset-size", "24", "--scene-size", "48", "--view-size", "64", "--base-batch", "8",
        "--proj-dim", "16", "--proj-hidden", "32", "--decoder-width", "16", "--decoder-depth",
        "1", "--warmup-steps", "1", "--boot-images", "2", "--n-views", "4", "--threads", "1",
        "--total-steps", "2", "--no-probe", "--value-batches", "1", "--no-tensorboard"]


def snippets(doc: str) -> list[tuple[str, str]]:
    """``(label, code)`` of every runnable ```python block of ``doc`` (relative to ROOT)."""
    text = (ROOT / doc).read_text()
    out = []
    for m in FENCE.finditer("\n" + text):
        if m["before"].strip() == "<!-- fragment -->":
            continue
        line = text[:m.start("code")].count("\n")
        out.append((f"{doc}:{line}", m["code"]))
    return out


ALL = snippets("README.md") + snippets("docs/guide.md")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    res = subprocess.run([sys.executable, "agents/train_value.py", *TINY, "--runs-dir",
                          str(runs), "--name", "tiny"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return runs / "tiny"


def test_the_readme_has_snippets_to_run():
    assert len(snippets("README.md")) >= 5


@pytest.mark.parametrize("label,code", ALL, ids=[label for label, _ in ALL])
def test_snippet_runs_as_pasted(label, code, run_dir, tmp_path):
    code = code.replace("runs/<name>", str(run_dir))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240, env=env)
    assert res.returncode == 0, f"{label}:\n{res.stderr[-3000:]}"
