"""The model and its fitting: distributions, priors, the Bayesian network, the
reparameterisation, the ELBO, the optimiser and :func:`fit`. Imports nothing from the other
subpackages.
"""

from .distributions import ConcreteBernoulli, GatedNormal, bernoulli_kl, normal_kl
from .elbo import MeanFieldELBO
from .errors import (
    DegenerateNetworkWarning,
    ExportError,
    HyperparameterError,
    InputError,
    NonFiniteLossError,
    NotFittedError,
    SaveFileError,
    SparseBNNError,
    UnsupportedLayerError,
)
from .fit import FitHistory, fit, geometric_temperature
from .likelihoods import CategoricalLikelihood, GaussianLikelihood, Prediction
from .nets import lenet5_caffe, lenet_300_100, mlp
from .network import SparseBNN
from .priors import (
    GroupHorseshoe,
    GroupNormalJeffreys,
    Prior,
    PriorLayer,
    SelfCompressingGaussian,
    SpikeSlab,
    SpikeSlabGroupHorseshoe,
    SpikeSlabGroupLasso,
    SpikeSlabNode,
    theory_prior_inclusion,
)
from .reparameterization import LocalReparameterization, local_reparameterization

__all__ = [
    "ConcreteBernoulli",
    "GatedNormal",
    "bernoulli_kl",
    "normal_kl",
    "MeanFieldELBO",
    "DegenerateNetworkWarning",
    "ExportError",
    "HyperparameterError",
    "InputError",
    "NonFiniteLossError",
    "NotFittedError",
    "SaveFileError",
    "SparseBNNError",
    "UnsupportedLayerError",
    "FitHistory",
    "fit",
    "geometric_temperature",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "Prediction",
    "lenet5_caffe",
    "lenet_300_100",
    "mlp",
    "SparseBNN",
    "GroupHorseshoe",
    "GroupNormalJeffreys",
    "Prior",
    "PriorLayer",
    "SelfCompressingGaussian",
    "SpikeSlab",
    "SpikeSlabGroupHorseshoe",
    "SpikeSlabGroupLasso",
    "SpikeSlabNode",
    "theory_prior_inclusion",
    "LocalReparameterization",
    "local_reparameterization",
]
