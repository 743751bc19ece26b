"""Priors expose their indicator logits (fit's logit_lr and indicator_warmup act on them):
checked against the parameter names, which the code does not read."""

import pytest
import torch

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
from tests.conftest import mlp, tiny_conv_net

#: prior -> whether it has Bernoulli indicators
PRIORS = {
    SpikeSlab: True,
    SpikeSlabNode: True,
    SpikeSlabGroupLasso: True,
    SpikeSlabGroupHorseshoe: True,
    GroupNormalJeffreys: False,
    GroupHorseshoe: False,
    SelfCompressingGaussian: False,
}


def named_logits(module):
    """The parameters whose name ends in ``logits``, by name."""
    return {name: p for name, p in module.named_parameters() if name.endswith("logits")}


@pytest.mark.parametrize("net", [lambda: mlp([5, 8, 6, 3]), tiny_conv_net], ids=["mlp", "conv"])
@pytest.mark.parametrize("prior", list(PRIORS), ids=lambda p: p.__name__)
def test_indicator_parameters_are_the_parameters_named_logits(prior, net):
    torch.manual_seed(0)
    bnn = SparseBNN(net(), prior(), num_data=50)
    expected = named_logits(bnn)
    found = bnn.indicator_parameters()
    assert len(found) == len({id(p) for p in found})  # no parameter twice
    assert {id(p) for p in found} == {id(p) for p in expected.values()}
    assert bool(found) == PRIORS[prior]
    if PRIORS[prior]:  # one logit tensor per layer, in layer order
        assert [id(p) for p in found] == [id(p) for p in expected.values()]
        assert len(found) == len(bnn.layers)
    for layer in bnn.layers:
        assert {id(p) for p in layer.indicator_parameters()} == {id(p) for p in named_logits(layer).values()}
        assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in layer.indicator_parameters())


def test_per_layer_priors_mix_layers_with_and_without_indicators():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([5, 8, 6, 3]), [GroupNormalJeffreys(), SpikeSlabNode(), SpikeSlab()], num_data=50)
    assert [layer.indicator_parameters() == [] for layer in bnn.layers] == [True, False, False]
    assert [id(p) for p in bnn.indicator_parameters()] == [
        id(bnn.layers[1].block.gates.logits), id(bnn.layers[2].block.gates.logits)]
    assert set(named_logits(bnn)) == {"layers.1.block.gates.logits", "layers.2.block.gates.logits"}
