"""Sparsity priors: one module per prior, all on the interface of :mod:`.base`.

==========================  =====================================================  ==================================
prior                       paper                                                  level (a conv layer's unit is a channel)
==========================  =====================================================  ==================================
``SpikeSlab``               Bai et al. 2020; node PIPs of Saha et al. 2024          edge
``SpikeSlabNode`` (SS-IG)   Jantre et al. 2023                                     node
``SpikeSlabGroupLasso``     Jantre et al. 2023 (SS-GL)                             node + group scale
``SpikeSlabGroupHorseshoe`` Jantre et al. 2023 (SS-GHS)                            node + group scale
``GroupNormalJeffreys``     Louizos et al. 2017 (BC-GNJ)                           scale per input unit (linear) or
                                                                                   output channel (conv)
``GroupHorseshoe``          Louizos et al. 2017 (BC-GHS)                           as BC-GNJ
``SelfCompressingGaussian`` Carannante et al. 2021 (self-compression)              none: relevance (SNR) per node
==========================  =====================================================  ==================================
"""

from .base import IndicatorPrior, LayerDraw, LayerSpec, NetworkInfo, Prior, PriorLayer
from .bayesian_compression import BayesianCompressionPrior, GroupScaleLayer
from .bc_horseshoe import GroupHorseshoe
from .group_horseshoe import SpikeSlabGroupHorseshoe
from .group_lasso import SpikeSlabGroupLasso
from .normal_jeffreys import GroupNormalJeffreys
from .self_compressing import SelfCompressingGaussian, SelfCompressingLayer
from .spike_slab import SpikeSlab, SpikeSlabLayer, theory_prior_inclusion
from .spike_slab_node import (
    GroupScales,
    NodeSpikeSlabLayer,
    SpikeSlabNode,
    layerwise_prior_inclusion,
)

__all__ = [
    "Prior",
    "PriorLayer",
    "IndicatorPrior",
    "LayerSpec",
    "LayerDraw",
    "NetworkInfo",
    "SpikeSlab",
    "SpikeSlabLayer",
    "theory_prior_inclusion",
    "SpikeSlabNode",
    "SpikeSlabGroupLasso",
    "SpikeSlabGroupHorseshoe",
    "NodeSpikeSlabLayer",
    "GroupScales",
    "layerwise_prior_inclusion",
    "BayesianCompressionPrior",
    "GroupScaleLayer",
    "GroupNormalJeffreys",
    "GroupHorseshoe",
    "SelfCompressingGaussian",
    "SelfCompressingLayer",
]
