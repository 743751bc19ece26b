"""Local reparameterisation: sample pre-activations instead of weight tensors.

Every prior of the library writes a layer's augmented parameter matrix as ``scale * slab``
(:class:`~pyro_sparse_bnn.core.priors.base.LayerDraw`), where the slab is Gaussian under the
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
:func:`~pyro_sparse_bnn.core.priors.base.apply_layer` turns a draw into pre-activations: it
remembers, for every Gaussian sample it sees (first the guide's, then the model replays the
same tensor), its mean and standard deviation, and when a layer's slab is one of them it
computes the layer's output mean with ``mu`` and variance with ``sigma^2`` instead of
applying the sampled slab. A slab it has not seen (e.g. one the user set by hand) falls back
to the ordinary weight-sampling computation.

``Predictive(model, guide=guide)`` (sequential or ``parallel=True``) runs the guide and then
the model *conditioned* on the guide's draws: those sites are observed in the model's trace,
so the handler does not take them for its own draws and the layers apply the weights, with
or without the handler -- a predictive draw is one weight tensor shared by the batch.
Under a vectorising plate (``parallel=True``, or ``vectorize_particles=True``) the model's
values are views with the data plate's dimension dropped
(:func:`~pyro_sparse_bnn.core.priors.base.model_value`), which the handler does not
recognise either: those runs draw weights too.

Use it around anything that runs guide and model together::

    with local_reparameterization():
        svi.step(x, y)

:func:`~pyro_sparse_bnn.core.fit.fit` and :meth:`SparseBNN.forward` do this by themselves when the
network's ``local_reparameterization`` flag is set (the default).
"""

from typing import Dict, Iterable, Optional, Tuple

import torch
from pyro.distributions import Independent, Normal
from pyro.poutine.messenger import Messenger

from .distributions import GatedNormal
from .fused import gaussian_sample
from .priors.base import LAYER_SLAB, LayerDraw, LayerSpec, column_factors, scale_layout

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


def _gaussian_slab(fn):
    """The (possibly ``Independent``-wrapped) Normal or GatedNormal ``fn``, else ``None``.

    A :class:`~pyro_sparse_bnn.core.distributions.GatedNormal` draws every entry from
    ``Normal(loc, scale)`` (switched-off entries are multiplied by a zero indicator), so its
    draws are Gaussian with those parameters.
    """
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if isinstance(fn, (Normal, GatedNormal)) else None


def _variance(slab) -> torch.Tensor:
    """The slab's variance; a slab of this library computes it once for the layer and its KL."""
    variance = getattr(slab, "scale_sq", None)
    return slab.scale.square() if variance is None else variance


def gaussian_layer(x: torch.Tensor, spec: LayerSpec, draw: LayerDraw, loc: torch.Tensor,
                   scale: Optional[torch.Tensor], variance: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw of the layer's pre-activations with the slab integrated out.

    :param x: layer input, ``(batch, in_units)`` (or ``(batch, C, H, W)`` for conv layers);
        ``x``, ``draw.scale``, ``loc`` and ``variance`` may carry leading draw dimensions
        (see :meth:`~pyro_sparse_bnn.core.priors.base.LayerSpec.apply`).
    :param spec: the layer.
    :param draw: the layer's draw; only ``draw.scale`` is used (the slab's value is not).
    :param loc: slab mean ``mu``, the augmented shape ``(out_units, fan_in + 1)``.
    :param scale: slab standard deviation ``sigma``, same shape (or broadcastable); not
        used when ``variance`` is given.
    :param variance: slab variance ``sigma^2`` (default ``scale**2``).
    :returns: pre-activations ``mean + sqrt(var) * eps`` with ``eps ~ N(0, 1)`` independent
        for every example and unit; same shape as the layer's ordinary output.
    """
    variance = (scale.square() if variance is None else variance).expand(loc.shape)
    factor = draw.scale
    layout = scale_layout(spec, factor)
    if layout == "columns":
        # one factor per input unit and one for the bias column: scale the inputs instead
        inputs, bias_scale = column_factors(spec, factor)
        scaled = x * inputs
        mean = spec.apply_augmented(scaled, loc, bias_scale)
        var = spec.apply_augmented(scaled.square(), variance, None if bias_scale is None else bias_scale.square())
        return gaussian_sample(mean, var, None, torch.randn_like(mean))
    if layout == "full":
        loc, variance, factor = factor * loc, factor.square() * variance, None
    mean = spec.apply_augmented(x, loc)
    var = spec.apply_augmented(x.square(), variance)
    noise = None
    if layout == "rows":
        # one factor per output unit (node indicators, group scales): scale the outputs
        # instead of the weight matrices, which saves work the size of the weights
        factor = spec.output_factor(factor)
        if factor.dim() > mean.dim():  # a factor per draw: independent noise for every draw
            shape = torch.broadcast_shapes(mean.shape, factor.shape)
            noise = torch.randn(shape, dtype=mean.dtype, device=mean.device)
    # a unit switched off by its indicator has variance exactly 0, where sqrt has an infinite
    # derivative; gaussian_sample passes no gradient there, which is the right answer
    return gaussian_sample(mean, var, factor, torch.randn_like(mean) if noise is None else noise)


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
        :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO` does not when the slab's KL is analytic
        (it raises if it would need the log-density of a placeholder). A Monte Carlo ELBO
        such as ``Trace_ELBO`` *would* read them, so the default is ``False``;
        :func:`~pyro_sparse_bnn.core.fit.fit` switches it on with ``MeanFieldELBO``, and
        :meth:`SparseBNN.forward` always.
    :param layers: names of the layers (``LayerSpec.name``, e.g. ``"net.0"``) to apply it
        to; the others keep sampling one weight tensor (``None``, the default: every layer).
    """

    def __init__(self, skip_slab_draws: bool = False, layers: Optional[Iterable[str]] = None):
        super().__init__()
        self.skip_slab_draws = bool(skip_slab_draws)
        self.layers = None if layers is None else frozenset(layers)
        self._gaussians: Dict[int, Tuple[torch.Tensor, object]] = {}

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
        if self.layers is not None and msg["name"].rsplit(".", 1)[0] not in self.layers:
            return  # a layer that keeps weight draws reads its slab
        slab = _gaussian_slab(msg["fn"])
        if slab is None:
            return
        msg["value"] = slab.loc.detach().expand(msg["fn"].shape())
        msg["infer"][PLACEHOLDER] = True
        msg["done"] = True

    def _pyro_post_sample(self, msg):
        if msg["is_observed"]:
            return
        value = msg["value"]
        key = id(value)
        if key in self._gaussians and self._gaussians[key][0] is value:
            return  # the model replaying the guide's value: keep the guide's distribution
        slab = _gaussian_slab(msg["fn"])
        if slab is not None:
            # keep a reference to the value so that its id cannot be reused while we run
            self._gaussians[key] = (value, slab)

    def _pyro_sparse_layer(self, msg):
        x, spec, draw = msg["args"]
        if self.layers is not None and spec.name not in self.layers:
            return
        entry = self._gaussians.get(id(draw.slab))
        if entry is None or entry[0] is not draw.slab:
            return
        slab = entry[1]
        msg["value"] = gaussian_layer(x, spec, draw, slab.loc, None, _variance(slab))
        msg["done"] = True


def local_reparameterization(skip_slab_draws: bool = False,
                             layers: Optional[Iterable[str]] = None) -> LocalReparameterization:
    """A fresh :class:`LocalReparameterization` handler, for use as ``with local_reparameterization(): ...``."""
    return LocalReparameterization(skip_slab_draws, layers)
