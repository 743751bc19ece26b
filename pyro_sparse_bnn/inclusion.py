"""Posterior inclusion probabilities (PIPs) of weights, nodes and input features.

Under the mean-field guide the indicators are independent, so (Saha, Liu & Liang 2024) a
unit is *used* iff at least one of its outgoing edges is active:

    PIP(unit j) = P(incoming group of j on) * (1 - prod_k (1 - P(edge k <- j active)))

The first factor is 1 for priors without node indicators (edge-level spike-and-slab); for
node-level priors it is the node's ``gamma``. For the Bayesian Compression priors, whose
groups are the input units of each layer, the second factor is the group's own inclusion
probability ``1 / (1 + alpha)`` (see :mod:`pyro_sparse_bnn.priors.bayesian_compression`). Input-feature PIPs are the same quantity for
the inputs of the first layer. All quantities are read off the fitted guide.
"""

from typing import Dict, Optional, Sequence

import pandas as pd
import torch

from .compress import analyse_structure
from .errors import InputError
from .network import SparseBNN

__all__ = [
    "edge_inclusion_probs",
    "node_inclusion_probs",
    "feature_inclusion_probs",
    "inclusion_summary",
    "group_scale_summary",
]


def _any_active(edge_probs: torch.Tensor) -> torch.Tensor:
    """``1 - prod_k (1 - p[k, j])`` over all dimensions but dim 1, computed in log space."""
    log_none = torch.log1p(-edge_probs.clamp(max=1.0)).transpose(0, 1).reshape(edge_probs.shape[1], -1)
    return -torch.expm1(log_none.sum(dim=1))


def _inputs_used(layer) -> torch.Tensor:
    """Probability that each input unit of ``layer`` feeds it: the prior's own group
    probability where the groups are input units (Bayesian Compression), otherwise the
    probability that at least one outgoing edge is active."""
    probs = layer.input_inclusion_probs()
    return _any_active(layer.edge_inclusion_probs()) if probs is None else probs


@torch.no_grad()
def edge_inclusion_probs(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    """PIP of every weight, keyed by layer name; each of the layer's weight shape."""
    return {layer.spec.name: layer.edge_inclusion_probs() for layer in bnn.layers}


@torch.no_grad()
def node_inclusion_probs(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    """PIP of every hidden node, keyed by the name of the layer that computes it.

    :returns: ``{layer_name: (out_units,)}`` for every layer but the output layer.
    """
    result = {}
    for layer, following in zip(bnn.layers[:-1], bnn.layers[1:]):
        used = _inputs_used(following)
        incoming = layer.output_inclusion_probs()
        result[layer.spec.name] = used if incoming is None else incoming * used
    return result


@torch.no_grad()
def feature_inclusion_probs(bnn: SparseBNN) -> torch.Tensor:
    """PIP of every input feature: ``(in_features,)``."""
    return _inputs_used(bnn.layers[0])


@torch.no_grad()
def inclusion_summary(
    bnn: SparseBNN,
    threshold: Optional[float] = None,
    feature_names: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """One row per input feature and hidden node: its PIP and whether it is kept.

    ``kept`` is the decision of the median-probability model that :func:`compress` builds
    (a unit is kept when it has a kept outgoing edge -- PIP of that edge above the
    threshold -- and is not constant), so it can differ from ``pip > threshold``: a node
    with many weak edges can have a high PIP yet no single kept edge.

    :param threshold: keep-rule threshold (``None``: the priors' defaults).
    :param feature_names: names of the input features (default ``x0, x1, ...``).
    :returns: DataFrame with columns ``layer`` (``"input"`` or the layer name), ``unit``
        (index), ``name``, ``pip`` and ``kept``.
    """
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(bnn.num_inputs)]
    elif len(feature_names) != bnn.num_inputs:
        raise InputError(
            f"feature_names has {len(feature_names)} names but the network has "
            f"{bnn.num_inputs} input features"
        )
    structure = analyse_structure(bnn, threshold)
    frames = [
        pd.DataFrame({
            "layer": "input",
            "unit": range(bnn.num_inputs),
            "name": list(feature_names),
            "pip": feature_inclusion_probs(bnn).cpu().numpy(),
            "kept": structure.kept_features.cpu().numpy(),
        })
    ]
    for (name, pips), kept in zip(node_inclusion_probs(bnn).items(), structure.kept_nodes):
        frames.append(pd.DataFrame({
            "layer": name,
            "unit": range(len(pips)),
            "name": [f"{name}[{j}]" for j in range(len(pips))],
            "pip": pips.cpu().numpy(),
            "kept": kept.cpu().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def group_scale_summary(bnn: SparseBNN) -> pd.DataFrame:
    """Posterior of the per-node group scales of the layers whose prior has them (SS-GL's
    ``tau_j``, SS-GHS's regularised ``s~_j``), with each node's indicator PIP.

    :returns: DataFrame with columns ``layer``, ``unit``, ``pip`` (the node indicator's
        ``gamma``), ``scale_mean``, ``scale_std``, ``scale_q05`` and ``scale_q95``; empty when
        no layer has group scales.
    """
    frames = []
    for layer in bnn.layers:
        group_scales = getattr(layer, "group_scales", None)
        if group_scales is None or layer.log_scale_moments() is None:
            continue
        scales = group_scales()
        frames.append(pd.DataFrame({
            "layer": layer.spec.name,
            "unit": range(layer.spec.out_units),
            "pip": layer.output_inclusion_probs().cpu().numpy(),
            "scale_mean": scales.mean.cpu().numpy(),
            "scale_std": scales.std.cpu().numpy(),
            "scale_q05": scales.lower.cpu().numpy(),
            "scale_q95": scales.upper.cpu().numpy(),
        }))
    columns = ["layer", "unit", "pip", "scale_mean", "scale_std", "scale_q05", "scale_q95"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
