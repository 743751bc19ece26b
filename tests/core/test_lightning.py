"""The Lightning module: fit's loss and schedules, Lightning's checkpoints, and a two-process
DDP run on gloo (started with torchrun from the test; ``ddp_worker.py`` is one process)."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch.utils.data import DataLoader, TensorDataset

from pyro_sparse_bnn import HyperparameterError, InputError, SparseBNN, SpikeSlab, fit
from pyro_sparse_bnn.analysis import feature_inclusion_probs
from pyro_sparse_bnn.core import MeanFieldELBO
from pyro_sparse_bnn.core import lightning as psb_lightning
from pyro_sparse_bnn.core.fit import fit_step
from pyro_sparse_bnn.core.optim import JointAdam
from tests.conftest import mlp
from tests.core import ddp_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def L():
    return pytest.importorskip("lightning")


def make(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SparseBNN(mlp([5, 8, 3]), SpikeSlab(prior_inclusion=0.1), num_data=60, **kwargs)


def loader(data, batch_size=20, shuffle=True):
    return DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=shuffle)


def trainer(L, epochs, **kwargs):
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(max_epochs=epochs, **{**options, **kwargs})


def test_missing_lightning_raises_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)  # what an uninstalled package looks like
    monkeypatch.setattr(psb_lightning, "_MODULE_CLASS", None)
    with pytest.raises(ImportError, match=r"pyro_sparse_bnn\[lightning\]"):
        from pyro_sparse_bnn.core.lightning import SparseBNNModule  # noqa: F401
    with pytest.raises(AttributeError):
        psb_lightning.NoSuchThing  # noqa: B018


def test_bad_arguments(L, classification_data):
    module_class = psb_lightning.SparseBNNModule
    with pytest.raises(InputError, match="needs a SparseBNN"):
        module_class(mlp([5, 3]), epochs=2)
    with pytest.raises(InputError, match="num_data"):
        module_class(SparseBNN(mlp([5, 3]), SpikeSlab()), epochs=2)
    with pytest.raises(InputError, match="num_data=60"):
        module_class(make(), num_data=61, epochs=2)
    with pytest.raises(HyperparameterError, match="lr"):
        module_class(make(), epochs=2, lr=-1.0)
    with pytest.raises(HyperparameterError, match="max_epochs=3"):
        trainer(L, 3).fit(module_class(make(), epochs=2), loader(classification_data))


def test_loss_and_step_are_those_of_fit(L, classification_data):
    """On the same minibatch with the same draws the module's loss is fit_step's loss, and one
    step of its optimiser (logit_lr group included) moves every parameter as fit_step does."""
    x, y = classification_data
    x, y = x[:20], y[:20]
    ours, theirs = make(), make()
    module = psb_lightning.SparseBNNModule(ours, epochs=4, lr=1e-2, logit_lr=3e-2)
    optimizer = module.configure_optimizers()
    pyro.set_rng_seed(7)
    loss = module.training_step((x, y), 0)
    loss.backward()
    optimizer.step()
    ids = {id(p) for p in theirs.indicator_parameters()}
    pyro.set_rng_seed(7)
    expected = fit_step(theirs, MeanFieldELBO(), JointAdam({"lr": 1e-2}, lambda p: 3.0 if id(p) in ids else 1.0), x, y)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(ours.layers[0].block.gates.logits, make().layers[0].block.gates.logits)


def test_schedules_follow_fit(L, classification_data):
    """Temperature annealing, KL warm-up, indicator warm-up and learning-rate decay through
    the trainer, against the values fit's schedules give (computed here from the formulas)."""
    bnn = make()
    initial_logits = [p.detach().clone() for p in bnn.indicator_parameters()]
    initial_loc = bnn.layers[0].block.slab.loc.detach().clone()
    module = psb_lightning.SparseBNNModule(bnn, epochs=3, lr=1e-2, lr_decay=0.25, temperature=(1.0, 0.25),
                                           kl_warmup=3, indicator_warmup=3, seed=0)
    run = trainer(L, 3)
    run.fit(module, loader(classification_data))
    history = module.history
    assert history.temperature == pytest.approx([1.0, 0.5, 0.25])
    assert history.kl_weight == pytest.approx([0.25, 0.5, 0.75])
    assert float(bnn.temperature) == pytest.approx(0.25)
    assert len(history) == 3 and history.num_steps == 9 and int(bnn.num_steps) == 9 and int(module.epochs_done) == 3
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)
    assert all(torch.equal(p, q) for p, q in zip(bnn.indicator_parameters(), initial_logits, strict=True))
    assert not torch.equal(bnn.layers[0].block.slab.loc, initial_loc)
    assert bnn.is_fitted and bnn.predict(classification_data[0], num_samples=3).probs.shape == (60, 3)


def test_checkpoint_and_resume_restore_the_guide(L, classification_data, tmp_path):
    """ModelCheckpoint writes the guide and the schedule step; resuming from the checkpoint of
    epoch 1 restores the guide exactly and ends where the uninterrupted run ends."""
    states = {}

    class Record(L.Callback):
        def on_train_start(self, run, module):
            states.setdefault("start", copy.deepcopy(module.bnn.state_dict()))

        def on_train_epoch_end(self, run, module):
            states.setdefault(run.current_epoch, copy.deepcopy(module.bnn.state_dict()))

    arguments = dict(epochs=3, lr=1e-2, lr_decay=0.5, kl_warmup=2, seed=3)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    first = psb_lightning.SparseBNNModule(make(), **arguments)
    trainer(L, 3, enable_checkpointing=True, callbacks=[saver, Record()]).fit(first, loader(classification_data))
    saved = torch.load(tmp_path / "epoch=1.ckpt", weights_only=False)
    assert int(saved["state_dict"]["bnn.num_steps"]) == 6 and int(saved["state_dict"]["epochs_done"]) == 2

    states.clear()
    second = psb_lightning.SparseBNNModule(make(seed=1), **arguments)  # other initial parameters
    trainer(L, 3, callbacks=[Record()]).fit(second, loader(classification_data), ckpt_path=tmp_path / "epoch=1.ckpt")
    restored = states["start"]
    for name, value in torch.load(tmp_path / "epoch=1.ckpt", weights_only=False)["state_dict"].items():
        if name.startswith("bnn."):
            assert torch.equal(restored[name[4:]], value), name
    assert len(second.history) == 3 and second.history.kl_weight == pytest.approx([1 / 3, 2 / 3, 1.0])
    for name, value in first.bnn.state_dict().items():
        assert torch.equal(second.bnn.state_dict()[name], value), name

    with pytest.raises(HyperparameterError, match="lr=0.01"):
        third = psb_lightning.SparseBNNModule(make(), **{**arguments, "lr": 2e-2})
        trainer(L, 3).fit(third, loader(classification_data), ckpt_path=tmp_path / "epoch=1.ckpt")


@pytest.mark.parametrize("shuffle, drop_last", [(False, False), (True, False), (True, True)])
def test_tensor_loader_yields_what_the_default_loader_yields(shuffle, drop_last):
    """The one-index fetch against torch's per-example DataLoader, same generator seed."""
    x, y = torch.randn(50, 3, 2), torch.arange(50)
    ours = psb_lightning.tensor_loader(x, y, 8, shuffle=shuffle, drop_last=drop_last,
                                       generator=torch.Generator().manual_seed(4))
    theirs = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=shuffle, drop_last=drop_last,
                        generator=torch.Generator().manual_seed(4))
    batches = list(ours)
    assert len(batches) == len(ours) == (6 if drop_last else 7)
    for (a, b), (c, d) in zip(batches, theirs, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    labels = torch.cat([b for _, b in batches])
    assert len(labels) == (48 if drop_last else 50) and len(labels.unique()) == len(labels)  # each example once


def test_tensor_loader_refuses_bad_input():
    with pytest.raises(InputError, match="tensors; x is a list"):
        psb_lightning.tensor_loader([[1.0]], torch.zeros(1), 1)
    with pytest.raises(InputError, match="as many examples"):
        psb_lightning.tensor_loader(torch.zeros(3, 2), torch.zeros(4), 1)
    with pytest.raises(HyperparameterError, match="batch_size"):
        psb_lightning.tensor_loader(torch.zeros(3, 2), torch.zeros(3), 0)


def test_gradient_accumulation_steps_on_the_gradient_of_the_batches_together(L):
    """With accumulate_grad_batches=2 and the same draws for both minibatches (weights drawn
    once per minibatch, the same reseed before each), the gradient at the optimiser step is
    the -ELBO gradient of the two minibatches together, computed with Pyro's
    TraceMeanField_ELBO (KL once, likelihood scaled by N / 32); one optimiser step is counted."""
    x, y = ddp_worker.gradient_problem()
    module = psb_lightning.SparseBNNModule(ddp_worker.gradient_network(init_seed=0), epochs=1, lr=1e-3)
    recorder = ddp_worker.Recorder()
    trainer(L, 1, accumulate_grad_batches=2, limit_train_batches=2, callbacks=[recorder]).fit(
        module, loader((x, y), batch_size=ddp_worker.GRADIENT_BATCH, shuffle=False))
    assert int(module.bnn.num_steps) == 1 and module.history.num_steps == 1

    bnn = ddp_worker.gradient_network(init_seed=0)
    assert all(torch.equal(v, recorder.record["initial"][k]) for k, v in bnn.state_dict().items())
    pyro.set_rng_seed(ddp_worker.GRADIENT_SEED)
    together = 2 * ddp_worker.GRADIENT_BATCH
    TraceMeanField_ELBO().differentiable_loss(bnn.model, bnn.guide, x[:together], y[:together]).backward()
    for name, p in bnn.named_parameters():
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(recorder.record["grads"][name], p.grad, rtol=1e-10, atol=1e-12, msg=name)


# --------------------------------------------------------------------------------------
# Two processes on gloo
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Run ``ddp_worker.py`` in two processes with torchrun and return what each wrote."""
    pytest.importorskip("lightning")
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(ddp_worker.__file__)), str(out)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.slow
def test_ddp_gradient_is_the_gradient_of_the_concatenated_minibatch(ddp_run):
    """With the same draws on both processes, DDP's averaged gradient of the per-process
    losses equals the gradient of the -ELBO on the two shards together, computed here with
    Pyro's TraceMeanField_ELBO (KL once, likelihood scaled by N / 32)."""
    first, second = (run["gradient"] for run in ddp_run)
    assert ddp_run[0]["world_size"] == 2
    # the processes started from different parameters; DDP broadcast rank 0's
    assert all(torch.equal(first["initial"][k], second["initial"][k]) for k in first["initial"])
    assert not torch.equal(first["x"], second["x"])  # each process its own shard
    assert len(first["x"]) == len(second["x"]) == ddp_worker.GRADIENT_BATCH
    bnn = ddp_worker.gradient_network(init_seed=0)
    bnn.load_state_dict(first["initial"])
    x, y = torch.cat([first["x"], second["x"]]), torch.cat([first["y"], second["y"]])
    pyro.set_rng_seed(ddp_worker.GRADIENT_SEED)
    TraceMeanField_ELBO().differentiable_loss(bnn.model, bnn.guide, x, y).backward()
    for name, p in bnn.named_parameters():
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(first["grads"][name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
        assert torch.equal(first["grads"][name], second["grads"][name]), name


@pytest.mark.slow
def test_ddp_processes_end_identical_and_find_the_planted_inputs_as_fit_does(ddp_run):
    """After 100 epochs on two processes (each drawing its own noise) both hold the same
    parameters, and the feature PIPs agree with single-process fit's at the same total batch
    size to 0.1: the two relevant inputs near 1, the others near the prior."""
    first, second = (run["fit"] for run in ddp_run)
    assert first["state"].keys() == second["state"].keys()
    assert all(torch.equal(first["state"][k], second["state"][k]) for k in first["state"])
    assert first["num_steps"] == first["history_steps"] == 100 * 300 // 50
    assert first["is_global_zero"] and not second["is_global_zero"]
    x, y = ddp_worker.fit_problem()
    bnn = ddp_worker.fit_network()
    arguments = {k: v for k, v in ddp_worker.FIT.items()}
    fit(bnn, x, y, batch_size=2 * ddp_worker.FIT_BATCH, progress=False, **arguments)
    single = feature_inclusion_probs(bnn)
    assert (single > 0.5).tolist() == [True, True, False, False, False, False]
    assert (first["pips"] > 0.5).tolist() == [True, True, False, False, False, False]
    torch.testing.assert_close(first["pips"], single, atol=0.1, rtol=0.0)


@pytest.mark.slow
def test_ddp_spawn_brings_the_fitted_network_and_its_history_back_to_the_main_process(L):
    """strategy="ddp_spawn" trains copies in spawned processes; Lightning copies rank 0's
    state_dict back, which carries the guide, the step counter and the history."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    bnn = SparseBNN(mlp([4, 6, 2]), SpikeSlab(prior_inclusion=0.2), num_data=120)
    initial = {name: p.detach().clone() for name, p in bnn.named_parameters()}
    module = psb_lightning.SparseBNNModule(bnn, epochs=3, lr=1e-2, seed=0)
    trainer(L, 3, devices=2, strategy="ddp_spawn").fit(module, psb_lightning.tensor_loader(x, y, 20))
    assert module.bnn is bnn and int(bnn.num_steps) == 3 * 120 // 40 and module.history.num_steps == 9
    assert len(module.history) == 3 and all(math.isfinite(v) for v in module.history.loss)
    for name, p in bnn.named_parameters():
        assert not torch.equal(p, initial[name]), name
    assert feature_inclusion_probs(bnn).shape == (4,)
