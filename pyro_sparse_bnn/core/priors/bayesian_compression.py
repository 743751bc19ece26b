"""Shared machinery of Louizos, Ullrich & Welling's (2017) Bayesian Compression priors.

A *multiplicative group scale* ``z_g`` multiplies every weight of group ``g``::

    w = z_g * w~,     w~ ~ N(0, 1)      (non-centred: w | z_g ~ N(0, z_g^2))

The groups are

* for a **linear** layer, its **input units** (column ``i`` of the weight matrix, so the first
  layer selects input features and every other layer prunes the units feeding it). Biases
  are not scaled (their group scale is 1) and have the same ``N(0, 1)`` prior;
* for a **conv** layer, its **output channels** (row ``j`` of the augmented matrix: the
  ``in_channels * kh * kw`` weights of filter ``j``). The channel's bias is scaled with it,
  ``b_j = z_j b~_j``, as in the authors' code, where the conv layer multiplies its whole
  output (bias included) by ``z``: a pruned channel then outputs exactly zero before its
  activation, and its bias prior is ``N(0, z_j^2)`` like its weights.

The guide is ``q(w~) = N(mu, sigma^2)`` per weight and a prior-specific ``q(z_g)``.

Pruning uses the group's dropout rate ``alpha_g = Var[z_g] / E[z_g]^2``: a group is kept when
``log alpha_g < t`` with a per-layer threshold ``t`` (-3 in the authors' code). So that
every prior in the library reports inclusion in the same form, a group's *inclusion
probability* is ``1 / (1 + alpha_g) = sigmoid(-log alpha_g)`` (one minus the equivalent
Gaussian-dropout rate ``alpha / (1 + alpha)``); ``log alpha < t`` is the same rule as
``PIP > sigmoid(-t)``, which is the PIP threshold the layers use by default. A pruned conv
channel drops its weights and its bias.
"""

import math
from numbers import Number
from typing import Optional, Sequence, Tuple, Union

import pyro
import torch

from ..errors import HyperparameterError
from ..validation import check_finite_number, check_positive
from .base import (
    SLAB_PARAMETERIZATIONS,
    GaussianSlab,
    LayerDraw,
    LayerSpec,
    NetworkInfo,
    Prior,
    PriorLayer,
    model_value,
)

__all__ = ["BayesianCompressionPrior", "GroupScaleLayer"]


class GroupScaleLayer(PriorLayer):
    """Per-layer module of a Bayesian Compression prior.

    Sample sites: the group-scale sites of the subclass (``num_groups`` scales: ``in_units``
    for a linear layer, ``out_units`` for a conv layer), then ``<layer>.slab`` of the
    augmented shape ``(out_units, fan_in + 1)`` (the non-centred weights ``w~``).

    Subclasses implement :meth:`model_scale` and :meth:`guide_scale` (sampling the scale
    sites), :meth:`scale_moments` (``E[z_g]``, ``Var[z_g]``) and :meth:`log_alpha`.

    :param float init_scale: ``E[z_g]`` at the guide's initial state; the slab's initial mean
        is the user's initial weights divided by it, so the network starts from them.
    :param max_variance: bound on the slab's posterior variances (``None``: unbounded; see
        :class:`~pyro_sparse_bnn.core.priors.base.GaussianSlab`).
    """

    def __init__(self, spec: LayerSpec, prior: "BayesianCompressionPrior", threshold: float,
                 init_scale: float = 1.0, max_variance: Optional[float] = None):
        super().__init__(spec, threshold)
        #: whether the groups are output units (conv channels, bias scaled too) rather than
        #: input units (linear layers)
        self.groups_are_outputs = spec.kind != "linear"
        self.num_groups = spec.out_units if self.groups_are_outputs else spec.in_units
        init_loc = spec.augment(spec.module.weight, spec.module.bias).detach()
        if self.groups_are_outputs:
            init_loc = init_loc / init_scale
        else:
            init_loc = torch.cat([init_loc[:, : spec.fan_in] / init_scale, init_loc[:, spec.fan_in:]], dim=1)
        parameterization = prior.weight_parameterization
        init = prior.init_rho if parameterization == "softplus" else prior.init_weight_log_var
        self.slab = GaussianSlab(init_loc, 1.0, init, max_variance=max_variance, parameterization=parameterization)
        self.register_buffer("bias_scale", torch.ones(int(spec.has_bias)))

    # -- hooks ---------------------------------------------------------------------------
    def model_scale(self) -> torch.Tensor:
        """Sample the model's scale sites; return ``z`` of shape ``(num_groups,)``."""
        raise NotImplementedError

    def guide_scale(self) -> None:
        """Sample the guide's scale sites (same order as :meth:`model_scale`)."""
        raise NotImplementedError

    def scale_moments(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(E[z_g], Var[z_g])`` under the guide, each ``(num_groups,)`` (no gradient)."""
        raise NotImplementedError

    def log_alpha(self) -> torch.Tensor:
        """Log dropout rate ``log alpha_g`` of every group, ``(num_groups,)`` (no gradient)."""
        raise NotImplementedError

    # -- model and guide --------------------------------------------------------------------
    def _group_scale(self, z: torch.Tensor, bias_value: float = 1.0) -> torch.Tensor:
        """``z`` per group as a factor of the augmented matrix ``(out_units, fan_in + 1)``:
        ``(out_units, 1)`` for output groups (the whole row, bias included), or
        ``(1, fan_in + 1)`` for input groups, padded with ``bias_value`` for the unscaled
        bias column."""
        if self.groups_are_outputs:
            return z.unsqueeze(-1)
        bias = self.bias_scale.to(z.dtype)
        if bias_value != 1.0:
            bias = torch.full_like(bias, bias_value)
        if z.dim() > 1:  # (*draws, num_groups): one bias factor per draw
            bias = bias.expand(z.shape[:-1] + bias.shape)
        return torch.cat([z, bias], dim=-1).unsqueeze(-2)

    def model(self) -> LayerDraw:
        z = self.model_scale()
        slab = pyro.sample(self.site("slab"), self.slab.prior_dist())
        return LayerDraw(slab=model_value(slab, self.slab.loc.dim()), scale=self._group_scale(z))

    def guide(self, temperature=None) -> None:
        self.guide_scale()
        self.slab.guide_sample(self, "slab")

    # -- readouts -----------------------------------------------------------------------------
    @torch.no_grad()
    def group_inclusion_probs(self) -> torch.Tensor:
        """``1 / (1 + alpha_g)`` per group, ``(num_groups,)``."""
        return torch.sigmoid(-self.log_alpha())

    def input_inclusion_probs(self) -> Optional[torch.Tensor]:
        """``1 / (1 + alpha_g)`` per input unit, ``(in_units,)``, for a linear layer; ``None``
        for a conv layer (whose groups are output channels)."""
        return None if self.groups_are_outputs else self.group_inclusion_probs()

    def output_inclusion_probs(self) -> Optional[torch.Tensor]:
        """``1 / (1 + alpha_g)`` per output channel, ``(out_units,)``, for a conv layer;
        ``None`` for a linear layer."""
        return self.group_inclusion_probs() if self.groups_are_outputs else None

    def inclusion_groups(self) -> torch.Tensor:
        shape = self.spec.row_shape if self.groups_are_outputs else self.spec.column_shape
        return self.group_inclusion_probs().view(shape)

    def keep_masks(self, threshold=None):
        threshold = self.default_threshold if threshold is None else threshold
        keep = self.group_inclusion_probs() > threshold
        shape = self.spec.row_shape if self.groups_are_outputs else self.spec.column_shape
        weight_mask = keep.view(shape).expand(self.spec.weight_shape)
        bias_mask = keep if self.groups_are_outputs and self.spec.has_bias else None
        return weight_mask, bias_mask

    @torch.no_grad()
    def posterior_mean(self):
        mean, _ = self.weight_moments()
        return self.spec.split(mean)

    @torch.no_grad()
    def weight_moments(self):
        """Mean and variance of ``w = z w~`` (independent factors):
        ``E[w] = E[z] mu``, ``Var[w] = E[z]^2 sigma^2 + Var[z] mu^2 + Var[z] sigma^2``
        (an unscaled bias of a linear layer has ``z = 1``, ``Var[z] = 0``)."""
        z_mean, z_var = self.scale_moments()
        z_mean, z_var = self._group_scale(z_mean), self._group_scale(z_var, bias_value=0.0)
        mu, var = self.slab.loc.detach(), self.slab.scale.square()
        return z_mean * mu, z_mean.square() * var + z_var * (mu.square() + var)


def _per_layer(name: str, value, check, allow_none: bool = False):
    """``value`` checked as a per-layer hyperparameter: one number for every layer (returned
    as a float) or a non-empty sequence with one entry per layer (returned as a tuple);
    ``check(name, number)`` validates each number, and entries may be ``None`` when
    ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, Number) and not isinstance(value, bool):
        return check(name, value)
    try:
        values = list(value)
    except TypeError:
        raise HyperparameterError(
            f"{name} must be a number or a sequence of numbers (one per layer), got {value!r}"
        ) from None
    if not values:
        raise HyperparameterError(f"{name} must not be an empty sequence")
    return tuple(None if v is None and allow_none else check(name, v) for v in values)


def _layer_value(name: str, value, spec: LayerSpec, network: NetworkInfo, shorter_means_none: bool = False):
    """Layer ``spec``'s entry of a per-layer hyperparameter checked by :func:`_per_layer`; with
    ``shorter_means_none`` a sequence may stop before the last layer, the layers after its
    end getting ``None``."""
    if not isinstance(value, tuple):
        return value
    num_layers = network.num_hidden_layers + 1
    if len(value) > num_layers or (len(value) < num_layers and not shorter_means_none):
        raise HyperparameterError(f"{name} has {len(value)} values but the network has {num_layers} layers")
    return value[spec.index] if spec.index < len(value) else None


class BayesianCompressionPrior(Prior):
    """Hyperparameters shared by the Bayesian Compression priors.

    The priors default to the weights' guide of the authors' code: log-variance parameters
    started at ``log sigma^2 = -9``, and the first layer's variances bounded at 0.04. Both
    matter within a practical training budget. While ``sigma^2`` is small, the KL term
    pushes every ``log sigma^2`` up at a steady pace, and under the softplus
    parameterisation the same Adam steps move ``log sigma^2`` twice as fast. The first layer
    reads the raw inputs, hundreds of them far from zero, and the ELBO favours first-layer
    variances near the prior's 1 (each such weight saves about one nat of KL); the noise
    this adds to every pre-activation is then answered by shrinking the group scales of whole
    inputs, and the fitted network prunes more and predicts worse. Bounding the variances
    restricts the variational family -- the objective is still the ELBO, maximised over
    fewer distributions, so the ELBO reached is lower -- and on LeNet-300-100 with
    Fashion-MNIST in [-1, 1] (30 epochs) it is what brings the posterior-mean network to
    the dense network's accuracy. ``max_variance=None`` and
    ``weight_parameterization="softplus"`` give the unrestricted family. The bound suits
    inputs of order one, as images are; on a small problem with a few standardised inputs
    it can keep redundant units (a 10-20-1 student of a planted 10-3-1 teacher: 6 hidden
    units kept with the bound, exactly 3 with ``max_variance=None``), so try both there and
    compare them on validation data.

    :param log_alpha_threshold: keep a group when ``log alpha < t``; one ``t`` for every
        layer or a sequence with one per layer (defaults: -3 for BC-GNJ, -1 for BC-GHS).
    :param float init_rho: initial ``rho`` of the weights' guide (``sigma = softplus(rho)``)
        under the softplus parameterisation.
    :param max_variance: bound on the posterior variance ``sigma^2`` of every weight ``w~``
        and bias: ``None`` (unbounded), one number for every layer, or a sequence whose entry
        ``l`` (a number or ``None``) bounds layer ``l``; the layers after the end of a shorter
        sequence are unbounded, so ``(0.04,)`` bounds the first layer only.
    :param str weight_parameterization: how the weights' guide standard deviation is
        parameterised: ``"softplus"`` (``sigma = softplus(rho)``) or ``"log_variance"``
        (``sigma = exp(log_var / 2)``; see :class:`~pyro_sparse_bnn.core.priors.base.GaussianSlab`).
    :param float init_weight_log_var: initial ``log sigma^2`` of the weights' guide under the
        log-variance parameterisation.
    :raises HyperparameterError: for a non-finite threshold, ``init_rho`` or
        ``init_weight_log_var``, a ``max_variance`` that is not positive and finite, an empty
        sequence, or an unknown parameterisation.
    """

    layer_class = None
    # class defaults: what networks saved before these options existed were built with
    max_variance = None
    weight_parameterization = "softplus"
    init_weight_log_var = -9.0

    def __init__(self, log_alpha_threshold: Union[float, Sequence[float]], init_rho: float,
                 max_variance: Union[None, float, Sequence[Optional[float]]] = (0.04,),
                 weight_parameterization: str = "log_variance", init_weight_log_var: float = -9.0):
        self.log_alpha_threshold = _per_layer("log_alpha_threshold", log_alpha_threshold, check_finite_number)
        self.init_rho = check_finite_number("init_rho", init_rho)
        self.max_variance = _per_layer("max_variance", max_variance, check_positive, allow_none=True)
        if weight_parameterization not in SLAB_PARAMETERIZATIONS:
            raise HyperparameterError(
                f"weight_parameterization must be one of {', '.join(map(repr, SLAB_PARAMETERIZATIONS))}, "
                f"got {weight_parameterization!r}"
            )
        self.weight_parameterization = weight_parameterization
        self.init_weight_log_var = check_finite_number("init_weight_log_var", init_weight_log_var)

    @property
    def threshold(self) -> Optional[float]:
        """The PIP threshold ``sigmoid(-t)`` of a single ``t`` (``None`` for per-layer ``t``)."""
        if isinstance(self.log_alpha_threshold, tuple):
            return None
        return 1 / (1 + math.exp(self.log_alpha_threshold))

    def layer_threshold(self, spec: LayerSpec, network: NetworkInfo) -> float:
        """PIP threshold ``sigmoid(-t_l)`` of layer ``spec``."""
        return 1 / (1 + math.exp(_layer_value("log_alpha_threshold", self.log_alpha_threshold, spec, network)))

    def layer_max_variance(self, spec: LayerSpec, network: NetworkInfo) -> Optional[float]:
        """The bound on the slab variances of layer ``spec`` (``None``: unbounded)."""
        return _layer_value("max_variance", self.max_variance, spec, network, shorter_means_none=True)

    def build(self, spec: LayerSpec, network: NetworkInfo) -> GroupScaleLayer:
        return self.layer_class(spec, self, self.layer_threshold(spec, network),
                                max_variance=self.layer_max_variance(spec, network))
