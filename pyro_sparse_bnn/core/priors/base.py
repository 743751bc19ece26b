"""The prior interface shared by every sparsity prior, and the building blocks they reuse.

A :class:`Prior` holds the hyperparameters of one sparsity prior. The network wrapper asks
it to :meth:`~Prior.build` one :class:`PriorLayer` per ``nn.Linear`` or ``nn.Conv2d`` of
the user's network. A ``PriorLayer`` is an ``nn.Module`` that owns the guide parameters
of that layer and knows

* which sample sites the **model** has and how the weight is formed from them
  (:meth:`PriorLayer.model`),
* which sample sites the **guide** has, how they are initialised and parameterised
  (:meth:`PriorLayer.guide`),
* how to read inclusion probabilities, keep masks and posterior means off the fitted guide
  (:meth:`inclusion_groups`, :meth:`edge_inclusion_probs`, :meth:`output_inclusion_probs`,
  :meth:`keep_masks`, :meth:`posterior_mean`).

A layer's weights and bias are handled together as one *augmented* matrix of shape
``(out_units, fan_in + 1)`` whose row ``j`` holds the incoming weights of unit ``j``
followed by its bias (:attr:`LayerSpec.param_shape`). Every prior in the library writes it
as ``scale * slab``, where the slab is Gaussian given everything else and the scale collects
indicators and group scales. :class:`LayerDraw` carries these two factors from the model to
the layer computation, which is what lets a local reparameterisation handler replace weight
sampling by pre-activation sampling without touching the priors.

Writing a new prior means subclassing :class:`Prior` and :class:`PriorLayer` in one new
file under ``priors/``; :class:`BernoulliGates` and :class:`GaussianSlab` supply the relaxed
indicators and the Gaussian slab with its (optionally inclusion-weighted) KL.
"""

import math
import weakref
from dataclasses import dataclass
from typing import List, Optional, Tuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.poutine.runtime import effectful
from torch import nn

from ..distributions import ConcreteBernoulli, GatedNormal, SlabNormal
from ..errors import HyperparameterError
from ..fused import augmented_linear
from ..validation import check_finite_number, check_positive, check_probability

__all__ = [
    "LAYER_SLAB",
    "LayerSpec",
    "NetworkInfo",
    "LayerDraw",
    "scale_layout",
    "column_factors",
    "Prior",
    "PriorLayer",
    "BernoulliGates",
    "GaussianSlab",
    "SLAB_PARAMETERIZATIONS",
    "SpikeSlabBlock",
    "LogNormalScale",
    "IndicatorPrior",
    "emit_param",
    "cached_prior",
    "model_value",
    "event_view",
    "plate_aligned",
    "fan_in_rho",
]


# --------------------------------------------------------------------------------------
# Descriptions of a layer and of the network it sits in
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSpec:
    """What a prior needs to know about one parametric layer.

    :ivar str name: site-name prefix, e.g. ``"net.0"`` (the layer's path in the network).
    :ivar int index: position among the network's parametric layers (0 = first).
    :ivar str kind: ``"linear"`` or ``"conv2d"``.
    :ivar torch.Size weight_shape: ``(out_units, in_units)`` for linear layers,
        ``(out_channels, in_channels, kernel_height, kernel_width)`` for conv layers.
    :ivar bool has_bias: whether the layer has a bias of shape ``(out_units,)``.
    :ivar bool is_output: whether this is the network's last parametric layer.
    :ivar nn.Module module: the user's original layer (initial means, conv hyperparameters).
    :ivar in_shape: shape of one example's input to the layer, ``(in_features,)`` or
        ``(in_channels, height, width)`` (``None`` when not known).
    :ivar out_shape: shape of one example's output, ``(out_features,)`` or
        ``(out_channels, out_height, out_width)`` (``None`` when not known).
    """

    name: str
    index: int
    kind: str
    weight_shape: torch.Size
    has_bias: bool
    is_output: bool
    module: nn.Module
    in_shape: Optional[Tuple[int, ...]] = None
    out_shape: Optional[Tuple[int, ...]] = None

    @property
    def out_units(self) -> int:
        """Number of output nodes (linear) or channels (conv)."""
        return self.weight_shape[0]

    @property
    def in_units(self) -> int:
        """Number of input nodes (linear) or channels (conv)."""
        return self.weight_shape[1]

    @property
    def row_shape(self) -> Tuple[int, ...]:
        """Shape that broadcasts one value per output unit against the weight."""
        return (self.out_units,) + (1,) * (len(self.weight_shape) - 1)

    @property
    def column_shape(self) -> Tuple[int, ...]:
        """Shape that broadcasts one value per input unit against the weight."""
        return (1, self.in_units) + (1,) * (len(self.weight_shape) - 2)

    @property
    def fan_in(self) -> int:
        """Number of incoming weights of one output unit (``in_channels * kh * kw`` for conv)."""
        return math.prod(self.weight_shape[1:])

    @property
    def num_params(self) -> int:
        """Number of weights plus biases."""
        return math.prod(self.weight_shape) + (self.out_units if self.has_bias else 0)

    @property
    def out_positions(self) -> int:
        """Number of positions at which the layer's weights are applied per example:
        ``out_height * out_width`` for conv layers, 1 for linear layers."""
        return math.prod(self.out_shape[1:]) if self.out_shape is not None else 1

    @property
    def multiply_adds(self) -> int:
        """Multiply-adds of the layer per example: ``weights * out_positions`` (for a conv
        layer ``out_ch * H_out * W_out * in_ch * kh * kw``); biases not counted."""
        return math.prod(self.weight_shape) * self.out_positions

    @property
    def param_shape(self) -> Tuple[int, int]:
        """Shape ``(out_units, fan_in + has_bias)`` of the layer's *augmented* parameter
        matrix: row ``j`` holds the incoming weights of unit ``j`` followed by its bias."""
        return (self.out_units, self.fan_in + int(self.has_bias))

    def augment(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """Pack ``weight`` and ``bias`` into the augmented ``param_shape`` matrix."""
        rows = weight.reshape(self.out_units, self.fan_in)
        return torch.cat([rows, bias.reshape(-1, 1)], dim=1) if self.has_bias else rows

    def split(self, params: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Inverse of :meth:`augment`: ``(weight, bias)`` views of an augmented matrix
        (``bias`` is ``None`` without bias). A batch of matrices ``(*batch, *param_shape)``
        gives ``(*batch, *weight_shape)`` and ``(*batch, out_units)``."""
        weight = params[..., : self.fan_in].reshape(params.shape[:-2] + self.weight_shape)
        return weight, (params[..., self.fan_in] if self.has_bias else None)

    def apply(self, x, weight, bias):
        """The layer's deterministic operation with the given weight and bias.

        :param x: ``(batch, in_features)`` for linear layers, ``(batch, in_channels, H, W)``
            for conv layers.
        :param weight: of shape ``weight_shape``. :param bias: ``(out_units,)`` or ``None``.
        :returns: ``(batch, out_features)`` or ``(batch, out_channels, H_out, W_out)``.

        Every argument may carry leading *draw* dimensions, e.g. ``(draws, batch, in_features)``
        and ``(draws, *weight_shape)`` (one weight tensor per posterior draw, as in
        ``Predictive(parallel=True)``); they broadcast, and the result is
        ``(*draws, batch, ...)``.
        """
        plain_bias = bias is None or bias.dim() == 1
        if self.kind == "linear":
            if weight.dim() == 2 and plain_bias:
                return F.linear(x, weight, bias)
            out = torch.matmul(x, weight.transpose(-1, -2))
            return out if bias is None else out + bias.unsqueeze(-2)
        if self.kind == "conv2d":
            m = self.module
            if x.dim() == 4 and weight.dim() == 4 and plain_bias:
                return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, 1)
            return _batched_conv2d(x, weight, bias, m.stride, m.padding, m.dilation)
        raise NotImplementedError(f"layer kind {self.kind!r}")

    def apply_augmented(self, x, params, bias_scale=None):
        """:meth:`apply` with weight and bias read off the augmented matrix ``params`` of shape
        :attr:`param_shape` (a linear layer with bias multiplies by it directly, see
        :func:`~pyro_sparse_bnn.core.fused.augmented_linear`).

        :param bias_scale: optional scalar tensor multiplying the bias (``None``: 1), or one
            per draw, ``(*draws, 1)``, when ``params`` has leading draw dimensions.
        """
        if (self.kind == "linear" and self.has_bias and x.dim() == 2 and params.dim() == 2
                and (bias_scale is None or bias_scale.dim() == 0)):
            return augmented_linear(x, params, bias_scale)
        weight, bias = self.split(params)
        if bias is not None and bias_scale is not None:
            bias = bias * bias_scale
        return self.apply(x, weight, bias)

    def output_view(self, x) -> Tuple[int, ...]:
        """Shape that broadcasts one value per output unit against the layer's output for the
        input ``x``: ``(1, out_units)`` or ``(1, out_channels, 1, 1)``."""
        return (1, self.out_units) + (1,) * (x.dim() - 2)

    @property
    def unit_view(self) -> Tuple[int, ...]:
        """Shape that broadcasts one value per output unit against one batch of the layer's
        outputs: ``(1, out_units)`` (linear) or ``(1, out_channels, 1, 1)`` (conv)."""
        return (1, self.out_units) + (1,) * (len(self.weight_shape) - 2)

    def output_factor(self, scale: torch.Tensor) -> torch.Tensor:
        """A ``"rows"`` factor ``(*draws, out_units, 1)`` (see :func:`scale_layout`) as a
        factor of the layer's outputs, ``(*draws, *unit_view)``."""
        return scale.reshape(scale.shape[:-2] + self.unit_view)


@dataclass(frozen=True)
class NetworkInfo:
    """Network-level quantities that some priors use to set defaults.

    :ivar int num_weights: total number of weights and biases ``T``.
    :ivar int num_hidden_layers: number of hidden layers ``L``.
    :ivar int hidden_width: largest hidden width ``N_w``.
    :ivar int num_inputs: input dimension ``p``.
    :ivar num_data: training-set size ``n`` (``None`` when not known yet).
    """

    num_weights: int
    num_hidden_layers: int
    hidden_width: int
    num_inputs: int
    num_data: Optional[int]


@dataclass
class LayerDraw:
    """One draw of a layer's parameters in factored form.

    The augmented parameter matrix (see :attr:`LayerSpec.param_shape`) is
    ``scale * slab``: ``slab`` is the value of a Gaussian sample site of shape
    ``param_shape`` and ``scale`` (``None`` meaning 1) collects indicators and group scales,
    broadcastable against it.
    """

    slab: torch.Tensor
    scale: Optional[torch.Tensor] = None

    @property
    def params(self) -> torch.Tensor:
        """The augmented parameter matrix ``scale * slab``."""
        return self.slab if self.scale is None else self.scale * self.slab


def scale_layout(spec: LayerSpec, scale: Optional[torch.Tensor]) -> str:
    """How the factor ``scale`` of a :class:`LayerDraw` covers the augmented matrix:

    * ``"none"``: no factor (``None``);
    * ``"rows"``: one value per output unit (node indicators, group scales, conv channels),
      shape ``(out_units, 1)``;
    * ``"columns"``: one value per input unit of a linear layer and one for the bias column,
      shape ``(1, param_shape[1])``;
    * ``"full"``: anything else that broadcasts (e.g. one indicator per weight).

    A factor may carry leading draw dimensions (``(*draws, out_units, 1)`` is ``"rows"``).

    A factor that covers rows or columns can multiply the layer's outputs or inputs instead
    of the weight matrix, which saves work the size of the weights.
    """
    if scale is None:
        return "none"
    if scale.dim() < 2:
        return "full"
    if scale.shape[-1] == 1 and scale.shape[-2] == spec.out_units:
        return "rows"
    if spec.kind == "linear" and scale.shape[-2] == 1 and scale.shape[-1] == spec.param_shape[1]:
        return "columns"
    return "full"


def column_factors(spec: LayerSpec, scale: torch.Tensor):
    """Split a ``"columns"`` factor (see :func:`scale_layout`) into the factor of the inputs,
    ``(1, in_features)``, and the bias's (a scalar tensor, ``None`` without bias). A factor
    with leading draw dimensions ``(*draws, 1, fan_in + 1)`` gives ``(*draws, 1, in_features)``
    and ``(*draws, 1)``."""
    if scale.dim() == 2:
        return scale[:, : spec.fan_in], (scale[0, spec.fan_in] if spec.has_bias else None)
    return scale[..., : spec.fan_in], (scale[..., 0, spec.fan_in:] if spec.has_bias else None)


def _apply_layer(x, spec: LayerSpec, draw: LayerDraw):
    layout = scale_layout(spec, draw.scale)
    if layout == "rows":  # scale the outputs: (x @ slab^T) * s equals x @ (s * slab)^T
        return spec.apply_augmented(x, draw.slab) * spec.output_factor(draw.scale)
    if layout == "columns":  # scale the inputs instead of the weight columns
        inputs, bias_scale = column_factors(spec, draw.scale)
        return spec.apply_augmented(x * inputs, draw.slab, bias_scale)
    return spec.apply_augmented(x, draw.params)


#: The layer computation of the model, as a Pyro effect of type ``"sparse_layer"``: its
#: default forms the weight from the draw and applies the layer; an effect handler (local
#: reparameterisation) may compute the pre-activations differently from the same draw.
apply_layer = effectful(_apply_layer, type="sparse_layer")

#: ``infer`` flag of a guide slab site whose value enters the model only as ``draw.slab``
#: through :func:`apply_layer` (set by :meth:`GaussianSlab.guide_sample`); the local
#: reparameterisation handler may then skip drawing it.
LAYER_SLAB = "layer_slab"


# --------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------
def _batched_conv2d(x, weight, bias, stride, padding, dilation):
    """``F.conv2d`` where ``x`` ``(*draws, batch, C, H, W)`` and ``weight``
    ``(*draws, out, C, kh, kw)`` (and ``bias`` ``(*draws, out)``) carry leading draw
    dimensions that broadcast: one grouped convolution with a group per draw (or, for an
    input without draw dimensions, one convolution with the draws' filters stacked).

    :returns: ``(*draws, batch, out, H_out, W_out)``.
    """
    draws = torch.broadcast_shapes(x.shape[:-4], weight.shape[:-4], () if bias is None else bias.shape[:-1])
    k = math.prod(draws)
    out_channels = weight.shape[-4]
    weight = weight.expand(draws + weight.shape[-4:]).reshape((k * out_channels,) + weight.shape[-3:])
    if bias is not None:
        bias = bias.expand(draws + bias.shape[-1:]).reshape(-1)
    batch = x.shape[-4]
    if x.dim() == 4:  # the same input for every draw: stack the draws' filters
        y = F.conv2d(x, weight, bias, stride, padding, dilation, 1)
    else:  # (batch, draws * C, H, W) with one group per draw
        x = x.expand(draws + x.shape[-4:]).reshape((k,) + x.shape[-4:]).transpose(0, 1)
        y = F.conv2d(x.reshape((batch, -1) + x.shape[-2:]), weight, bias, stride, padding, dilation, k)
    y = y.reshape((batch, k, out_channels) + y.shape[-2:]).transpose(0, 1)
    return y.reshape(draws + y.shape[1:])


def model_value(value: torch.Tensor, event_dim: int) -> torch.Tensor:
    """The value of a model sample site outside the data plate, in the form the layers
    compute with: ``(*draws, *event_shape)``.

    In a plain run the value has the site's event shape and is returned as is (the same
    tensor). Under a vectorising plate -- ``Predictive(parallel=True)``, which puts one at
    dimension ``-2`` because the data plate (which these sites are outside of) takes ``-1``
    -- a value the model samples has the batch shape ``(draws, 1)``; the data plate's
    dimension of size 1 is dropped here, so that a value of ``(draws, *event_shape)`` (the
    shape in which ``Predictive`` passes a guide's draws of a site with event dimensions)
    and one of ``(draws, 1, *event_shape)`` give the same thing.
    """
    if value.dim() > event_dim and value.shape[value.dim() - event_dim - 1] == 1:
        return value.squeeze(value.dim() - event_dim - 1)
    return value


def event_view(value: torch.Tensor, event_dim: int, shape) -> torch.Tensor:
    """``value.view(shape)`` of a site value of ``event_dim`` event dimensions, keeping any
    leading draw dimensions: ``(*draws, *event_shape)`` becomes ``(*draws, *shape)``."""
    if value.dim() == event_dim:
        return value.view(shape)
    return value.reshape(value.shape[: value.dim() - event_dim] + tuple(shape))


def plate_aligned(value: torch.Tensor, event_dim: int) -> torch.Tensor:
    """A parameter computed from :func:`model_value` s, ``(*draws)`` or ``()``, made into a
    parameter of a model site with ``event_dim`` event dimensions whose batch shape lines up
    with the plates: ``(*draws, 1, 1 x event_dim)`` (``1`` for the data plate's dimension),
    or unchanged without draw dimensions."""
    if value.dim() == 0:
        return value
    return value.reshape(value.shape + (1,) * (1 + event_dim))


def emit_param(name: str, param: torch.Tensor) -> torch.Tensor:
    """Announce a module-owned parameter to Pyro and return an alias of it to compute with.

    Pyro's ``SVI`` finds the parameters to optimise through ``param`` messages. The
    parameters of this library live in ``nn.Module`` objects (never in Pyro's global param
    store, so two networks can never collide); this helper sends the message without
    touching the store, the way ``PyroModule`` does with ``module_local_params``.
    """
    alias = param.view_as(param)
    alias.unconstrained = weakref.ref(param)
    return _param_message(name, alias, constraint=dist.constraints.real, name=name)


def _given_value(name, value, **kwargs):
    return value


#: a ``param`` message whose default answer is the value it carries (built once: wrapping a
#: function with ``effectful`` at every call costs more than the message itself)
_param_message = effectful(_given_value, type="param")


def cached_prior(module: nn.Module, name: str, key: torch.Tensor, build):
    """Return the distribution ``build()`` made from ``module``'s fixed hyperparameter buffers,
    building it once per device, dtype and storage of the buffer ``key``.

    Model-side priors with fixed hyperparameters are the same object at every step; caching
    them (and building them with ``validate_args=False``: the hyperparameters were validated
    when the prior was created) removes most of the per-step Python cost of a model run.
    """
    cache = module.__dict__.setdefault("_prior_cache", {})
    stamp = (key.device, key.dtype, key.data_ptr())
    entry = cache.get(name)
    if entry is None or entry[0] != stamp:
        entry = cache[name] = (stamp, build())
    return entry[1]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = log(1 + exp(x)) = y`` for ``y > 0``: ``y + log(1 - exp(-y))``."""
    return y + math.log(-math.expm1(-y))


def fan_in_rho(spec: LayerSpec) -> float:
    """``rho`` with ``softplus(rho) = 1 / (2 sqrt(3 fan_in))``: half the standard deviation of
    PyTorch's default initialisation of the layer's weights (``U(-1/sqrt(fan_in),
    1/sqrt(fan_in))``), so that the guide starts every layer at the same signal-to-noise ratio
    of its initial weights (about 2). -3.0 for a fan-in of 30, -4.6 for 784.
    """
    sigma = 0.5 / math.sqrt(3 * spec.fan_in)
    return _inverse_softplus(sigma)


# --------------------------------------------------------------------------------------
# Reusable pieces of guides
# --------------------------------------------------------------------------------------
#: the parameterisations of :class:`GaussianSlab`'s standard deviation, with the name of the
#: parameter each one learns
SLAB_PARAMETERIZATIONS = {"softplus": "rho", "log_variance": "log_var"}

class BernoulliGates(nn.Module):
    """Bernoulli indicators with a binary Concrete guide.

    Model side ``Bernoulli(prior_probs)``; guide side
    ``ConcreteBernoulli(logits, temperature, hard)`` with ``gamma = sigmoid(logits)``
    initialised to ``init_probs``. The pair's KL is the closed-form Bernoulli KL.

    :param shape: shape of the indicator tensor (e.g. the weight shape for edge-level
        indicators, ``(out_units,)`` for node-level ones).
    :param prior_probs: prior inclusion probability ``lambda`` (float or tensor
        broadcastable to ``shape``).
    :param float init_probs: initial inclusion probability ``gamma``.
    """

    def __init__(self, shape, prior_probs, init_probs: float):
        super().__init__()
        self.shape = torch.Size(shape)
        self.logits = nn.Parameter(torch.full(self.shape, _logit(init_probs)))
        self.register_buffer("prior_probs", torch.as_tensor(prior_probs, dtype=torch.float32))

    @property
    def probs(self) -> torch.Tensor:
        """Posterior inclusion probabilities ``gamma`` (no gradient)."""
        return torch.sigmoid(self.logits.detach())

    def prior_dist(self):
        return cached_prior(self, "prior", self.prior_probs, lambda: dist.Bernoulli(
            probs=self.prior_probs, validate_args=False).expand(self.shape).to_event(len(self.shape)))

    def guide_dist(self, logits, temperature, hard: bool):
        return ConcreteBernoulli(logits, temperature, hard=hard, validate_args=False).to_event(
            len(self.shape)
        )


class GaussianSlab(nn.Module):
    """A Gaussian slab ``beta`` with prior ``Normal(0, prior_scale)``.

    Guide ``Normal(loc, sigma)``, or -- when gated by a spike-and-slab indicator --
    :class:`~pyro_sparse_bnn.core.distributions.GatedNormal`, whose KL is weighted by the gate's
    inclusion probability. The standard deviation ``sigma`` has one of two
    parameterisations (:data:`SLAB_PARAMETERIZATIONS`):

    * ``"softplus"``: ``sigma = softplus(rho)``, parameter ``rho``;
    * ``"log_variance"``: ``sigma = exp(log_var / 2)``, parameter ``log_var`` (the
      parameterisation of Kingma et al.'s and Louizos et al.'s variational-dropout code).

    Both describe the same family; they differ in how fast a gradient step moves the
    variance. Where ``sigma`` is small (``rho << 0``), ``softplus(rho) ~ exp(rho)``, so a step
    of ``d`` in ``rho`` changes ``log sigma^2`` by ``2 d`` against ``d`` for a step in
    ``log_var``: with Adam, whose steps have about the size of the learning rate whatever the
    gradient's scale, the log-variance parameterisation lets the variances move half as fast.

    With ``max_variance`` the guide's variances are bounded: ``sigma^2 <= max_variance``.
    Every guide run first projects the parameter onto that set (:meth:`project`, a clamp),
    so each optimiser step is followed by a projection before the next ELBO evaluation --
    projected gradient ascent on the ELBO over the bounded family -- and the readouts
    (:attr:`scale`) clamp too, so a value set by hand or loaded never exceeds the bound.

    :param torch.Tensor init_loc: initial posterior mean (its shape is the slab's shape).
    :param float prior_scale: prior standard deviation ``sigma_0``.
    :param float init_rho: initial value of the scale parameter (``rho``, or ``log sigma^2``
        with ``parameterization="log_variance"``).
    :param max_variance: upper bound on every posterior variance ``sigma^2`` (``None``:
        unbounded, the default).
    :param str parameterization: ``"softplus"`` (default) or ``"log_variance"``.
    :raises HyperparameterError: if ``max_variance`` is not ``None`` or positive and finite,
        or for an unknown ``parameterization``.
    """

    def __init__(self, init_loc: torch.Tensor, prior_scale: float, init_rho: float,
                 max_variance: Optional[float] = None, parameterization: str = "softplus"):
        super().__init__()
        if parameterization not in SLAB_PARAMETERIZATIONS:
            raise HyperparameterError(
                f"parameterization must be one of {', '.join(map(repr, SLAB_PARAMETERIZATIONS))}, "
                f"got {parameterization!r}"
            )
        self.parameterization = parameterization
        #: name of the scale parameter: ``"rho"`` or ``"log_var"``
        self.scale_name = SLAB_PARAMETERIZATIONS[parameterization]
        self.loc = nn.Parameter(init_loc.detach().clone())
        self.register_parameter(self.scale_name, nn.Parameter(torch.full_like(self.loc, init_rho)))
        self.register_buffer("prior_scale", torch.tensor(float(prior_scale)))
        #: the bound on the posterior variances (``None``: unbounded)
        self.max_variance = None if max_variance is None else check_positive("max_variance", max_variance)
        #: the largest scale parameter within the bound: ``softplus^-1(sqrt(max_variance))``
        #: or ``log(max_variance)`` (``None``: unbounded)
        self.max_scale_param = None
        if self.max_variance is not None:
            self.max_scale_param = (_inverse_softplus(math.sqrt(self.max_variance)) if parameterization == "softplus"
                                    else math.log(self.max_variance))
        self.project()

    @property
    def shape(self):
        return self.loc.shape

    @property
    def scale_param(self) -> nn.Parameter:
        """The scale parameter (``rho`` or ``log_var``)."""
        return getattr(self, self.scale_name)

    def scale_of(self, param: torch.Tensor) -> torch.Tensor:
        """The standard deviation ``sigma`` of a value of the scale parameter (differentiable)."""
        return F.softplus(param) if self.parameterization == "softplus" else torch.exp(0.5 * param)

    @property
    def scale(self) -> torch.Tensor:
        """Posterior standard deviation ``sigma``, at most ``sqrt(max_variance)`` (no gradient)."""
        scale = self.scale_of(self.scale_param.detach())
        return scale if self.max_variance is None else scale.clamp(max=math.sqrt(self.max_variance))

    @torch.no_grad()
    def project(self) -> None:
        """Clamp the scale parameter in place at :attr:`max_scale_param` (nothing to do
        without ``max_variance``)."""
        if self.max_scale_param is not None:
            self.scale_param.clamp_(max=self.max_scale_param)

    def prior_dist(self):
        return cached_prior(self, "prior", self.prior_scale, lambda: dist.Normal(
            torch.zeros_like(self.prior_scale), self.prior_scale, validate_args=False
        ).expand(self.shape).to_event(self.loc.dim()))

    def guide_dist(self, loc, scale_param, gate=None, gate_probs=None):
        # a log-variance parameter gives log sigma directly: the KL and the variance never take a log
        if self.parameterization == "log_variance":
            scale, log_scale = None, 0.5 * scale_param
        else:
            scale, log_scale = F.softplus(scale_param), None
        if gate is None:
            base = SlabNormal(loc, scale, log_scale=log_scale, validate_args=False)
        else:
            base = GatedNormal(loc, scale, gate, gate_probs, self.prior_scale, validate_args=False, log_scale=log_scale)
        return base.to_event(self.loc.dim())

    def guide_sample(self, layer: "PriorLayer", site: str, gate=None, gate_probs=None) -> torch.Tensor:
        """Sample the guide's slab site ``site`` of ``layer`` (announcing ``site_loc`` and
        ``site_rho`` or ``site_log_var``), flagged :data:`LAYER_SLAB`: the prior promises to
        use its value only as the slab of the layer's :class:`LayerDraw`."""
        self.project()
        loc = layer.param(site + "_loc", self.loc)
        scale_param = layer.param(f"{site}_{self.scale_name}", self.scale_param)
        return pyro.sample(layer.site(site), self.guide_dist(loc, scale_param, gate=gate, gate_probs=gate_probs),
                           infer={LAYER_SLAB: True})


class LogNormalScale(nn.Module):
    """A positive latent scale (or squared scale) with a ``LogNormal(loc, softplus(rho))`` guide.

    :param shape: shape of the latent (``()`` for a layer-wide scale, ``(out_units,)`` per node).
    :param float init_loc: initial ``loc`` (``exp(init_loc)`` is the initial median).
    :param float init_rho: initial ``rho``; the log-scale's standard deviation is ``softplus(rho)``.
    """

    def __init__(self, shape, init_loc: float, init_rho: float):
        super().__init__()
        self.loc = nn.Parameter(torch.full(tuple(shape), float(init_loc)))
        self.rho = nn.Parameter(torch.full(tuple(shape), float(init_rho)))

    @property
    def scale(self) -> torch.Tensor:
        """Standard deviation of the log of the latent (no gradient)."""
        return F.softplus(self.rho.detach())

    def guide_dist(self, loc, rho):
        return dist.LogNormal(loc, F.softplus(rho), validate_args=False).to_event(self.loc.dim())

    def guide_sample(self, layer: "PriorLayer", site: str) -> torch.Tensor:
        """Sample the guide site ``site`` of ``layer`` from its LogNormal."""
        loc = layer.param(site + "_loc", self.loc)
        rho = layer.param(site + "_rho", self.rho)
        return pyro.sample(layer.site(site), self.guide_dist(loc, rho))

    def log_moments(self):
        """``(mean, variance)`` of the log of the latent under the guide (no gradient)."""
        return self.loc.detach(), self.scale.square()


class SpikeSlabBlock(nn.Module):
    """Bernoulli indicators, each switching a group of entries of a Gaussian slab.

    The edge-level prior has one indicator per entry of the augmented parameter matrix;
    node-level priors have one indicator per row (unit). In the model the indicator site is
    ``Bernoulli(prior_probs)`` and the slab site ``Normal(0, prior_scale)``; in the guide the
    indicator is a :class:`~pyro_sparse_bnn.core.distributions.ConcreteBernoulli` and the slab a
    :class:`~pyro_sparse_bnn.core.distributions.GatedNormal`, so the KL of the block is
    ``sum KL_Bernoulli(gamma || lambda) + sum gamma * KL_slab``.

    :param str gate_site: site suffix of the indicators (e.g. ``"edge_indicator"``).
    :param gate_shape: shape of the indicator tensor; it is padded with trailing ones to
        broadcast against the slab (``(out_units,)`` switches whole rows).
    :param torch.Tensor init_loc: initial slab mean (its shape is the slab's shape).
    :param prior_probs: prior inclusion probability ``lambda``.
    :param float prior_scale: prior slab standard deviation ``sigma_0``.
    :param float init_probs: initial inclusion probability ``gamma``.
    :param float init_rho: initial slab ``rho`` (``sigma = softplus(rho)``).
    :param bool hard: straight-through hard indicators in the guide.
    :param str slab_site: site suffix of the slab.
    """

    def __init__(self, gate_site, gate_shape, init_loc, prior_probs, prior_scale, init_probs,
                 init_rho, hard=True, slab_site="slab"):
        super().__init__()
        self.gate_site, self.slab_site = gate_site, slab_site
        self.hard = hard
        self.gates = BernoulliGates(gate_shape, prior_probs, init_probs)
        self.slab = GaussianSlab(init_loc, prior_scale, init_rho)
        self.gate_view = tuple(gate_shape) + (1,) * (init_loc.dim() - len(gate_shape))

    def model(self, layer: "PriorLayer") -> "LayerDraw":
        """Sample the prior sites; return the draw ``slab`` scaled by the indicators."""
        gate = pyro.sample(layer.site(self.gate_site), self.gates.prior_dist())
        slab = pyro.sample(layer.site(self.slab_site), self.slab.prior_dist())
        event_dim = len(self.gates.shape)
        return LayerDraw(slab=model_value(slab, self.slab.loc.dim()),
                         scale=event_view(model_value(gate, event_dim), event_dim, self.gate_view))

    def guide(self, layer: "PriorLayer", temperature) -> None:
        """Sample the guide sites (same order as :meth:`model`)."""
        logits = layer.param(self.gate_site + "_logits", self.gates.logits)
        gate_dist = self.gates.guide_dist(logits, temperature, self.hard)
        gate = pyro.sample(layer.site(self.gate_site), gate_dist)
        gate_probs = gate_dist.base_dist.probs.view(self.gate_view)
        gate = event_view(gate, len(self.gates.shape), self.gate_view)
        self.slab.guide_sample(layer, self.slab_site, gate=gate, gate_probs=gate_probs)

    @property
    def probs(self) -> torch.Tensor:
        """Posterior inclusion probabilities of the indicators (no gradient)."""
        return self.gates.probs


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------
class Prior:
    """Hyperparameters of a sparsity prior; builds one :class:`PriorLayer` per layer.

    Subclasses validate their hyperparameters in ``__init__`` (raising
    :class:`~pyro_sparse_bnn.core.errors.HyperparameterError`) and implement :meth:`build`.
    """

    #: Keep-rule threshold used by ``compress`` and the summaries when none is given.
    threshold: float = 0.5

    def build(self, spec: LayerSpec, network: NetworkInfo) -> "PriorLayer":
        """Create the per-layer module for ``spec`` inside a network described by ``network``."""
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class IndicatorPrior(Prior):
    """Shared hyperparameters of the spike-and-slab priors (Bernoulli indicators with a
    binary Concrete guide and a Gaussian slab).

    :param float prior_scale: slab standard deviation ``sigma_0``.
    :param prior_inclusion: prior inclusion probability ``lambda`` in (0, 1), or ``None`` for
        the prior's default rule.
    :param float init_inclusion: initial ``gamma`` (0.99, the authors' initialisation).
    :param init_rho: initial ``rho`` of the slab and of any other scale in the layer's guide
        (``sigma = softplus(rho)``), or ``None`` (default) for :func:`fan_in_rho` of each
        layer (see :meth:`layer_init_rho`).
    :param bool hard: straight-through hard indicators (default) or soft relaxed ones.
    :param float threshold: PIP threshold of the median-probability model (0.5).
    """

    def __init__(self, prior_scale, prior_inclusion, init_inclusion, init_rho, hard, threshold):
        self.prior_scale = check_positive("prior_scale", prior_scale)
        self.prior_inclusion = (
            None if prior_inclusion is None else check_probability("prior_inclusion", prior_inclusion)
        )
        self.init_inclusion = check_probability("init_inclusion", init_inclusion)
        self.init_rho = None if init_rho is None else check_finite_number("init_rho", init_rho)
        self.hard = bool(hard)
        self.threshold = check_probability("threshold", threshold)

    #: constructor arguments of the authors' setting where it differs from the defaults
    published_arguments: dict = {"init_rho": -6.0}

    @classmethod
    def published(cls, **arguments) -> "IndicatorPrior":
        """The prior at its paper's published settings (:attr:`published_arguments`: the
        authors' slab initialisation ``rho = -6`` and, for :class:`SpikeSlab`, the
        theory-driven ``lambda``); ``arguments`` override them or set the others."""
        return cls(**{**cls.published_arguments, **arguments})

    def resolve_prior_inclusion(self, spec: LayerSpec, network: NetworkInfo) -> float:
        """``lambda`` for the layer ``spec``: the given value or the prior's default rule."""
        raise NotImplementedError

    def layer_init_rho(self, spec: LayerSpec) -> float:
        """Initial ``rho`` of the guide's scales in layer ``spec``: the given ``init_rho``, or
        by default :func:`fan_in_rho` (``sigma = 1 / (2 sqrt(3 fan_in))``).

        Why not the authors' -6 (``sigma = 0.0025``): the slab KL of a weight starts at about
        ``log(sigma_0 / sigma)``, 6 nats at ``sigma = 0.0025``, and every indicator is pushed
        down by the KL of what it switches on. On a data set of a few hundred or thousand
        examples that is many times the log-likelihood the whole network can gain, and Adam
        moves ``rho`` and the logits by about one learning rate per step, so the indicators
        fall before the slab scales have grown to what the data allow: a short fit ends with
        every node switched off (measured on scikit-learn's breast cancer and digits data).
        Starting from half the spread of the default initial weights (``rho`` -3 to -4.6 for
        fan-ins of 30 to 784) the KL is about half as large and the network still starts
        close to its initial weights. On a large data set the data quickly shrink the scales
        of the weights they determine, so the start matters less; ``init_rho=-6`` is the
        published initialisation.
        """
        return fan_in_rho(spec) if self.init_rho is None else self.init_rho

    def block_arguments(self, prior_inclusion: float, spec: LayerSpec) -> dict:
        """Keyword arguments of :class:`SpikeSlabBlock` for these hyperparameters in layer ``spec``."""
        return dict(
            prior_probs=prior_inclusion, prior_scale=self.prior_scale,
            init_probs=self.init_inclusion, init_rho=self.layer_init_rho(spec), hard=self.hard,
        )


class PriorLayer(nn.Module):
    """One layer's prior (model side) and guide, with readouts of the fitted guide.

    Subclasses implement :meth:`model`, :meth:`guide`, :meth:`inclusion_groups`,
    :meth:`keep_masks` and :meth:`posterior_mean`; :meth:`output_inclusion_probs` is
    optional (node-level priors).

    For a conv layer a *unit* is a channel: output unit ``j`` is output channel ``j`` (row
    ``j`` of the augmented matrix: its ``in_channels * kh * kw`` weights and its bias), input
    unit ``i`` is input channel ``i``.
    """

    def __init__(self, spec: LayerSpec, threshold: float):
        super().__init__()
        self.spec = spec
        self.default_threshold = threshold

    # -- sample sites ------------------------------------------------------------------
    def site(self, kind: str) -> str:
        """Full name of this layer's site or parameter ``kind`` (e.g. ``net.0.weight_slab``)."""
        return f"{self.spec.name}.{kind}"

    def param(self, kind: str, tensor: torch.Tensor) -> torch.Tensor:
        """Announce parameter ``tensor`` to Pyro under :meth:`site` ``(kind)`` (see :func:`emit_param`)."""
        return emit_param(self.site(kind), tensor)

    def model(self) -> LayerDraw:
        """Sample this layer's prior sites (``pyro.sample``) and return the weight factors."""
        raise NotImplementedError

    def guide(self, temperature: torch.Tensor) -> None:
        """Sample this layer's guide sites, in the same order as :meth:`model`.

        :param torch.Tensor temperature: scalar relaxation temperature of the indicators.
        """
        raise NotImplementedError

    def indicator_parameters(self) -> List[nn.Parameter]:
        """The logits of the layer's Bernoulli indicators: the ``logits`` of every
        :class:`BernoulliGates` among its submodules, in module order; empty for priors
        without indicators. :func:`~pyro_sparse_bnn.core.fit.fit` gives them their own
        learning rate (``logit_lr``) and holds them during ``indicator_warmup``; a prior that
        keeps indicator logits outside a ``BernoulliGates`` overrides this."""
        return [module.logits for module in self.modules() if isinstance(module, BernoulliGates)]

    # -- readouts of the fitted guide ---------------------------------------------------
    def inclusion_groups(self) -> torch.Tensor:
        """Inclusion probabilities of the layer's *independent* switches of its weights, in a
        shape that broadcasts against ``weight_shape`` and says what each switch covers:
        ``weight_shape`` (one per weight, edge level), :attr:`LayerSpec.row_shape` (one per
        output unit) or :attr:`LayerSpec.column_shape` (one per input unit). A weight is
        active iff its switch is on. :mod:`pyro_sparse_bnn.analysis.inclusion` reads node and feature
        PIPs off this (a unit is used iff at least one switch covering its outgoing weights
        is on)."""
        raise NotImplementedError

    def edge_inclusion_probs(self) -> torch.Tensor:
        """Probability that each weight is non-zero under the guide; shape ``weight_shape``."""
        return self.inclusion_groups().expand(self.spec.weight_shape)

    def output_inclusion_probs(self) -> Optional[torch.Tensor]:
        """Probability that each output unit's incoming group is switched on, shape
        ``(out_units,)``; ``None`` for priors without node indicators."""
        return None

    def input_inclusion_probs(self) -> Optional[torch.Tensor]:
        """Probability that each input unit's outgoing group is switched on, shape
        ``(in_units,)``; ``None`` for priors whose groups are not input units."""
        return None

    def weight_moments(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of every entry of the augmented parameter matrix
        ``(out_units, fan_in + 1)`` given that it is kept (no gradient)."""
        raise NotImplementedError(f"{type(self).__name__} has no weight moments")

    def keep_masks(self, threshold: Optional[float] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Boolean masks ``(weight_mask, bias_mask)`` of the median-probability model
        (weights kept under the prior's keep rule at ``threshold``)."""
        raise NotImplementedError

    def posterior_mean(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Posterior means ``(weight, bias)`` of the weights given that they are kept."""
        raise NotImplementedError

    def extra_repr(self):
        return f"name={self.spec.name!r}, weight_shape={tuple(self.spec.weight_shape)}"
