"""Offline data sets: scikit-learn's bundled data and the simulations of the papers.

Nothing here downloads anything. Every loader returns a :class:`DataSplit` of float32 inputs
(standardised with the training split's statistics) and labels or targets as tensors, split
into training, optional validation and test parts with a seed.

=========================  =================================================  ===============================
loader                     data                                               task
=========================  =================================================  ===============================
:func:`digits`             scikit-learn 8x8 digits, 1,797 x 64                classification, 10 classes
:func:`breast_cancer`      scikit-learn Wisconsin breast cancer, 569 x 30     classification, 2 classes
:func:`wine`               scikit-learn wine, 178 x 13                        classification, 3 classes
:func:`diabetes`           scikit-learn diabetes, 442 x 10                    regression
:func:`fashion_mnist`      IDX files (Fashion-MNIST or MNIST), 70,000 x 784   classification, 10 classes
:func:`bai_simulation`     Bai et al. (2020) simulation                       regression, 5 relevant inputs
:func:`saha_simulation`    Saha et al. (2024) additive simulation             regression, ``pi * D`` relevant
:func:`planted_teacher`    small tanh teacher network                         regression
=========================  =================================================  ===============================

:data:`LOADERS` maps these names to the functions (the model zoo's ``[data] name``).
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from ..core.errors import HyperparameterError, InputError
from ..core.validation import check_non_negative_int, check_positive_int

#: where Debian's ``dataset-fashion-mnist`` package puts the IDX files
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

__all__ = [
    "DataSplit",
    "LOADERS",
    "digits",
    "breast_cancer",
    "wine",
    "diabetes",
    "saha_simulation",
    "saha_additive_function",
    "SAHA_COMPONENT_VARIANCE",
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
    :ivar x_val: ``(n_val, p)`` validation inputs, or ``None`` when no validation split was
        asked for. :ivar y_val: ``(n_val,)`` or ``None``.
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
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    def subset(self, n_train: Optional[int] = None, n_test: Optional[int] = None,
               n_val: Optional[int] = None) -> "DataSplit":
        """The first ``n_train`` / ``n_val`` / ``n_test`` examples of each split (``None``:
        all), e.g. a small slice for a smoke test. Standardisation is not redone."""
        from dataclasses import replace

        def head(t, n):
            return None if t is None or n is None else t[:n]

        return replace(
            self,
            x_train=self.x_train if n_train is None else self.x_train[:n_train],
            y_train=self.y_train if n_train is None else self.y_train[:n_train],
            x_test=self.x_test if n_test is None else self.x_test[:n_test],
            y_test=self.y_test if n_test is None else self.y_test[:n_test],
            x_val=self.x_val if n_val is None else head(self.x_val, n_val),
            y_val=self.y_val if n_val is None else head(self.y_val, n_val),
        )


def standardize(train: np.ndarray, *others: np.ndarray):
    """Centre and scale columns by the training split's mean and standard deviation
    (constant columns are only centred)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return tuple((a - mean) / std for a in (train,) + others)


def _check_fraction(name, value, allow_zero):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (0 <= value if allow_zero else 0 < value) and value < 1):
        raise HyperparameterError(f"{name} must be a fraction in {'[0' if allow_zero else '(0'}, 1), got {value!r}")
    return float(value)


def _three_way(x, y, test_size, val_size, seed, stratify):
    """Seeded ``(x_train, x_val, x_test, y_train, y_val, y_test)``; ``val_size`` and
    ``test_size`` are fractions of the whole data set (``x_val``/``y_val`` are ``None`` when
    ``val_size`` is 0). With ``val_size = 0`` the split is scikit-learn's
    ``train_test_split(x, y, test_size, random_state=seed)``."""
    from sklearn.model_selection import train_test_split

    test_size = _check_fraction("test_size", test_size, allow_zero=False)
    val_size = _check_fraction("val_size", val_size, allow_zero=True)
    if test_size + val_size >= 1:
        raise HyperparameterError(f"test_size + val_size must be below 1, got {test_size} + {val_size}")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y if stratify else None)
    if val_size == 0:
        return x_train, None, x_test, y_train, None, y_test
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=val_size / (1 - test_size), random_state=seed + 1,
        stratify=y_train if stratify else None)
    return x_train, x_val, x_test, y_train, y_val, y_test


def _float(a):
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _scikit_learn(load, test_size, val_size, seed, task, feature_names=None,
                  standardize_targets=True, info=None) -> DataSplit:
    """Split, standardise and wrap one of scikit-learn's bundled data sets."""
    data = load()
    classification = task == "classification"
    x_train, x_val, x_test, y_train, y_val, y_test = _three_way(
        data.data, data.target, test_size, val_size, seed, stratify=classification)
    parts = [a for a in (x_train, x_val, x_test) if a is not None]
    scaled = iter(standardize(*parts))
    x_train = next(scaled)
    x_val = None if x_val is None else next(scaled)
    x_test = next(scaled)
    info = dict(info or {})
    if classification:
        target = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.long)  # noqa: E731
    else:
        mean, std = (float(y_train.mean()), float(y_train.std())) if standardize_targets else (0.0, 1.0)
        info.update(target_mean=mean, target_std=std)
        target = lambda a: None if a is None else _float((a - mean) / std)  # noqa: E731
    return DataSplit(
        x_train=_float(x_train), y_train=target(y_train), x_test=_float(x_test), y_test=target(y_test),
        x_val=_float(x_val), y_val=target(y_val),
        feature_names=list(feature_names if feature_names is not None else data.feature_names),
        task=task, info=info,
    )


def digits(test_size: float = 0.2, seed: int = 0, val_size: float = 0.0) -> DataSplit:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 64 pixel features, 10 classes),
    stratified train/(validation/)test split, pixels standardised.

    :param test_size: fraction of the images in the test split.
    :param val_size: fraction of the images in the validation split (0: none).
    """
    from sklearn.datasets import load_digits

    return _scikit_learn(load_digits, test_size, val_size, seed, "classification",
                         feature_names=[f"pixel_{r}_{c}" for r in range(8) for c in range(8)],
                         info={"image_shape": (8, 8)})


def breast_cancer(test_size: float = 0.2, seed: int = 0, val_size: float = 0.0) -> DataSplit:
    """scikit-learn's Wisconsin diagnostic breast cancer data: 569 tumours, 30 real-valued
    features, label 0 = malignant, 1 = benign. Stratified split, features standardised with
    the training split's statistics. Inputs ``(n, 30)``, labels ``(n,)``."""
    from sklearn.datasets import load_breast_cancer

    return _scikit_learn(load_breast_cancer, test_size, val_size, seed, "classification",
                         info={"classes": ["malignant", "benign"]})


def wine(test_size: float = 0.2, seed: int = 0, val_size: float = 0.0) -> DataSplit:
    """scikit-learn's wine recognition data: 178 wines, 13 chemical features, 3 cultivars.
    Stratified split, features standardised. Inputs ``(n, 13)``, labels ``(n,)``."""
    from sklearn.datasets import load_wine

    return _scikit_learn(load_wine, test_size, val_size, seed, "classification")


def diabetes(test_size: float = 0.2, seed: int = 0, val_size: float = 0.0,
             standardize_targets: bool = True) -> DataSplit:
    """scikit-learn's diabetes data: 442 patients, 10 baseline features, a quantitative
    measure of disease progression one year later as the regression target.

    Features are standardised with the training split's statistics; so is the target when
    ``standardize_targets`` (``info["target_mean"]`` and ``info["target_std"]`` convert
    predictions and RMSEs back to the original units). Inputs ``(n, 10)``, targets ``(n,)``.
    """
    from sklearn.datasets import load_diabetes

    return _scikit_learn(load_diabetes, test_size, val_size, seed, "regression",
                         standardize_targets=standardize_targets)


def bai_regression_function(x: np.ndarray) -> np.ndarray:
    """``7 x_2 / (1 + x_1^2) + 5 sin(x_3 x_4) + 2 x_5`` (1-based feature numbers)."""
    return 7 * x[:, 1] / (1 + x[:, 0] ** 2) + 5 * np.sin(x[:, 2] * x[:, 3]) + 2 * x[:, 4]


def _simulated_split(x, y, n_train, n_val, n_test, names, relevant, noise_scale, info=None) -> DataSplit:
    """Training, validation and test parts of simulated rows, in that order (every row is
    an independent draw, so consecutive blocks are random splits)."""
    as_float = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    train, val = slice(0, n_train), slice(n_train, n_train + n_val)
    test = slice(n_train + n_val, n_train + n_val + n_test)
    return DataSplit(
        x_train=as_float(x[train]), y_train=as_float(y[train]),
        x_test=as_float(x[test]), y_test=as_float(y[test]),
        x_val=as_float(x[val]) if n_val else None, y_val=as_float(y[val]) if n_val else None,
        feature_names=names, task="regression", relevant_features=relevant,
        noise_scale=noise_scale, info=dict(info or {}),
    )


def bai_simulation(
    n_train: int = 3000,
    n_test: int = 10000,
    num_features: int = 200,
    noise_scale: float = 1.0,
    seed: int = 0,
    n_val: int = 0,
) -> DataSplit:
    """Bai et al. (2020) variable-selection simulation.

    ``x ~ U(-1, 1)^p``, ``y = 7 x_2 / (1 + x_1^2) + 5 sin(x_3 x_4) + 2 x_5 + N(0, noise^2)``;
    features 0 to 4 (0-based) are relevant, the others are noise. Inputs are not
    standardised (they are already on a common scale). Inputs ``(n, p)``, targets ``(n,)``.

    :param n_val: size of a validation split drawn after the training rows (0: none; the
        training and test rows are the same as without it).
    """
    if num_features < 5:
        raise HyperparameterError(f"the Bai simulation needs at least 5 features, got {num_features}")
    n_val = check_non_negative_int("n_val", n_val)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n_train + n_test, num_features))
    y = bai_regression_function(x) + noise_scale * rng.standard_normal(n_train + n_test)
    if n_val:  # drawn after the others so that the training and test rows do not change
        x_val = rng.uniform(-1, 1, size=(n_val, num_features))
        y_val = bai_regression_function(x_val) + noise_scale * rng.standard_normal(n_val)
        x = np.concatenate([x[:n_train], x_val, x[n_train:]])
        y = np.concatenate([y[:n_train], y_val, y[n_train:]])
    return _simulated_split(x, y, n_train, n_val, n_test, [f"x{i + 1}" for i in range(num_features)],
                            [0, 1, 2, 3, 4], noise_scale)


#: variance of ``e^{|x|} - 2x + sin(2 pi x)`` for ``x ~ U(-1, 1)``:
#: ``E f^2 - (E f)^2`` with ``E f = e - 1`` and
#: ``E f^2 = (e^2 - 1)/2 + 4/3 + 1/2 + 2/pi`` (the cross term ``-4 E[x sin 2 pi x] = 2/pi``;
#: the other cross terms are odd and vanish)
SAHA_COMPONENT_VARIANCE = ((np.e**2 - 1) / 2 + 4 / 3 + 1 / 2 + 2 / np.pi) - (np.e - 1) ** 2


def saha_additive_function(x: np.ndarray) -> np.ndarray:
    """Elementwise ``f(x) = e^{|x|} - 2 x + sin(2 pi x)``, the additive component of Saha et
    al.'s feature-selection simulation."""
    return np.exp(np.abs(x)) - 2 * x + np.sin(2 * np.pi * x)


def saha_simulation(
    n_train: int = 3000,
    n_test: int = 10000,
    num_features: int = 100,
    relevant_fraction: float = 0.05,
    snr: float = 2.0,
    seed: int = 0,
    n_val: int = 0,
) -> DataSplit:
    """Additive feature-selection simulation of Saha, Liu & Liang (2024).

    ``x ~ U(-1, 1)^D`` and ``y = sum_{j < k} f(x_j) + N(0, sigma^2)`` with
    ``f(x) = e^{|x|} - 2x + sin(2 pi x)`` (:func:`saha_additive_function`): the first
    ``k = max(1, round(pi * D))`` features (0-based ``0 .. k-1``) are relevant, the other
    ``D - k`` are noise. ``alpha`` is the signal-to-noise ratio in standard deviations:
    ``sigma = sqrt(k Var f) / alpha`` with the exact ``Var f(x) = 2.712`` for
    ``x ~ U(-1, 1)`` (:data:`SAHA_COMPONENT_VARIANCE`), so the noise level does not depend on
    the sample. Inputs are not standardised (they share one scale); targets are left as
    drawn. Inputs ``(n, D)``, targets ``(n,)``; ``noise_scale`` holds ``sigma``.

    :param int num_features: ``D``.
    :param float relevant_fraction: ``pi`` in (0, 1].
    :param float snr: ``alpha > 0``.
    :param int n_val: size of a validation split (0: none).
    """
    num_features = check_positive_int("num_features", num_features)
    n_train, n_test = check_positive_int("n_train", n_train), check_positive_int("n_test", n_test)
    n_val = check_non_negative_int("n_val", n_val)
    if isinstance(relevant_fraction, bool) or not 0 < relevant_fraction <= 1:
        raise HyperparameterError(f"relevant_fraction (pi) must be in (0, 1], got {relevant_fraction!r}")
    if isinstance(snr, bool) or not snr > 0 or not np.isfinite(snr):
        raise HyperparameterError(f"snr (alpha) must be a positive number, got {snr!r}")
    k = max(1, int(round(relevant_fraction * num_features)))
    noise_scale = float(np.sqrt(k * SAHA_COMPONENT_VARIANCE) / snr)
    n = n_train + n_val + n_test
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, num_features))
    y = saha_additive_function(x[:, :k]).sum(axis=1) + noise_scale * rng.standard_normal(n)
    return _simulated_split(x, y, n_train, n_val, n_test, [f"x{i + 1}" for i in range(num_features)],
                            list(range(k)), noise_scale,
                            info={"relevant_fraction": relevant_fraction, "snr": snr})


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


#: ``(shift, divisor)`` of the fixed pixel scalings of :func:`fashion_mnist`: ``x = (p - shift) / divisor``
#: for ``p`` in [0, 1]
_PIXEL_SCALINGS = {"standardize": None, "unit": (0.0, 1.0), "symmetric": (0.5, 0.5)}


def fashion_mnist(
    directory=None,
    flatten: bool = True,
    n_train: Optional[int] = None,
    n_test: Optional[int] = None,
    n_val: int = 0,
    seed: int = 0,
    scaling: str = "standardize",
) -> DataSplit:
    """Fashion-MNIST (60,000 training and 10,000 test images of 28x28 pixels, 10 classes) read
    from IDX files; any directory with the four standard files works (e.g. real MNIST).

    Pixels are scaled to [0, 1] and then, by default, standardised with the training set's
    mean and standard deviation (one value each, so images stay images).

    :param directory: folder with ``train-images-idx3-ubyte[.gz]`` and friends (default: the
        Debian package's :data:`FASHION_MNIST_DIR`).
    :param bool flatten: return ``(n, 784)`` inputs (``True``) or ``(n, 1, 28, 28)`` images.
    :param n_train: keep only the first ``n_train`` training images (for quick runs).
    :param n_test: keep only the first ``n_test`` test images.
    :param int n_val: move ``n_val`` training images, chosen at random with ``seed``, into
        a validation split (0: none, the standard 60,000 / 10,000 split).
    :param str scaling: how pixel values ``p`` in 0..255 become inputs: ``"standardize"``
        (default; ``(p / 255 - mean) / sd`` with the training split's mean and sd),
        ``"unit"`` (``p / 255``, in [0, 1]) or ``"symmetric"`` (``2 p / 255 - 1``, in
        [-1, 1]: the scaling of Louizos et al.'s Bayesian Compression code).
    :raises InputError: if the files are missing (the message says how to get them).
    :raises HyperparameterError: for an unknown ``scaling``.
    """
    directory = FASHION_MNIST_DIR if directory is None else directory
    n_val = check_non_negative_int("n_val", n_val)
    if scaling not in _PIXEL_SCALINGS:
        raise HyperparameterError(
            f"scaling must be one of {', '.join(map(repr, _PIXEL_SCALINGS))}, got {scaling!r}"
        )
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if len(images) != len(labels):
            raise InputError(f"{directory}: {len(images)} {split} images but {len(labels)} labels")
        if images.shape[1:] != (28, 28):
            raise InputError(f"{directory}: {split} images have shape {images.shape[1:]}, expected (28, 28)")
        limit = n_train if split == "train" else n_test
        parts[split] = (images[:limit].astype(np.float32) / 255.0, labels[:limit])
    if n_val:
        images, labels = parts["train"]
        if n_val >= len(images):
            raise HyperparameterError(f"n_val = {n_val} leaves no training images (of {len(images)})")
        order = np.random.default_rng(seed).permutation(len(images))
        parts["val"] = (images[order[:n_val]], labels[order[:n_val]])
        parts["train"] = (images[np.sort(order[n_val:])], labels[np.sort(order[n_val:])])
    if scaling == "standardize":
        mean, std = parts["train"][0].mean(), parts["train"][0].std()
    else:
        mean, std = _PIXEL_SCALINGS[scaling]
    shape = (-1, 28 * 28) if flatten else (-1, 1, 28, 28)

    def as_tensors(images, labels):
        x = torch.as_tensor(((images - mean) / std).reshape(shape), dtype=torch.float32)
        return x, torch.as_tensor(labels)

    x_train, y_train = as_tensors(*parts["train"])
    x_test, y_test = as_tensors(*parts["test"])
    x_val, y_val = as_tensors(*parts["val"]) if n_val else (None, None)
    return DataSplit(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_val=x_val, y_val=y_val,
        feature_names=[f"pixel_{r}_{c}" for r in range(28) for c in range(28)],
        task="classification",
        info={"image_shape": (28, 28), "classes": FASHION_MNIST_CLASSES, "directory": str(directory),
              "scaling": scaling},
    )


#: loaders by name, as the model zoo's configs name them
LOADERS = {
    "digits": digits,
    "breast_cancer": breast_cancer,
    "wine": wine,
    "diabetes": diabetes,
    "fashion_mnist": fashion_mnist,
    "bai_simulation": bai_simulation,
    "saha_simulation": saha_simulation,
    "planted_teacher": planted_teacher,
}
