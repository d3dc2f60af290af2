"""The layout of the project's two packages, ``imgmdp_env`` (the environment) and ``agents``
(the pre-training agents), read from their source with ``ast`` (nothing is imported):

- **No import cycle.** The graph has an edge ``a -> b`` for each import in module ``a`` that
  names project module ``b`` (``import b``, ``from b import x``; ``from pkg import b`` when ``b``
  is a module of ``pkg``). Only module-level imports count: those that run when ``a`` is
  imported (at the top, in ``if`` / ``try`` blocks, in class bodies). Not counted: the implicit
  import of a module's own parent packages (always there), imports under
  ``if TYPE_CHECKING:`` (never run), and imports inside functions, which run at the first call,
  after every module is loaded: a lazy import is the standard way to break a cycle. A lazy
  import that would close a cycle if it moved to the top is allowed only when listed in
  :data:`LAZY_CYCLE_BREAKS`; today none (the last one, ``video -> folder``, went when
  ``VIDEO_EXTENSIONS`` moved to ``folder``, which skips video files in an image folder, so
  that only ``video`` imports ``folder``).

  Other lazy imports (``agents.evaluate`` importing ``agents.method.ab`` in a function, the dataset
  sources of ``imgmdp_env.datasets.make_dataset``, ...) only defer a costly import; they close
  no cycle.
- **imgmdp_env never imports agents**, at module level or in a function: the environment is
  usable (and tested) without the agents.
- **No module uses another module's private name** (a leading underscore, dunders aside):
  no ``from m import _name``, no ``import pkg._mod`` / ``from pkg import _mod`` (a private
  module is private to itself), no ``m._name`` on an imported module ``m``. A name two modules
  share is public (``imgmdp_env.checks``, ``imgmdp_env.datasets.shards.iter_tar``, ...). The
  importers checked are the two packages and the scripts of ``examples/``, ``benchmarks/`` and
  ``studies/`` (for the packages' names); tests may use private names of the module they test.

Each check runs on the repository and on made-up modules that break it, so that a check that
stopped finding anything would fail too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imgmdp_env", "agents")
SCRIPT_DIRS = ("examples", "benchmarks", "studies")  # importers of the packages' names

# lazy imports (inside functions) that would close an import cycle at module level:
# (importer, imported), each explained in the module docstring
LAZY_CYCLE_BREAKS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the project module the statement names
    names: tuple[str, ...]  # the names taken from it (from-imports), else ()
    line: int
    lazy: bool  # inside a function: runs at the first call, not on import

    def __str__(self) -> str:
        what = f"from {self.target} import {', '.join(self.names)}" if self.names \
            else f"import {self.target}"
        return f"{self.importer}:{self.line}: {what}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def module_sources(root: Path, dirs: tuple[str, ...]) -> dict[str, tuple[str, bool]]:
    """``{dotted module name: (source, is_package)}`` of every ``.py`` file under ``dirs``."""
    out = {}
    for top in dirs:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path.read_text(), is_pkg)
    return out


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module):
    """``(node, lazy)`` for every import statement, ``if TYPE_CHECKING:`` blocks left out."""
    stack = [(n, False) for n in tree.body]
    while stack:
        node, lazy = stack.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, lazy
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module of ``from ... import``, relative forms resolved."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[:len(parts) - node.level + 1]  # from . import x: the package itself
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, source: str, is_pkg: bool, project: set[str]) -> list[Import]:
    """The imports of module ``name`` that name a module of ``project``."""
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node, lazy in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    out.append(Import(name, alias.name, (), node.lineno, lazy))
            continue
        module = _from_module(node, package)
        if module.split(".")[0] not in PACKAGES:
            continue
        taken = []
        for alias in node.names:
            if f"{module}.{alias.name}" in project:  # from pkg import submodule
                out.append(Import(name, f"{module}.{alias.name}", (), node.lineno, lazy))
            else:
                taken.append(alias.name)
        if taken:
            out.append(Import(name, module, tuple(taken), node.lineno, lazy))
    return out


def private_uses(name: str, source: str, is_pkg: bool, project: set[str]) -> list[str]:
    """Where module ``name`` uses a private name of another project module."""
    tree = ast.parse(source)
    package = name if is_pkg else name.rpartition(".")[0]
    found, modules = [], {}  # modules: local name -> the project module it is bound to
    for imp in imports(name, source, is_pkg, project):
        if imp.target != name and any(_private(p) for p in imp.target.split(".")):
            found.append(f"{imp} (a private module)")
        for n in imp.names:
            if imp.target != name and _private(n):
                found.append(f"{imp} (the private name {n})")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in project or a.name.split(".")[0] in PACKAGES:
                    modules[a.asname or a.name.split(".")[0]] = \
                        a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, package)
            for a in node.names:
                if f"{module}.{a.name}" in project:
                    modules[a.asname or a.name] = f"{module}.{a.name}"
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain, value = [], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in modules:
            owner = ".".join([modules[value.id], *reversed(chain)])
            if owner in project and owner != name:
                found.append(f"{name}:{node.lineno}: {ast.unparse(node)} (the private name "
                             f"{node.attr} of {owner})")
    return found


def graph(edges: list[Import]) -> dict[str, set[str]]:
    """The module-level import graph (self-imports left out)."""
    out: dict[str, set[str]] = {}
    for e in edges:
        if not e.lazy and e.target != e.importer:
            out.setdefault(e.importer, set()).add(e.target)
    return out


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``g`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(u: str, path: list[str]) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (cycle := visit(v, path)):
                return cycle
        path.pop()
        state[u] = 2
        return None

    for u in sorted(g):
        if u not in state and (cycle := visit(u, [])):
            return cycle
    return None


def reaches(g: dict[str, set[str]], a: str, b: str) -> bool:
    seen, todo = set(), [a]
    while todo:
        u = todo.pop()
        if u == b:
            return True
        if u not in seen:
            seen.add(u)
            todo.extend(g.get(u, ()))
    return False


def cycle_breaks(edges: list[Import]) -> set[tuple[str, str]]:
    """The lazy imports ``(a, b)`` that would close a cycle at module level."""
    g = graph(edges)
    return {(e.importer, e.target) for e in edges
            if e.lazy and e.target != e.importer and reaches(g, e.target, e.importer)}


def all_imports(sources: dict[str, tuple[str, bool]]) -> list[Import]:
    project = set(sources)
    return [imp for name, (src, is_pkg) in sources.items()
            for imp in imports(name, src, is_pkg, project)]


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[str, bool]]:
    found = module_sources(ROOT, PACKAGES)
    assert {"imgmdp_env", "imgmdp_env.env", "imgmdp_env.checks", "agents", "agents.method.ab"} \
        <= set(found), sorted(found)
    return found


def test_no_import_cycle_among_the_packages_modules(sources):
    edges = all_imports(sources)
    assert len(graph(edges)) > 20  # the scan sees the imports
    cycle = find_cycle(graph(edges))
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_lazy_imports_that_break_a_cycle_are_the_listed_ones(sources):
    found = cycle_breaks(all_imports(sources))
    assert not found - LAZY_CYCLE_BREAKS, (
        f"lazy imports that would close an import cycle at module level: "
        f"{sorted(found - LAZY_CYCLE_BREAKS)}; move the shared code so that the modules do not "
        "need each other, or list the import in LAZY_CYCLE_BREAKS and explain it in this "
        "module's docstring")
    assert not LAZY_CYCLE_BREAKS - found, (
        f"listed in LAZY_CYCLE_BREAKS but no longer closing a cycle (or gone): "
        f"{sorted(LAZY_CYCLE_BREAKS - found)}; remove them from the list and the docstring")


def test_imgmdp_env_never_imports_agents(sources):
    bad = [str(e) for e in all_imports(sources)
           if e.importer.split(".")[0] == "imgmdp_env" and e.target.split(".")[0] == "agents"]
    assert not bad, bad


def test_no_module_uses_another_modules_private_names(sources):
    scripts = module_sources(ROOT, SCRIPT_DIRS)
    project = set(sources)
    bad = [use for name, (src, is_pkg) in {**sources, **scripts}.items()
           for use in private_uses(name, src, is_pkg, project)]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------- the checks catch what they forbid

FAKE = {
    "imgmdp_env": ("from imgmdp_env.env import Env\n", True),
    "imgmdp_env.env": ("from imgmdp_env import checks as check\n"
                       "from imgmdp_env.views import render\n", False),
    "imgmdp_env.checks": ("def _show(x):\n    return repr(x)\n", False),
    "imgmdp_env.views": ("def render():\n    from imgmdp_env.env import Env\n", False),
    "imgmdp_env._kernel": ("", False),
    "agents": ("", True),
    "agents.evaluation.probes": ("def _device_of(m):\n    return m\n", False),
}


def fake(**changed: str) -> dict[str, tuple[str, bool]]:
    """:data:`FAKE` with the sources of some modules replaced (``imgmdp_env__env`` names
    ``imgmdp_env.env``)."""
    out = dict(FAKE)
    for key, src in changed.items():
        name = key.replace("__", ".")
        out[name] = (src, out[name][1])
    return out


def test_the_checks_pass_the_clean_fake_packages():
    edges = all_imports(FAKE)
    assert find_cycle(graph(edges)) is None
    assert cycle_breaks(edges) == {("imgmdp_env.views", "imgmdp_env.env")}  # a lazy break
    assert not [u for n, (s, p) in FAKE.items() for u in private_uses(n, s, p, set(FAKE))]


@pytest.mark.parametrize("module, source", [
    ("imgmdp_env__views", "from imgmdp_env.env import Env\n"),  # the lazy import moved up
    ("imgmdp_env__views", "import imgmdp_env.env\n"),
    ("imgmdp_env__checks", "from imgmdp_env import env\n"),  # via the submodule form
    ("imgmdp_env__checks", "try:\n    from imgmdp_env import Env\nexcept ImportError:\n"
                           "    pass\n"),  # the package __init__, in a try block
    ("imgmdp_env__views", "from . import env\n"),  # relative
])
def test_an_added_module_level_cycle_is_found(module, source):
    cycle = find_cycle(graph(all_imports(fake(**{module: source}))))
    assert cycle is not None and cycle[0] == cycle[-1]


def test_type_checking_imports_close_no_cycle():
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from imgmdp_env.env import E\n"
    assert find_cycle(graph(all_imports(fake(imgmdp_env__views=src)))) is None


def test_an_import_of_agents_from_imgmdp_env_is_found():
    for src in ("import agents.evaluation.probes\n", "def f():\n    from agents import probes\n"):
        edges = all_imports(fake(imgmdp_env__checks=src))
        assert [e for e in edges if e.importer == "imgmdp_env.checks"
                and e.target.startswith("agents")], src


@pytest.mark.parametrize("source, what", [
    ("from imgmdp_env.checks import _show\n", "the private name _show"),
    ("def f():\n    from imgmdp_env.checks import _show\n", "the private name _show"),
    ("from agents.evaluation.probes import _device_of\n", "the private name _device_of"),
    ("from imgmdp_env import _kernel\n", "a private module"),
    ("import imgmdp_env._kernel\n", "a private module"),
    ("from imgmdp_env._kernel import run\n", "a private module"),
    ("from imgmdp_env import checks as check\ncheck._show(1)\n", "the private name _show"),
    ("import imgmdp_env.checks\nimgmdp_env.checks._show(1)\n", "the private name _show"),
    ("from . import checks\nchecks._show(1)\n", "the private name _show"),
])
def test_an_added_private_import_is_found(source, what):
    found = private_uses("imgmdp_env.views", source, False, set(FAKE))
    assert found and what in found[0], found


def test_a_module_may_use_its_own_private_names():
    src = "def _show(x):\n    return x\n\n_show(1)\n"
    assert not private_uses("imgmdp_env.checks", src, False, set(FAKE))


def test_the_training_loop_stays_one_short_file():
    """Issue 22: the training job reads top to bottom in one file of about 250 lines, with the
    backward pass and the optimizer step in it (not hidden in a helper module)."""
    text = (ROOT / "agents" / "train_value.py").read_text()
    assert len(text.splitlines()) <= 260, len(text.splitlines())
    for needed in ("loss.backward()", "optimizer.step()", "agent.update_target(",
                   "sampler.sample(", "save_checkpoint("):
        assert needed in text, needed
