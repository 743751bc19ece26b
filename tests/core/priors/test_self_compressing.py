"""SelfCompressingGaussian: the mean-field Gaussian BNN of self-compression."""

import pytest
import torch
import torch.nn.functional as F
from pyro import poutine

from pyro_sparse_bnn import (
    HyperparameterError,
    SelfCompressingGaussian,
    SparseBNN,
    compress,
    inclusion_summary,
)
from pyro_sparse_bnn.analysis import node_inclusion_probs
from pyro_sparse_bnn.core.priors.self_compressing import row_relevance
from tests.conftest import mlp, randomize_guide

from .contract import PriorContract
from .hand import assert_loss_matches_hand_computation, standard_normal_slab_kl


class TestSelfCompressingGaussianContract(PriorContract):
    def make_prior(self):
        return SelfCompressingGaussian()

    def compose(self, layer, draws):
        return draws["slab"]

    def dropout_rate(self, layer, draws, params):
        # alpha_j = 1 / SNR_j^2 = sum_i Var[w_ji] / sum_i E[w_ji]^2 over row j; output units: none
        if layer.spec.is_output:
            return None
        return params.var(0).sum(-1) / params.mean(0).square().sum(-1)


def test_one_gaussian_site_per_layer_of_the_augmented_shape():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), SelfCompressingGaussian(), num_data=10)
    trace = poutine.trace(bnn.guide).get_trace()
    latent = [name for name, site in trace.nodes.items() if site["type"] == "sample"]
    assert latent == ["net.0.slab", "net.2.slab"]
    assert trace.nodes["net.0.slab"]["value"].shape == (4, 4)
    assert torch.allclose(bnn.layers[0].slab.loc[:, :3], bnn.layers[0].spec.module.weight)


def test_loss_equals_hand_computation():
    """NLL of the drawn weights plus the Gaussian KL ``log(1/s) + (s^2 + mu^2)/2 - 1/2``."""
    torch.manual_seed(4)
    bnn = randomize_guide(SparseBNN(mlp([3, 4, 2]), SelfCompressingGaussian(), num_data=30), seed=2)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])

    def hand(value):
        return [value("net.0.slab"), value("net.2.slab")], sum(standard_normal_slab_kl(layer) for layer in bnn.layers)

    assert_loss_matches_hand_computation(bnn, x, y, 30, hand)


def test_inclusion_probability_is_the_row_snr_on_a_probability_scale():
    """``p_j = SNR_j^2 / (1 + SNR_j^2)`` with ``SNR_j^2 = sum mu^2 / sum sigma^2`` over row j
    (weights and bias), by hand; 1 for the output layer; the keep rule is ``SNR > t``."""
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([2, 3, 2]), SelfCompressingGaussian(snr_threshold=2.0), num_data=10)
    hidden = bnn.layers[0]
    with torch.no_grad():
        hidden.slab.loc.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        hidden.slab.rho.copy_(torch.log(torch.expm1(torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]]))))
    snr_squared = torch.tensor([25 / 3, 0.01 / 3, 3 / 0.75])
    expected = snr_squared / (1 + snr_squared)
    assert torch.allclose(hidden.output_inclusion_probs(), expected, atol=1e-5)
    assert torch.allclose(row_relevance(*hidden.weight_moments(), "snr"), snr_squared.sqrt(), atol=1e-5)
    assert torch.allclose(hidden.relevance("norm"), torch.tensor([5.0, 0.1, 3**0.5]), atol=1e-6)
    assert torch.equal(bnn.layers[1].output_inclusion_probs(), torch.ones(2))
    assert torch.allclose(node_inclusion_probs(bnn)["net.0"], expected, atol=1e-5)
    # SNR^2 > 4 keeps rows 0 (8.3) but not 1 (0.003) nor 2 (4 is not above 4)
    weight_mask, bias_mask = hidden.keep_masks()
    assert bias_mask.tolist() == [True, False, False]
    assert weight_mask.tolist() == [[True, True], [False, False], [False, False]]
    assert bnn.priors[0].threshold == pytest.approx(0.8)


def test_compress_and_inclusion_summary_drop_low_snr_units():
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([4, 6, 3]), SelfCompressingGaussian(), num_data=10), seed=0)
    with torch.no_grad():  # units 1 and 4 collapse to the prior: mean 0, sigma 1
        bnn.layers[0].slab.loc[[1, 4]] = 0.0
        bnn.layers[0].slab.rho[[1, 4]] = float(torch.log(torch.expm1(torch.tensor(1.0))))
    module, report = compress(bnn)
    kept = report.kept_nodes["net.0"].tolist()
    assert 1 not in kept and 4 not in kept and report.architecture_after[1] == len(kept) <= 4
    summary = inclusion_summary(bnn)
    hidden = summary[summary.layer == "net.0"]
    assert hidden.kept.tolist() == [j in kept for j in range(6)]


def test_local_reparameterization_samples_every_example_separately():
    """The weight is the Gaussian slab itself, so the handler samples pre-activations: two
    identical examples in one batch get different outputs with it, the same without it."""
    torch.manual_seed(0)
    x = torch.randn(1, 4).expand(2, 4)
    for local in (True, False):
        bnn = SparseBNN(mlp([4, 5, 3]), SelfCompressingGaussian(init_rho=-1.0), num_data=10,
                        local_reparameterization=local)
        with torch.no_grad():
            out = bnn(x)
        assert torch.allclose(out[0], out[1]) is not local


@pytest.mark.parametrize("kwargs", [dict(prior_scale=0.0), dict(prior_scale=float("nan")), dict(snr_threshold=-1.0),
                                    dict(init_rho=float("inf")), dict(prior_scale="wide")])
def test_invalid_hyperparameters_are_named(kwargs):
    with pytest.raises(HyperparameterError, match=next(iter(kwargs))):
        SelfCompressingGaussian(**kwargs)


def test_kl_is_the_closed_form_gaussian_kl():
    """The ELBO's KL term for the slab is torch's registered Normal/Normal KL (no Monte Carlo)."""
    from torch.distributions import kl_divergence

    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([3, 2]), SelfCompressingGaussian(prior_scale=0.5), num_data=10), seed=1)
    guide = poutine.trace(bnn.guide).get_trace()
    model = poutine.trace(poutine.replay(bnn.model, trace=guide)).get_trace(torch.randn(2, 3))
    layer = bnn.layers[0]
    mu, s = layer.slab.loc.detach(), F.softplus(layer.slab.rho.detach())
    expected = (torch.log(0.5 / s) + (s**2 + mu**2) / (2 * 0.25) - 0.5).sum()
    closed = kl_divergence(guide.nodes["net.0.slab"]["fn"], model.nodes["net.0.slab"]["fn"])
    assert torch.allclose(closed.detach(), expected, rtol=1e-5)
