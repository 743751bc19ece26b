"""BC-GHS: group horseshoe scales per input unit (Louizos et al. 2017)."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_sparse_bnn import GroupHorseshoe, HyperparameterError, SparseBNN
from pyro_sparse_bnn.analysis import weight_moments
from tests.conftest import mlp, randomize_guide

from .contract import PriorContract
from .hand import (
    assert_loss_matches_hand_computation,
    column_scaled,
    horseshoe_scale,
    horseshoe_scales_kl,
    lognormal_params,
    slab_sigma,
    standard_normal_slab_kl,
)


class TestGroupHorseshoeContract(PriorContract):
    def make_prior(self):
        return GroupHorseshoe()

    def compose(self, layer, draws):
        # w = z_g w~ per input unit g (bias column unscaled), z_g = global_scale sqrt(tau0_a tau0_b tau_a tau_b)
        z = (draws["tau0_a"][:, None] * draws["tau0_b"][:, None] * draws["tau_a"] * draws["tau_b"]).sqrt()
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)[:, None, :] * draws["slab"]

    def dropout_rate(self, layer, draws, params):
        # docs/methods.md: Var / E^2 of the group's own factor z~_g = sqrt(tau_a tau_b)
        z = (draws["tau_a"] * draws["tau_b"]).sqrt()
        return z.var(0) / z.mean(0).square()


def tiny(global_scale=0.5):
    torch.manual_seed(3)
    bnn = SparseBNN(mlp([3, 4, 2]), GroupHorseshoe(global_scale=global_scale), num_data=30)
    return randomize_guide(bnn, seed=5)


def test_sites_and_initial_state_reproduce_the_users_weights():
    torch.manual_seed(0)
    net = mlp([3, 4, 2])
    bnn = SparseBNN(net, GroupHorseshoe(global_scale=0.1), num_data=30)
    trace = poutine.trace(bnn.guide).get_trace()
    assert [trace.nodes[f"net.0.{s}"]["value"].shape for s in ("tau0_a", "tau0_b", "tau_a", "tau_b")] == [(), (), (3,), (3,)]
    # guide starts at z = global_scale with the slab mean rescaled: the posterior mean is the init
    weight, bias = bnn.layers[0].posterior_mean()
    expected = math.exp(bnn.layers[0].scales.log_moments()[1][0] / 2)  # LogNormal mean factor
    assert torch.allclose(weight, net[0].weight * expected, rtol=1e-5)
    assert torch.allclose(bias, net[0].bias)


def test_log_alpha_is_var_over_squared_mean_of_draws_of_the_group_factor():
    """docs/methods.md: alpha_g = Var / E^2 of the group's own multiplicative factor
    z~_g = sqrt(a_g b_g); estimated from draws of the guide's tau_a and tau_b sites."""
    bnn = tiny()
    layer = bnn.layers[0]
    with torch.no_grad():  # log-factor spreads of 0.3 to 1: alphas of 0.05 to 0.8
        layer.scales.tau_a.rho.copy_(torch.tensor([-1.0, 0.0, 0.5]))
        layer.scales.tau_b.rho.copy_(torch.tensor([-0.5, -1.0, 0.5]))
    pyro.set_rng_seed(0)
    trace = poutine.trace(layer.guide).get_trace()
    n, batches = 100_000, 20
    z = (trace.nodes["net.0.tau_a"]["fn"].sample((n,)) * trace.nodes["net.0.tau_b"]["fn"].sample((n,))).double().sqrt()
    log_alpha = lambda draws: torch.log(draws.var(0) / draws.mean(0).square())  # noqa: E731
    per_batch = torch.stack([log_alpha(z[i::batches]) for i in range(batches)])
    error = 5 * per_batch.std(0) / math.sqrt(batches)
    assert torch.all((layer.log_alpha().double() - log_alpha(z)).abs() < error)
    assert torch.allclose(layer.group_inclusion_probs(), torch.sigmoid(-layer.log_alpha()))


def test_weight_moments_match_draws_of_the_guide():
    bnn = tiny()
    layer = bnn.layers[0]
    n = 400_000
    draw = lambda latent, shape: torch.distributions.LogNormal(*lognormal_params(latent)).sample((n,) + shape)  # noqa: E731
    sc = layer.scales
    z = 0.5 * (draw(sc.tau0_a, (1,)) * draw(sc.tau0_b, (1,)) * draw(sc.tau_a, ()) * draw(sc.tau_b, ())).sqrt()
    mu, sigma = layer.slab.loc.detach().double()[:, :3], slab_sigma(layer.slab)[:, :3]
    w = z[:, None, :] * (mu + sigma * torch.randn(n, 4, 3, dtype=torch.float64))
    mean, var = weight_moments(bnn)["net.0"]
    assert torch.all((w.mean(0) - mean.double()).abs() < 5 * w.std(0) / math.sqrt(n))
    # sample variance of heavy-tailed draws: compare with a 10 % relative tolerance
    assert torch.allclose(w.var(0), var.double(), rtol=0.1)


def test_loss_equals_hand_computation():
    bnn = tiny()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])

    def hand(value):
        weights, kl = [], 0.0
        for name, layer in zip(("net.0", "net.2"), bnn.layers, strict=True):
            z = horseshoe_scale(value, name, 0.5)
            weights.append(column_scaled(z, value(f"{name}.slab")))
            kl += standard_normal_slab_kl(layer) + horseshoe_scales_kl(layer.scales)
        return weights, kl

    assert_loss_matches_hand_computation(bnn, x, y, 30, hand)


def test_bad_hyperparameters_are_named():
    with pytest.raises(HyperparameterError, match="global_scale"):
        GroupHorseshoe(global_scale=0)
    with pytest.raises(HyperparameterError, match="init_rho"):
        GroupHorseshoe(init_rho=float("inf"))


def test_the_weights_guide_defaults_to_log_variances_with_the_first_layer_bounded():
    bnn = SparseBNN(mlp([3, 4, 4, 2]), GroupHorseshoe(), num_data=30)
    assert [layer.slab.max_variance for layer in bnn.layers] == [0.04, None, None]
    assert all(torch.all(layer.slab.log_var == -9.0) for layer in bnn.layers)
    unrestricted = SparseBNN(mlp([3, 4, 2]), GroupHorseshoe(max_variance=None, weight_parameterization="softplus",
                                                            init_rho=-4.0), num_data=30)
    assert all(layer.slab.max_variance is None and torch.all(layer.slab.rho == -4.0) for layer in unrestricted.layers)
    with pytest.raises(HyperparameterError, match="max_variance"):
        GroupHorseshoe(max_variance=-0.04)
