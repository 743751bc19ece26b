"""Posterior inclusion probabilities (PIPs) of weights, nodes and input features.

Under the mean-field guide the indicators are independent, so (Saha, Liu & Liang 2024) a
unit is *used* iff at least one of its outgoing edges is active:

    PIP(unit j) = P(incoming group of j on) * (1 - prod_s (1 - P(switch s on)))

over the independent switches ``s`` of the following layer that cover an outgoing weight of
``j`` (:meth:`~pyro_sparse_bnn.priors.base.PriorLayer.inclusion_groups`): its outgoing edges
for the edge-level spike-and-slab, the node indicators of the following layer's units for
node-level priors (they switch whole rows), the unit's own group scale for Bayesian
Compression on a linear layer (whose groups are input units; inclusion probability
``1 / (1 + alpha)``, see :mod:`pyro_sparse_bnn.priors.bayesian_compression`). The first factor
is 1 for priors without groups of output units (edge-level spike-and-slab, Bayesian
Compression on a linear layer), the node's ``gamma`` for node-level priors, and the channel's
``1 / (1 + alpha)`` for Bayesian Compression on a conv layer.

Units of conv layers are channels. The outgoing weights of channel ``c`` are
``W[:, c, :, :]`` of a following conv layer and, for a linear layer after ``nn.Flatten``,
the columns of channel ``c``'s block of ``H * W`` features (channel-major flatten order,
after any pooling). Input-feature PIPs are the same quantity for the input units of the
first layer: input features, or -- for a network that starts with a conv layer -- input
channels. All quantities are read off the fitted guide.
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


def _inputs_used(layer, num_units: Optional[int] = None) -> torch.Tensor:
    """Probability that each of ``num_units`` input units of ``layer`` has at least one
    active outgoing weight in it, ``(num_units,)``.

    The layer's ``in_units`` inputs (dim 1 of its weight) are split into ``num_units``
    contiguous blocks of equal size, one per unit (``num_units = in_units`` by default; the
    channels of a conv layer feeding a linear layer through ``nn.Flatten`` each own a block
    of ``H * W`` inputs). The independent switches covering a block are all switches whose
    weights touch it, so ``P(used) = 1 - prod (1 - p)`` over them, computed in log space.
    """
    spec = layer.spec
    num_units = spec.in_units if num_units is None else num_units
    groups = layer.inclusion_groups()
    log_off = torch.log1p(-groups.clamp(max=1.0))
    if groups.shape[1] != spec.in_units:
        # one switch per output unit: it covers every input unit
        log_none = log_off.sum().expand(num_units)
    else:
        log_none = log_off.transpose(0, 1).reshape(num_units, -1).sum(dim=1)
    return -torch.expm1(log_none)


@torch.no_grad()
def edge_inclusion_probs(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    """PIP of every weight, keyed by layer name; each of the layer's weight shape."""
    return {layer.spec.name: layer.edge_inclusion_probs() for layer in bnn.layers}


@torch.no_grad()
def node_inclusion_probs(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    """PIP of every hidden node (conv layers: channel), keyed by the name of the layer that
    computes it.

    :returns: ``{layer_name: (out_units,)}`` for every layer but the output layer.
    """
    result = {}
    for layer, following in zip(bnn.layers[:-1], bnn.layers[1:], strict=True):
        used = _inputs_used(following, layer.spec.out_units)
        incoming = layer.output_inclusion_probs()
        result[layer.spec.name] = used if incoming is None else incoming * used
    return result


@torch.no_grad()
def feature_inclusion_probs(bnn: SparseBNN) -> torch.Tensor:
    """PIP of every input unit of the first layer: ``(num_inputs,)`` -- input features, or
    input channels for a network that starts with a conv layer."""
    return _inputs_used(bnn.layers[0])


@torch.no_grad()
def inclusion_summary(
    bnn: SparseBNN,
    threshold: Optional[float] = None,
    feature_names: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """One row per input feature (input channel of a conv-first network) and hidden node
    (channel of a conv layer): its PIP and whether it is kept.

    ``kept`` is the decision of the median-probability model that :func:`compress` builds
    (a unit is kept when it has a kept outgoing edge -- PIP of that edge above the
    threshold -- and is not constant), so it can differ from ``pip > threshold``: a node
    with many weak edges can have a high PIP yet no single kept edge.

    :param threshold: keep-rule threshold (``None``: the priors' defaults).
    :param feature_names: names of the ``bnn.num_inputs`` input features or channels
        (default ``x0, x1, ...``).
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
    for (name, pips), kept in zip(node_inclusion_probs(bnn).items(), structure.kept_nodes, strict=True):
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
