"""Rebuilding a fitted sparse BNN as a small deterministic ``nn.Module``.

:func:`compress` reads the fitted guide and returns a plain ``nn.Sequential`` (no Pyro
inside) built from posterior means, in which

* weights outside the median-probability model (the prior's keep rule, e.g. PIP > 0.5) are
  zero,
* hidden nodes with no kept outgoing edge are physically removed,
* hidden nodes with no kept incoming edge output a constant (the activation of their bias);
  that constant is folded into the next layer's bias and the node is removed,
* input features with no kept outgoing edge are dropped.

The compressed module computes exactly what the *masked posterior-mean network*
(:func:`masked_posterior_mean`: same architecture, posterior means, dropped weights set to
zero) computes, up to float round-off.

The compressed module takes the **full** input ``(batch, in_features)``: its first module,
:class:`SelectInputs`, picks the kept columns itself, so it is a drop-in replacement of the
original network. ``module[1:]`` (after any leading parameter-free modules) takes the reduced
input ``x[:, report.kept_features]``.
"""

import copy
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

import torch
from torch import nn

from .bits import LayerPrecision, compression_rates, layer_precision, round_to_precision
from .errors import NotFittedError
from .network import SparseBNN

__all__ = [
    "compress",
    "Compressed",
    "CompressionReport",
    "SelectInputs",
    "Structure",
    "analyse_structure",
    "masked_posterior_mean",
]


class SelectInputs(nn.Module):
    """Select input columns ``indices`` of a ``(batch, num_inputs)`` tensor."""

    def __init__(self, indices: torch.Tensor, num_inputs: int):
        super().__init__()
        self.register_buffer("indices", torch.as_tensor(indices, dtype=torch.long))
        self.num_inputs = int(num_inputs)

    def forward(self, x):
        return x.index_select(-1, self.indices)

    def extra_repr(self):
        return f"{len(self.indices)} of {self.num_inputs} inputs"


@dataclass
class Structure:
    """The median-probability model of a fitted network, node by node.

    :ivar weights: masked posterior-mean weights per layer (dropped weights zero).
    :ivar biases: masked posterior-mean biases per layer, with the constants of constant
        nodes of the previous layer folded in.
    :ivar weight_masks: boolean masks of kept weights per layer.
    :ivar kept_features: boolean mask ``(in_features,)`` of kept input features.
    :ivar kept_nodes: boolean mask per hidden layer of nodes kept in the compressed network.
    :ivar constant_nodes: boolean mask per hidden layer of nodes whose output is constant.
    """

    weights: List[torch.Tensor]
    biases: List[torch.Tensor]
    weight_masks: List[torch.Tensor]
    kept_features: torch.Tensor
    kept_nodes: List[torch.Tensor]
    constant_nodes: List[torch.Tensor]


def _require_fitted(bnn: SparseBNN, what: str):
    if not isinstance(bnn, SparseBNN):
        raise TypeError(f"{what} needs a SparseBNN, got {type(bnn).__name__}")
    if not bnn.is_fitted:
        raise NotFittedError(
            f"{what}: the network has not been fitted yet (its guide still has its initial "
            f"parameters); call pyro_sparse_bnn.fit first"
        )


def _between(bnn: SparseBNN):
    """Fixed modules before the first layer, between consecutive layers, after the last."""
    groups: List[List[nn.Module]] = [[]]
    for stage in bnn.architecture.stages:
        if stage.is_parametric:
            groups.append([])
        else:
            groups[-1].append(stage.module)
    return groups


def _masked_layers(bnn: SparseBNN, threshold):
    for layer in bnn.layers:
        weight, bias = layer.posterior_mean()
        weight_mask, bias_mask = layer.keep_masks(threshold)
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        elif bias_mask is not None:
            bias = bias * bias_mask
        yield weight * weight_mask, bias, weight_mask


@torch.no_grad()
def analyse_structure(bnn: SparseBNN, threshold: Optional[float] = None) -> Structure:
    """Which nodes and features the median-probability model keeps, and the folded biases.

    :param threshold: keep-rule threshold passed to every layer's prior (``None``: each
        prior's default, 0.5 for PIPs).
    """
    weights, biases, masks = map(list, zip(*_masked_layers(bnn, threshold)))
    between = _between(bnn)
    num_layers = len(weights)

    # forward: which hidden nodes vary with the input, and the value of the constant ones
    variable_in = torch.ones(weights[0].shape[1], dtype=torch.bool, device=weights[0].device)
    constant_values = torch.zeros(weights[0].shape[1], dtype=weights[0].dtype, device=weights[0].device)
    variable: List[torch.Tensor] = []
    for i in range(num_layers):
        constant_in = ~variable_in
        if constant_in.any():
            biases[i] = biases[i] + weights[i][:, constant_in] @ constant_values[constant_in]
        if i == num_layers - 1:
            break
        variable_in = masks[i][:, variable_in].any(dim=1)
        activation = biases[i].unsqueeze(0)
        for module in between[i + 1]:
            activation = module(activation)
        constant_values = activation[0]
        variable.append(variable_in)

    # backward: a hidden node is kept iff it varies and has a kept edge to a kept node
    kept_rows = torch.ones(weights[-1].shape[0], dtype=torch.bool, device=weights[-1].device)
    kept_nodes: List[torch.Tensor] = [None] * (num_layers - 1)
    for i in reversed(range(num_layers - 1)):
        kept_rows = variable[i] & masks[i + 1][kept_rows].any(dim=0)
        kept_nodes[i] = kept_rows
    kept_features = masks[0][kept_rows].any(dim=0)
    return Structure(
        weights=weights, biases=biases, weight_masks=masks, kept_features=kept_features,
        kept_nodes=kept_nodes, constant_nodes=[~v for v in variable],
    )


def _linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=True)
    layer = layer.to(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


@torch.no_grad()
def masked_posterior_mean(bnn: SparseBNN, threshold: Optional[float] = None) -> nn.Sequential:
    """The reference network: the original architecture with posterior-mean weights and the
    weights outside the median-probability model set to zero (nothing removed or folded)."""
    _require_fitted(bnn, "masked_posterior_mean")
    modules: List[nn.Module] = []
    layers = iter(_masked_layers(bnn, threshold))
    for stage in bnn.architecture.stages:
        if stage.is_parametric:
            weight, bias, _ = next(layers)
            modules.append(_linear(weight, bias))
        else:
            modules.append(copy.deepcopy(stage.module))
    return nn.Sequential(*modules)


@dataclass
class CompressionReport:
    """Sizes of the network before and after compression (per example for FLOPs).

    FLOPs count ``2 * in * out`` per linear layer (a multiply and an add per weight);
    ``nonzero`` counts exclude the dropped weights that remain (as zeros) inside kept nodes
    and count every bias of the compressed network.
    """

    architecture_before: tuple
    architecture_after: tuple
    kept_features: torch.Tensor
    kept_nodes: Dict[str, torch.Tensor]
    params_before: int
    params_after: int
    nonzero_params_after: int
    flops_before: int
    flops_after: int
    nonzero_flops_after: int
    threshold: Optional[float] = None
    precision: Optional[List[LayerPrecision]] = None
    rounded: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def architecture_compression(self) -> float:
        """Parameters before / parameters of the compressed (structurally pruned) network."""
        return self.params_before / max(self.params_after, 1)

    @property
    def sparse_compression(self) -> float:
        """Parameters before / non-zero parameters after."""
        return self.params_before / max(self.nonzero_params_after, 1)

    @property
    def weight_compression(self) -> Optional[float]:
        """Louizos et al.'s architecture compression rate: weights (biases excluded) before /
        weights of the structurally pruned network (``None`` without weight moments)."""
        return None if self.precision is None else compression_rates(self.precision)[0]

    @property
    def bit_compression(self) -> Optional[float]:
        """``32 * weights before / bits of the kept weights`` at each layer's precision
        (``None`` for a prior without weight moments)."""
        return None if self.precision is None else compression_rates(self.precision)[1]

    @staticmethod
    def _arch(widths):
        return "-".join(str(w) for w in widths)

    def as_dict(self) -> dict:
        """JSON-serialisable summary."""
        return {
            "architecture_before": self._arch(self.architecture_before),
            "architecture_after": self._arch(self.architecture_after),
            "kept_features": self.kept_features.tolist(),
            "kept_nodes": {k: v.tolist() for k, v in self.kept_nodes.items()},
            "params_before": self.params_before,
            "params_after": self.params_after,
            "nonzero_params_after": self.nonzero_params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "nonzero_flops_after": self.nonzero_flops_after,
            "architecture_compression": self.architecture_compression,
            "sparse_compression": self.sparse_compression,
            "threshold": self.threshold,
            "weight_compression": self.weight_compression,
            "bit_compression": self.bit_compression,
            "precision": None if self.precision is None else [p.as_dict() for p in self.precision],
            "rounded": self.rounded,
            **self.extra,
        }

    def __str__(self):
        rows = [
            ("architecture", self._arch(self.architecture_before), self._arch(self.architecture_after)),
            ("parameters", f"{self.params_before:,}", f"{self.params_after:,}"),
            ("non-zero parameters", f"{self.params_before:,}", f"{self.nonzero_params_after:,}"),
            ("FLOPs per example", f"{self.flops_before:,}", f"{self.flops_after:,}"),
            ("non-zero FLOPs", f"{self.flops_before:,}", f"{self.nonzero_flops_after:,}"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{'':{width}}  {'before':>14}  {'after':>14}"]
        lines += [f"{name:{width}}  {a:>14}  {b:>14}" for name, a, b in rows]
        lines.append(
            f"compression: {self.architecture_compression:.1f}x structural, "
            f"{self.sparse_compression:.1f}x counting non-zeros"
        )
        if self.precision is not None:
            lines.append("bits per weight (sign + exponent + significand): " + ", ".join(
                f"{p.layer} 1+{p.exponent_bits}+{p.significand_bits}" for p in self.precision))
            lines.append(
                f"weights: {self.weight_compression:.1f}x architecture compression, "
                f"{self.bit_compression:.1f}x bit compression"
                + (" (weights rounded to these precisions)" if self.rounded else "")
            )
        return "\n".join(lines)


class Compressed(NamedTuple):
    """Result of :func:`compress`: ``module, report = compress(bnn)``."""

    module: nn.Sequential
    report: CompressionReport


def _kept_rows(structure: Structure, i: int) -> torch.Tensor:
    """Output units of layer ``i`` kept by the compressed network (all for the output layer)."""
    if i < len(structure.kept_nodes):
        return structure.kept_nodes[i]
    return torch.ones(structure.weights[i].shape[0], dtype=torch.bool, device=structure.weights[i].device)


def _precisions(bnn: SparseBNN, structure: Structure) -> Optional[List[LayerPrecision]]:
    """Bit precision of every layer's structurally kept weights (``None`` without moments)."""
    precisions = []
    cols = structure.kept_features
    for i, layer in enumerate(bnn.layers):
        try:
            mean, var = (layer.spec.split(m)[0] for m in layer.weight_moments())
        except NotImplementedError:
            return None
        rows = _kept_rows(structure, i)
        mask = structure.weight_masks[i][rows][:, cols]
        precisions.append(layer_precision(
            layer.spec.name, mean[rows][:, cols][mask], var[rows][:, cols][mask],
            weights_before=layer.spec.weight_shape.numel(), kept_weights=mask.numel(),
        ))
        cols = rows
    return precisions


@torch.no_grad()
def compress(bnn: SparseBNN, threshold: Optional[float] = None, bits: bool = False) -> Compressed:
    """Build the compressed deterministic network of a fitted sparse BNN.

    :param bnn: a fitted :class:`~pyro_sparse_bnn.network.SparseBNN`.
    :param threshold: keep-rule threshold for every layer's prior (``None``: each prior's
        default; for spike-and-slab priors a weight is kept when its PIP exceeds it).
    :param bool bits: round every kept weight to its layer's significand precision
        (:mod:`pyro_sparse_bnn.bits`); the report carries the precisions and the bit
        compression rate whether or not the weights are rounded.
    :returns: :class:`Compressed` ``(module, report)``; ``module`` is an ``nn.Sequential``
        that takes the full input ``(batch, in_features)`` and returns
        ``(batch, outputs)`` (see the module docstring).
    :raises NotFittedError: if the network has not been fitted.
    """
    _require_fitted(bnn, "compress")
    structure = analyse_structure(bnn, threshold)
    between = _between(bnn)
    num_layers = len(structure.weights)
    kept_features = structure.kept_features.nonzero().flatten()

    modules: List[nn.Module] = [copy.deepcopy(m) for m in between[0]]
    modules.append(SelectInputs(kept_features, bnn.num_inputs))
    cols = structure.kept_features
    kept_weights = 0
    precision = _precisions(bnn, structure)
    if bits and precision is None:
        raise NotImplementedError(
            f"compress(bits=True): {', '.join(sorted({type(p).__name__ for p in bnn.priors}))} has no posterior weight variances to "
            f"set the bit precision from"
        )
    for i in range(num_layers):
        rows = _kept_rows(structure, i)
        weight = structure.weights[i][rows][:, cols]
        if bits:
            weight = round_to_precision(weight, precision[i].significand_bits)
        modules.append(_linear(weight, structure.biases[i][rows]))
        modules.extend(copy.deepcopy(m) for m in between[i + 1])
        kept_weights += int(structure.weight_masks[i][rows][:, cols].sum())
        cols = rows
    module = nn.Sequential(*modules)

    before = bnn.architecture.widths
    after = (len(kept_features),) + tuple(int(k.sum()) for k in structure.kept_nodes) + (before[-1],)
    linear = [m for m in module if isinstance(m, nn.Linear)]
    params_after = sum(p.numel() for m in linear for p in m.parameters())
    report = CompressionReport(
        architecture_before=before,
        architecture_after=after,
        kept_features=kept_features.cpu(),
        kept_nodes={
            layer.spec.name: kept.nonzero().flatten().cpu()
            for layer, kept in zip(bnn.layers[:-1], structure.kept_nodes)
        },
        params_before=sum(layer.spec.num_params for layer in bnn.layers),
        params_after=params_after,
        nonzero_params_after=kept_weights + sum(m.bias.numel() for m in linear),
        flops_before=sum(2 * layer.spec.weight_shape.numel() for layer in bnn.layers),
        flops_after=sum(2 * m.weight.numel() for m in linear),
        nonzero_flops_after=2 * kept_weights,
        threshold=threshold,
        precision=precision,
        rounded=bool(bits),
    )
    return Compressed(module, report)
