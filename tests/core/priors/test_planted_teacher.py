"""Planted sparse teacher: a 10-20-1 student fitted to data from a 10-3-1 teacher prunes back.

Data: ``y = teacher(x) + N(0, 1)``, n = 1000 (``datasets.planted_teacher``). The student's
median-probability model must keep at most 5 hidden nodes (at least 15 of the 17 surplus
nodes end with a PIP under the prior's keep threshold: 0.5 for the spike-and-slab priors,
``sigmoid(3) = 0.95`` -- ``log alpha > -3`` -- for BC-GNJ, ``sigmoid(1) = 0.73`` for BC-GHS) and the compressed
student's test RMSE must be within 10 % of the noise level. For reference, with the teacher's 3 hidden units the student has 37 weights, and
the excess RMSE of a correctly specified least-squares fit is about sqrt(1 + 37/1000) - 1 = 2 %.

The schedule (2,000 epochs, learning rate 3e-2 decaying to 3e-3) is what node pruning
needs: a redundant node is dropped only after the others have absorbed its share of the
function. Minibatches of 200 (10,000 steps) suffice for SS-GL, SS-GHS, BC-GNJ and BC-GHS: on
seed 0 they keep 4, 3, 3 and 3 nodes, RMSE/noise 1.031-1.037. SS-IG needs minibatches of 100
(20,000 steps): with 200 it kept 5 nodes, the most the test allows; with 100 it kept the
teacher's 3 (RMSE/noise 1.037). With one weight draw per step instead of local
reparameterisation the spike-and-slab priors kept 3 to 5 nodes over seeds 0-2.

The test runs seed 0. Over seeds 0-4 (``benchmarks/planted_teacher.py``, figures in
benchmarks/README.md) the assertions hold in 23 of 25 runs: SS-GL keeps 6 nodes, one more than
allowed, on seeds 3 and 4.

Why the Bayesian Compression threshold is not 0.5: a pruned group's PIP ``1 / (1 + alpha)``
does not go to 0. For BC-GHS, ``alpha = exp(Var[log z~]) - 1`` and the LogNormals closest to
the Gamma(1/2, 1) and InverseGamma(1/2, 1) priors (what an unused group's guide tends to) have
``Var[log a] = Var[log b] = 2``, so ``alpha -> e - 1`` and ``PIP -> 0.37``; we measured
0.44-0.51 for the 17 surplus nodes, all far below the keep rule.

The Bayesian Compression priors run without their default bound on the first layer's weight
variances (``max_variance=None``): the bound of 0.04 is the authors' setting for image inputs,
and on this problem it leaves redundant nodes switched on (seed 0: 6 nodes kept by BC-GNJ, with
PIPs of 0.99 and above, against exactly the teacher's 3 without it).
"""

from functools import partial

import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    DegenerateNetworkWarning,
    GroupHorseshoe,
    GroupNormalJeffreys,
    SparseBNN,
    SpikeSlabGroupHorseshoe,
    SpikeSlabGroupLasso,
    SpikeSlabNode,
    compress,
    fit,
)
from pyro_sparse_bnn.analysis import node_inclusion_probs
from pyro_sparse_bnn.apps.datasets import planted_teacher
from pyro_sparse_bnn.core import GaussianLikelihood
from tests.conftest import forced_switches

PRIORS = {
    "SS-IG": SpikeSlabNode,
    "SS-GL": SpikeSlabGroupLasso,
    "SS-GHS": SpikeSlabGroupHorseshoe,
    "BC-GNJ": partial(GroupNormalJeffreys, max_variance=None),
    "BC-GHS": partial(GroupHorseshoe, max_variance=None),
}

#: minibatch size per prior (module docstring): SS-IG's node indicators need twice the steps
BATCH_SIZE = {"SS-IG": 100}


def fit_student(name: str, seed: int = 0):
    """Fit the 10-20-1 student with prior ``name`` to the planted teacher's data (the schedule
    of the module docstring).

    :returns: ``(fitted SparseBNN, PlantedTeacher data)``.
    """
    data = planted_teacher(num_inputs=10, hidden=3, n_train=1000, noise_scale=1.0, seed=seed)
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 1))
    bnn = SparseBNN(student, PRIORS[name](), likelihood=GaussianLikelihood(noise_scale=1.0), num_data=1000)
    fit(bnn, data.x_train, data.y_train, epochs=2000, batch_size=BATCH_SIZE.get(name, 200), lr=3e-2, lr_decay=0.1,
        seed=seed, progress=False)
    return bnn, data


def outcome(bnn, data):
    """What the test judges; ``benchmarks/planted_teacher.py`` prints it.

    :returns: ``(hidden-node PIPs (20,), keep threshold of the prior, CompressionReport,
        test RMSE of the compressed student, noise scale)``.
    """
    module, report = compress(bnn)
    with torch.no_grad():
        rmse = float(((module(data.x_test)[:, 0] - data.y_test) ** 2).mean().sqrt())
    return node_inclusion_probs(bnn)["net.0"], bnn.priors[0].threshold, report, rmse, data.noise_scale


def assert_prunes_to_the_teacher(pips, threshold, report, rmse, noise_scale):
    """At least 15 of the 17 surplus nodes under the keep threshold, at most 5 kept, and the
    compressed student's RMSE within 10 % of the noise."""
    assert int((pips < threshold).sum()) >= 15, f"node PIPs {sorted(pips.tolist(), reverse=True)}"
    assert report.architecture_after[1] <= 5, f"kept {report.architecture_after}"
    assert rmse <= 1.1 * noise_scale, f"RMSE {rmse:.3f} against noise {noise_scale}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRIORS))
def test_student_prunes_to_the_teacher(name):
    bnn, data = fit_student(name)
    assert_prunes_to_the_teacher(*outcome(bnn, data))
    # failing twins: the same check on the same fit with every switch held on (a prior that
    # cannot prune) and held off (a prior that prunes everything)
    with forced_switches(bnn, on=True), pytest.raises(AssertionError, match="node PIPs"):
        assert_prunes_to_the_teacher(*outcome(bnn, data))
    with forced_switches(bnn, on=False), pytest.raises(AssertionError, match="RMSE"):
        with pytest.warns(DegenerateNetworkWarning, match="does not depend on its input"):
            pruned_everything = outcome(bnn, data)
        assert_prunes_to_the_teacher(*pruned_everything)
