"""frontier: the compressed network at many thresholds, evaluated on validation data, and the
threshold it selects for compress."""

import importlib
import inspect
import math
import warnings

import pandas as pd
import pytest
import torch

import pyro_sparse_bnn as psb
from pyro_sparse_bnn import (
    DegenerateNetworkWarning,
    HyperparameterError,
    InputError,
    NotFittedError,
    SparseBNN,
    compress,
    frontier,
)
from pyro_sparse_bnn.analysis import Frontier, ThresholdChoice
from pyro_sparse_bnn.analysis.compress import describe_keep_rule
from tests.conftest import conv_net, mlp, randomize_guide

PRIORS = {
    "SpikeSlab": lambda: psb.SpikeSlab(prior_inclusion=0.1),
    "SpikeSlabNode": psb.SpikeSlabNode,
    "SpikeSlabGroupLasso": psb.SpikeSlabGroupLasso,
    "SpikeSlabGroupHorseshoe": psb.SpikeSlabGroupHorseshoe,
    "GroupNormalJeffreys": psb.GroupNormalJeffreys,
    "GroupHorseshoe": psb.GroupHorseshoe,
    "SelfCompressingGaussian": psb.SelfCompressingGaussian,
}


def classification_data(n=80, seed=3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def classifier(prior, seed=1, widths=(5, 8, 6, 3)):
    torch.manual_seed(0)
    return randomize_guide(SparseBNN(mlp(list(widths)), prior, num_data=60), seed=seed)


def compressed(bnn, threshold):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateNetworkWarning)
        return compress(bnn, threshold=None if math.isnan(threshold) else threshold)


def hand_accuracy(module, x, y):
    with torch.no_grad():
        outputs = module(x)
    return sum(int(outputs[i].argmax()) == int(y[i]) for i in range(len(y))) / len(y)


def hand_rmse(module, x, y):
    with torch.no_grad():
        outputs = module(x).reshape(y.shape)
    return math.sqrt(float(((outputs - y) ** 2).sum()) / y.numel())


def single_threshold_rows(table):
    return table[table.threshold.notna()]


def check_rows(bnn, front, x, y, evaluate):
    """Rows ordered by threshold, sizes non-increasing, every metric and size as compress
    and a hand evaluation of its module give them."""
    table = front.table
    rows = single_threshold_rows(table)
    assert rows.threshold.is_monotonic_increasing and rows.threshold.is_unique
    assert ((rows.threshold > 0) & (rows.threshold < 1)).all()
    assert rows.params.is_monotonic_decreasing and rows.nonzero_params.is_monotonic_decreasing
    assert table.threshold.notna().sum() >= len(table) - 1 and table.threshold.iloc[:-1].notna().all()
    for row in table.itertuples():
        module, report = compressed(bnn, row.threshold)
        assert getattr(row, front.metric) == pytest.approx(evaluate(module, x, y), abs=1e-6)
        assert row.architecture == "-".join(str(w) for w in report.architecture_after)
        assert (row.params, row.nonzero_params) == (report.params_after, report.nonzero_params_after)
        assert row.fraction_kept == pytest.approx(report.nonzero_params_after / report.params_before)
        assert row.degenerate == (report.architecture_after[0] == 0)


@pytest.mark.parametrize("name", PRIORS)
def test_every_prior_gives_monotone_rows_whose_metrics_a_hand_evaluation_reproduces(name):
    bnn = classifier(PRIORS[name]())
    x, y = classification_data()
    front = frontier(bnn, x, y, num_samples=5, seed=4)
    check_rows(bnn, front, x, y, hand_accuracy)
    table = front.table
    # the posterior's metric: the posterior predictive mean of the same seeded draws
    probs = bnn.predict(x, num_samples=5, seed=4).probs
    assert front.posterior_metric == pytest.approx(hand_accuracy(lambda v: probs, x, y))
    assert table.attrs["posterior_metric"] == front.posterior_metric and table.attrs["metric"] == "accuracy"
    # the default grid: no two rows with the same network, from everything kept (every PIP
    # of these random guides lies in (0, 1)) to a network that reads no input
    assert not table.duplicated(["architecture", "nonzero_params"]).any()
    assert table.nonzero_params.max() == front.params_before == table.attrs["params_before"]
    assert table.degenerate.iloc[-1] and table.nonzero_params.min() == 3
    # the keep rule is a row: each prior here has one threshold for every layer
    rule = table[table.keep_rule]
    assert len(rule) == 1 and rule.threshold.iloc[0] == pytest.approx(bnn.layers[0].default_threshold)


def test_bayesian_compression_rows_carry_log_alpha_and_the_per_layer_keep_rule():
    bnn = classifier(psb.GroupNormalJeffreys(log_alpha_threshold=[-3.0, -2.0, -1.0]))
    x, y = classification_data()
    front = frontier(bnn, x, y, num_samples=5)
    check_rows(bnn, front, x, y, hand_accuracy)
    table = front.table
    rows = single_threshold_rows(table)
    # log alpha < t  <=>  1 / (1 + alpha) > p  with  t = log((1 - p) / p)
    for p, t in zip(rows.threshold, rows.log_alpha_threshold, strict=True):
        assert t == pytest.approx(math.log((1 - p) / p))
    last = table.iloc[-1]
    assert math.isnan(last.threshold) and last.keep_rule and table.keep_rule.sum() == 1
    assert "net.0 PIP > 0.952574 (log alpha < -3)" in last.rule and "(log alpha < -1)" in last.rule
    # a choice of that row is each layer's own rule: compress applies it
    module, report = compressed(bnn, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateNetworkWarning)
        chosen, chosen_report = compress(bnn, threshold=ThresholdChoice(None, "by hand", last.architecture))
    assert chosen_report.threshold is None and "each layer's keep rule" in chosen_report.threshold_reason
    assert chosen_report.architecture_after == report.architecture_after
    # and Frontier.select picks it when it is the smallest within the tolerance
    hand = pd.concat([hand_table("accuracy", [0.9, 0.5], [100, 20]),
                      hand_table("accuracy", [0.9], [50]).assign(threshold=math.nan)], ignore_index=True)
    assert Frontier(hand, "accuracy", 0.9, 100, 10, 0).select(0.01).threshold is None


def test_no_log_alpha_column_without_a_bayesian_compression_layer():
    front = frontier(classifier(psb.SpikeSlabNode()), *classification_data(), num_samples=2)
    assert "log_alpha_threshold" not in front.table.columns


def test_select_is_the_smallest_row_within_the_tolerance_and_compress_uses_it():
    bnn = classifier(psb.SpikeSlab(prior_inclusion=0.1))
    x, y = classification_data()
    front = frontier(bnn, x, y, num_samples=5)
    accuracies = {row.Index: hand_accuracy(compressed(bnn, row.threshold)[0], x, y) for row in front.table.itertuples()}
    for tolerance in [0.0, 0.02, 0.1, 0.3, 1.0]:
        within = [i for i, a in accuracies.items() if a >= front.posterior_metric - tolerance - 1e-12]
        if not within:
            with pytest.raises(HyperparameterError, match="no network of the frontier"):
                front.select(tolerance)
            continue
        choice = front.select(tolerance)
        chosen = front.table.loc[front.selected_index(tolerance)]
        assert choice.threshold == chosen.threshold and choice.architecture == chosen.architecture
        # it meets the tolerance, and no row with fewer parameters does
        assert accuracies[chosen.name] >= front.posterior_metric - tolerance - 1e-12
        assert chosen.nonzero_params == min(front.table.nonzero_params[within])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module, report = compress(bnn, threshold=choice)
        assert [w.category for w in caught] == [DegenerateNetworkWarning] * bool(chosen.degenerate)
        assert report.threshold == choice.threshold
        assert f"smallest network within {tolerance:g} of the posterior's validation accuracy" in report.threshold_reason
        assert hand_accuracy(module, x, y) >= front.posterior_metric - tolerance - 1e-12


def hand_table(metric, values, nonzero, params=None):
    n = len(values)
    return pd.DataFrame({
        "threshold": [0.1 * (i + 1) for i in range(n)], "rule": [f"PIP > {0.1 * (i + 1):g}" for i in range(n)],
        "keep_rule": [False] * n, metric: values, "architecture": [f"a{i}" for i in range(n)],
        "params": params or nonzero, "nonzero_params": nonzero, "degenerate": [False] * n,
    })


def test_selection_rule_on_a_hand_made_accuracy_table():
    # posterior 0.90: tolerance 0.02 accepts >= 0.88 -> rows 0, 1, 3; the smallest is row 3
    table = hand_table("accuracy", [0.91, 0.89, 0.85, 0.88, 0.70], [1000, 500, 200, 100, 10])
    front = Frontier(table, "accuracy", posterior_metric=0.90, params_before=1000, num_samples=10, seed=0)
    assert front.within(0.02).tolist() == [True, True, False, True, False]
    assert front.selected_index(0.02) == 3
    choice = front.select(0.02)
    assert choice == ThresholdChoice(pytest.approx(0.4), choice.reason, architecture="a3")
    assert "within 0.02 of the posterior's validation accuracy 0.9" in choice.reason and "100 of 1,000" in choice.reason
    assert front.selected_index(0.0) == 0 and front.selected_index(0.2) == 4
    with pytest.raises(HyperparameterError, match="no network of the frontier.*best, a0.*a tolerance of 0.04 accepts"):
        Frontier(table, "accuracy", posterior_metric=0.95, params_before=1000, num_samples=10, seed=0).select(0.01)
    with pytest.raises(HyperparameterError, match="tolerance"):
        front.select(-0.1)
    # equal size: the better metric wins
    tied = hand_table("accuracy", [0.89, 0.90], [100, 100])
    assert Frontier(tied, "accuracy", 0.90, 1000, 10, 0).selected_index(0.05) == 1


def test_selection_rule_on_a_hand_made_rmse_table():
    # posterior RMSE 2.0: tolerance 0.1 is relative, accepting RMSE <= 2.2 -> rows 0 and 2
    table = hand_table("rmse", [1.9, 2.3, 2.2, 3.0], [400, 300, 200, 100])
    front = Frontier(table, "rmse", posterior_metric=2.0, params_before=400, num_samples=10, seed=0)
    assert front.limit(0.1) == pytest.approx(2.2)
    assert front.within(0.1).tolist() == [True, False, True, False]
    assert front.selected_index(0.1) == 2 and front.selected_index(0.0) == 0
    assert "within 10 % of the posterior's 2" in front.select(0.1).reason


def test_the_tolerance_for_the_best_row_is_the_smallest_that_selects_it():
    """Hand-made tables: the tolerance the best row needs, and select accepting exactly that."""
    table = hand_table("accuracy", [0.86, 0.85, 0.80], [30, 20, 10])
    front = Frontier(table, "accuracy", posterior_metric=0.91, params_before=40, num_samples=10, seed=0)
    assert front.tolerance_for_best() == pytest.approx(0.05)
    assert front.selected_index(0.049) is None and front.select(0.05 + 1e-12).architecture == "a0"
    table = hand_table("rmse", [1.3, 1.2, 1.5], [30, 20, 10])
    front = Frontier(table, "rmse", posterior_metric=1.0, params_before=40, num_samples=10, seed=0)
    assert front.tolerance_for_best() == pytest.approx(0.2)
    assert front.selected_index(0.19) is None and front.select(0.2 + 1e-12).architecture == "a1"
    # a row better than the posterior needs a negative tolerance
    better = Frontier(hand_table("accuracy", [0.95, 0.9], [30, 20]), "accuracy", 0.91, 40, 10, 0)
    assert better.tolerance_for_best() == pytest.approx(-0.04)


def test_a_rows_threshold_is_what_compress_takes():
    table = hand_table("accuracy", [0.9, 0.8, 0.7], [30, 20, 10])
    table["threshold"] = [0.25, float("nan"), (0.1, 0.6)]
    front = Frontier(table, "accuracy", 0.9, 40, 10, 0)
    assert [front.threshold_at(i) for i in table.index] == [0.25, None, (0.1, 0.6)]
    assert isinstance(front.threshold_at(0), float)


@pytest.mark.parametrize("outputs", [1, 2])
def test_regression_rows_are_rmse_of_the_compressed_module(outputs):
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(mlp([4, 6, outputs]), psb.SpikeSlab(prior_inclusion=0.1),
                                    likelihood="gaussian", num_data=50), seed=2)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(50, 4, generator=generator)
    y = x[:, :outputs] * 2 + 0.1 * torch.randn(50, outputs, generator=generator)
    y = y[:, 0] if outputs == 1 else y
    front = frontier(bnn, x, y, num_samples=5, seed=1)
    assert front.metric == "rmse" and "rmse" in front.table.columns
    check_rows(bnn, front, x, y, hand_rmse)
    mean = bnn.predict(x, num_samples=5, seed=1).mean
    assert front.posterior_metric == pytest.approx(hand_rmse(lambda v: mean, x, y), rel=1e-6)
    index = front.selected_index(10.0)  # a huge tolerance: the smallest network of all
    assert front.table.nonzero_params[index] == front.table.nonzero_params.min()


def test_conv_net_rows_match_their_compressed_modules():
    torch.manual_seed(0)
    bnn = randomize_guide(SparseBNN(conv_net("max-pool"), psb.SpikeSlabNode(), num_data=40), seed=1)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(40, 72, generator=generator)
    y = (x[:, :36].sum(1) > 0).long() + (x[:, 36:].sum(1) > 2).long()
    front = frontier(bnn, x, y, num_samples=3, batch_size=16)
    check_rows(bnn, front, x, y, hand_accuracy)
    assert len(front.table) >= 3 and front.table.flops.is_monotonic_decreasing


def test_given_thresholds_are_the_rows():
    bnn = classifier(psb.SpikeSlab(prior_inclusion=0.1))
    x, y = classification_data()
    front = frontier(bnn, x, y, thresholds=[0.7, 0.3, 0.5, 0.3], num_samples=2)
    assert front.table.threshold.tolist() == [0.3, 0.5, 0.7]
    assert front.table.keep_rule.tolist() == [False, True, False]
    check_rows(bnn, front, x, y, hand_accuracy)


def test_a_choice_made_before_the_network_changed_is_refused():
    x, y = classification_data()
    bnn = classifier(psb.SpikeSlabNode())
    choice = frontier(bnn, x, y, thresholds=[0.2], num_samples=2).select(1.0)
    assert choice.architecture == "5-6-3-3"
    compress(bnn, threshold=choice)
    with torch.no_grad():  # as if refitted: the first hidden layer's indicators switch off
        bnn.layers[1].block.gates.logits[:2] = -20.0
    with pytest.raises(InputError, match="made for a network that compresses to 5-6-3-3.*refitted"):
        compress(bnn, threshold=choice)


def test_no_argument_is_named_like_test_data():
    for function in (frontier, psb.layerwise_frontier, Frontier.select, Frontier.within, Frontier.selected_index,
                     psb.analysis.plot_frontier):
        names = list(inspect.signature(function).parameters)
        assert not any("test" in name for name in names), (function, names)
    for function in (frontier, psb.layerwise_frontier):
        assert list(inspect.signature(function).parameters)[:3] == ["bnn", "x_val", "y_val"]
        assert "validation" in function.__doc__ and "test" in function.__doc__


def test_bad_input_is_refused_with_a_clear_error():
    x, y = classification_data()
    bnn = classifier(psb.SpikeSlab(prior_inclusion=0.1))
    with pytest.raises(NotFittedError, match="frontier"):
        torch.manual_seed(0)
        frontier(SparseBNN(mlp([5, 8, 6, 3]), psb.SpikeSlab(prior_inclusion=0.1)), x, y)
    with pytest.raises(InputError, match="x_val has shape"):
        frontier(bnn, x[:, :4], y)
    with pytest.raises(InputError, match="x_val.*y_val|mismatched"):
        frontier(bnn, x, y[:-1])
    with pytest.raises(InputError, match="class labels"):
        frontier(bnn, x, y.float())
    for thresholds in ([0.0, 0.5], [1.0], [float("nan")], [1.5], ["0.5"], [True]):
        with pytest.raises(HyperparameterError, match="strictly between 0 and 1"):
            frontier(bnn, x, y, thresholds=thresholds, num_samples=2)
    with pytest.raises(HyperparameterError, match="empty"):
        frontier(bnn, x, y, thresholds=[], num_samples=2)
    with pytest.raises(HyperparameterError, match="sequence"):
        frontier(bnn, x, y, thresholds=0.5, num_samples=2)
    with pytest.raises(HyperparameterError, match="num_thresholds"):
        frontier(bnn, x, y, num_thresholds=0)


def test_each_row_is_compressed_once_and_the_grid_search_is_bounded(monkeypatch):
    """The cost: one compress per row (the expensive call) and a bounded number of structure
    analyses for the grid search."""
    module = importlib.import_module("pyro_sparse_bnn.analysis.frontier")

    calls = {"compress": 0, "structure": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(module, "compress", counting("compress", module.compress))
    monkeypatch.setattr(module, "analyse_structure", counting("structure", module.analyse_structure))
    front = frontier(classifier(psb.SpikeSlab(prior_inclusion=0.1)), *classification_data(), num_thresholds=6,
                     num_samples=2)
    assert calls["compress"] == len(front.table) <= 6 + 1
    assert calls["structure"] <= 8 * 6 + 2


# -- per-layer thresholds and the layerwise frontier ------------------------------------------
def hand_kept_units(bnn, thresholds):
    """Kept hidden widths of a node-indicator network, from the raw PIPs: a unit is kept when
    its own switch passes its layer's threshold and some kept path links it to the output
    (here every unit of a layer feeds every unit of the next, so only empty layers cut)."""
    return [int((layer.inclusion_groups() > t).sum()) for layer, t in zip(bnn.layers[:-1], thresholds[:-1], strict=True)]


def test_a_per_layer_threshold_prunes_each_layer_at_its_own_value():
    bnn = classifier(psb.SpikeSlabNode(), widths=(5, 12, 10, 3))
    pips = [layer.inclusion_groups().detach() for layer in bnn.layers]
    thresholds = (float(pips[0].median()), float(pips[1].quantile(0.25)), 0.5)
    module, report = compress(bnn, threshold=thresholds)
    assert list(report.architecture_after[1:-1]) == hand_kept_units(bnn, thresholds)
    assert describe_keep_rule(bnn, thresholds).startswith("per-layer rule")
    # one value repeated is the single threshold
    same, _ = compress(bnn, threshold=(0.4, 0.4, 0.4))
    single, _ = compress(bnn, threshold=0.4)
    x, _ = classification_data()
    with torch.no_grad():
        assert torch.equal(same(x), single(x))
    # None entries keep that layer's default
    default, _ = compress(bnn)
    mixed, _ = compress(bnn, threshold=(None, None, None))
    with torch.no_grad():
        assert torch.equal(default(x), mixed(x))


def test_a_per_layer_threshold_must_have_one_entry_per_layer():
    bnn = classifier(psb.SpikeSlabNode())
    for bad, message in (((0.5, 0.5), "one entry per layer"), ((0.5, 2.0, 0.5), r"\[0, 1\]"),
                         ((0.5, "x", 0.5), "finite number")):
        with pytest.raises(HyperparameterError, match=message):
            compress(bnn, threshold=bad)


@pytest.fixture(scope="module")
def walked():
    x, y = classification_data(n=120)
    bnn = classifier(psb.SpikeSlabNode(), widths=(5, 12, 10, 3))
    return bnn, x, y, psb.layerwise_frontier(bnn, x, y, step=0.25, max_loss=1.0, num_samples=4)


def test_the_walk_shrinks_one_layer_at_a_time_and_every_row_is_its_compressed_module(walked):
    bnn, x, y, front = walked
    table = front.table
    assert len(table) > 3 and table.keep_rule.iloc[0] and not table.keep_rule.iloc[1:].any()
    assert (table.nonzero_params.diff().iloc[1:] < 0).all()
    names = [layer.spec.name for layer in bnn.layers]
    rows = list(table.itertuples(index=False))
    for previous, row in zip(rows[:-1], rows[1:], strict=True):
        changed = [i for i, (a, b) in enumerate(zip(previous.threshold, row.threshold, strict=True)) if a != b]
        assert len(changed) == 1 and row.threshold[changed[0]] > previous.threshold[changed[0]]
        assert row.layer == names[changed[0]]
    for row in rows:
        module, report = compress(bnn, threshold=row.threshold)
        assert psb.analysis.CompressionReport.format_architecture(report.architecture_after) == row.architecture
        assert hand_accuracy(module, x, y) == pytest.approx(row.accuracy)


def test_each_move_is_the_cheapest_of_the_layers_candidates(walked):
    """The first move, recomputed by hand: for every layer, drop the lowest quarter of its
    kept switches; the walk took the move with the least accuracy lost per parameter removed."""
    bnn, x, y, front = walked
    start = front.table.iloc[0]
    costs = {}
    for index, layer in enumerate(bnn.layers):
        kept = sorted(float(p) for p in set(layer.inclusion_groups().detach().flatten().tolist()) if p > start.threshold[index])
        if len(kept) <= 1:
            continue
        drop = min(max(1, math.ceil(0.25 * len(kept))), len(kept) - 1)
        trial = list(start.threshold)
        trial[index] = (kept[drop - 1] + kept[drop]) / 2
        module, report = compress(bnn, threshold=trial)
        removed = start.nonzero_params - report.nonzero_params_after
        if removed > 0 and not report.warnings:
            costs[layer.spec.name] = (start.accuracy - hand_accuracy(module, x, y)) / removed
    assert front.table.layer.iloc[1] == min(costs, key=costs.get)


def test_select_on_the_walk_gives_a_per_layer_choice_that_compress_applies(walked):
    bnn, x, y, front = walked
    choice = front.select(tolerance=0.05)
    assert isinstance(choice.threshold, tuple) and len(choice.threshold) == len(bnn.layers)
    module, report = compress(bnn, threshold=choice)
    assert hand_accuracy(module, x, y) >= front.posterior_metric - 0.05 - 1e-9
    assert report.threshold_reason.endswith(choice.reason) and "per-layer rule" in report.threshold_reason
    within = front.table[front.within(0.05)]
    assert report.nonzero_params_after == within.nonzero_params.min()


def test_the_walk_stops_at_max_loss_and_refuses_bad_arguments(walked):
    bnn, x, y, _ = walked
    _, _, _, longer = walked
    front = psb.layerwise_frontier(bnn, x, y, step=0.25, max_loss=0.0, num_samples=4)
    # every row but the last is at or above the floor; the walk stops at the first one below it
    assert (front.table.accuracy.iloc[:-1] >= front.posterior_metric - 1e-9).all()
    assert front.table.accuracy.iloc[-1] < front.posterior_metric or len(front.table) == len(longer.table)
    assert len(front.table) <= len(longer.table)
    for step in (0, 1.5, True, "0.1"):
        with pytest.raises(HyperparameterError, match="step"):
            psb.layerwise_frontier(bnn, x, y, step=step)
    with pytest.raises(HyperparameterError, match="max_loss"):
        psb.layerwise_frontier(bnn, x, y, max_loss=-1)
    with pytest.raises(NotFittedError, match="layerwise_frontier"):
        torch.manual_seed(0)
        psb.layerwise_frontier(SparseBNN(mlp([5, 8, 3]), psb.SpikeSlabNode()), x, y)
