"""The fused step computations against the plain tensor formulas they replace: same values,
same gradients (torch's numerical gradient check in double precision, and autograd of the
plain formula on the same inputs)."""

import pytest
import torch
import torch.nn.functional as F

from pyro_sparse_bnn.core.fused import augmented_linear, gaussian_sample


def _grads(out, inputs, weight):
    return torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)


@pytest.mark.parametrize("with_bias_scale", [False, True])
def test_augmented_linear_gradcheck(with_bias_scale):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    params = torch.randn(3, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True) if with_bias_scale else None
    inputs = (x, params) + ((scale,) if with_bias_scale else ())
    assert torch.autograd.gradcheck(lambda *a: augmented_linear(*a), inputs)


@pytest.mark.parametrize("with_bias_scale", [False, True])
def test_augmented_linear_equals_linear_on_the_split_matrix(with_bias_scale):
    """What it replaces: F.linear on the weight and bias slices of the augmented matrix."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 7, generator=generator, requires_grad=True)
    params = torch.randn(4, 8, generator=generator, requires_grad=True)
    scale = torch.tensor(1.3, requires_grad=True) if with_bias_scale else None
    weight = torch.randn(6, 4, generator=generator)
    new = augmented_linear(x, params, scale)
    old = F.linear(x, params[:, :7], params[:, 7] * (1.0 if scale is None else scale))
    assert torch.allclose(new, old, atol=1e-6)
    inputs = [x, params] + ([scale] if with_bias_scale else [])
    for a, b in zip(_grads(new, inputs, weight), _grads(old, inputs, weight), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_augmented_linear_without_input_gradient():
    x = torch.randn(3, 2)
    params = torch.randn(2, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(augmented_linear(x, params).sum(), [params])
    assert torch.allclose(grad, torch.cat([x.sum(0).expand(2, 2), torch.full((2, 1), 3.0)], 1))


def _old_gaussian_sample(mean, var, factor, noise):
    """The plain formula of local reparameterisation that gaussian_sample replaces."""
    if factor is not None:
        mean, var = mean * factor, var * factor.square()
    return mean + var.clamp(min=torch.finfo(var.dtype).tiny).sqrt() * noise


@pytest.mark.parametrize("factor_shape", [None, (1, 4), (1, 4, 1, 1)], ids=["none", "linear", "conv"])
def test_gaussian_sample_gradcheck(factor_shape):
    generator = torch.Generator().manual_seed(2)
    shape = (3, 4) if factor_shape != (1, 4, 1, 1) else (3, 4, 2, 2)
    mean = torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True)
    var = (torch.rand(shape, dtype=torch.float64, generator=generator) + 0.1).requires_grad_()
    noise = torch.randn(shape, dtype=torch.float64, generator=generator)
    if factor_shape is None:
        assert torch.autograd.gradcheck(lambda m, v: gaussian_sample(m, v, None, noise), (mean, var))
    else:
        factor = (torch.rand(factor_shape, dtype=torch.float64, generator=generator) + 0.5).requires_grad_()
        assert torch.autograd.gradcheck(lambda m, v, f: gaussian_sample(m, v, f, noise), (mean, var, factor))


@pytest.mark.parametrize("factor_shape", [None, (1, 5), (1, 5, 1, 1)], ids=["none", "linear", "conv"])
def test_gaussian_sample_equals_the_plain_formula(factor_shape):
    """Values and gradients agree with the plain formula, switched-off units (factor 0 or
    variance 0) included, where neither passes a gradient to the variance."""
    generator = torch.Generator().manual_seed(3)
    shape = (6, 5) if factor_shape != (1, 5, 1, 1) else (6, 5, 3, 3)
    mean = torch.randn(shape, generator=generator, requires_grad=True)
    var = torch.rand(shape, generator=generator)
    var[:, 1] = 0.0
    var.requires_grad_()
    noise = torch.randn(shape, generator=generator)
    weight = torch.randn(shape, generator=generator)
    factor = None
    inputs = [mean, var]
    if factor_shape is not None:
        factor = torch.rand(factor_shape, generator=generator) + 0.5
        factor[0, 3] = 0.0
        factor.requires_grad_()
        inputs.append(factor)
    new = gaussian_sample(mean, var, factor, noise)
    old = _old_gaussian_sample(mean, var, factor, noise)
    assert torch.allclose(new, old, atol=1e-6)
    for a, b in zip(_grads(new, inputs, weight), _grads(old, inputs, weight), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
