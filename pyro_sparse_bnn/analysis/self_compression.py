"""Self-compression: score units from the fitted guide, delete the least relevant, refit, repeat.

Carannante, Dera, Rasool & Bouaynaya observe that a plain mean-field Gaussian BNN
(:class:`~pyro_sparse_bnn.core.priors.self_compressing.SelfCompressingGaussian`) discovers its own
redundancy: after fitting, many nodes / conv kernels have a posterior-mean norm or a
signal-to-noise ratio near zero. Deleting them, refitting from the surviving posterior and
repeating keeps the accuracy.

* :func:`unit_relevance` -- relevance of every hidden unit (node of a linear layer, output
  channel of a conv layer) from the posterior moments of its row of the augmented
  ``(out_units, fan_in + 1)`` matrix: ``"norm"`` (``||mu_j||_2``) or ``"snr"``
  (``||mu_j||_2 / ||sigma_j||_2``). Works for every prior with weight moments.
* :func:`select_units` -- the pruning rule: per layer, delete a ``fraction`` or a ``count``
  of the least relevant units, or every unit whose relevance is below a ``threshold``.
* :func:`shrink_network` -- a physically smaller copy of a plain ``nn.Sequential`` (also
  used for deterministic baselines); :func:`shrink_bnn` does the same for a self-compressing
  BNN and initialises the smaller guide from the surviving posterior (means and scales).
* :func:`self_compress` -- the iterative loop with a validation-loss stopping rule, a target
  size, a progress bar and a history of every round.
"""

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence

import torch
from torch import nn

from ..core.architecture import parse_sequential
from ..core.errors import HyperparameterError, InputError
from ..core.fit import fit
from ..core.network import SparseBNN, check_bnn
from ..core.priors.base import LayerSpec
from ..core.priors.self_compressing import RELEVANCE_SCORES, SelfCompressingLayer, row_relevance
from ..core.progress import progress_bar
from ..core.validation import check_positive_int
from .calibration import accuracy
from .compress import KeptSlice, SelectInputs, assemble, kept_slices, layer_module

__all__ = [
    "unit_relevance",
    "network_relevance",
    "select_units",
    "shrink_network",
    "shrink_bnn",
    "validation_metrics",
    "self_compress",
    "CompressionRound",
    "SelfCompression",
]


def _check_score(score: str) -> str:
    if score not in RELEVANCE_SCORES:
        raise HyperparameterError(f"score must be one of {RELEVANCE_SCORES}, got {score!r}")
    return score


@torch.no_grad()
def unit_relevance(bnn: SparseBNN, score: str = "snr") -> Dict[str, torch.Tensor]:
    """Relevance of every hidden unit of a fitted BNN, from its posterior weight moments.

    :param bnn: a :class:`SparseBNN` whose prior has weight moments (every prior of the
        library; for spike-and-slab priors they are conditional on inclusion).
    :param str score: ``"snr"`` (``||mu_j|| / ||sigma_j||`` over row ``j`` of the augmented
        matrix: incoming weights and bias) or ``"norm"`` (``||mu_j||``).
    :returns: ``{layer_name: (out_units,)}`` for every layer but the output layer.
    """
    _check_score(score)
    check_bnn(bnn, "unit_relevance")
    return {layer.spec.name: row_relevance(*layer.weight_moments(), score) for layer in bnn.layers[:-1]}


@torch.no_grad()
def network_relevance(net: nn.Sequential, input_shape=None) -> List[torch.Tensor]:
    """Weight-norm relevance ``||[W_j, b_j]||_2`` of every hidden unit of a deterministic
    ``nn.Sequential`` (the baseline of self-compression), one ``(out_units,)`` per hidden layer."""
    specs = parse_sequential(net, input_shape).specs
    return [row_relevance(spec.augment(spec.module.weight, spec.module.bias), None, "norm") for spec in specs[:-1]]


def select_units(relevance, fraction: Optional[float] = None, count: Optional[int] = None,
                 threshold: Optional[float] = None, min_units: int = 1) -> List[torch.Tensor]:
    """The pruning rule: which units of every hidden layer to keep.

    Give exactly one of ``fraction``, ``count`` and ``threshold``. In every layer of
    ``n`` units, ``fraction`` deletes the ``floor(fraction * n + 1/2)`` (at least one) least
    relevant units, ``count`` deletes ``count`` of them, ``threshold`` deletes every unit
    whose relevance is below it; a layer never drops below ``min_units`` (the most relevant
    survive). Ties are broken by unit index.

    :param relevance: ``{layer: (n,)}`` (as :func:`unit_relevance` returns) or a sequence of
        ``(n,)`` tensors, one per hidden layer.
    :returns: boolean keep masks, one ``(n,)`` per hidden layer, in order.
    """
    scores = list(relevance.values()) if isinstance(relevance, dict) else list(relevance)
    given = [name for name, v in (("fraction", fraction), ("count", count), ("threshold", threshold))
             if v is not None]
    if len(given) != 1:
        raise HyperparameterError(f"give exactly one of fraction, count and threshold, got {given or 'none'}")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise HyperparameterError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    if count is not None:
        count = check_positive_int("count", count)
    if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
        raise HyperparameterError(f"threshold must be a finite number, got {threshold!r}")
    min_units = check_positive_int("min_units", min_units)
    masks = []
    for score in scores:
        if score.dim() != 1 or not torch.isfinite(score).all():
            raise InputError(f"relevance scores must be finite 1-D tensors, got shape {tuple(score.shape)}")
        n = len(score)
        if threshold is not None:
            drop = int((score < threshold).sum())
        elif fraction is not None:
            drop = max(1, math.floor(fraction * n + 0.5))
        else:
            drop = count
        drop = max(0, min(drop, n - min_units))
        order = torch.sort(score, stable=True).indices  # least relevant first
        keep = torch.ones(n, dtype=torch.bool, device=score.device)
        keep[order[:drop]] = False
        masks.append(keep)
    return masks


# --------------------------------------------------------------------------------------
# Smaller networks
# --------------------------------------------------------------------------------------
def augmented_columns(spec: LayerSpec, cut: KeptSlice) -> torch.Tensor:
    """Boolean mask over the ``fan_in + 1`` columns of the augmented matrix of ``spec`` that
    belong to the kept input units of ``cut`` (the bias column is kept)."""
    columns = cut.columns.repeat_interleave(spec.fan_in // spec.in_units)
    if spec.has_bias:
        columns = torch.cat([columns, columns.new_ones(1)])
    return columns


def _check_keep(specs: Sequence[LayerSpec], keep) -> List[torch.Tensor]:
    keep = list(keep)
    if len(keep) != len(specs) - 1:
        raise InputError(f"keep needs one mask per hidden layer ({len(specs) - 1}), got {len(keep)}")
    return [_check_mask(mask, spec.out_units, f"keep mask of layer {spec.name}")
            for spec, mask in zip(specs, keep, strict=False)]


def _check_mask(mask, num_units: int, what: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool or mask.shape != (num_units,):
        raise InputError(f"{what} must be a boolean tensor of shape ({num_units},), got {mask.dtype} {tuple(mask.shape)}")
    if not mask.any():
        raise InputError(f"{what} removes every unit")
    return mask


def _kept_slices(specs, keep, kept_inputs=None) -> List[KeptSlice]:
    """:func:`~pyro_sparse_bnn.analysis.compress.kept_slices` of every layer, on the CPU
    (``kept_inputs`` of the first layer: all by default)."""
    kept_in = torch.ones(specs[0].in_units, dtype=torch.bool) if kept_inputs is None else kept_inputs.cpu()
    return list(kept_slices([spec.weight_shape for spec in specs], kept_in, [mask.cpu() for mask in keep]))


@torch.no_grad()
def shrink_network(net: nn.Sequential, keep, input_shape=None, kept_inputs=None) -> nn.Sequential:
    """A copy of ``net`` with hidden units (and optionally input units) physically removed.

    :param net: an ``nn.Sequential`` of the kind :class:`SparseBNN` takes.
    :param keep: one boolean mask ``(out_units,)`` per hidden parametric layer; a removed
        unit takes its row (weights and bias) and its columns in the next layer with it (a
        conv channel: its ``H * W`` block after ``nn.Flatten``).
    :param input_shape: shape of one example (see
        :func:`~pyro_sparse_bnn.core.architecture.parse_sequential`; ``None`` infers it).
    :param kept_inputs: ``None`` (keep every input), or a boolean mask over the first
        layer's input units (features of a linear layer, channels of a conv layer); the
        removed ones lose their columns of the first layer, and a
        :class:`~pyro_sparse_bnn.analysis.compress.SelectInputs` placed just before that layer picks
        the kept ones, so the copy still takes the full input, as a compressed module does.
    :returns: a flat ``nn.Sequential`` with the same fixed modules and smaller layers.
    :raises InputError: for masks of the wrong shape or dtype, or masks that remove every unit
        of a layer.
    """
    architecture = parse_sequential(net, input_shape)
    specs = architecture.specs
    masks = _check_keep(specs, keep)
    if kept_inputs is not None:
        kept_inputs = _check_mask(kept_inputs, specs[0].in_units, f"kept_inputs of layer {specs[0].name}")
    layers = [layer_module(spec, cut.slice(spec.module.weight),
                           None if spec.module.bias is None else spec.module.bias[cut.rows.to(spec.module.bias.device)])
              for spec, cut in zip(specs, _kept_slices(specs, masks, kept_inputs), strict=True)]
    select = None
    if kept_inputs is not None:
        indices = kept_inputs.nonzero().flatten().to(specs[0].module.weight.device)
        select = SelectInputs(indices, specs[0].in_units, dim=1 if specs[0].kind == "conv2d" else -1)
    return assemble(architecture.stages, layers, select)


def _require_self_compressing(bnn, what: str) -> None:
    check_bnn(bnn, what)
    others = sorted({type(p).__name__ for p, layer in zip(bnn.priors, bnn.layers, strict=True)
                     if not isinstance(layer, SelfCompressingLayer)})
    if others:
        raise HyperparameterError(
            f"{what} needs the SelfCompressingGaussian prior on every layer, got {', '.join(others)}"
        )


@torch.no_grad()
def shrink_bnn(bnn: SparseBNN, keep) -> SparseBNN:
    """A smaller self-compressing BNN whose guide is the surviving part of ``bnn``'s guide.

    The new network has the same priors, likelihood (a copy, with any learned noise),
    ``num_data``, temperature and local-reparameterisation flag; every layer's guide means
    and ``rho`` are the rows and columns of the kept units, so before any refit it computes
    exactly what ``bnn`` computes with the deleted units' outputs removed.

    :param keep: one boolean mask ``(out_units,)`` per hidden layer (:func:`select_units`).
    """
    _require_self_compressing(bnn, "shrink_bnn")
    specs = [layer.spec for layer in bnn.layers]
    masks = _check_keep(specs, keep)
    net = nn.Sequential(*[stage.module for stage in bnn.architecture.stages])
    smaller = SparseBNN(
        shrink_network(net, masks, bnn.input_shape), list(bnn.priors), likelihood=copy.deepcopy(bnn.likelihood),
        num_data=bnn.num_data, temperature=float(bnn.temperature),
        local_reparameterization=bnn.local_reparameterization, input_shape=bnn.input_shape,
    )
    for spec, cut, old, new in zip(specs, _kept_slices(specs, masks), bnn.layers, smaller.layers, strict=True):
        augmented = cut._replace(columns=augmented_columns(spec, cut))
        new.slab.loc.copy_(augmented.slice(old.slab.loc))
        new.slab.rho.copy_(augmented.slice(old.slab.rho))
    smaller.num_steps.copy_(bnn.num_steps)
    return smaller


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------
@torch.no_grad()
def validation_metrics(bnn: SparseBNN, x, y, num_samples: int = 30, batch_size: Optional[int] = None):
    """``(metric, loss)`` of the Monte Carlo posterior predictive on validation data.

    Classification: ``metric`` is the accuracy of the predictive probabilities, ``loss`` the
    mean negative log predictive probability of the labels. Regression: ``metric`` is the
    RMSE of the predictive mean, ``loss`` the mean Gaussian negative log density with the
    predictive standard deviation (weight uncertainty and observation noise).
    """
    x, y = bnn.as_data(x, y)
    x, y = bnn.check_data(x, y)
    prediction = bnn.predict(x, num_samples=num_samples, batch_size=batch_size)
    y = y.cpu()  # where the prediction is
    if bnn.likelihood.is_classification:
        probs = prediction.probs
        picked = probs[torch.arange(len(y), device=y.device), y].clamp(min=torch.finfo(probs.dtype).tiny)
        return accuracy(probs, y), float(-picked.log().double().mean())
    mean, std = prediction.mean.reshape(y.shape).double(), prediction.std.reshape(y.shape).double()
    rmse = float((mean - y).square().mean().sqrt())
    nll = 0.5 * torch.log(2 * math.pi * std.square()) + (y - mean).square() / (2 * std.square())
    return rmse, float(nll.mean())


@dataclass
class CompressionRound:
    """One round of :func:`self_compress` (round 0: the network it started from).

    :ivar int round: round number. :ivar kept_units: units of every hidden layer after it.
    :ivar int num_params: weights and biases of the network after it.
    :ivar str metric_name: ``"accuracy"`` or ``"rmse"``. :ivar float metric: its validation value.
    :ivar float val_loss: validation loss (see :func:`validation_metrics`).
    :ivar bool accepted: whether the round's network was kept (``False``: it broke the
        validation-loss tolerance and the previous network was returned).
    :ivar float seconds: wall-clock seconds of the round (refit and evaluation).
    """

    round: int
    kept_units: tuple
    num_params: int
    metric_name: str
    metric: float
    val_loss: float
    accepted: bool = True
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "kept_units": list(self.kept_units)}


class SelfCompression(NamedTuple):
    """Result of :func:`self_compress`: ``bnn, history = self_compress(...)``."""

    bnn: SparseBNN
    history: List[CompressionRound]


def _unpack_pair(data, what: str):
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        return data.x_train, data.y_train
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data
    raise InputError(f"{what} must be a pair (x, y) or a DataSplit, got {type(data).__name__}")


def _hidden_units(bnn: SparseBNN) -> tuple:
    return tuple(layer.spec.out_units for layer in bnn.layers[:-1])


def self_compress(
    bnn: SparseBNN,
    data,
    validation,
    *,
    score: str = "snr",
    fraction: Optional[float] = None,
    count: Optional[int] = None,
    threshold: Optional[float] = None,
    min_units: int = 1,
    rounds: int = 10,
    epochs: int = 20,
    tolerance: Optional[float] = 0.05,
    target_units: Optional[int] = None,
    num_samples: int = 30,
    eval_batch_size: Optional[int] = None,
    fit_kwargs: Optional[dict] = None,
    progress: Optional[bool] = None,
    callback=None,
) -> SelfCompression:
    """Prune a fitted self-compressing BNN iteratively: score, delete, refit, repeat.

    Every round scores the hidden units (:func:`unit_relevance` with ``score``), deletes the
    least relevant ones by the rule of :func:`select_units` (``fraction`` or ``count`` per
    layer, or every unit below ``threshold``; default ``fraction=0.2``), builds the smaller
    network with its guide initialised from the surviving posterior (:func:`shrink_bnn`),
    refits it for ``epochs`` epochs with :func:`~pyro_sparse_bnn.core.fit.fit` and evaluates it on
    the validation data (:func:`validation_metrics`).

    Stopping: after ``rounds`` rounds; when a round's validation loss exceeds the starting
    network's by more than ``tolerance`` (nats per example; that round is recorded with
    ``accepted=False`` and the previous network is returned); when the total number of
    hidden units is at most ``target_units``; or when the rule deletes nothing.

    :param bnn: a fitted :class:`SparseBNN` with the
        :class:`~pyro_sparse_bnn.core.priors.self_compressing.SelfCompressingGaussian` prior.
    :param data: training data ``(x, y)`` (or a ``DataSplit``: its training split), of
        length ``bnn.num_data``.
    :param validation: validation data ``(x_val, y_val)``.
    :param int epochs: refit epochs per round. :param fit_kwargs: further arguments of
        :func:`~pyro_sparse_bnn.core.fit.fit` (``batch_size``, ``lr``, ``seed``, ...).
    :param tolerance: allowed increase of the validation loss, or ``None`` (never stop on it).
    :param int num_samples: posterior draws of the validation predictive.
    :param callback: ``callback(round, bnn)`` after every round (e.g. to record test accuracy).
    :param progress: a bar over the rounds (``None``, the default: only in a terminal or a
        notebook).
    :returns: :class:`SelfCompression` ``(bnn, history)``; ``history[0]`` is the starting
        network, one :class:`CompressionRound` per round after it.
    :raises NotFittedError: if ``bnn`` has not been fitted.
    """
    _require_self_compressing(bnn, "self_compress")
    check_bnn(bnn, "self_compress", fitted=True)
    _check_score(score)
    if fraction is None and count is None and threshold is None:
        fraction = 0.2
    select_units([torch.ones(2)], fraction, count, threshold, min_units)  # validates the rule
    rounds, epochs = check_positive_int("rounds", rounds), check_positive_int("epochs", epochs)
    num_samples = check_positive_int("num_samples", num_samples)
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise HyperparameterError(f"tolerance must be a non-negative number or None, got {tolerance!r}")
    if target_units is not None:
        target_units = check_positive_int("target_units", target_units)
    if len(bnn.layers) < 2:
        raise InputError("self_compress needs a network with at least one hidden layer")
    x, y = _unpack_pair(data, "data")
    x_val, y_val = _unpack_pair(validation, "validation")
    fit_kwargs = dict(fit_kwargs or {})
    for key in ("epochs", "progress"):
        if key in fit_kwargs:
            raise HyperparameterError(f"pass {key} to self_compress, not in fit_kwargs")

    def evaluate(network, round_index, start):
        metric, loss = validation_metrics(network, x_val, y_val, num_samples, eval_batch_size)
        return CompressionRound(
            round=round_index, kept_units=_hidden_units(network),
            num_params=sum(layer.spec.num_params for layer in network.layers),
            metric_name="accuracy" if network.likelihood.is_classification else "rmse",
            metric=metric, val_loss=loss, seconds=time.perf_counter() - start,
        )

    history = [evaluate(bnn, 0, time.perf_counter())]
    if callback is not None:
        callback(0, bnn)
    bar = progress_bar(progress, total=rounds, desc="self-compression", unit="round")
    try:
        for round_index in range(1, rounds + 1):
            if target_units is not None and sum(history[-1].kept_units) <= target_units:
                break
            keep = select_units(unit_relevance(bnn, score), fraction, count, threshold, min_units)
            if all(bool(k.all()) for k in keep):
                break
            start = time.perf_counter()
            candidate = shrink_bnn(bnn, keep)
            fit(candidate, x, y, epochs=epochs, progress=False, **fit_kwargs)
            row = evaluate(candidate, round_index, start)
            if tolerance is not None and row.val_loss > history[0].val_loss + tolerance:
                row.accepted = False
                history.append(row)
                break
            history.append(row)
            bnn = candidate
            if callback is not None:
                callback(round_index, bnn)
            bar.update(1)
            bar.set_postfix(units="-".join(map(str, row.kept_units)), **{row.metric_name: f"{row.metric:.4g}"},
                            val_loss=f"{row.val_loss:.4g}")
    finally:
        bar.close()
    return SelfCompression(bnn, history)
