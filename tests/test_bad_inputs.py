"""A catalogue of bad inputs across the public API: each gets the right exception and a
message that names the argument and what was expected."""

import pytest
import torch
from torch import nn

import pyro_sparse_bnn as psb
import pyro_sparse_bnn.apps
from pyro_sparse_bnn import (
    HyperparameterError,
    InputError,
    NotFittedError,
    SaveFileError,
    SparseBNN,
    SpikeSlab,
    UnsupportedLayerError,
)
from pyro_sparse_bnn.persistence import load_state
from tests.conftest import mlp, randomize_guide

X = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % 3


def net():
    torch.manual_seed(0)
    return SparseBNN(mlp([5, 4, 3]), SpikeSlab(prior_inclusion=0.2))


def fitted():
    return randomize_guide(net())


def with_value(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def fit(**kwargs):
    arguments = dict(x=X, y=Y, epochs=1, progress=False)
    arguments.update(kwargs)
    bnn = arguments.pop("bnn", None) or net()
    return psb.fit(bnn, arguments.pop("x"), arguments.pop("y"), **arguments)


def saved_then(tmp_path, action):
    path = psb.save(fitted(), tmp_path / "bnn.pt")
    return action(path)


CASES = {
    # -- building the network ------------------------------------------------------
    "net not a Sequential": (lambda t: SparseBNN(nn.Linear(5, 3), SpikeSlab(prior_inclusion=0.2)),
                             UnsupportedLayerError, "needs an nn.Sequential"),
    "dropout layer": (lambda t: SparseBNN(nn.Sequential(nn.Linear(5, 4), nn.Dropout(), nn.Linear(4, 3)),
                                          SpikeSlab(prior_inclusion=0.2)),
                      UnsupportedLayerError, r"unsupported layer net.1 = Dropout.*remove it"),
    "categorical network ending in ReLU": (
        lambda t: SparseBNN(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU()), SpikeSlab()),
        InputError, "ends in ReLU, but the categorical likelihood reads the outputs of the last layer as logits"),
    "categorical network ending in Sigmoid": (
        lambda t: SparseBNN(nn.Sequential(nn.Linear(5, 3), nn.Sigmoid()), SpikeSlab()), InputError, "ends in Sigmoid"),
    "batch norm layer": (lambda t: SparseBNN(nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)),
                                             SpikeSlab(prior_inclusion=0.2)),
                         UnsupportedLayerError, "batch normalisation is not supported"),
    "prior not a Prior": (lambda t: SparseBNN(mlp([5, 4, 3]), "spike-and-slab"),
                          HyperparameterError, "prior must be a Prior or a sequence of Priors"),
    "wrong number of priors": (lambda t: SparseBNN(mlp([5, 4, 3]), [SpikeSlab(prior_inclusion=0.2)] * 3),
                               HyperparameterError, "got 3 priors for a network with 2 parametric layers"),
    "num_data zero": (lambda t: SparseBNN(mlp([5, 4, 3]), SpikeSlab(prior_inclusion=0.2), num_data=0),
                      HyperparameterError, "num_data must be a positive integer, got 0"),
    "negative temperature": (lambda t: SparseBNN(mlp([5, 4, 3]), SpikeSlab(prior_inclusion=0.2), temperature=-1.0),
                             HyperparameterError, "temperature"),
    "prior inclusion above 1": (lambda t: SpikeSlab(prior_inclusion=1.5), HyperparameterError, "prior_inclusion"),
    "negative prior scale": (lambda t: SpikeSlab(prior_scale=-1.0), HyperparameterError, "prior_scale"),
    "conv net without input shape": (lambda t: SparseBNN(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(),
                                                                       nn.Linear(8, 2)), SpikeSlab(prior_inclusion=0.2)),
                                     HyperparameterError, r"pass input_shape=\(channels, height, width\)"),
    # -- fit: data -------------------------------------------------------------------
    "x of the wrong width": (lambda t: fit(x=X[:, :4]), InputError,
                             r"x has shape \(12, 4\) but the network expects \(batch, 5\)"),
    "integer x": (lambda t: fit(x=X.long()), InputError, "x must be a floating-point tensor, got dtype torch.int64"),
    "float64 x for a float32 network": (lambda t: fit(x=X.double()), InputError,
                                        "x has dtype torch.float64 but the network's parameters are torch.float32"),
    "NaN in x": (lambda t: fit(x=with_value(X, (3, 1), float("nan"))), InputError, r"x contains NaN values \(first in row 3\)"),
    "inf in x": (lambda t: fit(x=with_value(X, (7, 0), float("inf"))), InputError, r"x contains inf values \(first in row 7\)"),
    "labels out of range": (lambda t: fit(y=with_value(Y, 2, 3)), InputError, r"class labels y must lie in \[0, 3\)"),
    "float labels": (lambda t: fit(y=Y.float()), InputError, "class labels y must be an integer tensor"),
    "x and y of different lengths": (lambda t: fit(y=Y[:10]), InputError, "mismatched number of examples: x has 12, y has 10"),
    "empty data": (lambda t: fit(x=X[:0], y=Y[:0]), InputError, r"x is empty \(batch size 0\)"),
    "no targets": (lambda t: fit(y=None), InputError, "y is None: fit needs targets"),
    "not a network": (lambda t: psb.fit(mlp([5, 4, 3]), X, Y), InputError, "fit needs a SparseBNN as bnn, got Sequential"),
    "regression targets of the wrong shape": (
        lambda t: psb.fit(SparseBNN(mlp([5, 4, 2]), SpikeSlab(prior_inclusion=0.2), likelihood="gaussian"),
                          X, torch.randn(12), progress=False),
        InputError, r"regression targets y must have shape \(batch, 2\), got \(12,\)"),
    # -- fit: hyperparameters ------------------------------------------------------------
    "zero epochs": (lambda t: fit(epochs=0), HyperparameterError, "epochs must be a positive integer, got 0"),
    "fractional batch size": (lambda t: fit(batch_size=2.5), HyperparameterError, "batch_size must be a positive integer"),
    "negative learning rate": (lambda t: fit(lr=-1e-3), HyperparameterError, "lr"),
    "temperature tuple of three": (lambda t: fit(temperature=(1.0, 0.5, 0.1)), HyperparameterError,
                                   r"temperature as a tuple must be \(start, end\)"),
    "shuffle not a bool": (lambda t: fit(shuffle="yes"), HyperparameterError, "shuffle must be True or False"),
    "callbacks not functions": (lambda t: fit(callbacks=[1]), HyperparameterError, "callbacks must be a sequence of functions"),
    "checkpoint_every zero": (lambda t: fit(checkpoint=t / "c.pt", checkpoint_every=0), HyperparameterError,
                              "checkpoint_every must be a positive integer"),
    "checkpoint in a missing directory": (lambda t: fit(checkpoint=t / "missing" / "c.pt"), InputError,
                                          "need a file name in an existing, writable directory"),
    "resume from a missing file": (lambda t: fit(resume=t / "nothing.pt"), InputError, "is not a file"),
    "resume from a saved network": (lambda t: saved_then(t, lambda path: fit(resume=path)), SaveFileError,
                                    "a saved network, not a checkpoint"),
    # -- prediction, compression, inclusion, diagnostics ---------------------------------------
    "zero predictive samples": (lambda t: fitted().predict(X, num_samples=0), InputError,
                                "num_samples must be a positive integer, got 0"),
    "predict on the wrong width": (lambda t: fitted().predict(X[:, :3]), InputError,
                                   r"x has shape \(12, 3\) but the network expects \(batch, 5\)"),
    "compress an unfitted network": (lambda t: psb.compress(net()), NotFittedError, "compress: the network has not been fitted"),
    "predict with an unfitted network": (lambda t: net().predict(X), NotFittedError, "predict: the network has not been fitted"),
    "summarise an unfitted network": (lambda t: psb.inclusion_summary(net()), NotFittedError,
                                      "inclusion_summary: the network has not been fitted"),
    "compress a plain module": (lambda t: psb.compress(mlp([5, 4, 3])), InputError, "compress needs a SparseBNN as bnn"),
    "PIP threshold above 1": (lambda t: psb.compress(fitted(), threshold=1.5), HyperparameterError,
                              r"threshold must lie in \[0, 1\].*SpikeSlab, got 1.5"),
    "threshold not a number": (lambda t: psb.inclusion_summary(fitted(), threshold="high"), HyperparameterError,
                               "threshold must be None, a finite number or one per layer"),
    "bits not a bool": (lambda t: psb.compress(fitted(), bits="yes"), HyperparameterError, "bits must be True or False"),
    "PIPs of a plain module": (lambda t: psb.analysis.node_inclusion_probs(mlp([5, 4, 3])), InputError,
                               "node_inclusion_probs needs a SparseBNN as bnn, got Sequential"),
    "zero inclusion draws": (lambda t: psb.analysis.inclusion_draws(fitted(), num_samples=0), InputError,
                             "num_samples must be a positive integer, got 0"),
    "InferenceData of an unfitted network": (lambda t: psb.analysis.to_inference_data(net()), NotFittedError, "has not been fitted"),
    # -- save, load, export ------------------------------------------------------------
    "save a plain module": (lambda t: psb.save(mlp([5, 4, 3]), t / "m.pt"), InputError, "save needs a SparseBNN as bnn"),
    "save into a missing directory": (lambda t: psb.save(fitted(), t / "no" / "m.pt"), InputError, "does not exist"),
    "save a wrong history": (lambda t: psb.save(fitted(), t / "m.pt", history=[1.0]), InputError,
                             "history must be the FitHistory returned by fit"),
    "load a corrupt file": (lambda t: (t / "x.pt").write_bytes(b"\x00garbage") and psb.load(t / "x.pt"), SaveFileError,
                            "corrupt or not a file written by torch.save"),
    "load into another architecture": (
        lambda t: saved_then(t, lambda path: load_state(SparseBNN(mlp([5, 6, 3]), SpikeSlab(prior_inclusion=0.2)), path)),
        SaveFileError, r"different architecture: module net.0 is Linear"),
    "load into another prior": (
        lambda t: saved_then(t, lambda path: load_state(SparseBNN(mlp([5, 4, 3]), psb.GroupHorseshoe()), path)),
        SaveFileError, r"different prior for layer net.0: SpikeSlab\(.*\) there, GroupHorseshoe\(.*\) here"),
    "export the network instead of the compressed module": (lambda t: psb.export(fitted(), t / "m.pt2"), InputError,
                                                            "export takes the compressed deterministic module"),
    "export to an unknown format": (lambda t: psb.export(psb.compress(fitted()).module, t / "m.x", format="tflite"),
                                    InputError, "format must be one of"),
    "fine-tune the network instead of the compressed module": (lambda t: psb.finetune(fitted(), X, Y), InputError,
                                                               "finetune takes a deterministic module"),
    "fine-tune a constant output": (lambda t: psb.finetune(psb.analysis.ConstantOutput(torch.zeros(3)), X, Y), InputError,
                                    "keeps no input"),
    "fine-tune with labels out of range": (lambda t: psb.finetune(psb.compress(fitted()).module, X, Y + 1),
                                           InputError, r"must lie in \[0, 3\)"),
    "prune to widths of another network": (lambda t: psb.apps.magnitude_prune(mlp([5, 4, 3]), (5, 4, 4, 3)), InputError,
                                           "needs 3: inputs, one per hidden layer, outputs"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_error(case, tmp_path):
    action, error, message = CASES[case]
    with pytest.raises(error, match=message):
        action(tmp_path)


def test_the_catalogue_is_large_and_every_error_is_a_library_error():
    assert len(CASES) >= 25
    assert all(issubclass(error, psb.SparseBNNError) for _, error, _ in CASES.values())
