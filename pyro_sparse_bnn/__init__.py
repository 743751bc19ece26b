"""pyro_sparse_bnn: sparsity-inducing priors for Bayesian neural networks, built on Pyro.

Typical use::

    from torch import nn
    import pyro_sparse_bnn as psb

    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    bnn = psb.SparseBNN(net, psb.SpikeSlab(), likelihood="categorical")
    history = psb.fit(bnn, x_train, y_train, epochs=200)
    print(psb.inclusion_summary(bnn))
    module, report = psb.compress(bnn)
    front = psb.frontier(bnn, x_val, y_val)   # size / validation accuracy at many thresholds
    module, report = psb.compress(bnn, threshold=front.select(tolerance=0.01))
    psb.save(bnn, "bnn.pt", history)          # bnn = psb.load("bnn.pt")
    psb.export(module, "bnn.ts", example_input=x_train[:8])
    tuned, history = psb.finetune(module, x_train, y_train, epochs=5)   # structure fixed
"""

from .baselines import magnitude_prune, train_from_scratch
from .bits import LayerPrecision, compression_rates, round_to_precision, weight_moments
from .calibration import (
    CalibrationBins,
    accuracy,
    expected_calibration_error,
    interval_coverage,
    predictive_pit,
)
from .compress import (
    Compressed,
    CompressionReport,
    ConstantOutput,
    SelectInputs,
    ThresholdChoice,
    compress,
    masked_posterior_mean,
)
from .diagnostics import (
    VariationalKhat,
    bnn_variational_khat,
    compare_priors,
    psis_loo,
    to_inference_data,
    variational_khat,
)
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
from .export import export
from .finetune import Finetuned, TrainingHistory, finetune
from .fit import FitHistory, fit, geometric_temperature
from .frontier import Frontier, frontier, layerwise_frontier
from .inclusion import (
    edge_inclusion_probs,
    feature_inclusion_probs,
    group_scale_summary,
    inclusion_draws,
    inclusion_summary,
    node_inclusion_probs,
)
from .likelihoods import CategoricalLikelihood, GaussianLikelihood, Prediction
from .moment_propagation import MomentPrediction, fit_moments, moment_loss, moment_predict
from .nets import lenet5_caffe, lenet_300_100, mlp
from .network import SparseBNN
from .plots import (
    plot_elbo,
    plot_frontier,
    plot_group_scales,
    plot_inclusion_forest,
    plot_inclusion_heatmap,
    plot_reliability_diagram,
)
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
from .self_compression import (
    CompressionRound,
    SelfCompression,
    select_units,
    self_compress,
    shrink_bnn,
    unit_relevance,
)
from .serialization import load, load_history, load_state, save

__version__ = "0.1.0"

__all__ = [
    "SparseBNN",
    "lenet5_caffe",
    "lenet_300_100",
    "mlp",
    "SpikeSlab",
    "SpikeSlabNode",
    "SpikeSlabGroupLasso",
    "SpikeSlabGroupHorseshoe",
    "GroupNormalJeffreys",
    "GroupHorseshoe",
    "SelfCompressingGaussian",
    "Prior",
    "PriorLayer",
    "theory_prior_inclusion",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "Prediction",
    "MeanFieldELBO",
    "LocalReparameterization",
    "local_reparameterization",
    "fit",
    "FitHistory",
    "geometric_temperature",
    "edge_inclusion_probs",
    "node_inclusion_probs",
    "feature_inclusion_probs",
    "inclusion_summary",
    "group_scale_summary",
    "inclusion_draws",
    "to_inference_data",
    "variational_khat",
    "bnn_variational_khat",
    "VariationalKhat",
    "psis_loo",
    "compare_priors",
    "accuracy",
    "expected_calibration_error",
    "CalibrationBins",
    "interval_coverage",
    "predictive_pit",
    "plot_inclusion_forest",
    "plot_inclusion_heatmap",
    "plot_elbo",
    "plot_group_scales",
    "plot_reliability_diagram",
    "plot_frontier",
    "frontier",
    "layerwise_frontier",
    "Frontier",
    "compress",
    "Compressed",
    "CompressionReport",
    "SelectInputs",
    "ConstantOutput",
    "ThresholdChoice",
    "masked_posterior_mean",
    "finetune",
    "Finetuned",
    "TrainingHistory",
    "magnitude_prune",
    "train_from_scratch",
    "weight_moments",
    "LayerPrecision",
    "round_to_precision",
    "compression_rates",
    "ConcreteBernoulli",
    "GatedNormal",
    "bernoulli_kl",
    "normal_kl",
    "SparseBNNError",
    "InputError",
    "HyperparameterError",
    "UnsupportedLayerError",
    "NotFittedError",
    "NonFiniteLossError",
    "SaveFileError",
    "ExportError",
    "DegenerateNetworkWarning",
    "save",
    "load",
    "load_history",
    "load_state",
    "export",
    "self_compress",
    "SelfCompression",
    "CompressionRound",
    "unit_relevance",
    "select_units",
    "shrink_bnn",
    "moment_predict",
    "moment_loss",
    "fit_moments",
    "MomentPrediction",
]
