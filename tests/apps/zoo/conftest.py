"""Shared helpers of the zoo tests: the models directory, a tiny IDX data set, a toy entry."""

import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pyro_sparse_bnn.apps.zoo import (
    SMOKE,
    find_entries,
)

MODELS = Path(__file__).resolve().parents[3] / "models"


ENTRIES = find_entries(MODELS)


def _write_idx(path: Path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx_directory(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped IDX directory (random pixels, every class present), so the
    Fashion entries run in smoke mode without the 30 MB data set."""
    directory = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", SMOKE["n_train"] + 4), ("t10k", SMOKE["n_test"])):
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return directory


def write_entry(tmp_path, text: str, name="toy"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


TOY = """
[entry]
title = "toy"

[data]
name = "wine"
val_size = 0.2

[model]
architecture = "mlp"
hidden_widths = [8]

[prior]
name = "SpikeSlabNode"

[train]
epochs = 3
batch_size = 32
lr = 1e-2

[published]
source = "none"
"""


def toy_config():
    return tomllib.loads(TOY)
