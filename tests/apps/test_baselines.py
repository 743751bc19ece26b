"""Deterministic baselines: the dense network, structured magnitude pruning, the same widths from scratch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_sparse_bnn import HyperparameterError, InputError, SparseBNN, SpikeSlab, compress
from pyro_sparse_bnn.analysis import ConstantOutput, SelectInputs
from pyro_sparse_bnn.apps import magnitude_prune, train_from_scratch
from pyro_sparse_bnn.apps.baselines import module_widths, reinitialized, train_deterministic
from tests.conftest import conv_net, mlp, randomize_guide


def test_classification_baseline_learns(classification_data):
    x, y = classification_data
    torch.manual_seed(0)
    net = mlp([5, 16, 3])
    before = [p.detach().clone() for p in net.parameters()]
    result = train_deterministic(net, x, y, epochs=100, batch_size=20, lr=1e-2)
    assert result.loss[-1] < 0.3 * result.loss[0]
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert (result.module(x).argmax(-1) == y).float().mean() > 0.9


def test_regression_baseline_and_bad_task():
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = x[:, 0] * 2 - x[:, 1]
    result = train_deterministic(mlp([2, 8, 1]), x, y, task="regression", epochs=200, lr=1e-2)
    assert result.loss[-1] < 0.05
    with pytest.raises(HyperparameterError, match="task"):
        train_deterministic(mlp([2, 8, 1]), x, y, task="ranking")


# -- structured magnitude pruning ------------------------------------------------------------------
def numpy_params(net):
    layers = [m for m in net if isinstance(m, (nn.Linear, nn.Conv2d))]
    return [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in layers]


def top(scores, k):
    """Indices of the k largest scores, ascending (numpy, no ties in these random nets)."""
    return np.sort(np.argsort(-scores)[:k])


def mask(indices, n):
    m = np.zeros(n)
    m[indices] = 1.0
    return m


def test_magnitude_pruning_of_an_mlp_keeps_the_top_norm_units():
    torch.manual_seed(0)
    net = mlp([5, 4, 3, 2])
    with torch.no_grad():  # input columns whose L2 ranking (0, 3, 1, 2, 4) differs from their L1 ranking
        net[0].weight.copy_(torch.tensor([[0.95, 0.4, 0.3, 0.9, 0.05]] + [[0.0, -0.4, 0.3, 0.0, 0.05]] * 3))
    (w1, b1), (w2, b2), (w3, b3) = numpy_params(net)
    inputs = top(np.sqrt((w1 ** 2).sum(axis=0)), 3)                   # outgoing weights of each input
    assert inputs.tolist() == [0, 1, 3]                               # by L1 norm: 0, 1, 2
    rows1 = top(np.sqrt((w1 ** 2).sum(axis=1) + b1 ** 2), 2)          # incoming weights and bias
    rows2 = top(np.sqrt((w2 ** 2).sum(axis=1) + b2 ** 2), 2)
    pruned = magnitude_prune(net, (3, 2, 2, 2))

    assert isinstance(pruned[0], SelectInputs) and pruned[0].indices.tolist() == inputs.tolist()
    linear = [m for m in pruned if isinstance(m, nn.Linear)]
    assert np.allclose(linear[0].weight.detach().numpy(), w1[rows1][:, inputs])
    assert np.allclose(linear[1].weight.detach().numpy(), w2[rows2][:, rows1])
    assert np.allclose(linear[2].weight.detach().numpy(), w3[:, rows2])
    assert np.allclose(linear[1].bias.detach().numpy(), b2[rows2])
    assert module_widths(pruned) == (3, 2, 2, 2)

    # the dense network with the dropped units' outputs zeroed, in numpy
    x = torch.randn(7, 5)
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    h = relu((x.double().numpy() * mask(inputs, 5)) @ w1.T + b1) * mask(rows1, 4)
    h = relu(h @ w2.T + b2) * mask(rows2, 3)
    with torch.no_grad():
        assert np.allclose(pruned(x).double().numpy(), h @ w3.T + b3, atol=1e-5)


def test_magnitude_pruning_of_a_conv_net_drops_channels_and_their_flatten_blocks():
    torch.manual_seed(1)
    net = conv_net("max-pool")   # 2 x 6 x 6 -> conv 4 3x3 -> pool 2 -> flatten 16 -> fc 5 -> fc 3
    (wc, bc), (w1, b1), (w2, b2) = numpy_params(net)
    channels_in = top(np.sqrt((wc ** 2).sum(axis=(0, 2, 3))), 1)
    channels = top(np.sqrt((wc.reshape(4, -1) ** 2).sum(axis=1) + bc ** 2), 2)
    rows = top(np.sqrt((w1 ** 2).sum(axis=1) + b1 ** 2), 3)
    columns = np.concatenate([np.arange(4 * c, 4 * c + 4) for c in channels])  # 2 x 2 per channel
    pruned = magnitude_prune(net, (1, 2, 3, 3))

    assert isinstance(pruned[0], nn.Unflatten) and isinstance(pruned[1], SelectInputs)
    assert pruned[1].dim == 1 and pruned[1].indices.tolist() == channels_in.tolist()
    conv, fc1, fc2 = [m for m in pruned if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert np.allclose(conv.weight.detach().numpy(), wc[channels][:, channels_in])
    assert np.allclose(fc1.weight.detach().numpy(), w1[rows][:, columns])
    assert np.allclose(fc2.weight.detach().numpy(), w2[:, rows])
    assert module_widths(pruned) == (1, 2, 3, 3)

    x = torch.randn(6, 72)
    to = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    h = x.reshape(-1, 2, 6, 6) * to(mask(channels_in, 2))[None, :, None, None]
    h = F.max_pool2d(F.relu(F.conv2d(h, to(wc), to(bc))), 2) * to(mask(channels, 4))[None, :, None, None]
    h = F.relu(F.linear(h.flatten(1), to(w1), to(b1))) * to(mask(rows, 5))
    with torch.no_grad():
        assert torch.allclose(pruned(x), F.linear(h, to(w2), to(b2)), atol=1e-5)


def test_widths_can_come_from_a_compressed_network():
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([10, 8, 6, 3]), SpikeSlab(prior_inclusion=0.1), num_data=60), seed=3)
    with torch.no_grad():
        for layer in bnn.layers:
            layer.block.gates.logits.sub_(3.0)   # about a quarter of the edges kept
    result = compress(bnn)
    wanted = result.report.architecture_after
    assert all(0 < w < d for w, d in zip(wanted[:-1], (10, 8, 6), strict=True))
    dense = mlp([10, 8, 6, 3])
    for widths in (wanted, result.report, result, result.module):
        assert module_widths(magnitude_prune(dense, widths)) == wanted
    assert module_widths(result.module) == wanted


@pytest.mark.parametrize("widths, message", [
    ((10, 8, 3), "needs 4"),
    ((10, 8, 6, 4), "outputs"),
    ((10, 0, 6, 3), "between 1 and 8"),
    ((11, 8, 6, 3), "inputs needs between 1 and 10"),
    ((10, 8.5, 6, 3), "sequence of integers"),
    ("wide", "sequence of integers"),
])
def test_bad_widths_are_named(widths, message):
    with pytest.raises(InputError, match=message):
        magnitude_prune(mlp([10, 8, 6, 3]), widths)


def test_widths_cannot_come_from_a_constant_output():
    with pytest.raises(InputError, match="ConstantOutput"):
        magnitude_prune(mlp([10, 8, 6, 3]), ConstantOutput(torch.zeros(3)))


# -- the same widths from scratch ------------------------------------------------------------------
def test_reinitialization_uses_the_default_rule_and_keeps_the_input_selection():
    torch.manual_seed(0)
    pruned = magnitude_prune(mlp([10, 8, 6, 3]), (4, 5, 3, 3))
    state = torch.get_rng_state()
    fresh = reinitialized(pruned, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(fresh[0].indices, pruned[0].indices)
    for new, old in zip([m for m in fresh if isinstance(m, nn.Linear)],
                        [m for m in pruned if isinstance(m, nn.Linear)], strict=True):
        assert new.weight.shape == old.weight.shape and not torch.equal(new.weight, old.weight)
        bound = 1 / np.sqrt(new.in_features)   # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert new.weight.abs().max() <= bound and new.bias.abs().max() <= bound
    again = reinitialized(pruned, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), again.parameters(), strict=True))


def test_from_scratch_trains_the_compressed_architecture(classification_data):
    x, y = classification_data
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([5, 8, 3]), SpikeSlab(prior_inclusion=0.1), num_data=60), seed=1)
    module = compress(bnn).module
    assert any(bool((m.weight == 0).any()) for m in module if isinstance(m, nn.Linear))
    trained, history = train_from_scratch(module, x, y, epochs=60, batch_size=20, lr=1e-2, seed=0,
                                          progress=False)
    assert module_widths(trained) == module_widths(module)
    assert torch.equal(trained[0].indices, module[0].indices)
    assert history.loss[-1] < 0.5 * history.loss[0]
    start = reinitialized(module, seed=0)
    with torch.no_grad():
        assert F.cross_entropy(trained(x), y) < 0.5 * F.cross_entropy(start(x), y)
    # every weight of the small architecture trains, the BNN's zeros included
    assert all(bool((m.weight != 0).all()) for m in trained if isinstance(m, nn.Linear))
