"""Rebuilding a fitted sparse BNN as a small deterministic ``nn.Module``.

:func:`compress` reads the fitted guide and returns a plain ``nn.Sequential`` (no Pyro
inside) built from posterior means, in which

* weights outside the median-probability model (the prior's keep rule, e.g. PIP > 0.5) are
  zero,
* hidden units -- nodes of linear layers, channels of conv layers -- with no kept outgoing
  edge are physically removed: smaller ``nn.Linear`` / ``nn.Conv2d`` modules, where a removed
  channel also removes its slice of input channels of the next conv layer, or its block of
  ``H * W`` columns of the linear layer after ``nn.Flatten`` (channel-major, after pooling),
* hidden units with no kept incoming edge from a unit that varies with the input output a
  constant; that constant is folded into the next layer's bias and the unit removed *when
  the fold is exact*: always before a linear layer, and before a conv layer when the
  constant's contribution is the same at every output position (see below); otherwise the
  constant unit is kept (its bias, with the constants folded into it, computes it),
* input features with no kept outgoing edge are dropped (input channels for a network that
  starts with a conv layer).

Folding into a conv layer. A constant channel feeds the next conv layer a constant map
(``act(b)`` everywhere after an elementwise activation and max pooling; not uniform after an
average pooling with zero padding counted). Its contribution to the next layer is a per-
channel bias only if it is the same at every output position; zero padding breaks that at
the border (the border windows see fewer copies of the constant), unless the constant is 0
(a pruned ReLU channel) or the kept kernel taps that fall on the padding are zero. The rule
is checked numerically per unit -- the contribution's spread over positions must stay below
a float round-off bound -- so it covers stride, dilation, padding and pooling alike.

The compressed module computes exactly what the *masked posterior-mean network*
(:func:`masked_posterior_mean`: same architecture, posterior means, dropped weights set to
zero) computes, up to float round-off.

The compressed module takes the **full** input ``(batch, *input_shape)``: after the modules
that precede the first layer (e.g. ``nn.Unflatten``) a :class:`SelectInputs` picks the kept
input features (or channels) itself, so it is a drop-in replacement of the original network.
For a network that starts with a linear layer, ``module[1:]`` (after any leading
parameter-free modules) takes the reduced input ``x[:, report.kept_features]``. A network
whose output depends on no input at all compresses to a :class:`ConstantOutput`.

Saving. Importing this module allow-lists the classes a compressed module is made of
(:data:`MODULE_CLASSES`) for ``torch.load``'s default ``weights_only=True``, so
``torch.save(module, path)`` and ``torch.load(path)`` round-trip it in any process that has
imported ``pyro_sparse_bnn``. Without the package, export it
(:func:`~pyro_sparse_bnn.persistence.export.export`, a ``.pt2`` or ``.onnx`` file) or save its
``state_dict``.

Choosing the threshold. ``compress(bnn, threshold=t)`` applies one PIP threshold to every
layer; ``threshold=None`` applies each prior's own keep rule (which may differ between
layers). :func:`pyro_sparse_bnn.analysis.frontier.frontier` evaluates the compressed network at many
thresholds on validation data, and its ``select(tolerance)`` returns a
:class:`ThresholdChoice` -- the threshold of the smallest network within ``tolerance`` of the
posterior -- which ``compress`` takes in place of a number and whose reason it records
(``report.threshold_reason``).

A useless result is never silent: when the kept network reads no input -- some layer keeps
no weight from a unit that depends on the input, so no input feature and no hidden unit is
kept and every example gets the same prediction -- ``compress`` still returns it, but warns
with a :class:`~pyro_sparse_bnn.core.errors.DegenerateNetworkWarning` that names the layer that
cuts the input off, and records the message in ``report.warnings``.
"""

import copy
import math
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..core.architecture import ELEMENTWISE_MODULES, POOLING_MODULES
from ..core.errors import DegenerateNetworkWarning, InputError
from ..core.network import SparseBNN, check_bnn
from ..core.priors.bayesian_compression import GroupScaleLayer
from ..core.priors.self_compressing import SelfCompressingLayer
from ..core.validation import check_bool, check_threshold, layer_thresholds
from .bits import LayerPrecision, compression_rates, layer_precision, round_to_precision

__all__ = [
    "compress",
    "Compressed",
    "CompressionReport",
    "ThresholdChoice",
    "describe_keep_rule",
    "reused_readouts",
    "SelectInputs",
    "ConstantOutput",
    "Structure",
    "analyse_structure",
    "masked_posterior_mean",
]


class SelectInputs(nn.Module):
    """Select entries ``indices`` along dimension ``dim`` of the input: the kept columns of a
    ``(batch, num_inputs)`` tensor (``dim=-1``), or the kept channels of a
    ``(batch, num_inputs, H, W)`` tensor (``dim=1``)."""

    def __init__(self, indices: torch.Tensor, num_inputs: int, dim: int = -1):
        super().__init__()
        device = indices.device if isinstance(indices, torch.Tensor) else "cpu"  # never the default device
        self.register_buffer("indices", torch.as_tensor(indices, dtype=torch.long, device=device))
        self.num_inputs = int(num_inputs)
        self.dim = int(dim)

    def forward(self, x):
        return x.index_select(self.dim, self.indices)

    def extra_repr(self):
        return f"{len(self.indices)} of {self.num_inputs} inputs" + ("" if self.dim == -1 else f", dim={self.dim}")


class ConstantOutput(nn.Module):
    """The same output ``value`` for every example: ``(batch, *value.shape)`` from any
    ``(batch, ...)`` input (a compressed network whose output depends on no input)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value.detach().clone())

    def forward(self, x):
        return self.value.expand([x.shape[0]] + list(self.value.shape))  # TorchScript-compatible

    def extra_repr(self):
        return f"shape={tuple(self.value.shape)}"


#: every class a compressed (or fine-tuned) module is built from: the torch.nn modules the
#: wrapper accepts plus the two above
MODULE_CLASSES = (nn.Sequential, nn.Linear, nn.Conv2d, nn.Flatten, nn.Unflatten, *ELEMENTWISE_MODULES,
                  *POOLING_MODULES, SelectInputs, ConstantOutput)
# ``torch.save(module)`` then ``torch.load(path)`` (weights_only=True, torch's default) rebuilds
# only allow-listed classes: these hold tensors and plain settings and run no code on loading
torch.serialization.add_safe_globals(list(MODULE_CLASSES))


@dataclass
class Structure:
    """The median-probability model of a fitted network, unit by unit (a unit is a node of a
    linear layer or a channel of a conv layer).

    :ivar weights: masked posterior-mean weights per layer (dropped weights zero).
    :ivar biases: masked posterior-mean biases per layer, with the constants of the folded
        units of the previous layer added.
    :ivar weight_masks: boolean masks of kept weights per layer.
    :ivar kept_features: boolean mask ``(num_inputs,)`` of kept input units of the first
        layer (features, or channels for a network that starts with a conv layer).
    :ivar kept_nodes: boolean mask per hidden layer of units kept in the compressed network.
    :ivar constant_nodes: boolean mask per hidden layer of units whose output is constant.
    :ivar folded_nodes: boolean mask per hidden layer of constant units folded into the next
        layer's bias (the constant units not folded are kept when they are used).
    """

    weights: List[torch.Tensor]
    biases: List[torch.Tensor]
    weight_masks: List[torch.Tensor]
    kept_features: torch.Tensor
    kept_nodes: List[torch.Tensor]
    constant_nodes: List[torch.Tensor]
    folded_nodes: List[torch.Tensor] = field(default_factory=list)

    @property
    def widths(self) -> tuple:
        """Units of the compressed network: kept inputs, kept units of every hidden layer,
        outputs (``CompressionReport.architecture_after``)."""
        return ((int(self.kept_features.sum()),) + tuple(int(k.sum()) for k in self.kept_nodes)
                + (self.weights[-1].shape[0],))

    def kept_weight_masks(self) -> List[torch.Tensor]:
        """Per layer, the mask of kept weights of the compressed layer (its kept units' rows
        and the columns of the kept units before it), in the compressed layer's shape."""
        return [cut.slice(mask) for cut, mask in zip(self.kept_slices(), self.weight_masks, strict=True)]

    def kept_slices(self) -> List["KeptSlice"]:
        """:func:`kept_slices` of the compressed network, one per layer."""
        return list(kept_slices([m.shape for m in self.weight_masks], self.kept_features, self.kept_nodes))


def _between(bnn: SparseBNN):
    """Fixed modules before the first layer, between consecutive layers, after the last."""
    groups: List[List[nn.Module]] = [[]]
    for stage in bnn.architecture.stages:
        if stage.is_parametric:
            groups.append([])
        else:
            groups[-1].append(stage.module)
    return groups


#: the readouts of the active :func:`reused_readouts` block: ``{(id(layer), method): result}``
_READOUTS: ContextVar[Optional[dict]] = ContextVar("pyro_sparse_bnn_compress_readouts", default=None)


@contextmanager
def reused_readouts():
    """Within this block, :func:`compress` and :func:`analyse_structure` read every layer's
    posterior means and weight moments once and reuse them: they do not depend on the
    threshold, so compressing one network at many thresholds costs one readout. The guides
    must not change inside the block."""
    token = _READOUTS.set({})
    try:
        yield
    finally:
        _READOUTS.reset(token)


def _read(layer, method: str):
    """``getattr(layer, method)()``, once per layer inside a :func:`reused_readouts` block."""
    cache = _READOUTS.get()
    if cache is None:
        return getattr(layer, method)()
    key = (id(layer), method)
    if key not in cache:
        cache[key] = getattr(layer, method)()
    return cache[key]


def _masked_layers(bnn: SparseBNN, threshold):
    for layer, layer_threshold in zip(bnn.layers, layer_thresholds(threshold, len(bnn.layers)), strict=True):
        weight, bias = _read(layer, "posterior_mean")
        weight_mask, bias_mask = layer.keep_masks(layer_threshold)
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        elif bias_mask is not None:
            bias = bias * bias_mask
        yield weight * weight_mask, bias, weight_mask


def _units(tensor: torch.Tensor, num_units: int) -> torch.Tensor:
    """View dim 1 of ``tensor`` (a layer's input, or the in-dim of its weight) as
    ``num_units`` contiguous blocks: ``(dim0, num_units, block)``. A conv layer's input
    channel is one block of ``H * W`` entries, as is a channel feeding a linear layer through
    ``nn.Flatten``; a linear layer's node is a block of one."""
    return tensor.reshape(tensor.shape[0], num_units, -1)


class KeptSlice(NamedTuple):
    """The part of one layer that a smaller network keeps (see :func:`kept_slices`).

    :ivar int index: the layer's position among the parametric layers.
    :ivar rows: boolean mask over the layer's output units (dim 0 of its weight).
    :ivar columns: boolean mask over dim 1 of its weight: the entries that belong to
        ``inputs`` (an input unit is a block of entries after ``nn.Flatten``).
    :ivar inputs: boolean mask over the layer's input units: the rows kept in the layer
        before, or the kept inputs of the first layer.
    """

    index: int
    rows: torch.Tensor
    columns: torch.Tensor
    inputs: torch.Tensor

    def slice(self, weight: torch.Tensor) -> torch.Tensor:
        """The kept part ``weight[rows][:, columns]`` of a weight-shaped tensor (on its device)."""
        return weight[self.rows.to(weight.device)][:, self.columns.to(weight.device)]


def kept_slices(weight_shapes, kept_inputs: torch.Tensor, kept_rows) -> Iterator[KeptSlice]:
    """Walk the layers front to back, carrying the units kept in each layer over as the
    kept input units of the next, and yield what each layer keeps.

    :param weight_shapes: the shape of every layer's weight, in order (dim 0: output units;
        dim 1: input units, or for a linear layer after ``nn.Flatten`` the ``units * H * W``
        entries of its input channels).
    :param kept_inputs: boolean mask over the first layer's input units.
    :param kept_rows: boolean mask over the output units of every layer but the last (whose
        units are all kept); a longer sequence gives the last layer's too.
    """
    inputs = kept_inputs
    for i, shape in enumerate(weight_shapes):
        rows = kept_rows[i] if i < len(kept_rows) else torch.ones(shape[0], dtype=torch.bool, device=inputs.device)
        yield KeptSlice(i, rows, inputs.repeat_interleave(shape[1] // len(inputs)), inputs)
        inputs = rows


def _connectivity(mask: torch.Tensor, num_units: int) -> torch.Tensor:
    """``(out_units, num_units)``: whether row ``k`` has a kept weight from input unit ``c``."""
    return _units(mask, num_units).any(dim=-1)


def _only_units(values: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``values`` (a ``(batch, ...)`` layer input) with every unit outside ``units`` zeroed."""
    blocks = _units(values, len(units))
    return torch.where(units[None, :, None], blocks, torch.zeros_like(blocks)).reshape(values.shape)


#: largest number of output entries computed at once when checking which constant channels fold
_CHUNK_ELEMENTS = 1 << 22


def _fold_constants(spec, weight: torch.Tensor, constants: torch.Tensor, constant: torch.Tensor):
    """Which constant input units of layer ``spec`` fold exactly into its bias, and what they add.

    A unit folds when its contribution to the layer's pre-activations is the same at every
    output position up to float round-off (always for a linear layer).

    :param weight: the layer's masked weights. :param constants: ``(1, *in_shape)``, the
        layer's input where it is constant. :param constant: ``(num_units,)`` mask of the
        constant input units.
    :returns: ``(folded, contribution)``: mask of the units folded, ``(num_units,)``, and the
        sum of their contributions to the layer's pre-activations, ``(out_units,)``.
    """
    folded = torch.zeros_like(constant)
    contribution = torch.zeros(spec.out_units, dtype=weight.dtype, device=weight.device)
    if not constant.any():
        return folded, contribution
    if spec.kind == "linear":  # a fixed input vector: its contribution is a fixed vector
        return constant.clone(), spec.apply(_only_units(constants, constant), weight, None)[0]
    # conv: the contribution of each constant channel on its own, as a grouped convolution
    # (group g convolves channel index[g] with its slice W[:, index[g]]), in chunks
    index = constant.nonzero().flatten()
    maps = constants[:, index]                                   # (1, n, H, W)
    taps = weight[:, index].transpose(0, 1)                      # (n, out, kh, kw)
    m = spec.module
    chunk = max(1, _CHUNK_ELEMENTS // (spec.out_units * spec.out_positions))
    eps = torch.finfo(weight.dtype).eps
    for start in range(0, len(index), chunk):
        part = slice(start, start + chunk)
        n = len(index[part])

        def grouped(x, w, n=n):
            out = F.conv2d(x, w.reshape((-1, 1) + w.shape[2:]), None, m.stride, m.padding, m.dilation, n)
            return out.view((n, spec.out_units) + out.shape[2:])

        outputs = grouped(maps[:, part], taps[part])             # (n, out, H', W')
        magnitude = grouped(maps[:, part].abs(), taps[part].abs())
        spread = outputs.amax(dim=(-2, -1)) - outputs.amin(dim=(-2, -1))
        round_off = 4 * spec.fan_in * eps * magnitude.amax(dim=(-2, -1))
        uniform = (spread <= round_off).all(dim=1)
        folded[index[part][uniform]] = True
        contribution = contribution + outputs[uniform].mean(dim=(-2, -1)).sum(dim=0)
    return folded, contribution


@torch.no_grad()
def analyse_structure(bnn: SparseBNN, threshold: Optional[float] = None) -> Structure:
    """Which units and features the median-probability model keeps, and the folded biases.

    :param threshold: keep-rule threshold passed to every layer's prior (``None``: each
        prior's default, 0.5 for PIPs), or one per layer.
    """
    weights, biases, masks = map(list, zip(*_masked_layers(bnn, threshold), strict=True))
    specs = [layer.spec for layer in bnn.layers]
    between = _between(bnn)
    num_layers = len(weights)

    # forward: which units vary with the input; the values of the constant ones (a map per
    # channel); which constant units fold exactly into the next layer's bias
    variable_in = torch.ones(specs[0].in_units, dtype=torch.bool, device=weights[0].device)
    constants = torch.zeros((1,) + tuple(specs[0].in_shape), dtype=weights[0].dtype, device=weights[0].device)
    variable: List[torch.Tensor] = []
    folded: List[torch.Tensor] = []
    for i, spec in enumerate(specs):
        constant_in, bias = ~variable_in, biases[i]
        if i > 0:
            fold, contribution = _fold_constants(spec, weights[i], constants, constant_in)
            biases[i] = bias + contribution
            folded.append(fold)
        if i == num_layers - 1:
            break
        # the layer's output where it does not depend on the input (elsewhere: anything)
        activation = spec.apply(_only_units(constants, constant_in), weights[i], bias)
        for module in between[i + 1]:
            activation = module(activation)
        constants = activation
        variable_in = _connectivity(masks[i], len(variable_in))[:, variable_in].any(dim=1)
        variable.append(variable_in)

    # backward: a hidden unit is kept iff it is needed (varies, or is a constant that could
    # not be folded) and has a kept edge to a kept unit
    kept_rows = torch.ones(specs[-1].out_units, dtype=torch.bool, device=weights[-1].device)
    kept_nodes: List[torch.Tensor] = [None] * (num_layers - 1)
    for i in reversed(range(num_layers - 1)):
        needed = variable[i] | ~folded[i]
        kept_rows = needed & _connectivity(masks[i + 1], specs[i].out_units)[kept_rows].any(dim=0)
        kept_nodes[i] = kept_rows
    kept_features = _connectivity(masks[0], specs[0].in_units)[kept_rows].any(dim=0)
    if not kept_features.any():
        # the output depends on no input: it is the last layer's (folded) bias
        kept_nodes = [torch.zeros_like(k) for k in kept_nodes]
    return Structure(
        weights=weights, biases=biases, weight_masks=masks, kept_features=kept_features,
        kept_nodes=kept_nodes, constant_nodes=[~v for v in variable], folded_nodes=folded,
    )


def layer_module(spec, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Module:
    """A deterministic ``nn.Linear`` or ``nn.Conv2d`` sized after ``weight`` and holding
    copies of ``weight`` and ``bias``, in their dtype and on their device. Building it draws
    no random numbers (no initialisation that is overwritten anyway).

    :param spec: the :class:`~pyro_sparse_bnn.core.priors.base.LayerSpec` of the layer it replaces
        (its kind; a conv layer's kernel size, stride, padding and dilation).
    :param weight: ``(out_features, in_features)`` or ``(out_channels, in_channels, kh, kw)``.
    :param bias: ``(out_units,)``, or ``None`` for a layer without bias.
    """
    options = dict(bias=bias is not None, dtype=weight.dtype, device=weight.device)
    if spec.kind == "linear":
        layer = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], **options)
    else:
        m = spec.module
        layer = nn.utils.skip_init(nn.Conv2d, weight.shape[1], weight.shape[0], m.kernel_size, stride=m.stride,
                                   padding=m.padding, dilation=m.dilation, **options)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def assemble(stages, layers: Sequence[nn.Module], select: Optional[nn.Module] = None) -> nn.Sequential:
    """An ``nn.Sequential`` of ``stages`` (an :class:`~pyro_sparse_bnn.core.architecture.Architecture`'s)
    with parametric layer ``i`` replaced by ``layers[i]``, copies of the fixed modules, and
    ``select`` (e.g. a :class:`SelectInputs`), if given, just before the first layer."""
    modules: List[nn.Module] = []
    for stage in stages:
        if not stage.is_parametric:
            modules.append(copy.deepcopy(stage.module))
            continue
        if stage.layer_index == 0 and select is not None:
            modules.append(select)
        modules.append(layers[stage.layer_index])
    return nn.Sequential(*modules)


@torch.no_grad()
def masked_posterior_mean(bnn: SparseBNN, threshold: Optional[float] = None) -> nn.Sequential:
    """The reference network: the original architecture with posterior-mean weights and the
    weights outside the median-probability model set to zero (nothing removed or folded)."""
    check_bnn(bnn, "masked_posterior_mean", fitted=True)
    threshold = check_threshold(threshold, bnn.priors)
    layers = [layer_module(layer.spec, weight, bias)
              for layer, (weight, bias, _) in zip(bnn.layers, _masked_layers(bnn, threshold), strict=True)]
    return assemble(bnn.architecture.stages, layers)


@dataclass
class CompressionReport:
    """Sizes of the network before and after compression (per example for FLOPs).

    FLOPs count a multiply and an add per weight and use of it: ``2 * in * out`` per linear
    layer, ``2 * out_ch * H_out * W_out * in_ch * kh * kw`` per conv layer (biases,
    activations and pooling are not counted). ``nonzero`` counts exclude the dropped weights
    that remain (as zeros) inside kept units and count every bias of the compressed network.
    Widths (``architecture_before`` / ``after``) count the units of the first layer's input
    and of every layer: nodes of linear layers, channels of conv layers.

    ``threshold`` is the PIP threshold applied to every layer (``None``: each prior's keep
    rule), ``threshold_reason`` says which rule that is and why it was chosen, and
    ``warnings`` holds the message of every
    :class:`~pyro_sparse_bnn.core.errors.DegenerateNetworkWarning` that ``compress`` emitted
    (empty for a network that reads its input).
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
    threshold_reason: str = ""
    warnings: List[str] = field(default_factory=list)
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
        weights of the structurally pruned network (``None`` without weight moments, ``inf``
        when no weight is kept)."""
        return None if self.precision is None else compression_rates(self.precision)[0]

    @property
    def bit_compression(self) -> Optional[float]:
        """``32 * weights before / bits of the kept weights`` at each layer's precision
        (``None`` for a prior without weight moments, ``inf`` when no weight is kept)."""
        return None if self.precision is None else compression_rates(self.precision)[1]

    @staticmethod
    def format_architecture(widths) -> str:
        """Widths as a string, e.g. ``(784, 300, 100, 10)`` -> ``"784-300-100-10"``."""
        return "-".join(str(w) for w in widths)

    def as_dict(self) -> dict:
        """JSON-serialisable summary."""
        return {
            "architecture_before": self.format_architecture(self.architecture_before),
            "architecture_after": self.format_architecture(self.architecture_after),
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
            "threshold_reason": self.threshold_reason,
            "warnings": list(self.warnings),
            **self.extra,
        }

    def __str__(self):
        rows = [
            ("architecture", self.format_architecture(self.architecture_before), self.format_architecture(self.architecture_after)),
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
        if self.precision is not None and math.isinf(self.weight_compression):
            lines.append("weights: none kept")
        elif self.precision is not None:
            lines.append("bits per weight (sign + exponent + significand): " + ", ".join(
                f"{p.layer} 1+{p.exponent_bits}+{p.significand_bits}" for p in self.precision))
            lines.append(
                f"weights: {self.weight_compression:.1f}x architecture compression, "
                f"{self.bit_compression:.1f}x bit compression"
                + (" (weights rounded to these precisions)" if self.rounded else "")
            )
        if self.threshold_reason:
            lines.append(f"threshold: {self.threshold_reason}")
        lines.extend(f"warning: {message}" for message in self.warnings)
        return "\n".join(lines)


@dataclass(frozen=True)
class ThresholdChoice:
    """A keep-rule threshold and the reason it was chosen, as returned by
    :meth:`Frontier.select <pyro_sparse_bnn.analysis.frontier.Frontier.select>`.
    ``compress(bnn, threshold=choice)`` applies ``choice.threshold`` and records
    ``choice.reason`` as ``report.threshold_reason``.

    :ivar threshold: PIP threshold for every layer, a tuple of one per layer, or ``None`` for
        each prior's keep rule.
    :ivar str reason: why this threshold, in words.
    :ivar architecture: the compressed architecture the choice was made for, e.g.
        ``"313-107-32-10"`` (``None``: not checked). ``compress`` raises
        :class:`~pyro_sparse_bnn.core.errors.InputError` when the network gives another one: the
        choice was made on a different network, or before it was refitted.
    """

    threshold: Union[None, float, Tuple[Optional[float], ...]]
    reason: str
    architecture: Optional[str] = None


def _threshold_text(t: float) -> str:
    """``t`` with 4 significant digits, or as many more as it takes to show it exactly (up to
    6) and never to print a value strictly between 0 and 1 as 0 or 1."""
    for digits in range(4, 18):
        text = f"{t:.{digits}g}"
        if float(text) == t or (digits >= 6 and 0 < float(text) < 1) or not 0 < t < 1:
            return text
    return repr(t)


def log_alpha_threshold(threshold):
    """The ``t`` of the rule ``log alpha < t`` that equals ``PIP > threshold`` (Bayesian
    Compression's), per entry for a tuple; NaN for ``None`` or a threshold outside (0, 1)."""
    if isinstance(threshold, tuple):
        return tuple(map(log_alpha_threshold, threshold))
    if threshold is None or not 0 < threshold < 1:
        return math.nan
    return math.log1p(-threshold) - math.log(threshold)


def _pip_text(layers, threshold: float) -> str:
    """``PIP > t``, with the equivalent rule of the priors of ``layers`` that have their own."""
    text = f"PIP > {_threshold_text(threshold)}"
    if 0 < threshold < 1 and any(isinstance(layer, GroupScaleLayer) for layer in layers):
        text += f" (log alpha < {log_alpha_threshold(threshold):.3g})"
    if 0 <= threshold < 1 and any(isinstance(layer, SelfCompressingLayer) for layer in layers):
        text += f" (SNR > {math.sqrt(threshold / (1 - threshold)):.3g})"
    return text


def describe_keep_rule(bnn: SparseBNN, threshold: Optional[float] = None) -> str:
    """The keep rule that ``compress(bnn, threshold)`` applies, in words: ``"PIP > 0.5"``,
    with the equivalent ``log alpha < t`` of Bayesian Compression layers and ``SNR > s`` of
    self-compressing ones; for ``threshold=None`` each prior's keep rule, per layer when the
    layers' rules differ."""
    if threshold is not None and not isinstance(threshold, tuple):
        return _pip_text(bnn.layers, float(threshold))
    if isinstance(threshold, tuple):
        rules = [_pip_text([layer], layer.default_threshold if t is None else t)
                 for layer, t in zip(bnn.layers, threshold, strict=True)]
        return "per-layer rule: " + ", ".join(
            f"{layer.spec.name} {rule}" for layer, rule in zip(bnn.layers, rules, strict=True))
    rules = [_pip_text([layer], layer.default_threshold) for layer in bnn.layers]
    if len(set(rules)) == 1:
        return f"the prior's keep rule, {rules[0]}"
    return "each layer's keep rule: " + ", ".join(
        f"{layer.spec.name} {rule}" for layer, rule in zip(bnn.layers, rules, strict=True))


def _degeneracy(bnn: SparseBNN, structure: Structure, rule: str) -> List[str]:
    """The message of a :class:`DegenerateNetworkWarning` for a kept network that reads no
    input (empty for a network whose output depends on the input)."""
    if structure.kept_features.any():
        return []
    names = [layer.spec.name for layer in bnn.layers]
    # the first layer none of whose units varies with the input cuts the input off
    cut = next((i for i, constant in enumerate(structure.constant_nodes) if constant.all()), len(names) - 1)
    if cut == 0:
        where = ("the output layer" if len(names) == 1 else "the first layer") + f" {names[0]!r} keeps no weight from any input"
    elif cut == len(names) - 1:
        where = f"the output layer {names[cut]!r} keeps no weight from a hidden unit that depends on the input"
    else:
        where = f"no unit of hidden layer {names[cut]!r} keeps a weight from a unit that depends on the input"
    hidden = "" if len(names) == 1 else ", no hidden unit"
    return [
        f"with {rule}, the compressed network does not depend on its input: {where}, so it keeps no "
        f"input feature{hidden}, and its output is the same constant for every example. Use a lower "
        f"threshold (pyro_sparse_bnn.frontier(bnn, x_val, y_val) shows the validation metric and "
        f"size at every threshold), or refit with a prior that prunes less (e.g. a larger "
        f"prior_inclusion) or for longer."
    ]


class Compressed(NamedTuple):
    """Result of :func:`compress`: ``module, report = compress(bnn)``."""

    module: nn.Sequential
    report: CompressionReport


def _precisions(bnn: SparseBNN, structure: Structure) -> Optional[List[LayerPrecision]]:
    """Bit precision of every layer's structurally kept weights (``None`` without moments)."""
    precisions = []
    for layer, cut in zip(bnn.layers, structure.kept_slices(), strict=True):
        try:
            mean, var = (cut.slice(layer.spec.split(m)[0]) for m in _read(layer, "weight_moments"))
        except NotImplementedError:
            return None
        mask = cut.slice(structure.weight_masks[cut.index])
        precisions.append(layer_precision(
            layer.spec.name, mean[mask], var[mask],
            weights_before=layer.spec.weight_shape.numel(), kept_weights=mask.numel(),
        ))
    return precisions


@torch.no_grad()
def compress(bnn: SparseBNN, threshold: Union[float, ThresholdChoice, None] = None, bits: bool = False) -> Compressed:
    """Build the compressed deterministic network of a fitted sparse BNN.

    :param bnn: a fitted :class:`~pyro_sparse_bnn.core.network.SparseBNN`.
    :param threshold: keep-rule threshold for every layer's prior (``None``: each prior's
        default; a weight or group is kept when its PIP exceeds it), a sequence of one
        threshold per parametric layer (an entry ``None`` keeps that layer's default), or the
        :class:`ThresholdChoice` of ``pyro_sparse_bnn.frontier(bnn, x_val, y_val).select(tolerance)``
        (the smallest network within ``tolerance`` of the posterior on validation data) or
        of :func:`~pyro_sparse_bnn.analysis.frontier.layerwise_frontier`.
    :param bool bits: round every kept weight to its layer's significand precision
        (:mod:`pyro_sparse_bnn.analysis.bits`); the report carries the precisions and the bit
        compression rate whether or not the weights are rounded.
    :returns: :class:`Compressed` ``(module, report)``; ``module`` is an ``nn.Sequential``
        that takes the full input ``(batch, *input_shape)`` and returns
        ``(batch, outputs)`` (see the module docstring). ``report.threshold_reason`` says
        which rule was applied and why.
    :raises NotFittedError: if the network has not been fitted.
    :raises InputError: for a :class:`ThresholdChoice` made for a network with another
        compressed architecture.
    :warns DegenerateNetworkWarning: when the compressed network does not depend on its input
        (the message, also in ``report.warnings``, names the layer that cuts it off).
    """
    check_bnn(bnn, "compress", fitted=True)
    choice = threshold if isinstance(threshold, ThresholdChoice) else None
    threshold = check_threshold(threshold if choice is None else choice.threshold, bnn.priors)
    bits = check_bool("bits", bits)
    structure = analyse_structure(bnn, threshold)
    rule = describe_keep_rule(bnn, threshold)
    architecture = CompressionReport.format_architecture(structure.widths)
    if choice is not None and choice.architecture is not None and choice.architecture != architecture:
        raise InputError(
            f"compress: the threshold choice ({choice.reason}) was made for a network that compresses "
            f"to {choice.architecture}, but this one compresses to {architecture} at {rule}; it was "
            f"chosen on another network or before this one was refitted: compute the frontier again"
        )
    problems = _degeneracy(bnn, structure, rule)
    specs = [layer.spec for layer in bnn.layers]
    kept_features = structure.kept_features.nonzero().flatten()
    precision = _precisions(bnn, structure)
    if bits and precision is None:
        raise NotImplementedError(
            f"compress(bits=True): {', '.join(sorted({type(p).__name__ for p in bnn.priors}))} has no posterior weight variances to "
            f"set the bit precision from"
        )

    kept_weights, flops_after, nonzero_flops_after = 0, 0, 0
    if len(kept_features) == 0:
        # no input reaches the output: no zero-width layers, just the constant
        module = nn.Sequential(ConstantOutput(structure.biases[-1]))
        params_after = nonzero_params_after = structure.biases[-1].numel()
    else:
        layers = []
        for spec, cut in zip(specs, structure.kept_slices(), strict=True):
            weight = cut.slice(structure.weights[cut.index])
            if bits:
                weight = round_to_precision(weight, precision[cut.index].significand_bits)
            layers.append(layer_module(spec, weight, structure.biases[cut.index][cut.rows]))
            kept = int(cut.slice(structure.weight_masks[cut.index]).sum())
            kept_weights += kept
            flops_after += 2 * weight.numel() * spec.out_positions
            nonzero_flops_after += 2 * kept * spec.out_positions
        select = SelectInputs(kept_features, bnn.num_inputs, dim=1 if specs[0].kind == "conv2d" else -1)
        module = assemble(bnn.architecture.stages, layers, select)
        params_after = sum(p.numel() for m in layers for p in m.parameters())
        nonzero_params_after = kept_weights + sum(m.bias.numel() for m in layers)

    before = bnn.architecture.widths
    after = structure.widths
    report = CompressionReport(
        architecture_before=before,
        architecture_after=after,
        kept_features=kept_features.cpu(),
        kept_nodes={
            layer.spec.name: kept.nonzero().flatten().cpu()
            for layer, kept in zip(bnn.layers[:-1], structure.kept_nodes, strict=True)
        },
        params_before=sum(spec.num_params for spec in specs),
        params_after=params_after,
        nonzero_params_after=nonzero_params_after,
        flops_before=sum(2 * spec.multiply_adds for spec in specs),
        flops_after=flops_after,
        nonzero_flops_after=nonzero_flops_after,
        threshold=threshold,
        precision=precision,
        rounded=bool(bits),
        threshold_reason=rule if choice is None else f"{rule}: {choice.reason}",
        warnings=problems,
    )
    for message in problems:
        warnings.warn(message, DegenerateNetworkWarning, stacklevel=3)  # past torch.no_grad's wrapper
    return Compressed(module, report)
