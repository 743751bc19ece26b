"""compress: exact, physically smaller, with a correct report."""

import json

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    NotFittedError,
    SelectInputs,
    SparseBNN,
    SpikeSlab,
    compress,
    masked_posterior_mean,
)
from pyro_sparse_bnn.compress import analyse_structure

from .conftest import mlp

ON, OFF = 20.0, -20.0  # logits of a kept / a dropped edge


def designed_bnn(activation=nn.Sigmoid):
    """4 inputs -> 3 hidden -> 2 outputs with hand-set indicators.

    hidden 0: edges from x0, x1                         -> kept
    hidden 1: no incoming edge, bias on                 -> constant sigmoid(b), folded
    hidden 2: edge from x3 but no outgoing edge         -> removed (and x3 with it)
    outputs:  out0 <- hidden 0, hidden 1;  out1 <- hidden 0
    x2 has no edge at all.
    """
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([4, 3, 2], activation), SpikeSlab(prior_inclusion=0.1), num_data=10)
    first = torch.full((3, 5), OFF)
    first[0, 0] = first[0, 1] = first[0, 4] = ON
    first[1, 4] = ON
    first[2, 3] = first[2, 4] = ON
    second = torch.full((2, 4), OFF)
    second[0, 0] = second[0, 1] = second[1, 0] = ON
    second[:, 3] = ON
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.copy_(first)
        bnn.layers[1].block.gates.logits.copy_(second)
        bnn.layers[0].block.slab.loc.copy_(torch.randn(3, 5))
        bnn.layers[1].block.slab.loc.copy_(torch.randn(2, 4))
    return bnn


def test_designed_example_structure_and_report():
    bnn = designed_bnn()
    module, report = compress(bnn)
    assert report.kept_features.tolist() == [0, 1]
    assert list(report.kept_nodes) == ["net.0"] and report.kept_nodes["net.0"].tolist() == [0]
    assert report.architecture_before == (4, 3, 2) and report.architecture_after == (2, 1, 2)
    # before: 4*3 + 3 + 3*2 + 2 = 23 parameters; after: 2*1 + 1 + 1*2 + 2 = 7
    assert (report.params_before, report.params_after, report.nonzero_params_after) == (23, 7, 7)
    # FLOPs 2 * (4*3 + 3*2) = 36 before, 2 * (2*1 + 1*2) = 8 after
    assert (report.flops_before, report.flops_after, report.nonzero_flops_after) == (36, 8, 8)
    assert report.architecture_compression == pytest.approx(23 / 7)
    structure = analyse_structure(bnn)
    assert structure.constant_nodes[0].tolist() == [False, True, False]


def test_designed_example_folds_the_constant_node_into_the_next_bias():
    bnn = designed_bnn(nn.Sigmoid)
    module, _ = compress(bnn)
    (w0, b0), (w1, b1) = [layer.posterior_mean() for layer in bnn.layers]
    constant = torch.sigmoid(b0[1])  # hidden 1 outputs sigmoid(bias) whatever the input
    linear = [m for m in module if isinstance(m, nn.Linear)]
    assert torch.allclose(linear[0].weight, w0[:1, :2])
    expected_bias = torch.stack([b1[0] + w1[0, 1] * constant, b1[1]])
    assert torch.allclose(linear[1].bias, expected_bias)
    x = torch.randn(16, 4)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("widths", [(5, 7, 3), (6, 9, 8, 4, 2), (3, 4, 4, 4, 1)])
@pytest.mark.parametrize("seed", range(4))
def test_random_masks_compress_exactly(widths, bias, seed):
    torch.manual_seed(seed)
    bnn = SparseBNN(mlp(widths, nn.Tanh, bias=bias), SpikeSlab(prior_inclusion=0.1),
                    likelihood="gaussian", num_data=10)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in bnn.layers:
            # sparse random masks: about 30 % of edges kept
            layer.block.gates.logits.copy_(torch.where(
                torch.rand(layer.block.gates.logits.shape, generator=generator) < 0.3, ON, OFF))
            layer.block.slab.loc.normal_(generator=generator)
    x = torch.randn(20, widths[0])
    module, report = compress(bnn)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-5)
    # physically smaller tensors, consistent with the report
    linear = [m for m in module if isinstance(m, nn.Linear)]
    widths_after = (linear[0].in_features,) + tuple(m.out_features for m in linear)
    assert widths_after == report.architecture_after
    assert report.nonzero_params_after <= report.params_after
    assert report.flops_after <= report.flops_before


def test_every_hidden_node_pruned_gives_a_constant_network():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2], nn.Sigmoid), SpikeSlab(prior_inclusion=0.1), num_data=10)
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.fill_(OFF)
        bnn.layers[0].block.gates.logits[:, -1] = ON  # biases only
    module, report = compress(bnn)
    assert report.architecture_after == (0, 0, 2)
    x = torch.randn(5, 3)
    with torch.no_grad():
        out = module(x)
        assert torch.allclose(out, masked_posterior_mean(bnn)(x), atol=1e-6)
        assert torch.allclose(out, out[:1].expand_as(out))


def test_compressed_module_takes_full_or_reduced_input():
    bnn = designed_bnn()
    module, report = compress(bnn)
    assert isinstance(module, nn.Sequential) and isinstance(module[0], SelectInputs)
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.allclose(module(x), module[1:](x[:, report.kept_features]))
    assert all(not p.requires_grad or p.grad is None for p in module.parameters())


def test_threshold_changes_the_kept_edges():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.copy_(torch.logit(torch.full((4, 4), 0.7)))
    assert compress(bnn, threshold=0.5).report.architecture_after == (3, 4, 2)
    assert compress(bnn, threshold=0.8).report.architecture_after == (0, 0, 2)


def test_report_is_json_serialisable_and_printable():
    module, report = compress(designed_bnn())
    data = json.loads(json.dumps(report.as_dict()))
    assert data["architecture_after"] == "2-1-2"
    assert "2-1-2" in str(report) and "compression" in str(report)


def test_compress_before_fitting_is_refused():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    with pytest.raises(NotFittedError, match="not been fitted"):
        compress(bnn)
    with pytest.raises(NotFittedError):
        masked_posterior_mean(bnn)
