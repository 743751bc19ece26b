"""Pyro's ``Predictive`` on a SparseBNN, sequential and vectorised (``parallel=True``).

``Predictive(parallel=True)`` wraps guide and model in a plate over the draws, so every site
gets a leading dimension of draws and the layers compute with one weight tensor per draw.
For every prior, on an MLP and on a conv net (a conv layer on the input, pooling, a conv
layer on the pooled maps, a linear layer), the tests check

* the shapes of every returned site against the sequential ``Predictive``;
* per draw: with the guide's draws fixed (``posterior_samples``, i.e. ``poutine.condition``),
  the vectorised model gives the sequential model's outputs, also with the local
  reparameterisation handler entered (conditioned weights are not its draws, so the layers
  apply them: Predictive always draws weights);
* in distribution, an independent route: the Monte Carlo mean and standard deviation of the
  network's outputs over 200 draws agree between ``parallel=True`` and ``parallel=False``
  within a few standard errors.
"""

import math

import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import prune_subsample_sites
from torch import nn

from pyro_sparse_bnn import (
    GroupHorseshoe,
    GroupNormalJeffreys,
    SelfCompressingGaussian,
    SparseBNN,
    SpikeSlab,
    SpikeSlabGroupHorseshoe,
    SpikeSlabGroupLasso,
    SpikeSlabNode,
)
from pyro_sparse_bnn.core import local_reparameterization
from tests.conftest import conv_net, mlp, randomize_guide

PRIORS = {
    "SpikeSlab": SpikeSlab,
    "SpikeSlabNode": SpikeSlabNode,
    "SpikeSlabGroupLasso": SpikeSlabGroupLasso,
    "SpikeSlabGroupHorseshoe": SpikeSlabGroupHorseshoe,
    "GroupNormalJeffreys": GroupNormalJeffreys,
    "GroupHorseshoe": GroupHorseshoe,
    "SelfCompressingGaussian": SelfCompressingGaussian,
}
NETS = ("mlp", "conv")
BATCH, OUTPUTS = 6, 3


def build(prior: str, net: str):
    """A network whose guide is set to an arbitrary 'fitted' state, and a batch of inputs."""
    torch.manual_seed(0)
    module = mlp([5, 7, 4, OUTPUTS]) if net == "mlp" else conv_net("avg-pool")
    bnn = SparseBNN(module, PRIORS[prior](), num_data=100)
    randomize_guide(bnn, seed=1, logit_scale=2.0)
    x = torch.randn(BATCH, bnn.input_shape[0], generator=torch.Generator().manual_seed(2))
    return bnn, x


def latent_sites(bnn, x):
    return [name for name, site in prune_subsample_sites(_trace(bnn, x)).nodes.items()
            if site["type"] == "sample" and not site["is_observed"]]


def _trace(bnn, x):
    guide = poutine.trace(bnn.guide).get_trace(x)
    return poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(x)


def predictive(bnn, x, num_samples, parallel, seed, return_sites=("obs", "_RETURN")):
    torch.manual_seed(seed)
    return Predictive(bnn.model, guide=bnn.guide, num_samples=num_samples, parallel=parallel,
                      return_sites=list(return_sites))(x)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("prior", list(PRIORS))
def test_parallel_returns_every_site_in_the_sequential_shapes(prior, net):
    bnn, x = build(prior, net)
    sites = latent_sites(bnn, x) + ["obs", "_RETURN"]
    parallel = predictive(bnn, x, 5, True, seed=0, return_sites=sites)
    sequential = predictive(bnn, x, 5, False, seed=0, return_sites=sites)
    assert set(parallel) == set(sequential) == set(sites)
    for name in sites:
        assert parallel[name].shape == sequential[name].shape, name
        assert torch.isfinite(parallel[name]).all(), name
    assert parallel["_RETURN"].shape == (5, BATCH, OUTPUTS)
    assert parallel["obs"].shape == (5, BATCH)
    assert ((parallel["obs"] >= 0) & (parallel["obs"] < OUTPUTS)).all()


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("prior", list(PRIORS))
def test_parallel_and_sequential_agree_draw_by_draw(prior, net):
    bnn, x = build(prior, net)
    torch.manual_seed(0)
    draws = Predictive(bnn.guide, num_samples=7)(x)  # sequential guide draws, every site
    parallel_draws = Predictive(bnn.guide, num_samples=7, parallel=True)(x)
    assert {k: v.shape for k, v in draws.items()} == {k: v.shape for k, v in parallel_draws.items()}

    def outputs(parallel, handler=False):
        run = Predictive(bnn.model, posterior_samples=draws, parallel=parallel, return_sites=["_RETURN"])
        if handler:
            with local_reparameterization():
                return run(x)["_RETURN"]
        return run(x)["_RETURN"]

    sequential = outputs(False)
    assert sequential.shape == (7, BATCH, OUTPUTS)
    assert torch.allclose(outputs(True), sequential, rtol=1e-5, atol=1e-5)
    assert torch.allclose(outputs(True, handler=True), sequential, rtol=1e-5, atol=1e-5)
    # and draw i is the network with draw i's weights
    first = {k: v[0] for k, v in draws.items()}
    assert torch.allclose(poutine.condition(bnn.model, first)(x), sequential[0], rtol=1e-5, atol=1e-5)


def _moments_agree(a, b, num_sigma=5.0):
    """Means and standard deviations over dim 0 of two independent samples agree entrywise
    within ``num_sigma`` standard errors (of the difference of means, of the log-ratio of
    standard deviations, the latter from the samples' kurtosis)."""
    n = a.shape[0]
    mean_a, mean_b, var_a, var_b = a.mean(0), b.mean(0), a.var(0), b.var(0)
    z_mean = (mean_a - mean_b).abs() / ((var_a + var_b) / n).sqrt().clamp(min=1e-12)
    assert z_mean.max() < num_sigma, f"means differ by {z_mean.max():.1f} standard errors"

    def log_var_se_sq(s, v):  # Var[log sample variance] ~ (kurtosis - 1) / n
        kurtosis = ((s - s.mean(0)) ** 4).mean(0) / v.square().clamp(min=1e-24)
        return (kurtosis - 1).clamp(min=2.0 / 3) / n

    z_std = (var_a.log() - var_b.log()).abs() / (log_var_se_sq(a, var_a) + log_var_se_sq(b, var_b)).sqrt()
    assert z_std.max() < num_sigma, f"standard deviations differ by {z_std.max():.1f} standard errors"


#: the combinations of the distribution test in the quick run (the others are marked slow:
#: 200 sequential Predictive draws take several seconds each; the conv layers' batched
#: arithmetic is checked draw by draw above)
QUICK = {("SpikeSlab", "mlp")}


@pytest.mark.parametrize(("prior", "net"), [
    pytest.param(prior, net, marks=() if (prior, net) in QUICK else pytest.mark.slow)
    for prior in PRIORS for net in NETS
])
def test_parallel_and_sequential_outputs_have_the_same_distribution(prior, net):
    bnn, x = build(prior, net)
    parallel = predictive(bnn, x, 200, True, seed=1)["_RETURN"]
    sequential = predictive(bnn, x, 200, False, seed=2)["_RETURN"]
    assert parallel.shape == sequential.shape == (200, BATCH, OUTPUTS)
    assert parallel.std(0).min() > 0, "the draws vary"
    _moments_agree(parallel, sequential)


def test_parallel_regression_with_several_outputs_and_learned_noise():
    from pyro_sparse_bnn.core.likelihoods import GaussianLikelihood
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([4, 6, 2]), SpikeSlabNode(), likelihood=GaussianLikelihood(0.3, learn_noise=True),
                    num_data=50)
    x = torch.randn(5, 4)
    samples = predictive(bnn, x, 4, True, seed=0)
    assert samples["obs"].shape == (4, 5, 2) and samples["_RETURN"].shape == (4, 5, 2)
    single = SparseBNN(mlp([4, 6, 1]), SpikeSlab(), likelihood="gaussian", num_data=50)
    samples = predictive(single, x, 4, True, seed=0)
    assert samples["obs"].shape == (4, 5) and samples["_RETURN"].shape == (4, 5, 1)


def test_the_vectorising_plate_sits_left_of_the_data_plate():
    """The model declares its data plate at dim -1, so Predictive finds max_plate_nesting 1
    and vectorises at dim -2: ``obs`` is (draws, batch), a weight site's batch shape (draws, 1),
    also for a site whose prior depends on another site's draw (SS-GL's tau^2 on lambda^2)."""
    bnn, x = build("SpikeSlabGroupLasso", "mlp")
    assert bnn.max_plate_nesting == 1
    trace = Predictive(bnn.model, guide=bnn.guide, num_samples=3, parallel=True).get_vectorized_trace(x)
    assert trace.nodes["obs"]["fn"].batch_shape == (3, BATCH)
    assert trace.nodes["net.0.tau_sq"]["fn"].batch_shape == (3, 1)
    assert trace.nodes["net.0.lambda_sq"]["fn"].batch_shape == (3, 1)


def test_prior_predictive_runs_vectorised():
    """Without a guide the model samples its own sites under the plate, as ``(draws, 1, ...)``."""
    bnn, x = build("SpikeSlabGroupHorseshoe", "conv")
    samples = Predictive(bnn.model, num_samples=4, parallel=True, return_sites=["obs", "_RETURN", "net.1.slab"])(x)
    assert samples["_RETURN"].shape == (4, BATCH, OUTPUTS) and torch.isfinite(samples["_RETURN"]).all()
    assert samples["net.1.slab"].shape[:2] == (4, 1)
    with pytest.raises(NotImplementedError, match="improper"):
        Predictive(build("GroupNormalJeffreys", "mlp")[0].model, num_samples=2, parallel=True)(x[:, :5])


def test_batched_layers_match_one_draw_at_a_time():
    """The layer arithmetic with leading draw dimensions (weights and inputs both batched,
    each alone) equals a loop over the draws, for linear and conv layers."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Unflatten(1, (2, 5, 5)), nn.Conv2d(2, 3, 3, padding=1, stride=2), nn.Flatten(),
                         nn.Linear(27, 2))
    bnn = SparseBNN(conv, SelfCompressingGaussian(), num_data=10)
    conv_spec, linear_spec = bnn.architecture.specs
    for spec, x_shape in [(conv_spec, (4, 2, 5, 5)), (linear_spec, (4, 27))]:
        params = torch.randn((3,) + spec.param_shape)
        x = torch.randn(x_shape)
        xs = torch.randn((3,) + x_shape)
        loop = torch.stack([spec.apply_augmented(x, p) for p in params])
        assert torch.allclose(spec.apply_augmented(x, params), loop, atol=1e-5)
        loop = torch.stack([spec.apply_augmented(xi, p) for xi, p in zip(xs, params, strict=True)])
        assert torch.allclose(spec.apply_augmented(xs, params), loop, atol=1e-5)
        loop = torch.stack([spec.apply_augmented(xi, params[0]) for xi in xs])
        assert torch.allclose(spec.apply_augmented(xs, params[0]), loop, atol=1e-5)
        # one weight for every draw, a bias factor per draw (columns factor of the handler)
        bias_scale = torch.rand(3, 1)
        loop = torch.stack([spec.apply_augmented(x, params[0], b[0]) for b in bias_scale])
        assert torch.allclose(spec.apply_augmented(x, params[0], bias_scale), loop, atol=1e-5)
    assert math.prod(conv_spec.out_shape) == 27
