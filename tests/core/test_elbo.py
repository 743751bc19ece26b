"""The ELBO against an independent hand computation of the published objective."""

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_sparse_bnn import SparseBNN, SpikeSlab
from pyro_sparse_bnn.core import GaussianLikelihood, MeanFieldELBO
from tests.conftest import mlp, randomize_guide

N_DATA = 50


@pytest.fixture
def tiny():
    torch.manual_seed(3)
    bnn = SparseBNN(mlp([3, 2, 2]), SpikeSlab(prior_inclusion=0.2, prior_scale=1.3), num_data=N_DATA)
    randomize_guide(bnn, seed=1, logit_scale=1.5)
    x = torch.randn(10, 3)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
    return bnn, x, y


def hand_kl(bnn) -> float:
    """Bernoulli KL + gamma-weighted slab KL of docs/methods.md section 1, written out."""
    total = 0.0
    sigma0 = 1.3
    for layer in bnn.layers:
        gamma = torch.sigmoid(layer.block.gates.logits.detach()).double()
        lam = layer.prior_inclusion
        mu = layer.block.slab.loc.detach().double()
        sigma = F.softplus(layer.block.slab.rho.detach()).double()
        bern = gamma * torch.log(gamma / lam) + (1 - gamma) * torch.log((1 - gamma) / (1 - lam))
        slab = gamma * (torch.log(sigma0 / sigma) + (sigma**2 + mu**2) / (2 * sigma0**2) - 0.5)
        total += float(bern.sum() + slab.sum())
    return total


def hand_nll(guide_trace, x, y, num_data) -> float:
    """-(N / B) sum_b log softmax(f(x_b))[y_b] for the weights w = z * beta in the trace."""
    def weights(name):
        w = guide_trace.nodes[f"{name}.edge_indicator"]["value"] * guide_trace.nodes[f"{name}.slab"]["value"]
        return w[:, :-1].double(), w[:, -1].double()

    w0, b0 = weights("net.0")
    w1, b1 = weights("net.2")
    logits = torch.relu(x.double() @ w0.T + b0) @ w1.T + b1
    log_lik = torch.log_softmax(logits, dim=-1)[torch.arange(len(y)), y].sum()
    return float(-(num_data / len(y)) * log_lik.detach())


def test_loss_equals_hand_computation_for_the_same_draw(tiny):
    bnn, x, y = tiny
    for seed in range(5):
        pyro.set_rng_seed(seed)
        loss = MeanFieldELBO().loss(bnn.model, bnn.guide, x, y)
        pyro.set_rng_seed(seed)
        guide_trace = poutine.trace(bnn.guide).get_trace(x, y)  # same RNG stream: same draw
        expected = hand_nll(guide_trace, x, y, N_DATA) + hand_kl(bnn)
        assert loss == pytest.approx(expected, rel=1e-5)


def test_pyro_trace_mean_field_elbo_gives_the_same_loss(tiny):
    bnn, x, y = tiny
    pyro.set_rng_seed(7)
    ours = MeanFieldELBO().loss(bnn.model, bnn.guide, x, y)
    pyro.set_rng_seed(7)
    theirs = TraceMeanField_ELBO().loss(bnn.model, bnn.guide, x, y)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_the_elbos_kl_is_the_monte_carlo_mean_of_log_q_minus_log_p(tiny):
    """Independent of the registered KLs: at each draw the ELBO's KL term (loss at kl_weight 1
    minus loss at kl_weight 0, same draw) is compared with log q - log p of the draw summed over
    the latent sites, from the distributions' log_prob; their difference has mean zero (5
    standard errors). A KL with the wrong sign is off by twice the KL."""
    bnn, x, y = tiny
    differences = []
    for seed in range(100):
        pyro.set_rng_seed(seed)
        with_kl = MeanFieldELBO().loss(bnn.model, bnn.guide, x, y)
        pyro.set_rng_seed(seed)
        without_kl = MeanFieldELBO(kl_weight=0.0).loss(bnn.model, bnn.guide, x, y)
        pyro.set_rng_seed(seed)
        guide = poutine.trace(bnn.guide).get_trace(x, y)
        model = poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(x, y)
        log_ratio = sum(float((site["fn"].log_prob(site["value"]) - model.nodes[name]["fn"].log_prob(site["value"])).sum())
                        for name, site in guide.nodes.items() if site["type"] == "sample")
        differences.append(log_ratio - (with_kl - without_kl))
    d = torch.tensor(differences, dtype=torch.float64)
    assert abs(float(d.mean())) < 5 * float(d.std()) / math.sqrt(len(d)), float(d.mean())


@pytest.mark.slow  # about 10 s each: many guide draws
def test_monte_carlo_elbo_agrees_in_expectation(tiny):
    """Pyro's plain Trace_ELBO (log p - log q at the samples, no closed forms) estimates the
    same objective: the means of many single-particle estimates agree within 5 standard errors."""
    bnn, x, y = tiny
    n = 1500
    analytic = torch.tensor([MeanFieldELBO().loss(bnn.model, bnn.guide, x, y) for _ in range(n)])
    monte_carlo = torch.tensor([Trace_ELBO().loss(bnn.model, bnn.guide, x, y) for _ in range(n)])
    standard_error = math.sqrt((analytic.var() + monte_carlo.var()) / n)
    assert abs(float(analytic.mean() - monte_carlo.mean())) < 5 * standard_error
    # closed-form KLs remove variance: the analytic estimator must be the quieter one
    assert analytic.var() < monte_carlo.var()


def test_minibatch_losses_average_to_the_full_batch_loss(tiny):
    bnn, _, _ = tiny
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_DATA, 3, generator=generator)
    y = torch.randint(0, 2, (N_DATA,), generator=generator)
    fixed = poutine.trace(bnn.guide).get_trace(x, y)
    guide = poutine.replay(bnn.guide, trace=fixed)  # same weights for every batch
    elbo = MeanFieldELBO()
    full = elbo.loss(bnn.model, guide, x, y)
    for batch in (5, 10, 25):
        order = torch.randperm(N_DATA, generator=generator)
        losses = [elbo.loss(bnn.model, guide, x[idx], y[idx]) for idx in order.split(batch)]
        assert sum(losses) / len(losses) == pytest.approx(full, rel=1e-5)
    # and the scale really is N / batch: a batch alone is not the full-data loss
    assert elbo.loss(bnn.model, guide, x[:5], y[:5]) != pytest.approx(full, rel=1e-3)


def test_gaussian_likelihood_term_is_scaled_normal_log_density():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([2, 3, 1]), SpikeSlab(prior_inclusion=0.3),
                    likelihood=GaussianLikelihood(noise_scale=0.7), num_data=40)
    x, y = torch.randn(8, 2), torch.randn(8)
    pyro.set_rng_seed(0)
    loss = MeanFieldELBO().loss(bnn.model, bnn.guide, x, y)
    pyro.set_rng_seed(0)
    trace = poutine.trace(bnn.guide).get_trace(x, y)
    out = poutine.replay(bnn.model, trace=trace)(x)[:, 0]
    nll = -(40 / 8) * torch.distributions.Normal(out.detach(), 0.7).log_prob(y).sum()
    assert loss == pytest.approx(float(nll) + hand_kl(bnn), rel=1e-5)


def test_kl_weight_scales_only_the_kl_term(tiny):
    bnn, x, y = tiny
    pyro.set_rng_seed(2)
    half = MeanFieldELBO(kl_weight=0.5).loss(bnn.model, bnn.guide, x, y)
    pyro.set_rng_seed(2)
    trace = poutine.trace(bnn.guide).get_trace(x, y)
    assert half == pytest.approx(hand_nll(trace, x, y, N_DATA) + 0.5 * hand_kl(bnn), rel=1e-5)


def test_a_site_without_a_closed_form_kl_enters_as_log_q_minus_log_p_at_the_draw():
    """HalfCauchy prior, LogNormal guide: no registered KL, so the ELBO's term is the single
    draw's log q(z) - log p(z); recomputed here by hand from the same draw (no data, so the
    loss is that term alone)."""
    import pyro.distributions as dist

    def model():
        pyro.sample("z", dist.HalfCauchy(torch.tensor(1.0)))

    def guide():
        pyro.sample("z", dist.LogNormal(torch.tensor(0.3), torch.tensor(0.5)))

    for seed in range(3):
        pyro.set_rng_seed(seed)
        loss = MeanFieldELBO().loss(model, guide)
        pyro.set_rng_seed(seed)
        z = poutine.trace(guide).get_trace().nodes["z"]["value"]
        log_q = -torch.log(z) - math.log(0.5 * math.sqrt(2 * math.pi)) - (torch.log(z) - 0.3) ** 2 / (2 * 0.25)
        log_p = math.log(2 / math.pi) - torch.log1p(z ** 2)
        assert loss == pytest.approx(float(log_q - log_p), rel=1e-5, abs=1e-6)
