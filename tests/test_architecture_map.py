"""docs/architecture.md's "What lives where" is the map of the code: every module of
``imgmdp_env``, ``agents``, ``studies``, ``benchmarks`` and ``examples`` has its line, and every
path it names exists. A new or moved file fails here until the map says where it is."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("imgmdp_env", "agents", "studies", "benchmarks", "examples")
NOT_LISTED = {"studies/__init__.py", "benchmarks/__init__.py"}  # empty package markers


def mapped_paths() -> set[str]:
    """The repository-relative paths in the section's tables: under a ``### `folder/` ...``
    heading that names one folder, a row's path is relative to it."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## What lives where", 1)[1].split("\n## ", 1)[0]
    paths, prefix = set(), ""
    for line in section.splitlines():
        heading = re.match(r"### `([^`]+/)`(: |$)", line)
        if line.startswith("### "):
            prefix = heading.group(1) if heading else ""
        elif line.startswith("| `"):
            path = re.match(r"\| `([^`]+)`", line).group(1)
            paths.add(path if "/" in path and path.split("/")[0] in {*MAPPED, "tests", "docs"}
                      else prefix + path)
    return paths


def test_every_module_has_its_line_in_the_map():
    listed = mapped_paths()
    modules = {p.relative_to(ROOT).as_posix() for pkg in MAPPED for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    missing = sorted(modules - listed - NOT_LISTED)
    assert not missing, f"docs/architecture.md's 'What lives where' lacks {missing}"


def test_every_path_in_the_map_exists():
    stale = sorted(p for p in mapped_paths()
                   if "<" not in p and not (ROOT / p.rstrip("/")).exists())
    assert not stale, f"docs/architecture.md's 'What lives where' names missing {stale}"
