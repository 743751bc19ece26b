"""Offline data sets: scikit-learn's bundled data and the simulations of the papers.

Nothing here downloads anything. Every loader returns a :class:`DataSplit` of float32 inputs
(standardised with the training split's statistics) and labels or targets as tensors.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from .errors import HyperparameterError

__all__ = ["DataSplit", "digits", "bai_simulation", "bai_regression_function", "standardize"]


@dataclass
class DataSplit:
    """Train/test tensors and what is known about the features.

    :ivar x_train: ``(n_train, p)`` float32. :ivar y_train: ``(n_train,)``.
    :ivar x_test: ``(n_test, p)`` float32. :ivar y_test: ``(n_test,)``.
    :ivar feature_names: one name per input column.
    :ivar relevant_features: indices of the truly relevant inputs (simulations only).
    :ivar noise_scale: standard deviation of the observation noise (simulations only).
    :ivar task: ``"classification"`` or ``"regression"``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: List[str]
    task: str
    relevant_features: Optional[List[int]] = None
    noise_scale: Optional[float] = None
    info: dict = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]


def standardize(train: np.ndarray, *others: np.ndarray):
    """Centre and scale columns by the training split's mean and standard deviation
    (constant columns are only centred)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return tuple((a - mean) / std for a in (train,) + others)


def _train_test(x, y, test_size, seed, stratify):
    from sklearn.model_selection import train_test_split

    return train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )


def digits(test_size: float = 0.2, seed: int = 0) -> DataSplit:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 64 pixel features, 10 classes),
    stratified train/test split, pixels standardised."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x_train, x_test, y_train, y_test = _train_test(data.data, data.target, test_size, seed, True)
    x_train, x_test = standardize(x_train, x_test)
    return DataSplit(
        x_train=torch.as_tensor(x_train, dtype=torch.float32),
        y_train=torch.as_tensor(y_train, dtype=torch.long),
        x_test=torch.as_tensor(x_test, dtype=torch.float32),
        y_test=torch.as_tensor(y_test, dtype=torch.long),
        feature_names=[f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
        task="classification",
        info={"image_shape": (8, 8)},
    )


def bai_regression_function(x: np.ndarray) -> np.ndarray:
    """``7 x_2 / (1 + x_1^2) + 5 sin(x_3 x_4) + 2 x_5`` (1-based feature numbers)."""
    return 7 * x[:, 1] / (1 + x[:, 0] ** 2) + 5 * np.sin(x[:, 2] * x[:, 3]) + 2 * x[:, 4]


def bai_simulation(
    n_train: int = 3000,
    n_test: int = 10000,
    num_features: int = 200,
    noise_scale: float = 1.0,
    seed: int = 0,
) -> DataSplit:
    """Bai et al. (2020) variable-selection simulation.

    ``x ~ U(-1, 1)^p``, ``y = 7 x_2 / (1 + x_1^2) + 5 sin(x_3 x_4) + 2 x_5 + N(0, noise^2)``;
    features 0 to 4 (0-based) are relevant, the others are noise. Inputs are not
    standardised (they are already on a common scale).
    """
    if num_features < 5:
        raise HyperparameterError(f"the Bai simulation needs at least 5 features, got {num_features}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n_train + n_test, num_features))
    y = bai_regression_function(x) + noise_scale * rng.standard_normal(n_train + n_test)
    as_float = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return DataSplit(
        x_train=as_float(x[:n_train]),
        y_train=as_float(y[:n_train]),
        x_test=as_float(x[n_train:]),
        y_test=as_float(y[n_train:]),
        feature_names=[f"x{i + 1}" for i in range(num_features)],
        task="regression",
        relevant_features=[0, 1, 2, 3, 4],
        noise_scale=noise_scale,
    )
