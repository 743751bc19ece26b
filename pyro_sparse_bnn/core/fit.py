"""Fitting a :class:`~pyro_sparse_bnn.core.network.SparseBNN` by stochastic variational inference over minibatches.

:func:`fit` is made of three parts:

* :class:`FitPlan`: the arguments, checked once, with what the run derives from them (the
  schedules, the ELBO and optimiser it works with, the data source, the steps per epoch,
  the configuration a resumed run is compared with);
* :func:`run_epochs`: the epoch loop (minibatches, running loss, step counters, history,
  progress bar), shared with :func:`~pyro_sparse_bnn.analysis.moment_propagation.fit_moments`;
* the failure handling of a run (:class:`_FitRun`): a non-finite loss stops the fit before its
  step is applied (:class:`NonFiniteStep`, raised by :func:`svi_step`), and an exception or
  ``KeyboardInterrupt`` flushes the checkpoint and says how to resume.
"""

import copy
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pyro
import pyro.optim
import pyro.optim.lr_scheduler
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.util import torch_item, zero_grads

from .checkpoint import Checkpoints, set_optimizer_state, set_rng_state
from .elbo import MeanFieldELBO
from .errors import HyperparameterError, InputError, NonFiniteLossError, SaveFileError
from .network import SparseBNN, check_bnn
from .optim import JointAdam, JointOptim
from .progress import progress_bar, show_progress
from .savefile import read, state_into
from .validation import check_bool, check_non_negative_int, check_positive, check_positive_int

__all__ = ["fit", "FitHistory", "TemperatureSchedule", "geometric_temperature", "fit_step", "svi_step",
           "elbo_loss", "step_context", "run_epochs", "NonFiniteStep", "minibatches"]

#: a constant temperature, a function ``epoch -> temperature`` or ``(start, end)`` for
#: geometric annealing from ``start`` (first epoch) to ``end`` (last epoch)
TemperatureSchedule = Union[None, float, Callable[[int], float], Tuple[float, float]]


@dataclass
class FitHistory:
    """What happened during :func:`fit`, one entry per epoch.

    :ivar loss: mean minibatch loss (``-ELBO`` estimate for the full data set) per epoch.
    :ivar temperature: relaxation temperature used in each epoch.
    :ivar kl_weight: weight of the KL term in each epoch (below 1 during a KL warm-up).
    :ivar seconds: wall-clock seconds per epoch.
    :ivar num_steps: optimisation steps taken.
    """

    loss: List[float] = field(default_factory=list)
    temperature: List[float] = field(default_factory=list)
    kl_weight: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    num_steps: int = 0

    @property
    def elbo(self) -> List[float]:
        """ELBO per epoch (the negated loss)."""
        return [-v for v in self.loss]

    def __len__(self):
        return len(self.loss)


def geometric_temperature(start: float, end: float, epochs: int) -> Callable[[int], float]:
    """Schedule that moves the temperature geometrically from ``start`` to ``end`` over ``epochs``."""
    start, end = check_positive("start temperature", start), check_positive("end temperature", end)
    if epochs <= 1:
        return lambda epoch: end
    ratio = (end / start) ** (1.0 / (epochs - 1))
    return lambda epoch: start * ratio ** min(epoch, epochs - 1)


def _schedule(temperature: TemperatureSchedule, bnn: SparseBNN, epochs: int) -> Callable[[int], float]:
    if temperature is None:
        current = float(bnn.temperature)
        return lambda epoch: current
    if callable(temperature):
        return temperature
    if isinstance(temperature, (tuple, list)):
        if len(temperature) != 2:
            raise HyperparameterError(f"temperature as a tuple must be (start, end), got {temperature!r}")
        return geometric_temperature(temperature[0], temperature[1], epochs)
    value = check_positive("temperature", temperature)
    return lambda epoch: value


def minibatches(x, y, batch_size: int, shuffle: bool):
    """Yield ``(x[idx], y[idx])`` minibatches of at most ``batch_size`` examples covering the
    data once, in a random order (torch's global generator) when ``shuffle`` (``y`` may be ``None``)."""
    n = x.shape[0]
    order = torch.randperm(n, device=x.device) if shuffle else torch.arange(n, device=x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], (None if y is None else y[idx])


def _scale_learning_rate(optim: pyro.optim.PyroOptim, factor: float) -> None:
    """Multiply the learning rate of every torch optimiser inside ``optim`` by ``factor``."""
    optimizers = [optim.optimizer] if isinstance(optim, JointOptim) else list(optim.optim_objs.values())
    for optimizer in optimizers:
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] *= factor


def _logit_multiplier(logits: Sequence[torch.Tensor], lr: float, logit_lr: Optional[float]):
    if logit_lr is None or logit_lr == lr:
        return None
    ids = {id(p) for p in logits}
    return lambda p: logit_lr / lr if id(p) in ids else 1.0


def _non_finite_parameters(bnn: SparseBNN) -> List[str]:
    return [name for name, p in bnn.named_parameters() if not bool(torch.isfinite(p).all())]


def _fit_config(**arguments) -> dict:
    """The arguments that shape the trajectory, as plain data (compared on resume)."""
    config = {}
    for name, value in arguments.items():
        if callable(value) and not isinstance(value, type):
            value = f"<callable {getattr(value, '__qualname__', type(value).__name__)}>"
        elif isinstance(value, (tuple, list)):
            value = tuple(float(v) for v in value)
        config[name] = value
    return config


def _check_resume_config(saved: dict, current: dict, path) -> None:
    for name, value in current.items():
        if name in saved and saved[name] != value and not (
                isinstance(value, str) and value.startswith("<callable")):
            raise HyperparameterError(
                f"resume: the checkpoint {str(path)!r} was written by fit(..., {name}={saved[name]!r}) but this "
                f"call has {name}={value!r}; resume with the same arguments (to continue with other "
                f"settings, load the network with pyro_sparse_bnn.persistence.load_state(bnn, path) and call fit without resume)"
            )


def _check_checkpoint_path(path) -> Path:
    try:
        path = Path(path)
    except TypeError:
        raise InputError(f"checkpoint must be a file path, got {type(path).__name__}") from None
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise InputError(
            f"checkpoint={str(path)!r}: need a file name in an existing, writable directory"
        )
    return path


# --------------------------------------------------------------------------------------
# The plan: the checked arguments and what the run derives from them
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FitPlan:
    """The arguments of one :func:`fit` call, checked, with what the run derives from them.

    Building it (:meth:`build`) raises the errors :func:`fit` documents for bad arguments and
    changes nothing: neither the network nor the ELBO or optimiser passed in.

    :ivar epochs, batch_size, lr, lr_decay, logit_lr, seed, kl_warmup, indicator_warmup,
        num_particles, shuffle, progress, checkpoint_every, resume: the checked arguments
        (``batch_size`` is ``None`` for a DataLoader, ``checkpoint`` a :class:`~pathlib.Path`).
    :ivar callbacks: tuple of the callbacks.
    :ivar temperature: the temperature schedule as a function ``epoch -> temperature``.
    :ivar indicators: the network's indicator logits
        (:meth:`~pyro_sparse_bnn.core.network.SparseBNN.indicator_parameters`).
    :ivar elbo: the ELBO the run computes its loss with: the default
        :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO`, the caller's ELBO, or -- with a KL
        warm-up, which re-weights the KL epoch by epoch -- a shallow copy of the caller's, so
        that the caller's ``kl_weight`` stays as it was.
    :ivar optim: the Pyro optimiser (the caller's, or :func:`~pyro_sparse_bnn.core.optim.JointAdam`).
    :ivar skip_slab_draws: whether the local reparameterisation handler may skip slab draws
        (with the analytic-KL ELBO nothing reads them).
    :ivar loader: the ``DataLoader`` passed as ``x``, or ``None`` for tensors ``x``, ``y``
        (checked and converted by the network).
    :ivar num_data: number of training examples. :ivar steps_per_epoch: minibatches per epoch.
    :ivar config: the arguments that shape the trajectory, as plain data, stored in
        checkpoints and compared on resume.
    """

    epochs: int
    batch_size: Optional[int]
    lr: float
    lr_decay: float
    logit_lr: Optional[float]
    seed: Optional[int]
    temperature: Callable[[int], float]
    kl_warmup: int
    indicator_warmup: int
    num_particles: int
    shuffle: bool
    progress: bool
    callbacks: Tuple[Callable, ...]
    checkpoint: Optional[Path]
    checkpoint_every: int
    resume: Optional[Union[str, os.PathLike]]
    indicators: Tuple[torch.Tensor, ...]
    elbo: ELBO
    optim: pyro.optim.PyroOptim
    skip_slab_draws: bool
    loader: Optional[torch.utils.data.DataLoader]
    x: Optional[torch.Tensor]
    y: Optional[torch.Tensor]
    num_data: int
    steps_per_epoch: int
    config: Dict[str, object]

    @classmethod
    def build(cls, bnn: SparseBNN, x, y=None, *, epochs, batch_size, lr, lr_decay, logit_lr, seed, temperature,
              kl_warmup, indicator_warmup, num_particles, optim, elbo, shuffle, progress, callbacks, checkpoint,
              checkpoint_every, resume, num_data: Optional[int] = None) -> "FitPlan":
        """Check the arguments of :func:`fit` (same names and meaning) and derive the plan.

        ``x=None, y=None`` with ``num_data`` builds a plan without data, for a route that brings its own data loading (the Lightning
        module, :mod:`~pyro_sparse_bnn.core.lightning`): its :meth:`batches` are then not
        available and ``steps_per_epoch`` is 0.
        """
        check_bnn(bnn, "fit")
        epochs = check_positive_int("epochs", epochs)
        checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
        checkpoint = None if checkpoint is None else _check_checkpoint_path(checkpoint)
        shuffle, progress = check_bool("shuffle", shuffle), show_progress(progress)
        if callable(callbacks):
            callbacks = [callbacks]
        if not all(callable(c) for c in callbacks):
            raise HyperparameterError("callbacks must be a sequence of functions callback(epoch, history, bnn)")
        batch_size = check_positive_int("batch_size", batch_size)
        num_particles = check_positive_int("num_particles", num_particles)
        lr = check_positive("lr", lr)
        if logit_lr is not None:
            logit_lr = check_positive("logit_lr", logit_lr)
            if optim is not None:
                raise HyperparameterError("logit_lr applies to the default optimiser; set it in your own optim")
        lr_decay = check_positive("lr_decay", lr_decay)
        if lr_decay != 1.0 and isinstance(optim, pyro.optim.lr_scheduler.PyroLRScheduler):
            raise HyperparameterError("lr_decay cannot be combined with a Pyro learning-rate scheduler")
        schedule = _schedule(temperature, bnn, epochs)
        kl_warmup = check_non_negative_int("kl_warmup", kl_warmup)
        indicator_warmup = check_non_negative_int("indicator_warmup", indicator_warmup)
        indicators = tuple(bnn.indicator_parameters())
        if indicator_warmup and not indicators:
            raise HyperparameterError(
                f"indicator_warmup needs a prior with indicators; {type(bnn.priors[0]).__name__} has none"
            )
        if elbo is None:
            elbo = MeanFieldELBO(num_particles=num_particles)
        elif kl_warmup:
            if not hasattr(elbo, "kl_weight"):
                raise HyperparameterError(
                    f"kl_warmup needs an ELBO with a kl_weight (MeanFieldELBO), got {type(elbo).__name__}"
                )
            elbo = _private_copy(elbo)

        loader = x if isinstance(x, torch.utils.data.DataLoader) else None
        if num_data is not None:
            if x is not None or y is not None:
                raise InputError("a plan takes either data (x, y) or num_data, not both")
            num_data, steps_per_epoch = check_positive_int("num_data", num_data), 0
        elif loader is not None:
            if y is not None:
                raise InputError("pass either a DataLoader as x (and y=None) or tensors x and y")
            x, num_data, steps_per_epoch = None, len(loader.dataset), len(loader)
        else:
            if y is None:
                raise InputError("y is None: fit needs targets")
            x, y = bnn.check_data(*bnn.as_data(x, y))
            num_data = x.shape[0]
            steps_per_epoch = math.ceil(num_data / batch_size)
        if bnn.num_data is not None and bnn.num_data != num_data:
            raise InputError(
                f"the network was built with num_data={bnn.num_data} but the training data has "
                f"{num_data} examples"
            )
        batch_size = None if loader is not None else batch_size
        config = _fit_config(
            epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay,
            logit_lr=logit_lr, seed=seed, temperature=temperature, kl_warmup=kl_warmup,
            indicator_warmup=indicator_warmup, num_particles=num_particles, shuffle=shuffle,
            optim=type(optim).__name__, elbo=type(elbo).__name__, num_data=num_data,
        )
        if optim is None:
            optim = JointAdam({"lr": lr}, _logit_multiplier(indicators, lr, logit_lr))
        return cls(
            epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, logit_lr=logit_lr, seed=seed,
            temperature=schedule, kl_warmup=kl_warmup, indicator_warmup=indicator_warmup,
            num_particles=num_particles, shuffle=shuffle, progress=progress, callbacks=tuple(callbacks),
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, indicators=indicators,
            elbo=elbo, optim=optim, skip_slab_draws=isinstance(elbo, MeanFieldELBO), loader=loader, x=x, y=y,
            num_data=num_data, steps_per_epoch=steps_per_epoch, config=config,
        )

    @property
    def epoch_decay(self) -> float:
        """Factor applied to the learning rate after every epoch (``lr_decay ** (1 / epochs)``)."""
        return self.lr_decay ** (1.0 / self.epochs)

    def kl_weight(self, epoch: int) -> Optional[float]:
        """Weight of the KL term in ``epoch`` during a KL warm-up (``None``: the ELBO's own)."""
        return min(1.0, (epoch + 1) / (self.kl_warmup + 1)) if self.kl_warmup else None

    def begin_epoch(self, bnn: SparseBNN, epoch: int, freeze_indicators: bool = True) -> float:
        """Apply the schedules of ``epoch`` (0-based) to the run: set the network's temperature
        and, during a KL warm-up, the ELBO's KL weight (the ELBO is the plan's own, so the
        caller's keeps its weight); with ``freeze_indicators``, hold the indicator logits during
        the indicator warm-up by switching off their gradients (a route that cannot change
        ``requires_grad`` mid-run, such as DDP, discards their gradients instead, see
        :meth:`indicators_frozen`). Returns the temperature."""
        tau = float(self.temperature(epoch))
        bnn.set_temperature(tau)
        kl_weight = self.kl_weight(epoch)
        if kl_weight is not None:
            self.elbo.kl_weight = kl_weight
        if freeze_indicators:
            for p in self.indicators:  # frozen parameters get no gradient, so the optimiser skips them
                p.requires_grad_(not self.indicators_frozen(epoch))
        return tau

    def indicators_frozen(self, epoch: int) -> bool:
        """Whether the indicator logits are held at their values in ``epoch`` (indicator warm-up)."""
        return epoch < self.indicator_warmup

    def batches(self, bnn: SparseBNN, epoch: int) -> Iterable[Tuple[torch.Tensor, torch.Tensor]]:
        """The minibatches of ``epoch``, checked: a DataLoader's batch by batch (converted to
        the network's dtype if they are arrays, and moved to its device), tensors were checked
        once, up front."""
        if self.x is None and self.loader is None:
            raise RuntimeError("this plan was built without data: its route loads the batches")
        if self.loader is None:
            return minibatches(self.x, self.y, self.batch_size, self.shuffle)
        return (bnn.check_data(*bnn.as_data(x_batch, y_batch)) for x_batch, y_batch in self.loader)


def _private_copy(elbo: ELBO) -> ELBO:
    """A shallow copy of ``elbo`` for the run to re-weight, with its own failure record."""
    elbo = copy.copy(elbo)
    if isinstance(getattr(elbo, "non_finite_sites", None), dict):
        elbo.non_finite_sites = {}
    return elbo


# --------------------------------------------------------------------------------------
# One step and the epoch loop
# --------------------------------------------------------------------------------------
class NonFiniteStep(Exception):
    """Raised by a step function *before* it applies an update whose loss (or whose
    distributions' parameters) is not finite, so the parameters keep their values;
    :func:`run_epochs` turns it into the error it raises, adding where it happened.

    :param str what: what went wrong, e.g. ``"the loss became nan"``.
    :param str detail: text to append after the position (e.g. the error of a distribution).
    :param loss: the non-finite loss, if there was one.
    """

    def __init__(self, what: str, detail: str = "", loss: Optional[float] = None):
        super().__init__(what)
        self.what, self.detail, self.loss = what, detail, loss

    def message(self, where: str) -> str:
        return f"{self.what} {where}{self.detail}"


def svi_step(model, guide, loss_and_grads, optim: pyro.optim.PyroOptim, *args, **kwargs) -> float:
    """One step of stochastic variational inference, as :meth:`pyro.infer.SVI.step` takes it,
    except that a non-finite loss raises :class:`NonFiniteStep` before the optimiser sees the
    gradients: compute the loss and gradients (``loss_and_grads``, e.g. an ELBO's), collect
    the parameters that were used, step the optimiser on them and zero their gradients.

    :returns: the loss as a float.
    """
    with poutine.trace(param_only=True) as param_capture:
        loss = loss_and_grads(model, guide, *args, **kwargs)
    params = set(site["value"].unconstrained() for site in param_capture.trace.nodes.values())
    loss = torch_item(loss)
    if not math.isfinite(loss):
        for p in params:
            p.grad = None
        raise NonFiniteStep(f"the loss became {loss}", loss=loss)
    optim(params)
    zero_grads(params)
    return loss


def fit_step(bnn: SparseBNN, elbo: ELBO, optim: pyro.optim.PyroOptim, x: torch.Tensor, y: torch.Tensor,
             skip_slab_draws: bool = True) -> float:
    """One optimisation step of :func:`fit` on a minibatch ``x`` ``(batch, *input_shape)``,
    ``y`` ``(batch,)`` or ``(batch, outputs)`` that passed ``bnn.check_data``: the step runs
    under the network's local reparameterisation for this batch size (skipping the slab draws
    that nothing reads when ``skip_slab_draws``, right for
    :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO`) and :func:`svi_step`.

    :returns: the loss as a float.
    :raises NonFiniteStep: if the loss is not finite (the step is not applied).
    """
    with step_context(bnn, x, skip_slab_draws):
        return svi_step(bnn.model, bnn.guide, elbo.loss_and_grads, optim, x, y)


def step_context(bnn: SparseBNN, x: torch.Tensor, skip_slab_draws: bool = True):
    """The context a training step of ``bnn`` runs its model and guide in, for a checked
    minibatch ``x`` ``(batch, *input_shape)``: the local reparameterisation handler for this
    batch size and :meth:`~pyro_sparse_bnn.core.network.SparseBNN.checked_data`."""
    stack = ExitStack()
    stack.enter_context(bnn.reparameterization(skip_slab_draws, x.shape[0]))
    stack.enter_context(bnn.checked_data())
    return stack


def elbo_loss(bnn: SparseBNN, elbo: ELBO, x: torch.Tensor, y: torch.Tensor,
              skip_slab_draws: bool = True) -> torch.Tensor:
    """The loss :func:`fit_step` minimises, as a differentiable scalar tensor rather than a
    step: ``elbo.differentiable_loss`` of the network's model and guide on the checked
    minibatch ``x`` ``(batch, *input_shape)``, ``y`` ``(batch,)`` or ``(batch, outputs)``, in
    :func:`step_context`. Same draws (same random state), same value and gradients as
    ``fit_step``'s loss; for routes whose optimiser steps itself (the Lightning module).

    The minibatch log-likelihood is scaled by ``bnn.num_data / batch`` (the model's data
    plate) and the KL (times the ELBO's ``kl_weight``) enters once.
    """
    with step_context(bnn, x, skip_slab_draws):
        return elbo.differentiable_loss(bnn.model, bnn.guide, x, y)


def run_epochs(
    step: Callable[[torch.Tensor, torch.Tensor], float],
    batches: Callable[[int], Iterable[Tuple[torch.Tensor, torch.Tensor]]],
    history: FitHistory,
    bnn: SparseBNN,
    *,
    epochs: int,
    steps_per_epoch: int,
    start_epoch: int = 0,
    begin_epoch: Optional[Callable[[int], Optional[dict]]] = None,
    end_epoch: Optional[Callable[[int], bool]] = None,
    non_finite: Callable[[str], BaseException] = NonFiniteLossError,
    progress: Optional[bool] = None,
    desc: str = "SVI",
) -> None:
    """The epoch loop of :func:`fit` and of
    :func:`~pyro_sparse_bnn.analysis.moment_propagation.fit_moments`.

    For each epoch from ``start_epoch`` to ``epochs - 1``: call ``begin_epoch(epoch)``, take
    ``step(x_batch, y_batch)`` on every minibatch of ``batches(epoch)``, add the steps to
    ``bnn.num_steps`` and ``history.num_steps``, append the mean loss and the seconds to
    ``history``, then call ``end_epoch(epoch)``; stop early when it returns ``True``.

    :param step: one optimisation step on a minibatch, returning its loss; it raises
        :class:`NonFiniteStep` instead of applying a non-finite update.
    :param begin_epoch: returns extra fields for the progress bar (or ``None``).
    :param non_finite: builds the exception raised for a :class:`NonFiniteStep` from its
        message, which names the epoch and step (default :class:`NonFiniteLossError`).
    :param progress: show a tqdm bar (one tick per step) with the running ELBO (``None``: only
        in a terminal or a notebook, see :func:`~pyro_sparse_bnn.core.progress.show_progress`).
    """
    bar = progress_bar(progress, total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc=desc,
                       unit="step")
    try:
        for epoch in range(start_epoch, epochs):
            postfix = (begin_epoch(epoch) if begin_epoch is not None else None) or {}
            start, total, steps = time.perf_counter(), 0.0, 0
            for x_batch, y_batch in batches(epoch):
                try:
                    loss = step(x_batch, y_batch)
                except NonFiniteStep as failure:
                    where = f"at epoch {epoch}, step {steps} (step {history.num_steps + steps} overall)"
                    raise non_finite(failure.message(where)) from failure.__cause__
                total += loss
                steps += 1
                bar.update(1)
            bnn.num_steps += steps
            history.num_steps += steps
            history.loss.append(total / max(steps, 1))
            history.seconds.append(time.perf_counter() - start)
            bar.set_postfix(epoch=epoch + 1, elbo=f"{-history.loss[-1]:.4g}", **postfix)
            if end_epoch is not None and end_epoch(epoch):
                break
    finally:
        bar.close()


# --------------------------------------------------------------------------------------
# One run of fit: the per-epoch settings, the step, and the failure handling
# --------------------------------------------------------------------------------------
class _FitRun:
    """The state of one :func:`fit` call around :func:`run_epochs`: its hooks (the epoch's
    temperature, KL weight and frozen logits; history, learning-rate decay, callbacks and
    checkpoints after it), its step, and what happens when it fails."""

    def __init__(self, plan: FitPlan, bnn: SparseBNN, history: FitHistory, start_epoch: int,
                 checkpoints: Optional[Checkpoints]):
        self.plan, self.bnn, self.history, self.checkpoints = plan, bnn, history, checkpoints
        #: the epoch in progress (or the last one run)
        self.epoch = start_epoch
        self.tau = float("nan")

    def begin_epoch(self, epoch: int) -> dict:
        self.epoch, self.tau = epoch, self.plan.begin_epoch(self.bnn, epoch)
        return {"tau": f"{self.tau:.3g}"}

    def end_epoch(self, epoch: int) -> bool:
        plan, history = self.plan, self.history
        history.temperature.append(self.tau)
        history.kl_weight.append(float(getattr(plan.elbo, "kl_weight", 1.0)))
        if plan.epoch_decay != 1.0:
            _scale_learning_rate(plan.optim, plan.epoch_decay)
        stop = any(callback(epoch, history, self.bnn) for callback in plan.callbacks)
        if self.checkpoints is not None:
            self.checkpoints.snapshot(epoch + 1, history)
        return stop

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One step on a checked minibatch; a distribution that rejects non-finite parameters
        becomes a :class:`NonFiniteStep` (with the failing sites diagnosed)."""
        bnn, plan = self.bnn, self.plan
        try:
            return fit_step(bnn, plan.elbo, plan.optim, x, y, plan.skip_slab_draws)
        except ValueError as error:  # distribution validation saw NaN/inf parameters
            if not _non_finite_parameters(bnn):
                raise
            if isinstance(plan.elbo, MeanFieldELBO):
                with bnn.reparameterization(plan.skip_slab_draws, x.shape[0]):
                    plan.elbo.non_finite_sites = plan.elbo.diagnose(bnn.model, bnn.guide, x, y)
            raise NonFiniteStep("a distribution got non-finite parameters",
                                f" ({str(error).splitlines()[0]})") from error

    def non_finite(self, what: str) -> NonFiniteLossError:
        return NonFiniteLossError(_non_finite_message(self.bnn, self.plan.elbo, what, self.checkpoints))

    @contextmanager
    def failure_handling(self):
        """Around the loop: on any exception write the last finite end-of-epoch state (if
        checkpointing) and re-raise -- a ``KeyboardInterrupt`` with a note on how to resume --;
        in every case unfreeze the logits and free the gradients; on success write the final
        state."""
        checkpoints, checkpoint = self.checkpoints, self.plan.checkpoint
        try:
            yield
        except KeyboardInterrupt as interrupt:
            if checkpoints is not None:
                checkpoints.flush()
                interrupt.add_note(f"pyro_sparse_bnn.fit was interrupted in epoch {self.epoch}; "
                                   f"{checkpoints.describe()}: continue with fit(..., resume={str(checkpoint)!r})")
            else:
                interrupt.add_note(f"pyro_sparse_bnn.fit was interrupted in epoch {self.epoch}; pass "
                                   f"checkpoint=path to fit to be able to resume")
            raise
        except BaseException:
            if checkpoints is not None:
                checkpoints.flush()
            raise
        finally:
            for p in self.plan.indicators:
                p.requires_grad_(True)
            for p in self.bnn.parameters():
                p.grad = None
        if checkpoints is not None:
            checkpoints.flush()


def fit(
    bnn: SparseBNN,
    x,
    y=None,
    *,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 5e-3,
    lr_decay: float = 1.0,
    logit_lr: Optional[float] = None,
    seed: Optional[int] = None,
    temperature: TemperatureSchedule = None,
    kl_warmup: int = 0,
    indicator_warmup: int = 0,
    num_particles: int = 1,
    optim: Optional[pyro.optim.PyroOptim] = None,
    elbo: Optional[ELBO] = None,
    shuffle: bool = True,
    progress: Optional[bool] = None,
    callbacks: Sequence[Callable] = (),
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: int = 1,
    resume: Optional[Union[str, os.PathLike]] = None,
) -> FitHistory:
    """Fit the guide of ``bnn`` by stochastic variational inference (the steps of Pyro's ``SVI``).

    Each epoch visits every example once in minibatches; each minibatch ELBO is scaled to
    the full training set by the model's data plate. Every step runs under the local
    reparameterisation handler for the layers that use it at the step's batch size (see
    :meth:`~pyro_sparse_bnn.core.network.SparseBNN.local_reparameterization_layers`); with the
    default :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO` the handler also skips those
    layers' slab draws, which nothing reads then.

    :param bnn: the network to fit, in place: its guide parameters, its step counter
        ``num_steps``, its temperature (:meth:`~pyro_sparse_bnn.core.network.SparseBNN.set_temperature`
        is called every epoch, so after the fit the network holds the last epoch's temperature)
        and, if it is ``None``, its ``num_data``, which ``fit`` sets to the number of training
        examples (the scale of the minibatch log-likelihood; a network built with another
        ``num_data`` raises :class:`~pyro_sparse_bnn.core.errors.InputError`).
    :param x: inputs ``(n, in_features)`` as tensor or array, or a
        ``torch.utils.data.DataLoader`` yielding ``(x_batch, y_batch)`` (then ``y=None``). The
        data move to the network's device (``bnn.to(device)`` first to fit on a GPU); tensors
        must have the network's floating-point dtype, arrays are converted to it.
    :param y: targets ``(n,)`` (labels or regression targets) or ``(n, outputs)``.
    :param int epochs: passes over the data.
    :param int batch_size: minibatch size (ignored for a DataLoader).
    :param float lr: Adam learning rate (5e-3, Bai et al.), unless ``optim`` is given.
    :param float lr_decay: factor by which the learning rate has shrunk after the last
        epoch, applied geometrically epoch by epoch (1.0: constant; 0.01: a hundredfold
        decay, which stabilises the indicators late in training).
    :param logit_lr: learning rate of the indicator logits (default ``lr``). A logit has to
        travel about 5 to 10 units (from ``gamma = 0.99`` to below 0.5 and on to ``lambda``)
        while a weight moves by hundredths, and Adam moves each parameter by about its
        learning rate per step, so on large data sets a larger ``logit_lr`` lets the prior
        prune within a practical number of steps. It changes the optimiser, not the
        objective. The default keeps the logits no faster than the slab scales: early in a
        fit the KL pushes every indicator down at once, and on a data set of a few hundred
        or thousand examples logits that move faster than the scales switch off every node
        before the data have told the useful ones apart (measured with ``lr = 5e-3`` and 200
        epochs: ``logit_lr = 2e-2`` or ``5e-2`` compressed scikit-learn's breast cancer data
        to a constant network for every spike-and-slab prior, and the digits to 0.10-0.86
        accuracy for the node-level ones, against 0.95-0.97 at the default). Raise it for
        large data sets and short schedules, and check the kept architecture.
    :param seed: seed for ``pyro.set_rng_seed`` (torch, numpy and ``random``).
    :param temperature: relaxation temperature schedule: ``None`` keeps the network's, a
        number fixes it, ``(start, end)`` anneals geometrically, a callable maps the epoch
        (0-based) to the temperature. The temperature is part of the network's state: each
        epoch's value is set on ``bnn`` and stays there after the fit.
    :param int kl_warmup: number of epochs over which the weight of the KL term rises
        linearly from 0 to 1 (KL annealing; 0, the default, fits the ELBO throughout). The
        network first fits the data, then the prior prunes what it does not need; the
        reported loss is the annealed objective during the warm-up.
    :param int indicator_warmup: number of epochs during which the indicator logits are held
        at their initial values while everything else is fitted (0, the default: they move
        from the first step). At the authors' initialisation (slab ``sigma = softplus(-6)``)
        the inclusion-weighted slab KL of a node is thousands of nats, far more than an
        untrained node adds to the log-likelihood, so indicators that move from the start
        prune nodes for a cost that the slab scales would have shed within a few epochs; the
        warm-up lets the scales adapt first. It changes the optimisation path, not the
        objective.
    :param int num_particles: ELBO particles per step.
    :param optim: a ``pyro.optim`` optimiser (default
        :func:`~pyro_sparse_bnn.core.optim.JointAdam` with learning rate ``lr``).
    :param elbo: a Pyro ELBO (default :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO`). With
        ``kl_warmup`` the fit computes with a shallow copy of it whose ``kl_weight`` it
        anneals, so the object passed in keeps its ``kl_weight``.
    :param bool shuffle: reshuffle the examples every epoch.
    :param progress: show a tqdm progress bar with the running ELBO (``None``, the default:
        only in a terminal or a notebook, not when output goes to a log file).
    :param callbacks: functions ``callback(epoch, history, bnn)`` called after each epoch;
        one returning ``True`` stops the fit early.
    :param checkpoint: file to keep the fit's state in (a save file, see
        :mod:`~pyro_sparse_bnn.core.checkpoint`; ``psb.load(path)`` reads it as a network). The
        state at the end of an epoch is written every ``checkpoint_every`` epochs, after the
        last epoch (or an early stop), and when the fit stops on an exception -- a
        ``KeyboardInterrupt`` (Ctrl-C), a non-finite loss, an error in a callback --, in which
        case the file holds the last *completed* epoch (an interrupted epoch is redone on
        resume). Writes are atomic. The exception is then re-raised (a ``KeyboardInterrupt``
        with a note saying how to resume): a script stopped by Ctrl-C stops.
    :param int checkpoint_every: epochs between checkpoint writes (1).
    :param resume: a checkpoint file to continue from: the network's state, the optimiser's,
        the random number generators, the history and the epoch counter are restored, and the
        fit runs its remaining epochs. Call ``fit`` with the same arguments as the run that
        wrote it (a differing argument that shapes the trajectory raises
        :class:`~pyro_sparse_bnn.core.errors.HyperparameterError`); then on the CPU the result is
        bit-for-bit the one of an uninterrupted run with the same seed. ``bnn`` may be a fresh
        network built like the one that was fitted. ``checkpoint`` and ``resume`` may be the
        same file.
    :returns: :class:`FitHistory` (on resume: the whole history, earlier epochs included).
    :raises NonFiniteLossError: if the loss becomes NaN or infinite. The message names the
        epoch, the step and the sample sites whose log-density or KL is not finite (with the
        default :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO`); the failing step is not
        applied, so the network keeps its last finite parameters, and the checkpoint file, if
        any, holds the last finite end-of-epoch state.
    """
    plan = FitPlan.build(
        bnn, x, y, epochs=epochs, batch_size=batch_size, lr=lr, lr_decay=lr_decay, logit_lr=logit_lr, seed=seed,
        temperature=temperature, kl_warmup=kl_warmup, indicator_warmup=indicator_warmup,
        num_particles=num_particles, optim=optim, elbo=elbo, shuffle=shuffle, progress=progress,
        callbacks=callbacks, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
    )
    if bnn.num_data is None:
        bnn.num_data = plan.num_data
    history, start_epoch = FitHistory(), 0
    if plan.resume is not None:
        history, start_epoch = _resume(bnn, plan.optim, plan.resume, plan.config)
    elif plan.seed is not None:
        pyro.set_rng_seed(plan.seed)
    checkpoints = None if plan.checkpoint is None else Checkpoints(
        plan.checkpoint, plan.checkpoint_every, bnn, plan.optim, plan.config)
    run = _FitRun(plan, bnn, history, start_epoch, checkpoints)
    with run.failure_handling():
        run_epochs(run.step, lambda epoch: plan.batches(bnn, epoch), history, bnn, epochs=plan.epochs,
                   steps_per_epoch=plan.steps_per_epoch, start_epoch=start_epoch, begin_epoch=run.begin_epoch,
                   end_epoch=run.end_epoch, non_finite=run.non_finite, progress=plan.progress, desc="SVI")
    return history


def _resume(bnn: SparseBNN, optim: pyro.optim.PyroOptim, path, config: dict):
    """Restore the state of the checkpoint ``path`` into ``bnn`` and ``optim``; return the
    history so far and the epoch to continue with."""
    contents = read(path, map_location=bnn.temperature.device)
    state = contents.get("fit_state")
    if not isinstance(state, dict):
        raise SaveFileError(f"resume: {str(path)!r} is a saved network, not a checkpoint written by fit(checkpoint=...)")
    _check_resume_config(state["config"], config, path)
    state_into(bnn, contents, repr(str(path)))
    set_optimizer_state(optim, dict(bnn.named_parameters()), state["optimizer"])
    set_rng_state(state["rng"])
    return FitHistory(**contents["history"]), int(state["epoch"])


def _non_finite_message(bnn: SparseBNN, elbo, what: str, checkpoints: Optional[Checkpoints]) -> str:
    """The :class:`NonFiniteLossError` message: what failed where, the sites whose terms are
    not finite, the non-finite parameters, and where the last finite state is."""
    parts = [what]
    sites = getattr(elbo, "non_finite_sites", None)
    if sites:
        parts.append("non-finite terms at sample sites: " + ", ".join(f"{k!r} ({v})" for k, v in sites.items()))
        sites.clear()
    elif sites is None:
        parts.append(f"(use MeanFieldELBO to have the failing sample sites named; {type(elbo).__name__} cannot)")
    bad = _non_finite_parameters(bnn)
    if bad:
        parts.append(f"non-finite parameters: {', '.join(bad)}")
    if checkpoints is not None:
        parts.append(checkpoints.describe())
    else:
        parts.append("the network keeps its parameters from before the failing step; pass checkpoint=path "
                     "to fit to keep the last finite end-of-epoch state in a file")
    return "; ".join(parts)
