"""BC-GHS: Bayesian Compression with the group horseshoe prior (Louizos et al. 2017).

::

    z_g = s * z~_g,   z~_g ~ C+(0, 1),   s ~ C+(0, global_scale),   w | z_g ~ N(0, z_g^2)

Both half-Cauchy scales are decomposed into ``Gamma(1/2, 1) x InverseGamma(1/2, 1)`` pairs with
LogNormal guides (:class:`~pyro_sparse_bnn.core.priors.half_cauchy.HorseshoeScales`, shared with
SS-GHS), so ``z_g`` is LogNormal under the guide and its moments are closed form. The group
dropout rate is ``alpha_g = exp((s_a^2 + s_b^2) / 4) - 1`` where ``s_a, s_b`` are the
standard deviations of the log of the group's own pair ``(a_g, b_g)``: the squared
coefficient of variation of the LogNormal ``z~_g``.
"""

from typing import Optional, Sequence, Union

import torch

from ..validation import check_positive
from .bayesian_compression import BayesianCompressionPrior, GroupScaleLayer
from .half_cauchy import HorseshoeScales

__all__ = ["GroupHorseshoe", "BCHorseshoeLayer"]


class BCHorseshoeLayer(GroupScaleLayer):
    """Per-layer module of :class:`GroupHorseshoe`.

    Sample sites: ``<layer>.tau0_a``, ``<layer>.tau0_b`` (scalars, the layer's global scale
    ``s``), ``<layer>.tau_a``, ``<layer>.tau_b`` ``(num_groups,)`` (``z~_g^2 = a_g b_g``) and
    ``<layer>.slab``.
    """

    def __init__(self, spec, prior: "GroupHorseshoe", threshold: float, max_variance=None):
        # the guide starts at a = b = 1: z_g = global_scale
        super().__init__(spec, prior, threshold, init_scale=prior.global_scale, max_variance=max_variance)
        self.scales = HorseshoeScales(self.num_groups, prior.global_scale, prior.init_rho)

    def model_scale(self):
        return torch.exp(self.scales.model(self))

    def guide_scale(self):
        self.scales.guide(self)

    @torch.no_grad()
    def scale_moments(self):
        mean, var = self.scales.log_moments()
        first = torch.exp(mean + var / 2)
        return first, first.square() * torch.expm1(var)

    @torch.no_grad()
    def log_alpha(self):
        return torch.log(torch.expm1(self.scales.local_log_variance()))


class GroupHorseshoe(BayesianCompressionPrior):
    """BC-GHS: a group-horseshoe scale per input unit of each linear layer and per output
    channel of each conv layer.

    The weights' guide defaults to the one of the authors' code (log-variance parameters,
    first layer bounded at 0.04); :class:`~pyro_sparse_bnn.core.priors.bayesian_compression.BayesianCompressionPrior`
    says why.

    :param float global_scale: scale of the half-Cauchy prior of the layer's global factor (1).
    :param log_alpha_threshold: keep a group when ``log alpha < t``; one ``t`` for all
        layers or one per layer (-1). Here ``alpha = exp(Var[log s~]) - 1`` reads the spread
        of a group's log-scale, and ``t = -3`` (BC-GNJ's rule) asks the data to pin each
        scale to about 20 %, which a few hundred examples do not: on breast cancer
        (16-8 hidden units, 300 epochs) every input is dropped at -3 or -2 and 29-11-7 units
        kept at -1 with the dense network's accuracy. Use :func:`~pyro_sparse_bnn.frontier`
        to choose a stricter threshold on validation data.
    :param float init_rho: initial ``rho`` of the LogNormal scale factors, and of the
        weights' guide under the softplus parameterisation (-5).
    :param max_variance: bound on the posterior variances of the weights ``w~`` and biases:
        ``None`` (unbounded), one number for every layer, or a sequence whose entry ``l``
        (number or ``None``) bounds layer ``l``, the layers after its end unbounded
        (default ``(0.04,)``: the first layer only, at 0.04).
    :param str weight_parameterization: ``"log_variance"`` (default; ``sigma = exp(log_var / 2)``)
        or ``"softplus"`` (``sigma = softplus(rho)``) for the weights' guide.
    :param float init_weight_log_var: initial ``log sigma^2`` of the weights' guide under the
        log-variance parameterisation (-9).
    """

    layer_class = BCHorseshoeLayer

    def __init__(self, global_scale: float = 1.0,
                 log_alpha_threshold: Union[float, Sequence[float]] = -1.0, init_rho: float = -5.0,
                 max_variance: Union[None, float, Sequence[Optional[float]]] = (0.04,),
                 weight_parameterization: str = "log_variance", init_weight_log_var: float = -9.0):
        super().__init__(log_alpha_threshold, init_rho, max_variance, weight_parameterization, init_weight_log_var)
        self.global_scale = check_positive("global_scale", global_scale)
