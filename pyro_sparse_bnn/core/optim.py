"""Optimisers for SVI that step all parameters with one torch optimiser.

``pyro.optim.Adam`` keeps one ``torch.optim.Adam`` per parameter tensor and steps them one
after another; a sparse BNN has several parameter tensors per layer (logits, means, scales
of weights and biases), so that loop costs more than the update itself. :class:`JointOptim`
is a drop-in ``PyroOptim`` that puts every parameter SVI reports into a single torch
optimiser, which updates them together with its fused (or multi-tensor) kernels. The
update rule is the same: Adam's state is per element either way.
"""

from typing import Callable, Dict, Optional, Union

import torch
from pyro.optim import PyroOptim

__all__ = ["JointOptim", "JointAdam"]


class JointOptim(PyroOptim):
    """``PyroOptim`` that updates all parameters with one torch optimiser.

    :param optim_constructor: a ``torch.optim.Optimizer`` class.
    :param dict optim_args: its keyword arguments (e.g. ``{"lr": 5e-3}``).
    :param lr_multiplier: optional function ``parameter -> float``; parameters with a
        multiplier other than 1 get their own parameter group with ``lr * multiplier``.
    """

    def __init__(self, optim_constructor, optim_args: Union[Dict, Callable[..., Dict]],
                 lr_multiplier: Optional[Callable[[torch.Tensor], float]] = None):
        if callable(optim_args):
            raise TypeError("JointOptim takes a dictionary of optimiser arguments")
        super().__init__(optim_constructor, optim_args)
        self.lr_multiplier = lr_multiplier
        self.optimizer = None
        self._known = set()

    def _groups(self, params):
        groups: Dict[float, list] = {}
        for p in params:
            factor = 1.0 if self.lr_multiplier is None else float(self.lr_multiplier(p))
            groups.setdefault(factor, []).append(p)
        lr = self.pt_optim_args.get("lr")
        return [
            {"params": members} if factor == 1.0 or lr is None else {"params": members, "lr": lr * factor}
            for factor, members in groups.items()
        ]

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        """A torch optimiser over ``params`` with this optimiser's arguments and parameter
        groups (one per learning-rate multiplier), falling back from the fused kernel to the
        multi-tensor one where none exists for the tensors' device or dtype. :meth:`__call__`
        creates its optimiser with it; routes that step a torch optimiser themselves (the
        Lightning module) use it to get the same groups."""
        groups = self._groups(list(params))
        try:
            return self.pt_optim_constructor(groups, **self.pt_optim_args)
        except RuntimeError:
            if not self.pt_optim_args.get("fused"):
                raise
            # no fused kernel for these tensors' device or dtype: the multi-tensor one
            args = {**self.pt_optim_args, "fused": None, "foreach": True}
            return self.pt_optim_constructor(groups, **args)

    def __call__(self, params, *args, **kwargs) -> None:
        new = [p for p in params if p not in self._known]
        if new:
            self._known.update(new)
            if self.optimizer is None:
                self.optimizer = self.make_optimizer(new)
            else:
                for group in self._groups(new):
                    self.optimizer.add_param_group(group)
        if self.optimizer is not None:
            self.optimizer.step()
            # SVI zeroes the gradients after this call by allocating zeros for each; freeing
            # them instead makes that a no-op and lets the next backward write, not add
            self.optimizer.zero_grad(set_to_none=True)

    def get_state(self) -> Dict:
        return {} if self.optimizer is None else {"joint": self.optimizer.state_dict()}

    def set_state(self, state_dict: Dict) -> None:
        if self.optimizer is None:
            raise RuntimeError("JointOptim.set_state needs the parameters: take one step first")
        self.optimizer.load_state_dict(state_dict["joint"])


def JointAdam(optim_args: Dict, lr_multiplier=None) -> JointOptim:
    """Adam over all parameters at once: ``JointAdam({"lr": 5e-3})``.

    Uses the fused implementation (one kernel for every tensor; the multi-tensor ``foreach``
    one where no fused kernel exists) unless ``optim_args`` says otherwise.
    """
    return JointOptim(torch.optim.Adam, {"fused": True, **optim_args}, lr_multiplier)
