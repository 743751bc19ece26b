"""pyro_sparse_bnn: sparsity-inducing priors for Bayesian neural networks, built on Pyro.

Typical use::

    from torch import nn
    import pyro_sparse_bnn as psb

    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    bnn = psb.SparseBNN(net, psb.SpikeSlab(), likelihood="categorical")
    history = psb.fit(bnn, x_train, y_train, epochs=200)
    print(psb.inclusion_summary(bnn))
    front = psb.frontier(bnn, x_val, y_val)   # size / validation accuracy at many thresholds
    module, report = psb.compress(bnn, threshold=front.select(tolerance=0.01))
    tuned, _ = psb.finetune(module, x_train, y_train, epochs=5)   # structure fixed
    psb.save(bnn, "bnn.pt", history)          # bnn = psb.load("bnn.pt")
    psb.export(tuned, "net.pt2", example_input=x_train[:8])

The package is layered, and imports run one way only (see ``docs/architecture.md``):

* :mod:`pyro_sparse_bnn.core`: distributions, priors, the network, the ELBO and fitting;
* :mod:`pyro_sparse_bnn.analysis`: inclusion probabilities, diagnostics, plots, compression;
* :mod:`pyro_sparse_bnn.persistence`: save files and export;
* :mod:`pyro_sparse_bnn.apps`: the zoo, the command line, the demo, data sets, baselines.

The names below are the ones most scripts need; everything else is reachable from its
subpackage, e.g. ``from pyro_sparse_bnn.analysis import plot_inclusion_forest``.
"""

from .analysis import compress, finetune, frontier, inclusion_summary, layerwise_frontier
from .core import (
    DegenerateNetworkWarning,
    ExportError,
    GroupHorseshoe,
    GroupNormalJeffreys,
    HyperparameterError,
    InputError,
    NonFiniteLossError,
    NotFittedError,
    SaveFileError,
    SelfCompressingGaussian,
    SparseBNN,
    SparseBNNError,
    SpikeSlab,
    SpikeSlabGroupHorseshoe,
    SpikeSlabGroupLasso,
    SpikeSlabNode,
    UnsupportedLayerError,
    fit,
    lenet5_caffe,
    lenet_300_100,
    mlp,
)
from .core.version import __version__
from .persistence import export, load, save

__all__ = [
    "SparseBNN",
    "mlp",
    "lenet_300_100",
    "lenet5_caffe",
    "SpikeSlab",
    "SpikeSlabNode",
    "SpikeSlabGroupLasso",
    "SpikeSlabGroupHorseshoe",
    "GroupNormalJeffreys",
    "GroupHorseshoe",
    "SelfCompressingGaussian",
    "fit",
    "inclusion_summary",
    "frontier",
    "layerwise_frontier",
    "compress",
    "finetune",
    "save",
    "load",
    "export",
    "SparseBNNError",
    "InputError",
    "HyperparameterError",
    "UnsupportedLayerError",
    "NotFittedError",
    "NonFiniteLossError",
    "SaveFileError",
    "ExportError",
    "DegenerateNetworkWarning",
    "__version__",
]
