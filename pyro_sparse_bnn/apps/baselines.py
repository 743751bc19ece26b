"""Deterministic baselines: what a user would pick instead of a sparse BNN.

* :func:`train_deterministic` -- the dense network trained with the same budget.
* :func:`magnitude_prune` -- structured magnitude pruning of a trained dense network to
  given widths (e.g. those a compressed BNN kept), returning a module of the same form as
  :func:`~pyro_sparse_bnn.analysis.compress.compress`'s, ready for
  :func:`~pyro_sparse_bnn.analysis.finetune.finetune`.
* :func:`train_from_scratch` -- the same small architecture re-initialised and trained from
  scratch (does the pruned structure, rather than the pruned weights, carry the accuracy?).

Example: prune the dense network to the widths the BNN found, fine-tune both for the same
number of epochs, and compare::

    module, report = psb.compress(bnn)
    pruned = psb.magnitude_prune(dense, report)
    pruned_tuned, _ = psb.finetune(pruned, x_train, y_train, epochs=5)
    bnn_tuned, _ = psb.finetune(module, x_train, y_train, epochs=5)
    scratch, _ = psb.train_from_scratch(module, x_train, y_train, epochs=15)
"""

import copy
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import nn

from ..analysis.compress import Compressed, CompressionReport, ConstantOutput, SelectInputs
from ..analysis.finetune import Finetuned, check_trainable, finetune
from ..analysis.self_compression import network_relevance, shrink_network
from ..core.architecture import Architecture, parse_sequential
from ..core.errors import HyperparameterError, InputError
from ..core.validation import check_seed

__all__ = [
    "DeterministicResult",
    "train_deterministic",
    "magnitude_prune",
    "module_widths",
    "reinitialized",
    "train_from_scratch",
]


@dataclass
class DeterministicResult:
    """A trained deterministic network and its per-epoch training loss."""

    module: nn.Module
    loss: List[float] = field(default_factory=list)
    seconds: float = 0.0


def train_deterministic(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str = "classification",
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> DeterministicResult:
    """Train a copy of ``net`` with Adam on cross-entropy (classification) or mean squared
    error (regression), visiting every example once per epoch in shuffled minibatches (the
    loop of :func:`~pyro_sparse_bnn.analysis.finetune.finetune`, without masks).

    :param x: ``(n, *input_shape)``; :param y: ``(n,)`` labels or targets (``(n, outputs)``
        for several regression outputs).
    :param str task: ``"classification"`` or ``"regression"``.
    :returns: :class:`DeterministicResult` (the trained copy; ``net`` is untouched).
    :raises InputError, HyperparameterError: as :func:`~pyro_sparse_bnn.analysis.finetune.finetune`.
    """
    check_trainable(net, "train_deterministic")
    module, history = finetune(net, x, y, task=task, epochs=epochs, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, seed=seed, keep_zeros=False, progress=False)
    return DeterministicResult(module, history.loss, sum(history.seconds))


# -- structured magnitude pruning ------------------------------------------------------------------
def module_widths(module: nn.Module) -> Tuple[int, ...]:
    """Widths ``(inputs, hidden_1, ..., outputs)`` of a compressed module (the output of
    :func:`~pyro_sparse_bnn.analysis.compress.compress` or :func:`magnitude_prune`): the inputs its
    :class:`~pyro_sparse_bnn.analysis.compress.SelectInputs` keeps (all inputs of the first layer
    without one), then the output features / channels of every ``nn.Linear`` / ``nn.Conv2d``.

    :raises InputError: for a :class:`~pyro_sparse_bnn.analysis.compress.ConstantOutput` or a module
        without linear or conv layers.
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"module_widths needs an nn.Module, got {type(module).__name__}")
    modules = list(module.modules())
    layers = [m for m in modules if type(m) in (nn.Linear, nn.Conv2d)]
    if not layers:
        what = ("a ConstantOutput (the compressed network kept no unit)"
                if any(isinstance(m, ConstantOutput) for m in modules) else "a module without Linear or Conv2d layers")
        raise InputError(f"cannot read widths from {what}")
    select = next((m for m in modules if isinstance(m, SelectInputs)), None)
    first = layers[0]
    inputs = len(select.indices) if select is not None else (
        first.in_features if isinstance(first, nn.Linear) else first.in_channels)
    return (inputs,) + tuple(m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers)


def _requested_widths(widths, architecture: Architecture) -> Tuple[int, ...]:
    if isinstance(widths, Compressed):
        widths = widths.report
    if isinstance(widths, CompressionReport):
        widths = widths.architecture_after
    elif isinstance(widths, nn.Module):
        widths = module_widths(widths)
    dense = architecture.widths
    arch = "-".join(map(str, dense))
    try:
        widths = tuple(widths)
        ok = all(not isinstance(w, bool) and int(w) == w for w in widths)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"widths must be a sequence of integers (inputs, hidden..., outputs), a CompressionReport or a "
            f"compressed module, got {widths!r}"
        )
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(dense):
        raise InputError(
            f"widths {widths} has {len(widths)} entries but the network {arch} needs {len(dense)}: "
            f"inputs, one per hidden layer, outputs"
        )
    if widths[-1] != dense[-1]:
        raise InputError(f"widths {widths} ends in {widths[-1]} outputs but the network {arch} has {dense[-1]}")
    for i, (w, d) in enumerate(zip(widths, dense, strict=True)):
        if not 1 <= w <= d:
            where = "inputs" if i == 0 else f"layer {architecture.specs[i - 1].name}"
            raise InputError(f"widths {widths}: {where} needs between 1 and {d} units (network {arch}), got {w}")
    return widths


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` largest ``scores`` (ties: the lower index)."""
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[torch.sort(scores.cpu(), descending=True, stable=True).indices[:k]] = True
    return mask


@torch.no_grad()
def magnitude_prune(net: nn.Sequential, widths, input_shape=None) -> nn.Sequential:
    """Structured magnitude pruning of a trained dense network to given widths.

    Ranks the units of every layer by the L2 norm of their weights and keeps the top ones
    (one shot, every layer ranked on the dense network; ties go to the lower index):

    * inputs -- the first layer's input features (input channels of a conv-first network) --
      by the norm of their outgoing weights in the first layer (a channel: all its kernels);
    * hidden units -- nodes of linear layers, output channels of conv layers -- by the norm
      of their incoming weights and bias (a row of the augmented matrix).

    The dropped units are removed physically: smaller ``nn.Linear`` / ``nn.Conv2d``, a
    removed channel taking its input slice of the next conv layer or its ``H * W`` column
    block of the linear layer after ``nn.Flatten``. The result has the form of
    :func:`~pyro_sparse_bnn.analysis.compress.compress`'s module: the leading parameter-free modules,
    a :class:`~pyro_sparse_bnn.analysis.compress.SelectInputs` picking the kept inputs, then the
    smaller layers with the same activations and pooling. It computes what ``net`` computes
    with the outputs of the dropped units set to zero.

    :param net: a trained dense ``nn.Sequential`` of the kind
        :class:`~pyro_sparse_bnn.core.network.SparseBNN` takes (it is not modified).
    :param widths: the widths to keep, ``(inputs, hidden_1, ..., outputs)`` counted in units
        (the outputs must be all of ``net``'s): a sequence of ints, a
        :class:`~pyro_sparse_bnn.analysis.compress.CompressionReport` (its ``architecture_after``:
        "the widths the BNN found"), a :class:`~pyro_sparse_bnn.analysis.compress.Compressed` result,
        or a compressed module (read by :func:`module_widths`).
    :param input_shape: shape of one example, for a network that starts with a conv layer
        (see :func:`~pyro_sparse_bnn.core.architecture.parse_sequential`).
    :returns: a new ``nn.Sequential`` taking the full input ``(batch, *input_shape)``.
    :raises InputError: for widths of the wrong length, outside ``[1, dense width]``, or
        with a different number of outputs.
    :raises UnsupportedLayerError: for a network ``SparseBNN`` would not take.
    """
    architecture = parse_sequential(net, input_shape)
    widths = _requested_widths(widths, architecture)
    first = architecture.specs[0]
    outgoing = first.module.weight.transpose(0, 1).reshape(first.in_units, -1).norm(dim=1)
    incoming = network_relevance(net, input_shape)
    keep = [_top(score, k) for score, k in zip(incoming, widths[1:-1], strict=True)]
    return shrink_network(net, keep, input_shape, kept_inputs=_top(outgoing, widths[0]))


# -- the same architecture from scratch ------------------------------------------------------------
def reinitialized(module: nn.Module, seed: Optional[int] = 0) -> nn.Module:
    """A copy of ``module`` whose layers are re-initialised by PyTorch's default rule (each
    submodule's ``reset_parameters()``: Kaiming-uniform weights and uniform biases for
    ``nn.Linear`` / ``nn.Conv2d``); buffers such as the input selection are kept.

    :param seed: seed of the initialisation, drawn without touching the global random
        state (``None``: from the global generator).
    :raises InputError: for a module without trainable parameters.
    """
    check_trainable(module, "reinitialized")
    seed = check_seed(seed)
    fresh = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False)):
                m.reset_parameters()
    return fresh


def train_from_scratch(module: nn.Module, x, y, *, seed: Optional[int] = 0, **options) -> Finetuned:
    """Train the architecture of ``module`` from a fresh initialisation (the "same widths
    from scratch" baseline of structured pruning).

    ``module`` -- a compressed module or the output of :func:`magnitude_prune` -- gives the
    architecture: its layer shapes and input selection. Its weights are discarded
    (:func:`reinitialized` with ``seed``) and every weight trains, zeros included: the
    baseline is the small dense architecture. Give it the budget of pruning plus
    fine-tuning for a fair comparison.

    :param seed: seed of the initialisation and of the training order (see
        :func:`~pyro_sparse_bnn.analysis.finetune.finetune`).
    :param options: the other keyword arguments of :func:`~pyro_sparse_bnn.analysis.finetune.finetune`
        (``task``, ``epochs``, ``batch_size``, ``lr``, ``lr_decay``, ``weight_decay``,
        ``x_val``, ``y_val``, ``restore_best``, ``progress``; not ``keep_zeros``).
    :returns: :class:`~pyro_sparse_bnn.analysis.finetune.Finetuned` ``(module, history)``.
    :raises InputError, HyperparameterError: as :func:`~pyro_sparse_bnn.analysis.finetune.finetune`.
    """
    check_trainable(module, "train_from_scratch")
    if "keep_zeros" in options:
        raise HyperparameterError("train_from_scratch trains every weight of the architecture: drop keep_zeros")
    return finetune(reinitialized(module, seed), x, y, seed=seed, keep_zeros=False, **options)
