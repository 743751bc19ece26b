"""Node-level spike-and-slab priors (Jantre, Bhattacharya & Maiti 2023): shared machinery and SS-IG.

One indicator ``z_j ~ Bernoulli(lambda_l)`` per output unit ``j`` (for a conv layer: per
output channel, i.e. filter) switches the whole group ``w_j`` -- the incoming weights of unit
``j`` and its bias, row ``j`` of the augmented parameter matrix -- on or off::

    w_j = z_j * s_j * beta_j,    beta_j ~ N(0, sigma_0^2 I)

where ``s_j`` is a per-unit group scale (1 for SS-IG; the group-lasso scale for SS-GL; the
regularised horseshoe scale for SS-GHS). The KL of the indicator and slab is
``KL_Bernoulli(gamma_j || lambda) + gamma_j KL(q(beta_j) || p(beta_j))``; the KLs of the
scales are added unweighted (their priors do not depend on ``z``).

:class:`NodeSpikeSlabLayer` implements everything but the scale sites; a prior with a group
scale overrides :meth:`~NodeSpikeSlabLayer.model_scale`,
:meth:`~NodeSpikeSlabLayer.guide_scale`, :meth:`~NodeSpikeSlabLayer.log_scale_moments` and
:meth:`~NodeSpikeSlabLayer.effective_scale`.
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from .base import (
    IndicatorPrior,
    LayerDraw,
    LayerSpec,
    NetworkInfo,
    PriorLayer,
    SpikeSlabBlock,
    event_view,
)

__all__ = [
    "SpikeSlabNode",
    "NodeSpikeSlabLayer",
    "NodePrior",
    "GroupScales",
    "layerwise_prior_inclusion",
    "gaussian_expectation",
]

#: two-sided 90 % interval of a standard normal
_Z90 = 1.6448536269514722


def layerwise_prior_inclusion(spec: LayerSpec) -> float:
    """Jantre et al.'s layer-wise prior inclusion probability, ``lambda_l ~ 1 / k_l`` for a
    layer with ``k_l`` output units (their formula only adds terms of order 1e-9); a
    single-unit layer, where ``1 / k_l = 1`` is not a probability, gets 0.5."""
    return 1.0 / spec.out_units if spec.out_units > 1 else 0.5


def gaussian_expectation(fn, mean: torch.Tensor, var: torch.Tensor, num_points: int = 48) -> torch.Tensor:
    """``E[fn(X)]`` for ``X ~ N(mean, var)`` elementwise, by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_points)
    nodes = torch.as_tensor(nodes, dtype=mean.dtype, device=mean.device)
    weights = torch.as_tensor(weights / math.sqrt(2 * math.pi), dtype=mean.dtype, device=mean.device)
    points = mean.unsqueeze(-1) + var.sqrt().unsqueeze(-1) * nodes
    return (fn(points) * weights).sum(-1)


@dataclass
class GroupScales:
    """Posterior summary of the per-unit group scales ``s_j`` (the factor multiplying row
    ``j`` besides its indicator), each of shape ``(out_units,)``.

    :ivar mean: posterior mean. :ivar std: posterior standard deviation.
    :ivar lower: 5 % quantile. :ivar upper: 95 % quantile.
    """

    mean: torch.Tensor
    std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


class NodePrior(IndicatorPrior):
    """Base of the node-level priors: the default ``lambda`` is :func:`layerwise_prior_inclusion`.

    **Defaults and the published setting.** The layer-wise ``lambda`` and every other
    hyperparameter are Jantre et al.'s except the slab's initial scale: by default it starts
    at half the spread of the default initial weights
    (:meth:`~pyro_sparse_bnn.core.priors.base.IndicatorPrior.layer_init_rho`) rather than at
    ``softplus(-6)``. At the authors' initialisation the slab KL of a node starts at hundreds
    of nats (about 5.5 per incoming weight), and with 200 epochs on scikit-learn's breast
    cancer and digits data every node-level prior switched off every node of the first layers
    (breast cancer: a constant network) or kept 4 to 9 (digits: 0.39-0.81 accuracy); with the
    default start they kept 5-20 % of the parameters within a point or two of a dense
    network. ``cls.published()`` (or ``init_rho=-6.0``) gives the authors' initialisation.
    """

    layer_class = None

    def resolve_prior_inclusion(self, spec: LayerSpec, network: NetworkInfo) -> float:
        if self.prior_inclusion is not None:
            return self.prior_inclusion
        return layerwise_prior_inclusion(spec)

    def build(self, spec: LayerSpec, network: NetworkInfo) -> "NodeSpikeSlabLayer":
        return self.layer_class(spec, self, self.resolve_prior_inclusion(spec, network))


class NodeSpikeSlabLayer(PriorLayer):
    """Per-layer module of a node-level spike-and-slab prior.

    Sample sites: the scale sites of the subclass (if any), then
    ``<layer>.node_indicator`` of shape ``(out_units,)`` and ``<layer>.slab`` of the
    augmented shape ``(out_units, fan_in + 1)``.

    The slab's initial mean is the user's initial weights divided by the posterior mean of
    the group scale under the initial guide, so that the posterior mean of every weight
    (:meth:`posterior_mean`) starts at the user's weight.
    """

    def __init__(self, spec: LayerSpec, prior: IndicatorPrior, prior_inclusion: float):
        super().__init__(spec, prior.threshold)
        self.prior_inclusion = prior_inclusion
        self.build_scales(prior, prior.layer_init_rho(spec))
        init_loc = spec.augment(spec.module.weight, spec.module.bias).detach()
        moments = self.scale_moments()
        if moments is not None:
            init_loc = init_loc / moments[0].view(-1, 1)
        self.block = SpikeSlabBlock(
            "node_indicator", (spec.out_units,), init_loc=init_loc, **prior.block_arguments(prior_inclusion, spec)
        )

    # -- group-scale hooks (no scale: SS-IG) ------------------------------------------------
    def build_scales(self, prior: IndicatorPrior, init_rho: float) -> None:
        """Create the modules of the group scale's guide (called before the slab is built;
        ``init_rho`` is the layer's initial ``rho``, :meth:`IndicatorPrior.layer_init_rho`)."""

    def model_scale(self) -> Optional[torch.Tensor]:
        """Sample the model's scale sites; return the per-unit scale ``(out_units,)`` or ``None``."""
        return None

    def guide_scale(self) -> None:
        """Sample the guide's scale sites (same order as :meth:`model_scale`)."""

    def log_scale_moments(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Mean and variance ``(out_units,)`` of the Gaussian ``log`` of the *raw* scale under
        the guide, or ``None`` without a scale."""
        return None

    def effective_scale(self, log_scale: torch.Tensor) -> torch.Tensor:
        """The scale multiplying the group, as a monotone function of the raw log-scale."""
        return torch.exp(log_scale)

    # -- model and guide ----------------------------------------------------------------------
    def model(self) -> LayerDraw:
        scale = self.model_scale()
        draw = self.block.model(self)
        if scale is not None:
            draw.scale = draw.scale * event_view(scale, 1, self.block.gate_view)
        return draw

    def guide(self, temperature) -> None:
        self.guide_scale()
        self.block.guide(self, temperature)

    # -- readouts -----------------------------------------------------------------------------
    def output_inclusion_probs(self) -> torch.Tensor:
        return self.block.probs

    def inclusion_groups(self) -> torch.Tensor:
        """One indicator per output unit (conv: output channel), shape ``row_shape``."""
        return self.block.probs.view(self.spec.row_shape)

    def keep_masks(self, threshold=None):
        threshold = self.default_threshold if threshold is None else threshold
        keep = self.block.probs > threshold
        weight_mask = keep.view(self.spec.row_shape).expand(self.spec.weight_shape)
        return weight_mask, (keep if self.spec.has_bias else None)

    def scale_moments(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(E[s_j], E[s_j^2])`` of the group scales under the guide, or ``None``."""
        moments = self.log_scale_moments()
        if moments is None:
            return None
        mean, var = moments
        first = gaussian_expectation(self.effective_scale, mean, var)
        second = gaussian_expectation(lambda t: self.effective_scale(t).square(), mean, var)
        return first, second

    @torch.no_grad()
    def group_scales(self) -> GroupScales:
        """Posterior mean, standard deviation and 90 % interval of the group scales."""
        moments = self.log_scale_moments()
        if moments is None:
            one = torch.ones(self.spec.out_units, dtype=self.block.slab.loc.dtype,
                             device=self.block.slab.loc.device)
            return GroupScales(one, torch.zeros_like(one), one, one)
        mean, var = moments
        first = gaussian_expectation(self.effective_scale, mean, var)
        # E[(s - E s)^2] rather than E[s^2] - (E s)^2, which cancels in float32 when the
        # scale's spread is small next to its mean
        spread_sq = gaussian_expectation(lambda t: (self.effective_scale(t) - first.unsqueeze(-1)).square(), mean, var)
        spread = _Z90 * var.sqrt()
        return GroupScales(
            mean=first,
            std=spread_sq.sqrt(),
            lower=self.effective_scale(mean - spread),
            upper=self.effective_scale(mean + spread),
        )

    @torch.no_grad()
    def weight_moments(self):
        """Moments of ``w_j = s_j beta_j`` given ``z_j = 1``: ``E[w] = E[s] mu`` and
        ``Var[w] = E[s^2] (mu^2 + sigma^2) - E[s]^2 mu^2`` (``s = 1`` for SS-IG)."""
        mu, var = self.block.slab.loc.detach(), self.block.slab.scale.square()
        moments = self.scale_moments()
        if moments is None:
            return mu.clone(), var
        first, second = (m.view(self.block.gate_view) for m in moments)
        return first * mu, second * (mu.square() + var) - first.square() * mu.square()

    @torch.no_grad()
    def posterior_mean(self):
        """``E[s_j] * mu_j`` for kept units: the posterior mean of ``w_j`` given ``z_j = 1``."""
        loc = self.block.slab.loc.detach()
        moments = self.scale_moments()
        if moments is not None:
            loc = loc * moments[0].view(self.block.gate_view)
        return self.spec.split(loc)


class SpikeSlabNode(NodePrior):
    """SS-IG: node-level spike-and-slab with a Gaussian slab (Jantre et al. 2023).

    ``w_j = z_j beta_j``, ``beta_j ~ N(0, prior_scale^2 I)``, ``z_j ~ Bernoulli(lambda_l)``.

    :param float prior_scale: slab standard deviation ``sigma_0`` (1 for MLP / LeNet).
    :param prior_inclusion: ``lambda`` for every layer, or ``None`` (default) for the
        layer-wise ``1 / k_l`` (:func:`layerwise_prior_inclusion`).
    :param float init_inclusion: initial ``gamma`` (0.99).
    :param init_rho: initial slab ``rho`` (``sigma = softplus(rho)``); ``None`` (default):
        per layer, half the spread of the default initial weights
        (:meth:`~pyro_sparse_bnn.core.priors.base.IndicatorPrior.layer_init_rho`); -6 is the
        authors' initialisation.
    :param bool hard: straight-through hard indicators.
    :param float threshold: PIP threshold for keeping a node (0.5).
    """

    layer_class = NodeSpikeSlabLayer

    def __init__(self, prior_scale: float = 1.0, prior_inclusion: Optional[float] = None,
                 init_inclusion: float = 0.99, init_rho: Optional[float] = None, hard: bool = True,
                 threshold: float = 0.5):
        super().__init__(prior_scale, prior_inclusion, init_inclusion, init_rho, hard, threshold)
