"""Fused computations of a training step, with their gradients written out.

A step of a sparse BNN runs a handful of elementwise formulas over every weight and every
pre-activation. Written with ordinary tensor operations, autograd records each operation and
replays it backwards, allocating a temporary for every intermediate; the functions here
compute the same values and the same gradients (to floating-point rounding) in fewer passes
over memory. Each is a ``torch.autograd.Function`` tested against the plain formula with
``gradcheck``.

* :func:`augmented_linear` -- ``x @ W^T + b`` from the augmented matrix ``[W | b]`` (see
  :class:`~pyro_sparse_bnn.core.priors.base.LayerSpec`), without slicing the matrix: slicing
  makes autograd build a zero-filled matrix of the full size for each slice's gradient and add
  them up.
* :func:`gaussian_sample` -- the last stage of local reparameterisation, ``m f + sqrt(v f^2)
  eps`` from the pre-activation moments, an optional per-unit factor ``f`` and the noise.
"""

from typing import Optional

import torch

__all__ = ["augmented_linear", "gaussian_sample"]


class _AugmentedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params, bias_scale):
        n = x.shape[-1]
        bias = params[:, n] if bias_scale is None else params[:, n] * bias_scale
        ctx.save_for_backward(x, params, bias_scale)
        return torch.addmm(bias, x, params[:, :n].t())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, params, bias_scale = ctx.saved_tensors
        n = x.shape[-1]
        grad_x = grad_params = grad_scale = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ params[:, :n]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            bias_grad = grad.sum(0)
            if ctx.needs_input_grad[1]:
                grad_params = torch.empty_like(params)
                torch.mm(grad.t(), x, out=grad_params[:, :n])
                grad_params[:, n] = bias_grad if bias_scale is None else bias_grad * bias_scale
            if ctx.needs_input_grad[2]:
                grad_scale = (bias_grad * params[:, n]).sum().reshape(bias_scale.shape)
        return grad_x, grad_params, grad_scale


def augmented_linear(x: torch.Tensor, params: torch.Tensor, bias_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ params[:, :-1]^T + params[:, -1] * bias_scale``: a linear layer from its augmented
    matrix.

    :param x: inputs ``(batch, in_features)``.
    :param params: ``(out_features, in_features + 1)``, row ``j`` the weights of unit ``j``
        followed by its bias.
    :param bias_scale: optional scalar tensor multiplying every bias (``None``: 1).
    :returns: ``(batch, out_features)``.
    """
    return _AugmentedLinear.apply(x, params, bias_scale)


class _GaussianSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mean, var, factor, noise):
        if factor is None:
            std = var.clamp(min=torch.finfo(var.dtype).tiny).sqrt_()
            out = torch.addcmul(mean, std, noise)
        else:
            factor_sq = factor * factor
            std = (var * factor_sq).clamp_(min=torch.finfo(var.dtype).tiny).sqrt_()
            out = torch.addcmul(mean * factor, std, noise)
        ctx.save_for_backward(mean, var, factor, noise, std)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        mean, var, factor, noise, std = ctx.saved_tensors
        tiny = torch.finfo(var.dtype).tiny
        # d std / d (variance) = 1 / (2 std), and 0 where the variance sits at the floor
        half_over_std = torch.where(std > tiny**0.5, 0.5 / std, 0.0)
        grad_std = grad * noise * half_over_std  # gradient with respect to var * factor^2
        grad_mean = grad_var = grad_factor = None
        if factor is None:
            if ctx.needs_input_grad[0]:
                grad_mean = grad
            if ctx.needs_input_grad[1]:
                grad_var = grad_std
        else:
            if ctx.needs_input_grad[0]:
                grad_mean = grad * factor
            if ctx.needs_input_grad[1]:
                grad_var = grad_std * (factor * factor)
            if ctx.needs_input_grad[2]:
                per_entry = grad * mean + grad_std * var * (2 * factor)
                grad_factor = per_entry.sum_to_size(factor.shape)
        return grad_mean, grad_var, grad_factor, None


def gaussian_sample(mean: torch.Tensor, var: torch.Tensor, factor: Optional[torch.Tensor],
                    noise: torch.Tensor) -> torch.Tensor:
    """``mean * factor + sqrt(var * factor^2) * noise`` (``factor`` ``None`` meaning 1).

    The square root is taken of the variance clamped at the smallest normal float, and its
    gradient is 0 there: a unit switched off by its factor has variance exactly 0, where the
    square root has no finite derivative.

    :param mean: pre-activation means without the factor, e.g. ``(batch, units)``.
    :param var: pre-activation variances without the factor, same shape.
    :param factor: per-unit factor broadcastable to ``mean`` (e.g. ``(1, units)``), or ``None``.
    :param noise: standard normal draws of ``mean``'s shape.
    :returns: tensor of ``mean``'s shape.
    """
    return _GaussianSample.apply(mean, var, factor, noise)
