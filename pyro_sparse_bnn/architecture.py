"""Reading a user's ``nn.Sequential`` into parametric layers and the fixed modules between them.

The wrapper accepts an ordinary ``nn.Sequential`` (nested ones are flattened) of
``nn.Linear`` layers and parameter-free elementwise activations. Everything else gets an
:class:`~pyro_sparse_bnn.errors.UnsupportedLayerError` that names the module and its
position.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from torch import nn

from .errors import UnsupportedLayerError
from .priors.base import LayerSpec, NetworkInfo

__all__ = ["Stage", "Architecture", "ELEMENTWISE_MODULES", "parse_sequential"]

#: Parameter-free modules that act elementwise (so node ``j`` stays node ``j`` through them).
ELEMENTWISE_MODULES = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Tanhshrink, nn.LogSigmoid,
)

_HINTS = {
    nn.Softmax: "remove it: the categorical likelihood takes logits",
    nn.LogSoftmax: "remove it: the categorical likelihood takes logits",
    nn.Dropout: "remove it: the posterior over weights already expresses uncertainty",
    nn.BatchNorm1d: "batch normalisation is not supported; standardise the inputs instead",
    nn.PReLU: "PReLU has parameters; use LeakyReLU with a fixed slope",
}


@dataclass
class Stage:
    """One module of the flattened network.

    :ivar str path: the module's path in the user's network (``"0"``, ``"features.2"``).
    :ivar nn.Module module: the module itself.
    :ivar layer_index: index among parametric layers, or ``None`` for fixed modules.
    """

    path: str
    module: nn.Module
    layer_index: Optional[int] = None

    @property
    def is_parametric(self) -> bool:
        return self.layer_index is not None


@dataclass
class Architecture:
    """The flattened network: its stages and the specs of its parametric layers."""

    stages: List[Stage]
    specs: List[LayerSpec] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        """Input dimension of the first layer."""
        return self.specs[0].in_units

    @property
    def num_outputs(self) -> int:
        """Output dimension of the last layer."""
        return self.specs[-1].out_units

    @property
    def widths(self) -> Tuple[int, ...]:
        """``(inputs, hidden_1, ..., outputs)``, e.g. ``(64, 32, 16, 10)``."""
        return (self.num_inputs,) + tuple(s.out_units for s in self.specs)

    def network_info(self, num_data: Optional[int]) -> NetworkInfo:
        hidden = [s.out_units for s in self.specs[:-1]]
        return NetworkInfo(
            num_weights=sum(s.num_params for s in self.specs),
            num_hidden_layers=len(hidden),
            hidden_width=max(hidden, default=0),
            num_inputs=self.num_inputs,
            num_data=num_data,
        )


def _flatten(module: nn.Module, prefix: str):
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(child) is nn.Sequential:
            yield from _flatten(child, path)
        else:
            yield path, child


def _unsupported(path: str, module: nn.Module, why: str = "") -> UnsupportedLayerError:
    hint = why or next((h for t, h in _HINTS.items() if isinstance(module, t)), "")
    supported = "nn.Linear and parameter-free elementwise activations"
    message = f"unsupported layer net.{path} = {module!r}: supported are {supported}"
    return UnsupportedLayerError(message + (f" ({hint})" if hint else ""))


def parse_sequential(net: nn.Module) -> Architecture:
    """Flatten ``net`` into stages and build a :class:`LayerSpec` per parametric layer.

    :raises UnsupportedLayerError: if ``net`` is not an ``nn.Sequential``, has no
        ``nn.Linear`` layer, has a module that is not supported, or has consecutive
        linear layers whose sizes do not match.
    """
    if not isinstance(net, nn.Sequential):
        raise UnsupportedLayerError(
            f"SparseBNN needs an nn.Sequential (the order of its layers defines the network), "
            f"got {type(net).__name__}"
        )
    stages: List[Stage] = []
    linear: List[Tuple[str, nn.Linear]] = []
    for path, module in _flatten(net, ""):
        if type(module) is nn.Linear:
            stages.append(Stage(path, module, layer_index=len(linear)))
            linear.append((path, module))
        elif isinstance(module, ELEMENTWISE_MODULES) or type(module) is nn.Flatten:
            if any(p.numel() for p in module.parameters()):
                raise _unsupported(path, module, "it has trainable parameters")
            stages.append(Stage(path, module))
        else:
            raise _unsupported(path, module)
    if not linear:
        raise UnsupportedLayerError("the network has no nn.Linear layer to put a prior on")
    for (path_a, a), (path_b, b) in zip(linear, linear[1:]):
        if a.out_features != b.in_features:
            raise UnsupportedLayerError(
                f"net.{path_a} has {a.out_features} outputs but net.{path_b} expects "
                f"{b.in_features} inputs"
            )
    specs = [
        LayerSpec(
            name=f"net.{path}",
            index=i,
            kind="linear",
            weight_shape=module.weight.shape,
            has_bias=module.bias is not None,
            is_output=i == len(linear) - 1,
            module=module,
        )
        for i, (path, module) in enumerate(linear)
    ]
    return Architecture(stages=stages, specs=specs)
