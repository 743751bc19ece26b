"""Exporting the compressed network for deployment without Python or Pyro.

:func:`~pyro_sparse_bnn.analysis.compress.compress` returns a plain ``nn.Sequential`` of
``nn.Linear`` / ``nn.Conv2d``, parameter-free activations and pooling, and the two small
modules :class:`~pyro_sparse_bnn.analysis.compress.SelectInputs` and
:class:`~pyro_sparse_bnn.analysis.compress.ConstantOutput`. :func:`export` writes it as

* ``"torchscript"``: ``torch.jit.script`` (every batch size; ``torch.jit.load`` in Python or
  ``torch::jit::load`` in C++). TorchScript is deprecated upstream in favour of
  ``torch.export``; torch still reads and writes it, and the deprecation warning it emits
  while scripting is not shown (it concerns torch's roadmap, not this call);
* ``"onnx"`` (needs the ``onnx`` and ``onnxscript`` packages): torch's ONNX exporter with
  a dynamic batch dimension; checked with ``onnxruntime`` when that is installed.

With an ``example_input`` the written file is loaded back and run on it, and its outputs must
match the module's (:class:`~pyro_sparse_bnn.core.errors.ExportError` otherwise): the round trip
through the file is verified, not assumed. Example::

    module, report = psb.compress(bnn)
    psb.export(module, "bnn.ts", example_input=x_test[:8])
    deployed = torch.jit.load("bnn.ts")
"""

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..analysis.compress import Compressed
from ..core.errors import ExportError, InputError
from ..core.network import SparseBNN
from ..core.validation import check_finite

__all__ = ["export", "FORMATS"]

#: the formats :func:`export` writes
FORMATS = ("torchscript", "onnx")


def _module(module) -> nn.Module:
    if isinstance(module, Compressed):
        module = module.module
    if isinstance(module, SparseBNN):
        raise InputError(
            "export takes the compressed deterministic module, not the SparseBNN: "
            "module, report = pyro_sparse_bnn.compress(bnn); pyro_sparse_bnn.export(module, path)"
        )
    if not isinstance(module, nn.Module):
        raise InputError(f"module must be an nn.Module (the output of compress), got {type(module).__name__}")
    return module


def _reference_output(module: nn.Module, example_input) -> Optional[torch.Tensor]:
    if example_input is None:
        return None
    if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
        raise InputError(
            f"example_input must be a floating-point tensor (batch, *input_shape), got "
            f"{getattr(example_input, 'dtype', type(example_input).__name__)}"
        )
    if example_input.dim() < 2 or example_input.shape[0] < 1:
        raise InputError(
            f"example_input must have shape (batch, *input_shape) with batch >= 1, got {tuple(example_input.shape)}"
        )
    check_finite(example_input, "example_input")
    try:
        with torch.no_grad():
            return module(example_input)
    except (RuntimeError, IndexError) as error:
        raise InputError(
            f"example_input of shape {tuple(example_input.shape)} does not fit the module: "
            f"{str(error).splitlines()[0]}"
        ) from None


def _compare(expected: torch.Tensor, actual: torch.Tensor, fmt: str, path: Path) -> None:
    if actual.shape != expected.shape or not torch.allclose(actual, expected, rtol=1e-5, atol=1e-6):
        difference = (actual - expected).abs().max().item() if actual.shape == expected.shape else "shape"
        raise ExportError(
            f"the {fmt} file {str(path)!r} computes different outputs than the module "
            f"(largest difference {difference})"
        )


def _torchscript(module: nn.Module, path: Path, example_input, expected) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        try:
            scripted = torch.jit.script(module)
        except Exception as error:  # torch raises several kinds for unscriptable code
            raise ExportError(
                f"torch.jit.script failed on {type(module).__name__}: {str(error).strip().splitlines()[0]}"
            ) from error
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    if expected is not None:
        with torch.no_grad():
            _compare(expected.cpu(), loaded(example_input.cpu()), "TorchScript", path)


def _onnx(module: nn.Module, path: Path, example_input, expected) -> None:
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ImportError(
                f"ONNX export needs the {package} package, which is not installed "
                f"(pip install onnx onnxscript); TorchScript export needs nothing extra"
            ) from None
    if example_input is None:
        raise InputError("ONNX export traces the module: pass example_input, a (batch, *input_shape) tensor")
    try:
        torch.onnx.export(
            module, (example_input,), str(path), input_names=["input"], output_names=["output"],
            dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), dynamo=True, external_data=False,
        )
    except Exception as error:  # the exporter raises its own error types
        raise ExportError(f"torch.onnx.export failed: {str(error).strip().splitlines()[0]}") from error
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    try:
        import onnxruntime
    except ImportError:
        warnings.warn("onnxruntime is not installed: the ONNX file was checked but not run", stacklevel=3)
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"input": example_input.detach().cpu().numpy()})[0]
    _compare(expected.cpu(), torch.from_numpy(actual), "ONNX", path)


def export(module, path: Union[str, os.PathLike], format: str = "torchscript",
           example_input: Optional[torch.Tensor] = None) -> Path:
    """Write the compressed module to ``path`` as TorchScript or ONNX and verify the file.

    :param module: the module returned by :func:`~pyro_sparse_bnn.analysis.compress.compress` (or the
        whole :class:`~pyro_sparse_bnn.analysis.compress.Compressed` result); any scriptable /
        exportable ``nn.Module`` works.
    :param path: the file to write (``.ts`` / ``.pt`` for TorchScript, ``.onnx``).
    :param str format: ``"torchscript"`` or ``"onnx"``.
    :param example_input: a ``(batch, *input_shape)`` tensor. TorchScript: optional; with it
        the file is loaded back and its outputs compared with the module's. ONNX: required
        (the exporter traces the module), and compared with ``onnxruntime`` if installed.
    :returns: the path written.
    :raises InputError: for a bad module, path, format or example input.
    :raises ExportError: if exporting fails or the file's outputs differ from the module's.
    :raises ImportError: for ``format="onnx"`` without the ``onnx`` / ``onnxscript`` packages.
    """
    module = _module(module)
    if format not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"path {str(path)!r}: need a file name in an existing directory")
    was_training = module.training
    module.eval()
    try:
        expected = _reference_output(module, example_input)
        (_torchscript if format == "torchscript" else _onnx)(module, path, example_input, expected)
    finally:
        module.train(was_training)
    return path
