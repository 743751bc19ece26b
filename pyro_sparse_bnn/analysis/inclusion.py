"""Posterior inclusion probabilities (PIPs) of weights, nodes and input features.

Under the mean-field guide the indicators are independent, so (Saha, Liu & Liang 2024) a
unit is *used* iff at least one of its outgoing edges is active:

    PIP(unit j) = P(incoming group of j on) * (1 - prod_s (1 - P(switch s on)))

over the independent switches ``s`` of the following layer that cover an outgoing weight of
``j`` (:meth:`~pyro_sparse_bnn.core.priors.base.PriorLayer.inclusion_groups`): its outgoing edges
for the edge-level spike-and-slab, the node indicators of the following layer's units for
node-level priors (they switch whole rows), the unit's own group scale for Bayesian
Compression on a linear layer (whose groups are input units; inclusion probability
``1 / (1 + alpha)``, see :mod:`pyro_sparse_bnn.core.priors.bayesian_compression`). The first factor
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

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..core.errors import InputError
from ..core.network import SparseBNN, check_bnn
from ..core.validation import check_positive_int, check_threshold, layer_thresholds
from .compress import analyse_structure

if TYPE_CHECKING:  # imported where used: they take a second to load
    import pandas as pd

__all__ = [
    "edge_inclusion_probs",
    "node_inclusion_probs",
    "feature_inclusion_probs",
    "inclusion_summary",
    "group_scale_summary",
    "inclusion_draws",
    "check_same_network",
]


def _inputs_used(layer, num_units: Optional[int] = None, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Probability that each of ``num_units`` input units of ``layer`` has at least one
    active outgoing weight in it, ``(*batch, num_units)``.

    The layer's ``in_units`` inputs (dim 1 of its weight) are split into ``num_units``
    contiguous blocks of equal size, one per unit (``num_units = in_units`` by default; the
    channels of a conv layer feeding a linear layer through ``nn.Flatten`` each own a block
    of ``H * W`` inputs). The independent switches covering a block are all switches whose
    weights touch it, so ``P(used) = 1 - prod (1 - p)`` over them, computed in log space.

    :param groups: the switches' inclusion probabilities in the shape of
        :meth:`~pyro_sparse_bnn.core.priors.base.PriorLayer.inclusion_groups`, optionally with
        leading batch dimensions (default: the layer's own). Given 0/1 draws of the switches
        instead, the same formula returns 0/1 draws of "the unit is used".
    """
    spec = layer.spec
    num_units = spec.in_units if num_units is None else num_units
    groups = layer.inclusion_groups() if groups is None else groups
    b = groups.dim() - len(spec.weight_shape)
    batch = groups.shape[:b]
    log_off = torch.log1p(-groups.clamp(max=1.0))
    if groups.shape[b + 1] != spec.in_units:
        # one switch per output unit: it covers every input unit
        log_none = log_off.flatten(b).sum(-1, keepdim=True).expand(*batch, num_units)
    else:
        log_none = log_off.transpose(b, b + 1).reshape(*batch, num_units, -1).sum(dim=-1)
    return -torch.expm1(log_none)


def _unit_inclusion(bnn: SparseBNN, groups: Sequence[torch.Tensor]):
    """Feature and node inclusion from per-layer switch probabilities (or 0/1 switch draws)
    ``groups[l]`` shaped like ``bnn.layers[l].inclusion_groups()`` with optional leading
    batch dimensions: ``((*batch, num_inputs), {layer_name: (*batch, out_units)})``."""
    features = _inputs_used(bnn.layers[0], groups=groups[0])
    nodes = {}
    for i, (layer, following) in enumerate(zip(bnn.layers[:-1], bnn.layers[1:], strict=True)):
        used = _inputs_used(following, layer.spec.out_units, groups[i + 1])
        if layer.output_inclusion_probs() is None:
            nodes[layer.spec.name] = used
        else:  # the layer's own switches are one per output unit (row-shaped groups)
            nodes[layer.spec.name] = groups[i].reshape(used.shape) * used
    return features, nodes


@torch.no_grad()
def inclusion_draws(bnn: SparseBNN, num_samples: int = 1):
    """Draws of "unit is used" from the guide's law of the inclusion switches.

    Every independent switch of every layer
    (:meth:`~pyro_sparse_bnn.core.priors.base.PriorLayer.inclusion_groups`) is drawn as
    ``Bernoulli(p)``: for the spike-and-slab priors this is exactly the law of the guide's
    hard indicators (``P(hard z = 1) = sigmoid(logits) = gamma``); for Bayesian Compression
    it is the library's convention ``p = 1 / (1 + alpha)``. A unit is used in a draw iff one
    of its outgoing switches is on (and, for node-level priors, its own indicator), so the
    mean of the draws is the unit's PIP (:func:`node_inclusion_probs`,
    :func:`feature_inclusion_probs`). Uses torch's global random generator.

    :returns: ``(features, nodes)``: 0/1 tensors ``(num_samples, num_inputs)`` and
        ``{layer_name: (num_samples, out_units)}`` for every layer but the output layer.
    """
    check_bnn(bnn, "inclusion_draws")
    num_samples = check_positive_int("num_samples", num_samples, InputError)
    groups = []
    for layer in bnn.layers:
        probs = layer.inclusion_groups()
        groups.append(torch.bernoulli(probs.expand(int(num_samples), *probs.shape)))
    return _unit_inclusion(bnn, groups)


@torch.no_grad()
def edge_inclusion_probs(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    """PIP of every weight, keyed by layer name; each of the layer's weight shape (CPU tensors)."""
    check_bnn(bnn, "edge_inclusion_probs")
    return {layer.spec.name: layer.edge_inclusion_probs().cpu() for layer in bnn.layers}


@torch.no_grad()
def node_inclusion_probs(bnn: SparseBNN) -> Dict[str, torch.Tensor]:
    """PIP of every hidden node (conv layers: channel), keyed by the name of the layer that
    computes it.

    :returns: ``{layer_name: (out_units,)}`` for every layer but the output layer (CPU tensors).
    """
    check_bnn(bnn, "node_inclusion_probs")
    nodes = _unit_inclusion(bnn, [layer.inclusion_groups() for layer in bnn.layers])[1]
    return {name: pips.cpu() for name, pips in nodes.items()}


@torch.no_grad()
def feature_inclusion_probs(bnn: SparseBNN) -> torch.Tensor:
    """PIP of every input unit of the first layer: ``(num_inputs,)`` -- input features, or
    input channels for a network that starts with a conv layer (a CPU tensor)."""
    check_bnn(bnn, "feature_inclusion_probs")
    return _inputs_used(bnn.layers[0]).cpu()


def _network_signature(bnn: SparseBNN):
    return {
        "architecture": (tuple(bnn.architecture.widths), tuple(bnn.input_shape)),
        "layers": tuple(layer.spec.name for layer in bnn.layers),
        "priors": tuple(type(layer).__name__ for layer in bnn.layers),
        "likelihood": type(bnn.likelihood).__name__,
    }


def check_same_network(fits, what: str = "fits") -> List[SparseBNN]:
    """Return ``fits`` (one :class:`SparseBNN` or a sequence of them) as a non-empty list of
    networks with the same architecture, layer names, priors and likelihood -- independent
    fits of one model, e.g. restarts with different seeds.

    :raises InputError: naming the first property in which a network differs from the first.
    """
    if isinstance(fits, SparseBNN):
        return [fits]
    if isinstance(fits, (str, bytes)) or not hasattr(fits, "__iter__"):
        raise InputError(f"{what} must be a SparseBNN or a sequence of SparseBNNs, got {type(fits).__name__}")
    fits = list(fits)
    if not fits:
        raise InputError(f"{what} is empty: give at least one fitted SparseBNN")
    for i, bnn in enumerate(fits):
        if not isinstance(bnn, SparseBNN):
            raise InputError(f"{what}[{i}] is a {type(bnn).__name__}, not a SparseBNN")
    reference = _network_signature(fits[0])
    for i, bnn in enumerate(fits[1:], start=1):
        for key, value in _network_signature(bnn).items():
            if value != reference[key]:
                raise InputError(
                    f"{what}[{i}] is not a fit of the same model as {what}[0]: its {key} is "
                    f"{value} but {what}[0]'s is {reference[key]}"
                )
    return fits


def _unit_threshold(bnn: SparseBNN, index: int, threshold: Optional[float]) -> float:
    """The keep-rule threshold of the layer whose switches decide whether the units feeding
    layer ``index`` are used: the input groups of a Bayesian Compression linear layer, else
    the units' own switches (node indicators, a conv layer's channel scales, relevance), else
    the layer's edges (``threshold`` itself when one number is given; a per-layer threshold's
    entry for that layer)."""
    if threshold is not None and not isinstance(threshold, tuple):
        return threshold
    thresholds = layer_thresholds(threshold, len(bnn.layers))

    def of(i):
        return bnn.layers[i].default_threshold if thresholds[i] is None else thresholds[i]

    layer = bnn.layers[index]
    if index > 0 and layer.input_inclusion_probs() is None:
        own = bnn.layers[index - 1]
        if own.output_inclusion_probs() is not None:
            return of(index - 1)
    return of(index)


def _single_fit_summary(bnn: SparseBNN, threshold, feature_names) -> pd.DataFrame:
    import pandas as pd

    structure = analyse_structure(bnn, threshold)
    frames = [
        pd.DataFrame({
            "layer": "input",
            "unit": range(bnn.num_inputs),
            "name": list(feature_names),
            "pip": feature_inclusion_probs(bnn).cpu().numpy(),
            "threshold": _unit_threshold(bnn, 0, threshold),
            "kept": structure.kept_features.cpu().numpy(),
        })
    ]
    nodes = zip(node_inclusion_probs(bnn).items(), structure.kept_nodes, strict=True)
    for i, ((name, pips), kept) in enumerate(nodes):
        frames.append(pd.DataFrame({
            "layer": name,
            "unit": range(len(pips)),
            "name": [f"{name}[{j}]" for j in range(len(pips))],
            "pip": pips.cpu().numpy(),
            "threshold": _unit_threshold(bnn, i + 1, threshold),
            "kept": kept.cpu().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def inclusion_summary(
    bnn: Union[SparseBNN, Sequence[SparseBNN]],
    threshold: Optional[float] = None,
    feature_names: Optional[Sequence[str]] = None,
    interval: float = 0.9,
) -> pd.DataFrame:
    """One row per input feature (input channel of a conv-first network) and hidden node
    (channel of a conv layer): its PIP, an interval, and whether it is kept.

    Two columns answer "is this unit in?", by two different rules:

    * ``kept`` is exactly what :func:`~pyro_sparse_bnn.analysis.compress.compress` keeps at the same
      threshold (``report.kept_features`` / ``report.kept_nodes``): the unit reaches the
      output through kept weights -- each with its own PIP above the threshold -- and is
      not a constant folded into the next layer's bias;
    * ``above_threshold`` is ``pip > threshold``, the unit's marginal inclusion probability
      against the keep-rule threshold in the ``threshold`` column (the rule of the layer
      whose switches decide the unit: a Bayesian Compression linear layer's input groups,
      else the unit's own indicator or scale, else its outgoing edges).

    They differ where the unit's PIP and its kept weights tell different stories: a node
    with many weak outgoing edges has a high PIP (one of them is probably on) yet no single
    edge above the threshold; a node whose incoming weights are all pruned outputs a
    constant that ``compress`` folds away, whatever its PIP; a node whose kept edges lead
    only to removed units is removed too.

    Given several independent fits of the same model (e.g. restarts with different seeds),
    ``pip`` is the mean of their PIPs, ``pip_lower`` / ``pip_upper`` the equal-tailed
    ``interval`` quantiles of the PIPs across fits (how stable the PIP is under restarts),
    ``kept_fraction`` the fraction of fits whose median-probability model keeps the unit and
    ``kept`` whether that fraction exceeds one half. With one fit the interval is the PIP
    itself: under the mean-field guide a PIP is a number read off the guide, not a random
    quantity (:func:`~pyro_sparse_bnn.analysis.diagnostics.to_inference_data` gives draws of the
    indicators whose R-hat compares restarts).

    :param bnn: a fitted :class:`SparseBNN` or a sequence of fits of the same model.
    :param threshold: keep-rule threshold (``None``: the priors' defaults).
    :param feature_names: names of the ``bnn.num_inputs`` input features or channels
        (default ``x0, x1, ...``).
    :param float interval: probability mass of the interval across fits (0.9).
    :returns: DataFrame with columns ``layer`` (``"input"`` or the layer name), ``unit``
        (index), ``name``, ``pip``, ``pip_lower``, ``pip_upper``, ``threshold``,
        ``above_threshold``, ``kept`` and ``kept_fraction``.
    :raises InputError: for fits of different models or a wrong number of feature names.
    :raises NotFittedError: if a network has not been fitted (its PIPs would be the initial
        inclusion probabilities, about 0.99 everywhere).
    """
    fits = check_same_network(bnn, "bnn")
    for fit in fits:
        check_bnn(fit, "inclusion_summary", fitted=True)
    threshold = check_threshold(threshold, fits[0].priors)
    if not 0 < interval <= 1:
        raise InputError(f"interval must lie in (0, 1], got {interval!r}")
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(fits[0].num_inputs)]
    elif len(feature_names) != fits[0].num_inputs:
        raise InputError(
            f"feature_names has {len(feature_names)} names but the network has "
            f"{fits[0].num_inputs} input features"
        )
    tables = [_single_fit_summary(fit, threshold, feature_names) for fit in fits]
    summary = tables[0][["layer", "unit", "name"]].copy()
    pips = np.stack([table.pip.to_numpy() for table in tables])
    kept = np.stack([table.kept.to_numpy() for table in tables]).astype(float)
    tail = (1 - interval) / 2
    summary["pip"] = pips.mean(axis=0)
    summary["pip_lower"] = np.quantile(pips, tail, axis=0)
    summary["pip_upper"] = np.quantile(pips, 1 - tail, axis=0)
    summary["threshold"] = tables[0].threshold
    summary["above_threshold"] = summary.pip > summary.threshold
    summary["kept_fraction"] = kept.mean(axis=0)
    summary["kept"] = summary.kept_fraction > 0.5
    return summary[["layer", "unit", "name", "pip", "pip_lower", "pip_upper", "threshold", "above_threshold",
                    "kept", "kept_fraction"]]


@torch.no_grad()
def group_scale_summary(bnn: SparseBNN) -> pd.DataFrame:
    """Posterior of the per-node group scales of the layers whose prior has them (SS-GL's
    ``tau_j``, SS-GHS's regularised ``s~_j``), with each node's indicator PIP.

    :returns: DataFrame with columns ``layer``, ``unit``, ``pip`` (the node indicator's
        ``gamma``), ``scale_mean``, ``scale_std``, ``scale_q05`` and ``scale_q95``; empty when
        no layer has group scales.
    """
    import pandas as pd

    check_bnn(bnn, "group_scale_summary")
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
