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
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = make()
    fit(c, x, y, epochs=5, batch_size=16, seed=12, progress=False)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


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
    assert all(torch.equal(p, q) for p, q in zip(logits, initial))
    assert not torch.equal(bnn.layers[0].block.slab.loc, loc)
    assert all(p.requires_grad for p in bnn.parameters())
    fit(bnn, x, y, epochs=2, batch_size=20, indicator_warmup=1, progress=False)
    assert not all(torch.equal(p, q) for p, q in zip(logits, initial))


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
