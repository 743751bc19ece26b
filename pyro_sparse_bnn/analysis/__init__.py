"""What to do with a fitted network: inclusion probabilities, diagnostics, calibration,
plots, compression (thresholds, frontiers, bits, fine-tuning), moment propagation and
self-compression. Imports only from :mod:`pyro_sparse_bnn.core`; ArviZ, matplotlib and pandas
load when a function that needs them is first called.
"""

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
    layer_variables,
    psis_loo,
    summarize,
    to_inference_data,
    variational_khat,
)
from .finetune import Finetuned, TrainingHistory, finetune
from .frontier import Frontier, frontier, layerwise_frontier
from .inclusion import (
    edge_inclusion_probs,
    feature_inclusion_probs,
    group_scale_summary,
    inclusion_draws,
    inclusion_summary,
    node_inclusion_probs,
)
from .moment_propagation import MomentPrediction, fit_moments, moment_loss, moment_predict
from .plots import (
    plot_elbo,
    plot_frontier,
    plot_group_scales,
    plot_inclusion_forest,
    plot_inclusion_heatmap,
    plot_reliability_diagram,
)
from .self_compression import (
    CompressionRound,
    SelfCompression,
    select_units,
    self_compress,
    shrink_bnn,
    unit_relevance,
)

__all__ = [
    "LayerPrecision",
    "compression_rates",
    "round_to_precision",
    "weight_moments",
    "CalibrationBins",
    "accuracy",
    "expected_calibration_error",
    "interval_coverage",
    "predictive_pit",
    "Compressed",
    "CompressionReport",
    "ConstantOutput",
    "SelectInputs",
    "ThresholdChoice",
    "compress",
    "masked_posterior_mean",
    "VariationalKhat",
    "bnn_variational_khat",
    "compare_priors",
    "psis_loo",
    "to_inference_data",
    "summarize",
    "layer_variables",
    "variational_khat",
    "Finetuned",
    "TrainingHistory",
    "finetune",
    "Frontier",
    "frontier",
    "layerwise_frontier",
    "edge_inclusion_probs",
    "feature_inclusion_probs",
    "group_scale_summary",
    "inclusion_draws",
    "inclusion_summary",
    "node_inclusion_probs",
    "MomentPrediction",
    "fit_moments",
    "moment_loss",
    "moment_predict",
    "plot_elbo",
    "plot_frontier",
    "plot_group_scales",
    "plot_inclusion_forest",
    "plot_inclusion_heatmap",
    "plot_reliability_diagram",
    "CompressionRound",
    "SelfCompression",
    "select_units",
    "self_compress",
    "shrink_bnn",
    "unit_relevance",
]
