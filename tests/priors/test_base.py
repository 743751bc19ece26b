"""The shared building blocks of the priors: how a layer applies a factored draw."""

import pytest
import torch
from torch import nn

from pyro_sparse_bnn.architecture import parse_sequential
from pyro_sparse_bnn.priors.base import LayerDraw, apply_layer, scale_layout

from ..conftest import tiny_conv_net


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
