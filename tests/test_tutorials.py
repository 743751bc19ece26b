"""The tutorial notebooks in ``tutorials/``: each one carries the outputs of a full run, and each
one runs top to bottom in smoke mode (``PSB_SMOKE=1``: tiny data, a few epochs).

The smoke runs execute in a Jupyter kernel of the interpreter running the tests (the
virtual environment of the README's install), with ``tutorials/`` as the working directory.
"""

import os
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import RESOURCES, get_kernel_dict
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: seconds any one cell may take in smoke mode
CELL_TIMEOUT = 300


class _ThisInterpreter(KernelSpecManager):
    """Kernel specs that always start ``sys.executable -m ipykernel_launcher``, so that a
    ``python3`` kernel spec installed elsewhere (another Python without the package) is never
    picked up instead of the environment running the tests."""

    def get_kernel_spec(self, kernel_name):
        return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())


def _code_cells(book):
    return [cell for cell in book.cells if cell.cell_type == "code" and cell.source.strip()]


def test_the_six_tutorials_are_there():
    assert [path.name[:3] for path in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_with_the_outputs_of_a_complete_run(path):
    """Nobody commits an unexecuted or half-executed notebook: every code cell ran, in order,
    in one session, none of them raised, and the readers get the figures."""
    book = nbformat.read(path, as_version=4)
    cells = _code_cells(book)
    assert cells, f"{path.name} has no code"
    counts = [cell.get("execution_count") for cell in cells]
    assert None not in counts, f"{path.name}: cells without stored outputs; execute it before committing"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: not executed top to bottom in one run"
    outputs = [output for cell in cells for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{path.name} is stored with an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no stored figure"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_smoke_mode(path, monkeypatch):
    monkeypatch.setenv("PSB_SMOKE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    book = nbformat.read(path, as_version=4)
    kernel = KernelManager(kernel_name="python3", kernel_spec_manager=_ThisInterpreter())
    client = NotebookClient(book, km=kernel, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(TUTORIALS)}})
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on any error
    finally:
        # the client does not own a kernel manager it was given: without this each kernel
        # (about 500 MB) lives until pytest exits
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
