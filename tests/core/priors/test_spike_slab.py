"""SpikeSlab: the edge-level spike-and-slab prior of Bai et al. / Saha et al."""

import math

import pytest
import torch
import torch.nn.functional as F
from pyro import poutine

from pyro_sparse_bnn import HyperparameterError, SparseBNN, SpikeSlab
from pyro_sparse_bnn.core import theory_prior_inclusion
from pyro_sparse_bnn.core.priors.spike_slab import SpikeSlabLayer
from tests.conftest import mlp

from .contract import PriorContract, assert_fit_learns_to_prune


class TestSpikeSlabContract(PriorContract):
    def make_prior(self):
        return SpikeSlab(prior_inclusion=0.2)

    def compose(self, layer, draws):
        return draws["edge_indicator"] * draws["slab"]  # w = z beta, one z per entry


def test_soft_relaxation_trains_and_keeps_the_discrete_kl():
    """hard=False relaxes the indicators to (0, 1) in the forward pass; the objective keeps
    the discrete Bernoulli KL (the relaxation only changes the gradient estimator)."""
    from pyro_sparse_bnn import fit

    torch.manual_seed(0)
    bnn = SparseBNN(mlp([4, 6, 3]), SpikeSlab(prior_inclusion=0.2, hard=False), num_data=120)
    trace = poutine.trace(bnn.guide).get_trace()
    values = trace.nodes["net.0.edge_indicator"]["value"]
    assert ((values > 0) & (values < 1)).any()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    history = fit(bnn, x, y, epochs=40, batch_size=40, lr=1e-2, seed=0, progress=False)
    assert sum(history.loss[-5:]) < 0.8 * sum(history.loss[:5])


def test_theory_prior_inclusion_for_the_bai_network():
    # 200-7-7-7-1 with biases: T = 1407 + 56 + 56 + 8 = 1527, L = 3, N_w = 7, n = 3000, p = 200
    # -log lambda = log 1527 + 0.1 (4 log 7 + log(sqrt(3000) 200)) = 7.33106 + 1.70850 = 9.03956
    lam = theory_prior_inclusion(1527, 3, 7, 3000, 200, delta=0.1)
    assert lam == pytest.approx(math.exp(-9.03956), rel=1e-4)
    torch.manual_seed(0)
    net = mlp([200, 7, 7, 7, 1])
    for prior in (SpikeSlab(prior_inclusion="theory"), SpikeSlab(prior_inclusion=None), SpikeSlab.published()):
        bnn = SparseBNN(net, prior, likelihood="gaussian", num_data=3000)
        assert all(layer.prior_inclusion == pytest.approx(lam) for layer in bnn.layers)


def test_theory_lambda_needs_the_data_size():
    with pytest.raises(HyperparameterError, match="num_data"):
        SparseBNN(mlp([3, 2, 2]), SpikeSlab(prior_inclusion="theory"))


def test_default_lambda_is_one_half_and_needs_no_data_size():
    bnn = SparseBNN(mlp([3, 2, 2]), SpikeSlab())
    assert [layer.prior_inclusion for layer in bnn.layers] == [0.5, 0.5]


def test_published_setting_is_the_theory_lambda_and_the_authors_initialisation():
    prior = SpikeSlab.published(prior_scale=2.0)
    assert (prior.prior_inclusion, prior.init_rho, prior.prior_scale) == ("theory", -6.0, 2.0)
    bnn = SparseBNN(mlp([3, 4, 2]), prior, num_data=10)
    assert torch.allclose(bnn.layers[0].block.slab.scale, F.softplus(torch.tensor(-6.0)).expand(4, 4))


def test_sites_cover_weights_and_bias_in_one_augmented_matrix():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    trace = poutine.trace(bnn.guide).get_trace()
    assert trace.nodes["net.0.edge_indicator"]["value"].shape == (4, 4)
    assert trace.nodes["net.0.slab"]["value"].shape == (4, 4)
    assert trace.nodes["net.2.slab"]["value"].shape == (2, 5)
    no_bias = SparseBNN(mlp([3, 4, 2], bias=False), SpikeSlab(prior_inclusion=0.1), num_data=10)
    assert poutine.trace(no_bias.guide).get_trace().nodes["net.0.slab"]["value"].shape == (4, 3)


def test_guide_starts_at_the_published_initialisation():
    torch.manual_seed(0)
    net = mlp([3, 4, 2])
    bnn = SparseBNN(net, SpikeSlab(prior_inclusion=0.1, init_rho=-6.0), num_data=10)
    layer = bnn.layers[0]
    assert isinstance(layer, SpikeSlabLayer)
    assert torch.allclose(layer.edge_inclusion_probs(), torch.full((4, 3), 0.99))
    assert torch.allclose(layer.block.slab.scale, F.softplus(torch.tensor(-6.0)).expand(4, 4))
    weight, bias = layer.posterior_mean()
    assert torch.equal(weight, net[0].weight.detach()) and torch.equal(bias, net[0].bias.detach())


def test_default_slab_scale_is_half_the_spread_of_the_default_initial_weights():
    torch.manual_seed(0)
    net = mlp([30, 48, 2])
    bnn = SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=10)
    for layer, linear in zip(bnn.layers, [net[0], net[2]], strict=True):
        # nn.Linear draws its weights from U(-1/sqrt(fan_in), 1/sqrt(fan_in)): sd 1/sqrt(3 fan_in)
        expected = 0.5 / (3 * linear.in_features) ** 0.5
        assert torch.allclose(layer.block.slab.scale, torch.full(layer.spec.param_shape, expected))
        # and the spread of the drawn weights is that sd
        assert abs(float(linear.weight.std()) / (2 * expected) - 1) < 0.1


def test_keep_masks_threshold_the_inclusion_probabilities():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([2, 2, 1]), SpikeSlab(prior_inclusion=0.1), likelihood="gaussian", num_data=10)
    layer = bnn.layers[0]
    with torch.no_grad():
        layer.block.gates.logits.copy_(torch.tensor([[2.0, -2.0, 0.5], [-0.1, 0.1, -3.0]]))
    weight_mask, bias_mask = layer.keep_masks()
    assert weight_mask.tolist() == [[True, False], [False, True]]
    assert bias_mask.tolist() == [True, False]
    assert layer.keep_masks(threshold=0.6)[0].tolist() == [[True, False], [False, False]]
    assert torch.allclose(layer.bias_inclusion_probs(), torch.sigmoid(torch.tensor([0.5, -3.0])))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prior_scale=0.0), "prior_scale"),
        (dict(prior_scale=-1.0), "prior_scale"),
        (dict(prior_scale=float("nan")), "prior_scale"),
        (dict(prior_inclusion=0.0), "prior_inclusion"),
        (dict(prior_inclusion=1.5), "prior_inclusion"),
        (dict(prior_inclusion="auto"), "prior_inclusion"),
        (dict(init_inclusion=1.0), "init_inclusion"),
        (dict(delta=-0.1), "delta"),
        (dict(threshold=1.0), "threshold"),
        (dict(init_rho=float("inf")), "init_rho"),
        (dict(prior_scale="big"), "prior_scale"),
    ],
)
def test_invalid_hyperparameters_are_rejected_with_their_name(kwargs, message):
    with pytest.raises(HyperparameterError, match=message):
        SpikeSlab(**kwargs)


def test_one_prior_per_layer():
    torch.manual_seed(0)
    priors = [SpikeSlab(prior_inclusion=0.1), SpikeSlab(prior_inclusion=0.3)]
    bnn = SparseBNN(mlp([3, 4, 2]), priors, num_data=10)
    assert [layer.prior_inclusion for layer in bnn.layers] == [0.1, 0.3]
    with pytest.raises(HyperparameterError, match="2 parametric layers"):
        SparseBNN(mlp([3, 4, 2]), priors[:1], num_data=10)
    with pytest.raises(HyperparameterError, match="prior must be"):
        SparseBNN(mlp([3, 4, 2]), "spike-and-slab", num_data=10)


def test_prior_repr_names_its_hyperparameters():
    assert "prior_scale=1.3" in repr(SpikeSlab()) and "hard=True" in repr(SpikeSlab())
    assert "prior_inclusion=0.5" in repr(SpikeSlab()) and "prior_inclusion='theory'" in repr(SpikeSlab.published())


def test_the_pruning_check_fails_a_fit_whose_indicators_are_frozen():
    """Failing twin of the contract's behavioural check: with the indicator logits held for the
    whole fit (``indicator_warmup`` = every epoch) the loss still falls, but no switch moves
    towards off, and the check must say so."""
    contract = TestSpikeSlabContract()
    x, y = contract.data()
    with pytest.raises(AssertionError, match="no switch moved towards off"):
        assert_fit_learns_to_prune(contract.build(), x, y, indicator_warmup=60)
