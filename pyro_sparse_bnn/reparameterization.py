"""Local reparameterisation: sample pre-activations instead of weight tensors.

Every prior of the library writes a layer's augmented parameter matrix as ``scale * slab``
(:class:`~pyro_sparse_bnn.priors.base.LayerDraw`), where the slab is Gaussian under the
guide, ``slab ~ N(mu, sigma^2)`` entrywise, and ``scale`` collects the (sampled) indicators
and group scales. Given ``scale``, the pre-activation of unit ``j`` for one example ``x`` is
Gaussian::

    a_j | scale ~ N( sum_i x_i scale_ji mu_ji,  sum_i x_i^2 scale_ji^2 sigma_ji^2 )

(with ``x`` augmented by a 1 for the bias). Kingma, Salimans & Welling (2015) sample ``a``
directly, with independent noise for every example of the minibatch, instead of one weight
matrix shared by the whole minibatch. Each example's output has exactly the same
distribution, so the expected log-likelihood -- and the ELBO -- is unchanged, while the
gradient variance falls roughly in proportion to the batch size (the noise of different
examples no longer moves together).

:class:`LocalReparameterization` is a Pyro effect handler, so the model stays a real Pyro
model: every sample site (indicators, scales, the slab itself) is still sampled and traced,
``poutine.trace``, ``Predictive`` and the ELBO see them as before, and the KL terms are
untouched. The handler only changes how the ``"sparse_layer"`` effect of
:func:`~pyro_sparse_bnn.priors.base.apply_layer` turns a draw into pre-activations: it
remembers, for every Gaussian sample it sees (first the guide's, then the model replays the
same tensor), its mean and standard deviation, and when a layer's slab is one of them it
computes the layer's output mean with ``mu`` and variance with ``sigma^2`` instead of
applying the sampled slab. A slab it has not seen (e.g. one the user set by hand) falls back
to the ordinary weight-sampling computation.

Use it around anything that runs guide and model together::

    with local_reparameterization():
        svi.step(x, y)

:func:`~pyro_sparse_bnn.fit.fit` and :meth:`SparseBNN.forward` do this by themselves when the
network's ``local_reparameterization`` flag is set (the default).
"""

from typing import Dict, Tuple

import torch
from pyro.distributions import Independent, Normal
from pyro.poutine.messenger import Messenger

from .distributions import GatedNormal
from .priors.base import LAYER_SLAB, LayerDraw, LayerSpec

__all__ = [
    "LocalReparameterization",
    "local_reparameterization",
    "gaussian_layer",
    "LAYER_SLAB",
    "PLACEHOLDER",
]

#: ``infer`` key set on a slab site whose value the handler did not draw (see
#: ``skip_slab_draws``); an estimator that would evaluate its log-density must refuse it.
PLACEHOLDER = "placeholder"


def _gaussian_factors(fn):
    """``(loc, scale)`` of a (possibly ``Independent``-wrapped) Normal or GatedNormal, else ``None``.

    A :class:`~pyro_sparse_bnn.distributions.GatedNormal` draws every entry from
    ``Normal(loc, scale)`` (switched-off entries are multiplied by a zero indicator), so its
    draws are Gaussian with those parameters.
    """
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if isinstance(fn, (Normal, GatedNormal)):
        return fn.loc, fn.scale
    return None


def gaussian_layer(x: torch.Tensor, spec: LayerSpec, draw: LayerDraw, loc: torch.Tensor,
                   scale: torch.Tensor) -> torch.Tensor:
    """One draw of the layer's pre-activations with the slab integrated out.

    :param x: layer input, ``(batch, in_units)`` (or ``(batch, C, H, W)`` for conv layers).
    :param spec: the layer.
    :param draw: the layer's draw; only ``draw.scale`` is used (the slab's value is not).
    :param loc: slab mean ``mu``, the augmented shape ``(out_units, fan_in + 1)``.
    :param scale: slab standard deviation ``sigma``, same shape (or broadcastable).
    :returns: pre-activations ``mean + sqrt(var) * eps`` with ``eps ~ N(0, 1)`` independent
        for every example and unit; same shape as the layer's ordinary output.
    """
    variance = scale.square().expand(loc.shape)
    factor = draw.scale
    if factor is None:
        mean = spec.apply(x, *spec.split(loc))
        var = spec.apply(x.square(), *spec.split(variance))
    elif factor.shape[-1] == 1 and factor.numel() == spec.out_units:
        # one factor per output unit (node indicators, group scales): scale the outputs
        # instead of the weight matrices, which saves work the size of the weights
        per_output = factor.reshape((1, spec.out_units) + (1,) * (x.dim() - 2))
        mean = spec.apply(x, *spec.split(loc)) * per_output
        var = spec.apply(x.square(), *spec.split(variance)) * per_output.square()
    elif spec.kind == "linear" and factor.dim() == 2 and factor.shape[0] == 1:
        # one factor per input unit and one for the bias column: scale the inputs instead
        inputs = factor[:, : spec.fan_in]
        loc_weight, loc_bias = spec.split(loc)
        var_weight, var_bias = spec.split(variance)
        if loc_bias is not None:
            loc_bias, var_bias = loc_bias * factor[0, -1], var_bias * factor[0, -1].square()
        scaled = x * inputs
        mean = spec.apply(scaled, loc_weight, loc_bias)
        var = spec.apply(scaled.square(), var_weight, var_bias)
    else:
        mean = spec.apply(x, *spec.split(factor * loc))
        var = spec.apply(x.square(), *spec.split(factor.square() * variance))
    # clamp: a unit switched off by its indicator has variance exactly 0, where sqrt has an
    # infinite derivative; below the floor no gradient flows, which is the right answer there
    std = var.clamp(min=torch.finfo(var.dtype).tiny).sqrt()
    return mean + std * torch.randn_like(mean)


class LocalReparameterization(Messenger):
    """Effect handler that applies the local reparameterisation trick to every sparse layer.

    Enter it around a guide run followed by a model run (an SVI step, ``bnn(x)``,
    ``Predictive``); it forgets what it saw when it exits. Re-entrant use of one instance is
    not supported (create one per ``with`` block, as :func:`local_reparameterization` does).

    :param bool skip_slab_draws: do not draw the guide's slab sites marked with the
        :data:`LAYER_SLAB` infer flag (every prior of the library marks its slabs): their
        traced value is the slab mean, broadcast, detached and flagged :data:`PLACEHOLDER`,
        which saves a weight-sized Gaussian draw per layer and step. Only safe when nothing
        reads those values: the layers do not (they sample pre-activations) and
        :class:`~pyro_sparse_bnn.elbo.MeanFieldELBO` does not when the slab's KL is analytic
        (it raises if it would need the log-density of a placeholder). A Monte Carlo ELBO
        such as ``Trace_ELBO`` *would* read them, so the default is ``False``;
        :func:`~pyro_sparse_bnn.fit.fit` switches it on with ``MeanFieldELBO``, and
        :meth:`SparseBNN.forward` always.
    """

    def __init__(self, skip_slab_draws: bool = False):
        super().__init__()
        self.skip_slab_draws = bool(skip_slab_draws)
        self._gaussians: Dict[int, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __enter__(self):
        self._gaussians = {}
        return super().__enter__()

    def __exit__(self, *args):
        self._gaussians = {}
        return super().__exit__(*args)

    def _pyro_sample(self, msg):
        if not (self.skip_slab_draws and msg["value"] is None and not msg["done"]
                and not msg["is_observed"] and msg["infer"].get(LAYER_SLAB)):
            return
        factors = _gaussian_factors(msg["fn"])
        if factors is None:
            return
        msg["value"] = factors[0].detach().expand(msg["fn"].shape())
        msg["infer"][PLACEHOLDER] = True
        msg["done"] = True

    def _pyro_post_sample(self, msg):
        if msg["is_observed"]:
            return
        value = msg["value"]
        key = id(value)
        if key in self._gaussians and self._gaussians[key][0] is value:
            return  # the model replaying the guide's value: keep the guide's distribution
        factors = _gaussian_factors(msg["fn"])
        if factors is not None:
            # keep a reference to the value so that its id cannot be reused while we run
            self._gaussians[key] = (value, *factors)

    def _pyro_sparse_layer(self, msg):
        x, spec, draw = msg["args"]
        entry = self._gaussians.get(id(draw.slab))
        if entry is None or entry[0] is not draw.slab:
            return
        _, loc, scale = entry
        msg["value"] = gaussian_layer(x, spec, draw, loc, scale)
        msg["done"] = True


def local_reparameterization(skip_slab_draws: bool = False) -> LocalReparameterization:
    """A fresh :class:`LocalReparameterization` handler, for use as ``with local_reparameterization(): ...``."""
    return LocalReparameterization(skip_slab_draws)
