"""Edge-level spike-and-slab prior (Bai, Song & Cheng 2020; node PIPs of Saha, Liu & Liang 2024).

Every weight and bias has its own indicator (weights and bias of a layer form one augmented
matrix, see :class:`~pyro_sparse_bnn.core.priors.base.LayerSpec`)::

    w_i | z_i ~ z_i N(0, sigma_0^2) + (1 - z_i) delta_0,      z_i ~ Bernoulli(lambda)
    q:  w_i | z_i ~ z_i N(mu_i, sigma_i^2) + (1 - z_i) delta_0, z_i ~ Bernoulli(gamma_i)

written non-centred as ``w = z * beta``. The KL per weight is
``KL_Bernoulli(gamma_i || lambda) + gamma_i KL(N(mu_i, sigma_i^2) || N(0, sigma_0^2))``.
"""

import math
from typing import Optional, Union

import torch

from ..errors import HyperparameterError
from ..validation import check_positive, check_positive_int
from .base import (
    IndicatorPrior,
    LayerDraw,
    LayerSpec,
    NetworkInfo,
    PriorLayer,
    SpikeSlabBlock,
)

__all__ = ["SpikeSlab", "SpikeSlabLayer", "theory_prior_inclusion"]


def theory_prior_inclusion(
    num_weights: int,
    num_hidden_layers: int,
    hidden_width: int,
    num_data: int,
    num_inputs: int,
    delta: float = 0.1,
) -> float:
    """Theory-driven prior inclusion probability of Bai et al. (2020).

    ``-log(lambda) = log(T) + delta * ((L + 1) log(N_w) + log(sqrt(n) * p))``

    :param int num_weights: number of weights (and biases) ``T`` in the network.
    :param int num_hidden_layers: number of hidden layers ``L``.
    :param int hidden_width: hidden width ``N_w`` (the largest one for uneven widths).
    :param int num_data: training-set size ``n``.
    :param int num_inputs: input dimension ``p``.
    :param float delta: the constant ``delta`` (0.1 in the authors' code).
    :returns: ``lambda`` in (0, 1).
    """
    for name, value in [("num_weights", num_weights), ("hidden_width", hidden_width),
                        ("num_data", num_data), ("num_inputs", num_inputs)]:
        check_positive_int(name, value)
    if num_hidden_layers < 0:
        raise HyperparameterError(f"num_hidden_layers must be >= 0, got {num_hidden_layers}")
    delta = check_positive("delta", delta)
    neg_log_lambda = math.log(num_weights) + delta * (
        (num_hidden_layers + 1) * math.log(hidden_width) + math.log(math.sqrt(num_data) * num_inputs)
    )
    return math.exp(-neg_log_lambda)


class SpikeSlab(IndicatorPrior):
    """Edge-level spike-and-slab prior with relaxed Bernoulli indicators.

    Each weight and each bias gets an indicator ``z ~ Bernoulli(lambda)`` and a Gaussian slab
    ``N(0, prior_scale^2)``. Edge PIPs are the guide's ``gamma``; node PIPs (a node is used
    iff at least one of its outgoing edges is active) and input-feature PIPs follow from
    them (see :mod:`pyro_sparse_bnn.analysis.inclusion`).

    **Defaults and the published setting.** ``SpikeSlab()`` uses ``lambda = 0.5`` and a slab
    that starts at half the spread of the default initial weights; Bai et al. use the
    theory-driven ``lambda`` (:func:`theory_prior_inclusion`) and ``rho = -6``, available as
    ``SpikeSlab.published()`` (or ``prior_inclusion="theory", init_rho=-6.0``).

    Why ``lambda = 0.5``: an indicator switched on costs ``-log lambda`` nats of KL and one
    switched off ``-log(1 - lambda)``. The theory-driven ``lambda`` is about ``1 / T`` for
    ``T`` weights (the prior expects fewer than one active weight), so every active weight
    costs 10 to 16 nats. That is the right order for the asymptotics it was derived for, but
    on a data set of hundreds or thousands of examples the charge for a dense network is many
    times the log-likelihood the data can pay: every indicator falls together and the
    median-probability model is a constant network (measured on scikit-learn's breast cancer
    data for 200 to 600 epochs; with ``lambda = 0.1`` too). At ``lambda = 0.5`` the Bernoulli
    KL charges nothing for either decision and the slab KL decides: a weight is kept when it
    improves the fit by more than ``KL(q(beta) || N(0, sigma_0^2))``, the Occam factor of a
    weight the data determine (about ``log(sigma_0 / sigma)`` nats), so the pruning follows the
    amount of data. Weights that the data leave undetermined end with ``gamma`` near 0.5 and
    the median-probability model keeps about half of them.

    :param float prior_scale: slab standard deviation ``sigma_0`` (1.3 in Bai et al.'s code).
    :param prior_inclusion: prior inclusion probability ``lambda`` in (0, 1) (0.5), or
        ``"theory"`` for :func:`theory_prior_inclusion` of the network it is applied to, which
        needs the training-set size (``None`` means ``"theory"`` too).
    :param float delta: ``delta`` of the theory-driven ``lambda``.
    :param float init_inclusion: initial ``gamma`` (0.99).
    :param init_rho: initial slab ``rho`` (``sigma = softplus(rho)``); ``None`` (default):
        per layer, half the spread of the default initial weights
        (:meth:`~pyro_sparse_bnn.core.priors.base.IndicatorPrior.layer_init_rho`); -6 is the
        authors' initialisation.
    :param bool hard: straight-through hard indicators (default) or soft relaxed ones.
    :param float threshold: default PIP threshold of the median-probability model (0.5).
    :raises HyperparameterError: for a ``prior_inclusion`` that is neither a probability nor
        ``"theory"``, and for other invalid hyperparameters.
    """

    published_arguments = {"prior_inclusion": "theory", "init_rho": -6.0}

    def __init__(
        self,
        prior_scale: float = 1.3,
        prior_inclusion: Union[float, str, None] = 0.5,
        delta: float = 0.1,
        init_inclusion: float = 0.99,
        init_rho: Optional[float] = None,
        hard: bool = True,
        threshold: float = 0.5,
    ):
        theory = prior_inclusion is None or (isinstance(prior_inclusion, str) and prior_inclusion == "theory")
        if isinstance(prior_inclusion, str) and not theory:
            raise HyperparameterError(
                f"prior_inclusion must be a probability in (0, 1) or 'theory', got {prior_inclusion!r}"
            )
        super().__init__(prior_scale, None if theory else prior_inclusion, init_inclusion, init_rho, hard,
                         threshold)
        if theory:
            self.prior_inclusion = "theory"
        self.delta = check_positive("delta", delta)

    def resolve_prior_inclusion(self, spec: LayerSpec, network: NetworkInfo) -> float:
        """``lambda``: the given value, or the theory-driven one of the whole network."""
        if self.prior_inclusion != "theory":
            return self.prior_inclusion
        if network.num_data is None:
            raise HyperparameterError(
                "SpikeSlab(prior_inclusion='theory') uses the theory-driven lambda, which needs the "
                "training-set size: pass num_data to SparseBNN or give prior_inclusion a number"
            )
        return theory_prior_inclusion(
            network.num_weights, network.num_hidden_layers, max(network.hidden_width, 1),
            network.num_data, network.num_inputs, self.delta,
        )

    def build(self, spec: LayerSpec, network: NetworkInfo) -> "SpikeSlabLayer":
        return SpikeSlabLayer(spec, self, self.resolve_prior_inclusion(spec, network))


class SpikeSlabLayer(PriorLayer):
    """Per-layer module of :class:`SpikeSlab`.

    Sample sites (``<layer>`` is the layer's name, e.g. ``net.0``), both of the augmented
    shape ``(out_units, fan_in + 1)`` (row ``j``: incoming weights of unit ``j``, then its
    bias): ``<layer>.edge_indicator`` and ``<layer>.slab``.
    """

    def __init__(self, spec: LayerSpec, prior: SpikeSlab, prior_inclusion: float):
        super().__init__(spec, prior.threshold)
        self.prior_inclusion = prior_inclusion
        self.block = SpikeSlabBlock(
            "edge_indicator", spec.param_shape,
            init_loc=spec.augment(spec.module.weight, spec.module.bias),
            **prior.block_arguments(prior_inclusion, spec),
        )

    def model(self) -> LayerDraw:
        return self.block.model(self)

    def guide(self, temperature) -> None:
        self.block.guide(self, temperature)

    def inclusion_groups(self) -> torch.Tensor:
        """One independent indicator per weight: the edge PIPs, shape ``weight_shape``."""
        return self.spec.split(self.block.probs)[0]

    def bias_inclusion_probs(self) -> Optional[torch.Tensor]:
        """PIPs of the biases, shape ``(out_units,)`` (``None`` without bias)."""
        return self.spec.split(self.block.probs)[1]

    def keep_masks(self, threshold=None):
        threshold = self.default_threshold if threshold is None else threshold
        return self.spec.split(self.block.probs > threshold)

    def posterior_mean(self):
        return self.spec.split(self.block.slab.loc.detach())

    @torch.no_grad()
    def weight_moments(self):
        """``(mu, sigma^2)`` of the slab: the weight's moments given that it is kept."""
        return self.block.slab.loc.detach().clone(), self.block.slab.scale.square()
