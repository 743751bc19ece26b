"""Local reparameterisation: exact moments, fallback, the switch, and the same answer on a toy problem."""

import math

import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_sparse_bnn import (
    GroupNormalJeffreys,
    HyperparameterError,
    SparseBNN,
    SpikeSlab,
    SpikeSlabNode,
    fit,
)
from pyro_sparse_bnn.analysis import feature_inclusion_probs
from pyro_sparse_bnn.core import MeanFieldELBO, local_reparameterization
from pyro_sparse_bnn.core.elbo import site_log_prob_sum
from pyro_sparse_bnn.core.priors.base import LayerDraw
from pyro_sparse_bnn.core.reparameterization import (
    PLACEHOLDER,
    LocalReparameterization,
    gaussian_layer,
)
from tests.conftest import mlp, tiny_conv_net

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


def _one_layer_run(skip, prior):
    """Guide then model under one handler; the RNG is reseeded between them, so any draw the
    guide skips cannot shift the model's noise."""
    torch.manual_seed(4)
    bnn = SparseBNN(mlp([5, 3]), prior, num_data=50)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    with LocalReparameterization(skip_slab_draws=skip):
        guide_trace = poutine.trace(bnn.guide).get_trace(x, y)
        torch.manual_seed(3)
        model_trace = poutine.trace(poutine.replay(bnn.model, trace=guide_trace)).get_trace(x, y)
    return bnn, guide_trace, model_trace


@pytest.mark.parametrize("prior", [SpikeSlabNode(init_rho=-1.0), GroupNormalJeffreys()],
                         ids=["node spike-and-slab", "BC-GNJ"])
def test_skipping_slab_draws_changes_nothing_the_layers_or_the_elbo_read(prior):
    """With ``skip_slab_draws`` the slab site holds its mean as a flagged placeholder, and the
    network outputs and the analytic-KL loss are exactly those of the run that drew it (a
    one-layer network, whose indicators are drawn before the slab, with the model's RNG reseeded)."""
    runs = {skip: _one_layer_run(skip, prior) for skip in (False, True)}
    bnn, guide_trace, model_trace = runs[True]
    site = guide_trace.nodes["net.0.slab"]
    assert site["infer"].get(PLACEHOLDER) is True
    slab = bnn.layers[0].slab if hasattr(bnn.layers[0], "slab") else bnn.layers[0].block.slab
    assert torch.equal(site["value"], slab.loc.detach())
    drawn = runs[False][1].nodes["net.0.slab"]
    assert not drawn["infer"].get(PLACEHOLDER) and not torch.equal(drawn["value"], site["value"])
    outputs = [run[2].nodes["_RETURN"]["value"] for run in runs.values()]
    assert torch.equal(outputs[0], outputs[1])
    elbo = MeanFieldELBO()
    losses = [elbo._differentiable_loss_particle(prune_subsample_sites(run[2]), run[1])[0]
              for run in runs.values()]
    assert losses[0] == losses[1]


def test_the_log_density_of_a_placeholder_is_refused():
    """An estimator that would need ``log q`` of a never-drawn slab (a Monte Carlo KL) fails
    loudly instead of using the placeholder."""
    _, guide_trace, _ = _one_layer_run(True, SpikeSlabNode())
    with pytest.raises(RuntimeError, match="placeholder"):
        site_log_prob_sum(guide_trace.nodes["net.0.slab"])


def test_slab_draws_are_kept_by_default_and_outside_fit():
    """The public handler and ``bnn.reparameterization()`` draw the slab unless asked not to
    (a user's Monte Carlo ELBO reads it)."""
    bnn = SparseBNN(mlp([5, 3]), SpikeSlabNode(), num_data=50)
    x = torch.randn(4, 5)
    for handler in (local_reparameterization(), bnn.reparameterization()):
        with handler:
            trace = poutine.trace(bnn.guide).get_trace(x)
        assert not trace.nodes["net.0.slab"]["infer"].get(PLACEHOLDER)


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


def _old_gaussian_layer(x, spec, draw, loc, scale):
    """The computation gaussian_layer replaced (F.linear / F.conv2d on slices of the
    augmented matrices, autograd through every elementwise step), kept as the reference."""
    variance = scale.square().expand(loc.shape)
    factor = draw.scale
    if factor is None:
        mean = spec.apply(x, *spec.split(loc))
        var = spec.apply(x.square(), *spec.split(variance))
    elif factor.shape[-1] == 1 and factor.numel() == spec.out_units:
        per_output = factor.reshape((1, spec.out_units) + (1,) * (x.dim() - 2))
        mean = spec.apply(x, *spec.split(loc)) * per_output
        var = spec.apply(x.square(), *spec.split(variance)) * per_output.square()
    elif spec.kind == "linear" and factor.dim() == 2 and factor.shape[0] == 1:
        inputs = factor[:, : spec.fan_in]
        loc_weight, loc_bias = spec.split(loc)
        var_weight, var_bias = spec.split(variance)
        if loc_bias is not None:
            loc_bias, var_bias = loc_bias * factor[0, -1], var_bias * factor[0, -1].square()
        scaled = x * inputs
        mean = spec.apply(scaled, loc_weight, loc_bias)
        var = spec.apply(scaled.square(), var_weight, var_bias)
    else:
        mean = spec.apply(x, *spec.split(factor * loc))
        var = spec.apply(x.square(), *spec.split(factor.square() * variance))
    std = var.clamp(min=torch.finfo(var.dtype).tiny).sqrt()
    return mean + std * torch.randn_like(mean)


@pytest.mark.parametrize("name", SCALES)
def test_gaussian_layer_equals_the_old_computation_with_the_same_draws(name):
    """Same seed, same noise: the fused computation gives the values and gradients (with
    respect to input, means, standard deviations and scale) of the plain one it replaced."""
    generator = torch.Generator().manual_seed(5)
    spec = SparseBNN(mlp([3, 2]), SpikeSlabNode(), num_data=1).layers[0].spec
    x = torch.randn(6, 3, generator=generator, requires_grad=True)
    loc = torch.randn(2, 4, generator=generator, requires_grad=True)
    sigma = (torch.rand(2, 4, generator=generator) + 0.1).requires_grad_()
    scale = None if SCALES[name] is None else SCALES[name].clone().requires_grad_()
    inputs = [x, loc, sigma] + ([] if scale is None else [scale])
    weight = torch.randn(6, 2, generator=generator)
    outs = []
    for layer in (gaussian_layer, _old_gaussian_layer):
        torch.manual_seed(0)
        out = layer(x, spec, LayerDraw(slab=torch.zeros(2, 4), scale=scale), loc, sigma)
        outs.append((out, torch.autograd.grad((out * weight).sum(), inputs)))
    (new, new_grads), (old, old_grads) = outs
    assert torch.allclose(new, old, atol=1e-6)
    for a, b in zip(new_grads, old_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_gaussian_layer_equals_the_old_computation_for_conv_layers():
    generator = torch.Generator().manual_seed(6)
    spec = SparseBNN(tiny_conv_net(), SpikeSlabNode(), num_data=1).layers[0].spec
    x = torch.randn(4, *spec.in_shape, generator=generator)
    loc = torch.randn(spec.param_shape, generator=generator, requires_grad=True)
    sigma = (torch.rand(spec.param_shape, generator=generator) + 0.1).requires_grad_()
    for scale in (None, torch.rand(spec.out_units, 1, generator=generator).requires_grad_()):
        inputs = [loc, sigma] + ([] if scale is None else [scale])
        outs = []
        for layer in (gaussian_layer, _old_gaussian_layer):
            torch.manual_seed(0)
            out = layer(x, spec, LayerDraw(slab=torch.zeros(spec.param_shape), scale=scale), loc, sigma)
            outs.append((out, torch.autograd.grad(out.sin().sum(), inputs)))
        (new, new_grads), (old, old_grads) = outs
        assert torch.allclose(new, old, atol=1e-5)
        for a, b in zip(new_grads, old_grads, strict=True):
            assert torch.allclose(a, b, atol=1e-4)
