"""``compress`` and ``masked_posterior_mean`` against an independent reference.

The other compress tests compare ``compress`` with ``masked_posterior_mean``; both take their
masked weights from the same helper, so an error there (a pruned node's bias left in, the
wrong side of the threshold, a wrong posterior mean) passes them. Here the expected network
is built from the raw guide parameters in the state dict, with the formulas of
docs/methods.md written out below -- posterior means of the weights, each prior's keep rule
applied per weight / per unit by explicit loops, dropped weights and the biases of dropped
units set to zero -- without calling any readout of the library (no ``posterior_mean``,
``keep_masks``, ``inclusion_groups``, ``log_alpha``, ...). The dense reference network keeps
every unit and folds nothing, so comparing the compressed module's outputs with it also
checks the constant folding; the kept units are derived by hand too (a unit is kept iff it
depends on the input through kept weights and has a kept outgoing weight into a kept unit;
in the networks where that is checked every constant unit feeds a linear layer, where the
library always folds it).
"""

import copy
import math
import warnings

import pytest
import torch
from scipy import integrate
from torch import nn

from pyro_sparse_bnn import (
    GroupHorseshoe,
    GroupNormalJeffreys,
    SelfCompressingGaussian,
    SparseBNN,
    SpikeSlab,
    SpikeSlabGroupHorseshoe,
    SpikeSlabGroupLasso,
    SpikeSlabNode,
    compress,
)
from pyro_sparse_bnn.analysis import masked_posterior_mean
from tests.conftest import conv_net, mlp

# hyperparameters that enter the reference formulas (non-default where the prior has one,
# so that a readout that ignores them is caught)
GHS_C, GHS_GLOBAL = 2.0, 0.7
GNJ_T = (-2.5, -3.0, -3.5)
BCHS_GLOBAL, BCHS_T = 1.5, -1.0
SNR = 0.5

PRIORS = {
    "SpikeSlab": lambda: SpikeSlab(prior_inclusion=0.3),
    "SpikeSlabNode": lambda: SpikeSlabNode(),
    "SpikeSlabGroupLasso": lambda: SpikeSlabGroupLasso(),
    "SpikeSlabGroupHorseshoe": lambda: SpikeSlabGroupHorseshoe(c=GHS_C, global_scale=GHS_GLOBAL),
    "GroupNormalJeffreys": lambda: GroupNormalJeffreys(log_alpha_threshold=list(GNJ_T)),
    "GroupHorseshoe": lambda: GroupHorseshoe(global_scale=BCHS_GLOBAL, log_alpha_threshold=BCHS_T),
    "SelfCompressingGaussian": lambda: SelfCompressingGaussian(snr_threshold=SNR),
}
INDICATOR_PRIORS = {"SpikeSlab", "SpikeSlabNode", "SpikeSlabGroupLasso", "SpikeSlabGroupHorseshoe"}

# the networks: a tanh MLP, and a conv net whose constant channels all feed a linear layer
NETS = {
    "mlp": (lambda: mlp([6, 7, 6, 3], nn.Tanh), (6,)),
    "conv": (lambda: conv_net("max-pool", nn.Tanh), (72,)),
}


# -- the guide, as if fitted ------------------------------------------------------------------
def set_guide(bnn: SparseBNN, prior: str, seed: int):
    """Random guide parameters chosen so that every prior's keep rule keeps some units of every
    layer and drops others (asserted by the tests). Indicator priors also get a few logits of
    exactly 0 (PIP exactly 0.5, on the threshold: dropped, the rule is ``PIP > 0.5``)."""
    g = torch.Generator().manual_seed(seed)

    def randn(shape, mean=0.0, std=1.0):
        return mean + std * torch.randn(shape, generator=g)

    with torch.no_grad():
        for name, p in bnn.named_parameters():
            if name.endswith("gates.logits"):
                values = randn(p.shape, -1.0 if prior == "SpikeSlab" else 0.5, 4.0)
                if prior == "SpikeSlab":  # units without any incoming edge, their bias on:
                    off = torch.rand(p.shape[0], generator=g) < 0.35  # constants to fold
                    values[off, :-1] = -20.0
                    values[off, -1] = 20.0
                flat = values.view(-1)
                flat[torch.randperm(flat.numel(), generator=g)[:2]] = 0.0  # exactly on the threshold
                p.copy_(values)
            elif name.endswith("z_loc"):
                p.copy_(randn(p.shape))
            elif name.endswith("z_log_var"):
                p.copy_(randn(p.shape, -4.0, 2.0))
            elif name.endswith(("tau_a.rho", "tau_b.rho")) and prior == "GroupHorseshoe":
                p.copy_(randn(p.shape, -0.2, 1.0))  # log alpha spread around the threshold -1
            elif name.endswith(("tau0_a.rho", "tau0_b.rho")) and prior == "GroupHorseshoe":
                p.copy_(randn(p.shape, 0.5, 0.3))  # a wide global scale: alpha must not read it
            elif name.endswith("slab.rho") and prior == "SelfCompressingGaussian":
                p.copy_(randn(p.shape, 0.0, 0.3))  # sigma ~ 0.7
            elif name.endswith("slab.loc") and prior == "SelfCompressingGaussian":
                rows = torch.where(torch.rand(p.shape[0], generator=g) < 0.5, 0.02, 1.0)
                p.copy_(randn(p.shape) * rows[:, None])  # about half the rows at SNR ~ 0.03
            elif name.endswith("rho"):
                p.copy_(randn(p.shape, -2.0, 0.5))
            else:  # slab means, log-variances, log-normal locations
                p.copy_(randn(p.shape, 0.0, 0.7 if name.endswith(".loc") and "slab" not in name else 1.0))
    return bnn


# -- the reference ---------------------------------------------------------------------------
def softplus(t):
    return torch.log1p(torch.exp(t))


def expected_regularized_scale(mean: float, var: float, c: float) -> float:
    """E[c s / sqrt(c^2 + s^2)] for log s ~ N(mean, var), by adaptive quadrature in float64."""
    sd = math.sqrt(var)

    def integrand(u):
        s = math.exp(mean + sd * u)
        return c * s / math.sqrt(c * c + s * s) * math.exp(-u * u / 2) / math.sqrt(2 * math.pi)

    value, _ = integrate.quad(integrand, -12, 12, epsabs=1e-12, epsrel=1e-12)
    return value


def horseshoe_log_moments(state, prefix: str, log_global: float):
    """Mean and variance of log s = (log a0 + log b0 + log a + log b) / 2 + log global_scale,
    each factor log-normal with location ``loc`` and log-sd ``softplus(rho)``."""
    names = ["tau0_a", "tau0_b", "tau_a", "tau_b"]
    mean = sum(state[f"{prefix}scales.{n}.loc"] for n in names) / 2 + log_global
    var = sum(softplus(state[f"{prefix}scales.{n}.rho"]) ** 2 for n in names) / 4
    return mean, var


def reference_layer(state, i: int, prior: str, kind: str, is_output: bool):
    """Posterior means and keep mask of layer ``i``'s augmented matrix (row ``j``: the
    flattened incoming weights of unit ``j``, then its bias), float64, from the raw guide."""
    p = f"layers.{i}."
    if prior in {"GroupNormalJeffreys", "GroupHorseshoe"}:
        loc = state[p + "slab.loc"]
    elif prior == "SelfCompressingGaussian":
        loc = state[p + "slab.loc"]
    else:
        loc = state[p + "block.slab.loc"]
    rows, cols = loc.shape
    mean = loc.clone()
    keep = torch.zeros(rows, cols, dtype=torch.bool)

    if prior == "SpikeSlab":  # one indicator per weight and bias: gamma = sigmoid(logit) > 0.5
        gamma = 1 / (1 + torch.exp(-state[p + "block.gates.logits"]))
        for j in range(rows):
            for k in range(cols):
                keep[j, k] = bool(gamma[j, k] > 0.5)
        return mean, keep

    if prior in INDICATOR_PRIORS:  # one indicator per node: keep its whole row (bias included)
        gamma = 1 / (1 + torch.exp(-state[p + "block.gates.logits"]))
        if prior == "SpikeSlabGroupLasso":  # E[tau] for log tau^2 ~ N(nu, s^2): exp(nu/2 + s^2/8)
            nu, s = state[p + "tau_sq.loc"], softplus(state[p + "tau_sq.rho"])
            scale = torch.exp(nu / 2 + s**2 / 8)
        elif prior == "SpikeSlabGroupHorseshoe":
            m, v = horseshoe_log_moments(state, p, math.log(GHS_GLOBAL))
            scale = torch.tensor([expected_regularized_scale(float(m[j]), float(v[j]), GHS_C) for j in range(rows)],
                                 dtype=torch.float64)
        else:
            scale = torch.ones(rows, dtype=torch.float64)
        for j in range(rows):
            mean[j] = scale[j] * loc[j]
            keep[j] = bool(gamma[j] > 0.5)
        return mean, keep

    if prior == "SelfCompressingGaussian":  # row SNR ||mu|| / ||sigma|| > 0.5; outputs always kept
        sigma = softplus(state[p + "slab.rho"])
        for j in range(rows):
            snr = math.sqrt(float((loc[j] ** 2).sum()) / float((sigma[j] ** 2).sum()))
            keep[j] = is_output or snr > SNR
        return mean, keep

    # Bayesian Compression: a group scale z per input column (linear) or output row (conv)
    if prior == "GroupNormalJeffreys":  # q(z) = N(mu_z, sigma_z^2), log alpha = log sigma_z^2 - log(mu_z^2 + 1e-8)
        z_mean = state[p + "z_loc"]
        log_alpha = state[p + "z_log_var"] - torch.log(z_mean**2 + 1e-8)
        t = GNJ_T[i]
    else:  # log z ~ N(m, v): E[z] = exp(m + v / 2); alpha from the group's own pair (a, b)
        m, v = horseshoe_log_moments(state, p, math.log(BCHS_GLOBAL))
        z_mean = torch.exp(m + v / 2)
        local = (softplus(state[p + "scales.tau_a.rho"]) ** 2 + softplus(state[p + "scales.tau_b.rho"]) ** 2) / 4
        log_alpha = torch.log(torch.expm1(local))
        t = BCHS_T
    if kind == "conv2d":  # row j: the filter and its bias, scaled and pruned together
        for j in range(rows):
            mean[j] = z_mean[j] * loc[j]
            keep[j] = bool(log_alpha[j] < t)
    else:  # column g: input unit g; the bias column is neither scaled nor pruned
        for j in range(rows):
            keep[j, cols - 1] = True
            for g in range(cols - 1):
                mean[j, g] = z_mean[g] * loc[j, g]
                keep[j, g] = bool(log_alpha[g] < t)
    return mean, keep


class Reference:
    """The expected network: dense masked weights, kept units, of a bnn built on ``net``."""

    def __init__(self, bnn: SparseBNN, net: nn.Sequential, prior: str):
        state = {k: v.detach().double() for k, v in bnn.state_dict().items()}
        self.net = copy.deepcopy(net).double()
        self.layers = [m for m in self.net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        self.masks = []
        with torch.no_grad():
            for i, module in enumerate(self.layers):
                kind = "linear" if isinstance(module, nn.Linear) else "conv2d"
                mean, keep = reference_layer(state, i, prior, kind, i == len(self.layers) - 1)
                masked = torch.where(keep, mean, torch.zeros_like(mean))  # dropped weights and biases: 0
                fan_in = module.weight[0].numel()
                module.weight.copy_(masked[:, :fan_in].reshape(module.weight.shape))
                module.bias.copy_(masked[:, fan_in])
                self.masks.append(keep[:, :fan_in])

    def connectivity(self, i: int, in_units: int):
        """``[j][c]``: whether unit ``j`` of layer ``i`` keeps a weight from input unit ``c``
        (a block of ``fan_in / in_units`` entries: kernel taps, or H*W flattened columns)."""
        mask = self.masks[i]
        block = mask.shape[1] // in_units
        return [[any(bool(mask[j, c * block + b]) for b in range(block)) for c in range(in_units)]
                for j in range(mask.shape[0])]

    def kept_units(self):
        """Kept input units and hidden units per layer: forward, which units vary with the
        input; backward, which of those have a kept weight into a kept unit."""
        units = [self.layers[0].weight.shape[1]] + [m.weight.shape[0] for m in self.layers]
        conn = [self.connectivity(i, units[i]) for i in range(len(self.layers))]
        variable = [[True] * units[0]]
        for i in range(len(self.layers) - 1):
            variable.append([any(conn[i][j][c] and variable[i][c] for c in range(units[i]))
                             for j in range(units[i + 1])])
        self.constants_used = sum(  # constant units (non-zero bias) that feed a kept weight
            not variable[i][c] and bool(self.layers[i - 1].bias[c] != 0) and any(conn[i][k][c] for k in range(units[i + 1]))
            for i in range(1, len(self.layers)) for c in range(units[i]))
        kept = [None] * len(units)
        kept[-1] = [True] * units[-1]
        for i in reversed(range(len(self.layers))):  # kept[i]: input units of layer i
            kept[i] = [variable[i][c] and any(conn[i][k][c] for k in range(units[i + 1]) if kept[i + 1][k])
                       for c in range(units[i])]
        return [[c for c, k in enumerate(level) if k] for level in kept[:-1]], units


def build(prior: str, net_name: str, seed: int):
    make_net, input_shape = NETS[net_name]
    torch.manual_seed(seed)
    net = make_net()
    original = copy.deepcopy(net)
    bnn = SparseBNN(net, PRIORS[prior](), num_data=10)
    set_guide(bnn, prior, seed)
    return bnn, original, input_shape


def outputs(bnn, reference, input_shape, seed):
    x = torch.randn((64,) + tuple(input_shape), generator=torch.Generator().manual_seed(seed + 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a degenerate network would be a bad test case
        module, report = compress(bnn)
    with torch.no_grad():
        return module(x), masked_posterior_mean(bnn)(x), reference.net(x.double()), report


def close(actual, expected):
    bound = 1e-5 * (1 + float(expected.abs().max()))
    return float((actual.double() - expected).abs().max()) <= bound


# seeds for which every hidden layer keeps some units and drops others (asserted below)
SEEDS = {("mlp", p): 0 for p in PRIORS} | {("conv", p): 0 for p in PRIORS}
SEEDS["mlp", "SpikeSlabGroupLasso"] = 1
SEEDS["conv", "SpikeSlabGroupLasso"] = 2
SEEDS["conv", "SpikeSlabGroupHorseshoe"] = 4


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("prior", list(PRIORS))
def test_compress_matches_the_reference_built_from_the_raw_guide(prior, net_name):
    seed = SEEDS[net_name, prior]
    bnn, net, input_shape = build(prior, net_name, seed)
    reference = Reference(bnn, net, prior)
    kept, units = reference.kept_units()
    # not degenerate: some input read, and every hidden layer partly kept, partly dropped
    assert kept[0], "no input feature kept"
    for level in range(1, len(kept)):
        assert 0 < len(kept[level]) < units[level], (level, kept[level], units[level])
    if prior == "SpikeSlab":  # units whose weights are all off but bias on: constants to fold
        assert reference.constants_used > 0
    compressed, masked, expected, report = outputs(bnn, reference, input_shape, seed)
    assert close(masked, expected), float((masked.double() - expected).abs().max())
    assert close(compressed, expected), float((compressed.double() - expected).abs().max())
    assert report.kept_features.tolist() == kept[0]
    assert [v.tolist() for v in report.kept_nodes.values()] == kept[1:]
    assert report.architecture_after == tuple(len(k) for k in kept) + (units[-1],)


@pytest.mark.parametrize("kind", ["padding", pytest.param("avg-pool", marks=pytest.mark.slow)])
@pytest.mark.parametrize("prior", list(PRIORS))
def test_compress_folds_constant_channels_before_conv_layers_like_the_reference(prior, kind):
    """Conv after conv, with zero padding or an average pooling that counts its padding: a
    constant channel folds only where its contribution is uniform, else it stays. Whatever
    compress decides, its outputs must be the dense reference network's."""
    seed = 3 if prior == "SpikeSlabGroupLasso" else 1  # some weights dropped, none all dropped
    torch.manual_seed(seed)
    net = conv_net(kind, nn.Tanh)
    bnn = SparseBNN(copy.deepcopy(net), PRIORS[prior](), num_data=10)
    set_guide(bnn, prior, seed)
    reference = Reference(bnn, net, prior)
    assert any(not m.all() for m in reference.masks) and all(m.any() for m in reference.masks)
    compressed, masked, expected, _ = outputs(bnn, reference, (72,), seed)
    assert close(masked, expected), float((masked.double() - expected).abs().max())
    assert close(compressed, expected), float((compressed.double() - expected).abs().max())
