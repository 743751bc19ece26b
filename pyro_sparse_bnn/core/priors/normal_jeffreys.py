"""BC-GNJ: Bayesian Compression with the group normal-Jeffreys prior (Louizos et al. 2017).

::

    p(z_g) ~ 1 / |z_g|   (log-uniform, improper),     w | z_g ~ N(0, z_g^2)
    q(z_g) = N(mu_z, sigma_z^2) = N(mu_z, alpha_g mu_z^2),   q(w~) = N(mu, sigma^2)

The KL of ``q(z_g)`` against the log-uniform prior has no closed form; Molchanov et al.'s
approximation (:func:`~pyro_sparse_bnn.core.distributions.log_uniform_kl`) is registered for the
(``Normal``, :class:`~pyro_sparse_bnn.core.distributions.LogUniformScale`) pair, so the ELBO uses
it like any closed-form KL. ``log alpha_g = log sigma_z^2 - log mu_z^2``.
"""

from typing import Optional, Sequence, Union

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..distributions import LogUniformScale, dropout_log_alpha
from ..validation import check_finite_number
from .base import cached_prior, model_value
from .bayesian_compression import BayesianCompressionPrior, GroupScaleLayer

__all__ = ["GroupNormalJeffreys", "NormalJeffreysLayer"]


class NormalJeffreysLayer(GroupScaleLayer):
    """Per-layer module of :class:`GroupNormalJeffreys`.

    Sample sites: ``<layer>.group_scale`` ``(num_groups,)`` (input units of a linear layer,
    output channels of a conv layer) and ``<layer>.slab``
    ``(out_units, fan_in + 1)``. Guide parameters ``group_scale_loc`` (``mu_z``, initially 1)
    and ``group_scale_log_var`` (``log sigma_z^2``).
    """

    def __init__(self, spec, prior: "GroupNormalJeffreys", threshold: float, max_variance=None):
        super().__init__(spec, prior, threshold, init_scale=1.0, max_variance=max_variance)
        self.z_loc = nn.Parameter(torch.ones(self.num_groups))
        self.z_log_var = nn.Parameter(torch.full((self.num_groups,), prior.init_log_var))

    def model_scale(self):
        prior = cached_prior(self, "z", self.bias_scale, lambda: LogUniformScale((self.num_groups,)).to_event(1))
        return model_value(pyro.sample(self.site("group_scale"), prior), 1)

    def guide_scale(self):
        loc = self.param("group_scale_loc", self.z_loc)
        log_var = self.param("group_scale_log_var", self.z_log_var)
        pyro.sample(self.site("group_scale"),
                    dist.Normal(loc, torch.exp(0.5 * log_var), validate_args=False).to_event(1))

    @torch.no_grad()
    def scale_moments(self):
        return self.z_loc.detach().clone(), self.z_log_var.detach().exp()

    @torch.no_grad()
    def log_alpha(self):
        return dropout_log_alpha(self.z_loc.detach(), self.z_log_var.detach())


class GroupNormalJeffreys(BayesianCompressionPrior):
    """BC-GNJ: one log-uniform (normal-Jeffreys) group scale per input unit of each linear
    layer and per output channel of each conv layer.

    The weights' guide defaults to the authors' (log-variance parameters, first layer
    bounded at 0.04); :class:`~pyro_sparse_bnn.core.priors.bayesian_compression.BayesianCompressionPrior`
    says why.

    :param log_alpha_threshold: keep a group when ``log alpha < t``; one ``t`` for all
        layers or one per layer (the authors use ``[-2.8, -3, -5]`` for LeNet-300-100) (-3).
    :param float init_log_var: initial ``log sigma_z^2`` of the group scales (-9, the
        authors' initialisation).
    :param float init_rho: initial ``rho`` of the weights' guide under the softplus
        parameterisation (-5: ``sigma ~ 0.007``).
    :param max_variance: bound on the posterior variances of the weights ``w~`` and biases:
        ``None`` (unbounded), one number for every layer, or a sequence whose entry ``l``
        (number or ``None``) bounds layer ``l``, the layers after its end unbounded
        (default ``(0.04,)``: the first layer only, at 0.04).
    :param str weight_parameterization: ``"log_variance"`` (default; ``sigma = exp(log_var / 2)``)
        or ``"softplus"`` (``sigma = softplus(rho)``) for the weights' guide.
    :param float init_weight_log_var: initial ``log sigma^2`` of the weights' guide under the
        log-variance parameterisation (-9).
    """

    layer_class = NormalJeffreysLayer

    def __init__(self, log_alpha_threshold: Union[float, Sequence[float]] = -3.0,
                 init_log_var: float = -9.0, init_rho: float = -5.0,
                 max_variance: Union[None, float, Sequence[Optional[float]]] = (0.04,),
                 weight_parameterization: str = "log_variance", init_weight_log_var: float = -9.0):
        super().__init__(log_alpha_threshold, init_rho, max_variance, weight_parameterization, init_weight_log_var)
        self.init_log_var = check_finite_number("init_log_var", init_log_var)
