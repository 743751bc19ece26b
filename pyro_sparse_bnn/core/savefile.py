"""The save-file format of a :class:`~pyro_sparse_bnn.core.network.SparseBNN`: what a file
holds, writing it atomically, reading and checking it, and loading its state into a network.
:mod:`pyro_sparse_bnn.persistence.serialization` builds ``save``/``load`` on it and
:func:`~pyro_sparse_bnn.core.fit.fit` writes its checkpoints with it.

The format. A save file is a ``torch.save`` of a dictionary holding only tensors,
numbers, strings, lists, tuples and dictionaries, and :func:`load` reads it with
``torch.load(weights_only=True)``: loading a file never unpickles arbitrary Python objects,
so a file from an untrusted source cannot run code (pickling the whole ``SparseBNN``, or the
user's ``nn.Module``, would need ``weights_only=False`` and make loading unsafe, and would
break whenever the library's classes change). The network is therefore stored as a
*structural description*, which the wrapper's restriction to ``nn.Sequential`` networks of
``torch.nn`` layers makes complete:

* ``network``: one ``(path, class name, constructor arguments)`` per module of the user's
  ``nn.Sequential`` (``"features.0"`` for nested ones, so layer and site names survive), the
  input shape and the floating-point dtype; on loading only the ``torch.nn`` classes the
  wrapper supports are rebuilt (:data:`~pyro_sparse_bnn.core.architecture.ELEMENTWISE_MODULES`,
  pooling, ``Linear``, ``Conv2d``, ``Flatten``, ``Unflatten``);
* ``priors``: one ``(class, hyperparameters)`` per layer, the hyperparameters being the
  prior object's attributes; ``likelihood``: its class and constructor arguments. Classes are
  looked up by qualified name among the *already imported* subclasses of
  :class:`~pyro_sparse_bnn.core.priors.base.Prior` and
  :class:`~pyro_sparse_bnn.core.likelihoods.Likelihood` (import the module of a custom prior
  before loading); nothing is imported by name;
* ``state``: ``bnn.state_dict()`` -- guide parameters, the prior buffers, temperature and the
  step counter; ``num_data``, ``local_reparameterization``, the training ``history``
  (:class:`~pyro_sparse_bnn.core.fit.FitHistory` as a dictionary) and, in checkpoints written by
  :func:`~pyro_sparse_bnn.core.fit.fit`, the ``fit_state`` needed to resume (optimiser, random
  number generators, epoch).

Every file carries ``format`` (``"pyro_sparse_bnn"``) and ``format_version``
(:data:`FORMAT_VERSION`); a file of a newer version, a foreign or corrupt file, or a file whose
network differs from the one it is loaded into gets a
:class:`~pyro_sparse_bnn.core.errors.SaveFileError` naming what differs. Files are written
atomically (a temporary file renamed over the target), so an interrupted save never leaves a
truncated file behind.
"""

import inspect
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .architecture import ELEMENTWISE_MODULES, POOLING_MODULES
from .errors import InputError, SaveFileError
from .network import SparseBNN
from .version import __version__

__all__ = ["FORMAT", "FORMAT_VERSION", "MODULE_CLASSES", "describe", "contents", "write", "read",
           "state_into", "qualified_name"]

#: value of the ``format`` key of every save file
FORMAT = "pyro_sparse_bnn"
#: version of the file layout; :func:`read` accepts this version and older ones
FORMAT_VERSION = 1

#: the ``torch.nn`` classes a save file may name (everything the wrapper accepts)
MODULE_CLASSES = {cls.__name__: cls for cls in (
    *ELEMENTWISE_MODULES, *POOLING_MODULES, nn.Linear, nn.Conv2d, nn.Flatten, nn.Unflatten)}

PathLike = Union[str, os.PathLike]

#: where the classes named by files of older library versions live now
_MOVED_MODULES = {"pyro_sparse_bnn.priors.": "pyro_sparse_bnn.core.priors.",
                  "pyro_sparse_bnn.likelihoods.": "pyro_sparse_bnn.core.likelihoods."}


def _with_current_name(entry):
    """A ``(class name, arguments)`` entry with the class name translated to where the class
    lives now (anything else is returned unchanged, for the checks that follow to reject)."""
    if not (isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str)):
        return entry
    for old, new in _MOVED_MODULES.items():
        if entry[0].startswith(old):
            return (new + entry[0][len(old):], *entry[1:])
    return entry


# -- describing objects by their constructor arguments ----------------------------------
def _plain(value, what: str):
    """``value`` as plain data (sequences become tuples), or raise :class:`InputError`
    naming ``what``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v, what) for v in value)
    raise InputError(f"save: {what} is a {type(value).__name__}, which a save file cannot describe")


def _constructor_arguments(obj, skip_tensors: bool = False) -> Dict[str, Any]:
    """The arguments that rebuild ``obj``: each parameter of ``type(obj).__init__`` read from
    the attribute of the same name (``bias`` of a layer: whether it has one). Parameters
    without such an attribute keep their defaults; ``skip_tensors`` leaves out attributes
    that are tensors (their values travel in the state dictionary)."""
    arguments = {}
    for name, parameter in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in ("device", "dtype") or not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        if name == "bias" and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None
        elif skip_tensors and isinstance(value, torch.Tensor):
            continue
        arguments[name] = _plain(value, f"argument {name} of {type(obj).__name__}")
    return arguments


def qualified_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe_modules(bnn: SparseBNN) -> List[Tuple[str, str, Dict[str, Any]]]:
    modules = []
    for stage in bnn.architecture.stages:
        module, label = stage.module, stage.label
        if MODULE_CLASSES.get(type(module).__name__) is not type(module):
            raise InputError(
                f"save: cannot describe module {label}: a file can hold the torch.nn modules "
                f"{', '.join(sorted(MODULE_CLASSES))}, not subclasses of them"
            )
        arguments = _constructor_arguments(module)
        with torch.random.fork_rng(devices=[]):  # building a layer draws initial weights
            rebuilt = type(module)(**arguments)
        if repr(rebuilt) != repr(module):
            raise InputError(f"save: module {label} cannot be rebuilt from its constructor arguments")
        modules.append((stage.path, type(module).__name__, arguments))
    return modules


def describe(bnn: SparseBNN) -> Dict[str, Any]:
    """What a save file records about the *build* of ``bnn`` (not its fitted state): network
    modules, input shape, dtype, priors, likelihood, ``local_reparameterization``. Two
    networks with equal descriptions accept each other's state."""
    return {
        "network": {
            "modules": _describe_modules(bnn),
            "input_shape": tuple(bnn.input_shape),
            "dtype": str(bnn.temperature.dtype).removeprefix("torch."),
        },
        "priors": [(qualified_name(type(p)), {k: _plain(v, f"attribute {k} of {p!r}") for k, v in vars(p).items()})
                   for p in bnn.priors],
        "likelihood": (qualified_name(type(bnn.likelihood)),
                       _constructor_arguments(bnn.likelihood, skip_tensors=True)),
        "local_reparameterization": bnn.local_reparameterization,
    }


def _cpu_state(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in bnn.state_dict().items()}


def contents(bnn: SparseBNN, history: Optional[dict] = None, fit_state: Optional[dict] = None) -> dict:
    """The dictionary a save file holds (tensors copied to the CPU).

    :param history: the fit's history as a dictionary (``dataclasses.asdict`` of a
        :class:`~pyro_sparse_bnn.core.fit.FitHistory`), or ``None``.
    :param fit_state: what resuming a fit needs (checkpoints only), or ``None``.
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        **describe(bnn),
        "num_data": bnn.num_data,
        "initial_fingerprint": tuple(bnn.initial_fingerprint),
        "state": _cpu_state(bnn),
        "history": history,
        "fit_state": fit_state,
    }


def write(contents: dict, path: PathLike) -> Path:
    """``torch.save`` ``contents`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"path {str(path)!r} is a directory; give a file name such as 'bnn.pt'")
    if not path.parent.is_dir():
        raise InputError(f"path {str(path)!r}: the directory {str(path.parent)!r} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(contents, file)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def read(path: PathLike, map_location="cpu") -> dict:
    """The checked contents of the save file ``path`` (see the module docstring).

    :raises InputError: if ``path`` does not exist.
    :raises SaveFileError: for a corrupt or foreign file, or one of a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"path {str(path)!r} is not a file")
    try:
        contents = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not zipfile.is_zipfile(path):
            raise SaveFileError(f"{str(path)!r} is corrupt or not a file written by torch.save") from None
        raise SaveFileError(
            f"{str(path)!r} is not a pyro_sparse_bnn save file: it holds pickled Python objects, "
            f"which load() does not unpickle (that could run code); "
            f"torch said: {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise SaveFileError(
            f"{str(path)!r} is corrupt or not a file written by torch.save: {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(contents, dict) or contents.get("format") != FORMAT:
        found = contents.get("format") if isinstance(contents, dict) else type(contents).__name__
        raise SaveFileError(
            f"{str(path)!r} is not a pyro_sparse_bnn save file (format {found!r}, expected {FORMAT!r}); "
            f"write one with pyro_sparse_bnn.save"
        )
    version = contents.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise SaveFileError(
            f"{str(path)!r} has format version {version!r}; this pyro_sparse_bnn reads versions 1 to "
            f"{FORMAT_VERSION} (it was written by pyro_sparse_bnn {contents.get('library_version')})"
        )
    if isinstance(contents.get("priors"), (list, tuple)):
        contents["priors"] = [_with_current_name(entry) for entry in contents["priors"]]
    contents["likelihood"] = _with_current_name(contents.get("likelihood"))
    return contents


def state_into(bnn: SparseBNN, contents: dict, source: str) -> None:
    """Copy the fitted state of ``contents`` into ``bnn`` after checking that it was built the
    same way; :class:`SaveFileError` names the first difference."""
    mine = describe(bnn)
    theirs = {k: contents.get(k) for k in mine}
    theirs["network"] = dict(theirs["network"] or {})
    for key, what in (("input_shape", "input shape"), ("dtype", "dtype")):
        a, b = theirs["network"].get(key), mine["network"][key]
        if a != b:
            raise SaveFileError(f"{source} holds a network with {what} {a} but this network has {what} {b}")
    file_modules, own_modules = [tuple(m) for m in theirs["network"]["modules"]], mine["network"]["modules"]
    for (path_a, cls_a, args_a), (path_b, cls_b, args_b) in zip(file_modules, own_modules, strict=False):
        if (path_a, cls_a, args_a) != (path_b, cls_b, args_b):
            raise SaveFileError(
                f"{source} holds a different architecture: module net.{path_a} is {cls_a}({args_a}) there "
                f"but net.{path_b} is {cls_b}({args_b}) here"
            )
    if len(file_modules) != len(own_modules):
        raise SaveFileError(f"{source} holds a network of {len(file_modules)} modules; this one has {len(own_modules)}")
    names = [layer.spec.name for layer in bnn.layers]
    for name, a, b in zip(names, theirs["priors"], mine["priors"], strict=True):
        if tuple(a) != tuple(b):
            raise SaveFileError(
                f"{source} holds a different prior for layer {name}: {a[0].rsplit('.', 1)[-1]}({a[1]}) there, "
                f"{b[0].rsplit('.', 1)[-1]}({b[1]}) here"
            )
    for key in ("likelihood", "local_reparameterization"):
        a, b = theirs[key], mine[key]
        if (tuple(a) if isinstance(a, (list, tuple)) else a) != b:
            raise SaveFileError(f"{source} holds a network with {key} {a} but this network has {key} {b}")
    if bnn.num_data is not None and contents["num_data"] is not None and bnn.num_data != contents["num_data"]:
        raise SaveFileError(
            f"{source} holds a network fitted with num_data={contents['num_data']} but this network "
            f"has num_data={bnn.num_data}"
        )
    device = bnn.temperature.device
    state = {k: v.to(device) for k, v in contents["state"].items()}
    result = bnn.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SaveFileError(
            f"{source} does not fit this network: missing entries {result.missing_keys}, "
            f"unexpected entries {result.unexpected_keys}"
        )
    bnn.num_data = contents["num_data"]
    bnn.initial_fingerprint = tuple(contents["initial_fingerprint"])
