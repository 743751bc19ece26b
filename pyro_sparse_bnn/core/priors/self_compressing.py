"""Self-compression (Carannante, Dera, Rasool & Bouaynaya 2020/2021): a plain mean-field
Gaussian BNN, whose redundant units are found from the fitted guide.

Every weight and bias has the prior ``N(0, sigma_0^2)`` and the guide ``N(mu, sigma^2)``;
there are no indicators and no group scales, so the KL is the closed-form Gaussian KL
``log(sigma_0 / sigma) + (sigma^2 + mu^2) / (2 sigma_0^2) - 1/2`` per entry (torch's
registered ``Normal``/``Normal`` KL; no Monte Carlo). The weight is the Gaussian slab itself
(``LayerDraw(slab)``, scale 1), so the local reparameterisation handler applies unchanged.

Units that the network does not need end with a posterior close to the prior: means near 0
and standard deviations near ``sigma_0``. The *relevance* of unit ``j`` (a node of a linear
layer, an output channel of a conv layer: row ``j`` of the augmented ``(out_units, fan_in +
1)`` matrix) is read off its row of means ``mu_j`` and standard deviations ``sigma_j``:

* posterior-mean norm ``||mu_j||_2`` (the Frobenius norm of the filter and its bias);
* signal-to-noise ratio ``SNR_j = ||mu_j||_2 / ||sigma_j||_2`` -- ``|mu| / sigma`` aggregated
  over the row as a ratio of norms, so that ``SNR_j^2 = sum mu^2 / sum sigma^2``.

Inclusion probabilities. So that ``compress``, ``inclusion_summary`` and the diagnostics read
this prior like every other one, a unit's *inclusion probability* is the Bayesian
Compression convention applied to the row: ``1 / (1 + alpha_j)`` with the group dropout rate
``alpha_j = sum sigma^2 / sum mu^2 = 1 / SNR_j^2``, i.e. ``SNR_j^2 / (1 + SNR_j^2)``. It is a
relevance score on a probability scale, not the probability of a switch. The keep rule
``SNR_j > snr_threshold`` (1/2 by default: the mean carries at least a quarter of the noise's
power) is the PIP threshold ``snr_threshold^2 / (1 + snr_threshold^2)`` (0.2). The output layer's units are never pruned:
their inclusion probability is 1. :mod:`pyro_sparse_bnn.analysis.self_compression` prunes by either
score iteratively and refits.
"""

from typing import Optional

import pyro
import torch

from ..validation import check_finite_number, check_positive
from .base import (
    GaussianSlab,
    LayerDraw,
    LayerSpec,
    NetworkInfo,
    Prior,
    PriorLayer,
    model_value,
)

__all__ = ["SelfCompressingGaussian", "SelfCompressingLayer", "row_relevance", "RELEVANCE_SCORES"]

#: the relevance scores of a unit: posterior-mean norm and signal-to-noise ratio
RELEVANCE_SCORES = ("snr", "norm")


def row_relevance(mean: torch.Tensor, var: Optional[torch.Tensor], score: str = "snr") -> torch.Tensor:
    """Relevance of every unit from the moments of its row of the augmented matrix.

    :param mean: posterior means ``(out_units, fan_in + 1)`` (or any ``(out_units, ...)``).
    :param var: posterior variances of the same shape (unused for ``score="norm"``).
    :param str score: ``"norm"``: ``||mu_j||_2``; ``"snr"``: ``||mu_j||_2 / ||sigma_j||_2``.
    :returns: ``(out_units,)``.
    """
    norm = mean.flatten(1).square().sum(1).sqrt()
    if score == "norm":
        return norm
    if score == "snr":
        return norm / var.flatten(1).sum(1).sqrt().clamp(min=torch.finfo(mean.dtype).tiny)
    raise ValueError(f"score must be one of {RELEVANCE_SCORES}, got {score!r}")


class SelfCompressingGaussian(Prior):
    """Gaussian prior ``N(0, prior_scale^2)`` on every weight and bias with a mean-field
    Gaussian guide (the self-compressing BNN of Carannante et al.).

    :param float prior_scale: prior standard deviation ``sigma_0`` (1).
    :param float init_rho: initial ``rho`` of the guide; ``sigma = softplus(rho)`` (-5:
        ``sigma = 0.0067``, so the network starts close to its initial weights).
    :param float snr_threshold: keep rule of ``compress`` and the summaries: a unit is kept
        when its signal-to-noise ratio exceeds it (0.5), i.e. when its inclusion probability
        ``SNR^2 / (1 + SNR^2)`` exceeds :attr:`threshold` (0.2).

    Why 1/2 and not 1: the row SNR divides by the spread of *all* of a unit's incoming
    weights, and a weight the data do not determine -- one on an input that is irrelevant,
    redundant or constant (the border pixels of scikit-learn's digits) -- keeps a posterior
    standard deviation near ``prior_scale``, while the useful weights are 0.1 to 0.5 in size.
    On data sets of a few hundred to a few thousand examples the units that carry the
    network's function therefore have a row SNR between about 0.5 and 2 (measured on the
    digits, breast cancer, wine and diabetes data with 200 epochs): a threshold of 1 deleted
    most of them (breast cancer: every unit, a constant network; digits: 0.55 to 0.76 accuracy
    against 0.97 for the BNN), a threshold of 1/2 kept the compressed network within a point
    of the BNN's accuracy on all four. The Bayesian network itself does not depend on it;
    ``snr_threshold=1`` is the stricter rule "the mean dominates the noise".
    """

    def __init__(self, prior_scale: float = 1.0, init_rho: float = -5.0, snr_threshold: float = 0.5):
        self.prior_scale = check_positive("prior_scale", prior_scale)
        self.init_rho = check_finite_number("init_rho", init_rho)
        self.snr_threshold = check_positive("snr_threshold", snr_threshold)

    @property
    def threshold(self) -> float:
        """The PIP threshold ``t^2 / (1 + t^2)`` of ``snr_threshold = t``."""
        return self.snr_threshold**2 / (1 + self.snr_threshold**2)

    def build(self, spec: LayerSpec, network: NetworkInfo) -> "SelfCompressingLayer":
        return SelfCompressingLayer(spec, self)


class SelfCompressingLayer(PriorLayer):
    """Per-layer module of :class:`SelfCompressingGaussian`.

    One sample site, ``<layer>.slab``, of the augmented shape ``(out_units, fan_in + 1)``
    (row ``j``: incoming weights of unit ``j``, then its bias): ``Normal(0, sigma_0)`` in the
    model, ``Normal(mu, softplus(rho))`` in the guide, initialised at the user's weights.
    """

    def __init__(self, spec: LayerSpec, prior: SelfCompressingGaussian):
        super().__init__(spec, prior.threshold)
        self.slab = GaussianSlab(spec.augment(spec.module.weight, spec.module.bias), prior.prior_scale,
                                 prior.init_rho)

    def model(self) -> LayerDraw:
        slab = pyro.sample(self.site("slab"), self.slab.prior_dist())
        return LayerDraw(slab=model_value(slab, self.slab.loc.dim()))

    def guide(self, temperature=None) -> None:
        self.slab.guide_sample(self, "slab")

    # -- relevance ------------------------------------------------------------------------
    @torch.no_grad()
    def relevance(self, score: str = "snr") -> torch.Tensor:
        """Relevance of every output unit, ``(out_units,)`` (see :func:`row_relevance`)."""
        return row_relevance(*self.weight_moments(), score)

    @torch.no_grad()
    def group_inclusion_probs(self) -> torch.Tensor:
        """``SNR_j^2 / (1 + SNR_j^2) = sum mu^2 / (sum mu^2 + sum sigma^2)`` per output unit,
        ``(out_units,)``; all ones for the output layer (its units are never pruned)."""
        mu, var = self.weight_moments()
        if self.spec.is_output:
            return torch.ones(self.spec.out_units, dtype=mu.dtype, device=mu.device)
        signal = mu.square().sum(1)
        return signal / (signal + var.sum(1))

    # -- readouts -------------------------------------------------------------------------
    def output_inclusion_probs(self) -> torch.Tensor:
        return self.group_inclusion_probs()

    def inclusion_groups(self) -> torch.Tensor:
        """One relevance 'switch' per output unit (conv: channel), shape ``row_shape``."""
        return self.group_inclusion_probs().view(self.spec.row_shape)

    def keep_masks(self, threshold=None):
        threshold = self.default_threshold if threshold is None else threshold
        keep = self.group_inclusion_probs() > threshold
        weight_mask = keep.view(self.spec.row_shape).expand(self.spec.weight_shape)
        return weight_mask, (keep if self.spec.has_bias else None)

    @torch.no_grad()
    def posterior_mean(self):
        return self.spec.split(self.slab.loc.detach().clone())

    @torch.no_grad()
    def weight_moments(self):
        """``(mu, sigma^2)`` of every entry of the augmented matrix."""
        return self.slab.loc.detach().clone(), self.slab.scale.square()
