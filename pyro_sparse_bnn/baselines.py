"""Deterministic baselines trained with the same budget as a sparse BNN."""

import copy
import time
from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .errors import HyperparameterError

__all__ = ["DeterministicResult", "train_deterministic"]


@dataclass
class DeterministicResult:
    """A trained deterministic network and its per-epoch training loss."""

    module: nn.Module
    loss: List[float] = field(default_factory=list)
    seconds: float = 0.0


def train_deterministic(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str = "classification",
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> DeterministicResult:
    """Train a copy of ``net`` with Adam on cross-entropy (classification) or mean squared
    error (regression), visiting every example once per epoch in shuffled minibatches.

    :param x: ``(n, in_features)``; :param y: ``(n,)`` labels or targets.
    :returns: :class:`DeterministicResult` (the trained copy; ``net`` is untouched).
    """
    if task not in ("classification", "regression"):
        raise HyperparameterError(f"task must be 'classification' or 'regression', got {task!r}")
    generator = torch.Generator().manual_seed(seed)
    module = copy.deepcopy(net)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    result = DeterministicResult(module)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            out = module(x[idx])
            if task == "classification":
                loss = F.cross_entropy(out, y[idx])
            else:
                loss = F.mse_loss(out.reshape(y[idx].shape), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        result.loss.append(total / len(x))
    result.seconds = time.perf_counter() - start
    return result
