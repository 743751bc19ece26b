"""Independent hand computations of the published objectives for tiny networks (tests only).

Everything here is written out from docs/methods.md with elementary tensor operations, without
the library's KL functions, so that the library's loss can be checked against it.
"""

import math

import torch
import torch.nn.functional as F

from pyro_sparse_bnn import SparseBNN
from tests.conftest import mlp


def lognormal_params(module):
    return module.loc.detach().double(), F.softplus(module.rho.detach()).double()


def bernoulli_and_slab_kl(layer, prior_scale):
    """sum_j KL_Bern(gamma_j || lambda) + gamma_j * KL(N(mu, s^2) || N(0, sigma0^2)) over the
    indicators of ``layer.block`` (edge- or node-level; gamma broadcast over each group)."""
    gamma = torch.sigmoid(layer.block.gates.logits.detach()).double()
    lam = layer.prior_inclusion
    bern = gamma * torch.log(gamma / lam) + (1 - gamma) * torch.log((1 - gamma) / (1 - lam))
    mu = layer.block.slab.loc.detach().double()
    sigma = F.softplus(layer.block.slab.rho.detach()).double()
    slab = torch.log(prior_scale / sigma) + (sigma**2 + mu**2) / (2 * prior_scale**2) - 0.5
    gamma_groups = gamma.view(gamma.shape + (1,) * (mu.dim() - gamma.dim()))
    return float(bern.sum() + (gamma_groups * slab).sum())


def kl_lognormal_gamma(mu, s, shape, e_log_rate, e_rate):
    """docs/methods.md: a(log 2 - E log lambda^2 - mu) + lgamma(a) + E[lambda^2]/2 e^{mu + s^2/2}
    - log s - (1 + log 2 pi)/2, written for a general rate b with E[log b], E[b]."""
    return (-shape * (e_log_rate + mu) + math.lgamma(shape) if isinstance(shape, float) else
            -shape * (e_log_rate + mu) + torch.lgamma(shape)) + e_rate * torch.exp(mu + s**2 / 2) \
        - torch.log(s) - (1 + math.log(2 * math.pi)) / 2


def kl_lognormal_half_gamma(mu, s):
    """KL(LN(mu, s^2) || Gamma(1/2, rate 1)) = e^{mu + s^2/2} - (mu + 2 log s + 1 + log 2)/2."""
    return torch.exp(mu + s**2 / 2) - (mu + 2 * torch.log(s) + 1 + math.log(2)) / 2


def kl_lognormal_half_inverse_gamma(mu, s):
    """KL(LN(mu, s^2) || InvGamma(1/2, 1)) = e^{s^2/2 - mu} - (2 log s - mu + 1 + log 2)/2."""
    return torch.exp(s**2 / 2 - mu) - (2 * torch.log(s) - mu + 1 + math.log(2)) / 2


def nll_from_weights(weights, x, y, num_data, activation=torch.relu):
    """-(N / B) sum log softmax(f(x))[y] for an MLP given augmented weight matrices."""
    h = x.double()
    for i, w in enumerate(weights):
        h = h @ w[:, :-1].T + w[:, -1]
        if i < len(weights) - 1:
            h = activation(h)
    log_lik = torch.log_softmax(h, dim=-1)[torch.arange(len(y)), y].sum()
    return float(-(num_data / len(y)) * log_lik)


def horseshoe_scales_kl(scales):
    """KLs of the four LogNormal factors of a ``HorseshoeScales`` module against their
    Gamma(1/2, 1) and InverseGamma(1/2, 1) priors."""
    kl = 0.0
    for latent in (scales.tau0_a, scales.tau_a):
        kl += float(kl_lognormal_half_gamma(*lognormal_params(latent)).sum())
    for latent in (scales.tau0_b, scales.tau_b):
        kl += float(kl_lognormal_half_inverse_gamma(*lognormal_params(latent)).sum())
    return kl


def horseshoe_scale(value, name, global_scale):
    """``global_scale * sqrt(tau0_a tau0_b tau_a tau_b)`` from the guide trace's values."""
    return global_scale * (value(f"{name}.tau0_a") * value(f"{name}.tau0_b")
                           * value(f"{name}.tau_a") * value(f"{name}.tau_b")).sqrt()


def assert_loss_matches_hand_computation(bnn, x, y, num_data, hand, seeds=range(4)):
    """For several seeds: the library's ELBO loss equals ``NLL + KL`` where
    ``hand(value) -> (augmented weight matrices, KL)`` computes them from the guide's draws
    (``value(site)`` is a drawn value in double precision)."""
    from pyro import poutine, set_rng_seed

    from pyro_sparse_bnn.core import MeanFieldELBO

    for seed in seeds:
        set_rng_seed(seed)
        loss = MeanFieldELBO().loss(bnn.model, bnn.guide, x, y)
        set_rng_seed(seed)
        trace = poutine.trace(bnn.guide).get_trace(x, y)
        weights, kl = hand(lambda name, nodes=trace.nodes: nodes[name]["value"].detach().double())
        expected = nll_from_weights(weights, x, y, num_data) + kl
        assert abs(loss - expected) <= 1e-5 * abs(expected), (seed, loss, expected)


def column_scaled(z, slab):
    """Augmented weights of a Bayesian Compression layer: column ``i`` times ``z_i``, bias unscaled."""
    return torch.cat([z, torch.ones(1, dtype=z.dtype)])[None, :] * slab


def slab_sigma(slab):
    """The guide's standard deviation of a Gaussian slab from its raw parameter: ``softplus(rho)``
    or ``exp(log_var / 2)``, capped at ``sqrt(max_variance)`` when the slab is bounded."""
    if slab.parameterization == "softplus":
        sigma = F.softplus(slab.rho.detach().double())
    else:
        sigma = torch.exp(slab.log_var.detach().double() / 2)
    return sigma if slab.max_variance is None else torch.minimum(sigma, torch.tensor(slab.max_variance).double().sqrt())


def standard_normal_slab_kl(layer):
    """KL(N(mu, s^2) || N(0, 1)) summed over the layer's non-centred slab (Bayesian Compression)."""
    mu, s = layer.slab.loc.detach().double(), slab_sigma(layer.slab)
    return float((-torch.log(s) + (s**2 + mu**2) / 2 - 0.5).sum())


def assert_initial_mean_is_the_users(prior, atol: float):
    """A network built with ``prior`` starts with posterior-mean weights and biases equal to
    the user's initial ones (to ``atol``); returns the network and the user's net."""
    torch.manual_seed(0)
    net = mlp([3, 4, 2])
    bnn = SparseBNN(net, prior, num_data=10)
    weight, bias = bnn.layers[0].posterior_mean()
    assert torch.allclose(weight, net[0].weight, atol=atol) and torch.allclose(bias, net[0].bias, atol=atol)
    return bnn, net
