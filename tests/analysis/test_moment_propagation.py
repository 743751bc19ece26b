"""Moment propagation: exact on a linear network with one hidden layer, within the closed-form
linearisation error on a ReLU network, exact pooling / activation rules, and moment training."""

import math

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    HyperparameterError,
    InputError,
    NonFiniteLossError,
    SelfCompressingGaussian,
    SparseBNN,
    SpikeSlabNode,
)
from pyro_sparse_bnn.analysis import masked_posterior_mean
from pyro_sparse_bnn.analysis.moment_propagation import (
    _fixed_moments,
    fit_moments,
    moment_loss,
    moment_predict,
)
from pyro_sparse_bnn.core import GaussianLikelihood, MeanFieldELBO
from tests.conftest import conv_net, randomize_guide

NUM_DRAWS = 20000
NORMAL_PDF_0 = 1 / math.sqrt(2 * math.pi)


def guide_moments(bnn):
    """``(mu, sigma)`` of every layer's augmented matrix, in double precision."""
    return [(layer.slab.loc.detach().double(), layer.slab.scale.double()) for layer in bnn.layers]


def monte_carlo(bnn, x, activation, generator):
    """Draws ``(S, batch, outputs)`` of a one-hidden-layer network with weights sampled from the
    guide (one weight draw per network draw, no local reparameterisation), written out by hand."""
    (mu1, s1), (mu2, s2) = guide_moments(bnn)
    w1 = mu1 + s1 * torch.randn((NUM_DRAWS,) + mu1.shape, generator=generator, dtype=torch.float64)
    w2 = mu2 + s2 * torch.randn((NUM_DRAWS,) + mu2.shape, generator=generator, dtype=torch.float64)
    x = x.double()
    h = activation(torch.einsum("bi,sji->sbj", x, w1[..., :-1]) + w1[:, None, :, -1])
    return torch.einsum("sbj,skj->sbk", h, w2[..., :-1]) + w2[:, None, :, -1]


def mc_moments(draws):
    """Sample mean and variance with their standard errors (variance: from the 4th moment)."""
    mean, var = draws.mean(0), draws.var(0)
    fourth = (draws - mean).pow(4).mean(0)
    n = draws.shape[0]
    return mean, var, draws.std(0) / math.sqrt(n), ((fourth - var.square()).clamp(min=0) / n).sqrt()


def one_hidden_layer(activation, rho_shift):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), activation(), nn.Linear(8, 3)).double()
    bnn = randomize_guide(SparseBNN(net, SelfCompressingGaussian(), likelihood="gaussian", num_data=50), seed=1)
    with torch.no_grad():
        for layer in bnn.layers:  # sigma = softplus(N(0, 1) - 3 + shift): wide enough to matter
            layer.slab.rho.add_(rho_shift)
    return bnn


def test_linear_network_moments_equal_monte_carlo():
    """No activation: the propagated mean and variance are exact; they agree with 20,000
    Monte Carlo draws within 5 standard errors, entry by entry. The check can fail: dropping
    the ``m^2 W_var`` term (the hidden units' mean times the output weights' variance) moves
    the variance far outside that band."""
    bnn = one_hidden_layer(nn.Identity, rho_shift=2.0)
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    prediction = moment_predict(bnn, x, masked=False)
    mean, var, mean_se, var_se = mc_moments(monte_carlo(bnn, x, lambda a: a, torch.Generator().manual_seed(3)))
    assert torch.all((prediction.mean - mean).abs() <= 5 * mean_se)
    assert torch.all((prediction.var - var).abs() <= 5 * var_se)

    (mu1, s1), (mu2, s2) = guide_moments(bnn)
    hidden_mean = x @ mu1[:, :-1].T + mu1[:, -1]
    missing = hidden_mean.square() @ s2[:, :-1].square().T
    assert torch.any(missing > 10 * var_se)


def rectified_moments(m, s):
    """Exact ``E[relu(a)]`` and ``Var[relu(a)]`` for ``a ~ N(m, s^2)``."""
    normal = torch.distributions.Normal(torch.zeros_like(m), torch.ones_like(m))
    z = m / s
    cdf, pdf = normal.cdf(z), normal.log_prob(z).exp()
    first = m * cdf + s * pdf
    second = (m.square() + s.square()) * cdf + m * s * pdf
    return first, second - first.square()


def test_relu_network_stays_within_the_linearisation_error():
    """One hidden ReLU layer. The hidden pre-activations are exactly ``N(m_j, v_j)`` and
    independent, so the only error is the linearisation of ReLU: the output mean is off by
    ``sum_j mu_kj (E[relu(a_j)] - relu(m_j))`` and the output variance by at most
    ``sum_j |Var[relu(a_j)] - 1[m_j > 0] v_j| (mu_kj^2 + sigma_kj^2) + |E[relu(a_j)]^2 -
    relu(m_j)^2| sigma_kj^2``, with the rectified-Gaussian moments in closed form (each mean
    error is at most ``phi(0) s_j = 0.4 s_j``). Tolerance: that bound plus 5 Monte Carlo
    standard errors. The bound is checked to be informative (below 30 % of the variance)."""
    bnn = one_hidden_layer(nn.ReLU, rho_shift=1.0)
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    prediction = moment_predict(bnn, x, masked=False)
    mean, var, mean_se, var_se = mc_moments(monte_carlo(bnn, x, torch.relu, torch.Generator().manual_seed(3)))

    (mu1, s1), (mu2, s2) = guide_moments(bnn)
    m = x @ mu1[:, :-1].T + mu1[:, -1]
    s = (x.square() @ s1[:, :-1].square().T + s1[:, -1].square()).sqrt()
    exact_mean, exact_var = rectified_moments(m, s)
    mean_error = exact_mean - torch.relu(m)
    assert torch.all(mean_error <= NORMAL_PDF_0 * s + 1e-12)
    var_error = (exact_var - (m > 0) * s.square()).abs()
    square_error = (exact_mean.square() - torch.relu(m).square()).abs()
    w_mean, w_var = mu2[:, :-1], s2[:, :-1].square()
    mean_bound = mean_error @ w_mean.abs().T
    var_bound = var_error @ (w_mean.square() + w_var).T + square_error @ w_var.T
    assert torch.all((prediction.mean - mean).abs() <= mean_bound + 5 * mean_se)
    assert torch.all((prediction.var - var).abs() <= var_bound + 5 * var_se)
    assert float((var_bound / var).median()) < 0.3


def test_pooling_and_activation_rules_match_their_jacobians():
    """A linear map ``y = J x`` has ``Var[y] = J^2 v`` for independent inputs: average pooling
    (with padding, so the divisors differ at the border) exactly, max pooling and tanh as
    their linearisation at the mean."""
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 2, 5, 5, generator=generator, dtype=torch.float64)
    var = torch.rand(1, 2, 5, 5, generator=generator, dtype=torch.float64)
    for module in [nn.AvgPool2d(2, padding=1), nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                   nn.MaxPool2d(2), nn.Tanh()]:
        out_mean, out_var = _fixed_moments(module, mean, var)
        jacobian = torch.autograd.functional.jacobian(module, mean).reshape(out_mean.numel(), mean.numel())
        assert torch.allclose(out_mean, module(mean))
        expected = (jacobian.square() @ var.flatten()).view_as(out_var)
        assert torch.allclose(out_var, expected, atol=1e-12), module


@pytest.mark.parametrize("kind", ["max-pool", "avg-pool"])
def test_without_weight_noise_the_mean_is_the_compressed_network_for_any_prior(kind):
    """With (almost) zero posterior variances the propagated mean is the masked posterior-mean
    network -- the one ``compress`` builds -- for a conv net, here with SS-IG's node indicators
    and with the self-compressing prior; the variance is (almost) zero."""
    for prior in (SpikeSlabNode(), SelfCompressingGaussian()):
        torch.manual_seed(0)
        bnn = randomize_guide(SparseBNN(conv_net(kind), prior, num_data=20), seed=1)
        with torch.no_grad():
            for name, p in bnn.named_parameters():
                if name.endswith("rho"):
                    p.fill_(-40.0)
        x = torch.randn(6, 72)
        prediction = moment_predict(bnn, x)
        expected = masked_posterior_mean(bnn)(x)
        assert torch.allclose(prediction.mean, expected, atol=1e-5, rtol=1e-5)
        assert float(prediction.var.max()) < 1e-10
        assert torch.allclose(prediction.probs.sum(-1), torch.ones(6))


def linear_regression_bnn(num_data=40):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)).double()
    return SparseBNN(net, SelfCompressingGaussian(init_rho=-1.0), likelihood=GaussianLikelihood(0.7),
                     num_data=num_data)


def test_moment_loss_is_the_elbo_on_a_linear_network():
    """For a linear network with one hidden layer the propagated moments are exact, so the
    moment loss equals the expected negative ELBO; compared with the mean of 3,000 Monte Carlo
    ELBO estimates (Pyro, closed-form KL) within 5 standard errors."""
    bnn = linear_regression_bnn()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = x[:, 0] - 2 * x[:, 1] + 0.5 * torch.randn(40, generator=generator, dtype=torch.float64)
    elbo = MeanFieldELBO()
    losses = torch.tensor([elbo.loss(bnn.model, bnn.guide, x, y) for _ in range(3000)], dtype=torch.float64)
    exact = float(moment_loss(bnn, x, y))
    assert abs(exact - float(losses.mean())) < 5 * float(losses.std()) / math.sqrt(len(losses))


def test_fit_moments_learns_a_linear_function():
    bnn = linear_regression_bnn(num_data=200)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    y = x[:, 0] - 2 * x[:, 1] + 0.7 * torch.randn(200, generator=generator, dtype=torch.float64)
    history = fit_moments(bnn, x, y, epochs=150, batch_size=50, lr=2e-2, seed=0, progress=False)
    assert history.loss[-1] < 0.5 * history.loss[0] and bnn.is_fitted
    prediction = moment_predict(bnn, x, masked=False)
    rmse = float((prediction.mean[:, 0] - y).square().mean().sqrt())
    assert rmse < 0.7 * 1.1
    assert torch.all(prediction.std > 0.7)  # the noise is part of the predictive spread


def test_bad_input_gets_clear_errors():
    bnn = linear_regression_bnn()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    with pytest.raises(InputError, match="x_var"):
        moment_predict(bnn, x, x_var=torch.ones(5, 2, dtype=torch.float64))
    with pytest.raises(InputError):
        moment_predict(bnn, torch.randn(5, 4, dtype=torch.float64))
    torch.manual_seed(0)
    classifier = SparseBNN(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), SelfCompressingGaussian())
    with pytest.raises(HyperparameterError, match="GaussianLikelihood"):
        moment_loss(classifier, x.float(), torch.zeros(5, dtype=torch.long))
    other = SparseBNN(nn.Sequential(nn.Linear(3, 1)), SpikeSlabNode(), likelihood="gaussian")
    with pytest.raises(HyperparameterError, match="SelfCompressingGaussian"):
        fit_moments(other, x.float(), y.float(), epochs=1)


def regression_setup(num_data=200):
    bnn = linear_regression_bnn(num_data=num_data)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(num_data, 3, generator=generator, dtype=torch.float64)
    y = x[:, 0] - 2 * x[:, 1] + 0.7 * torch.randn(num_data, generator=generator, dtype=torch.float64)
    return bnn, x, y


def test_fit_moments_runs_adam_over_shuffled_minibatches():
    """fit_moments (in fit's epoch loop) against the loop written out here: Adam on
    moment_loss over torch.randperm minibatches, from the same seed -- and against the numbers
    the loop of its own gave before it moved into core (recorded, a regression check)."""
    import pyro

    bnn, x, y = regression_setup()
    history = fit_moments(bnn, x, y, epochs=5, batch_size=50, lr=2e-2, seed=0, progress=False)

    by_hand, _, _ = regression_setup()
    pyro.set_rng_seed(0)
    optimizer = torch.optim.Adam(by_hand.parameters(), lr=2e-2)
    losses = []
    for _ in range(5):
        order, total = torch.randperm(len(x)), 0.0
        for start in range(0, len(x), 50):
            idx = order[start:start + 50]
            loss = moment_loss(by_hand, x[idx], y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / 4)
    assert history.loss == pytest.approx(losses, rel=1e-12)
    assert all(torch.allclose(p, q, rtol=1e-10, atol=1e-12)
               for p, q in zip(bnn.parameters(), by_hand.parameters(), strict=True))
    assert history.num_steps == int(bnn.num_steps) == 20 and len(history.seconds) == 5

    recorded = [1438.9151857735596, 1263.1661916984767, 1103.4251879721814, 957.2894847324928, 803.7752858029196]
    assert history.loss == pytest.approx(recorded, rel=1e-12)
    assert float(bnn.layers[0].slab.loc.sum()) == pytest.approx(-0.7765113093300053, rel=1e-10)
    assert float(bnn.layers[1].slab.rho.sum()) == pytest.approx(-6.863835518365474, rel=1e-10)


def test_fit_moments_stops_before_a_non_finite_step():
    bnn, x, y = regression_setup()
    with torch.no_grad():
        bnn.layers[1].slab.loc[0, 0] = float("nan")
    before = [p.detach().clone() for p in bnn.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"the moment loss became nan at epoch 0, step 0 \(step 0 overall\)"):
        fit_moments(bnn, x, y, epochs=2, batch_size=50, progress=False)
    assert all(torch.equal(p.isnan(), q.isnan()) and torch.equal(p.nan_to_num(), q.nan_to_num())
               for p, q in zip(bnn.parameters(), before, strict=True))
    assert int(bnn.num_steps) == 0


def test_moment_loss_reads_the_slab_scale_in_either_parameterisation():
    """The same posterior standard deviations held as softplus(rho) or as a log-variance give
    the same moment loss."""
    from pyro_sparse_bnn.core.priors.base import GaussianSlab

    bnn, x, y = regression_setup(num_data=40)
    with torch.no_grad():
        for layer in bnn.layers:
            layer.slab.rho.uniform_(-3.0, 0.5)
    expected = float(moment_loss(bnn, x, y))
    sigmas = [layer.slab.scale for layer in bnn.layers]
    for layer, sigma in zip(bnn.layers, sigmas, strict=True):
        slab = GaussianSlab(layer.slab.loc.detach(), float(layer.slab.prior_scale), 0.0,
                            parameterization="log_variance").double()
        with torch.no_grad():
            slab.log_var.copy_(2 * sigma.log())
        layer.slab = slab
    assert [torch.allclose(layer.slab.scale, s) for layer, s in zip(bnn.layers, sigmas, strict=True)] == [True, True]
    assert float(moment_loss(bnn, x, y)) == pytest.approx(expected, rel=1e-10)
