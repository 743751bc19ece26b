"""Bad input gets a clear exception that names the problem."""

import numpy as np
import pytest
import torch
from torch import nn

from pyro_sparse_bnn import (
    HyperparameterError,
    InputError,
    SparseBNN,
    SpikeSlab,
    UnsupportedLayerError,
    fit,
)
from tests.conftest import mlp, randomize_guide


@pytest.fixture
def bnn():
    torch.manual_seed(0)
    return SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), num_data=8)


@pytest.fixture
def regression_bnn():
    torch.manual_seed(0)
    return SparseBNN(mlp([3, 4, 1]), SpikeSlab(prior_inclusion=0.1), likelihood="gaussian", num_data=8)


X = torch.randn(8, 3)
Y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])


def nan_at(row):
    x = X.clone()
    x[row, 1] = float("nan")
    return x


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.randn(8, 4), Y, r"shape \(8, 4\) but the network expects \(batch, 3\)"),
        (torch.randn(8), Y, r"shape \(8,\) but the network expects"),
        (torch.randn(7, 3), Y, "mismatched number of examples: x has 7, y has 8"),
        (nan_at(5), Y, "x contains NaN values \\(first in row 5\\)"),
        (X.clone().index_fill_(0, torch.tensor([2]), float("inf")), Y, "x contains inf"),
        (X, torch.tensor([0, 1, 2, 0, 1, 0, 0, 1]), r"class labels y must lie in \[0, 2\)"),
        (X, -Y, r"must lie in \[0, 2\).*\[-1, 0\]"),
        (X, Y.float(), "must be an integer tensor"),
        (X, Y.view(2, 4), r"must have shape \(batch,\)"),
        (X.long(), Y, "must be a floating-point tensor"),
        (X.double(), Y, "dtype torch.float64 but the network's parameters are torch.float32"),
        (torch.empty(0, 3), Y[:0], "empty"),
        ("not a tensor", Y, "must be a torch.Tensor"),
    ],
)
def test_bad_classification_data(bnn, x, y, message):
    with pytest.raises(InputError, match=message):
        bnn.model(x, y)


@pytest.mark.parametrize(
    "y, message",
    [
        (torch.tensor([0.0, 1.0, float("nan"), 0, 0, 0, 0, 0]), "y contains NaN"),
        (torch.ones(8, 2), r"targets y must have shape \(batch,\)"),
        (torch.ones(8, dtype=torch.long), "must be floating point"),
    ],
)
def test_bad_regression_targets(regression_bnn, y, message):
    with pytest.raises(InputError, match=message):
        regression_bnn.model(X, y)


def test_fit_converts_numpy_and_checks_everything_up_front(bnn):
    with pytest.raises(InputError, match="x contains NaN"):
        fit(bnn, np.where(np.eye(8, 3) > 0, np.nan, 0.0), Y.numpy(), epochs=1, progress=False)
    with pytest.raises(InputError, match="y is None"):
        fit(bnn, X, None, epochs=1, progress=False)
    with pytest.raises(InputError, match="built with num_data=8 but the training data has 6"):
        fit(bnn, X[:6], Y[:6], epochs=1, progress=False)


@pytest.mark.parametrize(
    "module, message",
    [
        (nn.Conv2d(1, 2, 3), r"net.1 = Conv2d"),
        (nn.BatchNorm1d(4), "batch normalisation is not supported"),
        (nn.Dropout(0.5), "remove it"),
        (nn.PReLU(), "PReLU has parameters"),
    ],
)
def test_unsupported_layers_are_named(module, message):
    net = nn.Sequential(nn.Linear(3, 4), module, nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=message):
        SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=8)


def test_final_softmax_is_rejected_with_a_hint():
    net = nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=-1))
    with pytest.raises(UnsupportedLayerError, match="takes logits"):
        SparseBNN(net, SpikeSlab(prior_inclusion=0.1), num_data=8)


def test_architecture_errors():
    with pytest.raises(UnsupportedLayerError, match="needs an nn.Sequential"):
        SparseBNN(nn.Linear(3, 2), SpikeSlab(prior_inclusion=0.1), num_data=8)
    with pytest.raises(UnsupportedLayerError, match="no nn.Linear"):
        SparseBNN(nn.Sequential(nn.ReLU()), SpikeSlab(prior_inclusion=0.1), num_data=8)
    with pytest.raises(UnsupportedLayerError, match="net.0 has 4 outputs but net.2 expects 5"):
        SparseBNN(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)), SpikeSlab(prior_inclusion=0.1))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_non_positive_temperature(bnn, temperature):
    with pytest.raises(HyperparameterError, match="temperature"):
        SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), temperature=temperature)
    with pytest.raises(HyperparameterError, match="temperature"):
        bnn.set_temperature(temperature)
    with pytest.raises(HyperparameterError, match="temperature"):
        fit(bnn, X, Y, epochs=1, temperature=temperature, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(lr_decay=-1.0), "lr_decay"),
        (dict(kl_warmup=-2), "kl_warmup"),
        (dict(temperature=(1.0, 2.0, 3.0)), "temperature as a tuple"),
    ],
)
def test_bad_fit_arguments(bnn, kwargs, message):
    with pytest.raises(HyperparameterError, match=message):
        fit(bnn, X, Y, progress=False, **kwargs)


@pytest.mark.parametrize("num_data", [0, -3, 2.5, True])
def test_bad_num_data(num_data):
    with pytest.raises(HyperparameterError, match="num_data"):
        SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), num_data=num_data)


def test_bad_likelihoods():
    with pytest.raises(HyperparameterError, match="likelihood must be one of"):
        SparseBNN(mlp([3, 4, 2]), SpikeSlab(prior_inclusion=0.1), likelihood="poisson")
    with pytest.raises(HyperparameterError, match="at least 2 outputs"):
        SparseBNN(mlp([3, 4, 1]), SpikeSlab(prior_inclusion=0.1), likelihood="categorical")


def test_predict_validates(bnn):
    randomize_guide(bnn)
    with pytest.raises(InputError, match="num_samples"):
        bnn.predict(X, num_samples=0)
    with pytest.raises(InputError, match="expects"):
        bnn.predict(torch.randn(4, 5))


@pytest.mark.parametrize("value, expected", [(3, 3), (np.int64(2), 2), (4.0, 4)])
def test_integer_checks_accept_integers(value, expected):
    from pyro_sparse_bnn.core.validation import check_non_negative_int, check_positive_int

    assert check_positive_int("n", value) == expected and type(check_positive_int("n", value)) is int
    assert check_non_negative_int("n", value) == expected
    assert check_non_negative_int("n", 0) == 0


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", None, float("nan"), float("inf")])
def test_positive_int_names_the_argument(value):
    from pyro_sparse_bnn.core.validation import check_positive_int

    with pytest.raises(HyperparameterError, match=f"num_things must be a positive integer, got {value!r}"):
        check_positive_int("num_things", value)
    with pytest.raises(InputError, match="num_things must be a positive integer"):
        check_positive_int("num_things", value, InputError)


@pytest.mark.parametrize("value", [-1, 0.5, False, "0", float("nan")])
def test_non_negative_int_names_the_argument(value):
    from pyro_sparse_bnn.core.validation import check_non_negative_int, check_seed

    with pytest.raises(HyperparameterError, match=f"n_val must be a non-negative integer, got {value!r}"):
        check_non_negative_int("n_val", value)
    with pytest.raises(HyperparameterError, match="seed must be None or a non-negative integer"):
        check_seed(value)
    assert check_seed(None) is None and check_seed(np.int32(7)) == 7
