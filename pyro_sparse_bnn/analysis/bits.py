"""Bit precision of the kept weights and the compression rates of Louizos et al. (2017).

The posterior variance of a weight says how many significand bits it deserves: rounding it
to ``t`` bits (unit round-off ``u(t) = 2^-t``) is harmless when ``2 Var[w] < u(t)``, so a
weight needs the largest such ``t`` (at most 23, single precision). Per layer:

* significand bits ``t_l`` = ceiling of the mean of the weights' ``t`` over the kept weights;
* exponent bits ``e_l = ceil(log2(|log2 max|E[w]|| + 1) + 1)`` -- the published formula
  ``log2(log2(max) + 1) + 1`` with the absolute value, which it needs to be defined for
  layers whose largest weight is below 1 (the usual case);
* bits per weight ``1 + e_l + t_l`` (sign, exponent, significand).

Compression rates (weights only, biases excluded, as in the paper):

* architecture compression = weights before / weights after structural pruning;
* bit compression = ``32 * weights before / sum_l (kept weights_l * bits per weight_l)``.

Rounding (:func:`round_to_precision`) keeps ``t_l`` significand bits of every kept
posterior mean: ``|w - round(w)| <= 2^-(t+1) |w|``.
"""

import math
from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import torch

from ..core.network import SparseBNN

__all__ = [
    "MAX_SIGNIFICAND_BITS",
    "LayerPrecision",
    "significand_bits",
    "exponent_bits",
    "layer_precision",
    "round_to_precision",
    "weight_moments",
    "compression_rates",
]

#: significand bits of single precision (the most a weight is ever given)
MAX_SIGNIFICAND_BITS = 23


def significand_bits(variance: torch.Tensor) -> torch.Tensor:
    """Largest ``t`` in ``0..23`` with ``2 variance < 2^-t``, elementwise (an integer tensor)."""
    device = variance.device if isinstance(variance, torch.Tensor) else "cpu"  # never the default device
    variance = torch.as_tensor(variance, dtype=torch.float64, device=device)
    if torch.any(variance < 0) or torch.any(torch.isnan(variance)):
        raise ValueError("variances must be non-negative")
    limit = -torch.log2(2 * variance)  # t < limit; +inf for a zero variance
    bits = torch.ceil(limit) - 1
    return bits.clamp(0, MAX_SIGNIFICAND_BITS).to(torch.int64)


def exponent_bits(max_abs: float) -> int:
    """Exponent bits for weights up to ``max_abs`` in magnitude: ``ceil(log2(|log2 max_abs| + 1) + 1)``
    (0 for an all-zero layer)."""
    max_abs = float(max_abs)
    if max_abs <= 0:
        return 0
    return math.ceil(math.log2(abs(math.log2(max_abs)) + 1) + 1)


@dataclass
class LayerPrecision:
    """Bit precision of one layer's kept weights.

    :ivar str layer: layer name. :ivar int weights_before: weights of the dense layer.
    :ivar int kept_weights: weights of the structurally pruned layer.
    :ivar int significand_bits: ``t_l``. :ivar int exponent_bits: ``e_l``.
    """

    layer: str
    weights_before: int
    kept_weights: int
    significand_bits: int
    exponent_bits: int

    @property
    def bits_per_weight(self) -> int:
        """``1 + exponent_bits + significand_bits``."""
        return 1 + self.exponent_bits + self.significand_bits

    def as_dict(self) -> dict:
        return {**asdict(self), "bits_per_weight": self.bits_per_weight}


def layer_precision(layer: str, mean: torch.Tensor, variance: torch.Tensor, weights_before: int,
                    kept_weights: int) -> LayerPrecision:
    """Precision of a layer from the posterior means and variances of its kept weights (1-D)."""
    if mean.numel() == 0:
        return LayerPrecision(layer, weights_before, kept_weights, 0, 0)
    t = math.ceil(float(significand_bits(variance).double().mean()))
    return LayerPrecision(layer, weights_before, kept_weights, t, exponent_bits(mean.abs().max()))


def round_to_precision(x: torch.Tensor, significand: int) -> torch.Tensor:
    """Round every entry of ``x`` to a float with ``significand`` bits after the leading bit.

    With ``x = m 2^e``, ``0.5 <= |m| < 1`` (:func:`torch.frexp`), ``m`` is rounded to a
    multiple of ``2^-(significand + 1)``; the error is at most ``2^-(significand + 1) |x|``.
    """
    if not 0 <= int(significand) <= MAX_SIGNIFICAND_BITS:
        raise ValueError(f"significand must be in 0..{MAX_SIGNIFICAND_BITS}, got {significand}")
    mantissa, exponent = torch.frexp(x)
    step = 2.0 ** (int(significand) + 1)
    return torch.ldexp(torch.round(mantissa * step) / step, exponent)


@torch.no_grad()
def weight_moments(bnn: SparseBNN) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Posterior mean and variance of every weight given that it is kept, per layer.

    :returns: ``{layer_name: (mean, variance)}``, each of the layer's weight shape.
    :raises NotImplementedError: for a prior without weight moments.
    """
    result = {}
    for layer in bnn.layers:
        mean, var = layer.weight_moments()
        result[layer.spec.name] = (layer.spec.split(mean)[0], layer.spec.split(var)[0])
    return result


def compression_rates(precisions) -> Tuple[float, float]:
    """``(architecture compression, bit compression)`` from per-layer :class:`LayerPrecision`;
    both are ``inf`` when no weight is kept (a network whose output is a constant)."""
    before = sum(p.weights_before for p in precisions)
    after = sum(p.kept_weights for p in precisions)
    if after == 0:
        return math.inf, math.inf
    bits = sum(p.kept_weights * p.bits_per_weight for p in precisions)
    return before / after, 32 * before / bits
