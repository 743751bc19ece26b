"""The deterministic baseline trains and leaves the given network untouched."""

import pytest
import torch

from pyro_sparse_bnn import HyperparameterError
from pyro_sparse_bnn.baselines import train_deterministic

from .conftest import mlp


def test_classification_baseline_learns(classification_data):
    x, y = classification_data
    torch.manual_seed(0)
    net = mlp([5, 16, 3])
    before = [p.detach().clone() for p in net.parameters()]
    result = train_deterministic(net, x, y, epochs=100, batch_size=20, lr=1e-2)
    assert result.loss[-1] < 0.3 * result.loss[0]
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert (result.module(x).argmax(-1) == y).float().mean() > 0.9


def test_regression_baseline_and_bad_task():
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = x[:, 0] * 2 - x[:, 1]
    result = train_deterministic(mlp([2, 8, 1]), x, y, task="regression", epochs=200, lr=1e-2)
    assert result.loss[-1] < 0.05
    with pytest.raises(HyperparameterError, match="task"):
        train_deterministic(mlp([2, 8, 1]), x, y, task="ranking")
