"""SS-GHS: the spike-and-slab group horseshoe."""

import math

import pytest
import torch
from pyro import poutine

from pyro_sparse_bnn import HyperparameterError, SparseBNN, SpikeSlabGroupHorseshoe
from pyro_sparse_bnn.core.priors.group_horseshoe import regularized_scale
from tests.conftest import mlp, randomize_guide

from .contract import PriorContract
from .hand import (
    assert_initial_mean_is_the_users,
    assert_loss_matches_hand_computation,
    bernoulli_and_slab_kl,
    horseshoe_scale,
    horseshoe_scales_kl,
    lognormal_params,
)


class TestGroupHorseshoeContract(PriorContract):
    def make_prior(self):
        return SpikeSlabGroupHorseshoe()

    def compose(self, layer, draws):
        # w_j = z_j s~_j beta_j, s~ = c s / sqrt(c^2 + s^2), s_j = global_scale tau_0 tau_j (c = 1 = global_scale)
        s = (draws["tau0_a"][:, None] * draws["tau0_b"][:, None] * draws["tau_a"] * draws["tau_b"]).sqrt()
        return (draws["node_indicator"] * s / torch.sqrt(1 + s**2))[:, :, None] * draws["slab"]


@pytest.fixture
def tiny():
    torch.manual_seed(6)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlabGroupHorseshoe(c=1.5, global_scale=0.5), num_data=30)
    randomize_guide(bnn, seed=4, logit_scale=1.0)
    return bnn, torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])


def test_regularized_scale_formula():
    s = torch.tensor([1e-4, 0.3, 1.0, 7.0, 1e4])
    for c in (0.5, 1.0, 2.0):
        assert torch.allclose(regularized_scale(torch.log(s), c), c * s / torch.sqrt(c**2 + s**2), rtol=1e-5)


def test_the_models_scale_factors_make_half_cauchy_scales():
    """The model's tau_a, tau_b sites (our choice of Gamma(1/2, 1) and InvGamma(1/2, 1)) give
    tau = sqrt(a b) ~ C+(0, 1): P(tau < t) = 2 atan(t) / pi; and the model's scale of a unit,
    global_scale * tau_0 * tau_j, has median global_scale (log tau is symmetric about 0)."""
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlabGroupHorseshoe(global_scale=0.5), num_data=30)
    trace = poutine.trace(bnn.model).get_trace(torch.randn(2, 3))
    n = 100_000
    draw = lambda site: trace.nodes[f"net.0.{site}"]["fn"].sample((n,)).double()  # noqa: E731
    tau = (draw("tau_a") * draw("tau_b")).sqrt()
    for t in (0.2, 1.0, 3.0):
        p = 2 * math.atan(t) / math.pi
        assert torch.all(((tau < t).double().mean(0) - p).abs() < 5 * math.sqrt(p * (1 - p) / n))
    log_scale = bnn.layers[0].scales.model  # the model's log s from its own sites
    draws = torch.stack([log_scale(bnn.layers[0]) for _ in range(2000)])
    below = (draws < math.log(0.5)).double().mean()
    assert abs(float(below) - 0.5) < 5 * math.sqrt(0.25 / draws.numel())


def test_loss_equals_hand_computation(tiny):
    bnn, x, y = tiny

    def hand(value):
        weights, kl = [], 0.0
        for name, layer in zip(("net.0", "net.2"), bnn.layers, strict=True):
            s = horseshoe_scale(value, name, 0.5)
            s_tilde = 1.5 * s / torch.sqrt(1.5**2 + s**2)
            weights.append((value(f"{name}.node_indicator") * s_tilde)[:, None] * value(f"{name}.slab"))
            kl += bernoulli_and_slab_kl(layer, 1.0) + horseshoe_scales_kl(layer.scales)
        return weights, kl

    assert_loss_matches_hand_computation(bnn, x, y, 30, hand)


def test_group_scale_moments_match_monte_carlo(tiny):
    """Gauss-Hermite moments of the regularised scale against direct draws from the guide."""
    bnn, _, _ = tiny
    layer = bnn.layers[0]
    n = 100_000
    sample = lambda latent: torch.distributions.LogNormal(*lognormal_params(latent)).sample((n,))  # noqa: E731
    s = 0.5 * (sample(layer.scales.tau0_a)[:, None] * sample(layer.scales.tau0_b)[:, None]
               * sample(layer.scales.tau_a) * sample(layer.scales.tau_b)).sqrt()
    draws = 1.5 * s / torch.sqrt(1.5**2 + s**2)
    scales = layer.group_scales()
    tolerance = 5 * draws.std(0) / math.sqrt(len(draws))
    assert torch.all((scales.mean.double() - draws.mean(0)).abs() < tolerance)
    # standard error of a sample standard deviation: sqrt((m4 - s^4) / n) / (2 s)
    centred = draws - draws.mean(0)
    sd, m4 = draws.std(0), centred.pow(4).mean(0)
    sd_error = torch.sqrt((m4 - sd**4) / n) / (2 * sd)
    assert torch.all((scales.std.double() - sd).abs() < 5 * sd_error)
    assert torch.all((scales.lower <= scales.mean) & (scales.mean <= scales.upper))


def test_initial_weights_are_the_users():
    assert_initial_mean_is_the_users(SpikeSlabGroupHorseshoe(global_scale=2.0), atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [(dict(c=0), "c must"), (dict(global_scale=-2), "global_scale")])
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(HyperparameterError, match=message):
        SpikeSlabGroupHorseshoe(**kwargs)
