"""ArviZ diagnostics: guide draws as ``arviz.InferenceData``, the Pareto k-hat of the
variational approximation, PSIS-LOO and the comparison of priors.

Everything that depends on ArviZ lives in this module (plots in :mod:`~pyro_sparse_bnn.analysis.plots`
take its output).

* :func:`to_inference_data` -- draws of the fitted guide with named dims and coords
  (``feature``, ``layer``, ``node``, ...), a pointwise ``log_likelihood`` group and
  ``observed_data``. Several independent fits of one model (restarts with different seeds)
  become the chains, so ``arviz.summary``'s R-hat and ESS say whether the PIPs are stable
  across restarts.
* :func:`variational_khat` -- Yao et al. (2018), "Yes, but did it work?": Pareto-smoothed
  importance sampling of ``log p(y, theta) - log q(theta)`` over guide draws; the shape
  estimate k-hat says whether the guide is close enough to the posterior for importance
  sampling (and, loosely, for the posterior expectations read off it) to be trusted.
  :func:`bnn_variational_khat` is the same function for a :class:`SparseBNN`.
* :func:`psis_loo` and :func:`compare_priors` -- PSIS-LOO (``arviz.loo``) and
  ``arviz.compare`` of networks with different priors fitted to the same data.

Dims of the posterior group (``chain`` = fit, ``draw`` = guide draw):

=====================  =====================================================================
variable               dims and meaning
=====================  =====================================================================
``feature_inclusion``  ``(chain, draw, feature)``: 1 when the input feature (input channel of
                       a conv-first net) is used in the draw, else 0; its mean is the PIP
``node_inclusion``     ``(chain, draw, layer, node)``: the same for the hidden nodes
                       (channels) of every layer but the output layer; ``layer`` are layer
                       names, ``node`` indexes units, NaN beyond a layer's width
``group_scale``        ``(chain, draw, scale_layer, group)``: the group scales of the layers
                       whose prior has them (SS-GL, SS-GHS: per output unit; BC-GNJ, BC-GHS:
                       per input unit of a linear layer, per output channel of a conv layer),
                       NaN-padded
``<layer>.weight``     ``(chain, draw, <layer>.out, <layer>.in[, <layer>.kh, <layer>.kw])``
``<layer>.bias``       ``(chain, draw, <layer>.out)`` -- only with ``weights=True``: the
                       effective weights ``w = scale * slab`` of the draw
=====================  =====================================================================
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from tqdm.auto import tqdm

from ..core.errors import InputError
from ..core.network import SparseBNN, check_bnn
from ..core.validation import check_positive_int
from .inclusion import check_same_network, inclusion_draws

if TYPE_CHECKING:  # imported where used: they take a second to load
    import arviz as az
    import pandas as pd

__all__ = [
    "to_inference_data",
    "variational_khat",
    "bnn_variational_khat",
    "khat_interpretation",
    "VariationalKhat",
    "psis_loo",
    "compare_priors",
]

Fits = Union[SparseBNN, Sequence[SparseBNN]]


def _without_local_reparameterization(fn: Callable) -> Callable:
    """``fn`` with the ``sparse_layer`` effect hidden from any enclosing handler: the model
    forms each weight tensor from its sample sites (log densities need actual weights)."""
    return poutine.block(fn, hide_types=["sparse_layer"])


def _fitted(fits: Fits, what: str = "bnn"):
    fits = check_same_network(fits, what)
    for i, bnn in enumerate(fits):
        check_bnn(bnn, what if len(fits) == 1 else f"{what}[{i}]", fitted=True)
    return fits


def _padded(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack 1-d arrays of different lengths into ``(len(rows), width)``, NaN-padded."""
    out = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _obs_log_prob(bnn: SparseBNN, guide_trace, x, y) -> torch.Tensor:
    """Pointwise ``log p(y_i | theta)`` ``(batch,)`` at the guide draw in ``guide_trace``."""
    model = _without_local_reparameterization(poutine.replay(bnn.model, trace=guide_trace))
    site = poutine.trace(model).get_trace(x, y).nodes["obs"]
    return site["fn"].log_prob(site["value"])


@torch.no_grad()
def to_inference_data(
    bnn: Fits,
    x=None,
    y=None,
    *,
    num_samples: int = 200,
    weights: bool = False,
    feature_names: Optional[Sequence[str]] = None,
    batch_size: Optional[int] = None,
    seed: Optional[int] = None,
    progress: bool = True,
) -> az.InferenceData:
    """Draws of the fitted guide as an ``arviz.InferenceData``.

    :param bnn: a fitted :class:`SparseBNN`, or a sequence of independent fits of the same
        model (same architecture, priors and likelihood; e.g. different seeds), which become
        the chains.
    :param x: inputs ``(n, *input_shape)`` for the ``log_likelihood`` and ``observed_data``
        groups -- training data for PSIS-LOO, held-out data for a test-set ELPD; ``None``
        leaves both groups out.
    :param y: targets ``(n,)`` (or ``(n, outputs)`` for multi-output regression).
    :param int num_samples: guide draws per chain (200).
    :param bool weights: also store the effective weights and biases of every draw (large).
    :param feature_names: names of the input features / channels (coords of ``feature``).
    :param batch_size: evaluate the log-likelihood in chunks of this many examples.
    :param seed: seed for ``pyro.set_rng_seed`` before drawing.
    :param bool progress: tqdm bar over the draws.
    :returns: InferenceData with groups ``posterior`` (variables and dims in the module
        docstring), and with ``x, y``: ``log_likelihood`` (``y``: ``(chain, draw, example)``,
        ``log p(y_i | theta)`` at each draw, computed without local reparameterisation so
        that every example sees the same weights) and ``observed_data`` (``y``:
        ``(example,)`` or ``(example, output)``).
    :raises NotFittedError: if a network has not been fitted.
    :raises InputError: for fits of different models, bad data or feature names.
    """
    import arviz as az

    fits = _fitted(bnn)
    first = fits[0]
    num_samples = check_positive_int("num_samples", num_samples, InputError)
    if feature_names is None:
        feature_names = [f"x{i}" for i in range(first.num_inputs)]
    elif len(feature_names) != first.num_inputs:
        raise InputError(
            f"feature_names has {len(feature_names)} names but the network has {first.num_inputs} input features"
        )
    if (x is None) != (y is None):
        raise InputError("give both x and y for the log-likelihood, or neither")
    if x is not None:
        x, y = first.check_data(*first.as_data(x, y))
        chunks = [(x, y)] if batch_size is None else list(
            zip(torch.split(x, check_positive_int("batch_size", batch_size, InputError)),
                torch.split(y, batch_size), strict=True))
    if seed is not None:
        pyro.set_rng_seed(seed)

    hidden = [layer.spec for layer in first.layers[:-1]]
    scale_layers = [layer.spec for layer in first.layers if _has_scales(layer)]
    draws: Dict[str, list] = {name: [] for name in ("feature_inclusion", "node_inclusion", "group_scale", "y")}
    weight_draws: Dict[str, list] = {}
    bar = tqdm(total=len(fits) * num_samples, disable=not progress, desc="guide draws", unit="draw",
               mininterval=0.5)
    try:
        for fit in fits:
            features, nodes = inclusion_draws(fit, num_samples)
            draws["feature_inclusion"].append(features.double().cpu().numpy())
            if hidden:
                width = max(spec.out_units for spec in hidden)
                per_layer = [nodes[spec.name].double().cpu().numpy() for spec in hidden]
                draws["node_inclusion"].append(np.stack([_padded(d, width) for d in zip(*per_layer, strict=True)]))
            chain: Dict[str, list] = {"group_scale": [], "y": []}
            chain_weights: Dict[str, list] = {}
            for _ in range(num_samples):
                guide_trace = poutine.trace(fit.guide).get_trace()
                if scale_layers:
                    scales = [poutine.replay(layer.model_scale, trace=guide_trace)().double().cpu().numpy()
                              for layer in fit.layers if _has_scales(layer)]
                    chain["group_scale"].append(_padded(scales, max(len(s) for s in scales)))
                if x is not None:
                    chain["y"].append(torch.cat([_obs_log_prob(fit, guide_trace, xb, yb) for xb, yb in chunks])
                                      .double().cpu().numpy())
                if weights:
                    for layer in fit.layers:
                        draw = poutine.replay(layer.model, trace=guide_trace)()
                        weight, bias = layer.spec.split(draw.params)
                        chain_weights.setdefault(f"{layer.spec.name}.weight", []).append(weight.double().cpu().numpy())
                        if bias is not None:
                            chain_weights.setdefault(f"{layer.spec.name}.bias", []).append(bias.double().cpu().numpy())
                bar.update(1)
            for name, values in chain.items():
                if values:
                    draws[name].append(np.stack(values))
            for name, values in chain_weights.items():
                weight_draws.setdefault(name, []).append(np.stack(values))
    finally:
        bar.close()

    posterior = {"feature_inclusion": np.stack(draws["feature_inclusion"])}
    coords = {"feature": list(feature_names)}
    dims = {"feature_inclusion": ["feature"]}
    if hidden:
        posterior["node_inclusion"] = np.stack(draws["node_inclusion"])
        coords["layer"] = [spec.name for spec in hidden]
        coords["node"] = np.arange(posterior["node_inclusion"].shape[-1])
        dims["node_inclusion"] = ["layer", "node"]
    if scale_layers:
        posterior["group_scale"] = np.stack(draws["group_scale"])
        coords["scale_layer"] = [spec.name for spec in scale_layers]
        coords["group"] = np.arange(posterior["group_scale"].shape[-1])
        dims["group_scale"] = ["scale_layer", "group"]
    for name, values in weight_draws.items():
        posterior[name] = np.stack(values)
        layer_name, kind = name.rsplit(".", 1)
        suffixes = ["out"] if kind == "bias" else ["out", "in", "kh", "kw"][: posterior[name].ndim - 2]
        dims[name] = [f"{layer_name}.{suffix}" for suffix in suffixes]

    groups = {}
    if x is not None:
        groups["log_likelihood"] = {"y": np.stack(draws["y"])}
        observed = y.double().cpu().numpy() if y.is_floating_point() else y.cpu().numpy()
        groups["observed_data"] = {"y": observed}
        coords["example"] = np.arange(len(observed))
        dims["y"] = ["example"] + (["output"] if observed.ndim == 2 else [])
        if observed.ndim == 2:
            coords["output"] = np.arange(observed.shape[1])
    attrs = {
        "inference_library": "pyro_sparse_bnn",
        "priors": ", ".join(sorted({repr(p) for p in first.priors})),
        "architecture": "-".join(map(str, first.architecture.widths)),
        "likelihood": type(first.likelihood).__name__,
        "num_fits": len(fits),
    }
    idata = az.from_dict(posterior=posterior, coords=coords, dims=dims, **groups)
    idata.posterior.attrs.update(attrs)
    return idata


def _has_scales(layer) -> bool:
    """Whether the layer's prior has group scales (a ``model_scale`` returning a tensor)."""
    if not hasattr(layer, "model_scale"):
        return False
    moments = getattr(layer, "log_scale_moments", None)
    return moments is None or moments() is not None


# --------------------------------------------------------------------------------------
# Pareto k-hat of the variational approximation
# --------------------------------------------------------------------------------------
#: log weights spanning less than this (all importance weights within 0.1 % of each other)
#: count as constant: the guide equals the posterior up to round-off and k-hat is ``-inf``
CONSTANT_LOG_WEIGHT_RANGE = 1e-3

#: ArviZ's interpretation thresholds of k-hat (Vehtari et al. 2024; Yao et al. 2018)
KHAT_THRESHOLDS = (0.5, 0.7, 1.0)


def khat_interpretation(khat: float) -> str:
    """ArviZ's reading of a Pareto k-hat: ``"good"`` (k < 0.5), ``"ok"`` (0.5 <= k < 0.7),
    ``"bad"`` (0.7 <= k < 1) or ``"very bad"`` (k >= 1; also NaN)."""
    good, ok, bad = KHAT_THRESHOLDS
    if khat < good:
        return "good"
    if khat < ok:
        return "ok"
    if khat < bad:
        return "bad"
    return "very bad"


@dataclass
class VariationalKhat:
    """Result of :func:`variational_khat`.

    :ivar float khat: Pareto shape estimate of the importance ratios ``p(y, theta) / q(theta)``.
    :ivar np.ndarray log_weights: ``log p(y, theta_s) - log q(theta_s)``, ``(num_samples,)``.
    :ivar np.ndarray smoothed_log_weights: Pareto-smoothed, normalised log weights,
        ``(num_samples,)`` (use them to importance-weight guide draws).
    """

    khat: float
    log_weights: np.ndarray
    smoothed_log_weights: np.ndarray

    @property
    def interpretation(self) -> str:
        """``"good"``, ``"ok"``, ``"bad"`` or ``"very bad"`` (:func:`khat_interpretation`)."""
        return khat_interpretation(self.khat)

    @property
    def reliable(self) -> bool:
        """Whether k-hat is below 0.7, where Yao et al. call the approximation usable."""
        return self.khat < KHAT_THRESHOLDS[1]

    @property
    def ess(self) -> float:
        """Effective sample size of the smoothed importance weights, ``1 / sum w^2``."""
        return float(1.0 / np.exp(2 * self.smoothed_log_weights).sum())

    def __repr__(self):
        return (f"VariationalKhat(khat={self.khat:.3f} ({self.interpretation}), "
                f"num_samples={len(self.log_weights)}, ess={self.ess:.1f})")


@torch.no_grad()
def variational_khat(model: Callable, guide: Callable, *args, num_samples: int = 1000,
                     seed: Optional[int] = None, progress: bool = True, **kwargs) -> VariationalKhat:
    """Pareto k-hat diagnostic of a variational approximation (Yao, Vehtari, Simpson & Gelman
    2018, "Yes, but did it work?: Evaluating variational inference").

    For ``num_samples`` draws ``theta_s ~ q`` (``poutine.trace`` of the guide) the log
    importance ratio ``log p(y, theta_s) - log q(theta_s)`` is computed by replaying the model
    on the draw (``poutine.replay``), summing every site's log density (observed sites
    included, plate scales applied); ArviZ's ``psislw`` (which takes these log ratios as
    they are, no sign flip) fits a generalised Pareto distribution to their upper tail.
    Interpretation (ArviZ's thresholds): k < 0.5 good, 0.5-0.7 ok, 0.7-1 bad (importance
    sampling and the guide's expectations unreliable), >= 1 very bad.

    When every log weight is the same up to round-off (:data:`CONSTANT_LOG_WEIGHT_RANGE`),
    the guide is the posterior (the weights are the evidence ``p(y)``), there is no tail to
    fit and k-hat is reported as ``-inf`` (ArviZ's ``psislw`` returns ``inf`` there).

    k-hat is invariant to adding a constant to every log weight, so unnormalised densities
    are fine: e.g. the improper log-uniform prior of BC-GNJ, whose ``log_prob`` is
    ``-log|z|`` up to an unknown constant, or the unknown evidence ``log p(y)``.

    :param model: a Pyro model; :param guide: its guide (same latent sites).
    :param args, kwargs: the data, passed to both; for a subsampled model pass the full
        data set, else the log-likelihood is a scaled minibatch estimate.
    :param int num_samples: guide draws (1000; k-hat needs a few hundred at least).
    :param seed: seed for ``pyro.set_rng_seed`` before drawing.
    :param bool progress: tqdm bar over the draws.
    :raises InputError: if a latent model site has no guide site, or a log weight is NaN or
        ``+inf``.
    """
    import arviz as az

    num_samples = check_positive_int("num_samples", num_samples, InputError)
    if num_samples < 10:
        raise InputError(f"num_samples must be at least 10 for a Pareto fit, got {num_samples}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    log_weights = np.empty(num_samples)
    for s in tqdm(range(num_samples), disable=not progress, desc="k-hat draws", unit="draw", mininterval=0.5):
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
        replayed = _without_local_reparameterization(poutine.replay(model, trace=guide_trace))
        model_trace = prune_subsample_sites(poutine.trace(replayed).get_trace(*args, **kwargs))
        if s == 0:
            missing = [name for name, site in model_trace.nodes.items()
                       if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace.nodes]
            if missing:
                raise InputError(f"the guide has no site for the model's latent sites {missing}")
        log_weights[s] = float(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    bad = np.isnan(log_weights) | (log_weights == np.inf)
    if bad.any():
        raise InputError(f"log p - log q is NaN or +inf for {int(bad.sum())} of {num_samples} guide draws")
    if np.ptp(log_weights) < CONSTANT_LOG_WEIGHT_RANGE:
        # the guide is the posterior up to round-off: no tail to fit (ArviZ would return inf)
        smoothed = np.full(num_samples, -np.log(num_samples))
        return VariationalKhat(khat=-np.inf, log_weights=log_weights, smoothed_log_weights=smoothed)
    smoothed, khat = az.psislw(log_weights)
    return VariationalKhat(khat=float(khat), log_weights=log_weights, smoothed_log_weights=np.asarray(smoothed))


def bnn_variational_khat(bnn: SparseBNN, x, y, *, num_samples: int = 1000, seed: Optional[int] = None,
                         progress: bool = True) -> VariationalKhat:
    """:func:`variational_khat` of a fitted :class:`SparseBNN` on its training data.

    ``log p(y, theta) - log q(theta)`` needs the full log density of every site: the hard
    straight-through indicators are 0/1 values whose guide ``log_prob`` is the Bernoulli
    log-mass (as is the model's), so the ratio is well defined; the weights are the sampled
    weight tensors (never the local reparameterisation's pre-activations, which the
    function switches off even inside a ``local_reparameterization()`` block). For BC-GNJ
    the log weights carry the unknown constant of the improper prior, which k-hat ignores.
    Expect large k-hat for wide networks: a mean-field guide over thousands of weights is far
    from the posterior in the importance-sampling sense even where its marginals are useful.

    :param x, y: the training data the network was fitted to (all ``bnn.num_data`` examples).
    :raises NotFittedError: if the network has not been fitted.
    :raises InputError: if ``x`` is not the full training set (``len(x) != num_data``).
    """
    (bnn,) = _fitted(bnn)
    x, y = bnn.check_data(*bnn.as_data(x, y))
    if bnn.num_data is not None and len(x) != bnn.num_data:
        raise InputError(
            f"k-hat needs the full training data: x has {len(x)} examples but the network was fitted "
            f"to num_data={bnn.num_data}"
        )
    return variational_khat(bnn.model, bnn.guide, x, y, num_samples=num_samples, seed=seed, progress=progress)


# --------------------------------------------------------------------------------------
# PSIS-LOO and comparison of priors
# --------------------------------------------------------------------------------------
def _as_idata(fits, x, y, num_samples, seed, progress) -> az.InferenceData:
    import arviz as az

    if isinstance(fits, az.InferenceData):
        if "log_likelihood" not in fits.groups():
            raise InputError("the InferenceData has no log_likelihood group: build it with x and y")
        return fits
    if x is None or y is None:
        raise InputError("x and y are needed to compute the log-likelihood of fitted networks")
    return to_inference_data(fits, x, y, num_samples=num_samples, seed=seed, progress=progress)


def psis_loo(bnn: Union[Fits, az.InferenceData], x=None, y=None, *, num_samples: int = 500,
             seed: Optional[int] = None, progress: bool = False, pointwise: bool = False):
    """PSIS-LOO (``arviz.loo``) of a fitted network, or of several fits as chains.

    The importance ratios are the guide draws' ``1 / p(y_i | theta)``, so this estimates the
    leave-one-out predictive density of the *variational* posterior; its Pareto k-hats say
    where that estimate is unreliable (and a large :func:`bnn_variational_khat` says the
    guide itself is far from the posterior).

    :param bnn: fitted network(s) (then give the training data ``x, y``), or an
        InferenceData with a ``log_likelihood`` group.
    :returns: ArviZ's ``ELPDData`` (``elpd_loo``, ``se``, ``p_loo``, ``pareto_k`` with
        ``pointwise=True``, ...).
    """
    import arviz as az

    return az.loo(_as_idata(bnn, x, y, num_samples, seed, progress), pointwise=pointwise)


def compare_priors(fits: Mapping[str, Union[Fits, az.InferenceData]], x=None, y=None, *,
                   num_samples: int = 500, ic: str = "loo", seed: Optional[int] = 0,
                   progress: bool = False) -> pd.DataFrame:
    """``arviz.compare`` of networks (typically with different priors) fitted to the same data.

    :param fits: ``{name: fitted SparseBNN, list of restarts, or InferenceData}``.
    :param x, y: the data every network was fitted to (needed unless all values are
        InferenceData with a ``log_likelihood`` group of the same examples).
    :param int num_samples: guide draws per fit.
    :param str ic: ``"loo"`` (PSIS-LOO, default) or ``"waic"``.
    :param seed: seed of the guide draws (each model is drawn from the same seed).
    :returns: ArviZ's comparison table, best model first (``rank`` 0): ``elpd_<ic>``,
        ``p_<ic>``, ``elpd_diff``, ``weight``, ``se``, ``dse``, ``warning``, ``scale``.
    :raises InputError: for fewer than two models or log-likelihoods of different data.
    """
    import arviz as az

    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise InputError("compare_priors needs a mapping {name: fit} with at least two models")
    if ic not in ("loo", "waic"):
        raise InputError(f"ic must be 'loo' or 'waic', got {ic!r}")
    idatas = {name: _as_idata(fit, x, y, num_samples, seed, progress) for name, fit in fits.items()}
    sizes = {name: idata.log_likelihood["y"].shape[-1] for name, idata in idatas.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"the models' log-likelihoods cover different numbers of examples: {sizes}")
    with warnings.catch_warnings():  # ArviZ's own use of a pandas keyword that pandas deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame.sort_values")
        return az.compare(idatas, ic=ic)
