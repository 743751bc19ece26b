"""Sparsity priors: one module per prior, all on the interface of :mod:`.base`."""

from .base import LayerDraw, LayerSpec, NetworkInfo, Prior, PriorLayer
from .spike_slab import SpikeSlab, SpikeSlabLayer, theory_prior_inclusion

__all__ = [
    "Prior",
    "PriorLayer",
    "LayerSpec",
    "LayerDraw",
    "NetworkInfo",
    "SpikeSlab",
    "SpikeSlabLayer",
    "theory_prior_inclusion",
]
