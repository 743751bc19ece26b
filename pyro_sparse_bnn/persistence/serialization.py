"""Saving and loading a :class:`~pyro_sparse_bnn.core.network.SparseBNN` to and from one file.

Example::

    psb.save(bnn, "bnn.pt", history=history)
    bnn = psb.load("bnn.pt")
    history = load_history("bnn.pt")          # FitHistory, or None if none was saved
    load_state(other, "bnn.pt")               # into an existing network of the same build

The format is described in :mod:`pyro_sparse_bnn.core.savefile`. Loading rebuilds the
network from the file's description: only the ``torch.nn`` classes the wrapper supports, and
prior and likelihood classes found by qualified name among the *already imported* subclasses
of :class:`~pyro_sparse_bnn.core.priors.base.Prior` and
:class:`~pyro_sparse_bnn.core.likelihoods.Likelihood` (import the module of a custom prior
before loading); nothing is imported by name.
"""

import copy
import dataclasses
import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..core.errors import InputError, SaveFileError
from ..core.fit import FitHistory
from ..core.likelihoods import Likelihood
from ..core.network import SparseBNN, check_bnn
from ..core.priors.base import Prior
from ..core.savefile import MODULE_CLASSES, contents, qualified_name, read, state_into, write

__all__ = ["save", "load", "load_history", "load_state"]

PathLike = Union[str, os.PathLike]

#: where classes named in older save files live now
_MOVED_MODULES = {"pyro_sparse_bnn.core.priors.": "pyro_sparse_bnn.core.priors.",
                  "pyro_sparse_bnn.core.likelihoods.": "pyro_sparse_bnn.core.likelihoods."}


def _subclass_named(base, name: str, what: str):
    """The imported subclass of ``base`` (or ``base``) with qualified name ``name``."""
    pending, seen = [base], set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if qualified_name(cls) == name:
            return cls
        pending.extend(cls.__subclasses__())
    raise SaveFileError(
        f"the file names the {what} class {name!r}, which is not imported: import the module "
        f"that defines it before loading"
    )


def _history_dict(history) -> Optional[dict]:
    if history is None:
        return None
    if not isinstance(history, FitHistory):
        raise InputError(f"history must be the FitHistory returned by fit, or None; got {type(history).__name__}")
    return dataclasses.asdict(history)


def save(bnn: SparseBNN, path: PathLike, history=None) -> Path:
    """Save ``bnn`` -- architecture, priors, likelihood, guide parameters, temperature,
    ``num_data`` -- and optionally its training ``history`` to the file ``path``.

    :param bnn: a :class:`~pyro_sparse_bnn.core.network.SparseBNN` (fitted or not).
    :param path: file name (conventionally ``*.pt``); written atomically.
    :param history: the :class:`~pyro_sparse_bnn.core.fit.FitHistory` returned by ``fit``.
    :returns: the path written.
    :raises InputError: for a non-``SparseBNN``, a bad path or history, or a network module
        that a file cannot describe.
    """
    check_bnn(bnn, "save")
    return write(contents(bnn, _history_dict(history)), path)


def _rebuild_net(description: dict) -> nn.Sequential:
    """The user's ``nn.Sequential`` (nested ones included) from the ``network`` description."""
    root = nn.Sequential()
    for path, class_name, arguments in description["modules"]:
        cls = MODULE_CLASSES.get(class_name)
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


def load_state(bnn: SparseBNN, path: PathLike) -> SparseBNN:
    """Load the fitted state in the save file (or checkpoint) ``path`` into ``bnn``, which
    must have been built with the same architecture, priors and likelihood.

    :returns: ``bnn``.
    :raises SaveFileError: naming the first difference (module, prior, dtype, ...).
    """
    check_bnn(bnn, "load_state")
    state_into(bnn, read(path), f"{str(path)!r}")
    return bnn


def load(path: PathLike, map_location="cpu") -> SparseBNN:
    """Rebuild the :class:`~pyro_sparse_bnn.core.network.SparseBNN` saved in ``path``.

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
    state_into(bnn.to(device), contents, f"{str(path)!r}")
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
    """The :class:`~pyro_sparse_bnn.core.fit.FitHistory` saved in ``path`` (``None`` if none was)."""
    history = read(path).get("history")
    return None if history is None else FitHistory(**history)

