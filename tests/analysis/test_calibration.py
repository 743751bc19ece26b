"""Calibration of the posterior predictive: ECE, PIT and interval coverage."""

import math

import numpy as np
import pytest
import torch

from pyro_sparse_bnn import InputError
from pyro_sparse_bnn.analysis.calibration import (
    expected_calibration_error,
    interval_coverage,
    predictive_pit,
)
from pyro_sparse_bnn.core import Prediction


def test_ece_by_hand():
    # confidences 0.9, 0.75, 0.55, 0.7 in 5 bins of width 0.2: bin (0.4, 0.6] holds 0.55
    # (wrong), bin (0.6, 0.8] holds 0.75 (right) and 0.7 (right), bin (0.8, 1] holds 0.9 (right)
    probs = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.55, 0.45], [0.3, 0.7]])
    y = torch.tensor([0, 1, 1, 1])
    bins = expected_calibration_error(probs, y, num_bins=5)
    assert bins.counts.tolist() == [0, 0, 1, 2, 1]
    expected = (1 * abs(0 - 0.55) + 2 * abs(1 - 0.725) + 1 * abs(1 - 0.9)) / 4
    assert bins.ece == pytest.approx(expected)
    assert bins.accuracy[3] == 1.0 and bins.confidence[3] == pytest.approx(0.725)
    assert math.isnan(bins.accuracy[0])


def test_calibrated_probabilities_have_small_ece():
    """Labels drawn from the predicted probabilities: each bin's accuracy is a binomial mean
    of its confidences, so ECE is of order sqrt(p(1-p)/n_b) ~ 0.02 for 10 bins of 2000."""
    generator = torch.Generator().manual_seed(0)
    p = torch.rand(20000, generator=generator)
    probs = torch.stack([1 - p, p], dim=1)
    y = torch.bernoulli(p, generator=generator).long()
    assert expected_calibration_error(probs, y).ece < 0.02
    overconfident = torch.stack([1 - p.round(), p.round()], dim=1).clamp(0.001, 0.999)
    overconfident = overconfident / overconfident.sum(1, keepdim=True)
    assert expected_calibration_error(overconfident, y).ece > 0.2


def test_coverage_of_a_calibrated_regression_predictive():
    """Targets drawn from the mixture predictive itself: coverage of each central interval
    is a binomial mean with standard error sqrt(L(1-L)/n) <= 0.008 for n = 4000."""
    generator = torch.Generator().manual_seed(1)
    draws = 0.3 * torch.randn(50, 4000, generator=generator)
    noise = 1.0
    pick = torch.randint(0, 50, (4000,), generator=generator)
    y = draws[pick, torch.arange(4000)] + noise * torch.randn(4000, generator=generator)
    prediction = Prediction(mean=draws.mean(0), std=draws.std(0), draws=draws)
    table = interval_coverage(prediction, y, noise, levels=(0.5, 0.9))
    assert np.all(np.abs(table.coverage - table.level) < 4 * 0.008)
    # a noise scale 3x too small is overconfident
    assert np.all(interval_coverage(prediction, y, noise / 3, levels=(0.5, 0.9)).coverage < table.level - 0.05)
    u = predictive_pit(prediction, y, noise)
    assert float(u.min()) >= 0 and float(u.max()) <= 1


def test_interval_width_of_a_single_gaussian():
    draws = torch.zeros(1, 3)
    table = interval_coverage(Prediction(mean=draws[0], std=draws[0], draws=draws), torch.zeros(3), 2.0,
                              levels=(0.95,))
    assert table.mean_width[0] == pytest.approx(2 * 1.959964 * 2.0, rel=1e-5)


def test_bad_input_is_named():
    with pytest.raises(InputError, match="non-negative rows summing to 1"):
        expected_calibration_error(torch.tensor([[0.5, 0.6]]), torch.tensor([0]))
    with pytest.raises(InputError, match="labels y must lie"):
        expected_calibration_error(torch.tensor([[0.5, 0.5]]), torch.tensor([2]))
    with pytest.raises(InputError, match="levels"):
        interval_coverage(Prediction(torch.zeros(2), torch.zeros(2), torch.zeros(3, 2)), torch.zeros(2), 1.0,
                          levels=(1.5,))


def test_accuracy_is_the_fraction_of_top_scores_on_the_label():
    from pyro_sparse_bnn.analysis import accuracy

    scores = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(scores, torch.tensor([1, 0, 0, 1])) == 0.5
    assert accuracy(scores, torch.tensor([1, 0, 1, 0])) == 1.0
