"""SS-GL: the spike-and-slab group lasso."""

import math

import pytest
import torch

from pyro_sparse_bnn import SparseBNN, SpikeSlabGroupLasso
from tests.conftest import mlp, randomize_guide

from .contract import PriorContract
from .hand import (
    assert_initial_mean_is_the_users,
    assert_loss_matches_hand_computation,
    bernoulli_and_slab_kl,
    kl_lognormal_gamma,
    lognormal_params,
)


class TestGroupLassoContract(PriorContract):
    def make_prior(self):
        return SpikeSlabGroupLasso()

    def compose(self, layer, draws):
        return (draws["node_indicator"] * draws["tau_sq"].sqrt())[:, :, None] * draws["slab"]  # w_j = z_j tau_j beta_j


@pytest.fixture
def tiny():
    torch.manual_seed(5)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlabGroupLasso(), num_data=30)
    randomize_guide(bnn, seed=3, logit_scale=1.0)
    return bnn, torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])


def test_group_size_sets_the_gamma_shape(tiny):
    bnn, _, _ = tiny
    # first layer groups: 3 weights + bias = 4 -> shape (4 + 1) / 2; second: 4 + 1 = 5 -> 3
    assert torch.allclose(bnn.layers[0].tau_sq_concentration, torch.full((4,), 2.5))
    assert torch.allclose(bnn.layers[1].tau_sq_concentration, torch.full((2,), 3.0))


def test_loss_equals_hand_computation_at_the_sampled_lambda(tiny):
    bnn, x, y = tiny

    def hand(value):
        weights, kl = [], 0.0
        for name, layer in zip(("net.0", "net.2"), bnn.layers, strict=True):
            tau = value(f"{name}.tau_sq").sqrt()
            weights.append((value(f"{name}.node_indicator") * tau)[:, None] * value(f"{name}.slab"))
            kl += bernoulli_and_slab_kl(layer, 1.0)
            lambda_sq = value(f"{name}.lambda_sq")
            mu, s = lognormal_params(layer.tau_sq)
            a = layer.tau_sq_concentration.double()
            # the rate lambda^2 / 2 is the sampled value here: E[log b] = log b, E[b] = b
            kl += float(kl_lognormal_gamma(mu, s, a, torch.log(lambda_sq / 2), lambda_sq / 2).sum())
            mu, s = lognormal_params(layer.lambda_sq)
            kl += float(kl_lognormal_gamma(mu, s, 4.0, torch.tensor(math.log(2.0)), 2.0))
        return weights, kl

    assert_loss_matches_hand_computation(bnn, x, y, 30, hand)


def test_expected_tau_kl_is_the_closed_form_of_methods(tiny):
    """Averaging the tau^2 KL over the guide of lambda^2 gives docs/methods.md's fully closed form
    a (log 2 - E log lambda^2 - mu) + lgamma(a) + E[lambda^2]/2 e^{mu+s^2/2} - log s - (1 + log 2 pi)/2."""
    bnn, x, y = tiny
    layer = bnn.layers[0]
    mu_l, s_l = lognormal_params(layer.lambda_sq)
    e_log, e = mu_l, torch.exp(mu_l + s_l**2 / 2)
    mu, s = lognormal_params(layer.tau_sq)
    a = layer.tau_sq_concentration.double()
    closed = float((a * (math.log(2) - e_log - mu) + torch.lgamma(a) + e / 2 * torch.exp(mu + s**2 / 2)
                    - torch.log(s) - (1 + math.log(2 * math.pi)) / 2).sum())
    n = 20_000
    lambda_sq = torch.distributions.LogNormal(*lognormal_params(layer.lambda_sq)).sample((n,))
    q = torch.distributions.LogNormal(mu, s).expand((n, 4))
    p = torch.distributions.Gamma(a.expand(n, 4), lambda_sq[:, None] / 2)
    draws = torch.distributions.kl_divergence(q, p).sum(-1)  # the library's registered KL
    assert abs(float(draws.mean()) - closed) < 5 * float(draws.std()) / math.sqrt(len(draws))


def test_group_scale_summary_matches_lognormal_formulas(tiny):
    bnn, _, _ = tiny
    layer = bnn.layers[0]
    mu, s = lognormal_params(layer.tau_sq)  # log tau^2 ~ N(mu, s^2): tau ~ LN(mu/2, s^2/4)
    scales = layer.group_scales()
    assert torch.allclose(scales.mean.double(), torch.exp(mu / 2 + s**2 / 8), rtol=1e-4)
    std = torch.sqrt(torch.exp(mu + s**2 / 2) - torch.exp(mu + s**2 / 4))
    assert torch.allclose(scales.std.double(), std, rtol=1e-3)
    assert torch.allclose(scales.lower.double(), torch.exp(mu / 2 - 1.6448536 * s / 2), rtol=1e-5)
    weight, _ = layer.posterior_mean()
    assert torch.allclose(weight, layer.block.slab.loc.detach()[:, :3] * scales.mean[:, None], rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [(dict(lambda_sq_shape=0), "lambda_sq_shape"),
                                             (dict(lambda_sq_rate=-1), "lambda_sq_rate")])
def test_invalid_hyperparameters(kwargs, message):
    from pyro_sparse_bnn import HyperparameterError

    with pytest.raises(HyperparameterError, match=message):
        SpikeSlabGroupLasso(**kwargs)


def test_initial_weights_are_the_users():
    # the guide's tau starts with median 1 but mean exp(s^2 / 8) > 1; the slab is scaled so
    # that the posterior mean of every weight is the user's initial weight
    bnn, net = assert_initial_mean_is_the_users(SpikeSlabGroupLasso(init_rho=0.0), atol=1e-5)
    assert not torch.allclose(bnn.layers[0].block.slab.loc[:, :3], net[0].weight, atol=1e-2)
