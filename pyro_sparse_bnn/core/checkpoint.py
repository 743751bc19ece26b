"""Checkpoints of a running :func:`~pyro_sparse_bnn.core.fit.fit`: what resuming needs, and writing it.

A checkpoint is a save file (:mod:`~pyro_sparse_bnn.core.savefile`, so :func:`~pyro_sparse_bnn.persistence.load`
reads it as a fitted network) with a ``fit_state`` entry:

* ``epoch``: epochs completed;
* ``optimizer``: the state of every torch optimiser inside the Pyro optimiser (Adam's moments
  and step counts, and the learning rates, which carry the ``lr_decay`` position), keyed by
  parameter *name*: SVI hands parameters to the optimiser as a set, whose order differs from
  run to run, so positions would not identify them;
* ``rng``: the states of torch's (and CUDA's, if initialised), numpy's and Python's global
  generators, which drive the guide draws and the batch shuffle (``torch.randperm``, or a
  ``DataLoader``'s sampler seeded from torch's generator);
* ``config``: the :func:`~pyro_sparse_bnn.core.fit.fit` arguments that shape the trajectory
  (epochs, batch size, learning rates, schedules, ...), checked on resume.

The temperature and KL-weight schedules and the indicator warm-up are functions of the epoch,
so the epoch counter restores them.
"""

import dataclasses
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from pyro.optim import PyroOptim

from .errors import HyperparameterError, SaveFileError
from .optim import JointOptim
from .savefile import contents, write

__all__ = ["rng_state", "set_rng_state", "optimizer_state", "set_optimizer_state", "Checkpoints"]


def rng_state() -> dict:
    """States of the global generators (torch, CUDA if initialised, numpy, ``random``), as
    plain data a weights-only ``torch.load`` reads."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "random": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators from :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


def _torch_optimizers(optim: PyroOptim) -> List[torch.optim.Optimizer]:
    if isinstance(optim, JointOptim):
        return [] if optim.optimizer is None else [optim.optimizer]
    optimizers = list(optim.optim_objs.values())
    if not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        raise HyperparameterError(
            f"checkpoints support JointOptim and pyro.optim optimisers, not {type(optim).__name__} "
            f"(learning-rate schedulers included); use lr_decay for a decaying learning rate"
        )
    return optimizers


def optimizer_state(optim: PyroOptim, names: Dict[int, str]) -> List[dict]:
    """The state of every torch optimiser in ``optim``, parameters named by ``names``
    (``id(parameter) -> name``), tensors copied to the CPU."""
    states = []
    for optimizer in _torch_optimizers(optim):
        flat = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        saved = optimizer.state_dict()
        states.append({
            "state": {flat[i]: {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
                                for k, v in s.items()} for i, s in saved["state"].items()},
            "param_groups": [{**g, "params": [flat[i] for i in g["params"]]} for g in saved["param_groups"]],
        })
    return states


def set_optimizer_state(optim: PyroOptim, parameters: Dict[str, torch.Tensor], states: List[dict]) -> None:
    """Load :func:`optimizer_state` into ``optim``, first creating its torch optimisers for
    ``parameters`` (``name -> parameter``; a call without gradients creates them and steps
    nothing)."""
    for p in parameters.values():
        p.grad = None
    optim(list(parameters.values()))
    names = {id(p): n for n, p in parameters.items()}
    by_name = {n: s for s in states for g in s["param_groups"] for n in g["params"]}
    for optimizer in _torch_optimizers(optim):
        groups = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
        flat = [n for group in groups for n in group]
        if flat[0] not in by_name:
            raise SaveFileError(f"the checkpoint has no optimiser state for parameter {flat[0]}")
        saved = by_name[flat[0]]
        saved_groups = {frozenset(g["params"]): g for g in saved["param_groups"]}
        try:
            param_groups = [{**saved_groups[frozenset(group)], "params": group} for group in groups]
        except KeyError:
            raise SaveFileError(
                "the checkpoint's optimiser groups its parameters differently (was logit_lr the same?)"
            ) from None
        index = {n: i for i, n in enumerate(flat)}
        optimizer.load_state_dict({
            "state": {index[n]: s for n, s in saved["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in param_groups],
        })


class Checkpoints:
    """Keeps the latest end-of-epoch state of a fit and writes it to ``path`` every ``every``
    epochs and on :meth:`flush` (end of the fit, or an exception).

    Snapshots are taken only of finite parameters, so the file always holds a finite state.
    """

    def __init__(self, path, every: int, bnn, optim: PyroOptim, config: dict):
        self.path, self.every, self.bnn, self.optim, self.config = path, every, bnn, optim, config
        self.names = {id(p): n for n, p in bnn.named_parameters()}
        self.latest: Optional[dict] = None
        self.latest_epoch: Optional[int] = None
        self.written_epoch: Optional[int] = None

    def snapshot(self, epochs_done: int, history) -> None:
        """Record the state after ``epochs_done`` epochs (skipped if a parameter is not
        finite); write it if ``epochs_done`` is a multiple of ``every``."""
        if not all(bool(torch.isfinite(p).all()) for p in self.bnn.parameters()):
            return
        fit_state = {"epoch": epochs_done, "optimizer": optimizer_state(self.optim, self.names),
                     "rng": rng_state(), "config": self.config}
        self.latest = contents(self.bnn, dataclasses.asdict(history), fit_state)
        self.latest_epoch = epochs_done
        if epochs_done % self.every == 0:
            self.flush()

    def flush(self) -> None:
        """Write the latest snapshot unless it is already on disk."""
        if self.latest is not None and self.written_epoch != self.latest_epoch:
            write(self.latest, self.path)
            self.written_epoch = self.latest_epoch

    def describe(self) -> str:
        """Where the last finite state is, for error messages."""
        if self.latest_epoch is None:
            return f"no checkpoint was written to {str(self.path)!r} (no epoch had ended with finite parameters)"
        return (f"{str(self.path)!r} holds the last finite state, after epoch {self.latest_epoch - 1} "
                f"({self.latest_epoch} epochs done)")
