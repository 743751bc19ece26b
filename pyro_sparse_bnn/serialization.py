"""Saving and loading a :class:`~pyro_sparse_bnn.network.SparseBNN` to and from one file.

Example::

    psb.save(bnn, "bnn.pt", history=history)     # or bnn.save("bnn.pt", history=history)
    bnn = psb.load("bnn.pt")                      # or SparseBNN.load("bnn.pt")
    history = psb.load_history("bnn.pt")          # FitHistory, or None if none was saved
    other.load_state("bnn.pt")                    # into an existing network of the same build

The file format. A save file is a ``torch.save`` of a dictionary holding only tensors,
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
  wrapper supports are rebuilt (:data:`~pyro_sparse_bnn.architecture.ELEMENTWISE_MODULES`,
  pooling, ``Linear``, ``Conv2d``, ``Flatten``, ``Unflatten``);
* ``priors``: one ``(class, hyperparameters)`` per layer, the hyperparameters being the
  prior object's attributes; ``likelihood``: its class and constructor arguments. Classes are
  looked up by qualified name among the *already imported* subclasses of
  :class:`~pyro_sparse_bnn.priors.base.Prior` and
  :class:`~pyro_sparse_bnn.likelihoods.Likelihood` (import the module of a custom prior
  before loading); nothing is imported by name;
* ``state``: ``bnn.state_dict()`` -- guide parameters, the prior buffers, temperature and the
  step counter; ``num_data``, ``local_reparameterization``, the training ``history``
  (:class:`~pyro_sparse_bnn.fit.FitHistory` as a dictionary) and, in checkpoints written by
  :func:`~pyro_sparse_bnn.fit.fit`, the ``fit_state`` needed to resume (optimiser, random
  number generators, epoch).

Every file carries ``format`` (``"pyro_sparse_bnn"``) and ``format_version``
(:data:`FORMAT_VERSION`); a file of a newer version, a foreign or corrupt file, or a file whose
network differs from the one it is loaded into gets a
:class:`~pyro_sparse_bnn.errors.SaveFileError` naming what differs. Files are written
atomically (a temporary file renamed over the target), so an interrupted save never leaves a
truncated file behind.
"""

import copy
import dataclasses
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
from .likelihoods import Likelihood
from .network import SparseBNN
from .priors.base import Prior

__all__ = ["save", "load", "load_history", "load_state", "FORMAT", "FORMAT_VERSION", "describe"]

#: value of the ``format`` key of every file this module writes
FORMAT = "pyro_sparse_bnn"
#: version of the file layout; :func:`load` reads this version and older ones
FORMAT_VERSION = 1

#: the ``torch.nn`` classes a save file may name (everything the wrapper accepts)
_MODULE_CLASSES = {cls.__name__: cls for cls in (
    *ELEMENTWISE_MODULES, *POOLING_MODULES, nn.Linear, nn.Conv2d, nn.Flatten, nn.Unflatten)}

PathLike = Union[str, os.PathLike]


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


def _qualified_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _subclass_named(base, name: str, what: str):
    """The imported subclass of ``base`` (or ``base``) with qualified name ``name``."""
    pending, seen = [base], set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if _qualified_name(cls) == name:
            return cls
        pending.extend(cls.__subclasses__())
    raise SaveFileError(
        f"the file names the {what} class {name!r}, which is not imported: import the module "
        f"that defines it before loading"
    )


def _describe_modules(bnn: SparseBNN) -> List[Tuple[str, str, Dict[str, Any]]]:
    modules = []
    for stage in bnn.architecture.stages:
        module, label = stage.module, stage.label
        if _MODULE_CLASSES.get(type(module).__name__) is not type(module):
            raise InputError(
                f"save: cannot describe module {label}: a file can hold the torch.nn modules "
                f"{', '.join(sorted(_MODULE_CLASSES))}, not subclasses of them"
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
        "priors": [(_qualified_name(type(p)), {k: _plain(v, f"attribute {k} of {p!r}") for k, v in vars(p).items()})
                   for p in bnn.priors],
        "likelihood": (_qualified_name(type(bnn.likelihood)),
                       _constructor_arguments(bnn.likelihood, skip_tensors=True)),
        "local_reparameterization": bnn.local_reparameterization,
    }


def _history_dict(history) -> Optional[dict]:
    if history is None:
        return None
    from .fit import FitHistory

    if not isinstance(history, FitHistory):
        raise InputError(f"history must be the FitHistory returned by fit, or None; got {type(history).__name__}")
    return dataclasses.asdict(history)


def _cpu_state(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in bnn.state_dict().items()}


def _contents(bnn: SparseBNN, history=None, fit_state=None) -> dict:
    """The dictionary a save file holds (tensors copied to the CPU)."""
    from . import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        **describe(bnn),
        "num_data": bnn.num_data,
        "initial_fingerprint": tuple(bnn._initial_fingerprint),
        "state": _cpu_state(bnn),
        "history": _history_dict(history),
        "fit_state": fit_state,
    }


def _write(contents: dict, path: PathLike) -> Path:
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


def save(bnn: SparseBNN, path: PathLike, history=None) -> Path:
    """Save ``bnn`` -- architecture, priors, likelihood, guide parameters, temperature,
    ``num_data`` -- and optionally its training ``history`` to the file ``path``.

    :param bnn: a :class:`~pyro_sparse_bnn.network.SparseBNN` (fitted or not).
    :param path: file name (conventionally ``*.pt``); written atomically.
    :param history: the :class:`~pyro_sparse_bnn.fit.FitHistory` returned by ``fit``.
    :returns: the path written.
    :raises InputError: for a non-``SparseBNN``, a bad path or history, or a network module
        that a file cannot describe.
    """
    if not isinstance(bnn, SparseBNN):
        raise InputError(f"save needs a SparseBNN as bnn, got {type(bnn).__name__}")
    return _write(_contents(bnn, history), path)


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
    return contents


def _rebuild_net(description: dict) -> nn.Sequential:
    """The user's ``nn.Sequential`` (nested ones included) from the ``network`` description."""
    root = nn.Sequential()
    for path, class_name, arguments in description["modules"]:
        cls = _MODULE_CLASSES.get(class_name)
        if cls is None:
            raise SaveFileError(f"the file names module class {class_name!r} at net.{path}, which is not supported")
        *parents, name = path.split(".")
        container = root
        for parent in parents:
            if parent not in container._modules:
                container.add_module(parent, nn.Sequential())
            container = container._modules[parent]
        container.add_module(name, cls(**arguments))
    return root.to(getattr(torch, description["dtype"]))


def _rebuild_prior(name: str, config: dict) -> Prior:
    cls = _subclass_named(Prior, name, "prior")
    prior = cls.__new__(cls)  # the attributes were validated when the saved prior was made
    prior.__dict__.update(copy.deepcopy(config))
    return prior


def _state_into(bnn: SparseBNN, contents: dict, source: str) -> None:
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
    bnn._initial_fingerprint = tuple(contents["initial_fingerprint"])


def load_state(bnn: SparseBNN, path: PathLike) -> SparseBNN:
    """Load the fitted state in the save file (or checkpoint) ``path`` into ``bnn``, which
    must have been built with the same architecture, priors and likelihood.

    :returns: ``bnn``.
    :raises SaveFileError: naming the first difference (module, prior, dtype, ...).
    """
    if not isinstance(bnn, SparseBNN):
        raise InputError(f"load_state needs a SparseBNN as bnn, got {type(bnn).__name__}")
    _state_into(bnn, read(path), f"{str(path)!r}")
    return bnn


def load(path: PathLike, map_location="cpu") -> SparseBNN:
    """Rebuild the :class:`~pyro_sparse_bnn.network.SparseBNN` saved in ``path``.

    The network is rebuilt from the file's description (without touching the global random
    number generators), then its state is loaded: the result gives the same PIPs as the saved
    network, and the same predictions under the same seed.

    :param map_location: device for the tensors (default ``"cpu"``; move the network with
        ``.to(device)`` afterwards, or pass ``map_location`` as to ``torch.load``).
    :raises SaveFileError: for a corrupt, foreign or newer file.
    """
    contents = read(path, map_location)
    try:
        with torch.random.fork_rng(devices=[]):  # building initialises weights: keep the user's RNG
            bnn = _rebuild(contents)
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, SaveFileError):
            raise
        raise SaveFileError(f"{str(path)!r} has an incomplete or inconsistent description: {error!r}") from None
    device = next(iter(contents["state"].values())).device
    _state_into(bnn.to(device), contents, f"{str(path)!r}")
    return bnn


def _rebuild(contents: dict) -> SparseBNN:
    """A new network built as the file describes (its state not yet loaded)."""
    net = _rebuild_net(contents["network"])
    priors = [_rebuild_prior(name, config) for name, config in contents["priors"]]
    likelihood_name, likelihood_arguments = contents["likelihood"]
    likelihood = _subclass_named(Likelihood, likelihood_name, "likelihood")(**likelihood_arguments)
    return SparseBNN(net, priors, likelihood=likelihood, num_data=contents["num_data"],
                     local_reparameterization=contents["local_reparameterization"],
                     input_shape=contents["network"]["input_shape"])


def load_history(path: PathLike):
    """The :class:`~pyro_sparse_bnn.fit.FitHistory` saved in ``path`` (``None`` if none was)."""
    from .fit import FitHistory

    history = read(path).get("history")
    return None if history is None else FitHistory(**history)
