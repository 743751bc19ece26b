"""Horseshoe scales: a global and per-group half-Cauchy scale, decomposed for variational inference.

Used by SS-GHS (one group per output unit) and BC-GHS (one group per input unit or output
channel). The scale of group ``g`` is ``s_g = global_scale * tau_0 * tau_g`` with
``tau_0, tau_g ~ C+(0, 1)``. Each half-Cauchy is written through its square,
``tau^2 = a b`` with ``a ~ Gamma(1/2, 1)`` and ``b ~ InverseGamma(1/2, 1)``, and the guide puts
a LogNormal on every ``a`` and ``b``; the KLs of these pairs are closed form
(:func:`~pyro_sparse_bnn.core.distributions.lognormal_gamma_kl`,
:func:`~pyro_sparse_bnn.core.distributions.lognormal_inverse_gamma_kl`).

Because every factor is LogNormal under the guide, ``log s_g`` is Gaussian under the guide,
which gives the scale's posterior moments in closed form (:meth:`HorseshoeScales.log_moments`).
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .base import LogNormalScale, cached_prior, model_value

__all__ = ["HorseshoeScales"]

#: sample-site suffixes, in model and guide order
SITES = ("tau0_a", "tau0_b", "tau_a", "tau_b")


class HorseshoeScales(nn.Module):
    """Global and per-group half-Cauchy scales of one layer.

    Sample sites (suffixes of the layer's name): ``tau0_a``, ``tau0_b`` (scalars),
    ``tau_a``, ``tau_b`` of shape ``(num_groups,)``. The guide starts at ``a = b = 1``, i.e.
    ``s_g = global_scale``.

    :param int num_groups: number of groups.
    :param float global_scale: scale of the half-Cauchy prior of the global factor.
    :param float init_rho: initial ``rho`` of the LogNormal guides (``softplus(rho)`` is the
        standard deviation of each log-factor).
    """

    def __init__(self, num_groups: int, global_scale: float, init_rho: float):
        super().__init__()
        self.num_groups = int(num_groups)
        self.log_global_scale = math.log(global_scale)
        self.register_buffer("prior_half", torch.tensor(0.5))
        self.register_buffer("prior_one", torch.tensor(1.0))
        shape = (self.num_groups,)
        self.tau0_a = LogNormalScale((), 0.0, init_rho)
        self.tau0_b = LogNormalScale((), 0.0, init_rho)
        self.tau_a = LogNormalScale(shape, 0.0, init_rho)
        self.tau_b = LogNormalScale(shape, 0.0, init_rho)

    def _priors(self):
        def build():
            gamma = dist.Gamma(self.prior_half, self.prior_one, validate_args=False)
            inverse_gamma = dist.InverseGamma(self.prior_half, self.prior_one, validate_args=False)
            n = self.num_groups
            return (gamma, inverse_gamma, gamma.expand((n,)).to_event(1),
                    inverse_gamma.expand((n,)).to_event(1))

        return cached_prior(self, "scales", self.prior_half, build)

    def model(self, layer) -> torch.Tensor:
        """Sample the model sites of ``layer``; return ``log s`` of shape ``(num_groups,)``
        (``(*draws, num_groups)`` under a vectorising plate, see
        :func:`~pyro_sparse_bnn.core.priors.base.model_value`)."""
        factors = []
        for name, prior in zip(SITES, self._priors(), strict=True):
            factor = model_value(pyro.sample(layer.site(name), prior), prior.event_dim)
            if prior.event_dim == 0 and factor.dim():  # a global factor per draw: (*draws, 1)
                factor = factor.unsqueeze(-1)
            factors.append(factor)
        return 0.5 * sum(f.log() for f in factors) + self.log_global_scale

    def guide(self, layer) -> None:
        """Sample the guide sites of ``layer`` (same order as :meth:`model`)."""
        for name in SITES:
            getattr(self, name).guide_sample(layer, name)

    def log_moments(self):
        """Mean and variance ``(num_groups,)`` of the Gaussian ``log s`` under the guide."""
        mean, var = 0.0, 0.0
        for name in SITES:
            m, v = getattr(self, name).log_moments()
            mean, var = mean + m, var + v
        return mean / 2 + self.log_global_scale, var / 4

    def local_log_variance(self) -> torch.Tensor:
        """Variance ``(num_groups,)`` of ``log tau_g`` alone (the group's own factors)."""
        return (self.tau_a.log_moments()[1] + self.tau_b.log_moments()[1]) / 4
