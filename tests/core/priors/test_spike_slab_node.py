"""SS-IG: the node-level spike-and-slab prior with a Gaussian slab."""

import pytest
import torch
from pyro import poutine

from pyro_sparse_bnn import SparseBNN, SpikeSlabGroupHorseshoe, SpikeSlabGroupLasso, SpikeSlabNode
from pyro_sparse_bnn.analysis import node_inclusion_probs
from pyro_sparse_bnn.core.priors import layerwise_prior_inclusion
from tests.conftest import mlp, randomize_guide

from .contract import PriorContract
from .hand import assert_loss_matches_hand_computation, bernoulli_and_slab_kl


class TestSpikeSlabNodeContract(PriorContract):
    def make_prior(self):
        return SpikeSlabNode()

    def compose(self, layer, draws):
        return draws["node_indicator"][:, :, None] * draws["slab"]  # w_j = z_j beta_j


def test_one_indicator_per_node_covers_its_weights_and_bias():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlabNode(), num_data=10)
    trace = poutine.trace(bnn.guide).get_trace()
    assert trace.nodes["net.0.node_indicator"]["value"].shape == (4,)
    assert trace.nodes["net.0.slab"]["value"].shape == (4, 4)
    layer = bnn.layers[0]
    with torch.no_grad():
        layer.block.gates.logits.copy_(torch.tensor([3.0, -3.0, 0.1, -0.1]))
    weight_mask, bias_mask = layer.keep_masks()
    assert weight_mask.tolist() == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]
    assert bias_mask.tolist() == [True, False, True, False]
    assert torch.allclose(layer.edge_inclusion_probs()[:, 0], torch.sigmoid(layer.block.gates.logits.detach()))


def test_layerwise_prior_inclusion_is_one_over_width():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 8, 4, 1]), SpikeSlabNode(), likelihood="gaussian", num_data=10)
    assert [layer.prior_inclusion for layer in bnn.layers] == [1 / 8, 1 / 4, 0.5]
    assert layerwise_prior_inclusion(bnn.layers[0].spec) == 0.125
    fixed = SparseBNN(mlp([3, 8, 2]), SpikeSlabNode(prior_inclusion=0.3), num_data=10)
    assert [layer.prior_inclusion for layer in fixed.layers] == [0.3, 0.3]


def test_node_pip_combines_the_node_indicator_and_its_outgoing_edges():
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([3, 4, 2]), SpikeSlabNode(), num_data=10), seed=1, logit_scale=1.0)
    gamma_hidden = torch.sigmoid(bnn.layers[0].block.gates.logits.detach())
    gamma_out = torch.sigmoid(bnn.layers[1].block.gates.logits.detach())
    # node j is used iff it is on and at least one output node (which owns edge k <- j) is on
    expected = gamma_hidden * (1 - torch.prod(1 - gamma_out))
    assert torch.allclose(node_inclusion_probs(bnn)["net.0"], expected, atol=1e-6)


def test_loss_equals_hand_computation():
    torch.manual_seed(4)
    bnn = randomize_guide(SparseBNN(mlp([3, 4, 2]), SpikeSlabNode(prior_scale=1.0), num_data=30), seed=2, logit_scale=1.0)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])

    def hand(value):
        weights = [value(f"{n}.node_indicator")[:, None] * value(f"{n}.slab") for n in ("net.0", "net.2")]
        return weights, sum(bernoulli_and_slab_kl(layer, 1.0) for layer in bnn.layers)

    assert_loss_matches_hand_computation(bnn, x, y, 30, hand)


@pytest.mark.parametrize("prior_class", [SpikeSlabNode, SpikeSlabGroupLasso, SpikeSlabGroupHorseshoe])
def test_published_setting_starts_every_guide_scale_at_softplus_minus_six(prior_class):
    torch.manual_seed(0)
    default = SparseBNN(mlp([3, 8, 2]), prior_class(), num_data=10)
    published = SparseBNN(mlp([3, 8, 2]), prior_class.published(prior_scale=2.0), num_data=10)
    assert published.priors[0].prior_scale == 2.0
    assert [layer.prior_inclusion for layer in published.layers] == [1 / 8, 0.5]  # Jantre et al.'s 1 / k_l
    for layer in published.layers:
        rhos = {name: p for name, p in layer.named_parameters() if name.endswith("rho")}
        assert rhos and all(torch.all(p == -6.0) for p in rhos.values())
    # by default the slab starts at half the spread of nn.Linear's initial weights, 1 / sqrt(3 fan_in)
    for layer in default.layers:
        expected = 0.5 / (3 * layer.spec.fan_in) ** 0.5
        assert torch.allclose(layer.block.slab.scale, torch.full(layer.spec.param_shape, expected))
