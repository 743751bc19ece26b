"""Device-agnostic code: the library computes on the network's device and never on torch's
default device, moves the data it is given to the network, and returns its results on the CPU.

CI has no GPU, so the tests check this on the CPU:

* **the default device.** ``torch.set_default_device("meta")`` makes every tensor built without
  an explicit device a meta tensor (shapes only, no data), so any place that builds a tensor on
  the default device instead of the network's fails or returns meta tensors. With the network
  and the data on the CPU, fit, predict, the PIPs, compress, finetune (with validation), the frontier and the
  diagnostics must run under it and give exactly what they give without it (a user with
  ``torch.set_default_device("cuda")`` and a CPU network hits the same places);
* **data conversion.** A DataLoader yielding numpy arrays of another dtype works as tensors do;
* **float64 networks** run end to end;
* on a machine with CUDA, the network on the GPU with data on the CPU (skipped without one).
"""

import warnings
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import pyro_sparse_bnn as psb
from pyro_sparse_bnn.analysis import (
    bnn_variational_khat,
    expected_calibration_error,
    feature_inclusion_probs,
    interval_coverage,
    node_inclusion_probs,
    to_inference_data,
)
from tests.conftest import mlp


def _data(regression=False, dtype=torch.float32):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(60, 5, generator=generator, dtype=dtype)
    y = 2 * x[:, 0] - x[:, 1] if regression else (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _workflow(prior, regression=False, dtype=torch.float32, default_device=None):
    """Everything a user does with a network, as plain numbers to compare; the network and the
    data are built on the CPU, then everything runs with ``default_device`` as torch's default."""
    x, y = _data(regression, dtype)
    torch.manual_seed(0)
    bnn = psb.SparseBNN(mlp([5, 8, 1 if regression else 2]).to(dtype), prior,
                        likelihood="gaussian" if regression else "categorical")
    with torch.device(default_device) if default_device is not None else nullcontext():
        results, module = _use(bnn, x, y, regression)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuned, _ = psb.finetune(module, x, y, epochs=2, seed=0, x_val=x, y_val=y, restore_best=True)
    results["tuned"] = [p.detach().clone() for p in tuned.parameters()]
    return results


def _use(bnn, x, y, regression):
    history = psb.fit(bnn, x, y, epochs=3, batch_size=20, seed=0, progress=False)
    prediction = bnn.predict(x, num_samples=4, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, report = psb.compress(bnn, threshold=0.3)
        front = psb.frontier(bnn, x, y, num_samples=4, seed=1)
        idata = to_inference_data([bnn], x, y, num_samples=4)
        khat = bnn_variational_khat(bnn, x, y, num_samples=20, seed=0)
    results = {
        "loss": history.loss, "params": [p.detach().clone() for p in bnn.parameters()],
        "mean": prediction.mean, "draws": prediction.draws, "features": feature_inclusion_probs(bnn),
        "nodes": node_inclusion_probs(bnn), "summary": psb.inclusion_summary(bnn).pip.to_numpy(),
        "report": report.as_dict(),
        "front": front.table.to_numpy(), "log_likelihood": idata.log_likelihood["y"].values, "khat": khat.khat,
    }
    if regression:
        results["coverage"] = interval_coverage(prediction, y, 1.0).to_numpy()
    else:
        results["ece"] = expected_calibration_error(prediction, y).ece
    return results, module


def _assert_same(a, b, path="results"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same(u, v, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert b.device.type == "cpu", f"{path} is on {b.device}"
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b or (a != a and b != b), path


@pytest.mark.parametrize("prior, regression", [
    (psb.SpikeSlab(prior_inclusion=0.1), False),
    (psb.SpikeSlabGroupLasso(), False),  # the log-normal / gamma KLs
    (psb.GroupHorseshoe(), True),
], ids=["SS", "SS-GL", "BC-GHS"])
def test_nothing_is_built_on_the_default_device(prior, regression):
    _assert_same(_workflow(prior, regression), _workflow(prior, regression, default_device="meta"))


def test_the_meta_default_device_catches_a_tensor_built_without_a_device():
    """The failing twin: the check above does see a tensor built on the default device."""
    x, _ = _data()
    with torch.device("meta"), pytest.raises((RuntimeError, NotImplementedError)):
        float((x + torch.ones(5)).sum())


class _NumpyPairs(Dataset):
    """A dataset of float64 numpy rows and int labels, as a user's loader may yield them."""

    def __init__(self, x, y):
        self.x, self.y = x.double().numpy(), y.numpy()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_a_loader_of_numpy_batches_is_converted_to_the_network(classification_data):
    x, y = classification_data
    torch.manual_seed(0)
    bnn = psb.SparseBNN(mlp([5, 8, 3]), psb.SpikeSlab())
    loader = DataLoader(_NumpyPairs(x, y), batch_size=20, collate_fn=lambda rows: tuple(np.stack(c) for c in zip(*rows, strict=True)))
    history = psb.fit(bnn, loader, epochs=2, seed=0, progress=False)
    torch.manual_seed(0)
    reference = psb.SparseBNN(mlp([5, 8, 3]), psb.SpikeSlab())
    expected = psb.fit(reference, DataLoader(list(zip(x, y, strict=True)), batch_size=20), epochs=2, seed=0, progress=False)
    assert history.loss == expected.loss


def test_a_float64_network_runs_end_to_end():
    results = _workflow(psb.SpikeSlab(prior_inclusion=0.1), dtype=torch.float64)
    assert results["mean"].dtype == torch.float64 and results["params"][0].dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in results["tuned"])
    assert results["features"].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the CPU tests above cover the "
                                                          "default-device and conversion paths without one)")
def test_a_network_on_the_gpu_takes_cpu_data_and_returns_cpu_results():
    x, y = _data()
    torch.manual_seed(0)
    bnn = psb.SparseBNN(mlp([5, 8, 2]), psb.SpikeSlab(prior_inclusion=0.1)).to("cuda")
    psb.fit(bnn, x, y, epochs=2, batch_size=20, seed=0, progress=False)
    prediction = bnn.predict(x, num_samples=4, seed=1)
    assert prediction.probs.device.type == "cpu" and feature_inclusion_probs(bnn).device.type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module, report = psb.compress(bnn, threshold=0.3)
        psb.finetune(module, x, y, epochs=1)
        psb.frontier(bnn, x, y, num_samples=4)
    assert report.kept_features.device.type == "cpu"
