"""finetune: retrains a compressed module without changing its structure."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyro_sparse_bnn as psb
from pyro_sparse_bnn import (
    HyperparameterError,
    InputError,
    NonFiniteLossError,
    SparseBNN,
    compress,
    finetune,
)
from pyro_sparse_bnn.analysis import SelectInputs
from tests.conftest import conv_net, mlp, randomize_guide


def compressed(net, prior=psb.SpikeSlab, likelihood="categorical", seed=1):
    """The compressed module of a BNN whose guide is set at random (about half the edges kept)."""
    torch.manual_seed(0)
    bnn = SparseBNN(net, prior(), likelihood=likelihood, num_data=60)
    return compress(randomize_guide(bnn, seed=seed)).module


def weights(module):
    return [m.weight for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def toy_classification(num_inputs, n=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_inputs, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    return x, y


@pytest.fixture(scope="module")
def mlp_module():
    module = compressed(mlp([10, 8, 6, 3]))
    assert any(bool((w == 0).any()) for w in weights(module))  # pruned edges inside kept units
    return module


@pytest.fixture(scope="module")
def conv_module():
    module = compressed(conv_net("max-pool"))
    assert any(isinstance(m, nn.Conv2d) and bool((m.weight == 0).any()) for m in module.modules())
    return module


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_structure_is_kept_and_the_input_module_untouched(kind, mlp_module, conv_module):
    module = mlp_module if kind == "mlp" else conv_module
    x, y = toy_classification(10 if kind == "mlp" else 72)
    before = copy.deepcopy(module.state_dict())
    tuned, history = finetune(module, x, y, epochs=3, batch_size=16, lr=1e-2, weight_decay=1e-3, progress=False)
    assert tuned is not module and len(history) == 3
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name])                # the input module is untouched
        new = tuned.state_dict()[name]
        assert new.shape == value.shape
        if name.endswith("weight"):
            assert torch.equal(new == 0, value == 0)           # zeros stay zero, no new zeros
        elif name.endswith("bias"):
            assert not torch.equal(new, value)                 # biases of kept units train
    assert all(not torch.equal(a, b) for a, b in zip(weights(tuned), weights(module), strict=True))
    select = [m for m in tuned.modules() if isinstance(m, SelectInputs)]
    assert [s.indices.tolist() for s in select] == [s.indices.tolist() for s in module.modules()
                                                    if isinstance(s, SelectInputs)]
    assert [type(m) for m in tuned.modules()] == [type(m) for m in module.modules()]


def test_keep_zeros_off_trains_the_pruned_edges_too(mlp_module):
    x, y = toy_classification(10)
    tuned, _ = finetune(mlp_module, x, y, epochs=2, lr=1e-2, keep_zeros=False, progress=False)
    zeros = [w == 0 for w in weights(mlp_module)]
    assert all(bool((w[z] != 0).all()) for w, z in zip(weights(tuned), zeros, strict=True))


@pytest.mark.parametrize("prior", [psb.SpikeSlab, psb.SpikeSlabNode, psb.SpikeSlabGroupHorseshoe,
                                   psb.GroupHorseshoe, psb.SelfCompressingGaussian])
def test_training_loss_decreases_for_every_prior(prior):
    # wide enough that a random guide keeps no one-unit bottleneck, which could not fit 3 classes
    module = compressed(mlp([10, 16, 12, 3]), prior)
    x, y = toy_classification(10)
    with torch.no_grad():
        loss_before = float(F.cross_entropy(module(x), y))
    tuned, history = finetune(module, x, y, epochs=30, batch_size=32, lr=1e-2, progress=False)
    with torch.no_grad():
        loss_after = float(F.cross_entropy(tuned(x), y))
    assert loss_after < 0.7 * loss_before
    assert history.loss[-1] < history.loss[0] and history.metric_name == "accuracy"


def test_validation_history_is_computed_on_the_validation_set(mlp_module):
    x, y = toy_classification(10)
    x_val, y_val = toy_classification(10, n=50, seed=5)
    tuned, history = finetune(mlp_module, x, y, epochs=4, lr=1e-2, x_val=x_val, y_val=y_val, progress=False)
    assert len(history.val_metric) == len(history.val_loss) == len(history.seconds) == 4
    with torch.no_grad():
        before, after = mlp_module(x_val), tuned(x_val)
    assert history.initial_val_metric == pytest.approx(float((before.argmax(1) == y_val).float().mean()))
    assert history.val_metric[-1] == pytest.approx(float((after.argmax(1) == y_val).float().mean()))
    assert history.val_loss[-1] == pytest.approx(float(F.cross_entropy(after, y_val)), rel=1e-5)
    assert not history.restored and history.best_epoch is not None


def test_restore_best_returns_the_best_validation_epoch(mlp_module):
    x, y = toy_classification(10)
    x_val, y_val = toy_classification(10, n=50, seed=5)
    # a learning rate far too large makes the epochs jump around
    tuned, history = finetune(mlp_module, x, y, epochs=6, lr=0.5, x_val=x_val, y_val=y_val, restore_best=True,
                              progress=False)
    metrics = [history.initial_val_metric] + history.val_metric
    losses = [history.initial_val_loss] + history.val_loss
    best = max(range(len(metrics)), key=lambda i: (metrics[i], -losses[i], -i))
    assert history.restored and history.best_epoch == best
    with torch.no_grad():
        out = tuned(x_val)
    assert float((out.argmax(1) == y_val).float().mean()) == pytest.approx(metrics[best])
    assert float(F.cross_entropy(out, y_val)) == pytest.approx(losses[best], rel=1e-5)


@pytest.mark.parametrize("outputs", [1, 2])
def test_regression(outputs):
    module = compressed(mlp([4, 8, outputs]), likelihood="gaussian")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(80, 4, generator=generator)
    target = torch.stack([x[:, 0] - 2 * x[:, 1], x[:, 2] * x[:, 3]], dim=1)[:, :outputs]
    y = target[:, 0] if outputs == 1 else target
    with torch.no_grad():
        mse_before = float(((module(x).reshape(y.shape) - y) ** 2).mean())
    tuned, history = finetune(module, x.numpy(), y.numpy().astype(np.float64), epochs=40, lr=1e-2,
                              x_val=x, y_val=y, progress=False)
    with torch.no_grad():
        mse_after = float(((tuned(x).reshape(y.shape) - y) ** 2).mean())
    assert mse_after < 0.5 * mse_before
    assert history.metric_name == "rmse"
    assert history.val_metric[-1] == pytest.approx(math.sqrt(mse_after), rel=1e-5)


def test_task_is_inferred_from_the_labels_or_given():
    module = compressed(mlp([4, 6, 2]))
    x = torch.randn(40, 4)
    labels = (x[:, 0] > 0).long()
    assert finetune(module, x, labels, epochs=1, progress=False).history.metric_name == "accuracy"
    assert finetune(module, x, labels.numpy().astype(np.int32), epochs=1, progress=False).history.metric_name \
        == "accuracy"
    targets = torch.randn(40, 2)
    assert finetune(module, x, targets, epochs=1, progress=False).history.metric_name == "rmse"
    assert finetune(module, x, labels, task="categorical", epochs=1, progress=False).history.metric_name \
        == "accuracy"
    # integer targets with an explicit regression task are converted to floats
    counts = torch.randint(0, 5, (40, 2))
    assert finetune(module, x, counts, task="regression", epochs=1, progress=False).history.metric_name == "rmse"


def test_a_seed_makes_it_reproducible_without_touching_the_global_generator(mlp_module):
    x, y = toy_classification(10)
    state = torch.get_rng_state()
    a, _ = finetune(mlp_module, x, y, epochs=2, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = finetune(mlp_module, x, y, epochs=2, seed=3, progress=False)
    c, _ = finetune(mlp_module, x, y, epochs=2, seed=4, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_the_seed_fixes_dropout_too():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    x, y = toy_classification(10)
    a, _ = finetune(net, x, y, epochs=2, seed=7, progress=False)
    b, _ = finetune(net, x, y, epochs=2, seed=7, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.training  # the module's mode is restored


def test_lr_decay_slows_the_later_epochs(mlp_module):
    x, y = toy_classification(10)
    one, _ = finetune(mlp_module, x, y, epochs=1, lr=1e-2, progress=False)
    # after epoch 1 the learning rate is 1e-2 * (1e-12) ** (1/2) = 1e-8: epoch 2 barely moves
    decayed, _ = finetune(mlp_module, x, y, epochs=2, lr=1e-2, lr_decay=1e-12, progress=False)
    constant, _ = finetune(mlp_module, x, y, epochs=2, lr=1e-2, progress=False)
    for p, q, r in zip(one.parameters(), decayed.parameters(), constant.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
        assert not torch.allclose(p, r, atol=1e-4)


def test_the_result_exports_and_round_trips_through_state_dict(conv_module, tmp_path):
    x, y = toy_classification(72)
    tuned, _ = finetune(conv_module, x, y, epochs=2, progress=False)
    path = psb.export(tuned, tmp_path / "tuned.pt2", example_input=x[:8])
    with torch.no_grad():
        expected = tuned(x)
        assert torch.allclose(torch.export.load(str(path)).module()(x), expected, atol=1e-6)
    torch.save(tuned.state_dict(), tmp_path / "tuned.pt")
    same_structure = copy.deepcopy(conv_module)
    same_structure.load_state_dict(torch.load(tmp_path / "tuned.pt"))
    with torch.no_grad():
        assert torch.equal(same_structure(x), expected)


def test_a_non_finite_loss_is_reported():
    x = torch.randn(20, 4)
    with pytest.raises(NonFiniteLossError, match="epoch 0, step 0"):
        finetune(mlp([4, 3, 1]), x, torch.full((20,), 3e38), epochs=1, progress=False)


def _bad_calls(module):
    x, y = toy_classification(10, n=30)
    x_nan = x.clone()
    x_nan[3, 2] = float("nan")
    y_inf = torch.randn(30, 3)
    y_inf[5, 0] = float("inf")
    return [
        (lambda: finetune("net", x, y), InputError, "nn.Module"),
        (lambda: finetune(SparseBNN(mlp([10, 3]), psb.SpikeSlab(prior_inclusion=0.1)), x, y), InputError, "compress"),
        (lambda: finetune(nn.ReLU(), x, y), InputError, "no trainable parameters"),
        (lambda: finetune(module, x[:, :9], y), InputError, "selects"),
        (lambda: finetune(mlp([10, 3]), x[:, :9], y), InputError, "does not fit the module"),
        (lambda: finetune(module, x[0], y), InputError, "batch"),
        (lambda: finetune(module, x_nan, y), InputError, "NaN"),
        (lambda: finetune(module, x, y_inf), InputError, "inf"),
        (lambda: finetune(module, x, y + 1), InputError, r"\[0, 3\)"),
        (lambda: finetune(module, x, y.float(), task="classification"), InputError, "integer"),
        (lambda: finetune(module, x, y.float()), InputError, "taken to be regression"),
        (lambda: finetune(mlp([10, 1]), x, y), InputError, "1 output"),
        (lambda: finetune(module, x, y[:20]), InputError, "mismatched number of examples"),
        (lambda: finetune(module, x, y, x_val=x), InputError, "both x_val and y_val"),
        (lambda: finetune(module, x, y, x_val=x[:, :9], y_val=y), InputError, "x_val"),
        (lambda: finetune(module, x, y, x_val=x, y_val=y + 1), InputError, r"y_val must lie in \[0, 3\)"),
        (lambda: finetune(module, x.double(), y), InputError, "dtype"),
        (lambda: finetune(module, x, y, restore_best=True), HyperparameterError, "validation data"),
        (lambda: finetune(module, x, y, epochs=0), HyperparameterError, "epochs"),
        (lambda: finetune(module, x, y, batch_size=-1), HyperparameterError, "batch_size"),
        (lambda: finetune(module, x, y, lr=0), HyperparameterError, "lr"),
        (lambda: finetune(module, x, y, lr_decay=-1), HyperparameterError, "lr_decay"),
        (lambda: finetune(module, x, y, weight_decay=-1e-3), HyperparameterError, "weight_decay"),
        (lambda: finetune(module, x, y, seed=1.5), HyperparameterError, "seed"),
        (lambda: finetune(module, x, y, task="ranking"), HyperparameterError, "task"),
        (lambda: finetune(module, x, y, progress="yes"), HyperparameterError, "progress"),
        (lambda: finetune(module, x, y, teacher="net"), InputError, "teacher must be an nn.Module"),
        (lambda: finetune(module, x, y, teacher=SparseBNN(mlp([10, 3]), psb.SpikeSlab(prior_inclusion=0.1))),
         InputError, "masked_posterior_mean"),
        (lambda: finetune(module, x, y, teacher=mlp([10, 4])), InputError, r"logits \(n, 3\)"),
        (lambda: finetune(mlp([10, 1]), x, y_inf[:, 0].clamp(max=1), teacher=mlp([10, 1])), InputError,
         "classification"),
        (lambda: finetune(module, x, y, teacher=mlp([10, 3]), distillation_weight=1.5), HyperparameterError,
         r"\[0, 1\]"),
        (lambda: finetune(module, x, y, teacher=mlp([10, 3]), temperature=0), HyperparameterError, "temperature"),
    ]


def test_bad_inputs_raise_clear_errors(mlp_module):
    for call, error, message in _bad_calls(mlp_module):
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_a_network_that_keeps_no_input_has_nothing_to_finetune(kind):
    net = mlp([10, 8, 6, 3]) if kind == "mlp" else conv_net("max-pool")
    with pytest.warns(psb.DegenerateNetworkWarning, match="does not depend on its input"):
        module = compressed(net, psb.GroupNormalJeffreys)  # this random guide drops every input unit
    assert isinstance(module[0], psb.analysis.ConstantOutput)
    x, y = toy_classification(10 if kind == "mlp" else 72)
    with pytest.raises(InputError, match="keeps no input"):
        finetune(module, x, y)


def _teacher():
    torch.manual_seed(5)
    return mlp([10, 12, 3])


@pytest.mark.parametrize("weight, temperature", [(0.5, 2.0), (1.0, 4.0), (0.2, 1.0)])
def test_the_distillation_loss_is_the_weighted_sum_of_cross_entropy_and_softened_kl(mlp_module, weight,
                                                                                      temperature):
    """The first epoch's loss of one full-batch step is the loss of the initial weights:
    computed here from the definition, with the teacher's probabilities written out."""
    x, y = toy_classification(10, n=40)
    teacher = _teacher()
    _, history = finetune(mlp_module, x, y, teacher=teacher, distillation_weight=weight, temperature=temperature,
                          epochs=1, batch_size=40, progress=False)
    with torch.no_grad():
        student, logits_t = mlp_module(x).double(), teacher(x).double()
    p = torch.exp(logits_t / temperature)
    p = p / p.sum(1, keepdim=True)
    log_q = student / temperature - torch.logsumexp(student / temperature, 1, keepdim=True)
    kl = float((p * (p.log() - log_q)).sum(1).mean())
    log_softmax = student - torch.logsumexp(student, 1, keepdim=True)
    cross_entropy = -float(log_softmax[torch.arange(40), y].mean())
    expected = (1 - weight) * cross_entropy + weight * temperature ** 2 * kl
    assert history.loss[0] == pytest.approx(expected, rel=1e-5)


def test_distillation_weight_zero_is_plain_finetuning(mlp_module):
    x, y = toy_classification(10)
    plain, _ = finetune(mlp_module, x, y, epochs=2, batch_size=32, progress=False)
    distilled, _ = finetune(mlp_module, x, y, epochs=2, batch_size=32, teacher=_teacher(), distillation_weight=0.0,
                            progress=False)
    for a, b in zip(plain.parameters(), distilled.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_pure_distillation_moves_the_student_towards_the_teacher_and_keeps_the_structure(mlp_module):
    x, _ = toy_classification(10, n=200)
    teacher = _teacher()
    y_random = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(3))

    def kl_to_teacher(student):   # KL(softmax(teacher / 2) || softmax(student / 2)), written out
        with torch.no_grad():
            p = torch.softmax(teacher(x).double() / 2, 1)
            q = torch.softmax(student(x).double() / 2, 1)
        return float((p * (p / q).log()).sum(1).mean())

    distilled, _ = finetune(mlp_module, x, y_random, teacher=teacher, distillation_weight=1.0, epochs=30,
                            batch_size=50, lr=1e-2, progress=False)
    on_labels, _ = finetune(mlp_module, x, y_random, epochs=30, batch_size=50, lr=1e-2, progress=False)
    # with weight 1 the (random) labels are ignored and the student approaches the teacher;
    # trained on the labels alone it does not
    assert kl_to_teacher(distilled) < 0.5 * kl_to_teacher(mlp_module)
    assert kl_to_teacher(distilled) < 0.5 * kl_to_teacher(on_labels)
    for old, new in zip(weights(mlp_module), weights(distilled), strict=True):
        assert torch.equal(new[old == 0], torch.zeros_like(new[old == 0]))
