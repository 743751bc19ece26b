"""BC-GNJ: group normal-Jeffreys scales per input unit (Louizos et al. 2017)."""

import math

import numpy as np
import pytest
import torch
from pyro import poutine

from pyro_sparse_bnn import GroupNormalJeffreys, HyperparameterError, SparseBNN, compress
from pyro_sparse_bnn.analysis import feature_inclusion_probs, node_inclusion_probs, weight_moments
from tests.conftest import mlp, randomize_guide

from .contract import PriorContract
from .hand import (
    assert_loss_matches_hand_computation,
    column_scaled,
    slab_sigma,
    standard_normal_slab_kl,
)

K1, K2, K3 = 0.63576, 1.87320, 1.48695
#: E log|eps| for eps ~ N(0, 1): -(Euler gamma + log 2) / 2
E_LOG_ABS_NORMAL = -(np.euler_gamma + math.log(2)) / 2
#: accuracy of Molchanov et al.'s three-constant fit of the log-uniform KL (test_distributions)
MOLCHANOV_ACCURACY = 0.01


class TestGroupNormalJeffreysContract(PriorContract):
    proper = False

    def make_prior(self):
        return GroupNormalJeffreys()

    def kl_offset(self, name, site):
        """Monte Carlo ``log q(z) + log|z|`` = KL_Molchanov - (1 + log 2 pi)/2 + E log|eps| per
        group (the log-uniform prior is unnormalised; Molchanov's KL vanishes as alpha -> inf)."""
        if not name.endswith("group_scale"):
            return 0.0, 0.0
        groups = site["fn"].event_shape.numel()
        return groups * (-(1 + math.log(2 * math.pi)) / 2 + E_LOG_ABS_NORMAL), groups * MOLCHANOV_ACCURACY

    def randomize(self, bnn, seed=0):
        randomize_guide(bnn, seed)
        generator = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for layer in bnn.layers:
                # means away from zero and alpha between e^-6 and e^2: the regime of a fit
                layer.z_loc.copy_(0.5 + torch.rand(layer.num_groups, generator=generator))
                log_alpha = -6 + 8 * torch.rand(layer.num_groups, generator=generator)
                layer.z_log_var.copy_(log_alpha + torch.log(layer.z_loc.square()))
        return bnn

    def compose(self, layer, draws):
        z = draws["group_scale"]  # w = z_g w~ per input unit g, bias column unscaled
        return torch.cat([z, torch.ones_like(z[:, :1])], dim=1)[:, None, :] * draws["slab"]

    def dropout_rate(self, layer, draws, params):
        z = draws["group_scale"]  # alpha_g = Var[z_g] / E[z_g]^2
        return z.var(0) / z.mean(0).square()


def tiny():
    torch.manual_seed(3)
    bnn = SparseBNN(mlp([3, 4, 2]), GroupNormalJeffreys(), num_data=30)
    return TestGroupNormalJeffreysContract().randomize(bnn, seed=5)


def test_one_scale_per_input_unit_and_the_bias_is_unscaled():
    bnn = tiny()
    trace = poutine.trace(bnn.guide).get_trace()
    assert trace.nodes["net.0.group_scale"]["value"].shape == (3,)
    assert trace.nodes["net.2.group_scale"]["value"].shape == (4,)
    layer = bnn.layers[0]
    with torch.no_grad():
        layer.z_loc.copy_(torch.tensor([1.0, 1.0, 2.0]))
        layer.z_log_var.copy_(torch.log(torch.tensor([0.01, 1.0, 4.0 * math.exp(-2.9)])))
    # log alpha = [-4.6, 0, -2.9]; default t = -3 keeps only the first input
    assert torch.allclose(layer.log_alpha(), torch.tensor([math.log(0.01), 0.0, -2.9]), atol=1e-5)
    weight_mask, bias_mask = layer.keep_masks()
    assert weight_mask.tolist() == [[True, False, False]] * 4 and bias_mask is None
    assert torch.allclose(feature_inclusion_probs(bnn), torch.sigmoid(-layer.log_alpha()))


def test_node_pips_are_the_next_layers_group_probabilities():
    bnn = tiny()
    expected = torch.sigmoid(-bnn.layers[1].log_alpha())
    assert torch.allclose(node_inclusion_probs(bnn)["net.0"], expected)


def test_per_layer_thresholds_and_their_validation():
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([3, 4, 2]), GroupNormalJeffreys(log_alpha_threshold=[-1.0, -5.0]), num_data=30)
    assert [layer.default_threshold for layer in bnn.layers] == pytest.approx([1 / (1 + math.e**-1), 1 / (1 + math.e**-5)])
    with pytest.raises(HyperparameterError, match="2 layers"):
        SparseBNN(mlp([3, 4, 2]), GroupNormalJeffreys(log_alpha_threshold=[-1.0]), num_data=30)
    with pytest.raises(HyperparameterError, match="log_alpha_threshold"):
        GroupNormalJeffreys(log_alpha_threshold=float("nan"))
    with pytest.raises(HyperparameterError, match="log_alpha_threshold"):
        GroupNormalJeffreys(log_alpha_threshold="low")


def test_weight_moments_are_those_of_a_product_of_independent_normals():
    bnn = tiny()
    layer = bnn.layers[0]
    mean, var = weight_moments(bnn)["net.0"]
    mu_z, var_z = layer.z_loc.detach(), layer.z_log_var.detach().exp()
    mu, sigma2 = layer.slab.loc.detach()[:, :3], slab_sigma(layer.slab).float()[:, :3] ** 2
    assert torch.allclose(mean, mu_z * mu)
    assert torch.allclose(var, mu_z**2 * sigma2 + var_z * mu**2 + var_z * sigma2)
    # and against draws of z * w
    n = 200_000
    z = mu_z + var_z.sqrt() * torch.randn(n, 1, 3, dtype=torch.float64)
    w = mu.double() + sigma2.double().sqrt() * torch.randn(n, 4, 3, dtype=torch.float64)
    draws = z * w
    assert torch.all((draws.mean(0) - mean.double()).abs() < 5 * draws.std(0) / math.sqrt(n))
    assert torch.allclose(draws.var(0), var.double(), rtol=0.05)


def test_loss_equals_hand_computation():
    bnn = tiny()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 1, 0, 1, 0])

    def hand(value):
        weights, kl = [], 0.0
        for name, layer in zip(("net.0", "net.2"), bnn.layers, strict=True):
            z = value(f"{name}.group_scale")
            weights.append(column_scaled(z, value(f"{name}.slab")))
            log_alpha = layer.z_log_var.detach().double() - torch.log(layer.z_loc.detach().double() ** 2)
            kl += standard_normal_slab_kl(layer)
            kl += float(-(K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * torch.log1p(torch.exp(-log_alpha)) - K1).sum())
        return weights, kl

    assert_loss_matches_hand_computation(bnn, x, y, 30, hand)


def test_compress_drops_the_inputs_and_units_whose_groups_are_pruned():
    bnn = tiny()
    with torch.no_grad():
        bnn.layers[0].z_log_var.copy_(torch.log(bnn.layers[0].z_loc.square()) + torch.tensor([-5.0, 2.0, -5.0]))
        bnn.layers[1].z_log_var.copy_(torch.log(bnn.layers[1].z_loc.square()) + torch.tensor([-5.0, -5.0, 1.0, -5.0]))
    module, report = compress(bnn)
    assert report.architecture_after == (2, 3, 2)
    assert report.kept_features.tolist() == [0, 2]


@pytest.mark.parametrize("parameterization", ["softplus", "log_variance"])
def test_max_variance_bounds_the_chosen_layers_slab_through_a_fit(parameterization):
    from pyro_sparse_bnn import fit

    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = (x[:, 0] > 0).long()
    # sd softplus(0) = 0.69 or exp(0) = 1 at the start: above the first layer's bound sqrt(0.01) = 0.1
    prior = GroupNormalJeffreys(max_variance=[0.01, None], init_rho=0.0, init_weight_log_var=0.0,
                                weight_parameterization=parameterization)
    bnn = SparseBNN(mlp([3, 4, 2]), prior, num_data=64)
    fit(bnn, x, y, epochs=3, batch_size=16, lr=0.05, progress=False, seed=0)
    first, second = bnn.layers
    assert first.slab.max_variance == 0.01 and second.slab.max_variance is None
    assert float(first.slab.scale.max()) <= 0.1 * (1 + 1e-6)  # float32 round-off of sqrt(0.01)
    # the guide draws with bounded scales, and the weight variances use them
    site = poutine.trace(bnn.guide).get_trace().nodes["net.0.slab"]
    assert float(site["fn"].base_dist.scale.detach().max()) <= 0.1 * (1 + 1e-6)
    _, var = weight_moments(bnn)["net.0"]
    z_mean, z_var = first.scale_moments()
    mu = first.slab.loc.detach()[:, :3]
    assert torch.all(var <= z_mean**2 * 0.01 + z_var * (mu**2 + 0.01) + 1e-7)
    # the unbounded layer is free to stay near the prior's unit variance, far past the bound
    assert float(second.slab.scale.max()) > 0.3


def test_max_variance_validation():
    with pytest.raises(HyperparameterError, match="max_variance"):
        GroupNormalJeffreys(max_variance=0.0)
    with pytest.raises(HyperparameterError, match="max_variance"):
        GroupNormalJeffreys(max_variance=[0.04, -1.0])
    with pytest.raises(HyperparameterError, match="max_variance"):
        GroupNormalJeffreys(max_variance=[])
    with pytest.raises(HyperparameterError, match="max_variance"):
        GroupNormalJeffreys(max_variance="small")
    with pytest.raises(HyperparameterError, match="max_variance has 3 values but the network has 2 layers"):
        SparseBNN(mlp([3, 4, 2]), GroupNormalJeffreys(max_variance=[0.04, None, None]), num_data=30)
    bnn = SparseBNN(mlp([3, 4, 2]), GroupNormalJeffreys(max_variance=0.5), num_data=30)
    assert [layer.slab.max_variance for layer in bnn.layers] == [0.5, 0.5]
    # a shorter sequence leaves the later layers unbounded; the default bounds the first one
    bnn = SparseBNN(mlp([3, 4, 4, 2]), GroupNormalJeffreys(max_variance=[None, 0.1]), num_data=30)
    assert [layer.slab.max_variance for layer in bnn.layers] == [None, 0.1, None]
    bnn = SparseBNN(mlp([3, 4, 4, 2]), GroupNormalJeffreys(), num_data=30)
    assert [layer.slab.max_variance for layer in bnn.layers] == [0.04, None, None]
    assert all(layer.slab.parameterization == "log_variance" for layer in bnn.layers)
    assert torch.all(bnn.layers[1].slab.log_var == -9.0)
    with pytest.raises(HyperparameterError, match="weight_parameterization must be one of"):
        GroupNormalJeffreys(weight_parameterization="exp")
    with pytest.raises(HyperparameterError, match="init_weight_log_var"):
        GroupNormalJeffreys(init_weight_log_var=float("inf"))


@pytest.mark.parametrize("log_alpha_threshold", [-3.0, 0.0, 2.5])
def test_a_single_log_alpha_threshold_is_the_pip_threshold_of_its_dropout_rate(log_alpha_threshold):
    """Keeping a group when log alpha < t is keeping it when 1 / (1 + alpha) > 1 / (1 + e^t):
    the prior reports that PIP threshold (hand-computed here); per-layer thresholds have none."""
    prior = GroupNormalJeffreys(log_alpha_threshold=log_alpha_threshold)
    assert prior.threshold == pytest.approx(1 / (1 + math.exp(log_alpha_threshold)), rel=1e-12)
    assert 0 < prior.threshold < 1
    assert GroupNormalJeffreys(log_alpha_threshold=(-3.0, 0.0)).threshold is None
