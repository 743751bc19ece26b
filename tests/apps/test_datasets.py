"""Offline data: digits and the Bai et al. simulation."""

import math

import numpy as np
import pytest
import torch

from pyro_sparse_bnn import HyperparameterError
from pyro_sparse_bnn.apps.datasets import bai_regression_function, bai_simulation, digits


def test_digits_split_is_standardised_and_stratified():
    data = digits(test_size=0.2, seed=0)
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.long
    assert torch.allclose(data.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.bincount(data.y_test).min() >= 35
    assert len(data.feature_names) == 64 and data.task == "classification"


def test_bai_simulation_relevant_features_and_noise():
    data = bai_simulation(n_train=4000, n_test=6000, num_features=30, noise_scale=1.0, seed=3)
    assert data.relevant_features == [0, 1, 2, 3, 4]
    x = torch.cat([data.x_train, data.x_test]).double().numpy()
    y = torch.cat([data.y_train, data.y_test]).double().numpy()
    assert x.min() >= -1 and x.max() <= 1 and x.shape == (10000, 30)
    residual = y - bai_regression_function(x)
    # sample standard deviation of n = 10000 normal draws: standard error 1 / sqrt(2 n)
    assert abs(residual.std() - 1.0) < 5 / math.sqrt(2 * len(residual))
    assert abs(residual.mean()) < 5 / math.sqrt(len(residual))
    # the response depends on the relevant features only
    x_noise = x.copy()
    x_noise[:, 5:] = 0.0
    assert np.allclose(bai_regression_function(x), bai_regression_function(x_noise))


def test_bai_simulation_formula_at_a_point():
    x = np.zeros((1, 5))
    x[0, :5] = [0.5, 0.4, 0.3, -0.2, 0.1]
    expected = 7 * 0.4 / (1 + 0.25) + 5 * math.sin(0.3 * -0.2) + 2 * 0.1
    assert bai_regression_function(x)[0] == pytest.approx(expected)


def test_bai_simulation_is_seeded_and_validated():
    a, b = bai_simulation(100, 10, 10, seed=1), bai_simulation(100, 10, 10, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    with pytest.raises(HyperparameterError, match="at least 5 features"):
        bai_simulation(num_features=4)


def test_planted_teacher_noise_and_shapes():
    from pyro_sparse_bnn.apps.datasets import planted_teacher

    data = planted_teacher(num_inputs=10, hidden=3, n_train=3000, n_test=3000, noise_scale=0.7, seed=2)
    teacher = data.info["teacher"]
    assert data.x_train.shape == (3000, 10) and teacher[0].weight.shape == (3, 10)
    with torch.no_grad():
        residual = torch.cat([data.y_train, data.y_test]) - teacher(torch.cat([data.x_train, data.x_test]))[:, 0]
    assert abs(float(residual.std()) - 0.7) < 5 * 0.7 / math.sqrt(2 * 6000)
    # every hidden unit of the teacher carries output weight of magnitude 1 to 2
    assert torch.all(teacher[2].weight.abs() >= 1) and torch.all(teacher[2].weight.abs() <= 2)


def test_idx_round_trip_and_missing_files(tmp_path):
    import gzip
    import struct

    from pyro_sparse_bnn import InputError
    from pyro_sparse_bnn.apps.datasets import fashion_mnist, read_idx

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 2, 28, 28) + images.tobytes())
        with open(tmp_path / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 2) + labels.tobytes())
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    data = fashion_mnist(tmp_path)
    assert data.x_train.shape == (2, 784) and data.y_test.tolist() == [3, 7]
    assert fashion_mnist(tmp_path, flatten=False).x_train.shape == (2, 1, 28, 28)
    with pytest.raises(InputError, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist(tmp_path / "missing")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(tmp_path / "bad")


# -- scikit-learn data sets, validation splits and the Saha et al. simulation ---------------------
from pyro_sparse_bnn.apps.datasets import (  # noqa: E402
    SAHA_COMPONENT_VARIANCE,
    breast_cancer,
    diabetes,
    saha_additive_function,
    saha_simulation,
    wine,
)


@pytest.mark.parametrize("loader, n, p, classes", [(breast_cancer, 569, 30, 2), (wine, 178, 13, 3)])
def test_scikit_learn_classification_splits(loader, n, p, classes):
    data = loader(test_size=0.2, val_size=0.2, seed=0)
    sizes = [len(data.x_train), len(data.x_val), len(data.x_test)]
    assert sum(sizes) == n and data.num_features == p and len(data.feature_names) == p
    assert abs(len(data.x_test) - 0.2 * n) <= 1 and abs(len(data.x_val) - 0.2 * n) <= 1
    assert data.y_train.dtype == torch.long and set(data.y_train.tolist()) == set(range(classes))
    # standardised with the training split's statistics only
    assert torch.allclose(data.x_train.mean(0), torch.zeros(p), atol=1e-5)
    assert torch.allclose(data.x_train.std(0, unbiased=False), torch.ones(p), atol=1e-4)
    assert not torch.allclose(data.x_val.mean(0), torch.zeros(p), atol=1e-3)
    # the three parts are disjoint rows of the data set
    rows = torch.cat([data.x_train, data.x_val, data.x_test])
    assert len(torch.unique(rows, dim=0)) == n
    again = loader(test_size=0.2, val_size=0.2, seed=0)
    assert torch.equal(again.x_val, data.x_val)
    assert not torch.equal(loader(test_size=0.2, val_size=0.2, seed=1).x_test, data.x_test)


def test_validation_split_leaves_the_test_split_alone():
    plain, with_val = digits(seed=0), digits(seed=0, val_size=0.1)
    assert plain.x_val is None and plain.y_val is None
    assert torch.equal(plain.y_test, with_val.y_test)
    assert len(with_val.x_train) + len(with_val.x_val) == len(plain.x_train)
    with pytest.raises(HyperparameterError, match="val_size"):
        digits(val_size=1.2)
    with pytest.raises(HyperparameterError, match="test_size \\+ val_size"):
        digits(test_size=0.5, val_size=0.5)


def test_diabetes_targets_are_standardised_and_convertible():
    from sklearn.datasets import load_diabetes

    data = diabetes(seed=0)
    assert data.task == "regression" and data.x_train.shape[1] == 10 and data.y_train.dtype == torch.float32
    assert abs(float(data.y_train.mean())) < 1e-5 and abs(float(data.y_train.std(unbiased=False)) - 1) < 1e-4
    original = torch.cat([data.y_train, data.y_test]) * data.info["target_std"] + data.info["target_mean"]
    assert sorted(original.double().numpy().round(3)) == pytest.approx(sorted(load_diabetes().target), abs=1e-3)
    raw = diabetes(seed=0, standardize_targets=False)
    assert raw.info["target_std"] == 1.0 and float(raw.y_train.mean()) > 100


def test_saha_component_variance_is_exact():
    # midpoint rule on U(-1, 1): f is smooth on each half, so 2e6 points give ~1e-10 accuracy
    grid = (np.arange(2_000_000) + 0.5) / 1_000_000 - 1
    f = saha_additive_function(grid)
    assert SAHA_COMPONENT_VARIANCE == pytest.approx(f.var(), abs=1e-8)
    assert saha_additive_function(np.array([0.25]))[0] == pytest.approx(math.exp(0.25) - 0.5 + 1.0)


@pytest.mark.parametrize("num_features, fraction, snr", [(100, 0.05, 3.0), (40, 0.25, 1.0), (7, 0.01, 0.5)])
def test_saha_simulation_relevant_features_and_noise(num_features, fraction, snr):
    n_train, n_val, n_test = 20000, 5000, 15000
    data = saha_simulation(n_train=n_train, n_test=n_test, num_features=num_features,
                           relevant_fraction=fraction, snr=snr, seed=4, n_val=n_val)
    k = max(1, round(fraction * num_features))
    assert data.relevant_features == list(range(k))
    sigma = math.sqrt(k * SAHA_COMPONENT_VARIANCE) / snr
    assert data.noise_scale == pytest.approx(sigma)
    assert [len(data.x_train), len(data.x_val), len(data.x_test)] == [n_train, n_val, n_test]
    x = torch.cat([data.x_train, data.x_val, data.x_test]).double().numpy()
    y = torch.cat([data.y_train, data.y_val, data.y_test]).double().numpy()
    n = len(y)
    assert x.shape == (n, num_features) and x.min() >= -1 and x.max() <= 1
    signal = saha_additive_function(x[:, :k]).sum(1)
    residual = y - signal
    # float32 storage adds round-off far below these tolerances (5 standard errors)
    assert abs(residual.std() - sigma) < 5 * sigma / math.sqrt(2 * n) + 1e-4 * abs(y).max()
    assert abs(residual.mean()) < 5 * sigma / math.sqrt(n) + 1e-4 * abs(y).max()
    # the signal-to-noise ratio in standard deviations is alpha
    var_f4 = np.mean((saha_additive_function(x[:, 0]) - (math.e - 1)) ** 4)
    se_var = math.sqrt(k * (var_f4 - SAHA_COMPONENT_VARIANCE**2) / n)
    assert abs(signal.var() - k * SAHA_COMPONENT_VARIANCE) < 5 * se_var
    # irrelevant features do not enter the response: uncorrelated with the residual-free signal
    if num_features > k:
        correlation = np.corrcoef(x[:, k:].T, y)[-1, :-1]
        assert np.abs(correlation).max() < 5 / math.sqrt(n)


def test_saha_simulation_is_seeded_and_validated():
    a, b = saha_simulation(200, 50, 20, seed=3), saha_simulation(200, 50, 20, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) and a.x_val is None
    with pytest.raises(HyperparameterError, match="relevant_fraction"):
        saha_simulation(relevant_fraction=0.0)
    with pytest.raises(HyperparameterError, match="snr"):
        saha_simulation(snr=-1.0)
    with pytest.raises(HyperparameterError, match="num_features"):
        saha_simulation(num_features=0)


def test_bai_validation_split_keeps_train_and_test():
    plain, with_val = bai_simulation(100, 50, 10, seed=2), bai_simulation(100, 50, 10, seed=2, n_val=30)
    assert torch.equal(plain.x_train, with_val.x_train) and torch.equal(plain.y_test, with_val.y_test)
    assert with_val.x_val.shape == (30, 10)
    residual = with_val.y_val.double() - torch.as_tensor(bai_regression_function(with_val.x_val.double().numpy()))
    assert float(residual.abs().max()) < 5  # unit noise: 30 draws stay within 5 sd


def test_fashion_mnist_validation_split_and_any_directory(tmp_path):
    import struct

    from pyro_sparse_bnn import InputError
    from pyro_sparse_bnn.apps.datasets import fashion_mnist

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = (np.arange(50) % 10).astype(np.uint8)
    for prefix, n in (("train", 50), ("t10k", 20)):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", n, 28, 28) + images[:n].tobytes())
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", n) + labels[:n].tobytes())
    data = fashion_mnist(tmp_path, n_val=10, seed=1)
    assert data.x_train.shape == (40, 784) and data.x_val.shape == (10, 784) and data.x_test.shape == (20, 784)
    # training and validation images are a partition of the training file
    pixels = torch.cat([data.x_train, data.x_val])
    assert len(torch.unique(pixels, dim=0)) == 50
    # standardised with the training part's statistics (one mean and sd for all pixels)
    assert abs(float(data.x_train.mean())) < 1e-4 and abs(float(data.x_train.std(unbiased=False)) - 1) < 1e-3
    expected = images[:20].reshape(20, -1).astype(np.float32) / 255.0
    assert np.allclose(np.corrcoef(data.x_test.numpy().ravel(), expected.ravel())[0, 1], 1.0)
    with pytest.raises(HyperparameterError, match="n_val"):
        fashion_mnist(tmp_path, n_val=50)
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "train-images-idx3-ubyte").write_bytes(
        struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 1, 5, 5) + bytes(25))
    (tmp_path / "wrong" / "train-labels-idx1-ubyte").write_bytes(
        struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 1) + bytes(1))
    with pytest.raises(InputError, match="expected \\(28, 28\\)"):
        fashion_mnist(tmp_path / "wrong")


def test_idx_reader_types_and_truncation(tmp_path):
    import struct

    from pyro_sparse_bnn import InputError
    from pyro_sparse_bnn.apps.datasets import read_idx

    values = np.array([[1.5, -2.0], [3.25, 0.0], [7.0, 8.0]], dtype=">f4")
    (tmp_path / "floats").write_bytes(struct.pack(">BBBB", 0, 0, 0x0D, 2) + struct.pack(">II", 3, 2)
                                      + values.tobytes())
    assert np.array_equal(read_idx(tmp_path / "floats"), values)
    (tmp_path / "short").write_bytes(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 5) + bytes(3))
    with pytest.raises(InputError, match="header announces shape"):
        read_idx(tmp_path / "short")


def test_loader_registry_names_every_loader():
    from pyro_sparse_bnn.apps.datasets import LOADERS

    assert {"digits", "breast_cancer", "wine", "diabetes", "fashion_mnist", "bai_simulation",
            "saha_simulation"} <= set(LOADERS)


def test_fashion_mnist_fixed_pixel_scalings(tmp_path):
    import struct

    from pyro_sparse_bnn.apps.datasets import fashion_mnist

    pixels = np.array([0, 51, 255] + [128] * (28 * 28 - 3), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 1, 28, 28) + pixels.tobytes())
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 1) + bytes(1))
    symmetric = fashion_mnist(tmp_path, scaling="symmetric")
    assert symmetric.x_test[0, :3].tolist() == pytest.approx([-1.0, 2 * 51 / 255 - 1, 1.0], abs=1e-6)
    assert symmetric.info["scaling"] == "symmetric"
    unit = fashion_mnist(tmp_path, scaling="unit")
    assert unit.x_train[0, :3].tolist() == pytest.approx([0.0, 0.2, 1.0], abs=1e-6)
    # the default standardises: one mean and sd over every training pixel
    standard = fashion_mnist(tmp_path).x_train
    assert abs(float(standard.mean())) < 1e-4 and abs(float(standard.std(unbiased=False)) - 1) < 1e-3
    with pytest.raises(HyperparameterError, match="scaling must be one of"):
        fashion_mnist(tmp_path, scaling="minmax")
