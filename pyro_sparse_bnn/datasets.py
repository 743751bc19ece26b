"""Offline data sets: scikit-learn's bundled data and the simulations of the papers.

Nothing here downloads anything. Every loader returns a :class:`DataSplit` of float32 inputs
(standardised with the training split's statistics) and labels or targets as tensors.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from .errors import HyperparameterError, InputError

#: where Debian's ``dataset-fashion-mnist`` package puts the IDX files
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

__all__ = [
    "DataSplit",
    "digits",
    "fashion_mnist",
    "read_idx",
    "FASHION_MNIST_DIR",
    "bai_simulation",
    "bai_regression_function",
    "planted_teacher",
    "standardize",
]


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


def planted_teacher(
    num_inputs: int = 10,
    hidden: int = 3,
    n_train: int = 2000,
    n_test: int = 2000,
    noise_scale: float = 0.5,
    seed: int = 0,
) -> DataSplit:
    """Regression data from a small random ``num_inputs - hidden - 1`` tanh network (the
    *teacher*), for checking that a wider student prunes down to the teacher's size.

    ``x ~ N(0, I)``; the teacher has standard-normal input weights scaled by
    ``1 / sqrt(num_inputs)``, zero biases, output weights of magnitude 1 to 2 with random
    signs (so every hidden unit matters) and ``y = teacher(x) + N(0, noise_scale^2)``.
    ``info["teacher"]`` holds the teacher as an ``nn.Sequential``.
    """
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(num_inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    with torch.no_grad():
        teacher[0].weight.copy_(torch.randn(hidden, num_inputs, generator=generator) / num_inputs**0.5 * 2)
        teacher[0].bias.zero_()
        signs = torch.randint(0, 2, (1, hidden), generator=generator) * 2 - 1
        teacher[2].weight.copy_(signs * (1 + torch.rand(1, hidden, generator=generator)))
        teacher[2].bias.zero_()
        x = torch.randn(n_train + n_test, num_inputs, generator=generator)
        y = teacher(x)[:, 0] + noise_scale * torch.randn(n_train + n_test, generator=generator)
    return DataSplit(
        x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
        feature_names=[f"x{i}" for i in range(num_inputs)], task="regression",
        relevant_features=list(range(num_inputs)), noise_scale=noise_scale,
        info={"teacher": teacher, "hidden": hidden},
    )


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array.

    The header is two zero bytes, a type code, the number of dimensions and one big-endian
    ``uint32`` per dimension; the data follow in row-major order.
    """
    import gzip
    from pathlib import Path

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InputError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset != expected:
        raise InputError(f"{path}: header announces shape {shape} but the file holds "
                         f"{len(data) - offset} bytes of data instead of {expected}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def _find_idx(directory, stem):
    from pathlib import Path

    for name in (stem, stem + ".gz"):
        candidate = Path(directory) / name
        if candidate.exists():
            return candidate
    raise InputError(
        f"{stem}[.gz] not found in {directory}. Fashion-MNIST ships offline as a Debian "
        f"package: `apt-get install -y dataset-fashion-mnist` puts it in {FASHION_MNIST_DIR}; "
        f"or pass directory= pointing at any folder with the four IDX files (MNIST works too)"
    )


def fashion_mnist(
    directory=None,
    flatten: bool = True,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
) -> DataSplit:
    """Fashion-MNIST (60,000 training and 10,000 test images of 28x28 pixels, 10 classes) read
    from IDX files; any directory with the four standard files works (e.g. real MNIST).

    Pixels are scaled to [0, 1] and standardised with the training set's mean and standard
    deviation (one value each, so images stay images).

    :param directory: folder with ``train-images-idx3-ubyte[.gz]`` and friends (default: the
        Debian package's :data:`FASHION_MNIST_DIR`).
    :param bool flatten: return ``(n, 784)`` inputs (``True``) or ``(n, 1, 28, 28)`` images.
    :param n_train: keep only the first ``n_train`` training images (for quick runs).
    :param n_test: keep only the first ``n_test`` test images.
    :raises InputError: if the files are missing (the message says how to get them).
    """
    directory = FASHION_MNIST_DIR if directory is None else directory
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte")).astype(np.float32) / 255.0
        labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if len(images) != len(labels):
            raise InputError(f"{directory}: {len(images)} {split} images but {len(labels)} labels")
        limit = n_train if split == "train" else n_test
        parts[split] = (images[:limit], labels[:limit])
    mean, std = parts["train"][0].mean(), parts["train"][0].std()
    shape = (-1, 28 * 28) if flatten else (-1, 1, 28, 28)

    def as_tensors(images, labels):
        x = torch.as_tensor(((images - mean) / std).reshape(shape), dtype=torch.float32)
        return x, torch.as_tensor(labels)

    x_train, y_train = as_tensors(*parts["train"])
    x_test, y_test = as_tensors(*parts["test"])
    return DataSplit(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        feature_names=[f"pixel_{r}_{c}" for r in range(28) for c in range(28)],
        task="classification",
        info={"image_shape": (28, 28), "classes": FASHION_MNIST_CLASSES, "directory": str(directory)},
    )
