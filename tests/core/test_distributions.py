"""ConcreteBernoulli, GatedNormal and the closed-form KLs, checked against Monte Carlo."""

import math

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from pyro_sparse_bnn.core.distributions import (
    ConcreteBernoulli,
    GatedNormal,
    LogUniformScale,
    SlabNormal,
    bernoulli_kl,
    log_uniform_kl,
    normal_kl,
)
from pyro_sparse_bnn.core.priors.base import GaussianSlab

NUM_MC = 200_000


def mc_tolerance(samples: torch.Tensor, sigmas: float = 5.0) -> torch.Tensor:
    """``sigmas`` standard errors of the mean of ``samples`` along dim 0."""
    return sigmas * samples.std(0) / math.sqrt(samples.shape[0])


class TestConcreteBernoulli:
    def test_hard_samples_are_binary_with_straight_through_gradient(self):
        logits = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
        value = ConcreteBernoulli(logits, torch.tensor(0.5)).rsample((1000,))
        assert set(value.unique().tolist()) <= {0.0, 1.0}
        value.sum().backward()
        assert torch.all(logits.grad > 0), "the relaxed draw must pass gradient to the logits"

    def test_hard_sample_mean_is_the_inclusion_probability(self):
        logits = torch.tensor([-3.0, -0.5, 0.0, 1.0, 4.0])
        draws = ConcreteBernoulli(logits, torch.tensor(0.5)).sample((NUM_MC,))
        p = torch.sigmoid(logits)
        # binomial standard error of the mean, 5 sigma
        tolerance = 5 * torch.sqrt(p * (1 - p) / NUM_MC)
        assert torch.all((draws.mean(0) - p).abs() < tolerance)

    def test_soft_samples_lie_strictly_inside_the_unit_interval_even_for_extreme_logits(self):
        logits = torch.tensor([-60.0, 60.0])
        d = ConcreteBernoulli(logits, torch.tensor(0.1), hard=False)
        value = d.rsample((10_000,))
        assert torch.all((value >= 0) & (value <= 1))
        log_p = d.log_prob(value)
        assert torch.isfinite(log_p).all(), "log-densities must never see exact 0/1"
        assert torch.isfinite(d.log_prob(torch.tensor([0.0, 1.0]))).all()

    def test_soft_density_integrates_to_one(self):
        for logit, tau in [(0.0, 0.5), (1.5, 1.0), (-1.0, 2.0)]:
            d = ConcreteBernoulli(torch.tensor(logit), torch.tensor(tau), hard=False)
            # integrate in logit space, where the density is smooth: x = sigmoid(u)
            u = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
            x = torch.sigmoid(u)
            density = torch.exp(d.log_prob(x.float()).double()) * x * (1 - x)
            integral = torch.trapezoid(density, u)
            assert abs(float(integral) - 1.0) < 1e-3

    def test_hard_log_prob_is_bernoulli(self):
        logits = torch.tensor([-1.0, 0.3, 2.0])
        d = ConcreteBernoulli(logits, torch.tensor(0.5))
        value = torch.tensor([1.0, 0.0, 1.0])
        expected = dist.Bernoulli(logits=logits).log_prob(value)
        assert torch.allclose(d.log_prob(value), expected)

    def test_expand_and_temperature_tensor(self):
        temperature = torch.tensor(0.5)
        d = ConcreteBernoulli(torch.zeros(3), temperature).expand((2, 3))
        assert d.batch_shape == (2, 3)
        temperature.fill_(2.0)  # annealing in place reaches the distribution
        assert float(d.temperature) == 2.0


class TestBernoulliKL:
    @pytest.mark.parametrize("prior", [1e-4, 0.1, 0.5])
    def test_closed_form_against_monte_carlo(self, prior):
        logits = torch.tensor([-4.0, -1.0, 0.0, 2.0, 4.6])
        q = ConcreteBernoulli(logits, torch.tensor(0.5))
        p = dist.Bernoulli(probs=torch.tensor(prior)).expand(logits.shape)
        z = q.sample((NUM_MC,))
        log_ratio = q.log_prob(z) - p.log_prob(z)
        closed = kl_divergence(q, p)
        assert torch.all((log_ratio.mean(0) - closed).abs() < mc_tolerance(log_ratio) + 1e-6)

    def test_matches_textbook_formula_and_is_finite_at_extremes(self):
        gamma = torch.tensor([1e-6, 0.2, 0.5, 0.99])
        lam = 0.05
        textbook = gamma * torch.log(gamma / lam) + (1 - gamma) * torch.log((1 - gamma) / (1 - lam))
        assert torch.allclose(bernoulli_kl(torch.logit(gamma), lam), textbook, atol=1e-5)
        assert torch.isfinite(bernoulli_kl(torch.tensor([-200.0, 200.0]), 1e-5)).all()

    def test_registered_kl_agrees_with_the_formula_for_scalar_and_per_entry_priors(self):
        """The registered KL takes a plain-Python path for one prior probability per layer
        and the tensor path otherwise; both equal :func:`bernoulli_kl`."""
        logits = torch.tensor([-4.0, -1.0, 0.0, 2.0, 4.6])
        q = ConcreteBernoulli(logits, torch.tensor(0.5))
        for prior in (torch.tensor(0.05).expand(5), torch.tensor([0.05, 0.1, 0.5, 0.9, 0.3])):
            closed = kl_divergence(q, dist.Bernoulli(probs=prior))
            assert torch.allclose(closed, bernoulli_kl(logits, prior), atol=1e-6)


class TestGatedNormalKL:
    def test_inclusion_weighted_slab_kl_against_monte_carlo(self):
        """E_q[log q(beta | z) - log p(beta)] over z ~ Bernoulli(gamma), beta ~ q(beta | z)
        equals gamma * KL(N(mu, sigma^2) || N(0, sigma0^2))."""
        loc = torch.tensor([0.0, 1.0, -2.0, 0.5])
        scale = torch.tensor([0.5, 0.1, 1.0, 2.0])
        gamma = torch.tensor([0.9, 0.3, 0.5, 0.05])
        prior_scale = 1.3
        z = torch.bernoulli(gamma.expand(NUM_MC, 4))
        # draw beta from the conditional the density describes (prior where z = 0)
        beta = torch.where(z > 0.5, loc + scale * torch.randn(NUM_MC, 4), prior_scale * torch.randn(NUM_MC, 4))
        q = GatedNormal(loc, scale, z, gamma, prior_scale)
        p = dist.Normal(0.0, prior_scale)
        log_ratio = q.log_prob(beta) - p.log_prob(beta)
        closed = kl_divergence(q, p.expand(loc.shape))
        assert torch.allclose(closed, gamma * normal_kl(loc, scale, 0.0, prior_scale))
        assert torch.all((log_ratio.mean(0) - closed).abs() < mc_tolerance(log_ratio))

    def test_off_entries_contribute_exactly_zero_log_ratio(self):
        q = GatedNormal(torch.ones(3), torch.ones(3) * 0.1, torch.zeros(3), torch.full((3,), 0.5), 2.0)
        value = torch.tensor([-3.0, 0.0, 5.0])
        assert torch.allclose(q.log_prob(value), dist.Normal(0.0, 2.0).log_prob(value))

    def test_samples_come_from_the_slab_everywhere(self):
        q = GatedNormal(torch.full((2,), 3.0), torch.full((2,), 0.01), torch.tensor([1.0, 0.0]),
                        torch.full((2,), 0.5), 1.0)
        draws = q.rsample((1000,))
        assert torch.allclose(draws.mean(0), torch.full((2,), 3.0), atol=0.01)

    def test_kl_dispatches_through_independent(self):
        loc, scale = torch.zeros(2, 3), torch.ones(2, 3)
        gate, probs = torch.ones(2, 3), torch.full((2, 3), 0.25)
        q = GatedNormal(loc + 1, scale, gate, probs, 1.0).to_event(2)
        p = dist.Normal(0.0, 1.0).expand((2, 3)).to_event(2)
        assert torch.allclose(kl_divergence(q, p), torch.tensor(6 * 0.25 * 0.5))


    @pytest.mark.parametrize("gate_shape", [(3, 4), (3, 1), (1, 4)], ids=["per entry", "per row", "per column"])
    def test_written_out_gradients_match_autograd(self, gate_shape):
        """The KL's hand-written backward against torch's numerical gradient check (double
        precision), for gates covering entries, rows (node indicators) and columns."""
        from pyro_sparse_bnn.core.distributions import _GatedNormalKL

        generator = torch.Generator().manual_seed(0)
        loc = torch.randn(3, 4, dtype=torch.float64, generator=generator).requires_grad_()
        scale = (torch.rand(3, 4, dtype=torch.float64, generator=generator) + 0.1).requires_grad_()
        gamma = torch.rand(gate_shape, dtype=torch.float64, generator=generator).requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b, c: _GatedNormalKL.apply(a, b, c, 1.7**2),
                                        (loc, scale, gamma))
        reference = gamma * normal_kl(loc, scale, 0.0, 1.7)
        assert torch.allclose(_GatedNormalKL.apply(loc, scale, gamma, 1.7**2), reference)

    def test_a_prior_with_nonzero_mean_uses_the_general_formula(self):
        q = GatedNormal(torch.zeros(3), torch.ones(3), torch.ones(3), torch.full((3,), 0.5), 1.0)
        p = dist.Normal(torch.tensor([0.0, 1.0, 2.0]), 1.0)
        assert torch.allclose(kl_divergence(q, p), 0.5 * normal_kl(torch.zeros(3), torch.ones(3), p.loc, 1.0))


def test_broadcast_shape_agrees_with_torch():
    from pyro_sparse_bnn.core.distributions import _broadcast_shape

    cases = [[(3, 1), (3, 4)], [(4,), (2, 1, 4)], [(), (5,)], [(2, 0), (1, 1)], [(1, 3), (2, 1)]]
    for shapes in cases:
        tensors = [torch.empty(shape) for shape in shapes]
        assert _broadcast_shape(*tensors) == torch.broadcast_shapes(*shapes)
    with pytest.raises(ValueError, match="broadcast"):
        _broadcast_shape(torch.empty(3), torch.empty(4))


def test_normal_kl_matches_torch():
    loc, scale = torch.randn(10), torch.rand(10) + 0.05
    expected = kl_divergence(dist.Normal(loc, scale), dist.Normal(0.3, 1.7))
    assert torch.allclose(normal_kl(loc, scale, 0.3, 1.7), expected, atol=1e-6)


class TestLogNormalScaleKLs:
    """The closed forms used for group scales (SS-GL, SS-GHS, BC-GHS) against Monte Carlo."""

    loc = torch.tensor([-1.0, 0.0, 0.7, 2.0])
    scale = torch.tensor([0.1, 0.5, 1.0, 0.3])

    @pytest.mark.parametrize("prior", [
        dist.Gamma(0.5, 1.0),            # half-Cauchy factor a
        dist.Gamma(4.0, 2.0),            # SS-GL lambda^2
        dist.Gamma(3.5, 0.8),            # SS-GL tau^2 | lambda^2
        dist.InverseGamma(0.5, 1.0),     # half-Cauchy factor b
        dist.InverseGamma(2.0, 3.0),
    ])
    def test_against_monte_carlo(self, prior):
        q = dist.LogNormal(self.loc, self.scale)
        p = prior.expand(self.loc.shape)
        x = q.sample((NUM_MC,))
        log_ratio = q.log_prob(x) - p.log_prob(x)
        closed = kl_divergence(q, p)
        assert torch.all((log_ratio.mean(0) - closed).abs() < mc_tolerance(log_ratio))

    def test_methods_md_formulas_for_the_half_cauchy_factors(self):
        from pyro_sparse_bnn.core.distributions import (
            lognormal_gamma_kl,
            lognormal_inverse_gamma_kl,
        )

        mu, s = self.loc, self.scale
        gamma_form = torch.exp(mu + s**2 / 2) - (mu + 2 * torch.log(s) + 1 + math.log(2)) / 2
        inverse_form = torch.exp(s**2 / 2 - mu) - (2 * torch.log(s) - mu + 1 + math.log(2)) / 2
        assert torch.allclose(lognormal_gamma_kl(mu, s, torch.tensor(0.5), torch.tensor(1.0)), gamma_form, atol=1e-5)
        assert torch.allclose(lognormal_inverse_gamma_kl(mu, s, torch.tensor(0.5), torch.tensor(1.0)), inverse_form, atol=1e-5)


def _negative_kl_log_uniform(log_alpha):
    """-KL(N(mu, alpha mu^2) || 1/|z|), normalised to vanish as alpha -> infinity, by quadrature:
    with eps ~ N(0, 1) and a = alpha^-1/2, -KL = E log|eps| - E log|eps + a|."""
    from scipy import integrate, stats

    def expected_log_abs(shift):
        f = lambda e: math.log(abs(e + shift)) * stats.norm.pdf(e)  # noqa: E731
        lo, hi = -12.0, 12.0
        if lo < -shift < hi:
            return integrate.quad(f, lo, -shift, limit=200)[0] + integrate.quad(f, -shift, hi, limit=200)[0]
        return integrate.quad(f, lo, hi, limit=200)[0]

    return expected_log_abs(0.0) - expected_log_abs(math.exp(-log_alpha / 2))


def test_molchanov_log_uniform_kl_matches_the_numerical_kl_over_a_grid():
    """Molchanov et al. fitted three constants to the numerical KL; over log alpha in [-8, 8]
    the fit is within 0.01 nats (we find at most 0.009, near log alpha = -4)."""
    grid = torch.linspace(-8, 8, 33, dtype=torch.float64)
    numerical = torch.tensor([-_negative_kl_log_uniform(float(a)) for a in grid], dtype=torch.float64)
    approx = log_uniform_kl(grid)
    assert torch.all((approx - numerical).abs() < 0.01)
    # and the registered pair uses it: KL(N(mu, sigma) || LogUniformScale) with alpha = sigma^2 / mu^2
    loc, scale = torch.tensor([2.0, -0.5]), torch.tensor([0.1, 1.0])
    registered = kl_divergence(Normal(loc, scale), LogUniformScale((2,)))
    assert torch.allclose(registered, log_uniform_kl(torch.log(scale**2 / loc**2)))


def test_log_uniform_kl_has_a_finite_gradient_where_a_group_mean_reaches_zero():
    """A pruned BC-GNJ group's mean goes to 0; log alpha uses log(mu^2 + 1e-8) there (as the
    authors' code does), so neither the KL nor its gradient is infinite or NaN at mu = 0."""
    from pyro_sparse_bnn.core.distributions import LogUniformScale

    loc = torch.tensor([0.0, 1e-6, 0.5], requires_grad=True)
    scale = torch.tensor([1e-3, 1e-3, 1e-3])
    kl = kl_divergence(dist.Normal(loc, scale), LogUniformScale((3,)))
    (grad,) = torch.autograd.grad(kl.sum(), [loc])
    assert torch.isfinite(kl).all() and torch.isfinite(grad).all()
    assert float(kl[0]) < float(kl[2])  # a zero mean is the most "dropped" state: lowest KL


@pytest.mark.parametrize("parameterization", ["softplus", "log_variance"])
@pytest.mark.parametrize("gated", [False, True], ids=["ungated", "row gates"])
def test_the_slab_guide_has_the_kl_and_gradients_of_a_plain_normal(parameterization, gated):
    """The slab's guide (a SlabNormal, or a GatedNormal with one gate per row) hands its
    scale or ``log sigma`` to a written-out KL; torch's own Normal KL, weighted by the row
    gates' probabilities, is the independent reference for value and gradients."""
    torch.manual_seed(0)
    init = -4.0 if parameterization == "log_variance" else -2.0
    slab = GaussianSlab(0.3 * torch.randn(4, 6), 1.3, init, parameterization=parameterization)
    loc = slab.loc.detach().clone().requires_grad_()
    param = (slab.scale_param.detach() + 0.5 * torch.randn(4, 6)).requires_grad_()
    gate_probs = torch.rand(4, 1) if gated else None
    gate = torch.ones(4, 1) if gated else None
    kl = kl_divergence(slab.guide_dist(loc, param, gate=gate, gate_probs=gate_probs), slab.prior_dist())
    sigma = F.softplus(param) if parameterization == "softplus" else torch.exp(0.5 * param)
    reference = kl_divergence(Normal(loc, sigma), Normal(torch.zeros(()), torch.tensor(1.3)))
    if gated:
        reference = reference * gate_probs
    reference = reference.sum()
    assert kl.shape == () and torch.allclose(kl, reference, rtol=1e-5)
    for ours, theirs in zip(torch.autograd.grad(kl, [loc, param]), torch.autograd.grad(reference, [loc, param]),
                            strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_a_slab_normal_from_log_scale_is_the_normal_of_that_scale():
    loc, log_scale = torch.randn(3, 5), 0.4 * torch.randn(3, 5)
    ours = SlabNormal(loc, log_scale=log_scale)
    plain = Normal(loc, torch.exp(log_scale))
    value = torch.randn(3, 5)
    assert torch.allclose(ours.scale, plain.scale) and torch.allclose(ours.scale_sq, plain.scale ** 2)
    assert torch.allclose(ours.log_prob(value), plain.log_prob(value), atol=1e-6)
    torch.manual_seed(1)
    a = ours.rsample()
    torch.manual_seed(1)
    assert torch.allclose(a, plain.rsample(), atol=1e-6)
