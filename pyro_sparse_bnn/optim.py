"""Optimisers for SVI that step all parameters with one torch optimiser.

``pyro.optim.Adam`` keeps one ``torch.optim.Adam`` per parameter tensor and steps them one
after another; a sparse BNN has several parameter tensors per layer (logits, means, scales
of weights and biases), so that loop costs more than the update itself. :class:`JointOptim`
is a drop-in ``PyroOptim`` that puts every parameter SVI reports into a single torch
optimiser, which updates them together with its multi-tensor (``foreach``) kernels. The
update rule is the same: Adam's state is per element either way.
"""

from typing import Callable, Dict, Union

import torch
from pyro.optim import PyroOptim

__all__ = ["JointOptim", "JointAdam"]


class JointOptim(PyroOptim):
    """``PyroOptim`` that updates all parameters with one torch optimiser.

    :param optim_constructor: a ``torch.optim.Optimizer`` class.
    :param dict optim_args: its keyword arguments (e.g. ``{"lr": 5e-3}``).
    """

    def __init__(self, optim_constructor, optim_args: Union[Dict, Callable[..., Dict]]):
        if callable(optim_args):
            raise TypeError("JointOptim takes a dictionary of optimiser arguments")
        super().__init__(optim_constructor, optim_args)
        self.optimizer = None
        self._known = set()

    def __call__(self, params, *args, **kwargs) -> None:
        new = [p for p in params if p not in self._known]
        if new:
            self._known.update(new)
            if self.optimizer is None:
                self.optimizer = self.pt_optim_constructor(new, **self.pt_optim_args)
            else:
                self.optimizer.add_param_group({"params": new})
        if self.optimizer is not None:
            self.optimizer.step()

    def get_state(self) -> Dict:
        return {} if self.optimizer is None else {"joint": self.optimizer.state_dict()}

    def set_state(self, state_dict: Dict) -> None:
        if self.optimizer is None:
            raise RuntimeError("JointOptim.set_state needs the parameters: take one step first")
        self.optimizer.load_state_dict(state_dict["joint"])


def JointAdam(optim_args: Dict) -> JointOptim:
    """Adam over all parameters at once: ``JointAdam({"lr": 5e-3})``.

    Uses the multi-tensor (``foreach``) implementation unless ``optim_args`` says otherwise.
    """
    return JointOptim(torch.optim.Adam, {"foreach": True, **optim_args})
