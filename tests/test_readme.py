"""The README's demo figures are what ``python -m pyro_sparse_bnn demo`` produces.

The demo writes its test-set figures to ``figures.json`` in its ``--output`` directory; the
one from a full run with the default settings is stored as ``docs/results/demo.json``
(CONTRIBUTING.md says how to refresh it). Three checks tie the README to the demo:

* every number in the README's demo bullet is one of the stored figures, formatted as the
  demo prints it, and the bullet quotes the headline ones;
* the stored figures were measured with the demo's current default settings, in the format
  the demo writes now (a changed default or a changed file fails until the demo is rerun);
* ``PSB_FULL_DEMO=1`` reruns the full default demo (a few minutes on one thread) and
  compares what it writes with the stored file; without it that test is skipped, since one
  thread count on one machine reproduces the figures and a few minutes is more than the suite
  spends on one check.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_sparse_bnn.apps.demo import DemoConfig, run_demo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STORED = ROOT / "docs" / "results" / "demo.json"

#: figures the README's demo bullet must quote
HEADLINE = ("architecture_after", "compressed_nonzero_params", "dense_params", "compressed_accuracy",
            "finetuned_accuracy", "dense_accuracy")


def stored():
    return json.loads(STORED.read_text())


def demo_bullet() -> str:
    """The README's performance bullet about the demo, on one line."""
    text = README.read_text()
    match = re.search(r"^\* \*\*Demo\*\*(.*?)(?=^\* |^\n)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '* **Demo**' bullet in its performance section"
    return " ".join(match.group(1).split())


def printed(name: str, value) -> str:
    """``value`` as the demo prints it."""
    if name.endswith("_params"):
        return f"{value:,}"
    if name.endswith("_accuracy"):
        return f"{value:.3f}"
    if name == "points_below_dense":
        return f"{value:.1f}"
    return str(value)


def test_readme_quotes_the_stored_demo_figures():
    figures = stored()
    bullet = demo_bullet()
    quotable = {printed(name, value) for name, value in figures.items() if not isinstance(value, dict)}
    for name in HEADLINE:
        assert printed(name, figures[name]) in bullet, \
            f"the README's demo bullet does not quote {name} = {printed(name, figures[name])}: {bullet}"
    # every figure in the bullet (decimals, counts with thousands separators, architectures),
    # outside code spans (commands and settings such as `OMP_NUM_THREADS=1` are not figures)
    prose = re.sub(r"`[^`]*`", "", bullet)
    numbers = re.findall(r"\d+(?:-\d+)+|\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+", prose)
    unknown = [number for number in numbers if number not in quotable]
    assert not unknown, f"the README's demo bullet quotes {unknown}, which the demo did not produce: {bullet}"


def test_stored_demo_figures_are_from_the_current_defaults():
    figures = stored()
    assert figures["settings"] == DemoConfig().settings(), \
        ("the demo's defaults changed since docs/results/demo.json was measured: rerun "
         "`python -m pyro_sparse_bnn demo --output DIR`, copy DIR/figures.json there and update the README")


@pytest.mark.slow
def test_demo_writes_the_figures_it_prints(tmp_path):
    config = DemoConfig(epochs=3, finetune_epochs=2, num_samples=5, progress=False, output=str(tmp_path))
    lines = []
    results = run_demo(config, echo=lines.append)
    text = "\n".join(lines)
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert set(figures) == set(stored()), "docs/results/demo.json is not in the format the demo writes"
    assert figures["settings"] == config.settings()
    for name in ("dense_accuracy", "bnn_accuracy", "compressed_accuracy", "finetuned_accuracy",
                 "magnitude_accuracy_before", "magnitude_accuracy"):
        assert printed(name, figures[name]) == f"{results[name]:.3f}"
    for name in ("dense_params", "compressed_nonzero_params", "magnitude_nonzero_params"):
        assert figures[name] == results[name] and printed(name, figures[name]) in text
    assert f"compressed module {figures['architecture_after']} " in text
    assert f"is {printed('points_below_dense', figures['points_below_dense'])} points below" in text


@pytest.mark.skipif(os.environ.get("PSB_FULL_DEMO") != "1",
                    reason="the full demo takes minutes; PSB_FULL_DEMO=1 runs it")
def test_full_demo_reproduces_the_stored_figures(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pyro_sparse_bnn", "demo", "--no-progress",
                             "--output", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "figures.json").read_text()) == stored()
