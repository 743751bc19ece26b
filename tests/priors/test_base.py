"""Building blocks of the priors: the Gaussian slab's optional variance bound."""

import math

import pytest
import torch
import torch.nn.functional as F

from pyro_sparse_bnn import HyperparameterError
from pyro_sparse_bnn.priors.base import GaussianSlab


@pytest.mark.parametrize("bound", [1e-6, 0.04, 3.0, 1e4])
def test_the_largest_rho_is_the_inverse_softplus_of_the_standard_deviation_bound(bound):
    slab = GaussianSlab(torch.zeros(2, 3), 1.0, init_rho=200.0, max_variance=bound)
    # softplus computed by torch in double precision, not by the helper under test
    assert float(F.softplus(torch.tensor(slab.max_rho, dtype=torch.float64))) ** 2 == pytest.approx(bound, rel=1e-9)
    # an initial rho above the bound is projected at construction
    assert torch.all(slab.rho == torch.tensor(slab.max_rho, dtype=torch.float32))


def test_projection_clamps_only_the_entries_above_the_bound_and_readouts_never_exceed_it():
    slab = GaussianSlab(torch.zeros(4), 1.0, init_rho=-5.0, max_variance=0.04)
    with torch.no_grad():
        slab.rho.copy_(torch.tensor([-5.0, -1.6, 0.0, 3.0]))  # sd 0.0067, 0.18, 0.69, 3.05
    # before any projection the readout is already clamped at sqrt(0.04) = 0.2
    expected = torch.tensor([math.log1p(math.exp(-5.0)), math.log1p(math.exp(-1.6)), 0.2, 0.2])
    assert torch.allclose(slab.scale, expected, atol=1e-6)
    slab.project()
    assert slab.rho[:2].tolist() == pytest.approx([-5.0, -1.6])
    assert slab.rho[2:].tolist() == pytest.approx([slab.max_rho] * 2)


def test_without_a_bound_nothing_is_clamped():
    slab = GaussianSlab(torch.zeros(3), 1.0, init_rho=5.0)
    slab.project()
    assert slab.max_variance is None and torch.all(slab.rho == 5.0)
    assert torch.allclose(slab.scale, torch.full((3,), math.log1p(math.exp(5.0))))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "big"])
def test_a_bound_must_be_positive_and_finite(bad):
    with pytest.raises(HyperparameterError, match="max_variance"):
        GaussianSlab(torch.zeros(3), 1.0, init_rho=-5.0, max_variance=bad)
