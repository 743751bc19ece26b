"""Exporting the compressed network for deployment without Python or Pyro.

:func:`~pyro_sparse_bnn.analysis.compress.compress` returns a plain ``nn.Sequential`` of
``nn.Linear`` / ``nn.Conv2d``, parameter-free activations and pooling, and the two small
modules :class:`~pyro_sparse_bnn.analysis.compress.SelectInputs` and
:class:`~pyro_sparse_bnn.analysis.compress.ConstantOutput`. :func:`export` writes it as

* ``"pt2"`` (the default, a ``.pt2`` file): ``torch.export.export`` with a dynamic batch
  dimension, saved with ``torch.export.save``. Read it back with
  ``torch.export.load(path).module()`` in Python, or compile it ahead of time for C++
  (AOTInductor) or mobile (ExecuTorch), which start from the same exported program;
* ``"onnx"`` (a ``.onnx`` file; needs the ``onnx`` and ``onnxscript`` packages,
  ``pip install pyro_sparse_bnn[onnx]``): torch's ONNX exporter on top of ``torch.export``
  (``torch.onnx.export(..., dynamo=True)``), input ``"input"`` and output ``"output"`` with a
  dynamic batch dimension; checked with ``onnx.checker`` and run with ``onnxruntime`` when
  that is installed;
* ``"torchscript"`` (only on request, ``format="torchscript"``): ``torch.jit.script``.
  TorchScript is deprecated in torch: this format stays while torch ships it, and warns
  with a :class:`DeprecationWarning` each time it is used.

The format is the ``format`` argument, or else follows from the file's suffix (``.pt2``,
``.onnx``). ``pt2`` and ``onnx`` trace the module, so they need an ``example_input`` of shape
``(batch, *input_shape)``; the batch dimension stays dynamic, so the file runs on every batch
size, 1 included (an example with a batch of 1 is traced as a batch of 2: torch.export would
otherwise fix the batch size to 1).

Verification: with an ``example_input`` (always, for ``pt2`` and ``onnx``) the written file
is loaded back and run on the example and on a batch of another size, and its outputs must
match the module's (:class:`~pyro_sparse_bnn.core.errors.ExportError` otherwise): the round
trip through the file is verified, not assumed. Example::

    module, report = psb.compress(bnn)
    psb.export(module, "bnn.pt2", example_input=x_test[:8])
    deployed = torch.export.load("bnn.pt2").module()
    deployed(x_test)                                  # (batch, outputs), any batch size
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

__all__ = ["export", "FORMATS", "SUFFIXES"]

#: the formats :func:`export` writes
FORMATS = ("pt2", "onnx", "torchscript")

#: file suffixes that choose the format when ``format`` is not given
SUFFIXES = {".pt2": "pt2", ".onnx": "onnx"}


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


def _format(format: Optional[str], path: Path) -> str:
    """The format asked for, or the one the suffix of ``path`` names."""
    suffix = path.suffix.lower()
    if format is None:
        if suffix not in SUFFIXES:
            hint = (" (TorchScript is deprecated in torch: pass format='torchscript' to write it anyway)"
                    if suffix in (".ts", ".pt", ".pth", ".jit") else "")
            raise InputError(
                f"cannot tell the export format from the file name {path.name!r}: use a suffix in "
                f"{tuple(SUFFIXES)} or pass format, one of {FORMATS}{hint}"
            )
        return SUFFIXES[suffix]
    if format not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {format!r}")
    if SUFFIXES.get(suffix, format) != format:
        raise InputError(
            f"format={format!r} but the file name {path.name!r} has the suffix of format "
            f"{SUFFIXES[suffix]!r}: change one of them"
        )
    return format


def _check_example(module: nn.Module, example_input) -> None:
    """``example_input`` is ``None`` or a finite floating-point ``(batch, *input_shape)`` tensor that the module runs on."""
    if example_input is None:
        return
    if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
        raise InputError(
            f"example_input must be a floating-point tensor (batch, *input_shape), got "
            f"{getattr(example_input, 'dtype', type(example_input).__name__)}"
        )
    if example_input.dim() < 2 or example_input.shape[0] < 1:
        raise InputError(
            f"example_input must have shape (batch, *input_shape) with batch >= 1, got {tuple(example_input.shape)}"
        )
    check_finite("example_input", example_input)
    try:
        with torch.no_grad():
            module(example_input)
    except (RuntimeError, IndexError) as error:
        raise InputError(
            f"example_input of shape {tuple(example_input.shape)} does not fit the module: "
            f"{str(error).splitlines()[0]}"
        ) from None


def _checks(module: nn.Module, example_input: torch.Tensor):
    """The inputs a written file is checked on, with the module's outputs: the example, and
    a batch of another size (twice the example's, its rows reversed), so that a file whose
    batch size was fixed while tracing fails the check."""
    other = torch.cat([example_input, example_input.flip(0)])
    with torch.no_grad():
        return [(example_input, module(example_input)), (other, module(other))]


def _compare(expected: torch.Tensor, actual, fmt: str, path: Path) -> None:
    expected = expected.detach().cpu()
    actual = torch.as_tensor(actual).detach().cpu()
    if actual.shape != expected.shape or not torch.allclose(actual, expected, rtol=1e-5, atol=1e-6):
        difference = (actual - expected).abs().max().item() if actual.shape == expected.shape else (
            f"shape {tuple(actual.shape)} instead of {tuple(expected.shape)}")
        raise ExportError(
            f"the {fmt} file {str(path)!r} computes different outputs than the module "
            f"(largest difference {difference})"
        )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _trace_input(example_input: torch.Tensor) -> torch.Tensor:
    # torch.export fixes a dimension whose example size is 0 or 1 ("0/1 specialisation"):
    # trace a batch of 1 as a batch of 2 so that the batch stays dynamic. The program keeps its
    # example input, and a saved view keeps the whole tensor it views (a slice of a data set
    # would store the data set): trace on a copy of just the example
    example = example_input if example_input.shape[0] > 1 else example_input.expand(2, *example_input.shape[1:])
    return example.clone(memory_format=torch.contiguous_format)


def _dynamic_batch():
    return ({0: torch.export.Dim("batch")},)


def _exported_program(module: nn.Module, example_input: torch.Tensor):
    try:
        return torch.export.export(module, (_trace_input(example_input),), dynamic_shapes=_dynamic_batch())
    except Exception as error:  # torch raises several kinds for code it cannot trace
        raise ExportError(
            f"torch.export.export failed on {type(module).__name__} with a dynamic batch dimension: "
            f"{_first_line(error)}"
        ) from error


def _pt2(module: nn.Module, path: Path, example_input) -> None:
    if example_input is None:
        raise InputError("torch.export traces the module: pass example_input, a (batch, *input_shape) tensor")
    torch.export.save(_exported_program(module, example_input), str(path))
    loaded = torch.export.load(str(path)).module()
    for x, y in _checks(module, example_input):
        with torch.no_grad():
            _compare(y, loaded(x), "torch.export", path)


def _torchscript(module: nn.Module, path: Path, example_input) -> None:
    if not hasattr(torch.jit, "script"):
        raise InputError(f"torch {torch.__version__} no longer ships TorchScript: use format='pt2'")
    warnings.warn(
        "format='torchscript' writes TorchScript, which torch has deprecated; format='pt2' "
        "(torch.export, a .pt2 file) is the supported path",
        DeprecationWarning, stacklevel=3,
    )
    with warnings.catch_warnings():  # torch's own warnings say the same thing, from inside torch
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        try:
            scripted = torch.jit.script(module)
        except Exception as error:  # torch raises several kinds for unscriptable code
            raise ExportError(
                f"torch.jit.script failed on {type(module).__name__}: {_first_line(error)}"
            ) from error
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")
    if example_input is not None:
        for x, y in _checks(module, example_input):
            with torch.no_grad():
                _compare(y, loaded(x.cpu()), "TorchScript", path)


def _onnx(module: nn.Module, path: Path, example_input) -> None:
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ImportError(
                f"ONNX export needs the {package} package, which is not installed "
                f"(pip install onnx onnxscript onnxruntime, or pip install pyro_sparse_bnn[onnx]); "
                f"format='pt2' needs nothing extra"
            ) from None
    if example_input is None:
        raise InputError("ONNX export traces the module: pass example_input, a (batch, *input_shape) tensor")
    try:
        with warnings.catch_warnings():
            # raised inside torch (ExportedProgram.run_decompositions deep-copies pytree specs):
            # nothing the caller can change; torch 2.13 warns on every ONNX export
            warnings.filterwarnings("ignore", category=FutureWarning, message=r"`isinstance\(treespec, LeafSpec\)`")
            torch.onnx.export(
                module, (_trace_input(example_input),), str(path), input_names=["input"], output_names=["output"],
                dynamic_shapes=_dynamic_batch(), dynamo=True, external_data=False, verbose=False,
            )
    except Exception as error:  # the exporter raises its own error types
        raise ExportError(f"torch.onnx.export failed on {type(module).__name__}: {_first_line(error)}") from error
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as error:  # onnx.checker.ValidationError, onnx.shape_inference errors
        raise ExportError(f"the ONNX file {str(path)!r} fails onnx.checker: {_first_line(error)}") from error
    try:
        import onnxruntime
    except ImportError:
        warnings.warn("onnxruntime is not installed: the ONNX file was checked but not run", stacklevel=3)
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x, y in _checks(module, example_input):
        _compare(y, torch.from_numpy(session.run(None, {"input": x.detach().cpu().numpy()})[0]), "ONNX", path)


_WRITERS = {"pt2": _pt2, "onnx": _onnx, "torchscript": _torchscript}


def export(module, path: Union[str, os.PathLike], format: Optional[str] = None,
           example_input: Optional[torch.Tensor] = None) -> Path:
    """Write the compressed module to ``path`` and verify the file by running it.

    :param module: the module returned by :func:`~pyro_sparse_bnn.analysis.compress.compress` (or the
        whole :class:`~pyro_sparse_bnn.analysis.compress.Compressed` result); any ``nn.Module``
        that ``torch.export`` can trace with a dynamic batch dimension works. It maps
        ``(batch, *input_shape)`` to ``(batch, *output_shape)``; it is exported in eval mode
        and its mode restored afterwards.
    :param path: the file to write, in an existing directory: ``.pt2`` (torch.export) or
        ``.onnx``; any name with an explicit ``format``, except that a ``.pt2`` / ``.onnx``
        suffix must agree with it.
    :param str format: ``"pt2"`` (``torch.export``; read back with
        ``torch.export.load(path).module()``), ``"onnx"`` or ``"torchscript"`` (deprecated by
        torch, warns); ``None`` (default): from the suffix of ``path``.
    :param example_input: a floating-point ``(batch, *input_shape)`` tensor, ``batch >= 1``,
        on the module's device. ``pt2`` / ``onnx``: required, the module is traced on it
        (the batch dimension stays dynamic). ``torchscript``: optional. With it, the written
        file is loaded back and run on ``example_input`` and on a batch of twice its size,
        and its outputs must equal the module's up to float round-off (``rtol=1e-5``,
        ``atol=1e-6``); ONNX files are run with ``onnxruntime`` if installed (a warning
        otherwise) after ``onnx.checker``.
    :returns: the path written, as a :class:`~pathlib.Path`.
    :raises InputError: for a bad module, path, format, a suffix that names no format (or
        another one than ``format``), or an example input of the wrong type or shape, with
        NaN/inf, or that the module cannot run; ``pt2`` / ``onnx`` without ``example_input``.
    :raises ExportError: if tracing or scripting the module fails, the ONNX file fails
        ``onnx.checker``, or the file's outputs differ from the module's.
    :raises ImportError: for ``format="onnx"`` without the ``onnx`` / ``onnxscript`` packages.
    :warns DeprecationWarning: for ``format="torchscript"``.
    """
    module = _module(module)
    if format is not None and format not in FORMATS:
        raise InputError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise InputError(f"path {str(path)!r}: need a file name in an existing directory")
    format = _format(format, path)
    was_training = module.training
    module.eval()
    try:
        _check_example(module, example_input)
        _WRITERS[format](module, path, example_input)
    finally:
        module.train(was_training)
    return path
