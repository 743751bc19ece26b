"""Every plot runs headless and returns a figure with the expected axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn import InputError, SparseBNN, SpikeSlab  # noqa: E402
from pyro_sparse_bnn.analysis import to_inference_data  # noqa: E402
from pyro_sparse_bnn.analysis.plots import (  # noqa: E402
    plot_elbo,
    plot_frontier,
    plot_group_scales,
    plot_inclusion_forest,
    plot_inclusion_heatmap,
    plot_reliability_diagram,
)
from tests.conftest import mlp, randomize_guide  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def fit(seed, prior=None):
    torch.manual_seed(seed)
    bnn = SparseBNN(mlp([4, 5, 3, 2]), prior or SpikeSlab(prior_inclusion=0.1), num_data=20)
    return randomize_guide(bnn, seed=seed, logit_scale=2.0)


@pytest.mark.parametrize("chains", [1, 2])
def test_forest_plot_has_a_panel_per_layer_with_markers_at_the_pips(chains):
    fits = [fit(s) for s in range(chains)]
    idata = to_inference_data(fits, num_samples=10, progress=False)
    figure = plot_inclusion_forest(idata)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 3  # features, net.0, net.2
    assert figure.axes[0].get_title() == "input features"
    # the markers sit at the median over fits of each fit's draw-mean PIP
    expected = idata.posterior.feature_inclusion.mean("draw").median("chain").values
    markers = [line for line in figure.axes[0].lines if line.get_marker() == "o"]
    located = sorted(float(x) for line in markers for x in line.get_xdata())
    assert located == pytest.approx(sorted(expected.tolist()))


def test_heatmap_has_one_axes_per_layer_and_a_colour_bar():
    bnn = fit(0)
    figure = plot_inclusion_heatmap(bnn)
    assert len(figure.axes) == 3 + 1
    image = figure.axes[1].images[0].get_array()
    assert torch.allclose(torch.as_tensor(image.data, dtype=torch.float32), psb.analysis.edge_inclusion_probs(bnn)["net.2"])


def test_heatmap_merges_conv_kernel_taps():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(12, 2))
    bnn = randomize_guide(SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=10, input_shape=(2, 4, 4)))
    figure = plot_inclusion_heatmap(bnn)
    assert len(figure.axes) == 3 and figure.axes[0].images[0].get_array().shape == (3, 2)


def test_elbo_plot_shades_the_kl_warmup():
    history = psb.core.FitHistory(loss=[100.0, 50.0, 20.0, 10.0], kl_weight=[0.3, 0.6, 1.0, 1.0])
    figure = plot_elbo(history, log_scale=False)
    (ax,) = figure.axes
    assert list(ax.lines[0].get_ydata()) == [-100.0, -50.0, -20.0, -10.0]
    assert len(ax.patches) == 1
    with pytest.raises(InputError):
        plot_elbo(psb.core.FitHistory())


def test_group_scale_plot_has_one_axes_per_layer_with_scales():
    idata = to_inference_data(fit(0, psb.SpikeSlabGroupHorseshoe()), num_samples=10, progress=False)
    figure = plot_group_scales(idata)
    assert len(figure.axes) == 3
    with pytest.raises(InputError, match="no 'group_scale'"):
        plot_group_scales(to_inference_data(fit(0), num_samples=5, progress=False))


def test_reliability_diagram_has_the_diagram_and_the_counts():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = torch.tensor([0, 1, 1, 1])
    figure = plot_reliability_diagram(probs, y, num_bins=5)
    assert len(figure.axes) == 2 and figure.axes[0].get_title().startswith("ECE = ")


def test_frontier_plot_shows_the_rows_the_posterior_the_band_and_the_choice():
    bnn = fit(0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    front = psb.frontier(bnn, x, y, num_samples=3)
    figure = plot_frontier(front, tolerance=1.0)  # accepts every row: the choice is the smallest
    (ax,) = figure.axes
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "validation accuracy"
    assert "parameters kept" in ax.get_xlabel() and "tolerance 1" in ax.get_title()
    ordered = front.table.sort_values(["nonzero_params", "threshold"])
    points = ax.lines[0]
    assert list(points.get_xdata()) == ordered.nonzero_params.tolist()
    assert list(points.get_ydata()) == pytest.approx(ordered.accuracy.tolist())
    (posterior,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert list(posterior.get_ydata()) == [front.posterior_metric] * 2
    (star,) = [line for line in ax.lines if line.get_marker() == "*"]
    assert list(star.get_xdata()) == [front.table.nonzero_params.min()]
    assert len(ax.patches) == 1  # the tolerance band
    assert ax.xaxis.get_major_formatter()(1000, 0) == "1,000"
    assert not ax.texts
    unreachable = psb.analysis.Frontier(front.table, "accuracy", 1.5, front.params_before, 3, 0)  # no row within
    assert [t.get_text() for t in plot_frontier(unreachable).axes[0].texts] == ["no network within the tolerance"]
    bare = plot_frontier(front, tolerance=None).axes[0]
    assert not [line for line in bare.lines if line.get_marker() == "*"] and not bare.patches
    with pytest.raises(InputError, match="Frontier"):
        plot_frontier(front.table)


@pytest.mark.parametrize("low, high", [(150, 420), (300, 5_000), (2_000, 266_610), (12, 2_600_000), (3, 4e9), (120, 180)])
@pytest.mark.parametrize("width", [6.5, 3.5])
def test_frontier_size_labels_do_not_overlap(low, high, width):
    import numpy as np
    import pandas as pd

    params = np.unique(np.geomspace(low, high, 12).round())
    table = pd.DataFrame({"threshold": np.linspace(0.9, 0.1, len(params)), "nonzero_params": params,
                          "accuracy": np.linspace(0.6, 0.9, len(params)), "keep_rule": False, "degenerate": False,
                          "architecture": "4-3-2", "params": params})
    figure = plot_frontier(psb.analysis.Frontier(table, "accuracy", 0.9, int(high), 3, 0), figsize=(width, 4))
    figure.canvas.draw()
    ax = figure.axes[0]
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()
              and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert len(labels) >= 2, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda box: box.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), [t.get_text() for t in labels]


# -- layout: every plot, networks of very different widths --------------------------------
def _drawn_texts(figure):
    """Every visible, non-empty tick label, axis label and title of the figure (suptitle
    included), after drawing it; tick labels only for ticks inside the axis' view."""
    figure.canvas.draw()
    texts = []
    for ax in figure.axes:
        for axis, coordinate in ((ax.xaxis, 0), (ax.yaxis, 1)):
            low, high = sorted(axis.get_view_interval())
            texts += [t for t in axis.get_ticklabels()
                      if low - 1e-9 <= t.get_position()[coordinate] <= high + 1e-9]
            texts.append(axis.label)
        texts += [ax.title, ax._left_title, ax._right_title]
    if figure._suptitle is not None:
        texts.append(figure._suptitle)
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def assert_readable(figure, integer_axes=()):
    """No two texts overlap, every text lies inside the figure, the figure has a title (a
    suptitle or an axes title) and every axes has axis labels; the axes in ``integer_axes``
    have ticks at whole numbers only."""
    texts = _drawn_texts(figure)
    renderer = figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    inside = figure.bbox.padded(1.0)
    for text, box in boxes:
        assert inside.containsx(box.x0) and inside.containsx(box.x1), f"{text!r} sticks out: {box} vs {figure.bbox}"
        assert inside.containsy(box.y0) and inside.containsy(box.y1), f"{text!r} sticks out: {box} vs {figure.bbox}"
    overlapping = [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]
    assert not overlapping, overlapping[:5]
    assert (figure._suptitle is not None and figure._suptitle.get_text()) or any(ax.get_title() for ax in figure.axes)
    for axis in integer_axes:
        low, high = sorted(axis.get_view_interval())
        ticks = [v for v in axis.get_majorticklocs() if low <= v <= high]
        assert ticks and all(float(v).is_integer() for v in ticks), ticks


def ragged_mlp(prior=None):
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([30, 200, 3, 2]), prior or psb.SpikeSlabGroupHorseshoe(), num_data=20)
    return randomize_guide(bnn, seed=0, logit_scale=2.0)


def small_conv(prior=None):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 2))
    bnn = SparseBNN(net, prior or psb.SpikeSlabGroupHorseshoe(), num_data=10, input_shape=(3, 4, 4))
    return randomize_guide(bnn, seed=0, logit_scale=2.0)


@pytest.fixture(scope="module", params=["mlp 30-200-3-2", "conv"])
def ragged(request):
    bnn = ragged_mlp() if request.param.startswith("mlp") else small_conv()
    return bnn, to_inference_data([bnn, bnn], num_samples=8, seed=0, progress=False)


def test_heatmap_is_readable_with_integer_ticks(ragged):
    bnn, _ = ragged
    figure = plot_inclusion_heatmap(bnn)
    panels = figure.axes[:-1]
    assert_readable(figure, [axis for ax in panels for axis in (ax.xaxis, ax.yaxis)])
    assert figure._suptitle.get_text() == "Edge inclusion probabilities"
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)


def test_forest_plot_is_readable(ragged):
    _, idata = ragged
    figure = plot_inclusion_forest(idata)
    assert_readable(figure)
    assert [ax.get_title() for ax in figure.axes][1:] == [f"nodes of {name}" for name in
                                                          psb.analysis.diagnostics.layer_variables(idata, "node_inclusion")]


def test_group_scale_plot_is_readable_and_counts_groups_from_zero(ragged):
    _, idata = ragged
    figure = plot_group_scales(idata)
    assert_readable(figure, [ax.xaxis for ax in figure.axes])
    for ax, variable in zip(figure.axes, psb.analysis.diagnostics.layer_variables(idata, "group_scale").values(),
                            strict=True):
        size = idata.posterior[variable].shape[-1]
        medians = [line for line in ax.lines if len(line.get_xdata()) == 2 and line.get_color() != "black"
                   and line.get_ydata()[0] == line.get_ydata()[1]]
        centres = sorted({float(np.mean(line.get_xdata())) for line in medians})
        assert centres[0] == 0 and centres[-1] == size - 1, (centres[:3], size)


def test_elbo_reliability_and_frontier_plots_are_readable():
    history = psb.core.FitHistory(loss=[float(v) for v in np.geomspace(5000, 20, 7)], kl_weight=[0.5] * 2 + [1.0] * 5)
    for log_scale in (True, False):
        figure = plot_elbo(history, log_scale=log_scale)
        assert_readable(figure, [figure.axes[0].xaxis])
        assert figure.axes[0].get_title() and figure.axes[0].get_xlabel() == "epoch"
    probs = torch.softmax(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), -1)
    assert_readable(plot_reliability_diagram(probs, torch.arange(50) % 3))
    bnn = fit(0)
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    assert_readable(plot_frontier(psb.frontier(bnn, x, (x[:, 0] > 0).long(), num_samples=3)))


def test_the_layout_check_catches_overlaps():
    """The check fails on the old heatmap layout (no layout engine, three panels close
    together: the middle panel's y label runs into the first panel)."""
    figure, axes = plt.subplots(1, 3, figsize=(4, 2))
    for ax in axes:
        ax.imshow(np.zeros((2, 200)), aspect="auto")
        ax.set_ylabel("output unit")
        ax.set_xlabel("input unit")
    with pytest.raises(AssertionError):
        assert_readable(figure)
    figure, ax = plt.subplots()
    ax.imshow(np.zeros((2, 3)), aspect="auto")
    ax.set_title("t")
    with pytest.raises(AssertionError):  # fractional ticks between the two output units
        assert_readable(figure, [ax.yaxis])
