"""Calibration of the posterior predictive.

* Classification: expected calibration error (ECE) and the reliability diagram's bins --
  the examples are binned by the confidence (largest predictive class probability) and each
  bin's mean confidence is compared with its accuracy (Guo et al. 2017).
* Regression: coverage of central predictive intervals. The posterior predictive of a
  Gaussian likelihood is the mixture ``(1/S) sum_s N(f_s(x), sigma^2)`` over the guide draws
  ``f_s``; its probability integral transform ``u = P(Y <= y)`` is computed exactly for that
  mixture, and the central interval of mass ``L`` covers ``y`` iff ``|u - 1/2| <= L / 2``.
  A calibrated predictive covers a fraction ``L`` of held-out targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..core.likelihoods import Prediction
from ..core.validation import as_tensor, check_finite, check_positive_int, check_same_length

if TYPE_CHECKING:  # imported where used: they take a second to load
    import pandas as pd

__all__ = ["accuracy", "CalibrationBins", "expected_calibration_error", "predictive_pit", "interval_coverage"]


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of examples whose highest score is their label.

    :param scores: logits or class probabilities ``(n, classes)``.
    :param labels: integer labels ``(n,)``.
    """
    return float((scores.argmax(-1).cpu() == torch.as_tensor(labels, device="cpu")).double().mean())


@dataclass
class CalibrationBins:
    """Reliability-diagram bins of :func:`expected_calibration_error`, each ``(num_bins,)``.

    :ivar float ece: expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|``.
    :ivar edges: bin edges ``(num_bins + 1,)`` on [0, 1].
    :ivar confidence: mean confidence per bin (NaN for an empty bin).
    :ivar accuracy: accuracy per bin (NaN for an empty bin).
    :ivar counts: number of examples per bin.
    """

    ece: float
    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def _probs_and_labels(probs, y):
    probs = probs.probs if isinstance(probs, Prediction) else probs
    probs = as_tensor(probs, "probs").detach()
    y = as_tensor(y, "y").detach()
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise InputError(f"probs must have shape (n, classes) with at least 2 classes, got {tuple(probs.shape)}")
    if y.is_floating_point() or y.dim() != 1:
        raise InputError(f"y must be integer class labels of shape (n,), got {y.dtype} {tuple(y.shape)}")
    check_same_length([probs, y], ["probs", "y"])
    check_finite("probs", probs)
    if (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-4):
        raise InputError("probs must be class probabilities: non-negative rows summing to 1")
    if int(y.min()) < 0 or int(y.max()) >= probs.shape[1]:
        raise InputError(f"labels y must lie in [0, {probs.shape[1]})")
    return probs.double().cpu(), y.cpu()


def expected_calibration_error(probs, y, num_bins: int = 10) -> CalibrationBins:
    """Expected calibration error of predictive class probabilities.

    :param probs: ``(n, classes)`` predictive probabilities (tensor, array or a
        :class:`~pyro_sparse_bnn.core.likelihoods.Prediction` from ``bnn.predict``).
    :param y: ``(n,)`` integer labels.
    :param int num_bins: equal-width confidence bins on [0, 1] (10).
    :returns: :class:`CalibrationBins` (``ece`` and the reliability diagram's bins).
    """
    num_bins = check_positive_int("num_bins", num_bins, InputError)
    probs, y = _probs_and_labels(probs, y)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == y).double()
    edges = np.linspace(0.0, 1.0, int(num_bins) + 1)
    # bins (edges[b], edges[b + 1]]; confidence >= 1/classes > 0, so bin 0 is never left out
    index = np.clip(np.searchsorted(edges, confidence.numpy(), side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(index, confidence.numpy(), minlength=num_bins) / counts
        acc = np.bincount(index, correct.numpy(), minlength=num_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / counts.sum() * np.abs(acc[filled] - conf[filled])))
    return CalibrationBins(ece=ece, edges=edges, confidence=conf, accuracy=acc, counts=counts)


def predictive_pit(prediction: Prediction, y, noise_scale) -> torch.Tensor:
    """Probability integral transform ``u_i = P(Y_i <= y_i)`` under the Gaussian mixture
    posterior predictive ``(1/S) sum_s N(draws[s, i], noise_scale^2)``.

    :param prediction: a regression :class:`~pyro_sparse_bnn.core.likelihoods.Prediction`
        (``draws`` of shape ``(S, n)`` or ``(S, n, outputs)``).
    :param y: targets ``(n,)`` or ``(n, outputs)``.
    :param noise_scale: observation noise standard deviation (``bnn.likelihood.noise_scale``).
    :returns: ``(n,)`` or ``(n, outputs)`` values in [0, 1].
    """
    draws = prediction.draws.detach().double()
    y = as_tensor(y, "y", torch.float64).detach().to(draws.device).double()
    if tuple(y.shape) != tuple(draws.shape[1:]):
        raise InputError(f"y has shape {tuple(y.shape)} but the predictions are for {tuple(draws.shape[1:])}")
    check_finite("y", y)
    scale = torch.as_tensor(noise_scale, dtype=torch.float64, device=draws.device)
    if not bool((scale > 0).all()):
        raise InputError(f"noise_scale must be positive, got {noise_scale!r}")
    return torch.special.ndtr((y - draws) / scale).mean(0)


def interval_coverage(prediction: Prediction, y, noise_scale,
                      levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95)) -> pd.DataFrame:
    """Coverage of central posterior predictive intervals for regression.

    :param prediction: ``bnn.predict(x)`` of a network with a Gaussian likelihood.
    :param y: the targets of ``x`` ``(n,)`` / ``(n, outputs)`` (held-out data, ideally).
    :param noise_scale: the likelihood's noise standard deviation (``bnn.likelihood.noise_scale``).
    :param levels: nominal masses of the central intervals.
    :returns: DataFrame with columns ``level`` and ``coverage`` (fraction of targets inside
        the interval) and ``mean_width`` (the intervals' mean width, from the mixture's
        quantiles by bisection); a calibrated predictive has ``coverage ~ level``.
    """
    import pandas as pd

    levels = [float(level) for level in levels]
    if not levels or any(not 0 < level < 1 for level in levels):
        raise InputError(f"levels must be probabilities in (0, 1), got {levels}")
    u = predictive_pit(prediction, y, noise_scale)
    draws = prediction.draws.detach().double()
    scale = torch.as_tensor(noise_scale, dtype=torch.float64, device=draws.device)
    rows = []
    for level in levels:
        covered = ((u - 0.5).abs() <= level / 2).double().mean().item()
        lower = _mixture_quantile(draws, scale, (1 - level) / 2)
        upper = _mixture_quantile(draws, scale, (1 + level) / 2)
        rows.append({"level": level, "coverage": covered, "mean_width": (upper - lower).mean().item()})
    return pd.DataFrame(rows)


def _mixture_quantile(draws, scale, q: float, steps: int = 60) -> torch.Tensor:
    """Quantile ``q`` of ``(1/S) sum_s N(draws[s], scale^2)`` elementwise, by bisection."""
    z = float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64, device="cpu")))
    low = draws.min(0).values + z * scale - 1e-9
    high = draws.max(0).values + z * scale + 1e-9
    for _ in range(steps):
        mid = (low + high) / 2
        below = torch.special.ndtr((mid - draws) / scale).mean(0) < q
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return (low + high) / 2


