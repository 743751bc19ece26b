"""Offline data: digits and the Bai et al. simulation."""

import math

import numpy as np
import pytest
import torch

from pyro_sparse_bnn import HyperparameterError
from pyro_sparse_bnn.datasets import bai_regression_function, bai_simulation, digits


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
    from pyro_sparse_bnn.datasets import planted_teacher

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
    from pyro_sparse_bnn.datasets import fashion_mnist, read_idx

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
