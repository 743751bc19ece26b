"""Fine-tuning a compressed network with its structure fixed.

The module :func:`~pyro_sparse_bnn.analysis.compress.compress` returns computes what the posterior
means of the kept weights compute, which usually costs some accuracy against a dense network
trained on the same data. :func:`finetune` retrains its weights by plain gradient descent
(Adam on the cross-entropy of the logits, or on the mean squared error) while keeping its
structure: every tensor keeps its shape, the input selection stays, and every weight of an
``nn.Linear`` / ``nn.Conv2d`` that is exactly zero -- an edge pruned inside a kept unit --
stays exactly zero (its gradient is masked and the mask re-applied after every step).
Biases train. Example::

    module, report = psb.compress(bnn)
    tuned, history = psb.finetune(module, x_train, y_train, epochs=5, x_val=x_val, y_val=y_val)
    history.val_metric                # validation accuracy (or RMSE) after every epoch

With ``teacher=psb.masked_posterior_mean(bnn)`` the compressed network also learns the
softened predictions of the posterior-mean network in the original architecture (knowledge distillation),
which costs one pass of the teacher over the training data.

The deterministic baselines of :mod:`pyro_sparse_bnn.apps.baselines` (the dense network, the
pruned architecture trained from scratch) train with the same loop, without the masks.
"""

import copy
import math
import time
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import HyperparameterError, InputError, NonFiniteLossError
from ..core.likelihoods import Likelihood, make_likelihood
from ..core.network import SparseBNN
from ..core.optim import JointAdam
from ..core.progress import progress_bar, show_progress
from ..core.validation import (
    as_tensor,
    check_bool,
    check_features,
    check_finite_number,
    check_positive,
    check_positive_int,
    check_same_length,
    check_seed,
)
from .calibration import accuracy
from .compress import ConstantOutput, SelectInputs

__all__ = ["finetune", "Finetuned", "TrainingHistory", "check_trainable", "structural_masks"]

#: modules whose exactly-zero weights are held at zero by :func:`finetune`
MASKED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: examples per forward pass when evaluating the validation set
_EVAL_BATCH = 2048


@dataclass
class TrainingHistory:
    """What happened during :func:`finetune`, one entry per epoch.

    :ivar loss: mean training loss per epoch (cross-entropy or mean squared error, averaged
        over the epoch's examples; with a teacher, the distillation loss).
    :ivar str metric_name: ``"accuracy"`` (classification) or ``"rmse"`` (regression).
    :ivar val_metric: validation accuracy or RMSE after every epoch (empty without validation
        data).
    :ivar val_loss: validation cross-entropy or mean squared error after every epoch.
    :ivar initial_val_metric: validation metric of the weights before training (``None``
        without validation data); :ivar initial_val_loss: their validation loss.
    :ivar best_epoch: epoch with the best validation metric (ties: the lower validation loss,
        then the earlier epoch), counting from 1; 0 when no epoch beat the weights before
        training; ``None`` without validation data.
    :ivar bool restored: whether the returned module holds the weights of ``best_epoch``
        (``restore_best=True``) rather than those after the last epoch.
    :ivar seconds: wall-clock seconds per epoch (training and validation).
    """

    metric_name: str
    loss: List[float] = field(default_factory=list)
    val_metric: List[float] = field(default_factory=list)
    val_loss: List[float] = field(default_factory=list)
    initial_val_metric: Optional[float] = None
    initial_val_loss: Optional[float] = None
    best_epoch: Optional[int] = None
    restored: bool = False
    seconds: List[float] = field(default_factory=list)

    def __len__(self):
        return len(self.loss)


class Finetuned(NamedTuple):
    """Result of :func:`finetune` (and of
    :func:`~pyro_sparse_bnn.apps.baselines.train_from_scratch`): ``module, history = finetune(...)``.

    :ivar module: the trained module, a new module of the same structure as the one given.
    :ivar history: its :class:`TrainingHistory`.
    """

    module: nn.Module
    history: TrainingHistory


def check_trainable(module, what: str) -> List[nn.Parameter]:
    """The trainable parameters of ``module``, or an :class:`InputError` saying why there are none.

    :param str what: the calling function, for the message.
    :raises InputError: if ``module`` is not an ``nn.Module``, is a :class:`SparseBNN`, has no
        parameter that requires a gradient, or is a compressed network that keeps no input (a
        :class:`ConstantOutput`, or a :class:`SelectInputs` selecting nothing).
    """
    if isinstance(module, SparseBNN):
        raise InputError(
            f"{what} takes a deterministic module, not the SparseBNN: "
            f"module, report = pyro_sparse_bnn.compress(bnn) first"
        )
    if not isinstance(module, nn.Module):
        raise InputError(f"{what} needs an nn.Module (e.g. the output of compress), got {type(module).__name__}")
    if any(isinstance(m, ConstantOutput) or (isinstance(m, SelectInputs) and len(m.indices) == 0)
           for m in module.modules()):
        raise InputError(
            f"{what}: the compressed network keeps no input (a ConstantOutput, or a SelectInputs that selects "
            f"none): its output depends on no input, so there are no weights to train; compress at a lower "
            f"threshold to keep some units"
        )
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise InputError(f"{what}: the module has no trainable parameters")
    return params


def structural_masks(module: nn.Module) -> List[Tuple[nn.Parameter, torch.Tensor]]:
    """``(weight, mask)`` for every ``nn.Linear`` / ``nn.Conv*d`` weight of ``module`` that
    has exact zeros; ``mask`` is ``weight != 0`` (the entries that may train)."""
    masks = []
    for m in module.modules():
        if isinstance(m, MASKED_LAYERS) and m.weight.requires_grad:
            mask = m.weight.detach() != 0
            if not bool(mask.all()):
                masks.append((m.weight, mask))
    return masks


def _check_weight_decay(weight_decay) -> float:
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float, np.floating, np.integer)) \
            or not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise HyperparameterError(f"weight_decay must be a non-negative finite number, got {weight_decay!r}")
    return float(weight_decay)


def _likelihood(task, y: torch.Tensor) -> Likelihood:
    """The likelihood named by ``task``; ``None`` infers it from ``y``'s dtype."""
    if task is None:
        return make_likelihood("regression" if y.is_floating_point() else "classification")
    try:
        return make_likelihood(task)
    except HyperparameterError:
        raise HyperparameterError(
            f"task must be None (inferred from y: integer labels are classification, floating-point "
            f"targets regression), 'classification' (or 'categorical') or 'regression' (or 'gaussian'), "
            f"got {task!r}"
        ) from None


def _outputs(module: nn.Module, x: torch.Tensor, name: str) -> int:
    """Run ``module`` on two examples of ``x``; return its number of outputs, or raise
    :class:`InputError` naming the mismatch between ``x`` and the module's input."""

    def check_selection(select, args):
        (inputs,) = args
        dim = select.dim if select.dim >= 0 else inputs.dim() + select.dim
        if not 0 <= dim < inputs.dim() or inputs.shape[dim] != select.num_inputs:
            raise InputError(
                f"{name} has shape {tuple(x.shape)} but the module selects {len(select.indices)} of "
                f"{select.num_inputs} inputs along dimension {select.dim} of {tuple(inputs.shape)} "
                f"(it takes the full input the network was built for)"
            )

    hooks = [m.register_forward_pre_hook(check_selection) for m in module.modules() if isinstance(m, SelectInputs)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(x[:2])
    except (RuntimeError, IndexError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(
            f"{name} of shape {tuple(x.shape)} does not fit the module: {str(error).strip().splitlines()[0]}"
        ) from None
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2) or out.shape[0] != len(x[:2]):
        raise InputError(
            f"the module must return (batch, outputs), got {tuple(getattr(out, 'shape', ()))} for a batch of "
            f"{len(x[:2])}"
        )
    return 1 if out.dim() == 1 else out.shape[1]


def _check_data(module, x, y, task, dtype, device, names=("x", "y")):
    """``(x, y, likelihood)`` as tensors of the module's dtype and device, checked against
    the module's input and outputs."""
    x = as_tensor(x, names[0], dtype, device)
    y = as_tensor(y, names[1], dtype, device)
    if x.dim() < 2:
        raise InputError(f"{names[0]} has shape {tuple(x.shape)} but the module takes a batch (batch, ...)")
    check_features(x, tuple(x.shape[1:]), dtype, device, name=names[0])
    likelihood = task if isinstance(task, Likelihood) else _likelihood(task, y)
    if not likelihood.is_classification and not y.is_floating_point() and y.dtype != torch.bool:
        y = y.to(dtype)   # integer regression targets (counts, ratings)
    num_outputs = _outputs(module, x, names[0])
    if likelihood.is_classification and num_outputs < 2:
        raise InputError(
            f"{names[1]} is taken as class labels (classification) but the module has {num_outputs} output; "
            f"for regression pass floating-point targets or task='regression'"
        )
    try:
        y = likelihood.check_targets(y, num_outputs)
    except InputError as error:
        message = str(error).replace("y ", f"{names[1]} ", 1)
        if task is None and not likelihood.is_classification:
            message += (f" ({names[1]} is floating point, so the task was taken to be regression; "
                        f"pass integer labels for classification)")
        raise InputError(message) from None
    y = y.long() if likelihood.is_classification else y.to(dtype)
    check_same_length([x, y], list(names))
    return x, y, likelihood


def _loss(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    if classification:
        return F.cross_entropy(out, y)
    return F.mse_loss(out.reshape(y.shape), y)


@torch.no_grad()
def _evaluate(module: nn.Module, x: torch.Tensor, y: torch.Tensor, classification: bool) -> Tuple[float, float]:
    """``(metric, loss)`` of ``module`` on ``(x, y)``: accuracy and cross-entropy, or RMSE
    and mean squared error."""
    module.eval()
    out = torch.cat([module(x[i:i + _EVAL_BATCH]) for i in range(0, len(x), _EVAL_BATCH)])
    loss = float(_loss(out.double(), y if classification else y.double(), classification))
    return (accuracy(out, y) if classification else math.sqrt(loss)), loss


@dataclass(frozen=True)
class _Distillation:
    """The teacher's softened class probabilities ``softmax(teacher(x) / temperature)``,
    ``(n, classes)``, and the share ``weight`` of the distillation term in the loss."""

    probs: torch.Tensor
    weight: float
    temperature: float

    def loss(self, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``(1 - w) CE(out, y) + w T^2 KL(p_teacher || softmax(out / T))`` (the ``T^2``
        keeps the gradient's size independent of the temperature)."""
        log_q = F.log_softmax(out / self.temperature, dim=-1)
        kl = F.kl_div(log_q, self.probs[idx], reduction="batchmean")
        return (1 - self.weight) * F.cross_entropy(out, y) + self.weight * self.temperature ** 2 * kl


@torch.no_grad()
def _teacher_probs(teacher: nn.Module, x: torch.Tensor, num_classes: int, temperature: float) -> torch.Tensor:
    """``softmax(teacher(x) / temperature)`` in evaluation mode, checked against the student's classes."""
    was_training = teacher.training
    teacher.eval()
    try:
        out = torch.cat([teacher(x[i:i + _EVAL_BATCH]) for i in range(0, len(x), _EVAL_BATCH)])
    finally:
        teacher.train(was_training)
    if out.shape != (len(x), num_classes):
        raise InputError(f"the teacher maps x to shape {tuple(out.shape)} but the module has {num_classes} "
                         f"outputs; the teacher must return logits (n, {num_classes})")
    if not torch.isfinite(out).all():
        raise InputError("the teacher's outputs on x contain NaN or inf")
    return F.softmax(out.to(x.dtype) / temperature, dim=-1)


def _epoch(module, x, y, classification, optimizer, masks, batch_size, generator, bar, epoch,
           distillation: Optional[_Distillation] = None) -> float:
    """One pass over ``(x, y)`` in shuffled minibatches; the mean training loss."""
    module.train()
    n = len(x)
    order = torch.randperm(n, generator=generator, device="cpu").to(x.device)  # the generator is a CPU one
    total = 0.0
    for step, i in enumerate(range(0, n, batch_size)):
        idx = order[i:i + batch_size]
        out = module(x[idx])
        loss = _loss(out, y[idx], classification) if distillation is None else distillation.loss(out, y[idx], idx)
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(f"the training loss became {value} at epoch {epoch}, step {step}; try a smaller lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for weight, mask in masks:
            weight.grad.mul_(mask)
        optimizer.step()
        with torch.no_grad():
            for weight, mask in masks:
                weight.mul_(mask)
        total += value * len(idx)
        bar.update(1)
    return total / n


def finetune(
    module: nn.Module,
    x,
    y,
    *,
    task=None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_decay: float = 1.0,
    weight_decay: float = 0.0,
    seed: Optional[int] = 0,
    x_val=None,
    y_val=None,
    restore_best: bool = False,
    keep_zeros: bool = True,
    teacher: Optional[nn.Module] = None,
    distillation_weight: float = 0.5,
    temperature: float = 2.0,
    progress: Optional[bool] = None,
) -> Finetuned:
    """Retrain the weights of a compressed module with its structure fixed.

    Trains a copy of ``module`` with Adam on minibatches (every example once per epoch, in an
    order drawn from ``seed``): cross-entropy of the outputs (logits) against integer labels
    for classification, mean squared error for regression. Shapes, buffers (the input
    selection) and, with ``keep_zeros``, every exactly-zero weight of an ``nn.Linear`` /
    ``nn.Conv*d`` stay as they are; all other weights and every bias train. The baselines of
    :mod:`pyro_sparse_bnn.apps.baselines` train with this same loop, without the masks.

    :param module: the module to fine-tune, typically the output of
        :func:`~pyro_sparse_bnn.analysis.compress.compress` or
        :func:`~pyro_sparse_bnn.apps.baselines.magnitude_prune` (any ``nn.Module`` with
        parameters that maps ``(batch, ...)`` to ``(batch, outputs)`` works). It is not
        modified.
    :param x: inputs ``(n, *input_shape)`` as tensor or array (arrays are converted to the
        module's dtype and device; tensors are moved to its device).
    :param y: integer class labels ``(n,)`` in ``[0, outputs)``, or regression targets
        ``(n,)`` (one output) or ``(n, outputs)``.
    :param task: ``"classification"`` (or ``"categorical"``, the likelihood's name),
        ``"regression"`` (or ``"gaussian"``), or ``None`` (default): classification for
        integer ``y``, regression for floating-point ``y``.
    :param int epochs: passes over the training data (10).
    :param int batch_size: minibatch size (128).
    :param float lr: Adam's learning rate (1e-3).
    :param float lr_decay: factor by which the learning rate has shrunk after the last epoch,
        applied geometrically epoch by epoch (1.0: constant), as in
        :func:`~pyro_sparse_bnn.core.fit.fit`.
    :param float weight_decay: L2 penalty added to the gradients by Adam (0). Masked weights
        stay zero with it too.
    :param seed: seed of the example order and of any randomness inside the module (dropout),
        drawn from private generators: the global random state is left as it was. ``None``:
        a fresh order every call.
    :param x_val: optional validation inputs, evaluated after every epoch (and once before
        training); :param y_val: their labels or targets.
    :param bool restore_best: return the weights of the epoch with the best validation
        metric (highest accuracy, lowest RMSE; the weights before training count as epoch 0)
        instead of the last epoch's; needs ``x_val`` and ``y_val``.
    :param bool keep_zeros: hold exactly-zero weights at zero (default). ``False`` trains
        every weight of the kept units (the architecture stays fixed, the sparsity inside
        the units does not).
    :param teacher: optional ``nn.Module`` mapping ``x`` to logits ``(n, classes)``
        (classification only), typically the posterior-mean network in the original architecture,
        :func:`~pyro_sparse_bnn.analysis.compress.masked_posterior_mean` of the same fitted BNN.
        Its outputs on ``x`` are computed once, in evaluation mode, and the loss becomes
        ``(1 - w) CE(outputs, y) + w T^2 KL(softmax(teacher / T) || softmax(outputs / T))``
        (knowledge distillation): the compressed network learns the larger network's
        softened predictions as well as the labels. The teacher is not trained.
    :param float distillation_weight: ``w`` in ``[0, 1]`` (0.5); 0 is plain fine-tuning.
    :param float temperature: ``T > 0`` (2.0); higher values soften both distributions.
    :param progress: show a tqdm progress bar with the running loss and validation metric
        (``None``, the default: only in a terminal or a notebook).
    :returns: :class:`Finetuned` ``(module, history)``: a new module (same structure, works
        with :func:`~pyro_sparse_bnn.persistence.export.export` and ``state_dict``) and its
        :class:`TrainingHistory`.
    :raises InputError: if ``module`` is not an ``nn.Module``, is a :class:`SparseBNN`, has
        no trainable parameters, or keeps no input: a compressed network whose output depends
        on no input (a :class:`~pyro_sparse_bnn.analysis.compress.ConstantOutput`, or a linear network
        whose :class:`~pyro_sparse_bnn.analysis.compress.SelectInputs` selects nothing) has nothing to
        fine-tune, which is reported as an error rather than returned unchanged; if
        ``x`` does not fit the module's input, contains NaN/inf or does not match ``y`` in
        length; if labels lie outside ``[0, outputs)`` or targets do not match the outputs'
        shape.
    :raises HyperparameterError: for a non-positive ``epochs``, ``batch_size``, ``lr`` or
        ``lr_decay``, a negative ``weight_decay``, an unknown ``task`` or ``restore_best``
        without validation data, or a ``distillation_weight`` outside ``[0, 1]`` or a
        non-positive ``temperature``.
    :raises NonFiniteLossError: if the training loss becomes NaN or infinite.
    """
    check_trainable(module, "finetune")
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    lr = check_positive("lr", lr)
    lr_decay = check_positive("lr_decay", lr_decay)
    weight_decay = _check_weight_decay(weight_decay)
    seed = check_seed(seed)
    restore_best, keep_zeros = check_bool("restore_best", restore_best), check_bool("keep_zeros", keep_zeros)
    progress = show_progress(progress)
    distillation_weight = check_finite_number("distillation_weight", distillation_weight)
    if not 0 <= distillation_weight <= 1:
        raise HyperparameterError(f"distillation_weight must lie in [0, 1], got {distillation_weight}")
    temperature = check_positive("temperature", temperature)
    if teacher is not None and not isinstance(teacher, nn.Module) or isinstance(teacher, SparseBNN):
        raise InputError(
            f"teacher must be an nn.Module returning logits, got {type(teacher).__name__}; for a fitted "
            f"SparseBNN pass psb.masked_posterior_mean(bnn), its posterior-mean network in the original architecture"
        )
    module = copy.deepcopy(module)
    params = [p for p in module.parameters() if p.requires_grad]
    dtype, device = params[0].dtype, params[0].device
    x, y, likelihood = _check_data(module, x, y, task, dtype, device)
    classification = likelihood.is_classification
    validate = x_val is not None or y_val is not None
    if validate:
        if x_val is None or y_val is None:
            raise InputError("pass both x_val and y_val (or neither)")
        x_val, y_val, _ = _check_data(module, x_val, y_val, likelihood, dtype, device, ("x_val", "y_val"))
    elif restore_best:
        raise HyperparameterError("restore_best needs validation data: pass x_val and y_val")

    distillation = None
    if teacher is not None:
        if not classification:
            raise InputError("a teacher distils class probabilities: it needs a classification task")
        probs = _teacher_probs(teacher, x, _outputs(module, x, "x"), temperature)
        distillation = _Distillation(probs, distillation_weight, temperature)
    masks = structural_masks(module) if keep_zeros else []
    # torch's fused Adam (the multi-tensor one where no fused kernel exists), as fit uses: about
    # 20 % faster per step than torch's default Adam for a LeNet-300-100 on the CPU
    optimizer = JointAdam({"lr": lr, "weight_decay": weight_decay}).make_optimizer(params)
    scheduler = None if lr_decay == 1.0 else torch.optim.lr_scheduler.ExponentialLR(optimizer, lr_decay ** (1 / epochs))
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    history = TrainingHistory(metric_name="accuracy" if classification else "rmse")
    was_training = module.training
    if validate:
        history.initial_val_metric, history.initial_val_loss = _evaluate(module, x_val, y_val, classification)
        history.best_epoch = 0
        best = (history.initial_val_metric, history.initial_val_loss)
        best_state = copy.deepcopy(module.state_dict()) if restore_best else None
    sign = 1 if classification else -1   # larger accuracy, smaller RMSE is better
    bar = progress_bar(progress, total=epochs * math.ceil(len(x) / batch_size), desc="training", unit="step")
    # a seed also fixes any randomness inside the module (dropout) without touching the global generator
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for epoch in range(epochs):
                start = time.perf_counter()
                history.loss.append(_epoch(module, x, y, classification, optimizer, masks, batch_size, generator,
                                           bar, epoch, distillation))
                if scheduler is not None:
                    scheduler.step()
                postfix = {"epoch": epoch + 1, "loss": f"{history.loss[-1]:.4g}"}
                if validate:
                    metric, val_loss = _evaluate(module, x_val, y_val, classification)
                    history.val_metric.append(metric)
                    history.val_loss.append(val_loss)
                    postfix[f"val_{history.metric_name}"] = f"{metric:.4g}"
                    if sign * metric > sign * best[0] or (metric == best[0] and val_loss < best[1]):
                        best, history.best_epoch = (metric, val_loss), epoch + 1
                        if restore_best:
                            best_state = copy.deepcopy(module.state_dict())
                history.seconds.append(time.perf_counter() - start)
                bar.set_postfix(postfix)
    finally:
        bar.close()
        module.train(was_training)
        for p in params:
            p.grad = None
    if restore_best:
        module.load_state_dict(best_state)
        history.restored = True
    return Finetuned(module, history)
