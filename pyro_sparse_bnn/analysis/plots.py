"""Figures of a fitted network: PIP forest plot, inclusion heatmaps, ELBO history, group
scales, the reliability diagram and the size / validation-metric frontier.

Every function works headless (it uses matplotlib's object API and never calls
``plt.show``; select the Agg backend with ``MPLBACKEND=Agg`` on a server) and returns the
``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

from ..core.errors import InputError
from ..core.fit import FitHistory
from ..core.network import SparseBNN, check_bnn
from .calibration import CalibrationBins, expected_calibration_error
from .diagnostics import layer_variables
from .frontier import Frontier
from .inclusion import edge_inclusion_probs

if TYPE_CHECKING:  # imported where used: they take a second to load
    import arviz as az
    from matplotlib.figure import Figure

__all__ = [
    "plot_inclusion_forest",
    "plot_inclusion_heatmap",
    "plot_elbo",
    "plot_group_scales",
    "plot_reliability_diagram",
    "plot_frontier",
]


def _check_idata(idata, variable: Optional[str] = None, kind: Optional[str] = None) -> None:
    """Raise :class:`InputError` unless ``idata`` is an InferenceData with a posterior that has
    ``variable`` or at least one per-layer variable of ``kind``."""
    import arviz as az

    if not isinstance(idata, az.InferenceData) or "posterior" not in idata.groups():
        raise InputError("expected the arviz.InferenceData of to_inference_data(...)")
    if variable is not None and variable not in idata.posterior:
        raise InputError(f"the posterior has no {variable!r} variable")
    if kind is not None and not layer_variables(idata, kind):
        raise InputError(f"the posterior has no {kind!r} variables ({kind}_<layer>): its prior has none")


def _integer_ticks(*axes) -> None:
    """Ticks only at whole numbers on unit / group / epoch axes (no 0.5 between two units)."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def plot_inclusion_forest(idata: az.InferenceData, layers: Optional[Sequence[str]] = None,
                          hdi_prob: float = 0.9, figsize=None) -> Figure:
    """ArviZ forest plot of the feature PIPs and, per hidden layer, the node PIPs.

    Each chain (fit) of :func:`~pyro_sparse_bnn.analysis.diagnostics.to_inference_data` gives one
    PIP estimate per unit, the mean of its 0/1 inclusion draws. The forest plot treats the
    fits as draws of one quantity: the marker is the median PIP across fits and the line
    its ``hdi_prob`` interval across fits (restarts that disagree show as long lines; with
    one fit it is a point). R-hat and ESS of the inclusion draws are in
    :func:`~pyro_sparse_bnn.analysis.diagnostics.summarize`.

    :param layers: hidden layers to show, by path (``"net.0"``; default: all layers with a
        ``node_inclusion_<layer>`` variable).
    :returns: the figure: one axes for the features and one per layer, each a row per unit
        (units counted from 0).
    """
    import arviz as az
    import matplotlib.pyplot as plt

    _check_idata(idata, "feature_inclusion")
    post = idata.posterior
    variables = layer_variables(idata, "node_inclusion")
    layers = list(variables) if layers is None else list(layers)
    unknown = [name for name in layers if name not in variables]
    if unknown:
        raise InputError(f"no node inclusion draws of layers {unknown}; the posterior has {list(variables)}")
    panels = [("input features", "feature", post.feature_inclusion)] + [
        (f"nodes of {name}", "node", post[variables[name]]) for name in layers]
    widths = [draws.shape[-1] for _, _, draws in panels]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, layout="constrained",
                             figsize=figsize or (6, 1.4 + 0.3 * sum(widths) + 0.9 * len(panels)),
                             gridspec_kw={"height_ratios": [max(w, 1) + 3 for w in widths]})
    for ax, (title, unit, draws) in zip(axes[:, 0], panels, strict=True):
        # fits as the draws of one chain: (chain=1, draw=fit, unit)
        pips = draws.mean("draw").rename(chain="draw").expand_dims(chain=1).rename("PIP")
        az.plot_forest(pips.to_dataset(), combined=True, hdi_prob=hdi_prob, quartiles=False, ax=ax)
        ax.set_title(title)
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("PIP" if pips.sizes["draw"] == 1 else
                      f"PIP (median and {100 * hdi_prob:g}% interval across fits)")
        ax.set_ylabel(unit)
    fig.suptitle("Posterior inclusion probabilities")
    return fig


def _merged_taps(p: torch.Tensor) -> torch.Tensor:
    """Edge PIPs of a conv layer ``(out, in, kh, kw)`` merged over the kernel taps: the
    probability that at least one tap from input channel ``i`` to output channel ``j`` is on."""
    return -torch.expm1(torch.log1p(-p.clamp(max=1.0)).sum(dim=(2, 3)))


def plot_inclusion_heatmap(bnn: SparseBNN, cmap: str = "viridis") -> Figure:
    """One heatmap per parametric layer of its edge PIPs ``(out_units, in_units)`` (a conv
    layer's kernel taps are merged: the probability that at least one tap from input channel
    ``i`` to output channel ``j`` is active), with a shared colour bar on [0, 1]. Units are
    counted from 0 and the axes have ticks only at whole units.

    :returns: the figure: one axes per layer plus the colour bar's.
    """
    import matplotlib.pyplot as plt

    check_bnn(bnn, "plot_inclusion_heatmap")
    pips = edge_inclusion_probs(bnn)
    fig, axes = plt.subplots(1, len(pips), figsize=(3.4 * len(pips) + 1.2, 3.8), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (name, p) in zip(axes[0], pips.items(), strict=True):
        p = p.detach().double().cpu()
        if p.dim() == 4:
            p = _merged_taps(p)
        image = ax.imshow(p.numpy(), vmin=0, vmax=1, cmap=cmap, aspect="auto", interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("input channel" if p.shape != pips[name].shape else "input unit")
        ax.set_ylabel("output channel" if p.shape != pips[name].shape else "output unit")
        _integer_ticks(ax.xaxis, ax.yaxis)
    fig.colorbar(image, ax=list(axes[0]), label="edge PIP")
    fig.suptitle("Edge inclusion probabilities")
    return fig


def plot_elbo(history: FitHistory, log_scale: Optional[bool] = None) -> Figure:
    """ELBO per epoch from a :class:`~pyro_sparse_bnn.core.fit.FitHistory`, with the KL warm-up
    epochs shaded (the objective is annealed there). The x axis counts completed epochs
    (1 = after the first epoch), as ``fit``'s progress bar does.

    :param log_scale: plot ``-ELBO`` on a log axis (default: when it is positive and spans
        more than two decades).
    :returns: the figure (one axes).
    """
    import matplotlib.pyplot as plt

    if not isinstance(history, FitHistory) or len(history) == 0:
        raise InputError("plot_elbo needs the non-empty FitHistory returned by fit")
    loss = np.asarray(history.loss)
    epochs = np.arange(1, len(loss) + 1)
    if log_scale is None:
        log_scale = bool(np.all(loss > 0) and loss.max() / loss.min() > 100)
    fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
    if log_scale:
        ax.plot(epochs, loss)
        ax.set_yscale("log")
        ax.set_ylabel("-ELBO (loss)")
        ax.set_title("Training loss (-ELBO) per epoch")
    else:
        ax.plot(epochs, -loss)
        ax.set_ylabel("ELBO")
        ax.set_title("ELBO per epoch")
    warmup = np.flatnonzero(np.asarray(history.kl_weight) < 1)
    if warmup.size:
        ax.axvspan(0.5, warmup.max() + 1.5, color="grey", alpha=0.2, label="KL warm-up")
        ax.legend()
    ax.set_xlabel("epoch")
    _integer_ticks(ax.xaxis)
    return fig


def plot_group_scales(idata: az.InferenceData, log10: bool = True) -> Figure:
    """Distribution of the group scales per layer: one box per group over all draws and
    chains, on a log10 axis by default (a pruned group's scale sits decades below a kept one).
    Groups are counted from 0, as in the posterior's ``group_<layer>`` coords.

    :returns: the figure: one axes per ``group_scale_<layer>`` variable of the posterior.
    """
    import matplotlib.pyplot as plt

    _check_idata(idata, kind="group_scale")
    variables = layer_variables(idata, "group_scale")
    fig, axes = plt.subplots(len(variables), 1, squeeze=False, figsize=(7, 2.8 * len(variables)),
                             layout="constrained")
    for ax, (name, variable) in zip(axes[:, 0], variables.items(), strict=True):
        scales = idata.posterior[variable]
        values = np.abs(scales.values.reshape(-1, scales.shape[-1]))
        if log10:
            values = np.log10(np.maximum(values, np.finfo(float).tiny))
        groups = scales[scales.dims[-1]].values
        ax.boxplot(values, positions=groups, widths=0.6, showfliers=False, manage_ticks=False)
        ax.set_xlim(groups.min() - 0.5, groups.max() + 0.5)
        _integer_ticks(ax.xaxis)
        ax.set_title(f"group scales of {name}")
        ax.set_xlabel("group")
        ax.set_ylabel("log10 |scale|" if log10 else "|scale|")
    return fig


def plot_reliability_diagram(probs: Union[CalibrationBins, torch.Tensor, np.ndarray], y=None,
                             num_bins: int = 10) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of
    perfect calibration, the bins' example counts and the ECE in the title.

    :param probs: predictive probabilities ``(n, classes)`` (or a ``Prediction``) with
        labels ``y``, or the :class:`~pyro_sparse_bnn.analysis.calibration.CalibrationBins` of
        :func:`~pyro_sparse_bnn.analysis.calibration.expected_calibration_error`.
    :returns: the figure: the diagram and, below it, a histogram of the counts (two axes).
    """
    import matplotlib.pyplot as plt

    bins = probs if isinstance(probs, CalibrationBins) else expected_calibration_error(probs, y, num_bins)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = np.diff(bins.edges)
    fig, (ax, count_ax) = plt.subplots(2, 1, sharex=True, figsize=(4.5, 5.5),
                                       gridspec_kw={"height_ratios": [3, 1]})
    filled = bins.counts > 0
    ax.bar(centers[filled], bins.accuracy[filled], width=width[filled], edgecolor="black", alpha=0.7,
           label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.plot(bins.confidence[filled], bins.accuracy[filled], "o", color="C1", label="mean confidence")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"ECE = {bins.ece:.3f}")
    ax.legend(loc="upper left")
    count_ax.bar(centers, bins.counts, width=width, edgecolor="black")
    count_ax.set_xlabel("confidence")
    count_ax.set_ylabel("examples")
    count_ax.set_xlim(0, 1)
    fig.tight_layout()
    return fig


def _count_label(value: float, _position=None) -> str:
    """A parameter count as a tick label: ``1,000``."""
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _readable_log_ticks(axis) -> None:
    """Label a log-scaled count axis with as many ticks as fit without their labels touching:
    every ``1..9 x 10^k`` on a short range, ``1, 2, 5 x 10^k`` on a longer one, then powers
    of ten (every second, fifth, ... one on a very long range); round linear steps when the
    range holds fewer than two of those. Minor ticks stay unlabelled. The choice is redone
    whenever the view or the figure size changes."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator, NullFormatter

    class ReadableLogLocator(Locator):
        def __call__(self):
            return self.tick_values(*self.axis.get_view_interval())

        def fits(self, ticks, low, high) -> bool:
            points = FontProperties(size=rcParams["xtick.labelsize"]).get_size_in_points()
            char = 0.6 * points * self.axis.axes.figure.dpi / 72  # width of a digit in pixels
            span = max(np.log10(high / low), 1e-12)
            width = self.axis.axes.bbox.width
            return all(
                np.log10(b / a) / span * width >= char * ((len(_count_label(a)) + len(_count_label(b))) / 2 + 1.5)
                for a, b in zip(ticks, ticks[1:], strict=False))

        def tick_values(self, vmin, vmax):
            low, high = sorted((max(vmin, 1e-300), max(vmax, 1e-300)))
            first, last = int(np.floor(np.log10(low))), int(np.ceil(np.log10(high)))
            candidates = [(tuple(range(1, 10)), 1), ((1, 2, 5), 1)] + [((1,), n) for n in (1, 2, 3, 5, 10, 20)]
            for subs, stride in candidates:
                ticks = [m * 10.0 ** k for k in range(first, last + 1) if k % stride == 0 for m in subs]
                ticks = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
                if len(ticks) < 2 and subs != (1,):
                    break  # too short a range for round multiples of powers of ten
                if self.fits(ticks, low, high):
                    return ticks
            else:
                return ticks
            for bins in (4, 3, 2):
                ticks = [t for t in MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
                         if low <= t <= high]
                if self.fits(ticks, low, high):
                    break
            return ticks

    axis.set_major_locator(ReadableLogLocator())
    axis.set_major_formatter(FuncFormatter(_count_label))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def plot_frontier(front: Frontier, tolerance: Optional[float] = 0.01, figsize=None) -> Figure:
    """Validation metric of the compressed network against the parameters it keeps (non-zero
    parameters, log axis), one point per row of a :func:`~pyro_sparse_bnn.analysis.frontier.frontier`
    table: the posterior predictive's metric as a dashed line, the band of networks within
    ``tolerance`` of it shaded, the keep rule's rows as squares, networks that do not depend
    on their input as crosses, and the network :meth:`Frontier.select
    <pyro_sparse_bnn.analysis.frontier.Frontier.select>` picks as a star (or a note that none is
    within ``tolerance``).

    :param front: the :class:`~pyro_sparse_bnn.analysis.frontier.Frontier` of ``frontier(bnn, x_val, y_val)``.
    :param tolerance: as in ``front.select`` (``None``: no band and no chosen point).
    :returns: the figure (one axes).
    """
    import matplotlib.pyplot as plt

    if not isinstance(front, Frontier):
        raise InputError(f"plot_frontier needs the Frontier returned by frontier, got {type(front).__name__}")
    table, metric = front.table, front.metric
    label = "validation accuracy" if metric == "accuracy" else "validation RMSE"
    ordered = table.sort_values(["nonzero_params", "threshold"])
    fig, ax = plt.subplots(figsize=figsize or (6.5, 4.2))
    ax.plot(ordered.nonzero_params, ordered[metric], "o-", color="C0", label="compressed network")
    ax.axhline(front.posterior_metric, color="black", linestyle="--",
               label=f"posterior predictive ({front.posterior_metric:.3g})")
    rule = table[table.keep_rule]
    if not rule.empty:
        ax.plot(rule.nonzero_params, rule[metric], "s", markersize=10, markerfacecolor="none",
                color="C1", label="keep rule")
    degenerate = table[table.degenerate]
    if not degenerate.empty:
        ax.plot(degenerate.nonzero_params, degenerate[metric], "x", markersize=9, color="C3",
                label="output ignores the input")
    title = f"{label.capitalize()} against size"
    if tolerance is not None:
        limit = front.limit(tolerance)
        band = f"within {tolerance:g}" if metric == "accuracy" else f"within {100 * tolerance:g} %"
        ax.axhspan(min(limit, front.posterior_metric), max(limit, front.posterior_metric), color="C2", alpha=0.15,
                   label=f"{band} of the posterior")
        index = front.selected_index(tolerance)
        if index is not None:
            row = table.loc[index]
            ax.plot([row.nonzero_params], [row[metric]], "*", markersize=16, color="C3",
                    label=f"chosen: {row.architecture}, {int(row.nonzero_params):,} parameters")
        else:
            ax.text(0.02, 0.02, "no network within the tolerance", transform=ax.transAxes, color="C3")
        title += f" (tolerance {tolerance:g})"
    ax.set_xscale("log")
    _readable_log_ticks(ax.xaxis)
    ax.set_xlabel("parameters kept (non-zero, log scale)")
    ax.set_ylabel(label)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
