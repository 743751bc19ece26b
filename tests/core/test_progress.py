"""Progress bars: drawn in a terminal or a notebook, left out of logs and pipes, and
``progress=`` always wins."""

import io
import sys
import types

import pytest
import torch

from pyro_sparse_bnn import HyperparameterError, SparseBNN, SpikeSlab, fit
from pyro_sparse_bnn.core.progress import progress_bar, show_progress
from tests.conftest import mlp


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream, expected", [(io.StringIO(), False), (Terminal(), True), (None, False)])
def test_default_follows_where_stderr_goes(monkeypatch, stream, expected):
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert show_progress(None) is expected
    assert show_progress(True) is True and show_progress(False) is False


def test_a_notebook_kernel_counts_as_watching(monkeypatch):
    class ZMQInteractiveShell:  # the class name IPython's kernel shell has
        pass

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    assert show_progress(None) is True
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert show_progress(None) is False


def test_bad_values_are_refused():
    with pytest.raises(HyperparameterError, match="progress"):
        show_progress("yes")


def test_fit_writes_no_bar_into_a_log_but_does_when_asked(monkeypatch):
    """With stderr redirected to a file-like object, the default leaves it empty; progress=True
    writes the bar there anyway."""
    x, y = torch.randn(40, 4), torch.arange(40) % 3
    for progress, expect_bar in ((None, False), (True, True)):
        log = io.StringIO()
        monkeypatch.setattr(sys, "stderr", log)
        torch.manual_seed(0)
        fit(SparseBNN(mlp([4, 5, 3]), SpikeSlab()), x, y, epochs=2, batch_size=20, progress=progress)
        assert ("SVI" in log.getvalue()) is expect_bar
    bar = progress_bar(False, total=3)
    assert bar.disable
