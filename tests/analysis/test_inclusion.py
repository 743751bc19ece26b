"""Edge, node and feature PIPs and the inclusion summary."""

import math

import pytest
import torch
from scipy import integrate

from pyro_sparse_bnn import (
    GroupNormalJeffreys,
    InputError,
    SparseBNN,
    SpikeSlab,
    SpikeSlabNode,
    compress,
    inclusion_summary,
)
from pyro_sparse_bnn.analysis import (
    edge_inclusion_probs,
    feature_inclusion_probs,
    node_inclusion_probs,
)
from tests.conftest import mlp, randomize_guide


@pytest.fixture
def bnn():
    torch.manual_seed(0)
    model = SparseBNN(mlp([4, 5, 3, 2]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    return randomize_guide(model, seed=2, logit_scale=2.0)


def test_edge_pips_are_the_guide_inclusion_probabilities(bnn):
    for layer, pips in zip(bnn.layers, edge_inclusion_probs(bnn).values(), strict=True):
        gamma = torch.sigmoid(layer.block.gates.logits.detach())
        assert torch.equal(pips, gamma[:, :-1])


def test_node_pip_is_probability_of_at_least_one_active_outgoing_edge(bnn):
    nodes = node_inclusion_probs(bnn)
    assert list(nodes) == ["net.0", "net.2"]
    for name, following in [("net.0", bnn.layers[1]), ("net.2", bnn.layers[2])]:
        gamma = torch.sigmoid(following.block.gates.logits.detach())[:, :-1]
        for j in range(gamma.shape[1]):
            none_active = 1.0
            for k in range(gamma.shape[0]):
                none_active *= float(1 - gamma[k, j])
            assert float(nodes[name][j]) == pytest.approx(1 - none_active, abs=1e-6)


def test_feature_pips_use_the_first_layer(bnn):
    gamma = torch.sigmoid(bnn.layers[0].block.gates.logits.detach())[:, :-1]
    expected = 1 - torch.prod(1 - gamma, dim=0)
    assert torch.allclose(feature_inclusion_probs(bnn), expected, atol=1e-6)


def test_node_pips_stay_accurate_for_near_certain_edges():
    """Two outgoing edges of gamma = sigmoid(-30) ~ 9.4e-14 each: PIP = 1 - (1 - gamma)^2 ~
    2 gamma, which 1 - prod(1 - gamma) in float32 would round to 0 and a max would halve.
    Compared in log space, so that a factor of 2 at 1e-13 is a failure."""
    torch.manual_seed(0)
    model = SparseBNN(mlp([2, 3, 2]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    with torch.no_grad():
        model.layers[1].block.gates.logits.fill_(-30.0)
    pips = node_inclusion_probs(model)["net.0"]
    gamma = 1 / (1 + math.exp(30.0))
    expected = -math.expm1(2 * math.log1p(-gamma))  # 1 - (1 - gamma)^2, in float64
    assert torch.all(pips > 0)
    assert torch.allclose(pips.double().log(), torch.full((3,), math.log(expected), dtype=torch.float64), atol=1e-4)


def test_node_pip_combines_several_weak_edges_rather_than_taking_the_strongest():
    """A node with four outgoing edges of gamma 0.3 is used with probability
    1 - 0.7^4 = 0.7599, not max = 0.3; a node with one edge of 0.3 and three near 0 has
    about 0.3. Node-level: a node of gamma 0.8 before four following nodes of gamma 0.3."""
    torch.manual_seed(0)
    edge = SparseBNN(mlp([2, 2, 4]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    logits = torch.full((4, 3), -30.0)
    logits[:, 0] = math.log(0.3 / 0.7)
    logits[0, 1] = math.log(0.3 / 0.7)
    with torch.no_grad():
        edge.layers[1].block.gates.logits.copy_(logits)
    pips = node_inclusion_probs(edge)["net.0"]
    assert pips.tolist() == pytest.approx([1 - 0.7**4, 0.3], abs=1e-6)

    node = SparseBNN(mlp([2, 2, 4]), SpikeSlabNode(), num_data=10)
    with torch.no_grad():
        node.layers[0].block.gates.logits.fill_(math.log(0.8 / 0.2))
        node.layers[1].block.gates.logits.fill_(math.log(0.3 / 0.7))
    assert node_inclusion_probs(node)["net.0"].tolist() == pytest.approx([0.8 * (1 - 0.7**4)] * 2, abs=1e-6)
    assert feature_inclusion_probs(node).tolist() == pytest.approx([1 - 0.2**2] * 2, abs=1e-6)


def test_summary_matches_the_guide_and_compress(bnn):
    names = [f"f{i}" for i in range(4)]
    summary = inclusion_summary(bnn, feature_names=names)
    assert list(summary.columns) == ["layer", "unit", "name", "pip", "pip_lower", "pip_upper", "threshold",
                                     "above_threshold", "kept", "kept_fraction"]
    features = summary[summary.layer == "input"]
    assert features.name.tolist() == names
    # the PIPs by hand from the indicator logits: a unit is used iff one outgoing edge is on
    gamma = [torch.sigmoid(layer.block.gates.logits.detach().double())[:, :-1] for layer in bnn.layers]
    for layer, following in [("input", gamma[0]), ("net.0", gamma[1]), ("net.2", gamma[2])]:
        rows = summary[summary.layer == layer]
        expected = [1 - math.prod(1 - float(following[k, j]) for k in range(following.shape[0]))
                    for j in range(following.shape[1])]
        assert rows.pip.tolist() == pytest.approx(expected, abs=1e-6)
        assert rows.pip_lower.tolist() == rows.pip.tolist() == rows.pip_upper.tolist()  # one fit
        assert rows.above_threshold.tolist() == [p > 0.5 for p in expected]
    _, report = compress(bnn)
    assert features.unit[features.kept].tolist() == report.kept_features.tolist()
    for name, kept in report.kept_nodes.items():
        rows = summary[summary.layer == name]
        assert rows.unit[rows.kept].tolist() == kept.tolist()


def test_kept_is_what_compress_keeps_and_above_threshold_is_the_pip_rule():
    """3 inputs -> 3 hidden -> 2 outputs with hand-set edge PIPs, where the unit PIPs and the
    kept network tell different stories:

    * hidden 0: edge from x0 on; two outgoing edges of PIP 0.4, so its PIP is
      1 - 0.6^2 = 0.64 > 0.5 yet no outgoing edge is kept: removed;
    * hidden 1: no incoming edge, bias on, outgoing edge on: PIP ~1 but it outputs a
      constant that compress folds into the next bias: removed;
    * hidden 2: edge from x1 on, outgoing edge on: kept;
    * x0: its edge is on (PIP ~1) but it feeds only the removed hidden 0: removed;
      x1 is kept; x2 has no edge (PIP ~0).
    """
    torch.manual_seed(0)
    model = SparseBNN(mlp([3, 3, 2]), SpikeSlab(prior_inclusion=0.1), num_data=10)
    on, off = 20.0, -20.0
    first = torch.full((3, 4), off)
    first[0, 0] = first[1, 3] = first[2, 1] = first[2, 3] = on
    second = torch.full((2, 4), off)
    second[:, 0] = torch.logit(torch.tensor(0.4))
    second[0, 1] = second[1, 2] = on
    second[:, 3] = on
    with torch.no_grad():
        model.layers[0].block.gates.logits.copy_(first)
        model.layers[1].block.gates.logits.copy_(second)
        for layer in model.layers:
            layer.block.slab.loc.normal_()
    summary = inclusion_summary(model)
    assert summary.pip.tolist() == pytest.approx([1, 1, 0, 0.64, 1, 1], abs=1e-6)
    assert (summary.threshold == 0.5).all()
    assert summary.above_threshold.tolist() == [True, True, False, True, True, True]
    assert summary.kept.tolist() == [False, True, False, False, False, True]
    _, report = compress(model)
    assert report.kept_features.tolist() == [1] and report.kept_nodes["net.0"].tolist() == [2]
    # and at another threshold both rules move with it
    strict = inclusion_summary(model, threshold=0.7)
    assert strict.above_threshold.tolist() == [True, True, False, False, True, True]
    assert strict.kept.tolist() == summary.kept.tolist()
    # the rule is strict: a PIP equal to the threshold is not above it
    at = inclusion_summary(model, threshold=float(summary.pip[3]))
    assert at.above_threshold.tolist() == [True, True, False, False, True, True]


def test_the_threshold_column_is_the_rule_of_the_layer_that_decides_the_unit():
    """Bayesian Compression with one log-alpha threshold per layer: on a linear layer the
    next layer's input groups decide a unit, on a conv layer its own channel scale."""
    pip = [1 / (1 + math.exp(t)) for t in (-3.0, -2.0, -1.0)]
    torch.manual_seed(0)
    linear = randomize_guide(SparseBNN(mlp([4, 5, 3, 2]), GroupNormalJeffreys(log_alpha_threshold=[-3.0, -2.0, -1.0]),
                                       num_data=10), seed=2)
    summary = inclusion_summary(linear)
    for layer, expected in [("input", pip[0]), ("net.0", pip[1]), ("net.2", pip[2])]:
        rows = summary[summary.layer == layer]
        assert rows.threshold.tolist() == pytest.approx([expected] * len(rows))
        assert rows.above_threshold.tolist() == (rows.pip > expected).tolist()
    conv = conv_bnn(GroupNormalJeffreys(log_alpha_threshold=[-3.0, -2.0, -1.0]))  # conv, conv, linear
    summary = inclusion_summary(conv)
    assert summary.threshold.tolist() == pytest.approx([pip[0]] * (2 + 3) + [pip[2]] * 4)
    assert (inclusion_summary(conv, threshold=0.3).threshold == 0.3).all()


def test_summary_rejects_wrong_number_of_feature_names(bnn):
    with pytest.raises(InputError, match="feature_names has 2 names"):
        inclusion_summary(bnn, feature_names=["a", "b"])


def test_group_scale_summary_reads_the_node_priors():
    from pyro_sparse_bnn import SpikeSlabGroupHorseshoe, SpikeSlabNode
    from pyro_sparse_bnn.analysis import group_scale_summary

    torch.manual_seed(0)
    ghs = randomize_guide(SparseBNN(mlp([4, 5, 2]), SpikeSlabGroupHorseshoe(), num_data=10), seed=1)
    table = group_scale_summary(ghs)
    assert list(table.layer.unique()) == ["net.0", "net.2"] and len(table) == 7
    rows = table[table.layer == "net.0"]
    # by hand from the guide: s~ = s / sqrt(1 + s^2) (c = 1), log s ~ N(m, v) with m half the
    # sum of the four log-normal locations and v a quarter of the sum of their variances
    scales = ghs.layers[0].scales
    factors = [scales.tau0_a, scales.tau0_b, scales.tau_a, scales.tau_b]
    m = sum(f.loc.detach().double() for f in factors) / 2
    v = sum(torch.nn.functional.softplus(f.rho.detach().double()) ** 2 for f in factors) / 4

    def mean_scale(m, v):
        def integrand(u):
            s = math.exp(m + math.sqrt(v) * u)
            return s / math.sqrt(1 + s * s) * math.exp(-u * u / 2) / math.sqrt(2 * math.pi)
        return integrate.quad(integrand, -12, 12)[0]

    expected = [mean_scale(float(m[j]), float(v[j])) for j in range(5)]
    assert rows.scale_mean.tolist() == pytest.approx(expected, rel=1e-5)
    gamma = torch.sigmoid(ghs.layers[0].block.gates.logits.detach().double())
    assert rows.pip.tolist() == pytest.approx(gamma.tolist(), abs=1e-7)
    assert (rows.scale_q05 <= rows.scale_mean).all() and (rows.scale_mean <= rows.scale_q95).all()
    plain = SparseBNN(mlp([4, 5, 2]), SpikeSlabNode(), num_data=10)
    assert group_scale_summary(plain).empty


# -- conv layers ----------------------------------------------------------------------------
def conv_bnn(prior):
    """2-channel 6 x 6 images -> conv 3 3x3 (3 x 4 x 4) -> conv 4 3x3 (4 x 2 x 2) -> flatten
    16 -> fc 2, with a random guide."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(16, 2),
    )
    return randomize_guide(SparseBNN(net, prior, num_data=10, input_shape=(2, 6, 6)), seed=3, logit_scale=1.0)


def none_active(probs):
    return float(torch.prod(1 - probs.double()))


def test_edge_level_channel_pips_read_the_channels_outgoing_weights():
    """Channel c of a conv layer is used iff one of its outgoing weights is active: all of
    W[:, c, :, :] of the next conv, or its block of 4 columns of the linear layer after
    Flatten (channel-major: columns 4c..4c+3); input-channel PIPs read the first conv."""
    bnn = conv_bnn(SpikeSlab(prior_inclusion=0.1))
    gamma = [layer.edge_inclusion_probs() for layer in bnn.layers]
    nodes = node_inclusion_probs(bnn)
    for c in range(3):
        assert float(nodes["net.0"][c]) == pytest.approx(1 - none_active(gamma[1][:, c]), abs=1e-6)
    for c in range(4):
        assert float(nodes["net.2"][c]) == pytest.approx(1 - none_active(gamma[2][:, 4 * c:4 * c + 4]), abs=1e-6)
    features = feature_inclusion_probs(bnn)
    assert features.shape == (2,)
    for i in range(2):
        assert float(features[i]) == pytest.approx(1 - none_active(gamma[0][:, i]), abs=1e-6)


def test_node_level_channel_pips_count_each_following_indicator_once():
    """With node indicators a following unit switches all its weights from channel c at once,
    so PIP(c) = gamma_c (1 - prod_k (1 - gamma_k)) over the following units k -- not over
    their 9 kernel taps or 4 flattened columns one by one."""
    bnn = conv_bnn(SpikeSlabNode())
    gamma = [layer.output_inclusion_probs() for layer in bnn.layers]
    nodes = node_inclusion_probs(bnn)
    assert torch.allclose(nodes["net.0"], gamma[0] * (1 - none_active(gamma[1])), atol=1e-6)
    assert torch.allclose(nodes["net.2"], gamma[1] * (1 - none_active(gamma[2])), atol=1e-6)
    assert torch.allclose(feature_inclusion_probs(bnn), torch.full((2,), 1 - none_active(gamma[0])), atol=1e-6)


def test_bayesian_compression_channel_pips_use_the_channel_scales():
    """BC on a conv layer: one group per output channel (the node PIP's first factor); the
    linear layer after Flatten has one group per input column, so channel c is read by the
    groups of its 4 columns."""
    bnn = conv_bnn(GroupNormalJeffreys())
    conv0, conv1, linear = bnn.layers
    assert conv0.input_inclusion_probs() is None and linear.output_inclusion_probs() is None

    def pip(layer):  # 1 / (1 + alpha), alpha = sigma_z^2 / (mu_z^2 + 1e-8), from the raw guide
        alpha = layer.z_log_var.detach().double().exp() / (layer.z_loc.detach().double() ** 2 + 1e-8)
        return 1 / (1 + alpha)

    own = [pip(conv0), pip(conv1)]
    columns = pip(linear)
    nodes = node_inclusion_probs(bnn)
    assert torch.allclose(nodes["net.0"].double(), own[0] * (1 - none_active(own[1])), atol=1e-6)
    expected = torch.stack([own[1][c] * (1 - none_active(columns[4 * c:4 * c + 4])) for c in range(4)])
    assert torch.allclose(nodes["net.2"].double(), expected, atol=1e-6)
    summary = inclusion_summary(bnn)
    assert (summary.layer == "input").sum() == 2 and (summary.layer == "net.2").sum() == 4
