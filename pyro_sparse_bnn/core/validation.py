"""Input checks shared by the public entry points.

Each check raises :class:`~pyro_sparse_bnn.core.errors.InputError` with a message that names the
argument and what was expected, instead of letting a shape or NaN problem surface deep
inside torch or as a silent NaN loss.
"""

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .errors import HyperparameterError, InputError

__all__ = [
    "as_tensor", "check_features", "check_finite", "check_same_length",
    "check_positive_int", "check_non_negative_int", "check_bool", "check_threshold", "layer_thresholds", "check_seed", "check_positive", "check_probability", "check_finite_number",
]


def as_tensor(value, name: str, dtype: Optional[torch.dtype] = None, device=None) -> torch.Tensor:
    """Convert numpy arrays and sequences to tensors; pass tensors through unchanged.

    :param dtype: dtype for converted (non-tensor) data; tensors keep theirs.
    :raises InputError: for ``None`` or data that cannot be converted.
    """
    if value is None:
        raise InputError(f"{name} is None")
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device)
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - numpy's message is informative enough
        raise InputError(f"{name} could not be converted to an array: {exc}") from None
    if array.dtype == object:
        raise InputError(f"{name} must be numeric, got an array of Python objects")
    if dtype is not None and np.issubdtype(array.dtype, np.floating):
        return torch.as_tensor(array, dtype=dtype, device=device)
    return torch.as_tensor(array, device=device)


def check_finite(name: str, value: torch.Tensor) -> None:
    """Raise :class:`InputError` if ``value`` contains NaN or +/-inf (naming the first row)."""
    if value.is_floating_point():
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            rows = (~finite).reshape(max(finite.shape[0] if finite.dim() else 1, 1), -1).any(dim=1)
            bad = int(rows.nonzero()[0, 0])
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            raise InputError(f"{name} contains {kind} values (first in row {bad})")


def check_features(x: torch.Tensor, input_shape: Union[int, Tuple[int, ...]], dtype: torch.dtype, device,
                   name="x") -> None:
    """Check that ``x`` is a finite floating-point ``(batch, *input_shape)`` tensor matching
    the network's dtype and device.

    :param input_shape: shape of one example, e.g. ``(784,)`` or ``(1, 28, 28)``; an int
        ``n`` means ``(n,)``.
    """
    input_shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype} (use {name}.float())"
        )
    if x.dtype != dtype:
        raise InputError(
            f"{name} has dtype {x.dtype} but the network's parameters are {dtype}; "
            f"convert the data with {name}.to({dtype}) or the network with .to({dtype})"
        )
    if x.device != device:
        raise InputError(f"{name} is on {x.device} but the network is on {device}")
    if x.dim() != 1 + len(input_shape) or tuple(x.shape[1:]) != input_shape:
        expected = ", ".join(str(d) for d in input_shape)
        raise InputError(
            f"{name} has shape {tuple(x.shape)} but the network expects (batch, {expected})"
        )
    if x.shape[0] == 0:
        raise InputError(f"{name} is empty (batch size 0)")
    check_finite(name, x)


def check_same_length(tensors: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    """Raise :class:`InputError` unless all tensors share their first dimension."""
    lengths = [t.shape[0] if t.dim() else 1 for t in tensors]
    if len(set(lengths)) > 1:
        described = ", ".join(f"{n} has {k}" for n, k in zip(names, lengths, strict=True))
        raise InputError(f"mismatched number of examples: {described}")



def _check_int(name: str, value, minimum: int, expected: str, error) -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (an int, a numpy integer or an
    integral float; not a bool), else raise ``error`` saying ``{name} must be {expected}``."""
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < minimum:
        raise error(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value, error=HyperparameterError) -> int:
    """``value`` as an int if it is a positive integer (not a bool), else raise ``error``."""
    return _check_int(name, value, 1, "a positive integer", error)


def check_non_negative_int(name: str, value, error=HyperparameterError) -> int:
    """``value`` as an int if it is a non-negative integer (not a bool), else raise ``error``."""
    return _check_int(name, value, 0, "a non-negative integer", error)


def check_seed(seed) -> Optional[int]:
    """``seed`` as an int if it is ``None`` or a non-negative integer (not a bool), else raise
    :class:`HyperparameterError`."""
    return None if seed is None else _check_int("seed", seed, 0, "None or a non-negative integer", HyperparameterError)


def check_bool(name: str, value) -> bool:
    """``value`` if it is ``True`` or ``False``, else raise :class:`HyperparameterError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise HyperparameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_threshold(threshold, priors):
    """A keep-rule ``threshold``: ``None`` (each prior's default), a finite number (every
    layer), or a sequence with one entry per layer (each ``None`` or a number), returned as
    a tuple. A number lies in [0, 1] when some prior thresholds inclusion probabilities
    (its default lies in (0, 1)).

    :raises HyperparameterError: otherwise.
    """
    if isinstance(threshold, (list, tuple)):
        if len(threshold) != len(priors):
            raise HyperparameterError(
                f"a per-layer threshold needs one entry per layer ({len(priors)}), got {len(threshold)}: "
                f"{threshold!r}"
            )
        return tuple(check_threshold(t, [p]) for t, p in zip(threshold, priors, strict=True))
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not np.isfinite(threshold):
        raise HyperparameterError(f"threshold must be None, a finite number or one per layer, got {threshold!r}")
    # a prior's threshold is its PIP threshold, or None for one per layer (Bayesian Compression)
    pip_priors = sorted({type(p).__name__ for p in priors if p.threshold is None or 0 < p.threshold < 1})
    if pip_priors and not 0 <= threshold <= 1:
        raise HyperparameterError(
            f"threshold must lie in [0, 1] (a posterior inclusion probability) for "
            f"{', '.join(pip_priors)}, got {threshold!r}"
        )
    return float(threshold)


def layer_thresholds(threshold, num_layers: int) -> tuple:
    """The checked ``threshold`` (see :func:`check_threshold`) as one entry per layer
    (``None``: that layer's own keep rule)."""
    return threshold if isinstance(threshold, tuple) else (threshold,) * num_layers


def check_positive(name: str, value) -> float:
    """Return ``float(value)`` or raise :class:`HyperparameterError` unless it is > 0 and finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"{name} must be a positive number, got {value!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise HyperparameterError(f"{name} must be positive and finite, got {value}")
    return value


def check_probability(name: str, value) -> float:
    """Return ``float(value)`` or raise :class:`HyperparameterError` unless 0 < value < 1."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(
            f"{name} must be a probability in (0, 1), got {value!r}"
        ) from None
    if not 0 < value < 1:
        raise HyperparameterError(f"{name} must lie strictly between 0 and 1, got {value}")
    return value


def check_finite_number(name: str, value) -> float:
    """Return ``float(value)`` or raise :class:`HyperparameterError` unless it is a finite number.

    For scalar hyperparameters; data tensors are checked by :func:`check_finite` (which raises
    :class:`~pyro_sparse_bnn.core.errors.InputError`)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise HyperparameterError(f"{name} must be finite, got {value}")
    return value
