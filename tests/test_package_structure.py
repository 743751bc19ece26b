"""The package's shape: imports run one way (apps -> persistence -> analysis -> core), no module
imports another in a circle, and importing the package is quiet and light.

The import graph is read from the source with ``ast`` (every ``import`` statement, at any
depth), not from ``sys.modules``, so an import hidden inside a function counts too.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_sparse_bnn"
#: each layer may import only from the layers after it
LAYERS = ["apps", "persistence", "analysis", "core"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(importer: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str):
    """``(imported module, line, at top level?)`` for every import of a package module in
    module ``name``; ``from package import module`` names the module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    type_checking = {id(sub) for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                     for sub in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node, path.name == "__init__.py")
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "pyro_sparse_bnn":
                found.append((target, node.lineno, id(node) in top_level))
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_graph_reader_sees_what_it_should():
    """The reader itself: a known top-level import, a known relative one, resolution of
    ``from . import x`` to a module, and the subpackages as declared."""
    fit_imports = {target for target, _, _ in GRAPH["pyro_sparse_bnn.core.fit"]}
    assert {"pyro_sparse_bnn.core.elbo", "pyro_sparse_bnn.core.checkpoint"} <= fit_imports
    zoo_imports = {target for target, _, _ in GRAPH["pyro_sparse_bnn.apps.zoo.run"]}
    assert {"pyro_sparse_bnn.apps.datasets", "pyro_sparse_bnn.apps.zoo.entries", "pyro_sparse_bnn.analysis.plots"} <= zoo_imports
    assert {layer_of(name) for name in MODULES} == set(LAYERS) | {None}


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_run_one_way(layer):
    allowed = set(LAYERS[LAYERS.index(layer):])
    upward = [f"{name}:{line} imports {target}" for name in MODULES if layer_of(name) == layer
              for target, line, _ in GRAPH[name] if target == "pyro_sparse_bnn" or layer_of(target) not in allowed]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    """Depth-first search for a back edge over all package modules (packages included)."""
    state, cycles = {}, []

    def visit(name, stack):
        state[name] = "open"
        for target, _, _ in GRAPH[name]:
            if target not in MODULES:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[name] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_package_modules_are_imported_at_the_top_of_the_file():
    """An import of a package module inside a function is how a cycle hides; there is none."""
    hidden = [f"{name}:{line} imports {target}" for name in MODULES for target, line, top in GRAPH[name] if not top]
    assert not hidden, "\n".join(hidden)


def test_import_is_quiet_and_leaves_the_heavy_libraries_unloaded():
    """A fresh interpreter writes nothing to stderr (no warnings of ours or our dependencies'),
    and ArviZ, matplotlib and pandas load only when a function that needs them runs; Lightning
    (an optional extra) only when the Lightning module is first used, not when its module is
    imported."""
    script = ("import sys, pyro_sparse_bnn, pyro_sparse_bnn.core.lightning\n"
              "print(sorted(m for m in ('arviz', 'matplotlib', 'pandas', 'lightning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == "[]"


def test_the_heavy_libraries_load_when_first_used():
    script = ("import sys, pyro_sparse_bnn as psb\n"
              "bnn = psb.SparseBNN(psb.mlp([3, 2, 2]), psb.SpikeSlab())\n"
              "bnn.num_steps += 1  # as if fitted\n"
              "print('pandas' in sys.modules, type(psb.inclusion_summary(bnn)).__name__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PACKAGE.parent,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False DataFrame"
