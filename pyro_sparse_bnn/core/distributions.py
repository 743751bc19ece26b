"""Distributions and closed-form KL divergences shared by every prior.

Two guide-side distributions carry the spike-and-slab machinery:

* :class:`ConcreteBernoulli` -- the binary Concrete (Gumbel-sigmoid) relaxation of a
  Bernoulli indicator, hard straight-through by default. Its KL against a model-side
  ``Bernoulli`` is the closed-form Bernoulli KL, so the relaxation is only the gradient
  estimator: the objective is the discrete one.
* :class:`GatedNormal` -- the slab of a spike-and-slab group in non-centred form. Where the
  group's indicator is on, it is ``Normal(loc, scale)``; where it is off, it equals the
  prior ``Normal(0, prior_scale)`` (so switched-off weights add no KL). Its KL against the
  prior is the Rao-Blackwellised expectation over the indicator,
  ``gate_probs * KL(Normal(loc, scale) || prior)``.

Both KLs are registered with :func:`torch.distributions.kl.register_kl`, so Pyro's
``TraceMeanField_ELBO`` and :class:`pyro_sparse_bnn.core.elbo.MeanFieldELBO` use them instead of
Monte Carlo estimates.
"""

import math
from numbers import Number

import torch
import torch.nn.functional as F
from pyro.distributions import Independent, TorchDistribution, constraints
from pyro.distributions import Normal as PyroNormal
from pyro.distributions.kl import _kl_independent_independent
from torch.distributions import Bernoulli, Gamma, InverseGamma, LogNormal, Normal, register_kl
from torch.distributions import Independent as TorchIndependent
from torch.distributions.utils import broadcast_all, lazy_property

__all__ = [
    "ConcreteBernoulli",
    "GatedNormal",
    "SlabNormal",
    "SlabBlock",
    "slab_kl",
    "bernoulli_kl",
    "normal_kl",
    "lognormal_gamma_kl",
    "lognormal_inverse_gamma_kl",
    "LogUniformScale",
    "log_uniform_kl",
    "dropout_log_alpha",
]


def _broadcast_shape(*tensors) -> torch.Size:
    """Broadcast shape of tensors, in plain Python (``torch.broadcast_shapes`` costs tens of
    microseconds a call, and distributions are built at every step).

    :raises ValueError: if the shapes do not broadcast.
    """
    shapes = {t.shape for t in tensors if t.dim()}
    if len(shapes) <= 1:
        return next(iter(shapes), torch.Size())
    ndim = max(len(shape) for shape in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                if out[i] != 1 and out[i] != size:
                    raise ValueError(f"shapes {sorted(map(tuple, shapes))} do not broadcast")
                out[i] = size
    return torch.Size(out)


def _compact(t: torch.Tensor) -> torch.Tensor:
    """Undo ``expand``: a view of ``t`` with its stride-0 (broadcast) dimensions cut to size 1,
    so elementwise work on a prior's expanded scalar parameters is done once, not per weight."""
    if t.dim() and 0 in t.stride():
        return t[tuple(slice(0, 1) if st == 0 else slice(None) for st in t.stride())]
    return t


def bernoulli_kl(logits, prior_probs, probs=None):
    """KL(Bernoulli(sigmoid(logits)) || Bernoulli(prior_probs)), elementwise.

    ``gamma log(gamma / lambda) + (1 - gamma) log((1 - gamma) / (1 - lambda))``, evaluated
    as ``gamma (theta - logit(lambda)) - softplus(theta) - log(1 - lambda)`` with
    ``theta = logits``; finite for any finite ``theta``.

    :param torch.Tensor logits: posterior logits ``theta``, any shape.
    :param prior_probs: prior inclusion probability ``lambda`` in (0, 1), broadcastable.
    :param probs: ``sigmoid(logits)`` if already computed.
    :returns: tensor of the broadcast shape.
    """
    probs = torch.sigmoid(logits) if probs is None else probs
    prior = prior_probs if isinstance(prior_probs, float) else _python_scalar(torch.as_tensor(prior_probs, device=logits.device))
    if prior is not None and 0 < prior < 1:  # one lambda (a layer's): its logs in plain Python
        return probs * (logits - (math.log(prior) - math.log1p(-prior))) - F.softplus(logits) - math.log1p(-prior)
    prior_probs = _compact(torch.as_tensor(prior_probs, dtype=logits.dtype, device=logits.device))
    prior_logit = torch.log(prior_probs) - torch.log1p(-prior_probs)
    return probs * (logits - prior_logit) - F.softplus(logits) - torch.log1p(-prior_probs)


def normal_kl(loc, scale, prior_loc, prior_scale):
    """KL(Normal(loc, scale) || Normal(prior_loc, prior_scale)), elementwise.

    ``log(s0 / s) + (s^2 + (mu - mu0)^2) / (2 s0^2) - 1/2``. All arguments broadcast.
    """
    prior_loc, prior_scale = (_compact(torch.as_tensor(p, device=loc.device)) for p in (prior_loc, prior_scale))
    centred = loc if prior_loc.eq(0).all() else loc - prior_loc
    return (
        (scale.square() + centred.square()) / (2 * prior_scale.square())
        - torch.log(scale)
        + (torch.log(prior_scale) - 0.5)
    )


_HALF_LOG_2PI_E = 0.5 * (1.0 + math.log(2 * math.pi))


def lognormal_gamma_kl(loc, scale, concentration, rate):
    """KL(LogNormal(loc, scale^2) || Gamma(concentration, rate)), elementwise.

    With ``x = exp(y)``, ``y ~ N(mu, s^2)``: ``E[log x] = mu`` and ``E[x] = exp(mu + s^2 / 2)``, so
    ``KL = -a mu - a log b + lgamma(a) + b exp(mu + s^2/2) - log s - (1 + log 2 pi) / 2``.
    The expression is linear in ``log b`` and ``b``: with a random rate, replacing them by
    their expectations gives the expected KL.
    """
    concentration, rate = (_compact(torch.as_tensor(p, device=loc.device)) for p in (concentration, rate))
    return (
        rate * torch.exp(loc + 0.5 * scale.square())
        - concentration * (loc + torch.log(rate))
        + torch.lgamma(concentration)
        - torch.log(scale)
        - _HALF_LOG_2PI_E
    )


def lognormal_inverse_gamma_kl(loc, scale, concentration, rate):
    """KL(LogNormal(loc, scale^2) || InverseGamma(concentration, rate)), elementwise.

    ``KL = a mu - a log b + lgamma(a) + b exp(s^2/2 - mu) - log s - (1 + log 2 pi) / 2``
    (``E[1/x] = exp(s^2/2 - mu)``).
    """
    concentration, rate = (_compact(torch.as_tensor(p, device=loc.device)) for p in (concentration, rate))
    return (
        rate * torch.exp(0.5 * scale.square() - loc)
        + concentration * (loc - torch.log(rate))
        + torch.lgamma(concentration)
        - torch.log(scale)
        - _HALF_LOG_2PI_E
    )


#: constants of Molchanov, Ashukha & Vetrov's (2017) approximation of the log-uniform KL
MOLCHANOV_K1, MOLCHANOV_K2, MOLCHANOV_K3 = 0.63576, 1.87320, 1.48695

#: added to ``mu^2`` in ``log alpha = log sigma^2 - log(mu^2 + eps)`` (Louizos et al.'s code):
#: a pruned group's mean goes to 0, where ``log mu^2`` and its gradient ``2 / mu`` blow up
LOG_ALPHA_EPS = 1e-8


def dropout_log_alpha(loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Log dropout rate ``log alpha = log sigma^2 - log(mu^2 + eps)`` of ``N(mu, sigma^2)``,
    finite with a finite gradient at ``mu = 0`` (see :data:`LOG_ALPHA_EPS`)."""
    return log_var - torch.log(loc.square() + LOG_ALPHA_EPS)


def log_uniform_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, alpha mu^2) || p(z) ~ 1/|z|)``, elementwise, by Molchanov et al.'s approximation.

    The log-uniform prior is improper, so the KL is defined up to a constant; the
    approximation fixes it so that the KL tends to 0 as ``alpha -> infinity``::

        -KL = k1 sigmoid(k2 + k3 log_alpha) - softplus(-log_alpha) / 2 - k1

    It depends on ``q`` only through the dropout rate ``alpha = sigma^2 / mu^2``.
    """
    return (
        MOLCHANOV_K1
        - MOLCHANOV_K1 * torch.sigmoid(MOLCHANOV_K2 + MOLCHANOV_K3 * log_alpha)
        + 0.5 * F.softplus(-log_alpha)
    )


class LogUniformScale(TorchDistribution):
    """The improper log-uniform (normal-Jeffreys) prior ``p(z) ~ 1/|z|`` on the real line.

    It only serves as the model side of a KL against a ``Normal`` guide
    (:func:`log_uniform_kl`, registered with :func:`torch.distributions.kl.register_kl`);
    ``log_prob`` is ``-log|z|`` (unnormalised) and there is nothing to draw from: a
    ``pyro.sample`` site of it that is not given a value (a prior predictive) raises.

    ``sample()`` returns a placeholder, ``z = 1`` everywhere, not a draw: it is what Pyro's
    ``init_to_sample`` asks for when it only needs a value of the right shape --
    ``Predictive(model, guide=guide)`` runs the model once that way to find the shapes of
    its sites before it runs it on the guide's draws. A ``pyro.sample`` site draws with
    ``rsample`` (the distribution says it has one, also through ``to_event``), which raises.

    :param torch.Size shape: batch shape (e.g. ``(num_groups,)``).
    """

    arg_constraints = {}
    support = constraints.real
    #: so that drawing a value at a ``pyro.sample`` site goes to :meth:`rsample`, which raises
    has_rsample = True

    def __init__(self, shape=(), validate_args=False):
        super().__init__(torch.Size(shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return LogUniformScale(batch_shape)

    def log_prob(self, value):
        return -torch.log(value.abs())

    def sample(self, sample_shape=()):
        """A placeholder of ones of the sample's shape (see the class docstring), not a draw."""
        return torch.ones(self._extended_shape(sample_shape))

    def rsample(self, sample_shape=()):
        raise NotImplementedError(
            "the log-uniform prior is improper and cannot be sampled; draw the scales from the guide "
            "(e.g. Predictive(model, guide=guide)) instead"
        )


class ConcreteBernoulli(TorchDistribution):
    r"""Binary Concrete relaxation of ``Bernoulli(sigmoid(logits))``.

    A draw is ``sigmoid((logits + log u - log(1 - u)) / temperature)`` with ``u ~ U(0, 1)``
    clamped away from 0 and 1 (so the logistic noise is finite). With ``hard=True`` (the
    published default) the forward value is the indicator ``1[draw > 0.5]`` while the
    gradient flows through the relaxed draw (straight-through estimator); with
    ``hard=False`` the relaxed value in (0, 1) is returned.

    ``log_prob`` is the Bernoulli log-mass of the hard value (``hard=True``) or the binary
    Concrete density evaluated in logit space with clamped values (``hard=False``); neither
    is ever infinite for values in [0, 1].

    :param torch.Tensor logits: indicator logits ``theta``; ``batch_shape`` is their shape.
    :param temperature: relaxation temperature ``tau > 0`` (tensor or float, broadcastable;
        pass a tensor to anneal it in place without rebuilding the distribution).
    :param bool hard: straight-through hard indicators (default) or soft relaxed values.
    """

    arg_constraints = {"logits": constraints.real, "temperature": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits, temperature, hard=True, validate_args=None):
        if isinstance(temperature, Number):
            temperature = torch.tensor(float(temperature), dtype=logits.dtype, device=logits.device)
        self.logits = logits
        self.temperature = temperature
        self.hard = bool(hard)
        super().__init__(_broadcast_shape(logits, temperature), validate_args=validate_args)

    @lazy_property
    def probs(self):
        """Inclusion probability ``gamma = sigmoid(logits)`` (computed once per instance)."""
        return torch.sigmoid(self.logits)

    @property
    def mean(self):
        return self.probs.expand(self.batch_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ConcreteBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        new.temperature = self.temperature
        new.hard = self.hard
        super(ConcreteBernoulli, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        eps = torch.finfo(self.logits.dtype).eps
        uniform = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        noisy_logits = self.logits + torch.logit(uniform, eps=eps)
        soft = torch.sigmoid(noisy_logits / self.temperature)
        if not self.hard:
            return soft
        hard = (noisy_logits > 0).to(soft.dtype)
        return hard + (soft - soft.detach())

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        if self.hard:
            return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        eps = torch.finfo(value.dtype).eps
        value = value.clamp(eps, 1 - eps)
        logit_value = torch.logit(value)
        diff = logits - logit_value * self.temperature
        log_density_of_logit = torch.log(self.temperature) + diff - 2 * F.softplus(diff)
        return log_density_of_logit - torch.log(value) - torch.log1p(-value)


class _SlabScales:
    """Standard deviation, its log and the variance of a Gaussian slab, from whichever of
    ``scale`` and ``log_scale`` the guide computed: the others are derived when first needed
    and kept, so the layer computation and the KL share them and a log-scale
    parameterisation never needs a ``log``."""

    def _set_scales(self, scale, log_scale):
        if scale is None and log_scale is None:
            raise ValueError("a slab needs scale or log_scale")
        if scale is not None:
            self.__dict__["scale"] = scale
        if log_scale is not None:
            self.__dict__["log_scale"] = log_scale
        return scale if scale is not None else log_scale

    @lazy_property
    def scale(self):
        """Standard deviation ``sigma``."""
        return torch.exp(self.log_scale)

    @lazy_property
    def log_scale(self):
        """``log sigma``."""
        return torch.log(self.scale)

    @lazy_property
    def scale_sq(self):
        """Variance ``sigma^2`` of the slab (``exp(2 log sigma)`` unless ``sigma`` exists already)."""
        if "scale" in self.__dict__:
            return self.scale.square()
        return torch.exp(2 * self.log_scale)

    def to_event(self, reinterpreted_batch_ndims=None):
        """As ``TorchDistribution.to_event``, but the result is a :class:`SlabBlock`, whose KL
        against a ``Normal(0, s0)`` prior block is computed without a per-entry tensor."""
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        return SlabBlock(self, reinterpreted_batch_ndims)


class SlabBlock(Independent):
    """``Independent`` over a :class:`GatedNormal` or :class:`SlabNormal`: the same
    distribution, whose KL against ``Normal(0, s0).expand(shape).to_event(n)`` is computed
    by :func:`slab_kl` (row sums, no per-entry tensor) when the block covers a whole 2-D slab
    whose gate probabilities are one per row or absent."""


class SlabNormal(_SlabScales, PyroNormal):
    """``Normal(loc, scale)`` given by ``scale`` or by ``log_scale`` (see :class:`_SlabScales`):
    the guide of an ungated Gaussian slab. ``to_event`` gives a :class:`SlabBlock`.

    :param torch.Tensor loc: mean.
    :param scale: standard deviation (or ``None`` with ``log_scale``).
    :param log_scale: ``log`` of the standard deviation (or ``None`` with ``scale``).
    """

    def __init__(self, loc, scale=None, log_scale=None, validate_args=None):
        spread = self._set_scales(scale, log_scale)
        self.loc = loc
        TorchDistribution.__init__(self, _broadcast_shape(loc, spread), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SlabNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new


class GatedNormal(_SlabScales, TorchDistribution):
    r"""Slab of a non-centred spike-and-slab group: ``Normal(loc, scale)`` where the gate is
    on, the prior ``Normal(0, prior_scale)`` where it is off.

    In a spike-and-slab layer the weight is ``w = z * beta``. The guide factorises as
    ``q(z) q(beta | z)`` with ``q(beta | z=1) = Normal(loc, scale)`` and
    ``q(beta | z=0) = p(beta) = Normal(0, prior_scale)``: when the indicator is off the
    weight is exactly zero and its slab variable sits on the prior in guide and model alike.
    Hence the KL of the pair is ``gamma * KL(Normal(loc, scale) || p(beta))`` -- the
    inclusion-weighted slab KL of Bai et al. (2020) -- which is what the registered KL
    returns (using ``gate_probs = gamma``, not the sampled gate, to avoid Monte Carlo noise).

    Where the gate is off, ``log_prob`` is the prior density, so ``log q - log p`` is exactly
    zero there whatever the value: the value of an off entry never enters any estimator.
    ``rsample`` therefore draws every entry from ``Normal(loc, scale)``, so that the
    straight-through gradient of a switched-off indicator sees the weight it would switch
    on (as in Bai et al.'s estimator) rather than prior noise.

    :param torch.Tensor loc: slab mean ``mu``.
    :param torch.Tensor scale: slab standard deviation ``sigma > 0`` (or ``None`` with
        ``log_scale``).
    :param torch.Tensor gate: sampled indicator value (0/1 or relaxed in (0, 1)),
        broadcastable to ``loc``; the gate counts as on where it exceeds 0.5.
    :param torch.Tensor gate_probs: inclusion probabilities ``gamma`` of the gate,
        broadcastable to ``loc``.
    :param prior_scale: the prior slab standard deviation ``sigma_0`` (the model site must be
        ``Normal(0, prior_scale)`` for the KL to be exact).
    :param log_scale: ``log sigma``, for a guide that parameterises it directly (the
        standard deviation is then ``exp(log_scale)``, computed only if needed).

    ``to_event`` gives a :class:`SlabBlock`, whose KL is summed without a per-entry tensor.
    """

    arg_constraints = {
        "loc": constraints.real,
        "scale": constraints.positive,
        "gate_probs": constraints.unit_interval,
        "prior_scale": constraints.positive,
    }
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, gate, gate_probs, prior_scale, validate_args=None, log_scale=None):
        if isinstance(prior_scale, Number):
            prior_scale = torch.tensor(float(prior_scale), dtype=loc.dtype, device=loc.device)
        spread = self._set_scales(scale, log_scale)
        self.loc = loc
        self.gate, self.gate_probs, self.prior_scale = gate, gate_probs, prior_scale
        super().__init__(_broadcast_shape(loc, spread, gate, gate_probs), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GatedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.gate = self.gate.expand(batch_shape)
        new.gate_probs = self.gate_probs.expand(batch_shape)
        new.prior_scale = self.prior_scale
        super(GatedNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _is_on(self):
        return self.gate.detach() > 0.5

    @property
    def mean(self):
        return torch.where(self._is_on(), self.loc, torch.zeros_like(self.loc)).expand(
            self.batch_shape
        )

    @property
    def variance(self):
        return torch.where(self._is_on(), self.scale**2, self.prior_scale**2).expand(
            self.batch_shape
        )

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * noise

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        slab = -((value - self.loc) ** 2) / (2 * self.scale**2) - torch.log(self.scale)
        prior = -(value**2) / (2 * self.prior_scale**2) - torch.log(self.prior_scale)
        return torch.where(self._is_on(), slab, prior) - 0.5 * math.log(2 * math.pi)


@register_kl(ConcreteBernoulli, Bernoulli)
def _kl_concrete_bernoulli(p, q):
    return bernoulli_kl(p.logits, q.probs, probs=p.probs).expand(p.batch_shape)


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return grad if grad.shape == shape else grad.sum_to_size(shape)


class _GatedNormalKL(torch.autograd.Function):
    """``gate_probs * KL(Normal(loc, scale) || Normal(0, sqrt(prior_var)))`` elementwise,
    with the gradients written out: the slab KL is the largest elementwise computation of a
    step (one term per weight), and autograd would record a dozen weight-sized operations
    for what takes four here::

        d/d loc   = gamma * loc / s0^2
        d/d scale = gamma * (scale / s0^2 - 1 / scale)
        d/d gamma = KL
    """

    @staticmethod
    def forward(ctx, loc, scale, gate_probs, prior_var: float):
        kl = torch.addcmul(scale * scale, loc, loc).mul_(0.5 / prior_var)
        kl.sub_(torch.log(scale)).add_(0.5 * math.log(prior_var) - 0.5)
        ctx.save_for_backward(loc, scale, gate_probs, kl)
        ctx.prior_var = prior_var
        return gate_probs * kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        loc, scale, gate_probs, kl = ctx.saved_tensors
        weighted = grad * gate_probs
        grad_loc = grad_scale = grad_gate = None
        if ctx.needs_input_grad[0]:
            grad_loc = _sum_to((weighted * loc).mul_(1.0 / ctx.prior_var), loc.shape)
        if ctx.needs_input_grad[1]:
            grad_scale = _sum_to(
                (scale * (1.0 / ctx.prior_var)).sub_(scale.reciprocal()).mul_(weighted), scale.shape
            )
        if ctx.needs_input_grad[2]:
            grad_gate = _sum_to(grad * kl, gate_probs.shape)
        return grad_loc, grad_scale, grad_gate, None


def _python_scalar(t: torch.Tensor):
    """The value of a tensor that holds one number (possibly expanded), else ``None``."""
    t = _compact(t)
    return t.item() if t.numel() == 1 else None


@register_kl(GatedNormal, Normal)
def _kl_gated_normal_normal(p, q):
    prior_loc, prior_scale = _python_scalar(q.loc), _python_scalar(q.scale)
    if prior_loc == 0 and prior_scale is not None:  # the slab prior N(0, s0^2) of every prior here
        return _GatedNormalKL.apply(p.loc, p.scale, p.gate_probs, prior_scale**2).expand(p.batch_shape)
    return p.gate_probs * normal_kl(p.loc, p.scale, q.loc, q.scale)


class _RowSlabKL(torch.autograd.Function):
    """``sum_r w_r sum_j KL(N(mu_rj, sigma_rj^2) || N(0, v0))`` of a 2-D slab from row sums:
    ``KL_r = (sum_j sigma^2 + sum_j mu^2) / (2 v0) - sum_j log sigma + m (log v0 - 1) / 2``
    for rows of ``m`` entries. The forward pass only reads the slab (three reductions); the
    gradients with respect to ``sigma^2`` and ``log sigma`` are one value per row."""

    @staticmethod
    def forward(ctx, loc, spread, log_scale, weights, prior_var: float, spread_is_variance: bool):
        m = loc.shape[-1]
        loc_sq = torch.linalg.vector_norm(loc, dim=-1).square()
        if spread_is_variance:
            var_sum = spread.sum(-1)
            log_sum = 0.5 * torch.log(spread).sum(-1) if log_scale is None else log_scale.sum(-1)
        else:
            var_sum = torch.linalg.vector_norm(spread, dim=-1).square()
            log_sum = torch.log(spread).sum(-1) if log_scale is None else log_scale.sum(-1)
        rows = (var_sum + loc_sq) * (0.5 / prior_var) - log_sum + m * (0.5 * math.log(prior_var) - 0.5)
        w = None if weights is None else weights.reshape(rows.shape)
        ctx.save_for_backward(loc, spread, log_scale, w, rows)
        ctx.shape = None if weights is None else weights.shape
        ctx.prior_var, ctx.spread_is_variance = prior_var, spread_is_variance
        return rows.sum() if w is None else torch.dot(w, rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        loc, spread, log_scale, w, rows = ctx.saved_tensors
        pv = ctx.prior_var
        per_row = grad.expand(rows.shape) if w is None else grad * w  # (rows,)
        col = per_row.unsqueeze(-1)
        grad_loc = grad_spread = grad_log = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_loc = loc * (col * (1.0 / pv))
        if ctx.needs_input_grad[1]:
            if ctx.spread_is_variance:
                grad_spread = (col * (0.5 / pv)).expand(spread.shape)
                if log_scale is None:
                    grad_spread = grad_spread - (0.5 * col) / spread
            else:
                grad_spread = spread * (col * (1.0 / pv))
                if log_scale is None:
                    grad_spread = grad_spread - col / spread
        if ctx.needs_input_grad[2]:
            grad_log = (-col).expand(log_scale.shape)
        if ctx.needs_input_grad[3]:
            grad_w = (grad * rows).reshape(ctx.shape)
        return grad_loc, grad_spread, grad_log, grad_w, None, None


def slab_kl(slab, prior_var: float) -> torch.Tensor:
    """Summed KL of a 2-D Gaussian slab against ``N(0, prior_var)`` per entry, each row
    weighted by its gate probability (a :class:`GatedNormal` with one gate per row) or not
    (a :class:`SlabNormal`): the value of ``kl_divergence`` summed over the slab, computed by
    :class:`_RowSlabKL` from the slab's variance (when the layer computed it) or its scale,
    and its ``log_scale`` (when the guide parameterises it).

    :returns: a scalar tensor.
    """
    weights = getattr(slab, "gate_probs", None)
    if weights is not None:
        weights = _compact(weights).reshape(-1)
    has_var = "scale_sq" in slab.__dict__ or "scale" not in slab.__dict__
    spread = slab.scale_sq if has_var else slab.scale
    log_scale = slab.__dict__.get("log_scale")
    return _RowSlabKL.apply(slab.loc, spread, log_scale, weights, prior_var, has_var)


def _row_weights(slab) -> bool:
    """Whether ``slab``'s gate probabilities (if any) are one per row of a 2-D slab."""
    if slab.loc.dim() != 2 or slab.batch_shape != slab.loc.shape:
        return False
    weights = getattr(slab, "gate_probs", None)
    if weights is None:
        return isinstance(slab, SlabNormal)
    weights = _compact(weights)
    return weights.dim() == 2 and weights.shape[1] == 1 and weights.shape[0] == slab.loc.shape[0]


@register_kl(SlabBlock, TorchIndependent)
def _kl_slab_block(p, q):
    slab, prior = p.base_dist, q.base_dist
    if (p.reinterpreted_batch_ndims == q.reinterpreted_batch_ndims == 2 and type(prior) in (Normal, PyroNormal)
            and prior.batch_shape == slab.batch_shape and _row_weights(slab)):
        prior_loc, prior_scale = _python_scalar(prior.loc), _python_scalar(prior.scale)
        if prior_loc == 0 and prior_scale is not None:
            return slab_kl(slab, prior_scale**2)
    return _kl_independent_independent(p, q)


@register_kl(Normal, LogUniformScale)
def _kl_normal_log_uniform(p, q):
    return log_uniform_kl(dropout_log_alpha(p.loc, 2 * torch.log(p.scale))).expand(p.batch_shape)


@register_kl(LogNormal, Gamma)
def _kl_lognormal_gamma(p, q):
    return lognormal_gamma_kl(p.loc, p.scale, q.concentration, q.rate).expand(p.batch_shape)


@register_kl(LogNormal, InverseGamma)
def _kl_lognormal_inverse_gamma(p, q):
    base = q.base_dist  # InverseGamma(a, b) is 1 / Gamma(a, b)
    return lognormal_inverse_gamma_kl(p.loc, p.scale, base.concentration, base.rate).expand(p.batch_shape)
