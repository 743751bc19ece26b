"""Moment propagation: a deterministic predictive that carries a mean and a variance per unit.

Instead of averaging Monte Carlo draws of the network, push the mean ``m`` and variance ``v``
of every (pre-)activation through the layers once (the "variational density propagation"
of Carannante et al., in its diagonal form):

* **Linear / Conv2d, exactly** for independent Gaussian weights and independent inputs:
  with weight moments ``(W_mu, W_var)`` and bias moments ``(b_mu, b_var)``::

      E[a]   = m W_mu^T + b_mu
      Var[a] = v (W_mu^2 + W_var)^T + m^2 W_var^T + b_var

  (``Var[x w] = (v + m^2)(W_mu^2 + W_var) - m^2 W_mu^2`` per product); for a conv layer the
  same with ``F.conv2d``.
* **Elementwise activations** by first-order linearisation: ``E = f(m)``,
  ``Var = f'(m)^2 v`` (ReLU: ``f'(m) = 1[m > 0]``), with ``f'`` from forward-mode autograd.
* **MaxPool2d** linearised too (the mean's arg-max carries its variance), **AvgPool2d** is
  linear (``Var = sum c_i^2 v_i`` with the pool's own coefficients), ``Flatten`` /
  ``Unflatten`` reshape both.

What is exact and what is not. The first layer's output moments are exact (the input is
fixed). Units of one layer are independent given the input only through *different* weight
rows: after a linear layer they are independent, so a second linear layer is exact too, and
a network that is linear with one hidden layer gets its predictive mean and variance
exactly. Beyond that, units computed from shared inputs are correlated and the diagonal
propagation ignores the covariances (as do the positions of one conv channel, which share
its kernel); the activations add a linearisation error of the order of ``v``: for ReLU,
``E[relu(a)] - relu(m) = s phi(m/s) - |m| Phi(-|m|/s)``, at most ``0.4 s`` (``s = sqrt(v)``).

Usable with every prior that has posterior weight moments
(:meth:`~pyro_sparse_bnn.core.priors.base.PriorLayer.weight_moments`), by default on the
median-probability model (the weights ``compress`` keeps; for spike-and-slab priors the
moments are those given inclusion). :func:`moment_loss` / :func:`fit_moments` train a
:class:`~pyro_sparse_bnn.core.priors.self_compressing.SelfCompressingGaussian` regression network
with the expected Gaussian log-likelihood computed from the propagated moments instead of
Monte Carlo draws.
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from ..core.architecture import ELEMENTWISE_MODULES
from ..core.distributions import normal_kl
from ..core.errors import HyperparameterError, InputError
from ..core.fit import FitHistory, NonFiniteStep, minibatches, run_epochs
from ..core.likelihoods import GaussianLikelihood
from ..core.network import SparseBNN, check_bnn
from ..core.priors.self_compressing import SelfCompressingLayer
from ..core.validation import check_positive, check_positive_int, check_threshold, layer_thresholds

__all__ = [
    "MomentPrediction",
    "layer_moments",
    "propagate_moments",
    "moment_predict",
    "moment_loss",
    "fit_moments",
]

#: pairs (mean, variance) of a layer's augmented ``(out_units, fan_in + 1)`` matrix
Moments = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class MomentPrediction:
    """Predictive moments of the network outputs from one moment-propagation pass.

    :ivar mean: ``(batch, outputs)`` mean of the outputs (logits or regression means).
    :ivar var: ``(batch, outputs)`` their variance under the weight posterior.
    :ivar noise_var: observation-noise variance of a Gaussian likelihood (``None`` for
        classification).
    """

    mean: torch.Tensor
    var: torch.Tensor
    noise_var: Optional[torch.Tensor] = None

    @property
    def std(self) -> torch.Tensor:
        """Predictive standard deviation: weight uncertainty plus observation noise (if any)."""
        return (self.var + (0 if self.noise_var is None else self.noise_var)).sqrt()

    @property
    def probs(self) -> torch.Tensor:
        """Class probabilities ``softmax(mean / sqrt(1 + pi var / 8))`` (the probit-style
        approximation of ``E[softmax(logits)]`` for Gaussian logits), ``(batch, classes)``."""
        return torch.softmax(self.mean / torch.sqrt(1 + math.pi * self.var / 8), dim=-1)


@torch.no_grad()
def layer_moments(bnn: SparseBNN, masked: bool = True, threshold: Optional[float] = None) -> List[Moments]:
    """Posterior mean and variance of every layer's augmented matrix (no gradient).

    :param bool masked: zero the weights outside each prior's keep rule (the network that
        ``compress`` builds); ``False`` uses every weight.
    :param threshold: keep-rule threshold (``None``: each prior's default; a sequence: one
        per layer).
    """
    threshold = check_threshold(threshold, bnn.priors)
    moments = []
    for layer, layer_threshold in zip(bnn.layers, layer_thresholds(threshold, len(bnn.layers)), strict=True):
        mean, var = layer.weight_moments()
        if masked:
            weight_mask, bias_mask = layer.keep_masks(layer_threshold)
            if layer.spec.has_bias and bias_mask is None:
                bias_mask = torch.ones(layer.spec.out_units, dtype=torch.bool, device=mean.device)
            mask = layer.spec.augment(weight_mask, bias_mask).to(mean.dtype)
            mean, var = mean * mask, var * mask
        moments.append((mean, var))
    return moments


def _linear_moments(spec, mean, var, weights: Moments):
    w_mean, w_var = weights
    weight_mean, bias_mean = spec.split(w_mean)
    weight_var, bias_var = spec.split(w_var)
    out_mean = spec.apply(mean, weight_mean, bias_mean)
    out_var = spec.apply(mean.square(), weight_var, bias_var)
    if var is not None:
        out_var = out_var + spec.apply(var, weight_mean.square() + weight_var, None)
    return out_mean, out_var


def _sum_pool_coefficients(module: nn.AvgPool2d, mean):
    """Per output position, the coefficient ``c`` of every input in the average's window
    (``1 / divisor``): the pool of ones divided by the number of real inputs in the window."""
    ones = torch.ones_like(mean[:1, :1])
    counts = F.avg_pool2d(ones, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                          count_include_pad=True, divisor_override=1)
    return module(ones) / counts


def _fixed_moments(module: nn.Module, mean, var):
    if var is None:
        return module(mean), None
    if isinstance(module, ELEMENTWISE_MODULES):
        out, slope = torch.func.jvp(module, (mean,), (torch.ones_like(mean),))
        return out, slope.square() * var
    if isinstance(module, nn.MaxPool2d):
        pooled, index = F.max_pool2d(mean, module.kernel_size, module.stride, module.padding, module.dilation,
                                     module.ceil_mode, return_indices=True)
        return pooled, var.flatten(2).gather(2, index.flatten(2)).view_as(pooled)
    if isinstance(module, nn.AvgPool2d):
        return module(mean), module(var) * _sum_pool_coefficients(module, mean)
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return module(mean), module(var)
    raise InputError(f"moment propagation does not know how to pass {type(module).__name__}")


def propagate_moments(bnn: SparseBNN, x: torch.Tensor, moments: List[Moments],
                      x_var: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Push mean and variance through the network once.

    :param x: input means ``(batch, *input_shape)``.
    :param moments: one ``(mean, var)`` pair per layer, each ``(out_units, fan_in + 1)``
        (:func:`layer_moments`, or differentiable ones for training).
    :param x_var: input variances of the shape of ``x`` (``None``: exact inputs).
    :returns: ``(mean, var)`` of the outputs, each ``(batch, outputs)``.
    """
    mean, var = x, x_var
    for stage in bnn.architecture.stages:
        if stage.is_parametric:
            spec = bnn.layers[stage.layer_index].spec
            mean, var = _linear_moments(spec, mean, var, moments[stage.layer_index])
        else:
            mean, var = _fixed_moments(stage.module, mean, var)
    return mean, var


@torch.no_grad()
def moment_predict(bnn: SparseBNN, x, x_var=None, masked: bool = True, threshold: Optional[float] = None,
                   batch_size: Optional[int] = None) -> MomentPrediction:
    """The moment-propagation predictive of a fitted BNN, in one deterministic pass.

    :param x: inputs ``(batch, *input_shape)``. :param x_var: their variances, or ``None``.
    :param bool masked: use the median-probability model (see :func:`layer_moments`).
    :param batch_size: split ``x`` into chunks of this size to bound memory.
    :returns: :class:`MomentPrediction`: output means and variances ``(batch, outputs)``;
        ``probs`` for classification, ``std`` with the noise for regression.
    """
    x, _ = bnn.as_data(x)
    bnn.check_data(x)
    if x_var is not None:
        x_var, _ = bnn.as_data(x_var)
        if x_var.shape != x.shape or bool((x_var < 0).any()):
            raise InputError(f"x_var must be non-negative with the shape of x {tuple(x.shape)}, "
                             f"got {tuple(x_var.shape)}")
    moments = layer_moments(bnn, masked, threshold)
    chunks = [slice(None)] if batch_size is None else [
        slice(i, i + int(batch_size)) for i in range(0, len(x), int(batch_size))]
    parts = [propagate_moments(bnn, x[c], moments, None if x_var is None else x_var[c]) for c in chunks]
    mean, var = (torch.cat(p) for p in zip(*parts, strict=True))
    noise = None
    if isinstance(bnn.likelihood, GaussianLikelihood):
        noise = bnn.likelihood.noise_scale.square()
    return MomentPrediction(mean=mean, var=var, noise_var=noise)


# --------------------------------------------------------------------------------------
# Training with the moments
# --------------------------------------------------------------------------------------
def _trainable(bnn: SparseBNN) -> None:
    check_bnn(bnn, "moment training")
    if not all(isinstance(layer, SelfCompressingLayer) for layer in bnn.layers):
        raise HyperparameterError("moment training needs the SelfCompressingGaussian prior on every layer")
    if not isinstance(bnn.likelihood, GaussianLikelihood):
        raise HyperparameterError(
            f"moment training uses a Gaussian log-likelihood: it needs a GaussianLikelihood, "
            f"got {type(bnn.likelihood).__name__}"
        )


def moment_loss(bnn: SparseBNN, x: torch.Tensor, y: torch.Tensor, num_data: Optional[int] = None) -> torch.Tensor:
    """Negative ELBO of a self-compressing regression BNN with the expected log-likelihood
    computed from the propagated output moments (differentiable).

    For ``y ~ N(f, s^2)`` and an output ``f`` with mean ``m`` and variance ``v`` the expected
    log-likelihood is ``-log(2 pi s^2) / 2 - ((y - m)^2 + v) / (2 s^2)``, exact whenever ``m``
    and ``v`` are (see the module docstring). The loss is ``-(N / B) sum_batch`` of it plus
    the closed-form KL of every weight.

    :param x: ``(batch, *input_shape)``. :param y: ``(batch,)`` or ``(batch, outputs)``.
    :param num_data: training-set size ``N`` (default ``bnn.num_data`` or the batch size).
    :returns: scalar tensor.
    """
    _trainable(bnn)
    x, y = bnn.check_data(x, y)
    scales = []
    for layer in bnn.layers:
        layer.slab.project()  # as a guide run does: keep a bounded slab's variances within the bound
        scales.append(layer.slab.scale_of(layer.slab.scale_param))
    moments = [(layer.slab.loc, scale.square()) for layer, scale in zip(bnn.layers, scales, strict=True)]
    mean, var = propagate_moments(bnn, x, moments)
    mean, var = mean.reshape(y.shape), var.reshape(y.shape)
    noise_var = F.softplus(bnn.likelihood.noise_rho).square()
    expected = -0.5 * torch.log(2 * math.pi * noise_var) - ((y - mean).square() + var) / (2 * noise_var)
    num_data = num_data or bnn.num_data or len(x)
    kl = sum(normal_kl(layer.slab.loc, scale, 0.0, layer.slab.prior_scale).sum()
             for layer, scale in zip(bnn.layers, scales, strict=True))
    return -(num_data / len(x)) * expected.sum() + kl


def fit_moments(bnn: SparseBNN, x, y, *, epochs: int = 100, batch_size: int = 128, lr: float = 5e-3,
                seed: Optional[int] = None, progress: Optional[bool] = None) -> FitHistory:
    """Fit a self-compressing regression BNN by minimising :func:`moment_loss` with Adam
    (deterministic: no sampling at all), epoch by epoch over shuffled minibatches, in the
    epoch loop of :func:`~pyro_sparse_bnn.core.fit.fit`
    (:func:`~pyro_sparse_bnn.core.fit.run_epochs`).

    ``bnn`` is fitted in place; its ``num_steps`` counts the steps and, if it is ``None``,
    its ``num_data`` is set to ``len(x)``.

    :param progress: a bar over the steps (``None``, the default: only in a terminal or a
        notebook).
    :returns: :class:`~pyro_sparse_bnn.core.fit.FitHistory` (mean minibatch loss and seconds
        per epoch).
    :raises NonFiniteLossError: if the loss becomes NaN or infinite (naming the epoch and
        step); that step is not applied.
    """
    _trainable(bnn)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive("lr", lr)
    x, y = bnn.check_data(*bnn.as_data(x, y))
    if bnn.num_data is None:
        bnn.num_data = len(x)
    elif bnn.num_data != len(x):
        raise InputError(f"the network was built with num_data={bnn.num_data} but the training data has "
                         f"{len(x)} examples")
    if seed is not None:
        pyro.set_rng_seed(seed)
    optimizer = torch.optim.Adam(bnn.parameters(), lr=lr)

    def step(x_batch, y_batch) -> float:
        loss = moment_loss(bnn, x_batch, y_batch)
        if not torch.isfinite(loss):
            raise NonFiniteStep(f"the moment loss became {float(loss)}", loss=float(loss))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    history = FitHistory()
    run_epochs(step, lambda epoch: minibatches(x, y, batch_size, shuffle=True), history, bnn, epochs=epochs,
               steps_per_epoch=math.ceil(len(x) / batch_size), progress=progress, desc="moment fit")
    return history
