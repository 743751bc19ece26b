"""One process of the two-process DDP run of ``tests/core/test_lightning.py``.

Started by the test with ``python -m torch.distributed.run --standalone --nproc_per_node 2
tests/core/ddp_worker.py OUT``: every process runs this file with its own ``RANK``, and
Lightning's ``Trainer(strategy="ddp")`` joins the process group torchrun set up (gloo on the
CPU). Each process writes what it saw to ``OUT/rank<r>.pt``; the test compares the processes
with each other and with single-process computations of its own.

Two runs, one after the other:

* **gradient**: a float64 network whose initial parameters differ between the processes
  (seeded with the rank, so only DDP's broadcast makes them equal) is trained for one step on
  one minibatch of 2 x 16 examples. Weight draws (``local_reparameterization=False``) are
  shared by a minibatch, and a callback reseeds every process with the same seed just before
  the step, so the processes draw the same weights: a configuration without per-process noise,
  in which the averaged gradient must equal the gradient of the concatenated minibatch. The
  file holds the initial parameters (after the broadcast), each process's minibatch and the
  gradients after DDP's averaging, just before the optimiser step.
* **fit**: ``y = 2 x0 - 3 x1 + noise`` with 6 inputs (the planted problem of
  ``tests/core/test_reparameterization.py``), fitted for 100 epochs with ``seed=0`` (each
  process its own noise) from a ``tensor_loader``; the file holds the final state and the
  feature PIPs.
"""

import os
import sys

import lightning as L
import pyro
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_sparse_bnn import SparseBNN, SpikeSlab
from pyro_sparse_bnn.analysis import feature_inclusion_probs
from pyro_sparse_bnn.core.lightning import SparseBNNModule, tensor_loader
from pyro_sparse_bnn.core.nets import mlp

#: the reseed of the gradient run, shared by every process and by the test's reference
GRADIENT_SEED = 1234
GRADIENT_DATA, GRADIENT_BATCH = 64, 16
FIT = dict(epochs=100, lr=1e-2, logit_lr=5e-2, seed=0)
FIT_DATA, FIT_BATCH = 300, 25  # per process: 2 x 25 = the single-process batch of 50


def gradient_problem():
    """``(x, y)`` of the gradient run: 64 examples, 4 inputs, 3 classes."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(GRADIENT_DATA, 4, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, 3, (GRADIENT_DATA,), generator=generator)


def gradient_network(init_seed: int) -> SparseBNN:
    torch.manual_seed(init_seed)
    net = mlp([4, 6, 3]).double()
    return SparseBNN(net, SpikeSlab(prior_inclusion=0.2), num_data=GRADIENT_DATA, local_reparameterization=False)


def fit_problem():
    """The planted regression ``y = 2 x0 - 3 x1 + 0.3 N(0, 1)``, 300 examples of 6 inputs."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(FIT_DATA, 6, generator=generator)
    return x, 2 * x[:, 0] - 3 * x[:, 1] + 0.3 * torch.randn(FIT_DATA, generator=generator)


def fit_network() -> SparseBNN:
    torch.manual_seed(0)
    return SparseBNN(mlp([6, 8, 1]), SpikeSlab(prior_inclusion=0.05), likelihood="gaussian", num_data=FIT_DATA)


class Recorder(L.Callback):
    """Reseeds every process identically before each step and records the initial parameters,
    the minibatch and the averaged gradients of the first step."""

    def __init__(self):
        self.record = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        pyro.set_rng_seed(GRADIENT_SEED)
        if not self.record:
            self.record["initial"] = {k: v.detach().clone() for k, v in module.bnn.state_dict().items()}
            self.record["x"], self.record["y"] = (t.detach().clone() for t in batch)

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if "grads" not in self.record:
            self.record["grads"] = {n: p.grad.detach().clone() for n, p in module.bnn.named_parameters()}


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", strategy="ddp", devices=2, num_nodes=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def main(out: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])

    # -- gradient run: different initial parameters per process, one step, same draws
    x, y = gradient_problem()
    bnn = gradient_network(init_seed=100 + rank)
    module = SparseBNNModule(bnn, epochs=1, lr=1e-3)
    recorder = Recorder()
    trainer(max_epochs=1, limit_train_batches=1, callbacks=[recorder]).fit(
        module, DataLoader(TensorDataset(x, y), batch_size=GRADIENT_BATCH, shuffle=True))
    result = {"gradient": recorder.record, "world_size": int(os.environ["WORLD_SIZE"])}

    # -- fit run: each process its own noise (seed + rank)
    x, y = fit_problem()
    bnn = fit_network()
    module = SparseBNNModule(bnn, **FIT)
    fit_trainer = trainer(max_epochs=FIT["epochs"])
    fit_trainer.fit(module, tensor_loader(x, y, batch_size=FIT_BATCH))  # under Lightning's DistributedSampler
    result["fit"] = {"state": {k: v.detach().clone() for k, v in bnn.state_dict().items()},
                     "pips": feature_inclusion_probs(bnn), "num_steps": int(bnn.num_steps),
                     "history_steps": module.history.num_steps, "is_global_zero": fit_trainer.is_global_zero}
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
