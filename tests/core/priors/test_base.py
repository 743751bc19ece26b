"""The shared building blocks of the priors: how a layer applies a factored draw, and the
Gaussian slab's optional variance bound."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_sparse_bnn import HyperparameterError
from pyro_sparse_bnn.core.architecture import parse_sequential
from pyro_sparse_bnn.core.priors.base import GaussianSlab, LayerDraw, apply_layer, scale_layout
from tests.conftest import tiny_conv_net


def _spec(net):
    return parse_sequential(net).specs[0]


LINEAR_SCALES = {
    "none": None,
    "rows": lambda out, cols: torch.rand(out, 1) + 0.5,
    "columns": lambda out, cols: torch.rand(1, cols) + 0.5,
    "full": lambda out, cols: torch.rand(out, cols) + 0.5,
}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("layout", LINEAR_SCALES)
def test_a_factored_draw_gives_the_layer_of_its_weight_matrix(layout, bias):
    """Scaling outputs (per-row factors) or inputs (per-column factors) instead of the weight
    matrix, and the augmented matrix product, give the values and gradients of the plain
    computation ``F.linear`` on the slices of ``scale * slab``."""
    torch.manual_seed(0)
    spec = _spec(nn.Sequential(nn.Linear(5, 3, bias=bias)))
    out, cols = spec.param_shape
    slab = torch.randn(out, cols, requires_grad=True)
    scale = None if LINEAR_SCALES[layout] is None else LINEAR_SCALES[layout](out, cols).requires_grad_()
    assert scale_layout(spec, scale) == layout
    x = torch.randn(4, 5, requires_grad=True)
    draw = LayerDraw(slab=slab, scale=scale)
    inputs = [x, slab] + ([] if scale is None else [scale])
    new = apply_layer(x, spec, draw)
    old = spec.apply(x, *spec.split(draw.params))
    assert torch.allclose(new, old, atol=1e-6)
    weight = torch.randn_like(old)
    for a, b in zip(torch.autograd.grad((new * weight).sum(), inputs),
                    torch.autograd.grad((old * weight).sum(), inputs), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("layout", ["none", "rows", "full"])
def test_a_factored_draw_gives_the_conv_layer_of_its_weights(layout):
    torch.manual_seed(1)
    spec = _spec(tiny_conv_net())
    out, cols = spec.param_shape
    slab = torch.randn(out, cols, requires_grad=True)
    scale = None if layout == "none" else LINEAR_SCALES[layout](out, cols).requires_grad_()
    assert scale_layout(spec, scale) == layout
    x = torch.randn(2, *spec.in_shape)
    draw = LayerDraw(slab=slab, scale=scale)
    inputs = [slab] + ([] if scale is None else [scale])
    new = apply_layer(x, spec, draw)
    old = spec.apply(x, *spec.split(draw.params))
    assert torch.allclose(new, old, atol=1e-5)
    for a, b in zip(torch.autograd.grad(new.sin().sum(), inputs),
                    torch.autograd.grad(old.sin().sum(), inputs), strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_scale_layout_reads_the_shape_of_the_factor():
    spec = _spec(nn.Sequential(nn.Linear(4, 3)))
    assert scale_layout(spec, torch.ones(3, 1)) == "rows"
    assert scale_layout(spec, torch.ones(1, 5)) == "columns"
    assert scale_layout(spec, torch.ones(1, 1)) == "full"  # one value for all: broadcast
    assert scale_layout(spec, torch.ones(3, 5)) == "full"


@pytest.mark.parametrize("bound", [1e-6, 0.04, 3.0, 1e4])
def test_the_largest_rho_is_the_inverse_softplus_of_the_standard_deviation_bound(bound):
    slab = GaussianSlab(torch.zeros(2, 3), 1.0, init_rho=200.0, max_variance=bound)
    # softplus computed by torch in double precision, not by the helper under test
    assert float(F.softplus(torch.tensor(slab.max_scale_param, dtype=torch.float64))) ** 2 == pytest.approx(bound, rel=1e-9)
    # an initial rho above the bound is projected at construction
    assert torch.all(slab.rho == torch.tensor(slab.max_scale_param, dtype=torch.float32))


def test_projection_clamps_only_the_entries_above_the_bound_and_readouts_never_exceed_it():
    slab = GaussianSlab(torch.zeros(4), 1.0, init_rho=-5.0, max_variance=0.04)
    with torch.no_grad():
        slab.rho.copy_(torch.tensor([-5.0, -1.6, 0.0, 3.0]))  # sd 0.0067, 0.18, 0.69, 3.05
    # before any projection the readout is already clamped at sqrt(0.04) = 0.2
    expected = torch.tensor([math.log1p(math.exp(-5.0)), math.log1p(math.exp(-1.6)), 0.2, 0.2])
    assert torch.allclose(slab.scale, expected, atol=1e-6)
    slab.project()
    assert slab.rho[:2].tolist() == pytest.approx([-5.0, -1.6])
    assert slab.rho[2:].tolist() == pytest.approx([slab.max_scale_param] * 2)


def test_without_a_bound_nothing_is_clamped():
    slab = GaussianSlab(torch.zeros(3), 1.0, init_rho=5.0)
    slab.project()
    assert slab.max_variance is None and torch.all(slab.rho == 5.0)
    assert torch.allclose(slab.scale, torch.full((3,), math.log1p(math.exp(5.0))))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "big"])
def test_a_bound_must_be_positive_and_finite(bad):
    with pytest.raises(HyperparameterError, match="max_variance"):
        GaussianSlab(torch.zeros(3), 1.0, init_rho=-5.0, max_variance=bad)


def test_log_variance_parameterisation_reads_sigma_as_exp_of_half_the_parameter():
    slab = GaussianSlab(torch.zeros(2, 3), 1.0, init_rho=-9.0, parameterization="log_variance")
    assert slab.scale_name == "log_var" and not hasattr(slab, "rho")
    assert [name for name, _ in slab.named_parameters()] == ["loc", "log_var"]
    with torch.no_grad():
        slab.log_var.copy_(torch.tensor([[-9.0, -2.0, 0.0], [1.0, 2.0, -20.0]]))
    expected = torch.tensor([[math.exp(-4.5), math.exp(-1.0), 1.0], [math.exp(0.5), math.e, math.exp(-10.0)]])
    assert torch.allclose(slab.scale, expected, rtol=1e-6)
    assert torch.allclose(slab.guide_dist(slab.loc, slab.log_var).base_dist.scale, expected, rtol=1e-6)


def test_log_variance_bound_is_the_log_of_the_variance_bound():
    slab = GaussianSlab(torch.zeros(4), 1.0, init_rho=-9.0, max_variance=0.04, parameterization="log_variance")
    assert slab.max_scale_param == pytest.approx(math.log(0.04))
    with torch.no_grad():
        slab.log_var.copy_(torch.tensor([-9.0, -3.0, 0.0, 5.0]))
    assert torch.allclose(slab.scale, torch.tensor([math.exp(-4.5), 0.2, 0.2, 0.2]), rtol=1e-6)
    slab.project()
    assert slab.log_var.tolist() == pytest.approx([-9.0, math.log(0.04), math.log(0.04), math.log(0.04)], rel=1e-6)


def test_the_guide_announces_the_parameter_of_its_parameterisation():
    from pyro import poutine

    from pyro_sparse_bnn import GroupNormalJeffreys, SparseBNN
    from tests.conftest import mlp

    bnn = SparseBNN(mlp([3, 4, 2]), GroupNormalJeffreys(weight_parameterization="log_variance"), num_data=10)
    params = {name for name, site in poutine.trace(bnn.guide).get_trace().nodes.items() if site["type"] == "param"}
    assert {"net.0.slab_loc", "net.0.slab_log_var", "net.2.slab_log_var"} <= params
    assert not any(name.endswith("slab_rho") for name in params)
    assert torch.all(bnn.layers[0].slab.log_var == -9.0)


def test_an_unknown_parameterisation_is_refused():
    with pytest.raises(HyperparameterError, match="parameterization must be one of 'softplus', 'log_variance'"):
        GaussianSlab(torch.zeros(3), 1.0, init_rho=-5.0, parameterization="exp")
