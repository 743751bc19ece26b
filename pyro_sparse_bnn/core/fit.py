"""Fitting a :class:`~pyro_sparse_bnn.core.network.SparseBNN` with Pyro's SVI over minibatches."""

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import pyro
import pyro.optim
import pyro.optim.lr_scheduler
import torch
from pyro.infer import ELBO, SVI
from tqdm.auto import tqdm

from .checkpoint import Checkpoints, set_optimizer_state, set_rng_state
from .elbo import MeanFieldELBO
from .errors import HyperparameterError, InputError, NonFiniteLossError, SaveFileError
from .network import SparseBNN
from .optim import JointAdam, JointOptim
from .priors.base import check_positive
from .savefile import read, state_into
from .validation import check_bool, check_positive_int

__all__ = ["fit", "FitHistory", "TemperatureSchedule", "geometric_temperature"]

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


def _indicator_logits(bnn: SparseBNN) -> List[torch.Tensor]:
    """The indicator-logit parameters of ``bnn`` (empty for priors without indicators)."""
    return [p for name, p in bnn.named_parameters() if name.endswith("logits")]


def _logit_multiplier(logits: List[torch.Tensor], lr: float, logit_lr: Optional[float]):
    if logit_lr is None or logit_lr == lr:
        return None
    ids = {id(p) for p in logits}
    return lambda p: logit_lr / lr if id(p) in ids else 1.0


def _non_finite_parameters(bnn: SparseBNN) -> List[str]:
    return [name for name, p in bnn.named_parameters() if not bool(torch.isfinite(p).all())]


class _NonFiniteStep(Exception):
    """Raised inside ``SVI.step`` by the loss guard, before the optimiser sees the gradients."""

    def __init__(self, loss: float):
        super().__init__(loss)
        self.loss = loss


def _guard_non_finite(svi: SVI) -> None:
    """Make ``svi.step`` raise :class:`_NonFiniteStep` when the loss is NaN or infinite,
    before the optimiser step: the parameters keep their last finite values."""
    inner = svi.loss_and_grads

    def guarded(model, guide, *args, **kwargs):
        loss = inner(model, guide, *args, **kwargs)
        if not math.isfinite(loss):
            raise _NonFiniteStep(loss)
        return loss

    svi.loss_and_grads = guarded


def _fit_step(bnn: SparseBNN, svi: SVI, x: torch.Tensor, y: torch.Tensor, skip_slab_draws: bool) -> float:
    """One optimisation step of :func:`fit` on the minibatch ``(x, y)``, which must have
    passed ``bnn.check_data``; returns the loss."""
    with bnn.reparameterization(skip_slab_draws, x.shape[0]), bnn._checked_data():
        return svi.step(x, y)


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
    progress: bool = True,
    callbacks: Sequence[Callable] = (),
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: int = 1,
    resume: Optional[Union[str, os.PathLike]] = None,
) -> FitHistory:
    """Fit the guide of ``bnn`` by stochastic variational inference (Pyro's ``SVI``).

    Each epoch visits every example once in minibatches; each minibatch ELBO is scaled to
    the full training set by the model's data plate. Every step runs under the local
    reparameterisation handler for the layers that use it at the step's batch size (see
    :meth:`~pyro_sparse_bnn.core.network.SparseBNN.local_reparameterization_layers`); with the
    default :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO` the handler also skips those
    layers' slab draws, which nothing reads then.

    :param bnn: the network to fit (its ``num_data`` is set to ``len(x)`` if unset).
    :param x: inputs ``(n, in_features)`` as tensor or array, or a
        ``torch.utils.data.DataLoader`` yielding ``(x_batch, y_batch)`` (then ``y=None``).
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
        (0-based) to the temperature.
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
    :param elbo: a Pyro ELBO (default :class:`~pyro_sparse_bnn.core.elbo.MeanFieldELBO`).
    :param bool shuffle: reshuffle the examples every epoch.
    :param bool progress: show a tqdm progress bar with the running ELBO.
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
    if not isinstance(bnn, SparseBNN):
        raise InputError(f"fit needs a SparseBNN, got {type(bnn).__name__}")
    epochs = check_positive_int("epochs", epochs)
    checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
    checkpoint = None if checkpoint is None else _check_checkpoint_path(checkpoint)
    shuffle, progress = check_bool("shuffle", shuffle), check_bool("progress", progress)
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
    epoch_decay = lr_decay ** (1.0 / epochs)
    schedule = _schedule(temperature, bnn, epochs)
    for name, value in (("kl_warmup", kl_warmup), ("indicator_warmup", indicator_warmup)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise HyperparameterError(f"{name} must be a non-negative integer, got {value!r}")
    logits = _indicator_logits(bnn)
    if indicator_warmup and not logits:
        raise HyperparameterError(
            f"indicator_warmup needs a prior with indicators; {type(bnn.priors[0]).__name__} has none"
        )
    if elbo is None:
        elbo = MeanFieldELBO(num_particles=num_particles)
    elif kl_warmup and not hasattr(elbo, "kl_weight"):
        raise HyperparameterError(
            f"kl_warmup needs an ELBO with a kl_weight (MeanFieldELBO), got {type(elbo).__name__}"
        )

    # with the analytic-KL ELBO nothing reads the slab draws under local reparameterisation
    skip_slab_draws = isinstance(elbo, MeanFieldELBO)

    loader = x if isinstance(x, torch.utils.data.DataLoader) else None
    if loader is not None:
        if y is not None:
            raise InputError("pass either a DataLoader as x (and y=None) or tensors x and y")
        num_data = len(loader.dataset)
        steps_per_epoch = len(loader)
    else:
        if y is None:
            raise InputError("y is None: fit needs targets")
        x, y = bnn.check_data(*bnn.as_data(x, y))
        num_data = x.shape[0]
        steps_per_epoch = math.ceil(num_data / batch_size)
    if bnn.num_data is None:
        bnn.num_data = num_data
    elif bnn.num_data != num_data:
        raise InputError(
            f"the network was built with num_data={bnn.num_data} but the training data has "
            f"{num_data} examples"
        )

    config = _fit_config(
        epochs=epochs, batch_size=None if loader is not None else batch_size, lr=lr, lr_decay=lr_decay,
        logit_lr=logit_lr, seed=seed, temperature=temperature, kl_warmup=kl_warmup,
        indicator_warmup=indicator_warmup, num_particles=num_particles, shuffle=shuffle,
        optim=type(optim).__name__, elbo=type(elbo).__name__, num_data=num_data,
    )
    svi = SVI(
        bnn.model,
        bnn.guide,
        optim if optim is not None else JointAdam({"lr": lr}, _logit_multiplier(logits, lr, logit_lr)),
        elbo,
    )
    _guard_non_finite(svi)
    history, start_epoch = FitHistory(), 0
    if resume is not None:
        history, start_epoch = _resume(bnn, svi, resume, config)
    elif seed is not None:
        pyro.set_rng_seed(seed)
    checkpoints = None if checkpoint is None else Checkpoints(checkpoint, checkpoint_every, bnn, svi.optim, config)
    bar = tqdm(total=epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not progress,
               desc="SVI", unit="step", mininterval=0.5)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            tau = float(schedule(epoch))
            bnn.set_temperature(tau)
            if kl_warmup:
                elbo.kl_weight = min(1.0, (epoch + 1) / (kl_warmup + 1))
            for p in logits:  # frozen parameters get no gradient, so the optimiser skips them
                p.requires_grad_(epoch >= indicator_warmup)
            start, total, steps = time.perf_counter(), 0.0, 0
            batches = loader if loader is not None else minibatches(x, y, batch_size, shuffle)
            for x_batch, y_batch in batches:
                if loader is not None:  # tensors were checked once, up front
                    x_batch, y_batch = bnn.check_data(x_batch, y_batch)
                where = f"at epoch {epoch}, step {steps} (step {history.num_steps + steps} overall)"
                try:
                    loss = _fit_step(bnn, svi, x_batch, y_batch, skip_slab_draws)
                except _NonFiniteStep as failure:
                    raise NonFiniteLossError(
                        _non_finite_message(bnn, elbo, f"the loss became {failure.loss} {where}", checkpoints)
                    ) from None
                except ValueError as error:  # distribution validation saw NaN/inf parameters
                    if _non_finite_parameters(bnn):
                        if isinstance(elbo, MeanFieldELBO):
                            with bnn.reparameterization(skip_slab_draws, x_batch.shape[0]):
                                elbo.non_finite_sites = elbo.diagnose(bnn.model, bnn.guide, x_batch, y_batch)
                        raise NonFiniteLossError(
                            _non_finite_message(bnn, elbo, f"a distribution got non-finite parameters {where} "
                                                f"({str(error).splitlines()[0]})", checkpoints)
                        ) from error
                    raise
                total += loss
                steps += 1
                bar.update(1)
            bnn.num_steps += steps
            history.num_steps += steps
            history.loss.append(total / max(steps, 1))
            history.temperature.append(tau)
            history.kl_weight.append(float(getattr(elbo, "kl_weight", 1.0)))
            history.seconds.append(time.perf_counter() - start)
            bar.set_postfix(epoch=epoch + 1, elbo=f"{-history.loss[-1]:.4g}", tau=f"{tau:.3g}")
            if epoch_decay != 1.0:
                _scale_learning_rate(svi.optim, epoch_decay)
            stop = any(callback(epoch, history, bnn) for callback in callbacks)
            if checkpoints is not None:
                checkpoints.snapshot(epoch + 1, history)
            if stop:
                break
    except KeyboardInterrupt as interrupt:
        if checkpoints is not None:
            checkpoints.flush()
            interrupt.add_note(f"pyro_sparse_bnn.fit was interrupted in epoch {epoch}; {checkpoints.describe()}: "
                               f"continue with fit(..., resume={str(checkpoint)!r})")
        else:
            interrupt.add_note(f"pyro_sparse_bnn.fit was interrupted in epoch {epoch}; pass checkpoint=path to "
                               f"fit to be able to resume")
        raise
    except BaseException:
        if checkpoints is not None:
            checkpoints.flush()
        raise
    finally:
        bar.close()
        for p in logits:
            p.requires_grad_(True)
        for p in bnn.parameters():
            p.grad = None
    if checkpoints is not None:
        checkpoints.flush()
    return history


def _resume(bnn: SparseBNN, svi: SVI, path, config: dict):
    """Restore the state of the checkpoint ``path`` into ``bnn`` and ``svi``; return the
    history so far and the epoch to continue with."""
    contents = read(path, map_location=bnn.temperature.device)
    state = contents.get("fit_state")
    if not isinstance(state, dict):
        raise SaveFileError(f"resume: {str(path)!r} is a saved network, not a checkpoint written by fit(checkpoint=...)")
    _check_resume_config(state["config"], config, path)
    state_into(bnn, contents, repr(str(path)))
    set_optimizer_state(svi.optim, dict(bnn.named_parameters()), state["optimizer"])
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
