"""ArviZ diagnostics: guide draws as ``arviz.InferenceData``, the Pareto k-hat of the
variational approximation, PSIS-LOO and the comparison of priors.

Everything that depends on ArviZ lives in this module (plots in :mod:`~pyro_sparse_bnn.analysis.plots`
take its output).

* :func:`to_inference_data` -- draws of the fitted guide with named dims and coords
  (``feature``, ``node_net_0``, ...), a pointwise ``log_likelihood`` group and
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
* :func:`summarize` -- ``arviz.summary`` of the posterior without warnings, with R-hat 1.0
  for a quantity that is the same in every draw of every chain (see its docstring).

Variables of the posterior group (``chain`` = fit, ``draw`` = guide draw). Layers of
different widths get a variable each, with their own dim, so nothing is NaN-padded; ``<key>``
is the layer's path with ``.`` (and anything else that is not a letter, digit or ``_``)
replaced by ``_``: ``net.0`` -> ``net_0`` (:func:`layer_key`), and every per-layer variable
carries the layer's path in ``attrs["layer"]`` (:func:`layer_variables` lists them):

==========================  ================================================================
variable                    dims and meaning
==========================  ================================================================
``feature_inclusion``       ``(chain, draw, feature)``: 1 when the input feature (input
                            channel of a conv-first net) is used in the draw, else 0; its mean
                            is the PIP
``node_inclusion_<key>``    ``(chain, draw, node_<key>)``: the same for the hidden nodes
                            (channels) of layer ``<key>``, one variable for every layer but
                            the output layer
``group_scale_<key>``       ``(chain, draw, group_<key>)``: the group scales of layer
                            ``<key>``, for the layers whose prior has them (SS-GL, SS-GHS: per
                            output unit; BC-GNJ, BC-GHS: per input unit of a linear layer, per
                            output channel of a conv layer)
``<layer>.weight``          ``(chain, draw, <layer>.out, <layer>.in[, <layer>.kh, <layer>.kw])``
``<layer>.bias``            ``(chain, draw, <layer>.out)`` -- only with ``weights=True``: the
                            effective weights ``w = scale * slab`` of the draw
==========================  ================================================================

Units and groups are counted from 0, as everywhere in the package.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..core.errors import InputError
from ..core.network import SparseBNN, check_bnn
from ..core.progress import progress_bar
from ..core.validation import check_positive_int
from .inclusion import check_same_network, inclusion_draws

if TYPE_CHECKING:  # imported where used: they take a second to load
    import arviz as az
    import pandas as pd

__all__ = [
    "to_inference_data",
    "layer_key",
    "layer_variables",
    "summarize",
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


def _fitted(fits: Fits, caller: str, what: str = "bnn") -> list:
    """``fits`` as a list of fitted networks of one model; raises
    :class:`~pyro_sparse_bnn.core.errors.NotFittedError` naming ``caller`` (and the fit, when
    there are several) for a network that has not been fitted."""
    fits = check_same_network(fits, what)
    for i, bnn in enumerate(fits):
        label = f"{what}[{i}]" if len(fits) > 1 else (None if what == "bnn" else what)
        check_bnn(bnn, caller if label is None else f"{caller} ({label})", fitted=True)
    return fits


def _obs_log_prob(bnn: SparseBNN, guide_trace, x, y) -> torch.Tensor:
    """Pointwise ``log p(y_i | theta)`` ``(batch,)`` at the guide draw in ``guide_trace``."""
    model = _without_local_reparameterization(poutine.replay(bnn.model, trace=guide_trace))
    site = poutine.trace(model).get_trace(x, y).nodes["obs"]
    return site["fn"].log_prob(site["value"])


#: the per-layer variables of :func:`to_inference_data`: ``<kind>_<layer key>``
PER_LAYER = ("node_inclusion", "group_scale")


def layer_key(name: str) -> str:
    """The part of a per-layer variable's name that stands for the layer: its path with every
    character that is not a letter, digit or underscore replaced by ``_`` (``net.0`` ->
    ``net_0``), so that ``idata.posterior.node_inclusion_net_0`` works as an attribute."""
    return re.sub(r"\W", "_", name)


def layer_variables(idata: az.InferenceData, kind: str) -> Dict[str, str]:
    """``{layer name: variable name}`` of the per-layer posterior variables of ``kind``
    (``"node_inclusion"`` or ``"group_scale"``) of a :func:`to_inference_data` result, in the
    network's layer order (empty when there are none)."""
    if kind not in PER_LAYER:
        raise InputError(f"kind must be one of {PER_LAYER}, got {kind!r}")
    posterior = idata.posterior
    return {var.attrs["layer"]: name for name, var in posterior.data_vars.items()
            if name.startswith(kind + "_") and "layer" in var.attrs}


def _per_layer_keys(names: Sequence[str]) -> Dict[str, str]:
    """``{layer name: layer_key(name)}``, made unique by an index suffix if two layer paths
    differ only in characters that ``layer_key`` replaces."""
    keys: Dict[str, str] = {}
    for i, name in enumerate(names):
        key = layer_key(name)
        keys[name] = key if key not in keys.values() else f"{key}_{i}"
    return keys


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
    progress: Optional[bool] = None,
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
    :param progress: progress bar over the draws; ``None`` (default) draws it only in a
        terminal or a notebook (:func:`~pyro_sparse_bnn.core.progress.show_progress`).
    :returns: InferenceData with groups ``posterior`` (variables and dims in the module
        docstring; one variable per layer, so nothing is NaN-padded), and with ``x, y``:
        ``log_likelihood`` (``y``: ``(chain, draw, example)``, ``log p(y_i | theta)`` at each
        draw, computed without local reparameterisation so that every example sees the same
        weights) and ``observed_data`` (``y``: ``(example,)`` or ``(example, output)``).
    :raises NotFittedError: if a network has not been fitted.
    :raises InputError: for fits of different models, bad data or feature names.
    """
    import arviz as az

    fits = _fitted(bnn, "to_inference_data")
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

    hidden = [layer.spec.name for layer in first.layers[:-1]]
    scale_layers = [layer.spec.name for layer in first.layers if _has_scales(layer)]
    keys = _per_layer_keys([layer.spec.name for layer in first.layers])
    draws: Dict[str, list] = {"feature_inclusion": [], "y": []}
    weight_draws: Dict[str, list] = {}
    bar = progress_bar(progress, total=len(fits) * num_samples, desc="guide draws", unit="draw")
    try:
        for fit in fits:
            features, nodes = inclusion_draws(fit, num_samples)
            draws["feature_inclusion"].append(features.double().cpu().numpy() + 0.0)  # + 0.0: no -0.0
            for name in hidden:
                draws.setdefault(f"node_inclusion_{keys[name]}", []).append(nodes[name].double().cpu().numpy() + 0.0)
            chain: Dict[str, list] = {"y": []}
            chain_weights: Dict[str, list] = {}
            for _ in range(num_samples):
                guide_trace = poutine.trace(fit.guide).get_trace()
                for layer in fit.layers:
                    if layer.spec.name in scale_layers:
                        scale = poutine.replay(layer.model_scale, trace=guide_trace)()
                        chain.setdefault(f"group_scale_{keys[layer.spec.name]}", []).append(
                            scale.double().cpu().numpy())
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
                    draws.setdefault(name, []).append(np.stack(values))
            for name, values in chain_weights.items():
                weight_draws.setdefault(name, []).append(np.stack(values))
    finally:
        bar.close()

    posterior = {"feature_inclusion": np.stack(draws["feature_inclusion"])}
    coords = {"feature": list(feature_names)}
    dims = {"feature_inclusion": ["feature"]}
    layer_of: Dict[str, str] = {}
    for kind, unit, names in (("node_inclusion", "node", hidden), ("group_scale", "group", scale_layers)):
        for name in names:
            variable, dim = f"{kind}_{keys[name]}", f"{unit}_{keys[name]}"
            posterior[variable] = np.stack(draws[variable])
            coords[dim] = np.arange(posterior[variable].shape[-1])
            dims[variable] = [dim]
            layer_of[variable] = name
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
    for variable, name in layer_of.items():
        idata.posterior[variable].attrs["layer"] = name
    return idata


def _has_scales(layer) -> bool:
    """Whether the layer's prior has group scales (a ``model_scale`` returning a tensor)."""
    if not hasattr(layer, "model_scale"):
        return False
    moments = getattr(layer, "log_scale_moments", None)
    return moments is None or moments() is not None


#: codes of :func:`_pinned`: draws that vary; the same number in every draw of every chain;
#: every split chain constant but not all the same (ArviZ's split R-hat is x / 0)
VARYING, CONSTANT, SPLIT_CONSTANT = 0.0, 1.0, 2.0


def _pinned(num_chains: int, num_draws: int) -> Callable[[np.ndarray], float]:
    """A ``stat_funcs`` entry of ``arviz.summary`` (which passes the chains' draws flattened,
    chain after chain) classifying a scalar quantity's draws as :data:`VARYING`,
    :data:`CONSTANT` or :data:`SPLIT_CONSTANT` (halves split as ArviZ splits them)."""
    def classify(samples: np.ndarray) -> float:
        samples = np.asarray(samples, dtype=float).reshape(num_chains, num_draws)
        if not np.isfinite(samples).all():
            return VARYING
        if np.ptp(samples) == 0:
            return CONSTANT
        half = num_draws // 2
        if half and all(np.ptp(part) == 0 for chain in samples for part in (chain[:half], chain[-half:])):
            return SPLIT_CONSTANT
        return VARYING

    return classify


_PINNED_COLUMN = "_pinned"


def summarize(idata: az.InferenceData, var_names=None, **kwargs) -> pd.DataFrame:
    r"""``arviz.summary`` of the posterior of :func:`to_inference_data`, with a defined value
    and no warning for quantities that never change.

    A PIP pinned at 0 or 1 -- the unit is out of (or in) every draw of every fit -- has zero
    variance within and between chains. ArviZ's R-hat divides one by the other: it returns
    NaN and numpy warns (``invalid value encountered in scalar divide``), once per unit. Such
    a quantity is as converged as a quantity can be: every chain gives the same answer with no
    Monte Carlo error. ``summarize`` therefore reports, for a quantity that is identical in
    every draw of every chain, ``r_hat = 1.0``, ``mcse_mean = mcse_sd = 0.0`` and
    ``ess_bulk = ess_tail`` = the number of draws (chains x draws). Everything else is
    ArviZ's value, including:

    * ``r_hat = inf`` where every split chain (each half of each chain, as ArviZ splits
      them) is constant but they are not all the same: e.g. one restart keeps the unit in
      every draw and another drops it in every draw. The restarts disagree and each is
      certain -- the strongest sign of non-convergence there is. ArviZ divides by a
      within-chain variance of zero there (``inf`` with a ``divide by zero`` warning, or
      ~1e16 where rank normalisation leaves round-off); ``summarize`` reports ``inf``.
    * NaN only where the draws themselves hold NaN (never in :func:`to_inference_data`'s
      output).

    The numpy ``RuntimeWarning``\ s of these divisions are silenced only inside the call to
    ArviZ; nothing else is.

    :param idata: an ``arviz.InferenceData`` with a ``posterior`` group.
    :param var_names: variables to summarise (default: all), as for ``arviz.summary``.
    :param kwargs: passed to ``arviz.summary`` (``kind``, ``hdi_prob``, ``round_to``, ...),
        except ``fmt`` and ``stat_funcs``, which it does not take.
    :returns: ArviZ's wide summary table, one row per scalar quantity.
    """
    import arviz as az

    if not isinstance(idata, az.InferenceData) or "posterior" not in idata.groups():
        raise InputError("summarize needs an arviz.InferenceData with a posterior group (to_inference_data)")
    for key in ("fmt", "stat_funcs", "group"):
        if key in kwargs:
            raise InputError(f"summarize does not take {key!r}: it returns the wide table of the posterior")
    with warnings.catch_warnings():
        # 0/0 and x/0 of R-hat and MCSE for constant draws: handled below
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"arviz(\.|$)")
        sizes = idata.posterior.sizes
        classify = _pinned(sizes["chain"], sizes["draw"])
        table = az.summary(idata, var_names=var_names, stat_funcs={_PINNED_COLUMN: classify}, **kwargs)
    pinned = table.pop(_PINNED_COLUMN).to_numpy()
    if "r_hat" in table.columns:
        table.loc[pinned == SPLIT_CONSTANT, "r_hat"] = np.inf
    constant = pinned == CONSTANT
    if constant.any():
        num_draws = sizes["chain"] * sizes["draw"]
        for column, value in (("r_hat", 1.0), ("mcse_mean", 0.0), ("mcse_sd", 0.0), ("mcse_median", 0.0),
                              ("ess_bulk", float(num_draws)), ("ess_tail", float(num_draws)),
                              ("ess_median", float(num_draws))):
            if column in table.columns:
                table.loc[constant, column] = value
    return table


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


def _khat_meaning(khat: float, ess: float, num_samples: int, bnn: bool) -> str:
    """What a k-hat says about the guide, in a sentence or three (:class:`VariationalKhat`)."""
    guide = "the mean-field guide" if bnn else "the guide"
    expectations = ("predictions and PIPs read off the guide" if bnn
                    else "expectations under the guide")
    weights = f"effective sample size {ess:.1f} of {num_samples} draws"
    if khat == -np.inf:
        return (f"every log importance ratio is the same: {guide} equals the posterior up to a constant; "
                f"{expectations} are exact up to Monte Carlo error.")
    reading = khat_interpretation(khat)
    if reading == "good":
        return (f"k-hat < 0.5: {guide} covers the posterior well in the importance-sampling sense "
                f"({weights}); {expectations} and their importance-weighted versions can be trusted.")
    if reading == "ok":
        return (f"0.5 <= k-hat < 0.7: {guide}'s tails are lighter than the posterior's ({weights}); "
                f"{expectations} may be a little overconfident, importance-weighted ones are reliable.")
    meaning = (f"k-hat >= 0.7: {guide} misses posterior mass; the importance weights are dominated by "
               f"a few draws ({weights}), so importance sampling cannot correct the guide, and "
               f"{expectations} may be overconfident (too sure, too narrow).")
    if reading == "very bad":
        meaning += (" With k-hat >= 1 the ratios' tail has no finite mean: one draw dominates, and how far "
                    "k-hat is above 1 says nothing more.")
    return meaning


def _khat_advice(khat: float, bnn: bool) -> str:
    """What to do about a k-hat (:class:`VariationalKhat`); empty when nothing needs doing."""
    reading = khat_interpretation(khat)
    if reading == "good":
        return ""
    if reading == "ok":
        return ("Prefer importance-weighted estimates (weights exp(smoothed_log_weights) on the same guide "
                "draws), and check that k-hat stays below 0.7 with more draws and on other restarts.")
    if not bnn:
        return ("What to do: run the fit from several initialisations and compare them; optimise longer; "
                "use a wider or richer guide (larger initial scales, fewer independence or parameter "
                "constraints); importance-weighted estimates become usable once k-hat is below 0.7.")
    return "\n".join([
        "What to do:",
        "- more restarts: fit several seeds and compare them (to_inference_data(fits) and summarize: "
        "R-hat of the PIPs near 1 means the restarts agree, and such PIPs can be trusted more than k-hat "
        "suggests);",
        "- importance-weighted predictions (weights exp(smoothed_log_weights)) once k-hat is below 0.7; "
        "above it they are as unreliable as the guide;",
        "- a wider guide: larger initial slab scales (a larger init_rho) and less extreme indicators "
        "(init_inclusion, prior_inclusion away from 0 and 1), so the guide is not pinned to one mode;",
        "- longer fits (more epochs, a slower lr_decay): an unconverged guide is narrower than it should be.",
        "A wide mean-field network rarely reaches k-hat < 0.7; judge it also by held-out accuracy and "
        "calibration.",
    ])


@dataclass
class VariationalKhat:
    """Result of :func:`variational_khat`.

    ``str()`` and ``repr()`` say what the value means and, for k-hat >= 0.5, what to do
    (:attr:`meaning`, :attr:`advice`).

    :ivar float khat: Pareto shape estimate of the importance ratios ``p(y, theta) / q(theta)``.
    :ivar np.ndarray log_weights: ``log p(y, theta_s) - log q(theta_s)``, ``(num_samples,)``.
    :ivar np.ndarray smoothed_log_weights: Pareto-smoothed, normalised log weights,
        ``(num_samples,)`` (use them to importance-weight guide draws).
    :ivar bool bnn: whether the model is a :class:`SparseBNN` (:func:`bnn_variational_khat`):
        the explanation then speaks of its mean-field guide, predictions and PIPs.
    """

    khat: float
    log_weights: np.ndarray
    smoothed_log_weights: np.ndarray
    bnn: bool = False

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

    @property
    def meaning(self) -> str:
        """What this k-hat says about the guide (thresholds 0.5, 0.7 and 1 of the PSIS
        literature: Yao et al. 2018, Vehtari et al. 2024)."""
        return _khat_meaning(self.khat, self.ess, len(self.log_weights), self.bnn)

    @property
    def advice(self) -> str:
        """What to do about it (empty for k-hat < 0.5)."""
        return _khat_advice(self.khat, self.bnn)

    def __repr__(self):
        head = (f"VariationalKhat(khat={self.khat:.3f} ({self.interpretation}), "
                f"num_samples={len(self.log_weights)}, ess={self.ess:.1f})")
        return "\n".join(filter(None, [head, self.meaning, self.advice]))

    __str__ = __repr__


@torch.no_grad()
def variational_khat(model: Callable, guide: Callable, *args, num_samples: int = 1000,
                     seed: Optional[int] = None, progress: Optional[bool] = None, **kwargs) -> VariationalKhat:
    """Pareto k-hat diagnostic of a variational approximation (Yao, Vehtari, Simpson & Gelman
    2018, "Yes, but did it work?: Evaluating variational inference").

    For ``num_samples`` draws ``theta_s ~ q`` (``poutine.trace`` of the guide) the log
    importance ratio ``log p(y, theta_s) - log q(theta_s)`` is computed by replaying the model
    on the draw (``poutine.replay``), summing every site's log density (observed sites
    included, plate scales applied); ArviZ's ``psislw`` (which takes these log ratios as
    they are, no sign flip) fits a generalised Pareto distribution to their upper tail.
    Interpretation (the thresholds of the PSIS literature, as in ArviZ): k < 0.5 good,
    0.5-0.7 ok, 0.7-1 bad (importance sampling and the guide's expectations unreliable),
    >= 1 very bad; the result's ``str()`` / ``repr()`` spells out the reading and what to do.

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
    :param progress: progress bar over the draws; ``None`` (default) draws it only in a
        terminal or a notebook.
    :returns: a :class:`VariationalKhat`; print it for what the value means and what to do.
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
    bar = progress_bar(progress, total=num_samples, desc="k-hat draws", unit="draw")
    try:
        for s in range(num_samples):
            guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(*args, **kwargs))
            replayed = _without_local_reparameterization(poutine.replay(model, trace=guide_trace))
            model_trace = prune_subsample_sites(poutine.trace(replayed).get_trace(*args, **kwargs))
            if s == 0:
                missing = [name for name, site in model_trace.nodes.items()
                           if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace.nodes]
                if missing:
                    raise InputError(f"the guide has no site for the model's latent sites {missing}")
            log_weights[s] = float(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
            bar.update(1)
    finally:
        bar.close()
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
                         progress: Optional[bool] = None) -> VariationalKhat:
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
    (bnn,) = _fitted(bnn, "bnn_variational_khat")
    x, y = bnn.check_data(*bnn.as_data(x, y))
    if bnn.num_data is not None and len(x) != bnn.num_data:
        raise InputError(
            f"k-hat needs the full training data: x has {len(x)} examples but the network was fitted "
            f"to num_data={bnn.num_data}"
        )
    result = variational_khat(bnn.model, bnn.guide, x, y, num_samples=num_samples, seed=seed, progress=progress)
    result.bnn = True
    return result


# --------------------------------------------------------------------------------------
# PSIS-LOO and comparison of priors
# --------------------------------------------------------------------------------------
def _as_idata(fits, x, y, num_samples, seed, progress, caller: str, what: str = "bnn") -> az.InferenceData:
    import arviz as az

    if isinstance(fits, az.InferenceData):
        if "log_likelihood" not in fits.groups():
            raise InputError(f"{caller}: the InferenceData{'' if what == 'bnn' else f' {what}'} has no "
                             "log_likelihood group: build it with x and y")
        return fits
    fits = _fitted(fits, caller, what)
    if x is None or y is None:
        raise InputError(f"{caller}: x and y are needed to compute the log-likelihood of fitted networks")
    return to_inference_data(fits, x, y, num_samples=num_samples, seed=seed, progress=progress)


def psis_loo(bnn: Union[Fits, az.InferenceData], x=None, y=None, *, num_samples: int = 500,
             seed: Optional[int] = None, progress: Optional[bool] = None, pointwise: bool = False):
    """PSIS-LOO (``arviz.loo``) of a fitted network, or of several fits as chains.

    The importance ratios are the guide draws' ``1 / p(y_i | theta)``, so this estimates the
    leave-one-out predictive density of the *variational* posterior; its Pareto k-hats say
    where that estimate is unreliable (and a large :func:`bnn_variational_khat` says the
    guide itself is far from the posterior).

    :param bnn: fitted network(s) (then give the training data ``x, y``), or an
        InferenceData with a ``log_likelihood`` group.
    :param progress: progress bar over the guide draws (``None``: only in a terminal or a
        notebook).
    :returns: ArviZ's ``ELPDData`` (``elpd_loo``, ``se``, ``p_loo``, ``pareto_k`` with
        ``pointwise=True``, ...).
    :raises NotFittedError: if a network has not been fitted.
    """
    import arviz as az

    return az.loo(_as_idata(bnn, x, y, num_samples, seed, progress, "psis_loo"), pointwise=pointwise)


def compare_priors(fits: Mapping[str, Union[Fits, az.InferenceData]], x=None, y=None, *,
                   num_samples: int = 500, ic: str = "loo", seed: Optional[int] = 0,
                   progress: Optional[bool] = None) -> pd.DataFrame:
    """``arviz.compare`` of networks (typically with different priors) fitted to the same data.

    :param fits: ``{name: fitted SparseBNN, list of restarts, or InferenceData}``.
    :param x, y: the data every network was fitted to (needed unless all values are
        InferenceData with a ``log_likelihood`` group of the same examples).
    :param int num_samples: guide draws per fit.
    :param str ic: ``"loo"`` (PSIS-LOO, default) or ``"waic"``.
    :param seed: seed of the guide draws (each model is drawn from the same seed).
    :param progress: progress bars over the guide draws (``None``: only in a terminal or a
        notebook).
    :returns: ArviZ's comparison table, best model first (``rank`` 0): ``elpd_<ic>``,
        ``p_<ic>``, ``elpd_diff``, ``weight``, ``se``, ``dse``, ``warning``, ``scale``.
    :raises NotFittedError: naming the model, if one of the networks has not been fitted
        (checked for all of them before anything is drawn).
    :raises InputError: for fewer than two models or log-likelihoods of different data.
    """
    import arviz as az

    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise InputError("compare_priors needs a mapping {name: fit} with at least two models")
    if ic not in ("loo", "waic"):
        raise InputError(f"ic must be 'loo' or 'waic', got {ic!r}")
    for name, fit in fits.items():  # every network checked before any is drawn from
        if not isinstance(fit, az.InferenceData):
            _fitted(fit, "compare_priors", f"fits[{name!r}]")
    idatas = {name: _as_idata(fit, x, y, num_samples, seed, progress, "compare_priors", f"fits[{name!r}]")
              for name, fit in fits.items()}
    sizes = {name: idata.log_likelihood["y"].shape[-1] for name, idata in idatas.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"the models' log-likelihoods cover different numbers of examples: {sizes}")
    with warnings.catch_warnings():  # ArviZ's own use of a pandas keyword that pandas deprecates
        warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame.sort_values")
        return az.compare(idatas, ic=ic)
