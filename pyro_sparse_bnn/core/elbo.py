"""The ELBO used for fitting: Pyro's mean-field ELBO without the log-densities it never uses.

:class:`MeanFieldELBO` computes the same estimator as :class:`pyro.infer.TraceMeanField_ELBO`
-- expected log-likelihood of the observed sites plus a closed-form KL for every latent site
whose (guide, model) pair has one registered with :func:`torch.distributions.kl.register_kl`,
and a Monte Carlo ``log p - log q`` term for the rest -- but evaluates log-densities only
where they enter the estimator. ``TraceMeanField_ELBO`` computes the log-density of every
site of both traces first (a full pass over every weight-shaped tensor that it then
discards), which is a large part of a step's cost for sparse BNNs.

It is a drop-in Pyro ELBO: ``SVI(bnn.model, bnn.guide, optim, MeanFieldELBO())``.
"""

import math
from typing import Dict

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.trace_mean_field_elbo import _check_mean_field_requirement
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch.distributions import kl_divergence

from .reparameterization import PLACEHOLDER

__all__ = ["MeanFieldELBO", "site_log_prob_sum"]


def site_log_prob_sum(site) -> torch.Tensor:
    """Log-density of a traced sample site, scaled by its plates' scale and mask, summed.

    :raises RuntimeError: for a site whose value is a placeholder that was never drawn
        (:class:`~pyro_sparse_bnn.core.reparameterization.LocalReparameterization` with
        ``skip_slab_draws``): its log-density would be meaningless.
    """
    if site["infer"].get(PLACEHOLDER):
        raise RuntimeError(
            f"site {site['name']!r} holds a placeholder, not a draw (local reparameterisation "
            "with skip_slab_draws=True), but its log-density is needed because its KL has no "
            "closed form: use skip_slab_draws=False"
        )
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def _structure(trace) -> tuple:
    """What Pyro's model/guide checks look at, in a form that is cheap to compare: the sample
    sites in order with their distribution types, observation flags and value shapes."""
    return tuple(
        (name, type(site["fn"]), site["is_observed"], site["value"].shape)
        for name, site in trace.nodes.items() if site["type"] == "sample"
    )


class MeanFieldELBO(TraceMeanField_ELBO):
    """Mean-field ELBO with analytic KLs where registered and lazily computed log-densities.

    :param int num_particles: Monte Carlo particles per step (default 1).
    :param int max_plate_nesting: plate nesting of the model (1: the data plate).
    :param float kl_weight: weight ``w`` of the KL terms, ``E[log p(y | w)] - w * KL``; 1
        (the default) is the ELBO. :func:`~pyro_sparse_bnn.core.fit.fit` anneals it from 0 to 1
        during a warm-up (KL annealing), letting the network fit the data before the
        sparsity prior starts to prune.
    Other keyword arguments are those of :class:`pyro.infer.ELBO`.

    With Pyro's validation enabled (its default), the model/guide consistency checks of
    ``TraceMeanField_ELBO`` (matching sites and shapes, mean-field site order) run whenever
    the traces' structure -- site names, distribution types and value shapes -- differs from
    the last one checked, not at every step.
    """

    _checked_structure = None

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, kl_weight: float = 1.0,
                 **kwargs):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)
        self.kl_weight = float(kl_weight)
        #: ``{site: description}`` of the non-finite terms of the last non-finite loss (see
        #: :meth:`non_finite_terms`); empty until one occurs
        self.non_finite_sites: Dict[str, str] = {}
        #: the trace structure (see :func:`_structure`) that last passed Pyro's model/guide checks
        self._checked_structure = None

    def _get_trace(self, model, guide, args, kwargs):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        if is_validation_enabled():
            # the structure of a model and guide rarely changes between steps: check it when it does
            structure = (id(model), id(guide), _structure(model_trace), _structure(guide_trace))
            if structure != self._checked_structure:
                check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
                _check_mean_field_requirement(model_trace, guide_trace)
                self._checked_structure = structure
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def _site_terms(self, model_trace, guide_trace):
        """Yield ``(site name, is_kl, term)`` for every site that enters the estimator: the
        scaled log-likelihood of each observed site (``is_kl=False``) and the KL (closed form,
        or ``log q - log p`` at the draw) of each latent and auxiliary site."""
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                yield name, False, site_log_prob_sum(model_site)
                continue
            guide_site = guide_trace.nodes[name]
            if not guide_site["fn"].has_rsample:
                raise NotImplementedError(
                    f"MeanFieldELBO needs reparameterised guide sites; {name!r} is not"
                )
            try:
                kl = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                yield name, True, site_log_prob_sum(guide_site) - site_log_prob_sum(model_site)
                continue
            yield name, True, scale_and_mask(kl, guide_site["scale"], guide_site["mask"]).sum()

        for name, guide_site in guide_trace.nodes.items():
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                if not guide_site["infer"].get("is_auxiliary"):
                    raise ValueError(f"guide site {name!r} is not in the model")
                yield name, True, site_log_prob_sum(guide_site)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        log_likelihood, kl_total = 0.0, 0.0
        for _, is_kl, term in self._site_terms(model_trace, guide_trace):
            if is_kl:
                kl_total = kl_total + term
            else:
                log_likelihood = log_likelihood + term
        surrogate_loss = self.kl_weight * kl_total - log_likelihood
        loss = torch_item(surrogate_loss)
        if not math.isfinite(loss):  # only on failure: find the sites, while the traces exist
            self.non_finite_sites = self.non_finite_terms(model_trace, guide_trace)
        return loss, surrogate_loss

    def non_finite_terms(self, model_trace, guide_trace) -> Dict[str, str]:
        """Diagnose a non-finite loss: re-evaluate every site's term on the given traces and
        return ``{site name: description}`` for the terms that are NaN or infinite, e.g.
        ``{"net.0.slab": "KL = nan"}`` (``"log-likelihood = -inf"`` for observed
        sites). The last failure seen while computing a loss is kept in
        :attr:`non_finite_sites`."""
        found = {}
        for name, is_kl, term in self._site_terms(model_trace, guide_trace):
            value = float(term.detach()) if isinstance(term, torch.Tensor) else float(term)
            if not math.isfinite(value):
                found[name] = f"{'KL' if is_kl else 'log-likelihood'} = {value}"
        return found

    @torch.no_grad()
    def diagnose(self, model, guide, *args, **kwargs) -> Dict[str, str]:
        """Run ``guide`` and ``model`` once with distribution validation off and return
        :meth:`non_finite_terms` of the traces: the sites whose terms are not finite, for a
        step that failed before a loss existed (a distribution rejected NaN parameters)."""
        with pyro.validation_enabled(False):
            model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
            return self.non_finite_terms(model_trace, guide_trace)
