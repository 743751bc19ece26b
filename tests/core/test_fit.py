"""fit: SVI over minibatches with schedules, history, callbacks and seeds."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_sparse_bnn import HyperparameterError, NonFiniteLossError, SparseBNN, SpikeSlab, fit
from pyro_sparse_bnn.core import geometric_temperature
from pyro_sparse_bnn.core.optim import JointAdam
from tests.conftest import mlp


def make(seed=0):
    torch.manual_seed(seed)
    return SparseBNN(mlp([5, 8, 3]), SpikeSlab(prior_inclusion=0.1))


def test_fit_learns_the_toy_problem(classification_data):
    x, y = classification_data
    bnn = make()
    history = fit(bnn, x, y, epochs=80, batch_size=20, lr=1e-2, seed=0, progress=False)
    assert len(history) == 80 and history.num_steps == 80 * 3 and int(bnn.num_steps) == 240
    assert bnn.num_data == 60 and bnn.is_fitted
    assert history.loss[-1] < history.loss[0]
    assert history.elbo[-1] == -history.loss[-1]
    accuracy = (bnn.predict(x, 50).probs.argmax(-1) == y).float().mean()
    assert accuracy > 0.8


def test_same_seed_gives_identical_fits(classification_data):
    x, y = classification_data
    a, b = make(), make()
    fit(a, x, y, epochs=5, batch_size=16, seed=11, progress=False)
    fit(b, x, y, epochs=5, batch_size=16, seed=11, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = make()
    fit(c, x, y, epochs=5, batch_size=16, seed=12, progress=False)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_temperature_schedules(classification_data):
    x, y = classification_data
    bnn = make()
    assert fit(bnn, x, y, epochs=3, temperature=0.3, progress=False).temperature == [0.3] * 3
    history = fit(bnn, x, y, epochs=5, temperature=(1.0, 0.1), progress=False)
    assert history.temperature == pytest.approx([1.0, 10**-0.25, 10**-0.5, 10**-0.75, 0.1])
    assert float(bnn.temperature) == pytest.approx(0.1)
    history = fit(bnn, x, y, epochs=2, temperature=lambda epoch: 0.5 + epoch, progress=False)
    assert history.temperature == [0.5, 1.5]
    assert geometric_temperature(2.0, 0.5, 1)(0) == 0.5


def test_kl_warmup_ramps_the_kl_weight(classification_data):
    x, y = classification_data
    history = fit(make(), x, y, epochs=6, kl_warmup=3, progress=False)
    assert history.kl_weight == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_indicator_warmup_holds_the_logits_then_releases_them(classification_data):
    x, y = classification_data
    bnn = make()
    initial = [p.detach().clone() for name, p in bnn.named_parameters() if name.endswith("logits")]
    loc = bnn.layers[0].block.slab.loc.detach().clone()
    fit(bnn, x, y, epochs=3, batch_size=20, indicator_warmup=3, progress=False)
    logits = [p for name, p in bnn.named_parameters() if name.endswith("logits")]
    assert all(torch.equal(p, q) for p, q in zip(logits, initial, strict=True))
    assert not torch.equal(bnn.layers[0].block.slab.loc, loc)
    assert all(p.requires_grad for p in bnn.parameters())
    fit(bnn, x, y, epochs=2, batch_size=20, indicator_warmup=1, progress=False)
    assert not all(torch.equal(p, q) for p, q in zip(logits, initial, strict=True))


def test_indicator_warmup_needs_indicators(classification_data):
    from pyro_sparse_bnn import GroupNormalJeffreys

    x, y = classification_data
    bnn = SparseBNN(mlp([5, 8, 3]), GroupNormalJeffreys())
    with pytest.raises(HyperparameterError, match="indicator_warmup needs a prior with indicators"):
        fit(bnn, x, y, epochs=1, indicator_warmup=1, progress=False)
    with pytest.raises(HyperparameterError, match="indicator_warmup"):
        fit(make(), x, y, epochs=1, indicator_warmup=-1, progress=False)


def test_lr_decay_shrinks_the_learning_rate_geometrically(classification_data):
    x, y = classification_data
    optim = JointAdam({"lr": 0.01})
    fit(make(), x, y, epochs=4, lr_decay=0.01, optim=optim, progress=False)
    assert optim.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.01)


def test_lr_decay_reaches_pyro_per_parameter_optimisers(classification_data):
    import pyro.optim

    x, y = classification_data
    optim = pyro.optim.Adam({"lr": 0.01})
    fit(make(), x, y, epochs=2, lr_decay=0.25, optim=optim, progress=False)
    lrs = [g["lr"] for o in optim.optim_objs.values() for g in o.param_groups]
    assert len(lrs) == 6 and lrs == pytest.approx([0.0025] * 6)  # 2 layers x (logits, loc, rho)


def test_callback_can_stop_early(classification_data):
    x, y = classification_data
    seen = []

    def stop_after_two(epoch, history, bnn):
        seen.append((epoch, len(history)))
        return epoch == 1

    history = fit(make(), x, y, epochs=10, callbacks=[stop_after_two], progress=False)
    assert len(history) == 2 and seen == [(0, 1), (1, 2)]


def test_dataloader_input(classification_data):
    x, y = classification_data
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    bnn = make()
    history = fit(bnn, loader, epochs=3, progress=False)
    assert bnn.num_data == 60 and history.num_steps == 6
    assert all(math.isfinite(v) for v in history.loss)


def test_non_finite_loss_stops_with_the_epoch_and_step(classification_data):
    x, y = classification_data
    bnn = make()

    def poison(epoch, history, model):
        with torch.no_grad():
            model.layers[0].block.slab.loc[0, 0] = float("nan")

    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 0 \(step 3 overall\).*layers.0.block.slab.loc"):
        fit(bnn, x, y, epochs=3, batch_size=20, callbacks=[poison], progress=False)


def test_progress_bar_shows_the_elbo(classification_data, capsys):
    x, y = classification_data
    fit(make(), x, y, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "SVI" in err and "elbo=" in err


def test_logit_lr_gives_the_indicator_logits_their_own_learning_rate(classification_data):
    """Adam's first step moves every entry by its learning rate (the gradient's sign times
    lr), so one full-batch step reveals each parameter's rate."""
    x, y = classification_data
    initial = {name: p.detach().clone() for name, p in make().named_parameters()}
    bnn = make()
    fit(bnn, x, y, epochs=1, batch_size=60, lr=1e-3, logit_lr=2e-2, progress=False)
    for name, p in bnn.named_parameters():
        step = (p.detach() - initial[name]).abs().max()
        assert step == pytest.approx(2e-2 if name.endswith("logits") else 1e-3, rel=1e-3), name
    with pytest.raises(HyperparameterError, match="logit_lr applies to the default optimiser"):
        fit(make(), x, y, epochs=1, logit_lr=1e-2, optim=JointAdam({"lr": 1e-3}), progress=False)


def fit_keywords(**overrides):
    """fit's keyword arguments at their defaults, with ``overrides``."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(fit).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return {**defaults, **overrides}


def test_the_plan_holds_the_checked_arguments_and_changes_nothing(classification_data):
    import dataclasses

    from pyro_sparse_bnn.core import MeanFieldELBO
    from pyro_sparse_bnn.core.fit import FitPlan

    x, y = classification_data
    bnn = make()
    elbo = MeanFieldELBO()
    plan = FitPlan.build(bnn, x.numpy(), y, **fit_keywords(epochs=4, batch_size=25, kl_warmup=2, elbo=elbo,
                                                           temperature=(1.0, 0.1)))
    assert bnn.num_data is None and float(bnn.temperature) == 0.5  # building the plan changes nothing
    assert plan.num_data == 60 and plan.steps_per_epoch == 3 and isinstance(plan.x, torch.Tensor)
    assert plan.elbo is not elbo and type(plan.elbo) is MeanFieldELBO  # the warm-up re-weights a copy
    assert [plan.kl_weight(e) for e in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert plan.temperature(0) == pytest.approx(1.0) and plan.temperature(3) == pytest.approx(0.1)
    assert {id(p) for p in plan.indicators} == {id(p) for n, p in bnn.named_parameters() if n.endswith("logits")}
    assert plan.config["batch_size"] == 25 and plan.config["optim"] == "NoneType"  # as checkpoints store it
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.epochs = 5
    for bad in (dict(epochs=0), dict(batch_size=2.5), dict(kl_warmup=-1), dict(lr="fast")):
        with pytest.raises(HyperparameterError):
            FitPlan.build(bnn, x, y, **fit_keywords(**bad))
    assert bnn.num_data is None


def test_a_callers_elbo_keeps_its_kl_weight_during_a_warmup(classification_data):
    from pyro_sparse_bnn.core import MeanFieldELBO

    x, y = classification_data
    elbo = MeanFieldELBO()
    a = make()
    history = fit(a, x, y, epochs=4, batch_size=20, kl_warmup=2, elbo=elbo, seed=5, progress=False)
    assert elbo.kl_weight == 1.0 and elbo.non_finite_sites == {}
    assert history.kl_weight == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    # the same fit as with fit's own ELBO, which it may re-weight in place
    b = make()
    reference = fit(b, x, y, epochs=4, batch_size=20, kl_warmup=2, seed=5, progress=False)
    assert history.loss == reference.loss
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    # and the warm-up acted: the first epoch without it fits another objective
    plain = fit(make(), x, y, epochs=1, batch_size=20, elbo=elbo, seed=5, progress=False)
    assert plain.loss[0] != history.loss[0] and plain.kl_weight == [1.0]
    half = MeanFieldELBO(kl_weight=0.5)  # without a warm-up the caller's weight is used as it is
    assert fit(make(), x, y, epochs=1, elbo=half, progress=False).kl_weight == [0.5] and half.kl_weight == 0.5


@pytest.mark.parametrize("validation, failure", [
    (False, r"the loss became (nan|inf)"),  # the loss guard
    (True, r"a distribution got non-finite parameters"),  # a distribution rejects its NaN arguments first
])
def test_a_non_finite_step_is_not_applied(classification_data, validation, failure):
    """The step whose loss is not finite leaves every parameter and the optimiser's state as
    they were after the last finite step."""
    import pyro

    x, y = classification_data
    bnn = make()
    optim = JointAdam({"lr": 1e-2})
    before = {}

    def poison(epoch, history, model):
        with torch.no_grad():
            model.layers[0].block.slab.rho[1, 2] = float("inf")  # an infinite slab KL
        before.update({name: p.detach().clone() for name, p in model.named_parameters()})

    with pytest.raises(NonFiniteLossError, match=failure + r" at epoch 1, step 0 \(step 3 overall\)"), \
            pyro.validation_enabled(validation):
        fit(bnn, x, y, epochs=3, batch_size=20, optim=optim, callbacks=[poison], progress=False)
    for name, p in bnn.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None and p.requires_grad
    assert {int(s["step"]) for s in optim.optimizer.state.values()} == {3}  # the 3 steps of epoch 0
    assert int(bnn.num_steps) == 3


def test_svi_step_takes_the_step_of_pyro_svi(classification_data):
    """svi_step mirrors pyro.infer.SVI.step (loss, gradients, optimiser step, zeroed gradients)."""
    import pyro
    from pyro.infer import SVI

    from pyro_sparse_bnn.core import MeanFieldELBO
    from pyro_sparse_bnn.core.fit import svi_step

    x, y = classification_data
    results = []
    for ours in (False, True):
        bnn, optim, elbo = make(), pyro.optim.Adam({"lr": 1e-2}), MeanFieldELBO()
        svi = SVI(bnn.model, bnn.guide, optim, elbo)
        pyro.set_rng_seed(3)
        losses = [svi_step(bnn.model, bnn.guide, elbo.loss_and_grads, optim, x, y) if ours else svi.step(x, y)
                  for _ in range(3)]
        results.append((losses, [p.detach().clone() for p in bnn.parameters()]))
        assert all(p.grad is None or not p.grad.any() for p in bnn.parameters())
    (losses, params), (our_losses, our_params) = results
    assert our_losses == losses and all(torch.equal(p, q) for p, q in zip(params, our_params, strict=True))
    assert not torch.equal(params[0], make().layers[0].block.gates.logits)  # the steps moved the network
