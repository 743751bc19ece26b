"""compress: exact, physically smaller, with a correct report."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    DegenerateNetworkWarning,
    GroupNormalJeffreys,
    HyperparameterError,
    NotFittedError,
    SparseBNN,
    SpikeSlab,
    SpikeSlabNode,
    compress,
)
from pyro_sparse_bnn.analysis import (
    ConstantOutput,
    SelectInputs,
    ThresholdChoice,
    masked_posterior_mean,
)
from pyro_sparse_bnn.analysis.compress import analyse_structure, reused_readouts
from tests.conftest import conv_net, mlp, randomize_guide

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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module, report = compress(bnn)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-5)
    # physically smaller tensors, consistent with the report
    linear = [m for m in module if isinstance(m, nn.Linear)]
    if linear:
        widths_after = (linear[0].in_features,) + tuple(m.out_features for m in linear)
        assert widths_after == report.architecture_after and not caught
    else:  # no path from the input to the output survived the random masks
        assert isinstance(module[0], ConstantOutput) and report.architecture_after[0] == 0
        assert [w.category for w in caught] == [DegenerateNetworkWarning]
    assert report.nonzero_params_after <= report.params_after
    assert report.flops_after <= report.flops_before


def compress_recording(bnn, **kwargs):
    """``compress`` with every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compress(bnn, **kwargs)
    return result, caught


def test_every_hidden_node_pruned_gives_a_constant_network():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2], nn.Sigmoid), SpikeSlab(prior_inclusion=0.1), num_data=10)
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.fill_(OFF)
        bnn.layers[0].block.gates.logits[:, -1] = ON  # biases only
    (module, report), caught = compress_recording(bnn)
    # no zero-width nn.Linear (whose initialisation warns), only our own warning
    assert [w.category for w in caught] == [DegenerateNetworkWarning]
    assert report.architecture_after == (0, 0, 2) and isinstance(module[0], ConstantOutput)
    x = torch.randn(5, 3)
    with torch.no_grad():
        out = module(x)
        assert torch.allclose(out, masked_posterior_mean(bnn)(x), atol=1e-6)
        assert torch.allclose(out, out[:1].expand_as(out))
    # no weight is kept: the weight rates are infinite, not 12 / 1, and printed as such
    assert report.weight_compression == report.bit_compression == float("inf")
    assert report.params_after == report.nonzero_params_after == 2 and report.flops_after == 0
    assert "weights: none kept" in str(report)
    assert json.loads(json.dumps(report.as_dict()))["bit_compression"] == float("inf")


def layered_bnn(prior):
    """4 inputs -> 5 -> 3 -> 2 outputs (sigmoid), every indicator on, random means."""
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([4, 5, 3, 2], nn.Sigmoid), prior, num_data=10)
    with torch.no_grad():
        for layer in bnn.layers:
            layer.block.gates.logits.fill_(ON)
            layer.block.slab.loc.normal_()
    return bnn


@pytest.mark.parametrize("case, layer, words", [
    ("no input kept", 0, "the first layer 'net.0' keeps no weight from any input"),
    ("empty hidden layer", 1, "no unit of hidden layer 'net.2' keeps a weight"),
    ("constant output", 2, "the output layer 'net.4' keeps no weight from a hidden unit"),
])
def test_a_network_that_ignores_its_input_warns_and_says_what_to_change(case, layer, words):
    bnn = layered_bnn(SpikeSlabNode() if case == "empty hidden layer" else SpikeSlab(prior_inclusion=0.1))
    with torch.no_grad():
        logits = bnn.layers[layer].block.gates.logits
        if case == "empty hidden layer":
            logits.fill_(OFF)        # every node indicator of net.2 off: its units output sigmoid(0)
        else:
            logits[:, :-1] = OFF     # every weight of the layer off, its biases on
    (module, report), caught = compress_recording(bnn)
    assert [w.category for w in caught] == [DegenerateNetworkWarning]
    message = str(caught[0].message)
    assert words in message, message
    assert "the same constant for every example" in message and "lower threshold" in message
    assert "frontier(bnn, x_val, y_val)" in message and "prior_inclusion" in message
    assert caught[0].filename == __file__  # the warning points at the caller, not inside torch
    assert report.warnings == [message] and f"warning: {message}" in str(report)
    assert report.architecture_after == (0, 0, 0, 2) and isinstance(module[0], ConstantOutput)
    x = torch.randn(6, 4)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-6)


def test_a_strict_threshold_warns_and_a_good_network_is_silent():
    bnn = layered_bnn(SpikeSlab(prior_inclusion=0.1))
    with torch.no_grad():
        for layer in bnn.layers:
            layer.block.gates.logits.fill_(3.0)  # every PIP 0.953
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module, report = compress(bnn, threshold=0.9)
        assert report.warnings == [] and report.architecture_after == (4, 5, 3, 2)
        assert compress(designed_bnn()).report.warnings == []
    with pytest.warns(DegenerateNetworkWarning, match="with PIP > 0.999, the compressed network does not depend"):
        compress(bnn, threshold=0.999)


def test_the_report_says_which_threshold_and_why():
    bnn = designed_bnn()
    assert compress(bnn).report.threshold_reason == "the prior's keep rule, PIP > 0.5"
    assert compress(bnn, threshold=0.3).report.threshold_reason == "PIP > 0.3"
    report = compress(bnn, threshold=ThresholdChoice(0.3, "because", architecture="2-1-2")).report
    assert report.threshold == 0.3 and report.threshold_reason == "PIP > 0.3: because"
    assert "threshold: PIP > 0.3: because" in str(report)
    assert report.as_dict()["threshold_reason"] == "PIP > 0.3: because" and report.as_dict()["warnings"] == []


def test_bayesian_compression_with_one_threshold_per_layer():
    torch.manual_seed(0)
    t = [2.0, 0.0, 1.0]
    bnn = randomize_guide(SparseBNN(mlp([4, 5, 3, 2]), GroupNormalJeffreys(log_alpha_threshold=t), num_data=10),
                          seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (it used to fail in the threshold check)
        module, report = compress(bnn)
    assert report.architecture_after[0] > 0
    # layer l keeps the weights of its input group g iff log alpha_g < t_l
    for layer, mask, t_l in zip(bnn.layers, analyse_structure(bnn).weight_masks, t, strict=True):
        assert torch.equal(mask, (layer.log_alpha() < t_l)[None, :].expand_as(mask))
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-5)
    assert report.threshold is None
    assert report.threshold_reason == ("each layer's keep rule: net.0 PIP > 0.119203 (log alpha < 2), "
                                       "net.2 PIP > 0.5 (log alpha < 0), net.4 PIP > 0.268941 (log alpha < 1)")
    with pytest.raises(HyperparameterError, match=r"\[0, 1\]"):
        compress(bnn, threshold=1.5)


def test_reused_readouts_read_each_layer_once_and_change_nothing(monkeypatch):
    bnn = designed_bnn()
    x = torch.randn(8, 4)
    expected = [compress(bnn, threshold=t).module(x) for t in (0.3, 0.5, 0.9)]
    calls = []
    original = type(bnn.layers[0]).posterior_mean
    monkeypatch.setattr(type(bnn.layers[0]), "posterior_mean", lambda self: calls.append(self) or original(self))
    with reused_readouts():
        outputs = [compress(bnn, threshold=t).module(x) for t in (0.3, 0.5, 0.9)]
    assert len(calls) == len(bnn.layers)
    compress(bnn)  # outside the block: read again
    assert len(calls) == 2 * len(bnn.layers)
    for a, b in zip(expected, outputs, strict=True):
        assert torch.equal(a, b)


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
    with pytest.warns(DegenerateNetworkWarning, match="first layer 'net.0' keeps no weight"):
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


# -- conv layers ----------------------------------------------------------------------------
def conv_bnn(prior, second=None, activation=nn.ReLU):
    """Flat 36-pixel inputs -> 1 x 6 x 6 -> conv 3 3x3 -> act -> max-pool 2 -> flatten
    (3 channels x 2 x 2 = 12 features, channel c in columns 4c..4c+3) -> fc 2; or, with
    ``second``, a second conv layer ``second`` after the first one's activation."""
    torch.manual_seed(0)
    if second is None:
        net = nn.Sequential(nn.Unflatten(1, (1, 6, 6)), nn.Conv2d(1, 3, 3), activation(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2))
    else:
        out = 6 - 3 + 1 + 2 * second.padding[0]
        net = nn.Sequential(nn.Unflatten(1, (1, 6, 6)), nn.Conv2d(1, 3, 3, padding=1), activation(),
                            second, nn.Flatten(), nn.Linear(2 * out * out, 2))
    bnn = SparseBNN(net, prior, num_data=10)
    with torch.no_grad():
        for layer in bnn.layers:
            layer.block.slab.loc.normal_()
    return bnn


def test_a_removed_channel_removes_its_block_of_linear_columns():
    """Node indicators [on, off, on] on the conv layer: channel 1 is switched off (its ReLU
    outputs 0, which folds into nothing), so the compressed conv has 2 filters and the
    linear layer keeps columns 0-3 and 8-11 (channel-major flatten order through pooling)."""
    bnn = conv_bnn(SpikeSlabNode())
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.copy_(torch.tensor([ON, OFF, ON]))
        bnn.layers[1].block.gates.logits.fill_(ON)
    module, report = compress(bnn)
    conv, linear = [m for m in module if isinstance(m, (nn.Conv2d, nn.Linear))]
    (w0, b0), (w1, b1) = [layer.posterior_mean() for layer in bnn.layers]
    assert isinstance(module[0], nn.Unflatten) and isinstance(module[1], SelectInputs)
    assert conv.weight.shape == (2, 1, 3, 3) and linear.weight.shape == (2, 8)
    assert torch.equal(conv.weight, w0[[0, 2]]) and torch.equal(conv.bias, b0[[0, 2]])
    assert torch.equal(linear.weight, torch.cat([w1[:, 0:4], w1[:, 8:12]], dim=1))
    assert report.architecture_before == (1, 3, 2) and report.architecture_after == (1, 2, 2)
    assert report.kept_nodes["net.1"].tolist() == [0, 2]
    x = torch.randn(8, 36)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-5)


def test_a_channel_without_kept_outgoing_columns_is_removed():
    """Edge level: every edge on except channel 1's block of linear columns 4-7; channel 1
    still varies with the input but nothing reads it."""
    bnn = conv_bnn(SpikeSlab(prior_inclusion=0.1))
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.fill_(ON)
        logits = torch.full((2, 13), ON)
        logits[:, 4:8] = OFF
        bnn.layers[1].block.gates.logits.copy_(logits)
    module, report = compress(bnn)
    conv, linear = [m for m in module if isinstance(m, (nn.Conv2d, nn.Linear))]
    w1, _ = bnn.layers[1].posterior_mean()
    assert conv.out_channels == 2 and linear.in_features == 8
    assert torch.equal(linear.weight, torch.cat([w1[:, 0:4], w1[:, 8:12]], dim=1))
    assert analyse_structure(bnn).constant_nodes[0].tolist() == [False, False, False]
    x = torch.randn(8, 36)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-5)


@pytest.mark.parametrize("padding, folded", [(0, True), (1, False)])
def test_a_constant_channel_folds_only_where_padding_cannot_tell(padding, folded):
    """Channel 0 of the first conv is switched off: it outputs sigmoid(0) = 0.5 everywhere.
    Into a conv without padding that constant adds the same to every position and folds
    into the bias; into a padded conv the border positions see part of it only, so folding
    would be wrong (checked below) and compress keeps the channel. Both are exact."""
    second = nn.Conv2d(3, 2, 3, padding=padding)
    bnn = conv_bnn(SpikeSlabNode(), second=second, activation=nn.Sigmoid)
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.copy_(torch.tensor([OFF, ON, ON]))
        for layer in bnn.layers[1:]:
            layer.block.gates.logits.fill_(ON)
    structure = analyse_structure(bnn)
    assert structure.constant_nodes[0].tolist() == [True, False, False]
    assert structure.folded_nodes[0].tolist() == [folded, False, False]
    module, report = compress(bnn)
    convs = [m for m in module if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == (2 if folded else 3) and convs[1].in_channels == convs[0].out_channels
    x = torch.randn(8, 36)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-5)
        # what the constant channel contributes to the second conv's pre-activations
        w1, _ = bnn.layers[1].posterior_mean()
        contribution = torch.nn.functional.conv2d(torch.full((1, 1, 6, 6), 0.5), w1[:, :1], padding=padding)
        spread = contribution.amax(dim=(-2, -1)) - contribution.amin(dim=(-2, -1))
        assert bool((spread < 1e-6).all()) == folded


def test_conv_report_counts_parameters_and_flops_by_hand():
    """The network of test_a_removed_channel_removes_its_block_of_linear_columns.

    before: conv 3 x 1 x 3 x 3 = 27 weights + 3 biases, applied at 4 x 4 output positions:
            432 multiply-adds = 864 FLOPs; linear 12 x 2 = 24 weights + 2 biases: 48 FLOPs.
            56 parameters, 912 FLOPs.
    after (channel 1 removed): conv 18 + 2, 2 x 16 x 9 = 288 multiply-adds = 576 FLOPs;
            linear 8 x 2 = 16 + 2, 32 FLOPs. 38 parameters, 608 FLOPs.
    With one more conv weight dropped inside a kept filter: 37 non-zero parameters and
    608 - 2 x 16 = 576 non-zero FLOPs.
    """
    bnn = conv_bnn(SpikeSlab(prior_inclusion=0.1))
    with torch.no_grad():
        logits = torch.full((3, 10), ON)
        logits[1] = OFF        # channel 1: no weights, no bias -> ReLU(0) = 0, folded
        logits[2, 4] = OFF     # one weight of filter 2
        bnn.layers[0].block.gates.logits.copy_(logits)
        bnn.layers[1].block.gates.logits.fill_(ON)
    _, report = compress(bnn)
    assert report.architecture_after == (1, 2, 2)
    assert (report.params_before, report.params_after, report.nonzero_params_after) == (56, 38, 37)
    assert (report.flops_before, report.flops_after, report.nonzero_flops_after) == (912, 608, 576)
    assert report.architecture_compression == pytest.approx(56 / 38)


def test_a_conv_net_that_reads_no_input_compresses_to_its_constant_output():
    bnn = conv_bnn(SpikeSlabNode(), activation=nn.Sigmoid)
    with torch.no_grad():
        bnn.layers[0].block.gates.logits.fill_(OFF)
        bnn.layers[1].block.gates.logits.fill_(ON)
    with pytest.warns(DegenerateNetworkWarning, match="the first layer 'net.1' keeps no weight from any input"):
        module, report = compress(bnn)
    assert report.architecture_after == (0, 0, 2) and report.params_after == 2
    assert isinstance(module[0], ConstantOutput)
    x = torch.randn(5, 36)
    with torch.no_grad():
        assert torch.allclose(module(x), masked_posterior_mean(bnn)(x), atol=1e-6)


def test_compressed_module_round_trips_through_plain_torch_save_and_load(tmp_path):
    """``torch.load``'s default ``weights_only=True`` rebuilds a compressed module (Unflatten,
    SelectInputs, Conv2d, pooling, Flatten, Linear), here and in a fresh interpreter that
    imports only the package; the outputs equal the original's."""
    torch.manual_seed(0)
    bnn, x = SparseBNN(conv_net("max-pool"), GroupNormalJeffreys()), torch.randn(7, 72)
    randomize_guide(bnn, seed=1)
    module, _ = compress(bnn)
    path = tmp_path / "module.pt"
    torch.save(module, path)
    torch.save(x, tmp_path / "x.pt")
    loaded = torch.load(path)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in module.modules()]
    assert torch.equal(loaded(x), module(x))
    script = ("import sys, torch, pyro_sparse_bnn\n"
              f"m = torch.load({str(path)!r}); x = torch.load({str(tmp_path / 'x.pt')!r})\n"
              f"torch.save(m(x), {str(tmp_path / 'out.pt')!r})")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert torch.equal(torch.load(tmp_path / "out.pt"), module(x))
    # the check discriminates: without the package's allow-list torch refuses the same file
    bare = subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r})"], capture_output=True,
                          text=True, timeout=120)
    assert bare.returncode != 0 and "Unsupported global" in bare.stderr
