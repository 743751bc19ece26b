"""The API reference builds without a warning, it covers every module of the package, and
every Python block of the README and of ``docs/*.md`` runs.

``sphinx-build -W --keep-going -b html docs DIR`` turns every docutils or autodoc warning (a
malformed docstring table, a module that fails to import, a broken toctree entry) into a
failure, so a docstring that breaks the reference fails the suite rather than the
documentation site. The build takes 10-30 s on 2 cores (it imports the whole package), hence
the ``slow`` mark.

**The code blocks.** Every fenced block of ``README.md``, ``CONTRIBUTING.md`` and
``docs/*.md`` names its language; the ```` ```python```` blocks of ``README.md`` and
``docs/*.md`` run, those of one file in order in one namespace (a block continues the ones
before it), in a temporary working directory, with the figure backend ``Agg``. So that they
take seconds, the test shrinks the integer literals of training lengths in the code before
running it (``epochs=1000`` runs as ``epochs=2``; see ``SHRINK``): the blocks read as a user
runs them, and only their numbers change. A block whose first line is ``FRESH_PROCESS`` runs in
a new Python process instead (in the same directory), which must not import
``pyro_sparse_bnn`` or Pyro: it shows what works without the package.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "pyro_sparse_bnn"

#: Markdown whose fenced blocks must name their language, and those whose Python blocks run
FENCED = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.glob("*.md"))]
RUNNABLE = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
#: keyword (or assignment) -> the value it runs with: ``epochs=1000`` becomes ``epochs=2``
SHRINK = {"epochs": 2, "num_samples": 4, "num_steps": 3}
#: first line of a block that runs in a new process without the package
FRESH_PROCESS = "# a fresh Python process: no pyro_sparse_bnn, no Pyro"

_FENCE = re.compile(r"^```(\S*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_SHRINK = re.compile(r"\b(" + "|".join(SHRINK) + r")(\s*=\s*)(\d+)\b")

#: modules documented elsewhere: the priors' package only re-exports its modules' classes
#: (its docstring table is not reST), and ``__main__`` is the command-line entry point
NOT_IN_REFERENCE = {"pyro_sparse_bnn.core.priors", "pyro_sparse_bnn.__main__"}


def _modules():
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def fenced_blocks(path):
    """``(language, first line number, code)`` of every fenced block in ``path``."""
    text = path.read_text()
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _FENCE.finditer(text)]


def shrink(code: str) -> str:
    """``code`` with the training lengths of ``SHRINK`` cut down (never lengthened)."""
    return _SHRINK.sub(lambda m: f"{m.group(1)}{m.group(2)}{min(int(m.group(3)), SHRINK[m.group(1)])}", code)


def test_shrink_only_touches_training_lengths():
    code = "fit(bnn, x, y, epochs=1000)\nnum_steps = 1500\npredict(x, num_samples=1)\nmy_epochs=9\n"
    assert shrink(code) == "fit(bnn, x, y, epochs=2)\nnum_steps = 3\npredict(x, num_samples=1)\nmy_epochs=9\n"


@pytest.mark.parametrize("path", FENCED, ids=lambda path: path.name)
def test_every_code_block_names_its_language(path):
    text = path.read_text()
    fences = [line for line in text.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0, f"{path.name}: a code block is not closed"
    openings = fences[::2]
    assert all(len(line) > 3 for line in openings), \
        f"{path.name}: a code block without a language (python, bash, text, ...)"
    assert len(fenced_blocks(path)) == len(openings)


def _python_files():
    return [path for path in RUNNABLE if any(lang == "python" for lang, _, _ in fenced_blocks(path))]


def test_the_docs_have_python_blocks():
    names = {path.name for path in _python_files()}
    assert {"README.md", "pyro_idioms.md", "deployment.md"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", _python_files(), ids=lambda path: path.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    namespace = {"__name__": "__main__"}
    try:
        for language, line, code in fenced_blocks(path):
            if language != "python":
                continue
            code = shrink(code)
            where = f"{path.name}, block at line {line}"
            if code.startswith(FRESH_PROCESS):
                check = ("\nimport sys\nloaded = {'pyro_sparse_bnn', 'pyro'} & set(sys.modules)\n"
                         "assert not loaded, f'imported {loaded}'\n")
                result = subprocess.run([sys.executable, "-c", code + check], cwd=tmp_path, env=env,
                                        capture_output=True, text=True, timeout=300)
                assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
            else:
                exec(compile(code, where, "exec"), namespace)
    finally:
        plt.close("all")


def test_every_module_is_in_the_api_reference():
    pages = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.rst"))
    documented = {line.split("::", 1)[1].strip() for line in pages.splitlines()
                  if line.startswith(".. automodule::")}
    missing = set(_modules()) - documented - NOT_IN_REFERENCE
    assert not missing, f"modules missing from docs/api/*.rst: {sorted(missing)}"


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "html" / "api" / "core.html").is_file()


def _small_spike_slab():
    """The 4-8-2 SpikeSlab network of docs/pyro_idioms.md, on its data."""
    from torch import nn

    import pyro_sparse_bnn as psb

    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] - 2 * x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    bnn = psb.SparseBNN(net, psb.SpikeSlab(prior_inclusion=0.1), likelihood="categorical", num_data=len(x))
    return bnn, x, y


def test_render_model_draws_our_sample_sites():
    """``pyro.render_model`` needs only the graphviz Python package (the ``graphviz`` and
    ``dev`` extras), not Graphviz's ``dot`` program; the picture in docs/pyro_idioms.md is
    the rendering of the graph of that page's network and has its nodes."""
    graphviz = pytest.importorskip("graphviz")
    import pyro
    from pyro import poutine
    from pyro.poutine.util import site_is_subsample

    bnn, x, y = _small_spike_slab()
    graph = pyro.render_model(bnn.model, model_args=(x, y), render_distributions=True)
    assert isinstance(graph, graphviz.Digraph)
    trace = poutine.trace(bnn.model).get_trace(x, y)
    sites = {name for name, site in trace.nodes.items()
             if site["type"] == "sample" and not site_is_subsample(site)}
    assert sites == {"net.0.edge_indicator", "net.0.slab", "net.2.edge_indicator", "net.2.slab", "obs"}
    for name in sites:
        assert f'"{name}" [label="{name}"' in graph.source or f"{name} [label={name}" in graph.source
    assert "obs ~ Categorical" in graph.source and "net.0.slab ~ Normal" in graph.source

    picture = (DOCS / "images" / "model_graph.svg").read_text()
    drawn = set(re.findall(r'class="node">\s*<title>([^<]*)</title>', picture))
    assert drawn == sites | {"distribution_description_node"}, \
        "docs/images/model_graph.svg is not the graph of the network in docs/pyro_idioms.md; re-render it"
    assert "![the Pyro model" in (DOCS / "pyro_idioms.md").read_text()
