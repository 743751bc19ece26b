"""Property-based tests of ``compress`` over random architectures and inclusion patterns:
the compressed module computes the masked posterior-mean network, and is never larger."""

import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pyro_sparse_bnn import DegenerateNetworkWarning, SparseBNN, SpikeSlab, SpikeSlabNode, compress
from pyro_sparse_bnn.analysis import ConstantOutput, masked_posterior_mean

ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.Identity, nn.Sigmoid]
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def force_pattern(bnn: SparseBNN, seed: int, keep: float, scale: float):
    """Random posterior means, and indicator logits of +-20 (PIP 1 or 0) kept with
    probability ``keep``: a random inclusion pattern, known exactly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bnn.named_parameters():
            if name.endswith("logits"):
                p.copy_(torch.where(torch.rand(p.shape, generator=generator) < keep, 20.0, -20.0))
            elif name.endswith("rho"):
                p.fill_(-5.0)
            else:
                p.copy_(scale * torch.randn(p.shape, generator=generator))
    return bnn


def check_exact_and_smaller(bnn: SparseBNN, seed: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module, report = compress(bnn)
    # one warning exactly when the network reads no input, and never one from torch
    assert [w.category for w in caught] == [DegenerateNetworkWarning] * (report.architecture_after[0] == 0)
    x = torch.randn((16,) + tuple(bnn.input_shape), generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        expected, actual = masked_posterior_mean(bnn)(x), module(x)
    assert actual.shape == expected.shape
    bound = 1e-5 * (1.0 + expected.abs().max())
    assert (actual - expected).abs().max() <= bound, (report, (actual - expected).abs().max())
    assert report.params_after <= report.params_before
    assert report.nonzero_params_after <= report.params_after
    assert report.flops_after <= report.flops_before
    assert all(a <= b for a, b in zip(report.architecture_after, report.architecture_before, strict=True))
    stored = sum(t.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, ConstantOutput))
                 for t in [*m.parameters(), *(m.buffers() if isinstance(m, ConstantOutput) else [])])
    assert stored == report.params_after


@PROPERTY
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    activation=st.sampled_from(ACTIVATIONS),
    node_level=st.booleans(),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_compressed_mlp_equals_the_masked_posterior_mean(widths, activation, node_level, keep, seed):
    modules = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        modules += [nn.Linear(a, b)] + ([activation()] if i < len(widths) - 2 else [])
    prior = SpikeSlabNode(prior_inclusion=0.5) if node_level else SpikeSlab(prior_inclusion=0.5)
    bnn = force_pattern(SparseBNN(nn.Sequential(*modules), prior, likelihood="gaussian"), seed, keep, scale=1.0)
    check_exact_and_smaller(bnn, seed)


@PROPERTY
@given(
    channels=st.lists(st.integers(1, 3), min_size=2, max_size=3),
    kernel=st.integers(1, 3),
    padding=st.integers(0, 1),
    pool=st.sampled_from([None, nn.MaxPool2d, nn.AvgPool2d]),
    activation=st.sampled_from(ACTIVATIONS),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_compressed_conv_net_equals_the_masked_posterior_mean(channels, kernel, padding, pool, activation, keep, seed):
    size, modules = 7, []
    for a, b in zip(channels[:-1], channels[1:], strict=True):
        modules += [nn.Conv2d(a, b, kernel, padding=padding), activation()]
        size = size + 2 * padding - kernel + 1
    if pool is not None and size >= 2:
        modules.append(pool(2))
        size //= 2
    modules += [nn.Flatten(), nn.Linear(channels[-1] * size * size, 2)]
    bnn = SparseBNN(nn.Sequential(*modules), SpikeSlab(prior_inclusion=0.5), input_shape=(channels[0], 7, 7))
    check_exact_and_smaller(force_pattern(bnn, seed, keep, scale=0.5), seed)


def kept_units(report):
    return [set(report.kept_features.tolist())] + [set(v.tolist()) for v in report.kept_nodes.values()]


@PROPERTY
@given(
    channels=st.lists(st.integers(1, 3), min_size=2, max_size=3),
    padding=st.integers(0, 1),
    pool=st.sampled_from([None, nn.MaxPool2d, nn.AvgPool2d]),
    activation=st.sampled_from(ACTIVATIONS),
    node_level=st.booleans(),
    seed=st.integers(0, 2**16),
    thresholds=st.lists(st.floats(0.01, 0.99), min_size=2, max_size=2, unique=True),
)
def test_a_higher_threshold_never_keeps_more(channels, padding, pool, activation, node_level, seed, thresholds):
    """What the frontier relies on: the kept weights are nested in the threshold, so the kept
    units, parameters and FLOPs never grow as it rises -- also where constant channels stop
    folding at a padded border."""
    size, modules = 6, []
    for a, b in zip(channels[:-1], channels[1:], strict=True):
        modules += [nn.Conv2d(a, b, 3, padding=padding), activation()]
        size = size + 2 * padding - 2
    if pool is not None and size >= 2:
        modules.append(pool(2, padding=1) if pool is nn.AvgPool2d else pool(2))
        size = (size + 2) // 2 if pool is nn.AvgPool2d else size // 2
    modules += [nn.Flatten(), nn.Linear(channels[-1] * size * size, 4), activation(), nn.Linear(4, 2)]
    prior = SpikeSlabNode(prior_inclusion=0.5) if node_level else SpikeSlab(prior_inclusion=0.5)
    bnn = SparseBNN(nn.Sequential(*modules), prior, input_shape=(channels[0], 6, 6))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bnn.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * (3.0 if name.endswith("logits") else 1.0))
    low, high = sorted(thresholds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateNetworkWarning)
        (_, a), (_, b) = compress(bnn, threshold=low), compress(bnn, threshold=high)
    assert all(h <= lo for h, lo in zip(kept_units(b), kept_units(a), strict=True))
    assert b.params_after <= a.params_after and b.nonzero_params_after <= a.nonzero_params_after
    assert b.flops_after <= a.flops_after and b.nonzero_flops_after <= a.nonzero_flops_after
