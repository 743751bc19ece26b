"""Shared fixtures: small data sets and networks whose guides are set by hand."""

import os
from contextlib import contextmanager

import pyro
import pytest
import torch
from torch import nn

from pyro_sparse_bnn import SparseBNN, SpikeSlab
from pyro_sparse_bnn.core.nets import mlp  # noqa: F401 -- re-exported for the tests

# Under pytest-xdist every worker gets one thread, so two workers do not fight over 2 cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts from an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield




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


@contextmanager
def forced_switches(bnn: SparseBNN, on: bool):
    """Within the block, every switch of ``bnn`` is held fully on (``on=True``: a prior that
    cannot prune) or fully off (a prior that prunes everything): indicator logits are set to
    +-30, and a Bayesian Compression layer reports ``log alpha = -+30``. The fitted state comes
    back afterwards. Behavioural tests run their check inside it to show that it fails."""
    value = 30.0 if on else -30.0
    saved = [(p, p.detach().clone()) for p in bnn.indicator_parameters()]
    patched = []
    with torch.no_grad():
        for p, _ in saved:
            p.fill_(value)
    for layer in bnn.layers:
        if hasattr(layer, "log_alpha") and not layer.indicator_parameters():
            groups = layer.log_alpha().shape
            layer.log_alpha = lambda groups=groups: torch.full(groups, -value)
            patched.append(layer)
    try:
        yield bnn
    finally:
        with torch.no_grad():
            for p, copy in saved:
                p.copy_(copy)
        for layer in patched:
            del layer.log_alpha


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


def tiny_conv_net(activation=nn.ReLU):
    """Flat 36-pixel inputs -> 1 x 6 x 6 -> conv 3 3x3 -> pool 2 -> 12 features -> 3 outputs."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 6, 6)), nn.Conv2d(1, 3, 3), activation(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12, 3),
    )


def conv_net(kind: str, activation=nn.ReLU):
    """Small two-input-channel conv nets taking flat ``(batch, 72)`` inputs (2 x 6 x 6):

    * ``"max-pool"``: conv 4 3x3 -> max-pool 2 -> flatten 16 -> fc 5 -> fc 3;
    * ``"padding"``: conv 4 3x3 padding 1 -> conv 3 3x3 padding 1 stride 2 -> flatten 27 -> fc 3;
    * ``"avg-pool"``: conv 4 3x3 padding 1 -> avg-pool 2 padding 1 (padding counted, so a
      constant channel leaves it non-uniform) -> conv 3 3x3 dilation 1 -> flatten 12 -> fc 3.
    """
    head = [nn.Unflatten(1, (2, 6, 6))]
    if kind == "max-pool":
        body = [nn.Conv2d(2, 4, 3), activation(), nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(16, 5), activation(), nn.Linear(5, 3)]
    elif kind == "padding":
        body = [nn.Conv2d(2, 4, 3, padding=1), activation(),
                nn.Conv2d(4, 3, 3, padding=1, stride=2), activation(), nn.Flatten(), nn.Linear(27, 3)]
    elif kind == "avg-pool":
        body = [nn.Conv2d(2, 4, 3, padding=1), activation(), nn.AvgPool2d(2, padding=1),
                nn.Conv2d(4, 3, 3), activation(), nn.Flatten(), nn.Linear(12, 3)]
    else:
        raise ValueError(kind)
    return nn.Sequential(*head, *body)
