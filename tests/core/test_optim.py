"""JointOptim: one torch optimiser for every parameter SVI reports."""

import copy

import pyro
import pyro.optim
import torch
from pyro.infer import SVI

from pyro_sparse_bnn.core import MeanFieldELBO
from pyro_sparse_bnn.core.optim import JointAdam, JointOptim


def test_joint_adam_takes_the_same_steps_as_pyro_adam(small_bnn, classification_data):
    """Adam's state is per element, so one joint optimiser equals one optimiser per tensor."""
    x, y = classification_data
    a = small_bnn


    b = copy.deepcopy(a)
    svi_a = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 0.01}), MeanFieldELBO())
    svi_b = SVI(b.model, b.guide, JointAdam({"lr": 0.01}), MeanFieldELBO())
    for step in range(5):
        pyro.set_rng_seed(step)
        svi_a.step(x, y)
        pyro.set_rng_seed(step)
        svi_b.step(x, y)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_joint_optim_state_round_trip(small_bnn, classification_data):
    x, y = classification_data
    optim = JointOptim(torch.optim.Adam, {"lr": 0.01})
    svi = SVI(small_bnn.model, small_bnn.guide, optim, MeanFieldELBO())
    svi.step(x, y)
    state = optim.get_state()
    assert "joint" in state
    optim.set_state(state)
    assert len(optim.optimizer.param_groups[0]["params"]) == len(list(small_bnn.parameters()))


def test_joint_adam_is_fused_and_falls_back_to_foreach(small_bnn, classification_data):
    """JointAdam asks for the fused kernel; where a device has none (the constructor raises)
    it uses the multi-tensor one instead of failing."""
    x, y = classification_data
    optim = JointAdam({"lr": 0.01})
    SVI(small_bnn.model, small_bnn.guide, optim, MeanFieldELBO()).step(x, y)
    assert optim.optimizer.defaults["fused"] is True

    class NoFusedAdam(torch.optim.Adam):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, fused=fused, **kwargs)

    optim = JointOptim(NoFusedAdam, {"lr": 0.01, "fused": True})
    SVI(small_bnn.model, small_bnn.guide, optim, MeanFieldELBO()).step(x, y)
    assert optim.optimizer.defaults["foreach"] is True and not optim.optimizer.defaults["fused"]
