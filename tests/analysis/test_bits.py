"""Bit precision and compression rates (Louizos et al. 2017) against a hand-worked example,
and rounding to a layer's precision."""


import pytest
import torch

from pyro_sparse_bnn import SparseBNN, SpikeSlabGroupHorseshoe, compress
from pyro_sparse_bnn.analysis import round_to_precision
from pyro_sparse_bnn.analysis.bits import (
    compression_rates,
    exponent_bits,
    layer_precision,
    significand_bits,
)
from tests.conftest import mlp, randomize_guide


def test_significand_and_exponent_bits_of_a_hand_worked_example():
    # 2 Var < 2^-t: 2e-3 -> t = 8 (2^-9 = 0.00195 < 2e-3 < 2^-8); 2e-4 -> 12; 2^-11 -> 10 (strict);
    # 0.6 -> 0; a zero variance gets all 23 bits of single precision
    variance = torch.tensor([1e-3, 1e-4, 2.0**-12, 0.3, 0.0])
    assert significand_bits(variance).tolist() == [8, 12, 10, 0, 23]
    # max |E w| = 0.75: ceil(log2(|log2 0.75| + 1) + 1) = ceil(log2(1.415) + 1) = ceil(1.50) = 2
    assert exponent_bits(0.75) == 2
    # max 4: ceil(log2(2 + 1) + 1) = ceil(2.58) = 3; max 1: ceil(log2(1) + 1) = 1
    assert exponent_bits(4.0) == 3 and exponent_bits(1.0) == 1 and exponent_bits(0.0) == 0
    with pytest.raises(ValueError, match="non-negative"):
        significand_bits(torch.tensor([-1.0]))


def test_layer_bits_and_compression_rates_of_a_hand_worked_example():
    # layer A: 10 weights, 4 kept, t = ceil(mean(8, 12, 10, 0)) = ceil(7.5) = 8, e = 2 -> 11 bits
    a = layer_precision("A", torch.tensor([0.5, -0.25, 0.125, 0.75]), torch.tensor([1e-3, 1e-4, 2.0**-12, 0.3]),
                        weights_before=10, kept_weights=4)
    # layer B: 6 weights, 2 kept, exact (t = 23), max 4 -> e = 3 -> 27 bits
    b = layer_precision("B", torch.tensor([2.0, -4.0]), torch.zeros(2), weights_before=6, kept_weights=2)
    assert (a.significand_bits, a.exponent_bits, a.bits_per_weight) == (8, 2, 11)
    assert (b.significand_bits, b.exponent_bits, b.bits_per_weight) == (23, 3, 27)
    architecture, bit = compression_rates([a, b])
    assert architecture == pytest.approx(16 / 6)               # 16 weights before, 6 after
    assert bit == pytest.approx(32 * 16 / (4 * 11 + 2 * 27))   # = 512 / 98 = 5.22


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
    assert report.bit_compression == pytest.approx(compression_rates(report.precision)[1])
    assert report.bit_compression > report.weight_compression >= 1
    assert "bit compression" in str(report) and report.as_dict()["bit_compression"] == report.bit_compression
