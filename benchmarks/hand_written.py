"""Hand-written PyTorch training steps of the library's estimators, without Pyro.

The reference the step-time benchmark (``step_time.py``) compares the library against: the
same objective (minibatch log-likelihood scaled to ``N`` plus the closed-form KLs of every
prior), the same gradient estimator (straight-through binary Concrete indicators, one weight
draw per step or local reparameterisation) and the same parameterisation, written the way
a PyTorch user would write it for one model: plain tensors, a loop over the layers and one
fused Adam optimiser.

:class:`HandWritten` is built from a :class:`~pyro_sparse_bnn.SparseBNN` and copies its
initial guide parameters and hyperparameters, so both start from the same state; with every
random draw replaced by a constant (``fixed_noise()``) both compute the same loss and gradients,
which ``step_time.py --check`` verifies for every row.
"""

import math
from contextlib import contextmanager
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

from pyro_sparse_bnn import (
    GroupHorseshoe,
    GroupNormalJeffreys,
    SelfCompressingGaussian,
    SpikeSlab,
    SpikeSlabGroupHorseshoe,
    SpikeSlabGroupLasso,
    SpikeSlabNode,
)

HALF_LOG_2PI_E = 0.5 * (1.0 + math.log(2 * math.pi))
K1, K2, K3 = 0.63576, 1.87320, 1.48695


def scale_of(rho):
    """The guide's standard deviation from its unconstrained parameter."""
    return F.softplus(rho)


def horseshoe_log_scale(scales, log_global):
    """``log`` of a horseshoe scale ``sqrt(tau0_a tau0_b tau_a tau_b)`` times the global
    factor, drawn from the four LogNormal guides, and their KL against the half-Cauchy's
    Gamma(1/2, 1) / InverseGamma(1/2, 1) pairs."""
    log_scale, kl = log_global, 0.0
    for name in ("tau0_a", "tau0_b", "tau_a", "tau_b"):
        log_f, loc, sigma, log_sigma = scales.draw(name)
        log_scale = log_scale + 0.5 * log_f
        kl_fn = lognormal_gamma_kl if name.endswith("a") else lognormal_inverse_gamma_kl
        kl = kl + kl_fn(loc, sigma, log_sigma, 0.5, 1.0).sum()
    return log_scale, kl


def indicator(logits, tau):
    """Straight-through binary Concrete draw: 1[noisy logit > 0] forward, relaxed backward."""
    u = torch.rand_like(logits)
    noisy = logits + torch.logit(u, eps=torch.finfo(logits.dtype).eps)
    soft = torch.sigmoid(noisy / tau)
    return (noisy > 0).to(soft.dtype) + soft - soft.detach()


def bernoulli_kl(logits, lam):
    return (torch.sigmoid(logits) * (logits - math.log(lam) + math.log1p(-lam))
            - F.softplus(logits) - math.log1p(-lam))


def normal_kl(loc, sigma, log_sigma, s0):
    """KL(N(loc, sigma^2) || N(0, s0^2)) entrywise."""
    return (sigma.square() + loc.square()) / (2 * s0 * s0) - log_sigma + (math.log(s0) - 0.5)


def _log(b):
    return torch.log(b) if isinstance(b, torch.Tensor) else math.log(b)


def lognormal_gamma_kl(loc, sigma, log_sigma, a: float, b):
    """KL(LogNormal(loc, sigma^2) || Gamma(a, rate b)) entrywise (``b`` may be a tensor)."""
    return b * torch.exp(loc + 0.5 * sigma.square()) - a * (loc + _log(b)) + math.lgamma(a) \
        - log_sigma - HALF_LOG_2PI_E


def lognormal_inverse_gamma_kl(loc, sigma, log_sigma, a: float, b: float):
    """KL(LogNormal(loc, sigma^2) || InverseGamma(a, b)) entrywise."""
    return b * torch.exp(0.5 * sigma.square() - loc) + a * (loc - math.log(b)) + math.lgamma(a) \
        - log_sigma - HALF_LOG_2PI_E


def copy_of(source: torch.Tensor, pairs: list) -> nn.Parameter:
    """A new parameter with the value of the library's ``source``; ``(new, source)`` is
    appended to ``pairs`` (for the gradient check)."""
    param = nn.Parameter(source.detach().clone())
    pairs.append((param, source))
    return param


class LogNormals(nn.Module):
    """LogNormal guides of the latent scales of one layer; draws are returned as logs."""

    def __init__(self, pairs, **modules):
        super().__init__()
        self.loc = nn.ParameterDict({k: copy_of(m.loc, pairs) for k, m in modules.items()})
        self.rho = nn.ParameterDict({k: copy_of(m.rho, pairs) for k, m in modules.items()})

    def draw(self, name):
        """``(log draw, loc, sigma, log sigma)``."""
        loc, sigma = self.loc[name], scale_of(self.rho[name])
        return loc + sigma * torch.randn_like(loc), loc, sigma, torch.log(sigma)


class HandLayer(nn.Module):
    """One parametric layer: slab ``N(loc, sigma^2)`` on the augmented matrix ``(out, fan_in + 1)``
    times a factor (indicators and scales) per output unit, per input unit or per weight."""

    def __init__(self, layer, lrt: bool):
        super().__init__()
        self.pairs = []
        spec = layer.spec
        self.kind, self.shape, self.fan_in, self.module = spec.kind, spec.weight_shape, spec.fan_in, spec.module
        self.lrt = lrt
        slab = layer.block.slab if hasattr(layer, "block") else layer.slab
        self.loc = copy_of(slab.loc, self.pairs)
        self.scale_param = copy_of(slab.scale_param, self.pairs)
        self.log_variance = slab.parameterization == "log_variance"
        self.max_scale_param = slab.max_scale_param
        self.s0 = float(slab.prior_scale)

    def slab_scale(self):
        """``(sigma, log sigma)`` of the slab; the parameter is first projected onto the
        guide's variance bound in place, as the library's guide does."""
        if self.max_scale_param is not None:
            with torch.no_grad():
                self.scale_param.clamp_(max=self.max_scale_param)
        if self.log_variance:
            sigma, log_sigma = torch.exp(0.5 * self.scale_param), 0.5 * self.scale_param
        else:
            sigma = scale_of(self.scale_param)
            log_sigma = torch.log(sigma)
        return sigma, log_sigma

    def linear(self, x, params):
        weight = params[:, : self.fan_in].reshape(self.shape)
        bias = params[:, self.fan_in]
        if self.kind == "linear":
            return F.linear(x, weight, bias)
        m = self.module
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation)

    def gaussian(self, x, loc, var, out_factor=None):
        """Pre-activations with weights ``N(loc, var)``: local reparameterisation or one draw."""
        if self.lrt:
            mean, variance = self.linear(x, loc), self.linear(x * x, var)
            if out_factor is not None:
                f = out_factor.view((1, -1) + (1,) * (x.dim() - 2))
                mean, variance = mean * f, variance * f * f
            return mean + variance.clamp(min=torch.finfo(x.dtype).tiny).sqrt() * torch.randn_like(mean)
        out = self.linear(x, loc + var.sqrt() * torch.randn_like(loc))
        if out_factor is not None:
            out = out * out_factor.view((1, -1) + (1,) * (x.dim() - 2))
        return out


class NodeLayer(HandLayer):
    """SS-IG, SS-GL, SS-GHS: ``w_j = z_j s_j beta_j``, one indicator and scale per output unit."""

    def __init__(self, layer, lrt, prior, tau):
        super().__init__(layer, lrt)
        self.logits = copy_of(layer.block.gates.logits, self.pairs)
        self.lam, self.tau, self.prior = float(layer.block.gates.prior_probs), tau, prior
        if isinstance(prior, SpikeSlabGroupHorseshoe):
            s = layer.scales
            self.scales = LogNormals(self.pairs, tau0_a=s.tau0_a, tau0_b=s.tau0_b, tau_a=s.tau_a, tau_b=s.tau_b)
            self.log_global, self.c = s.log_global_scale, layer.c
        elif isinstance(prior, SpikeSlabGroupLasso):
            self.scales = LogNormals(self.pairs, lambda_sq=layer.lambda_sq, tau_sq=layer.tau_sq)
            self.tau_sq_a = float(layer.tau_sq_concentration[0])
            self.lambda_a, self.lambda_b = float(layer.lambda_sq_concentration), float(layer.lambda_sq_rate)

    def scale_and_kl(self):
        """Per-unit scale ``s_j`` (``None`` for SS-IG) and the scales' KL."""
        if isinstance(self.prior, SpikeSlabGroupHorseshoe):
            log_s, kl = horseshoe_log_scale(self.scales, self.log_global)
            return self.c * torch.exp(0.5 * F.logsigmoid(2 * (log_s - math.log(self.c)))), kl
        if isinstance(self.prior, SpikeSlabGroupLasso):
            log_l, l_loc, l_sigma, l_log_sigma = self.scales.draw("lambda_sq")
            log_t, t_loc, t_sigma, t_log_sigma = self.scales.draw("tau_sq")
            kl = lognormal_gamma_kl(l_loc, l_sigma, l_log_sigma, self.lambda_a, self.lambda_b)
            kl = kl + lognormal_gamma_kl(t_loc, t_sigma, t_log_sigma, self.tau_sq_a, torch.exp(log_l) / 2).sum()
            return torch.exp(0.5 * log_t), kl
        return None, 0.0

    def forward(self, x):
        scale, kl = self.scale_and_kl()
        z = indicator(self.logits, self.tau)
        factor = z if scale is None else z * scale
        sigma, log_sigma = self.slab_scale()
        h = self.gaussian(x, self.loc, sigma.square(), factor)
        slab_kl = normal_kl(self.loc, sigma, log_sigma, self.s0).sum(1)
        kl = kl + bernoulli_kl(self.logits, self.lam).sum() + (torch.sigmoid(self.logits) * slab_kl).sum()
        return h, kl


class EdgeLayer(HandLayer):
    """SpikeSlab: one indicator per weight, ``w = z * beta``."""

    def __init__(self, layer, lrt, prior, tau):
        super().__init__(layer, lrt)
        self.logits = copy_of(layer.block.gates.logits, self.pairs)
        self.lam, self.tau = float(layer.block.gates.prior_probs), tau

    def forward(self, x):
        z = indicator(self.logits, self.tau)
        sigma, log_sigma = self.slab_scale()
        if self.lrt:
            h = self.gaussian(x, z * self.loc, (z * sigma).square())
        else:
            h = self.linear(x, z * (self.loc + sigma * torch.randn_like(sigma)))
        gamma = torch.sigmoid(self.logits)
        kl = (bernoulli_kl(self.logits, self.lam) + gamma * normal_kl(self.loc, sigma, log_sigma, self.s0)).sum()
        return h, kl


class GroupScaleHandLayer(HandLayer):
    """BC-GNJ and BC-GHS: a scale ``z_g`` per input unit (linear) or output channel (conv)."""

    def __init__(self, layer, lrt, prior, tau):
        super().__init__(layer, lrt)
        self.prior = prior
        if isinstance(prior, GroupNormalJeffreys):
            self.z_loc = copy_of(layer.z_loc, self.pairs)
            self.z_log_var = copy_of(layer.z_log_var, self.pairs)
        else:
            s = layer.scales
            self.scales = LogNormals(self.pairs, tau0_a=s.tau0_a, tau0_b=s.tau0_b, tau_a=s.tau_a, tau_b=s.tau_b)
            self.log_global = s.log_global_scale

    def group_scale_and_kl(self):
        if isinstance(self.prior, GroupNormalJeffreys):
            z = self.z_loc + torch.exp(0.5 * self.z_log_var) * torch.randn_like(self.z_loc)
            log_alpha = self.z_log_var - torch.log(self.z_loc.square() + 1e-8)
            kl = (K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)).sum()
            return z, kl
        log_z, kl = horseshoe_log_scale(self.scales, self.log_global)
        return torch.exp(log_z), kl

    def forward(self, x):
        z, kl = self.group_scale_and_kl()
        sigma, log_sigma = self.slab_scale()
        kl = kl + normal_kl(self.loc, sigma, log_sigma, self.s0).sum()
        if self.kind == "linear":  # scale the inputs; the bias is not scaled
            return self.gaussian(x * z, self.loc, sigma.square()), kl
        return self.gaussian(x, self.loc, sigma.square(), z), kl


class SlabLayer(HandLayer):
    """Self-compressing Gaussian: the slab alone."""

    def __init__(self, layer, lrt, prior, tau):
        super().__init__(layer, lrt)

    def forward(self, x):
        sigma, log_sigma = self.slab_scale()
        return self.gaussian(x, self.loc, sigma.square()), normal_kl(self.loc, sigma, log_sigma, self.s0).sum()


LAYERS = {
    SpikeSlabNode: NodeLayer, SpikeSlabGroupLasso: NodeLayer, SpikeSlabGroupHorseshoe: NodeLayer,
    SpikeSlab: EdgeLayer, GroupNormalJeffreys: GroupScaleHandLayer, GroupHorseshoe: GroupScaleHandLayer,
    SelfCompressingGaussian: SlabLayer,
}


class HandWritten(nn.Module):
    """The training objective of ``bnn`` (categorical likelihood, ``MeanFieldELBO``) in plain PyTorch.

    :param bnn: a :class:`~pyro_sparse_bnn.SparseBNN`; its architecture, priors, initial guide
        parameters, temperature and ``num_data`` are copied.
    :param lrt: the names of the layers with local reparameterisation (the others draw one
        weight tensor per step), or ``True`` / ``False`` for all / none.
    """

    def __init__(self, bnn, lrt):
        super().__init__()
        tau = float(bnn.temperature)
        stages = []
        for stage in bnn.architecture.stages:
            if stage.is_parametric:
                layer = bnn.layers[stage.layer_index]
                prior = bnn.priors[stage.layer_index]
                uses_lrt = lrt if isinstance(lrt, bool) else layer.spec.name in lrt
                stages.append(LAYERS[type(prior)](layer, uses_lrt, prior, tau))
            else:
                stages.append(stage.module)
        self.stages = nn.ModuleList(stages)
        self.num_data = bnn.num_data

    def loss(self, x, y):
        h, kl = x, 0.0
        for stage in self.stages:
            if isinstance(stage, HandLayer):
                h, layer_kl = stage(h)
                kl = kl + layer_kl
            else:
                h = stage(h)
        return F.cross_entropy(h, y, reduction="sum") * (self.num_data / len(y)) + kl

    def pairs(self):
        """``(hand-written parameter, library parameter it was copied from)`` for every parameter."""
        return [pair for stage in self.stages if isinstance(stage, HandLayer) for pair in stage.pairs]


@contextmanager
def fixed_noise(normal: float = 0.3):
    """Replace every random draw by a constant: standard normal draws by ``normal``, uniform
    draws by 1/2 (indicator logits then decide alone), so that the library's step and the
    hand-written one compute the same loss and gradients (the variance path included, since
    the normal noise is not 0)."""
    def normals(*args, **kwargs):
        return torch.full(_shape(args), normal, **kwargs)

    def halves(*args, **kwargs):
        return torch.full(_shape(args), 0.5, **kwargs)

    with mock.patch("torch.randn", normals), \
            mock.patch("torch.randn_like", lambda t, **k: torch.full_like(t, normal, **k)), \
            mock.patch("torch.rand", halves), mock.patch("torch.rand_like", lambda t, **k: torch.full_like(t, 0.5, **k)), \
            mock.patch("torch.Tensor.normal_", lambda self, *a, **k: self.fill_(normal)):
        yield


def _shape(args):
    return tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)
