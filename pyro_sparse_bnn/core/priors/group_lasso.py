"""SS-GL: spike-and-slab group lasso (Jantre, Bhattacharya & Maiti 2023).

Non-centred::

    w_j = z_j tau_j beta_j,        beta_j ~ N(0, sigma_0^2 I),   z_j ~ Bernoulli(lambda_l)
    tau_j^2 | lambda^2 ~ Gamma((m_j + 1) / 2, rate lambda^2 / 2)   (m_j: size of group j)
    lambda^2 ~ Gamma(4, rate 2)                                     (one per layer)

Guide: relaxed Bernoulli ``z``, Normal ``beta``, LogNormal ``tau_j^2`` and ``lambda^2``. The
KL of each LogNormal against its Gamma prior is closed form
(:func:`~pyro_sparse_bnn.core.distributions.lognormal_gamma_kl`); for ``tau_j^2`` it is evaluated
at the sampled ``lambda^2`` and, being linear in ``log lambda^2`` and ``lambda^2``, averages to
the fully closed form (docs/methods.md) over the guide of ``lambda^2``.
"""

import math
from typing import Optional

import pyro
import pyro.distributions as dist
import torch

from ..validation import check_positive
from .base import LogNormalScale, cached_prior, model_value, plate_aligned
from .spike_slab_node import NodePrior, NodeSpikeSlabLayer

__all__ = ["SpikeSlabGroupLasso", "GroupLassoLayer"]


class GroupLassoLayer(NodeSpikeSlabLayer):
    """Per-layer module of :class:`SpikeSlabGroupLasso`.

    Sample sites: ``<layer>.lambda_sq`` (scalar), ``<layer>.tau_sq`` ``(out_units,)``,
    ``<layer>.node_indicator`` ``(out_units,)``, ``<layer>.slab`` ``(out_units, fan_in + 1)``.
    """

    def build_scales(self, prior: "SpikeSlabGroupLasso", init_rho: float) -> None:
        spec = self.spec
        group_size = spec.param_shape[1]
        self.register_buffer("tau_sq_concentration", torch.full((spec.out_units,), (group_size + 1) / 2))
        self.register_buffer("lambda_sq_concentration", torch.tensor(prior.lambda_sq_shape))
        self.register_buffer("lambda_sq_rate", torch.tensor(prior.lambda_sq_rate))
        # guide starts with the median of tau_j^2 at 1 and lambda^2 at its prior mean
        self.lambda_sq = LogNormalScale((), math.log(prior.lambda_sq_shape / prior.lambda_sq_rate), init_rho)
        self.tau_sq = LogNormalScale((spec.out_units,), 0.0, init_rho)

    def model_scale(self):
        lambda_prior = cached_prior(self, "lambda_sq", self.lambda_sq_rate, lambda: dist.Gamma(
            self.lambda_sq_concentration, self.lambda_sq_rate, validate_args=False))
        lambda_sq = model_value(pyro.sample(self.site("lambda_sq"), lambda_prior), 0)
        tau_sq = pyro.sample(self.site("tau_sq"), dist.Gamma(
            self.tau_sq_concentration, plate_aligned(lambda_sq / 2, 1), validate_args=False).to_event(1))
        return model_value(tau_sq, 1).sqrt()

    def guide_scale(self):
        self.lambda_sq.guide_sample(self, "lambda_sq")
        self.tau_sq.guide_sample(self, "tau_sq")

    def log_scale_moments(self):
        mean, var = self.tau_sq.log_moments()  # of log tau^2
        return mean / 2, var / 4               # of log tau


class SpikeSlabGroupLasso(NodePrior):
    """SS-GL: node-level spike-and-slab with a group-lasso scale per node.

    :param float prior_scale: slab standard deviation ``sigma_0`` (1).
    :param prior_inclusion: ``lambda`` for every layer, or ``None`` for the layer-wise ``1/k_l``.
    :param float lambda_sq_shape: shape of the ``Gamma`` prior of ``lambda^2`` (4).
    :param float lambda_sq_rate: rate of the ``Gamma`` prior of ``lambda^2`` (2).
    :param float init_inclusion: initial ``gamma`` (0.99).
    :param init_rho: initial ``rho`` of the slab and of the LogNormal scales; ``None``
        (default): per layer, half the spread of the default initial weights
        (:meth:`~pyro_sparse_bnn.core.priors.base.IndicatorPrior.layer_init_rho`); -6 is the
        authors' initialisation.
    :param bool hard: straight-through hard indicators.
    :param float threshold: PIP threshold for keeping a node (0.5).
    """

    layer_class = GroupLassoLayer

    def __init__(self, prior_scale: float = 1.0, prior_inclusion: Optional[float] = None,
                 lambda_sq_shape: float = 4.0, lambda_sq_rate: float = 2.0,
                 init_inclusion: float = 0.99, init_rho: Optional[float] = None, hard: bool = True,
                 threshold: float = 0.5):
        super().__init__(prior_scale, prior_inclusion, init_inclusion, init_rho, hard, threshold)
        self.lambda_sq_shape = check_positive("lambda_sq_shape", lambda_sq_shape)
        self.lambda_sq_rate = check_positive("lambda_sq_rate", lambda_sq_rate)
