"""Every prior at its default settings gives a sensible compressed network on small data.

For each prior and for scikit-learn's digits and breast-cancer data: a small ReLU MLP is
fitted with ``fit(bnn, x, y, epochs=E, seed=0)`` and otherwise default arguments, and a
deterministic copy of the same initial network is trained with Adam for the same epochs,
batch size and learning rate (the independent reference). The compressed network must keep
at least one input, be no larger than the dense one, and reach the dense network's test
accuracy less 3 points (breast cancer: 114 test tumours, digits: 360 test images).

The budgets (about 1,200 optimisation steps) are past the point where the indicators leave
their initial value (about ``logit(0.99) / lr`` = 900 steps at the default learning rate),
which is where the earlier defaults failed: the spike-and-slab priors compressed breast
cancer to a constant network (accuracy 0.37 or 0.63) and self-compression deleted every
hidden unit.
"""

from functools import lru_cache

import pytest
import torch

import pyro_sparse_bnn as psb
from pyro_sparse_bnn.apps.baselines import train_deterministic
from pyro_sparse_bnn.apps.datasets import breast_cancer, digits

PRIORS = {
    "SS": psb.SpikeSlab,
    "SS-IG": psb.SpikeSlabNode,
    "SS-GL": psb.SpikeSlabGroupLasso,
    "SS-GHS": psb.SpikeSlabGroupHorseshoe,
    "BC-GNJ": psb.GroupNormalJeffreys,
    "BC-GHS": psb.GroupHorseshoe,
    "SC": psb.SelfCompressingGaussian,
}
NAMES = sorted(PRIORS)
#: data set -> (loader, hidden widths, epochs); both give about 1,200 steps of batch 128
SETUPS = {
    "breast_cancer": (breast_cancer, (16, 8), 300),
    "digits": (digits, (32, 16), 100),
}
#: the fit's default learning rate, used for the dense reference too
LR = 5e-3
#: how far below the dense network's accuracy the compressed one may fall
MARGIN = 0.03


@lru_cache(maxsize=None)
def dense_accuracy(data_name: str) -> float:
    """Test accuracy of the deterministic copy of the initial network, trained with Adam for
    the same epochs, batch size and learning rate (the same for every prior, so computed once
    per worker)."""
    load, hidden, epochs = SETUPS[data_name]
    data = load(seed=0)
    torch.manual_seed(0)
    net = psb.mlp([data.num_features, *hidden, int(data.y_train.max()) + 1])
    dense = train_deterministic(net, data.x_train, data.y_train, epochs=epochs, lr=LR, seed=0).module
    with torch.no_grad():
        return psb.analysis.accuracy(dense(data.x_test), data.y_test)


def fit_defaults(prior_name: str, data_name: str):
    """Fit the prior at its defaults; return (dense accuracy, compressed accuracy, report)."""
    load, hidden, epochs = SETUPS[data_name]
    data = load(seed=0)
    torch.manual_seed(0)
    net = psb.mlp([data.num_features, *hidden, int(data.y_train.max()) + 1])
    bnn = psb.SparseBNN(net, PRIORS[prior_name](), num_data=len(data.x_train))
    psb.fit(bnn, data.x_train, data.y_train, epochs=epochs, seed=0, progress=False)
    module, report = psb.compress(bnn)
    dense = dense_accuracy(data_name)
    with torch.no_grad():
        return dense, psb.analysis.accuracy(module(data.x_test), data.y_test), report


def check_sensible(dense_accuracy, compressed_accuracy, report):
    assert report.architecture_after[0] >= 1, f"no input kept: {report.architecture_after}"
    assert report.params_after <= report.params_before
    assert compressed_accuracy >= dense_accuracy - MARGIN, (
        f"compressed {compressed_accuracy:.3f} ({'-'.join(map(str, report.architecture_after))}) "
        f"against dense {dense_accuracy:.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("prior_name", NAMES)
def test_defaults_compress_breast_cancer_sensibly(prior_name):
    check_sensible(*fit_defaults(prior_name, "breast_cancer"))


@pytest.mark.slow
@pytest.mark.parametrize("prior_name", NAMES)
def test_defaults_compress_digits_sensibly(prior_name):
    check_sensible(*fit_defaults(prior_name, "digits"))
