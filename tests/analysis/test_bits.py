"""Bit precision and compression rates (Louizos et al. 2017) against a hand-worked example,
and rounding to a layer's precision."""


import math

import pytest
import torch

from pyro_sparse_bnn import SparseBNN, SpikeSlabGroupHorseshoe, compress
from pyro_sparse_bnn.analysis import round_to_precision
from pyro_sparse_bnn.analysis.bits import (
    LayerPrecision,
    compression_rates,
    exponent_bits,
    layer_precision,
    significand_bits,
)
from tests.conftest import mlp, randomize_guide


def test_significand_and_exponent_bits_of_a_hand_worked_example():
    # docs/methods.md: the largest t in 0..23 with 2 Var < 2^-t, i.e. t = ceil(-log2(2 Var)) - 1.
    # 2e-3: -log2 = 8.97 -> 8 (2^-9 = 0.00195 < 2e-3 < 2^-8); 2e-4: 12.29 -> 12 (rounding
    # 12.29 would give 11); 2^-11: exactly 11 -> 10 (strict; flooring would give 11);
    # 0.6 -> 0; a zero variance gets all 23 bits of single precision
    variance = torch.tensor([1e-3, 1e-4, 2.0**-12, 0.3, 0.0])
    assert significand_bits(variance).tolist() == [8, 12, 10, 0, 23]
    # 1.2e-3: -log2 = 9.70 -> 9; 3e-4: 11.70 -> 11
    assert significand_bits(torch.tensor([6e-4, 1.5e-4])).tolist() == [9, 11]
    # e = ceil(log2(|log2 max|E w|| + 1) + 1), each case computed by hand:
    # max 0.75: ceil(log2(1.415) + 1) = ceil(1.50) = 2
    assert exponent_bits(0.75) == 2
    # max 4: ceil(log2(2 + 1) + 1) = ceil(2.58) = 3; max 1: ceil(log2(1) + 1) = 1
    assert exponent_bits(4.0) == 3 and exponent_bits(1.0) == 1 and exponent_bits(0.0) == 0
    # where ceil, round and floor disagree: max 2^-4 or 16: ceil(log2(5) + 1) = ceil(3.32) = 4
    # (round and floor: 3); max 2^-6: ceil(log2(7) + 1) = ceil(3.81) = 4 (floor: 3)
    assert exponent_bits(2.0**-4) == 4 and exponent_bits(16.0) == 4 and exponent_bits(2.0**-6) == 4
    with pytest.raises(ValueError, match="non-negative"):
        significand_bits(torch.tensor([-1.0]))


@pytest.mark.parametrize("variances, bits, expected", [
    # t = (8, 12, 9, 0): mean 29 / 4 = 7.25 -> ceil 8 (round and floor would give 7)
    ([1e-3, 1e-4, 6e-4, 0.3], (8, 12, 9, 0), 8),
    # t = (8, 12, 11, 0): mean 31 / 4 = 7.75 -> ceil 8 (floor would give 7)
    ([1e-3, 1e-4, 1.5e-4, 0.3], (8, 12, 11, 0), 8),
    # t = (8, 12, 10, 0): mean 7.5 -> 8
    ([1e-3, 1e-4, 2.0**-12, 0.3], (8, 12, 10, 0), 8),
    # t = (9, 10): mean 9.5 -> 10 (round half to even would give 10 too, floor 9)
    ([6e-4, 2.0**-12], (9, 10), 10),
    # t = (12, 12, 11): mean 11.67 -> 12 (floor and round would give 11)
    ([1e-4, 1e-4, 1.5e-4], (12, 12, 11), 12),
    # t = (0, 0, 0, 9): mean 2.25 -> 3
    ([0.3, 0.3, 0.3, 6e-4], (0, 0, 0, 9), 3),
])
def test_layer_significand_bits_are_the_ceiling_of_the_mean(variances, bits, expected):
    variance = torch.tensor(variances)
    assert tuple(significand_bits(variance).tolist()) == bits
    assert math.ceil(sum(bits) / len(bits)) == expected  # the hand computation of docs/methods.md
    precision = layer_precision("L", torch.full((len(variances),), 0.75), variance,
                                weights_before=10, kept_weights=len(variances))
    assert precision.significand_bits == expected
    assert precision.bits_per_weight == 1 + 2 + expected  # max |E w| = 0.75: e = 2


def test_layer_bits_and_compression_rates_of_a_hand_worked_example():
    # layer A: 10 weights, 4 kept, t = ceil(mean(8, 12, 9, 0)) = ceil(7.25) = 8, max 0.75 -> e = 2
    # -> 11 bits
    a = layer_precision("A", torch.tensor([0.5, -0.25, 0.125, 0.75]), torch.tensor([1e-3, 1e-4, 6e-4, 0.3]),
                        weights_before=10, kept_weights=4)
    # layer B: 6 weights, 2 kept, exact (t = 23), max 4 -> e = 3 -> 27 bits
    b = layer_precision("B", torch.tensor([2.0, -4.0]), torch.zeros(2), weights_before=6, kept_weights=2)
    # layer C: 8 weights, 3 kept, t = ceil(mean(12, 12, 11)) = 12, max 2^-4 -> e = 4 -> 17 bits
    c = layer_precision("C", torch.tensor([0.0625, -0.03, 0.01]), torch.tensor([1e-4, 1e-4, 1.5e-4]),
                        weights_before=8, kept_weights=3)
    assert (a.significand_bits, a.exponent_bits, a.bits_per_weight) == (8, 2, 11)
    assert (b.significand_bits, b.exponent_bits, b.bits_per_weight) == (23, 3, 27)
    assert (c.significand_bits, c.exponent_bits, c.bits_per_weight) == (12, 4, 17)
    architecture, bit = compression_rates([a, b, c])
    assert architecture == pytest.approx(24 / 9)                          # 24 weights before, 9 after
    assert bit == pytest.approx(32 * 24 / (4 * 11 + 2 * 27 + 3 * 17))     # = 768 / 149 = 5.15
    assert compression_rates([LayerPrecision("D", 5, 0, 0, 0)]) == (math.inf, math.inf)


def test_rounding_to_precision_rounds_to_nearest_by_hand():
    # 0.65625 = 0.10101b, 0.71875 = 0.10111b; with 2 significand bits after the leading bit the
    # grid step is 2^-3 = 0.125: 0.65625 = 5.25 steps -> 5 steps = 0.625 (ceil: 0.75);
    # 0.71875 = 5.75 steps -> 6 steps = 0.75 (floor: 0.625); the sign is kept
    x = torch.tensor([0.65625, 0.71875, -0.65625, -0.71875, 5.25, 0.65625 * 2.0**-10], dtype=torch.float64)
    expected = [0.625, 0.75, -0.625, -0.75, 5.0, 0.625 * 2.0**-10]  # 5.25 = 1.0101b x 2^2 -> 1.01b x 2^2
    assert round_to_precision(x, 2).tolist() == expected


@pytest.mark.parametrize("significand", [0, 3, 10, 23])
def test_rounded_values_lie_on_the_grid_within_the_rounding_bound(significand):
    x = torch.randn(1000, dtype=torch.float64) * 10.0 ** torch.randint(-4, 3, (1000,))
    rounded = round_to_precision(x, significand)
    mantissa, _ = torch.frexp(rounded)
    scaled = mantissa * 2.0 ** (significand + 1)
    assert torch.equal(scaled, torch.round(scaled))
    assert torch.all((rounded - x).abs() <= 2.0 ** -(significand + 1) * x.abs())
    assert torch.equal(round_to_precision(torch.zeros(3), significand), torch.zeros(3))
    with pytest.raises(ValueError, match="significand"):
        round_to_precision(x, 24)


def test_rounded_compressed_module_stays_within_the_propagated_rounding_bound():
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([6, 8, 7, 3]), SpikeSlabGroupHorseshoe(), num_data=50), seed=1, logit_scale=2.0)
    with torch.no_grad():  # posterior variances of every order of magnitude: a range of precisions
        for layer in bnn.layers:
            layer.block.slab.rho.copy_(torch.linspace(-12, -2, layer.block.slab.rho.numel()).view_as(layer.block.slab.rho))
    exact, report = compress(bnn)
    rounded, rounded_report = compress(bnn, bits=True)
    assert rounded_report.rounded and not report.rounded
    x = torch.randn(64, 6)
    linear_exact = [m for m in exact if isinstance(m, torch.nn.Linear)]
    linear_rounded = [m for m in rounded if isinstance(m, torch.nn.Linear)]
    assert [p.kept_weights for p in report.precision] == [m.weight.numel() for m in linear_exact]
    h = exact[0](x)  # SelectInputs
    bound = torch.zeros_like(h)
    changed = 0
    with torch.no_grad():
        for i, (e, r, p) in enumerate(zip(linear_exact, linear_rounded, report.precision, strict=True)):
            mantissa, _ = torch.frexp(r.weight)
            scaled = mantissa * 2.0 ** (p.significand_bits + 1)
            assert torch.equal(scaled, torch.round(scaled)), f"layer {i} is off its grid"
            changed += int((r.weight != e.weight).sum())
            # |W_r h_r - W h| <= |W_r| |h_r - h| + |W_r - W| |h|, |W_r - W| <= 2^-(t+1) |W|
            bound = bound @ r.weight.abs().T + 2.0 ** -(p.significand_bits + 1) * (h.abs() @ e.weight.abs().T)
            h = e(h)
            if i < len(linear_exact) - 1:
                h = torch.relu(h)  # 1-Lipschitz: the bound carries over
        assert changed > 0
        difference = (rounded(x) - exact(x)).abs()
    assert torch.all(difference <= bound + 1e-6)
    # bit compression by hand: 6*8 + 8*7 + 7*3 = 125 weights before (biases excluded), the
    # compressed module's weight matrices after, each at 1 + e + t bits, e from the largest
    # kept weight (the posterior means of the unrounded module) by the formula of docs/methods.md
    total_bits = 0
    for e, p in zip(linear_exact, report.precision, strict=True):
        largest = float(e.weight.detach().abs().max())
        exponent = math.ceil(math.log2(abs(math.log2(largest)) + 1) + 1)
        assert p.exponent_bits == exponent and 0 <= p.significand_bits <= 23
        total_bits += e.weight.numel() * (1 + exponent + p.significand_bits)
    assert report.bit_compression == pytest.approx(32 * 125 / total_bits)
    assert report.weight_compression == pytest.approx(125 / sum(e.weight.numel() for e in linear_exact))
    assert report.bit_compression > report.weight_compression >= 1
    assert "bit compression" in str(report) and report.as_dict()["bit_compression"] == report.bit_compression
