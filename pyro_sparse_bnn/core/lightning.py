"""Data-parallel training through PyTorch Lightning: :class:`SparseBNNModule`, a LightningModule
around a :class:`~pyro_sparse_bnn.core.network.SparseBNN`.

It needs the optional extra (``pip install "pyro_sparse_bnn[lightning]"``, or ``pip install
lightning``); ``import pyro_sparse_bnn`` does not, and the first use of :class:`SparseBNNModule`
without Lightning raises an ``ImportError`` naming the extra. Example (one machine, two
processes; ``torchrun``, several GPUs and several nodes in ``docs/distributed.md``)::

    import lightning as L
    from pyro_sparse_bnn.core.lightning import SparseBNNModule, tensor_loader

    module = SparseBNNModule(bnn, num_data=len(x), epochs=20, lr=5e-3, seed=0)
    trainer = L.Trainer(max_epochs=20, accelerator="cpu", strategy="ddp", devices=2)
    trainer.fit(module, tensor_loader(x, y, batch_size=64))  # 64 per process
    if trainer.is_global_zero:
        psb.save(bnn, "bnn.pt", module.history)

**The same fit as** :func:`~pyro_sparse_bnn.core.fit.fit`. The module builds the same
:class:`~pyro_sparse_bnn.core.fit.FitPlan` as ``fit`` (so the same argument checks), takes its
loss from :func:`~pyro_sparse_bnn.core.fit.elbo_loss` (the loss ``fit_step`` minimises, under
the same local reparameterisation) and applies the plan's schedules at the start of every epoch
(:meth:`~pyro_sparse_bnn.core.fit.FitPlan.begin_epoch`: temperature, KL warm-up). The
indicator warm-up discards the logits' gradients before the optimiser step instead of switching
them off (DDP needs every parameter's gradient in every step); Adam skips a parameter without a
gradient, so the update is the one of ``fit``. The optimiser is the torch optimiser
``fit``'s default :func:`~pyro_sparse_bnn.core.optim.JointAdam` would build, with the
``logit_lr`` parameter group (:meth:`~pyro_sparse_bnn.core.optim.JointOptim.make_optimizer`),
and the learning-rate decay is an ``ExponentialLR`` scheduler stepped once per epoch, the factor
``fit`` applies. Checkpoints are Lightning's (``ModelCheckpoint``, ``trainer.fit(...,
ckpt_path=...)``): the module's ``state_dict`` holds the guide parameters, the network's
temperature and step counter ``bnn.num_steps``, the epochs done (``epochs_done``) and the
history; the fit's configuration rides along in the checkpoint and a resume with other
arguments is an error, as for ``fit(resume=...)``. Under ``strategy="ddp_spawn"`` Lightning
copies the ``state_dict`` of the first process back into the module of the main process, so
the network and the history given to the module are the fitted ones there too.

**Scaling under data parallelism.** With ``P`` processes (``Trainer(strategy="ddp",
devices=P)``, several nodes included), Lightning gives every process a ``DistributedSampler``,
so each minibatch of ``B = P * b`` examples is split into ``P`` shards of ``b`` examples
(the sampler pads the data set so that every process gets as many batches of the same sizes).
Each process computes the loss of its shard exactly as ``fit`` does, ``L_r = KL - (N / b) *
sum_{i in shard r} log p(y_i | x_i, w)``: the model's data plate scales the shard's
log-likelihood to the full data set of ``N`` examples (``num_data``, the size of the whole
training set, not of a shard). DDP averages the gradients over processes, so the step uses
``(1 / P) * sum_r grad L_r = grad KL - (N / (P * b)) * sum_{all B examples} grad log p =
grad [KL - (N / B) * sum_{i in batch} log p(y_i | x_i, w)]``: the KL counted once and the
likelihood scaled to the full data set, the single-process gradient of the concatenated
minibatch. No extra factor is needed, and none may be added: scaling each process's
log-likelihood by ``1 / P``, or its KL by ``1 / P``, would count the data, or the prior, ``P``
times too little. Gradient accumulation composes with this: with ``Trainer(accumulate_grad_batches=k)``
Lightning divides each batch's loss by ``k`` and steps after every ``k``-th batch, so the step
uses the gradient of the ``k`` minibatches together, again with the KL once; ``bnn.num_steps``
and the history count optimiser steps, as in ``fit``.

**Seeds.** DDP broadcasts rank 0's parameters and buffers when it wraps the module, so every
process starts from the same parameters; after that the averaged gradients keep them equal.
With ``seed=s`` each process seeds its generators (``pyro.set_rng_seed``) before the first
step of every epoch with ``s + rank + P * epoch``, so the processes draw independent noise (as
the examples of one large minibatch would; a distinct seed for every process and epoch) and a
run resumed from an end-of-epoch checkpoint draws what the uninterrupted run draws. Under DDP
the shuffle is the ``DistributedSampler``'s, seeded by the epoch and identical on every
process. In one process the loader shuffles with torch's global generator, so the checkpoint
also holds the generators' states (:func:`~pyro_sparse_bnn.core.checkpoint.rng_state`), which
a one-process resume restores: on the CPU a resumed run then ends bit-for-bit where the
uninterrupted one does.
"""

import math
import time
from dataclasses import asdict
from typing import Optional

import pyro
import torch
from pyro.infer import ELBO
from torch.utils.data import DataLoader, TensorDataset

from .checkpoint import rng_state, set_rng_state
from .errors import HyperparameterError, InputError, NonFiniteLossError
from .fit import (
    FitHistory,
    FitPlan,
    TemperatureSchedule,
    _check_resume_config,
    _non_finite_message,
    elbo_loss,
)
from .network import SparseBNN, check_bnn

__all__ = ["SparseBNNModule", "require_lightning", "tensor_loader"]  # noqa: F822 -- SparseBNNModule comes from __getattr__

#: the key of the checkpoint entry that holds the fit's configuration and the generators' states
CHECKPOINT_KEY = "pyro_sparse_bnn"


def require_lightning():
    """Import and return the ``lightning`` package.

    :raises ImportError: naming the ``lightning`` extra when it is not installed.
    """
    try:
        import lightning
    except ImportError as error:
        raise ImportError(
            "pyro_sparse_bnn's Lightning module needs PyTorch Lightning, which is not installed: "
            "pip install \"pyro_sparse_bnn[lightning]\" (or pip install lightning)"
        ) from error
    return lightning


class _TensorBatches(TensorDataset):
    """A ``TensorDataset`` that fetches a whole minibatch with one indexing operation per tensor
    (the ``DataLoader`` calls ``__getitems__`` with the minibatch's indices) instead of one
    ``__getitem__`` per example and a ``torch.stack``."""

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)


def _minibatch_as_fetched(batch):
    # the collate function of tensor_loader: _TensorBatches already returns the minibatch
    return batch


def tensor_loader(x, y, batch_size: int, shuffle: bool = True, **kwargs) -> DataLoader:
    """A ``DataLoader`` over in-memory tensors ``x`` ``(N, *input_shape)`` and ``y`` ``(N,)`` or
    ``(N, outputs)`` that yields minibatches ``(x[i], y[i])`` for index tensors ``i`` of
    ``batch_size`` examples, fetching each with one indexing operation per tensor.

    It yields what ``DataLoader(TensorDataset(x, y), batch_size, shuffle)`` yields, in the same
    order for the same generator, without that loader's per-example fetch and ``torch.stack``
    (about 7 ms of a minibatch of 1,024 Fashion-MNIST images on one core). Lightning gives it
    its ``DistributedSampler`` under DDP as it does any loader; ``batch_size`` is then per
    process. Further keyword arguments (``drop_last``, ``num_workers``, ``generator``, ...) go
    to the ``DataLoader``.
    """
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise InputError(f"tensor_loader needs tensors; {name} is a {type(value).__name__}")
    if len(x) != len(y):
        raise InputError(f"x and y must have as many examples; got {len(x)} and {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HyperparameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return DataLoader(_TensorBatches(x, y), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=_minibatch_as_fetched, **kwargs)


_MODULE_CLASS = None


def __getattr__(name):
    # SparseBNNModule subclasses lightning's LightningModule, so it is built on first access:
    # importing this module (and the API reference's listing of it) works without Lightning
    if name == "SparseBNNModule":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _module_class():
    global _MODULE_CLASS
    if _MODULE_CLASS is None:
        lightning = require_lightning()
        # the methods are copied into a class of its own (rather than inherited from a mixin) so
        # that the API reference lists them under SparseBNNModule, with LightningModule as its base
        members = {k: v for k, v in vars(_SparseBNNModuleMethods).items() if k not in ("__dict__", "__weakref__")}
        members.update(__module__=__name__, __qualname__="SparseBNNModule", _lightning_module=lightning.LightningModule)
        _MODULE_CLASS = type("SparseBNNModule", (lightning.LightningModule,), members)
    return _MODULE_CLASS


def _epoch_totals(tau: float) -> dict:
    """The running totals of one epoch: summed loss, batches, optimiser steps, start time and
    the epoch's temperature."""
    return dict(loss=torch.zeros((), dtype=torch.float64), steps=0, updates=0, start=time.perf_counter(), tau=tau)


class _SparseBNNModuleMethods:
    """LightningModule that fits the guide of a :class:`~pyro_sparse_bnn.core.network.SparseBNN`
    by the SVI of :func:`~pyro_sparse_bnn.core.fit.fit`, in one process or data-parallel (see
    the module's docstring for the scaling and the seeds).

    The arguments are those of :func:`~pyro_sparse_bnn.core.fit.fit` that shape the
    optimisation; the data come from the ``DataLoader`` given to ``trainer.fit`` (batches
    ``(x, y)``: ``x`` ``(batch, *input_shape)``, ``y`` ``(batch,)`` or ``(batch, outputs)``,
    tensors or arrays; they are converted to the network's dtype and device and checked as
    ``fit`` checks a DataLoader's batches).

    :param bnn: the network to fit, in place (:attr:`bnn`): after ``trainer.fit`` it is an
        ordinary fitted network (PIPs, ``compress``, ``finetune``, ``save`` work on it).
    :param num_data: size ``N`` of the whole training set, all processes together (default:
        ``bnn.num_data``; one of them is needed, and they must agree). It is what the minibatch
        log-likelihood is scaled to.
    :param int epochs: the length of the schedules (temperature annealing, learning-rate
        decay); the trainer's ``max_epochs`` must equal it.
    :param float lr: learning rate, as for :func:`~pyro_sparse_bnn.core.fit.fit`; so are
        ``lr_decay``, ``logit_lr``, ``temperature``, ``kl_warmup``, ``indicator_warmup``,
        ``num_particles`` and ``elbo``.
    :param seed: seeds every process with ``seed + rank + world_size * epoch`` before the first
        step of each epoch (``None``: draw from the global state).
    :raises InputError: if ``bnn`` is not a ``SparseBNN`` or ``num_data`` is missing or differs
        from the network's.
    :raises HyperparameterError: for arguments ``fit`` rejects.
    :raises ImportError: if Lightning is not installed (naming the ``lightning`` extra).

    :ivar bnn: the network.
    :ivar history: :class:`~pyro_sparse_bnn.core.fit.FitHistory`, one entry per epoch, the loss
        averaged over the processes.
    """

    def __init__(
        self,
        bnn: SparseBNN,
        *,
        num_data: Optional[int] = None,
        epochs: int,
        lr: float = 5e-3,
        lr_decay: float = 1.0,
        logit_lr: Optional[float] = None,
        seed: Optional[int] = None,
        temperature: TemperatureSchedule = None,
        kl_warmup: int = 0,
        indicator_warmup: int = 0,
        num_particles: int = 1,
        elbo: Optional[ELBO] = None,
    ):
        self._lightning_module.__init__(self)
        check_bnn(bnn, "SparseBNNModule")
        num_data = bnn.num_data if num_data is None else num_data
        if num_data is None:
            raise InputError("SparseBNNModule needs num_data (the size of the whole training set, all processes "
                             "together) or a network built with num_data")
        self._arguments = dict(
            num_data=num_data, epochs=epochs, lr=lr, lr_decay=lr_decay, logit_lr=logit_lr, seed=seed,
            temperature=temperature, kl_warmup=kl_warmup, indicator_warmup=indicator_warmup,
            num_particles=num_particles, elbo=elbo,
        )
        self.bnn = bnn
        self._plan = self._build_plan()  # checks the arguments now
        if bnn.num_data is None:
            bnn.num_data = self._plan.num_data
        self.register_buffer("epochs_done", torch.tensor(0, dtype=torch.long, device=bnn.device))
        self.history = FitHistory()
        self._epoch = _epoch_totals(float(bnn.temperature))

    def _build_plan(self) -> FitPlan:
        return FitPlan.build(
            self.bnn, None, None, batch_size=1, optim=None, shuffle=True, progress=False, callbacks=(),
            checkpoint=None, checkpoint_every=1, resume=None, **self._arguments,
        )

    @property
    def plan(self) -> FitPlan:
        """The :class:`~pyro_sparse_bnn.core.fit.FitPlan` of the run (rebuilt after unpickling,
        e.g. in a ``ddp_spawn`` worker, where the network is a copy)."""
        if self._plan is None:
            self._plan = self._build_plan()
        return self._plan

    def __getstate__(self):
        # the plan holds closures (schedules) and references to the parameters: rebuild it
        state = dict(self._lightning_module.__getstate__(self))
        state["_plan"] = None
        return state

    # -- the step ------------------------------------------------------------------------
    def forward(self, x):
        """One posterior draw of the network's outputs ``(batch, outputs)`` for ``x``
        ``(batch, *input_shape)`` (:meth:`SparseBNN.forward <pyro_sparse_bnn.core.network.SparseBNN.forward>`)."""
        return self.bnn(x)

    def loss(self, x, y) -> torch.Tensor:
        """The loss of one process on its minibatch ``x`` ``(b, *input_shape)``, ``y`` ``(b,)``
        or ``(b, outputs)``: ``KL - (N / b) * sum log p(y | x, w)``, a differentiable scalar
        (:func:`~pyro_sparse_bnn.core.fit.elbo_loss`, the loss of ``fit``'s step)."""
        bnn, plan = self.bnn, self.plan
        x, y = bnn.check_data(*bnn.as_data(x, y))
        return elbo_loss(bnn, plan.elbo, x, y, plan.skip_slab_draws)

    def training_step(self, batch, batch_idx):
        """The loss of the minibatch ``batch = (x, y)``; a non-finite loss raises
        :class:`~pyro_sparse_bnn.core.errors.NonFiniteLossError` before anything is updated."""
        x, y = batch
        loss = self.loss(x, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            where = f"at epoch {self.current_epoch}, step {batch_idx} of the epoch (process {self.global_rank})"
            raise NonFiniteLossError(_non_finite_message(self.bnn, self.plan.elbo, f"the loss became {value} {where}",
                                                         None))
        self._epoch["loss"] += value
        self._epoch["steps"] += 1
        if self._trainer is not None:
            self.log("loss", loss.detach(), prog_bar=True, batch_size=len(x))
        return loss

    # -- schedules -----------------------------------------------------------------------
    def configure_optimizers(self):
        """The torch optimiser of ``fit``'s default :func:`~pyro_sparse_bnn.core.optim.JointAdam`
        (with the ``logit_lr`` group) and, with ``lr_decay``, an ``ExponentialLR`` scheduler
        stepped every epoch by ``lr_decay ** (1 / epochs)``."""
        plan = self.plan
        optimizer = plan.optim.make_optimizer(self.bnn.parameters())
        if plan.epoch_decay == 1.0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=plan.epoch_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_fit_start(self):
        max_epochs = self.trainer.max_epochs
        if max_epochs != self.plan.epochs:
            raise HyperparameterError(
                f"the trainer runs max_epochs={max_epochs} but the module's schedules were built for "
                f"epochs={self.plan.epochs}; pass the same number to both"
            )

    def on_train_epoch_start(self):
        plan, epoch = self.plan, self.current_epoch
        tau = plan.begin_epoch(self.bnn, epoch, freeze_indicators=False)
        self._epoch = _epoch_totals(tau)

    def on_train_batch_start(self, batch, batch_idx):
        seed = self.plan.seed
        if batch_idx == 0 and seed is not None:  # after the loader drew its shuffle and worker seeds
            pyro.set_rng_seed(int(seed) + self.global_rank + self.trainer.world_size * self.current_epoch)

    def on_before_optimizer_step(self, optimizer):
        # called once per optimiser step: with accumulate_grad_batches=k, after every k-th batch
        if self.plan.indicators_frozen(self.current_epoch):
            for p in self.plan.indicators:  # Adam skips a parameter without a gradient, as in fit
                p.grad = None
        self.bnn.num_steps += 1
        self._epoch["updates"] += 1

    def on_train_epoch_end(self):
        steps = self._epoch["steps"]
        mean = self._epoch["loss"] / max(steps, 1)
        if self._trainer is not None and self.trainer.world_size > 1:
            mean = self.trainer.strategy.reduce(mean.to(self.device), reduce_op="mean")
        history = self.history
        history.loss.append(float(mean))
        history.temperature.append(self._epoch["tau"])
        history.kl_weight.append(float(getattr(self.plan.elbo, "kl_weight", 1.0)))
        history.seconds.append(time.perf_counter() - self._epoch["start"])
        history.num_steps += self._epoch["updates"]
        self.epochs_done += 1

    # -- checkpoints ---------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        """The history rides in the module's ``state_dict`` (as plain lists and numbers): in
        checkpoints, and back to the main process from ``ddp_spawn``'s workers."""
        return {"history": asdict(self.history)}

    def set_extra_state(self, state: dict) -> None:
        self.history = FitHistory(**state["history"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"config": self.plan.config, "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            raise InputError("the checkpoint was not written by SparseBNNModule (it has no "
                             f"{CHECKPOINT_KEY!r} entry)")
        _check_resume_config(saved["config"], self.plan.config, "the Lightning checkpoint")
        if self._trainer is not None and self.trainer.world_size == 1:
            # one process: its generators also draw the shuffle, as in the run that wrote the file;
            # with several, each process draws its own noise and the sampler shuffles by epoch
            set_rng_state(saved["rng"])
