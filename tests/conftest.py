"""Shared fixtures: small data sets and networks whose guides are set by hand."""

import os

import pyro
import pytest
import torch
from torch import nn

from pyro_sparse_bnn import SparseBNN, SpikeSlab

# Under pytest-xdist every worker gets one thread, so two workers do not fight over 2 cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts from an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


def mlp(widths, activation=nn.ReLU, bias=True):
    """``nn.Sequential`` MLP with the given layer widths."""
    layers = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def randomize_guide(bnn: SparseBNN, seed: int = 0, logit_scale: float = 4.0):
    """Give every guide parameter a random value (as if fitted): logits ~ N(0, logit_scale^2)
    so that about half the edges are kept, random slab means and scales."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bnn.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("logits"):
                p.copy_(noise * logit_scale)
            elif name.endswith("rho"):
                p.copy_(noise - 3.0)
            else:
                p.copy_(noise)
    return bnn


@pytest.fixture
def classification_data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


@pytest.fixture
def small_bnn():
    torch.manual_seed(0)
    return SparseBNN(mlp([5, 4, 3]), SpikeSlab(prior_inclusion=0.1), num_data=60)
