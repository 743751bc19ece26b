"""Local reparameterisation: exact moments, fallback, the switch, and the same answer on a toy problem."""

import math

import pytest
import torch
from pyro import poutine

from pyro_sparse_bnn import (
    HyperparameterError,
    SparseBNN,
    SpikeSlab,
    SpikeSlabNode,
    feature_inclusion_probs,
    fit,
    local_reparameterization,
)
from pyro_sparse_bnn.priors.base import LayerDraw
from pyro_sparse_bnn.reparameterization import gaussian_layer

from .conftest import mlp, tiny_conv_net

SCALES = {
    "none": None,
    "per output unit": torch.tensor([[0.5], [2.0]]),
    "per input unit": torch.tensor([[0.5, 2.0, 0.0, 1.5]]),
    "per weight": torch.tensor([[0.5, 2.0, 1.0, 0.0], [1.0, 0.3, 1.2, 2.0]]),
}


@pytest.mark.parametrize("name", SCALES)
def test_gaussian_layer_has_the_moments_of_the_weight_sampled_layer(name):
    """Pre-activations of ``x (scale * beta)`` with ``beta ~ N(mu, sigma^2)``: mean
    ``x (scale mu)``, variance ``x^2 (scale^2 sigma^2)``; checked on 20,000 draws with 5
    standard errors of the sample mean and of the sample variance (``var * sqrt(2 / n)``),
    for every shape of scale the priors produce (each takes its own code path)."""
    torch.manual_seed(0)
    net = mlp([3, 2])
    spec = SparseBNN(net, SpikeSlabNode(), num_data=1).layers[0].spec
    loc, sigma = torch.randn(2, 4), torch.rand(2, 4) + 0.1
    draw = LayerDraw(slab=torch.zeros(2, 4), scale=SCALES[name])
    scale = torch.ones(1, 1) if SCALES[name] is None else SCALES[name]
    x = torch.randn(1, 3).expand(20000, 3)
    out = gaussian_layer(x, spec, draw, loc, sigma)
    x1 = torch.cat([x[0], torch.ones(1)])
    mean = (scale * loc) @ x1
    var = (scale**2 * sigma**2) @ x1**2
    n = x.shape[0]
    assert torch.all((out.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((out.var(0) - var).abs() < 5 * var * math.sqrt(2 / n))


def test_gaussian_layer_has_the_moments_of_the_weight_sampled_conv_layer():
    """The same for a conv layer, Conv2d(1, 3, 3) on 6 x 6 images, with one scale per output
    channel: at each of the 4 x 4 positions ``p`` the pre-activation of channel ``j`` has mean
    ``sum_i scale_j mu_ji patch_pi + scale_j mu_j,bias`` and variance
    ``sum_i scale_j^2 sigma_ji^2 patch_pi^2 + scale_j^2 sigma_j,bias^2`` (patches written out
    with ``unfold``, independently of ``conv2d``)."""
    torch.manual_seed(0)
    spec = SparseBNN(tiny_conv_net(), SpikeSlabNode(), num_data=1).layers[0].spec
    assert spec.kind == "conv2d" and spec.param_shape == (3, 10)
    loc, sigma = torch.randn(3, 10), torch.rand(3, 10) + 0.1
    scale = torch.tensor([[0.5], [2.0], [1.0]])
    image = torch.randn(1, 1, 6, 6)
    x = image.expand(20000, 1, 6, 6)
    out = gaussian_layer(x, spec, LayerDraw(slab=torch.zeros(3, 10), scale=scale), loc, sigma)
    assert out.shape == (20000, 3, 4, 4)
    patches = torch.nn.functional.unfold(image, 3)[0]                    # (9, 16)
    patches = torch.cat([patches, torch.ones(1, 16)])                    # bias input
    mean = ((scale * loc) @ patches).view(3, 4, 4)
    var = ((scale**2 * sigma**2) @ patches**2).view(3, 4, 4)
    n = x.shape[0]
    assert torch.all((out.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((out.var(0) - var).abs() < 5 * var * math.sqrt(2 / n))


def test_examples_get_independent_noise():
    """Under the handler two copies of one example get different outputs; without it one weight
    draw is shared, so they get the same."""
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 5, 2]), SpikeSlabNode(init_rho=-1.0), num_data=10)
    x = torch.randn(1, 3).expand(2, 3)
    with torch.no_grad():
        bnn.local_reparameterization = False
        shared = bnn(x)
        bnn.local_reparameterization = True
        independent = bnn(x)
    assert torch.allclose(shared[0], shared[1])
    assert not torch.allclose(independent[0], independent[1])


def test_a_slab_the_handler_has_not_seen_falls_back_to_weight_sampling():
    """A slab value fixed by ``poutine.condition`` (not drawn from a Gaussian the handler saw)
    is applied as it is."""
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 2]), SpikeSlabNode(), num_data=10)
    x = torch.randn(4, 3)
    slab = torch.randn(2, 4)
    data = {"net.0.slab": slab, "net.0.node_indicator": torch.ones(2)}
    with local_reparameterization():
        out = poutine.condition(bnn.model, data=data)(x)
    assert torch.allclose(out, x @ slab[:, :3].T + slab[:, 3])


def test_the_switch_is_validated_and_shown():
    with pytest.raises(HyperparameterError, match="local_reparameterization"):
        SparseBNN(mlp([3, 2]), SpikeSlabNode(), local_reparameterization="yes")
    assert "local_reparameterization=False" in repr(
        SparseBNN(mlp([3, 2]), SpikeSlabNode(), local_reparameterization=False)
    )


def _toy_regression():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=generator)
    y = 2 * x[:, 0] - 3 * x[:, 1] + 0.3 * torch.randn(300, generator=generator)
    return x, y


def test_same_feature_selection_with_and_without_local_reparameterization():
    """The same objective gives the same answer: on y = 2 x0 - 3 x1 + noise both estimators
    keep exactly the two relevant inputs, and the feature PIPs agree to 0.1 (relevant ones
    near 1, irrelevant ones near the prior inclusion probability 0.05)."""
    x, y = _toy_regression()
    pips = []
    for local in (False, True):
        torch.manual_seed(0)
        bnn = SparseBNN(mlp([6, 8, 1]), SpikeSlab(prior_inclusion=0.05), likelihood="gaussian",
                        num_data=len(x), local_reparameterization=local)
        fit(bnn, x, y, epochs=200, batch_size=100, lr=1e-2, logit_lr=5e-2, seed=0, progress=False)
        pips.append(feature_inclusion_probs(bnn))
    for p in pips:
        assert (p > 0.5).tolist() == [True, True, False, False, False, False]
    assert torch.allclose(pips[0], pips[1], atol=0.1)
