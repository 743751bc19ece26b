"""Exceptions raised by pyro_sparse_bnn.

Every error the library raises on purpose derives from :class:`SparseBNNError`, and also
from the built-in exception a Python user would expect (``ValueError`` for bad values,
``TypeError`` for unsupported layer types, ``RuntimeError`` for calls made in the wrong
state), so ``except ValueError`` keeps working in user code. :class:`DegenerateNetworkWarning`
is a warning (a ``UserWarning``), not an error: the result is still returned.
"""

__all__ = [
    "SparseBNNError",
    "InputError",
    "HyperparameterError",
    "UnsupportedLayerError",
    "NotFittedError",
    "NonFiniteLossError",
    "SaveFileError",
    "ExportError",
    "DegenerateNetworkWarning",
]


class SparseBNNError(Exception):
    """Base class of every error raised by pyro_sparse_bnn on purpose."""


class InputError(SparseBNNError, ValueError):
    """Data given to a public function has the wrong shape, dtype, range or contains NaN/inf."""


class HyperparameterError(SparseBNNError, ValueError):
    """A prior, likelihood or training hyperparameter is outside its valid range."""


class UnsupportedLayerError(SparseBNNError, TypeError):
    """A network contains a module that the wrapper (or ``compress``) cannot handle."""


class NotFittedError(SparseBNNError, RuntimeError):
    """An operation needs a fitted guide but the network has not been trained yet."""


class NonFiniteLossError(SparseBNNError, FloatingPointError):
    """The ELBO became NaN or infinite during fitting."""


class SaveFileError(SparseBNNError, ValueError):
    """A save or checkpoint file is corrupt, foreign, of a newer format version, or holds a
    network built differently from the one it is loaded into (the message names what differs)."""


class ExportError(SparseBNNError, RuntimeError):
    """Exporting a compressed module failed, or the exported file computes different outputs."""


class DegenerateNetworkWarning(UserWarning):
    """``compress`` built a network that cannot be useful: it keeps no input feature, no unit
    of some hidden layer, or its output does not depend on the input (the same prediction
    for every example). The message says which layer cuts the input off and what to change."""
