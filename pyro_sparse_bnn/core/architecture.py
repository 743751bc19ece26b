"""Reading a user's ``nn.Sequential`` into parametric layers and the fixed modules between them.

The wrapper accepts an ordinary ``nn.Sequential`` (nested ones are flattened) built from

* parametric layers: ``nn.Linear`` and ``nn.Conv2d`` (``groups=1``, zero padding, any
  stride, padding and dilation); the last parametric layer (the output layer) is an
  ``nn.Linear``;
* parameter-free fixed modules: elementwise activations (:data:`ELEMENTWISE_MODULES`),
  ``nn.MaxPool2d`` and ``nn.AvgPool2d`` (on ``(batch, channels, height, width)`` tensors),
  ``nn.Flatten()`` (``start_dim=1``: a conv layer's output flattens channel-major, so
  channel ``c`` becomes a contiguous block of ``H * W`` features) and ``nn.Unflatten`` on
  dimension 1 before the first parametric layer (``nn.Unflatten(1, (1, 28, 28))`` lets a
  conv net take flat ``(batch, 784)`` inputs).

Everything else gets an :class:`~pyro_sparse_bnn.core.errors.UnsupportedLayerError` that names the
module and its path. These modules keep *units* apart -- a linear layer's node or a conv
layer's channel stays one unit (or one contiguous block of features after ``Flatten``) up to
the next parametric layer -- which is what node PIPs and ``compress`` rely on.

The shape of one example (``input_shape``, without the batch dimension) is inferred for
networks that start with an ``nn.Linear`` (``(in_features,)``) or with an ``nn.Unflatten``
(``(prod(unflattened_size),)``); a network that starts with a conv layer needs it given,
e.g. ``input_shape=(1, 28, 28)``. The shapes between the modules are worked out by running
the network once on the ``meta`` device (no memory, no computation), and every mismatch gets
a clear :class:`~pyro_sparse_bnn.core.errors.HyperparameterError` (an ``input_shape`` that does
not fit the network) or :class:`~pyro_sparse_bnn.core.errors.UnsupportedLayerError` (layers that
do not fit each other).
"""

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import HyperparameterError, UnsupportedLayerError
from .priors.base import LayerSpec, NetworkInfo

__all__ = [
    "Stage",
    "Architecture",
    "ELEMENTWISE_MODULES",
    "POOLING_MODULES",
    "parse_sequential",
    "check_input_shape",
]

#: Parameter-free modules that act elementwise (so node ``j`` stays node ``j`` through them).
ELEMENTWISE_MODULES = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink, nn.LogSigmoid,
)

#: Pooling modules: they act on every channel of a ``(batch, C, H, W)`` tensor separately.
POOLING_MODULES = (nn.MaxPool2d, nn.AvgPool2d)

_SUPPORTED = (
    "nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Unflatten and "
    "parameter-free elementwise activations"
)

_HINTS = {
    nn.Softmax: "remove it: the categorical likelihood takes logits",
    nn.LogSoftmax: "remove it: the categorical likelihood takes logits",
    nn.Dropout: "remove it: the posterior over weights already expresses uncertainty",
    nn.Dropout2d: "remove it: the posterior over weights already expresses uncertainty",
    nn.BatchNorm1d: "batch normalisation is not supported; standardise the inputs instead",
    nn.BatchNorm2d: "batch normalisation is not supported; standardise the inputs instead",
    nn.PReLU: "PReLU has parameters; use LeakyReLU with a fixed slope",
}


@dataclass
class Stage:
    """One module of the flattened network.

    :ivar str path: the module's path in the user's network (``"0"``, ``"features.2"``).
    :ivar nn.Module module: the module itself.
    :ivar layer_index: index among parametric layers, or ``None`` for fixed modules.
    :ivar in_shape: shape of one example's input to the module (no batch dimension).
    :ivar out_shape: shape of one example's output.
    """

    path: str
    module: nn.Module
    layer_index: Optional[int] = None
    in_shape: Optional[Tuple[int, ...]] = None
    out_shape: Optional[Tuple[int, ...]] = None

    @property
    def is_parametric(self) -> bool:
        return self.layer_index is not None

    @property
    def label(self) -> str:
        """``net.<path> = <module>`` (first line of the module's repr), for messages."""
        return f"net.{self.path} = {_short_repr(self.module)}"


@dataclass
class Architecture:
    """The flattened network: its stages, the specs of its parametric layers and the shape
    ``input_shape`` of one input example (no batch dimension)."""

    stages: List[Stage]
    specs: List[LayerSpec] = field(default_factory=list)
    input_shape: Tuple[int, ...] = ()

    @property
    def num_inputs(self) -> int:
        """Input units of the first layer: its input features (linear) or channels (conv)."""
        return self.specs[0].in_units

    @property
    def num_outputs(self) -> int:
        """Output dimension of the last layer."""
        return self.specs[-1].out_units

    @property
    def widths(self) -> Tuple[int, ...]:
        """``(inputs, hidden_1, ..., outputs)`` in units, e.g. ``(64, 32, 16, 10)``; a conv
        layer counts its channels (LeNet-5: ``(1, 20, 50, 500, 10)``)."""
        return (self.num_inputs,) + tuple(s.out_units for s in self.specs)

    @property
    def has_conv(self) -> bool:
        """Whether any parametric layer is convolutional."""
        return any(s.kind == "conv2d" for s in self.specs)

    def network_info(self, num_data: Optional[int]) -> NetworkInfo:
        hidden = [s.out_units for s in self.specs[:-1]]
        return NetworkInfo(
            num_weights=sum(s.num_params for s in self.specs),
            num_hidden_layers=len(hidden),
            hidden_width=max(hidden, default=0),
            num_inputs=math.prod(self.input_shape),
            num_data=num_data,
        )


def _short_repr(module: nn.Module) -> str:
    text = repr(module)
    return text.splitlines()[0] + "...)" if "\n" in text else text


def _flatten(module: nn.Module, prefix: str):
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(child) is nn.Sequential:
            yield from _flatten(child, path)
        else:
            yield path, child


def _unsupported(path: str, module: nn.Module, why: str = "") -> UnsupportedLayerError:
    """The error for an unsupported module; ``why`` explains the problem with a module of a
    supported type (otherwise the message lists the supported modules)."""
    label = f"unsupported layer net.{path} = {_short_repr(module)}"
    if why:
        return UnsupportedLayerError(f"{label}: {why}")
    hint = next((h for t, h in _HINTS.items() if isinstance(module, t)), "")
    if not hint and any(True for _ in module.children()):
        hint = ("a custom module (such as a residual block) is not supported: write the "
                "network as one flat nn.Sequential of supported modules")
    message = f"{label}: supported are {_SUPPORTED}"
    return UnsupportedLayerError(message + (f" ({hint})" if hint else ""))


def _check_module(path: str, module: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` for a module of a supported type used in an
    unsupported way (conv groups, padding modes, flatten dimensions, pooling indices)."""
    kind = type(module)
    if kind is nn.Conv2d:
        if module.groups != 1:
            raise _unsupported(path, module, f"groups={module.groups}: only groups=1 convolutions are supported")
        if module.padding_mode != "zeros":
            raise _unsupported(
                path, module, f"padding_mode={module.padding_mode!r}: only zero padding is supported")
    elif kind is nn.Flatten:
        if (module.start_dim, module.end_dim) != (1, -1):
            raise _unsupported(path, module, "only nn.Flatten() with start_dim=1, end_dim=-1 is supported")
    elif kind is nn.MaxPool2d and module.return_indices:
        raise _unsupported(path, module, "return_indices=True is not supported")


def check_input_shape(input_shape) -> Optional[Tuple[int, ...]]:
    """``input_shape`` as a tuple of positive ints (an int means ``(int,)``), or ``None``.

    :raises HyperparameterError: for anything else.
    """
    if input_shape is None:
        return None
    values = (input_shape,) if isinstance(input_shape, int) else input_shape
    try:
        shape = tuple(values)
        ok = bool(shape) and all(
            not isinstance(v, bool) and int(v) == v and v >= 1 for v in shape
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise HyperparameterError(
            f"input_shape must be a tuple of positive integers, the shape of one example without "
            f"the batch dimension (e.g. (1, 28, 28) for a conv net), got {input_shape!r}"
        )
    return tuple(int(v) for v in shape)


def _infer_input_shape(stages: Sequence[Stage]) -> Tuple[int, ...]:
    """The input shape implied by the leading modules: ``(in_features,)`` before a first
    ``nn.Linear``, ``(prod(unflattened_size),)`` before a leading ``nn.Unflatten``."""
    for stage in stages:
        module = stage.module
        if type(module) is nn.Linear:
            return (module.in_features,)
        if type(module) is nn.Unflatten:
            return (math.prod(module.unflattened_size),)
        if type(module) is nn.Conv2d or isinstance(module, POOLING_MODULES):
            raise HyperparameterError(
                f"the network starts with {stage.label}, which takes images: pass "
                f"input_shape=(channels, height, width) to SparseBNN (e.g. input_shape="
                f"({getattr(module, 'in_channels', 1)}, 28, 28)), or start the network with "
                f"nn.Unflatten(1, (channels, height, width)) to feed it flat inputs"
            )
    raise UnsupportedLayerError("the network has no nn.Linear layer to put a prior on")


def _shape(x: torch.Tensor) -> str:
    return "(batch, " + ", ".join(str(d) for d in x.shape[1:]) + ")"


class _ShapeTracer:
    """Runs the stages on a ``meta`` tensor, recording shapes and explaining mismatches."""

    def __init__(self, stages: List[Stage], input_shape: Tuple[int, ...], given: bool):
        self.stages = stages
        self.input_shape = input_shape
        self.given = given
        self.previous: Optional[Stage] = None  # last parametric stage seen
        self.between: List[Stage] = []          # fixed stages since then

    def _input_error(self, message: str) -> HyperparameterError:
        origin = "given" if self.given else "inferred from the first modules"
        return HyperparameterError(f"{message} (input_shape={self.input_shape}, {origin})")

    def run(self) -> None:
        x = torch.empty((1,) + self.input_shape, device="meta")
        for stage in self.stages:
            stage.in_shape = tuple(x.shape[1:])
            module = stage.module
            if type(module) is nn.Linear:
                x = self._linear(stage, x)
            elif type(module) is nn.Conv2d:
                x = self._conv(stage, x)
            else:
                x = self._fixed(stage, x)
            stage.out_shape = tuple(x.shape[1:])
            if stage.is_parametric:
                self.previous, self.between = stage, []
            else:
                self.between.append(stage)

    def _linear(self, stage: Stage, x: torch.Tensor) -> torch.Tensor:
        module = stage.module
        if x.dim() != 2:
            if self.previous is None:
                raise self._input_error(
                    f"{stage.label} needs (batch, {module.in_features}) inputs but gets {_shape(x)}")
            raise UnsupportedLayerError(
                f"{stage.label} needs (batch, features) inputs but the modules before it give "
                f"{_shape(x)}: put nn.Flatten() before it"
            )
        if x.shape[1] != module.in_features:
            if self.previous is None:
                raise self._input_error(
                    f"{stage.label} expects {module.in_features} input features but gets {x.shape[1]}")
            if self.previous.module.__class__ is nn.Linear:
                raise UnsupportedLayerError(
                    f"net.{self.previous.path} has {self.previous.module.out_features} outputs but "
                    f"net.{stage.path} expects {module.in_features} inputs"
                )
            flatten = next(s for s in reversed(self.between) if type(s.module) is nn.Flatten)
            blocks = " x ".join(str(d) for d in flatten.in_shape)
            raise self._input_error(
                f"{stage.label} expects {module.in_features} input features but gets "
                f"{x.shape[1]} = {blocks} from net.{flatten.path} = nn.Flatten(): change its "
                f"in_features or pass the input_shape the network was designed for"
            )
        return x.new_empty((x.shape[0], module.out_features))

    def _conv(self, stage: Stage, x: torch.Tensor) -> torch.Tensor:
        module = stage.module
        if x.dim() != 4:
            message = (f"{stage.label} needs (batch, channels, height, width) inputs but "
                       f"{'gets' if self.previous is None else 'the modules before it give'} {_shape(x)}")
            if self.previous is None:
                raise self._input_error(
                    message + "; pass input_shape=(channels, height, width) or start the network "
                              "with nn.Unflatten(1, (channels, height, width))")
            raise UnsupportedLayerError(message)
        if x.shape[1] != module.in_channels:
            if self.previous is None:
                raise self._input_error(
                    f"{stage.label} expects {module.in_channels} input channels but gets {x.shape[1]}")
            raise UnsupportedLayerError(
                f"net.{self.previous.path} has {x.shape[1]} output channels but net.{stage.path} "
                f"expects {module.in_channels}"
            )
        weight = torch.empty(module.weight.shape, device="meta")
        try:
            return F.conv2d(x, weight, None, module.stride, module.padding, module.dilation, 1)
        except RuntimeError as exc:
            raise self._input_error(f"{stage.label} cannot take inputs of shape {_shape(x)}: {exc}") from None

    def _fixed(self, stage: Stage, x: torch.Tensor) -> torch.Tensor:
        module = stage.module
        if type(module) is nn.Unflatten:
            if self.previous is not None:
                raise _unsupported(stage.path, module,
                                   "nn.Unflatten is supported only before the first parametric layer")
            if x.dim() != 2 or module.dim not in (1, -1):
                raise self._input_error(
                    f"{stage.label} must unflatten dimension 1 of (batch, features) inputs, "
                    f"but gets {_shape(x)}")
        if isinstance(module, POOLING_MODULES) and x.dim() != 4:
            message = f"{stage.label} needs (batch, channels, height, width) inputs but gets {_shape(x)}"
            if self.previous is None:
                raise self._input_error(message)
            raise UnsupportedLayerError(message + ": pooling is supported between conv layers only")
        try:
            return module(x)
        except (RuntimeError, ValueError) as exc:
            raise self._input_error(f"{stage.label} cannot take inputs of shape {_shape(x)}: {exc}") from None


def parse_sequential(net: nn.Module, input_shape=None) -> Architecture:
    """Flatten ``net`` into stages and build a :class:`LayerSpec` per parametric layer.

    :param net: an ``nn.Sequential`` of supported modules (see the module docstring).
    :param input_shape: shape of one example, without the batch dimension; ``None`` infers
        it for networks that start with ``nn.Linear`` or ``nn.Unflatten``.
    :raises UnsupportedLayerError: if ``net`` is not an ``nn.Sequential``, has no
        parametric layer, does not end with an ``nn.Linear``, has a module that is not
        supported, or has layers whose sizes do not fit each other.
    :raises HyperparameterError: if ``input_shape`` is invalid, missing for a network that
        starts with a conv layer, or does not fit the network.
    """
    if not isinstance(net, nn.Sequential):
        raise UnsupportedLayerError(
            f"SparseBNN needs an nn.Sequential (the order of its layers defines the network), "
            f"got {type(net).__name__}"
        )
    given = check_input_shape(input_shape)
    stages: List[Stage] = []
    num_layers = 0
    for path, module in _flatten(net, ""):
        if type(module) in (nn.Linear, nn.Conv2d):
            _check_module(path, module)
            stages.append(Stage(path, module, layer_index=num_layers))
            num_layers += 1
        elif (isinstance(module, ELEMENTWISE_MODULES) or type(module) in (nn.Flatten, nn.Unflatten)
              or type(module) in POOLING_MODULES):
            if any(p.numel() for p in module.parameters()):
                raise _unsupported(path, module, f"it has trainable parameters; supported are {_SUPPORTED}")
            _check_module(path, module)
            stages.append(Stage(path, module))
        else:
            raise _unsupported(path, module)
    parametric = [s for s in stages if s.is_parametric]
    if not parametric:
        raise UnsupportedLayerError("the network has no nn.Linear layer to put a prior on")
    if type(parametric[-1].module) is not nn.Linear:
        raise UnsupportedLayerError(
            f"the last parametric layer {parametric[-1].label} must be an nn.Linear output layer "
            f"(add nn.Flatten() and an nn.Linear after it)"
        )
    for stage in stages[stages.index(parametric[-1]) + 1:]:
        if not isinstance(stage.module, ELEMENTWISE_MODULES) and type(stage.module) is not nn.Flatten:
            raise _unsupported(stage.path, stage.module,
                               "only elementwise modules may follow the output layer")
    shape = given if given is not None else _infer_input_shape(stages)
    _ShapeTracer(stages, shape, given is not None).run()
    specs = [
        LayerSpec(
            name=f"net.{stage.path}",
            index=stage.layer_index,
            kind="linear" if type(stage.module) is nn.Linear else "conv2d",
            weight_shape=stage.module.weight.shape,
            has_bias=stage.module.bias is not None,
            is_output=stage is parametric[-1],
            module=stage.module,
            in_shape=stage.in_shape,
            out_shape=stage.out_shape,
        )
        for stage in parametric
    ]
    return Architecture(stages=stages, specs=specs, input_shape=shape)
