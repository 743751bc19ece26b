"""SS-GHS: spike-and-slab group horseshoe (Jantre, Bhattacharya & Maiti 2023).

::

    w_j = z_j s~_j beta_j,   s~_j = c s_j / sqrt(c^2 + s_j^2),   s_j = tau_0 tau_j
    tau_j ~ C+(0, 1),  tau_0 ~ C+(0, global_scale),  beta_j ~ N(0, sigma_0^2 I)

Each half-Cauchy is written through its square, ``tau^2 = a b`` with ``a ~ Gamma(1/2, 1)``
and ``b ~ InvGamma(1/2, 1)`` (a ratio of two chi-squared variables), and the guide puts
LogNormals on every ``a`` and ``b``, whose KLs against Gamma(1/2, 1) and InvGamma(1/2, 1) are
closed form. ``c`` (1 by default) caps the effective scale: the regularised horseshoe.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..validation import check_positive
from .half_cauchy import HorseshoeScales
from .spike_slab_node import NodePrior, NodeSpikeSlabLayer

__all__ = ["SpikeSlabGroupHorseshoe", "GroupHorseshoeLayer", "regularized_scale"]


def regularized_scale(log_scale: torch.Tensor, c: float) -> torch.Tensor:
    """``c s / sqrt(c^2 + s^2)`` from ``log s``, computed as ``c sqrt(sigmoid(2 log(s / c)))``."""
    return c * torch.exp(0.5 * F.logsigmoid(2 * (log_scale - math.log(c))))


class GroupHorseshoeLayer(NodeSpikeSlabLayer):
    """Per-layer module of :class:`SpikeSlabGroupHorseshoe`.

    Sample sites: ``<layer>.tau0_a``, ``<layer>.tau0_b`` (scalars; ``tau_0^2 =
    global_scale^2 a b``), ``<layer>.tau_a``, ``<layer>.tau_b`` ``(out_units,)``
    (``tau_j^2 = a_j b_j``), ``<layer>.node_indicator`` ``(out_units,)`` and ``<layer>.slab``.
    """

    def build_scales(self, prior: "SpikeSlabGroupHorseshoe", init_rho: float) -> None:
        self.c = prior.c
        # the guide starts with the median of every factor a, b at 1: median s = global_scale
        self.scales = HorseshoeScales(self.spec.out_units, prior.global_scale, init_rho)

    def model_scale(self):
        return regularized_scale(self.scales.model(self), self.c)

    def guide_scale(self):
        self.scales.guide(self)

    def log_scale_moments(self):
        return self.scales.log_moments()

    def effective_scale(self, log_scale):
        return regularized_scale(log_scale, self.c)


class SpikeSlabGroupHorseshoe(NodePrior):
    """SS-GHS: node-level spike-and-slab with a regularised group-horseshoe scale per node.

    :param float prior_scale: slab standard deviation ``sigma_0`` (1).
    :param prior_inclusion: ``lambda`` for every layer, or ``None`` for the layer-wise ``1/k_l``.
    :param float c: regularisation of the horseshoe scale, ``s~ = c s / sqrt(c^2 + s^2)`` (1).
    :param float global_scale: scale of the half-Cauchy prior of ``tau_0`` (1).
    :param float init_inclusion: initial ``gamma`` (0.99).
    :param init_rho: initial ``rho`` of the slab and of the LogNormal scales; ``None``
        (default): per layer, half the spread of the default initial weights
        (:meth:`~pyro_sparse_bnn.core.priors.base.IndicatorPrior.layer_init_rho`); -6 is the
        authors' initialisation.
    :param bool hard: straight-through hard indicators.
    :param float threshold: PIP threshold for keeping a node (0.5).
    """

    layer_class = GroupHorseshoeLayer

    def __init__(self, prior_scale: float = 1.0, prior_inclusion: Optional[float] = None,
                 c: float = 1.0, global_scale: float = 1.0, init_inclusion: float = 0.99,
                 init_rho: Optional[float] = None, hard: bool = True, threshold: float = 0.5):
        super().__init__(prior_scale, prior_inclusion, init_inclusion, init_rho, hard, threshold)
        self.c = check_positive("c", c)
        self.global_scale = check_positive("global_scale", global_scale)
