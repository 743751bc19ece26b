"""The size / validation-accuracy frontier of a fitted sparse BNN, and the keep threshold it picks.

:func:`frontier` compresses a fitted network (:func:`~pyro_sparse_bnn.analysis.compress.compress`) at
a range of keep thresholds and evaluates every compressed module on **validation** data.
Choose thresholds on data held out from training *and* from the final test: a threshold
picked on the test set makes the test score of the compressed network optimistic.

:meth:`Frontier.select` returns the threshold of the smallest network whose validation
metric is within a tolerance of the uncompressed posterior's, as a
:class:`~pyro_sparse_bnn.analysis.compress.ThresholdChoice` that ``compress`` takes directly::

    front = psb.frontier(bnn, x_val, y_val)         # Frontier; front.table is a DataFrame
    module, report = psb.compress(bnn, threshold=front.select(tolerance=0.01))
    print(report.threshold_reason)                  # which threshold, and why
    psb.plot_frontier(front, tolerance=0.01)        # metric against parameters kept

The metric is the accuracy for a categorical likelihood -- a tolerance is in absolute
points: 0.01 accepts networks at most one percentage point below the posterior -- and the
root mean squared error for a Gaussian likelihood -- a tolerance is relative: 0.01 accepts
an RMSE at most 1 % above the posterior's. The posterior's metric is that of the posterior
predictive mean (``bnn.predict(x_val, num_samples, seed=seed)``).

Default thresholds. Every prior keeps a weight or group when its inclusion probability
(PIP; :mod:`pyro_sparse_bnn.analysis.inclusion`) exceeds the threshold, so the compressed network
only changes where the threshold crosses one of the PIPs of the fitted guide's switches
(:meth:`~pyro_sparse_bnn.core.priors.base.PriorLayer.inclusion_groups`). The default grid
searches those crossings, from the threshold that keeps every switch with PIP in (0, 1) to
the one that keeps none, by bisection: it keeps splitting the range where the number of
parameters kept changes most (on a log scale) until it has found ``num_thresholds``
different compressed networks. No two rows of the default grid describe the same network
(same architecture and number of non-zero weights); each row's threshold is the shortest
decimal that gives its network. Each prior's default keep rule is a row as well
(``keep_rule``): a single threshold when every layer has the same rule, else a last row with
``threshold`` NaN for "each layer's own rule" (Bayesian Compression with one ``log alpha``
threshold per layer).
"""

from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch

from ..core.errors import DegenerateNetworkWarning, HyperparameterError, InputError
from ..core.network import SparseBNN, check_bnn
from ..core.priors.bayesian_compression import GroupScaleLayer
from ..core.validation import (
    as_tensor,
    check_features,
    check_positive_int,
    check_same_length,
)
from .calibration import accuracy
from .compress import (
    CompressionReport,
    ThresholdChoice,
    analyse_structure,
    compress,
    describe_keep_rule,
    log_alpha_threshold,
    reused_readouts,
)

if TYPE_CHECKING:  # imported where used: they take a second to load
    import pandas as pd

__all__ = ["frontier", "layerwise_frontier", "Frontier"]

#: slack of the tolerance comparison, so that a metric exactly at the limit counts as within
_ROUND_OFF = 1e-9


def _check_tolerance(tolerance, name: str = "tolerance") -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise HyperparameterError(f"{name} must be a finite number >= 0, got {tolerance!r}")
    return float(tolerance)


@dataclass
class Frontier:
    """Result of :func:`frontier`: the compressed network at every threshold, evaluated on
    validation data.

    :ivar pandas.DataFrame table: one row per threshold, ordered by threshold (see
        :func:`frontier` for the columns); ``table.attrs`` repeats ``metric``,
        ``posterior_metric`` and ``params_before``.
    :ivar str metric: ``"accuracy"`` (classification) or ``"rmse"`` (regression): the name of
        the metric column.
    :ivar float posterior_metric: the validation metric of the uncompressed posterior predictive.
    :ivar int params_before: parameters of the uncompressed network.
    :ivar int num_samples: guide draws of the posterior predictive.
    :ivar seed: seed of those draws.
    """

    table: pd.DataFrame
    metric: str
    posterior_metric: float
    params_before: int
    num_samples: int
    seed: Optional[int]

    def limit(self, tolerance: float = 0.01) -> float:
        """The worst validation metric within ``tolerance`` of the posterior's: accuracy
        ``posterior_metric - tolerance``, RMSE ``posterior_metric * (1 + tolerance)``."""
        tolerance = _check_tolerance(tolerance)
        if self.metric == "accuracy":
            return self.posterior_metric - tolerance
        return self.posterior_metric * (1 + tolerance)

    def within(self, tolerance: float = 0.01) -> pd.Series:
        """Boolean Series over the rows: is the row's validation metric within ``tolerance``
        of the posterior's (at or better than :meth:`limit`)?"""
        limit, values = self.limit(tolerance), self.table[self.metric]
        if self.metric == "accuracy":
            return values >= limit - _ROUND_OFF
        return values <= limit + _ROUND_OFF * max(abs(limit), 1.0)

    def selected_index(self, tolerance: float = 0.01) -> Optional[int]:
        """Index (into :attr:`table`) of the smallest network within ``tolerance``: fewest
        non-zero parameters, then fewest parameters, then the best validation metric, then
        the lowest threshold; ``None`` when no row is within ``tolerance``."""
        rows = self.table[self.within(tolerance)]
        if rows.empty:
            return None
        order = rows.assign(_score=rows[self.metric] * (-1 if self.metric == "accuracy" else 1))
        order = order.sort_values(["nonzero_params", "params", "_score", "threshold"], kind="stable")
        return int(order.index[0])

    def threshold_at(self, index: int):
        """The threshold of row ``index`` of :attr:`table` as
        :func:`~pyro_sparse_bnn.analysis.compress.compress` takes it: a float, a tuple of
        per-layer thresholds, or ``None`` for the per-layer keep rule (``NaN`` in the table)."""
        value = self.table.loc[index, "threshold"]
        if isinstance(value, tuple):
            return value
        return None if math.isnan(value) else float(value)

    def tolerance_for_best(self) -> float:
        """The smallest tolerance that accepts the table's best network (highest accuracy,
        lowest RMSE); negative when that network beats the posterior predictive."""
        values = self.table[self.metric]
        if self.metric == "accuracy":
            return float(self.posterior_metric - values.max())
        return float(values.min() / self.posterior_metric - 1)

    def describe_bound(self, tolerance: float, reference: Optional[float] = None, whose: str = "posterior's") -> str:
        """The words for "within ``tolerance`` of ``reference``" (default: the posterior's
        validation metric), e.g. ``"within 0.01 of the posterior's validation accuracy 0.9"``."""
        reference = self.posterior_metric if reference is None else reference
        if self.metric == "accuracy":
            return f"within {tolerance:g} of the {whose} validation accuracy {reference:.4g}"
        return f"whose validation RMSE is within {100 * tolerance:g} % of the {whose} {reference:.4g}"

    def select(self, tolerance: float = 0.01) -> ThresholdChoice:
        """The threshold of the smallest network whose validation metric is within
        ``tolerance`` of the posterior's (see :meth:`selected_index`), with the reason:
        ``compress(bnn, threshold=front.select(0.01))``.

        :param float tolerance: accuracy: absolute points below the posterior's (0.01);
            RMSE: relative excess over the posterior's (0.01 = 1 %).
        :returns: :class:`~pyro_sparse_bnn.analysis.compress.ThresholdChoice` (``threshold`` is
            ``None`` when the chosen row is the per-layer keep rule).
        :raises HyperparameterError: for a negative tolerance, or when no row is within it
            (the message gives the best row).
        """
        index = self.selected_index(tolerance)
        label = "accuracy" if self.metric == "accuracy" else "RMSE"
        bound = self.describe_bound(tolerance)
        if index is None:
            values = self.table[self.metric]
            best = self.table.loc[values.idxmax() if self.metric == "accuracy" else values.idxmin()]
            raise HyperparameterError(
                f"no network of the frontier is {bound}: the best, {best.architecture} at {best.rule}, has "
                f"validation {label} {best[self.metric]:.4g}; a tolerance of {self.tolerance_for_best():.3g} "
                f"accepts it, or give other thresholds"
            )
        row = self.table.loc[index]
        reason = (f"smallest network {bound} (validation {label} {row[self.metric]:.4g} with "
                  f"{int(row.nonzero_params):,} of {self.params_before:,} parameters)")
        return ThresholdChoice(self.threshold_at(index), reason, architecture=row.architecture)

    def __str__(self):
        return (f"validation {self.metric} of the posterior predictive ({self.num_samples} draws): "
                f"{self.posterior_metric:.4g}\n{self.table.to_string()}")


# -- data and arguments -----------------------------------------------------------------------
def _validation_data(bnn: SparseBNN, x_val, y_val):
    x_val = as_tensor(x_val, "x_val", bnn.dtype, bnn.device)
    y_val = as_tensor(y_val, "y_val", bnn.dtype, bnn.device)
    check_features(x_val, bnn.input_shape, bnn.dtype, bnn.device, name="x_val")
    y_val = bnn.likelihood.check_targets(y_val, bnn.num_outputs)
    check_same_length([x_val, y_val], ["x_val", "y_val"])
    return x_val, y_val


def _check_thresholds(thresholds) -> List[float]:
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise HyperparameterError(
            f"thresholds must be a sequence of PIP thresholds in (0, 1) or None, got {thresholds!r}")
    values = list(thresholds)
    if not values:
        raise HyperparameterError("thresholds is empty: give at least one PIP threshold in (0, 1), "
                                  "or None for the default grid")
    checked = []
    for value in values:
        try:
            number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not 0 < number < 1:
            raise HyperparameterError(
                f"thresholds must lie strictly between 0 and 1 (they are PIP thresholds), got {value!r}")
        checked.append(number)
    return sorted(set(checked))


def _metric(outputs: torch.Tensor, y: torch.Tensor, classification: bool) -> float:
    """Accuracy of scores ``(n, classes)``, or RMSE of predictions shaped like ``y``."""
    outputs, y = outputs.detach().cpu(), y.cpu()  # a prediction (CPU) or a module's outputs (its device)
    if classification:
        return accuracy(outputs, y)
    return float((outputs.reshape(y.shape) - y).square().mean().sqrt())


# -- the default grid -------------------------------------------------------------------------
def _switch_probs(bnn: SparseBNN) -> torch.Tensor:
    """Sorted distinct PIPs in (0, 1) of every layer's switches: the thresholds at which the
    compressed network can change (a PIP of 0 is never kept, one of 1 always)."""
    values = torch.cat([layer.inclusion_groups().detach().flatten() for layer in bnn.layers])
    return torch.unique(values[(values > 0) & (values < 1)])


def _signature(bnn: SparseBNN, threshold: Optional[float]) -> Tuple[tuple, int]:
    """``((widths, kept weights), non-zero parameters)`` of the network compressed at
    ``threshold`` (``None``: the keep rule); the masks are nested in the threshold, so equal
    signatures mean the same kept weights."""
    structure = analyse_structure(bnn, threshold)
    weights = sum(int(mask.sum()) for mask in structure.kept_weight_masks())
    widths = structure.widths
    return (widths, weights), weights + sum(widths[1:])


def _shortest_decimal(values: torch.Tensor, first: int, last: int) -> float:
    """The shortest decimal threshold that drops ``values[:first]`` and keeps ``values[last:]``
    under the keep rule ``PIP > threshold`` (compared in the PIPs' dtype, as the priors do)."""
    n = len(values)

    def realises(t):
        return (0 < t < 1 and (first == 0 or not bool(values[first - 1] > t))
                and (last == n or bool(values[last] > t)))

    low = float(values[first - 1]) if first > 0 else 0.0
    for digits in range(1, 13):
        step = 10.0 ** -digits
        for t in (round(low, digits), round(low + step, digits)):
            if realises(t):
                return t
    return float(values[first - 1]) if first > 0 else float(values[0]) / 2


def _default_grid(bnn: SparseBNN, num_thresholds: int) -> List[Tuple[float, tuple]]:
    """``(threshold, signature)`` of up to ``num_thresholds`` different compressed networks,
    spread over the range where the network changes (see the module docstring)."""
    values = _switch_probs(bnn)
    n = len(values)
    if n == 0:
        return []

    def at(k):  # the threshold that keeps values[k:]
        return float(values[k - 1]) if k > 0 else float(values[0]) / 2

    evaluated: Dict[int, Tuple[tuple, int]] = {}

    def evaluate(k):
        if k not in evaluated:
            evaluated[k] = _signature(bnn, at(k))
        return evaluated[k]

    queue: List[tuple] = []

    def push(a, b):
        (sig_a, size_a), (sig_b, size_b) = evaluate(a), evaluate(b)
        if b - a > 1 and sig_a != sig_b:
            gap = abs(math.log(size_a) - math.log(size_b))
            heapq.heappush(queue, (-gap, a - b, a, b))

    push(0, n)
    budget = 8 * num_thresholds
    while queue and len({sig for sig, _ in evaluated.values()}) < num_thresholds and len(evaluated) < budget:
        _, _, a, b = heapq.heappop(queue)
        middle = (a + b) // 2
        push(a, middle)
        push(middle, b)
    # every position between two with the same signature has it too: one threshold per network
    spans: Dict[tuple, List[int]] = {}
    for k, (sig, _) in sorted(evaluated.items()):
        span = spans.setdefault(sig, [k, k])
        span[1] = k
    return [(_shortest_decimal(values, first, last), sig) for sig, (first, last) in spans.items()]


def _rows(bnn: SparseBNN, thresholds: Optional[Sequence[float]], num_thresholds: int) -> List[tuple]:
    """``(threshold or None, is the keep rule)`` of every row, ordered by threshold (the
    per-layer keep rule last)."""
    defaults = sorted({layer.default_threshold for layer in bnn.layers})
    single = defaults[0] if len(defaults) == 1 else None
    if thresholds is not None:
        return [(t, t == single) for t in thresholds]
    # the keep rule's row replaces the grid's row of the same network
    rule = _signature(bnn, None)[0]
    grid = [(t, False) for t, sig in _default_grid(bnn, num_thresholds) if sig != rule]
    if single is not None:
        return sorted(grid + [(single, True)])
    return sorted(grid) + [(None, True)]


# -- the frontier -----------------------------------------------------------------------------
def _record(bnn: SparseBNN, threshold: Optional[float], keep_rule: bool, metric: dict,
            report: CompressionReport) -> dict:
    """One row of the frontier's table."""
    record = {"threshold": math.nan if threshold is None else threshold}
    if any(isinstance(layer, GroupScaleLayer) for layer in bnn.layers):
        record["log_alpha_threshold"] = log_alpha_threshold(threshold)
    return {
        **record,
        "rule": describe_keep_rule(bnn, threshold),
        "keep_rule": keep_rule,
        **metric,
        "architecture": CompressionReport.format_architecture(report.architecture_after),
        "params": report.params_after,
        "nonzero_params": report.nonzero_params_after,
        "fraction_kept": report.nonzero_params_after / report.params_before,
        "flops": report.flops_after,
        "nonzero_flops": report.nonzero_flops_after,
        "weight_compression": math.nan if report.weight_compression is None else report.weight_compression,
        "bit_compression": math.nan if report.bit_compression is None else report.bit_compression,
        "degenerate": bool(report.warnings),
    }


@torch.no_grad()
def frontier(bnn: SparseBNN, x_val, y_val, thresholds: Optional[Sequence[float]] = None,
             num_thresholds: int = 20, num_samples: int = 100, seed: Optional[int] = 0,
             batch_size: Optional[int] = None) -> Frontier:
    """Compress a fitted network at many keep thresholds and evaluate each compressed module
    on validation data.

    ``x_val`` / ``y_val`` must be validation data -- held out from training and from the
    test set on which the final network is scored: the threshold chosen here is a
    hyperparameter.

    :param bnn: a fitted :class:`~pyro_sparse_bnn.core.network.SparseBNN`.
    :param x_val: validation inputs ``(n, *input_shape)`` (tensor or array).
    :param y_val: validation targets: ``(n,)`` integer labels for classification, ``(n,)``
        or ``(n, outputs)`` floats for regression.
    :param thresholds: PIP thresholds in (0, 1) to evaluate (default ``None``: the grid of
        the module docstring, with each prior's keep rule).
    :param int num_thresholds: most different networks the default grid looks for (20).
    :param int num_samples: guide draws of the posterior predictive (100).
    :param seed: seed of those draws (0; ``None``: torch's global random state).
    :param batch_size: evaluate in chunks of this many examples (default: all at once).
    :returns: :class:`Frontier`. Its ``table`` has one row per threshold, ordered by
        threshold (the per-layer keep rule, if any, last), with columns

        * ``threshold``: the PIP threshold (NaN: each layer's own keep rule);
        * ``log_alpha_threshold`` (networks with a Bayesian Compression layer): the
          equivalent ``t`` of the rule ``log alpha < t``;
        * ``rule``: the keep rule in words; ``keep_rule``: whether it is the priors' default;
        * ``accuracy`` or ``rmse``: the compressed module's validation metric;
        * ``architecture``: kept widths, e.g. ``"313-107-32-10"``;
        * ``params`` / ``nonzero_params``: parameters of the compressed module, and those
          that are not pruned weights (the size :meth:`Frontier.select` minimises);
          ``fraction_kept``: ``nonzero_params`` over the uncompressed network's parameters;
          both never increase as the threshold rises;
        * ``flops`` / ``nonzero_flops``: FLOPs per example of the compressed module;
        * ``weight_compression`` / ``bit_compression``: Louizos et al.'s rates (NaN for a
          prior without weight moments, ``inf`` when no weight is kept);
        * ``degenerate``: the network does not depend on its input (``compress`` warns
          about it; here it is only flagged).
    :raises NotFittedError: if the network has not been fitted.
    :raises InputError: for validation data of the wrong shape, dtype or length.
    :raises HyperparameterError: for empty thresholds or thresholds outside (0, 1).
    """
    check_bnn(bnn, "frontier", fitted=True)
    x_val, y_val = _validation_data(bnn, x_val, y_val)
    num_thresholds = check_positive_int("num_thresholds", num_thresholds)
    if thresholds is not None:
        thresholds = _check_thresholds(thresholds)
    judge = _Judge(bnn, x_val, y_val, num_samples, seed, batch_size)
    records = []
    with reused_readouts():  # the posterior means are the same at every threshold
        for threshold, keep_rule in _rows(bnn, thresholds, num_thresholds):
            records.append(judge.record(threshold, keep_rule))
    return judge.frontier(records)


class _Judge:
    """Compresses ``bnn`` at a threshold and scores the module on the validation data."""

    def __init__(self, bnn: SparseBNN, x_val, y_val, num_samples, seed, batch_size):
        if batch_size is not None:
            batch_size = check_positive_int("batch_size", batch_size, InputError)
        self.bnn, self.y_val, self.num_samples, self.seed = bnn, y_val, int(num_samples), seed
        self.classification = bnn.likelihood.is_classification
        self.metric = "accuracy" if self.classification else "rmse"
        prediction = bnn.predict(x_val, num_samples=num_samples, batch_size=batch_size, seed=seed)
        self.posterior_metric = _metric(prediction.mean, y_val, self.classification)
        self.chunks = [x_val] if batch_size is None else torch.split(x_val, batch_size)
        self.params_before = sum(layer.spec.num_params for layer in bnn.layers)

    def score(self, threshold) -> Tuple[float, CompressionReport]:
        """The validation metric of the network compressed at ``threshold``, and its report."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateNetworkWarning)  # flagged in the table instead
            module, report = compress(self.bnn, threshold=threshold)
        return _metric(torch.cat([module(chunk) for chunk in self.chunks]), self.y_val, self.classification), report

    def record(self, threshold, keep_rule: bool, scored: Optional[Tuple[float, CompressionReport]] = None) -> dict:
        """The table row of ``threshold``: compressed and scored here, or from ``scored``, the
        result of :meth:`score` for it."""
        value, report = self.score(threshold) if scored is None else scored
        return _record(self.bnn, threshold, keep_rule, {self.metric: value}, report)

    def frontier(self, records: List[dict]) -> Frontier:
        import pandas as pd

        table = pd.DataFrame.from_records(records)
        table.attrs.update(metric=self.metric, posterior_metric=self.posterior_metric,
                           params_before=self.params_before)
        return Frontier(table=table, metric=self.metric, posterior_metric=self.posterior_metric,
                        params_before=self.params_before, num_samples=self.num_samples, seed=self.seed)


def _next_threshold(pips: torch.Tensor, threshold: float, step: float) -> Optional[float]:
    """The threshold that drops the next ``ceil(step * kept)`` of the switches ``pips`` still
    kept at ``threshold`` (lowest PIPs first), halfway to the next kept PIP; ``None`` when
    at most one switch is kept."""
    kept = torch.unique(pips[pips > threshold])   # sorted
    if len(kept) <= 1:
        return None
    drop = min(max(1, math.ceil(step * len(kept))), len(kept) - 1)
    return float((kept[drop - 1] + kept[drop]) / 2)


@torch.no_grad()
def layerwise_frontier(bnn: SparseBNN, x_val, y_val, step: float = 0.1, max_loss: float = 0.2,
                       num_samples: int = 100, seed: Optional[int] = 0,
                       batch_size: Optional[int] = None) -> Frontier:
    """A frontier of per-layer keep thresholds, chosen greedily on validation data.

    :func:`frontier` moves one threshold through every layer at once, so every layer is
    pruned at the same inclusion probability. Layers differ in how much a unit costs (a
    first-layer input of LeNet-300-100 carries 300 weights, a unit of the last hidden layer
    11) and in how much the network needs it, so the network of a given size with the best
    validation metric usually has one threshold per layer. This walk finds them: it starts
    at each prior's keep rule and at every move tries, in every layer, raising the layer's
    threshold past the next ``step`` fraction of the switches it still keeps (the lowest
    PIPs first), and keeps the move that loses the least validation metric per parameter
    removed. It stops when no move is left or the metric has fallen more than ``max_loss``
    (absolute accuracy, or relative RMSE) below the posterior's.

    Each move compresses and evaluates the network once per layer, so a walk costs about
    ``layers x moves`` evaluations of a compressed network on ``x_val``.

    :param bnn: a fitted :class:`~pyro_sparse_bnn.core.network.SparseBNN`.
    :param x_val: validation inputs ``(n, *input_shape)``; :param y_val: their targets
        (as for :func:`frontier`). Never the test data: the walk chooses on them.
    :param float step: fraction of a layer's kept switches dropped per move, in (0, 1] (0.1).
    :param float max_loss: stop once the validation metric is more than this below the
        posterior's (accuracy points, or relative RMSE excess; 0.2).
    :param int num_samples: guide draws of the posterior predictive (100).
    :param seed: seed of those draws (0). :param batch_size: evaluate in chunks.
    :returns: :class:`Frontier` with one row per visited network, from the keep rule down,
        the columns of :func:`frontier` (``threshold`` holds a tuple of one PIP threshold per
        layer) plus ``layer``, the layer whose threshold the move raised (``None`` for the
        first row). ``select(tolerance)`` returns a per-layer
        :class:`~pyro_sparse_bnn.analysis.compress.ThresholdChoice` that ``compress`` takes.
    :raises NotFittedError: if the network has not been fitted.
    :raises InputError: for validation data of the wrong shape, dtype or length.
    :raises HyperparameterError: for ``step`` outside (0, 1] or a negative ``max_loss``.
    """
    check_bnn(bnn, "layerwise_frontier", fitted=True)
    x_val, y_val = _validation_data(bnn, x_val, y_val)
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
        raise HyperparameterError(f"step must lie in (0, 1] (a fraction of the kept switches), got {step!r}")
    max_loss = _check_tolerance(max_loss, "max_loss")
    judge = _Judge(bnn, x_val, y_val, num_samples, seed, batch_size)
    better = 1 if judge.metric == "accuracy" else -1
    floor = judge.posterior_metric - max_loss if better == 1 else judge.posterior_metric * (1 + max_loss)
    pips = [layer.inclusion_groups().detach().flatten() for layer in bnn.layers]
    thresholds = tuple(float(layer.default_threshold) for layer in bnn.layers)
    with reused_readouts():
        current = {**judge.record(thresholds, keep_rule=True), "layer": None}
        records = [current]
        while better * (current[judge.metric] - floor) >= 0:
            moves = []  # (metric lost per parameter removed, layer, thresholds, score)
            for index in range(len(bnn.layers)):
                raised = _next_threshold(pips[index], thresholds[index], step)
                if raised is None:
                    continue
                trial = thresholds[:index] + (raised,) + thresholds[index + 1:]
                value, report = scored = judge.score(trial)
                removed = current["nonzero_params"] - report.nonzero_params_after
                if removed <= 0 or report.warnings:  # a degenerate network is no move
                    continue
                moves.append((better * (current[judge.metric] - value) / removed, index, trial, scored))
            if not moves:
                break
            _, index, thresholds, scored = min(moves, key=lambda move: move[:2])
            current = {**judge.record(thresholds, keep_rule=False, scored=scored), "layer": bnn.layers[index].spec.name}
            records.append(current)
    return judge.frontier(records)
