"""Feature selection on a scaled-down Bai et al. (2020) simulation (docs/methods.md section 1).

50 inputs of which 5 are relevant, ``y = 7 x_2 / (1 + x_1^2) + 5 sin(x_3 x_4) + 2 x_5 + N(0, 1)``.
We use n = 2000 rather than 1000: x_1 acts only through the interaction with x_2, and
dropping it raises the best achievable mean squared error by
``49 E[x_2^2] Var(1 / (1 + x_1^2)) = 0.42``, i.e. by 0.21 nats per example. At n = 2000 that
signal is strong enough for the short schedule below to find x_1 on four of the five seeds
we ran (0-4; seed 4 misses it, see benchmarks/README.md).

The test runs seed 0; ``benchmarks/bai_simulation.py --scaled-down --seeds 0 1 2 3 4`` runs
the same experiment (:func:`select_features`) on several seeds, and benchmarks/README.md
records what it gave.
"""

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import DegenerateNetworkWarning, SparseBNN, SpikeSlab, compress, fit
from pyro_sparse_bnn.analysis import feature_inclusion_probs
from pyro_sparse_bnn.apps.datasets import bai_simulation
from pyro_sparse_bnn.core import GaussianLikelihood
from tests.conftest import forced_switches


def select_features(seed: int = 0):
    """Fit the 50-16-16-1 spike-and-slab network of this module on seed ``seed``'s data.

    :returns: ``(data, fitted SparseBNN, compressed module, CompressionReport)``.
    """
    data = bai_simulation(n_train=2000, n_test=2000, num_features=50, seed=seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(50, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    # Bai et al.'s setting (theory-driven lambda, slab from softplus(-6)): the default lambda = 0.5
    # leaves undetermined edges near gamma = 0.5 and is not meant for feature selection
    bnn = SparseBNN(net, SpikeSlab.published(), likelihood=GaussianLikelihood(noise_scale=1.0), num_data=2000)
    fit(bnn, data.x_train, data.y_train, epochs=2000, batch_size=500, lr=1e-2, lr_decay=0.1,
        seed=seed, progress=False)
    module, report = compress(bnn)
    return data, bnn, module, report


def assert_selects_the_relevant_inputs(data, bnn, report):
    """Every relevant input kept (and with a PIP above 1/2), at most two irrelevant ones."""
    selected = set(report.kept_features.tolist())
    relevant = set(data.relevant_features)
    assert relevant <= selected, f"missed {sorted(relevant - selected)}"
    assert len(selected - relevant) <= 2, f"false positives {sorted(selected - relevant)}"
    pips = feature_inclusion_probs(bnn)
    assert torch.all(pips[data.relevant_features] > 0.5)


@pytest.mark.slow
def test_spike_and_slab_recovers_the_relevant_inputs():
    data, bnn, _, report = select_features(0)
    assert_selects_the_relevant_inputs(data, bnn, report)
    # failing twins: the same check on the same fit with every indicator held on (a prior that
    # cannot prune) and held off (a prior that prunes everything)
    with forced_switches(bnn, on=True), pytest.raises(AssertionError, match="false positives"):
        assert_selects_the_relevant_inputs(data, bnn, compress(bnn)[1])
    with forced_switches(bnn, on=False), pytest.raises(AssertionError, match="missed"):
        with pytest.warns(DegenerateNetworkWarning):
            report = compress(bnn)[1]
        assert_selects_the_relevant_inputs(data, bnn, report)
