"""Saving, loading, checkpoints, resume and the non-finite-loss guard."""

import pytest
import torch

import pyro_sparse_bnn as psb
from pyro_sparse_bnn import NonFiniteLossError, SaveFileError, SparseBNN, SpikeSlab, fit
from pyro_sparse_bnn.core import GaussianLikelihood
from pyro_sparse_bnn.persistence import load_state
from tests.conftest import conv_net, mlp

SCHEDULE = dict(epochs=6, batch_size=16, seed=3, lr=1e-2, lr_decay=0.1, kl_warmup=2, temperature=(1.0, 0.3),
                indicator_warmup=1, progress=False)


def make(seed=0, prior=None):
    torch.manual_seed(seed)
    return SparseBNN(mlp([5, 8, 3]), prior or SpikeSlab(prior_inclusion=0.1))


def same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_round_trip_gives_identical_pips_predictions_and_history(classification_data, tmp_path):
    x, y = classification_data
    bnn = make()
    history = fit(bnn, x, y, epochs=4, batch_size=16, seed=1, progress=False)
    path = psb.save(bnn, tmp_path / "bnn.pt", history=history)
    rng = torch.get_rng_state()
    loaded = psb.load(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading does not touch the user's generator
    assert same_parameters(bnn, loaded) and loaded.is_fitted and loaded.num_data == 60
    assert repr(loaded) == repr(bnn)
    for name, pip in psb.analysis.edge_inclusion_probs(bnn).items():
        assert torch.equal(pip, psb.analysis.edge_inclusion_probs(loaded)[name])
    torch.manual_seed(7)
    expected = bnn.predict(x, num_samples=5).probs
    torch.manual_seed(7)
    assert torch.equal(loaded.predict(x, num_samples=5).probs, expected)
    assert psb.persistence.load_history(path) == history
    assert psb.persistence.load_history(psb.save(bnn, tmp_path / "no_history.pt")) is None
    # the compressed networks agree too
    assert torch.equal(psb.compress(loaded).module(x), psb.compress(bnn).module(x))


def test_nested_conv_networks_with_learned_noise(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Sequential(*conv_net("padding")[:3]), *conv_net("padding")[3:])
    prior = [psb.SpikeSlabNode(prior_inclusion=0.2), psb.GroupHorseshoe(), SpikeSlab(prior_inclusion=0.3)]
    bnn = SparseBNN(net, prior, likelihood=GaussianLikelihood(0.5, learn_noise=True), num_data=10)
    with torch.no_grad():
        for p in bnn.parameters():
            p.add_(torch.randn_like(p))
    psb.save(bnn, tmp_path / "conv.pt")
    loaded = psb.load(tmp_path / "conv.pt")
    assert same_parameters(bnn, loaded) and [layer.spec.name for layer in loaded.layers] == ["net.0.1", "net.1", "net.4"]
    assert [repr(p) for p in loaded.priors] == [repr(p) for p in bnn.priors]
    other = SparseBNN(torch.nn.Sequential(torch.nn.Sequential(*conv_net("padding")[:3]), *conv_net("padding")[3:]),
                      prior, likelihood=GaussianLikelihood(0.5, learn_noise=True))
    assert same_parameters(load_state(other, tmp_path / "conv.pt"), bnn) and other.num_data == 10


def test_load_state_names_the_difference(classification_data, tmp_path):
    path = psb.save(make(), tmp_path / "bnn.pt")
    torch.manual_seed(0)
    with pytest.raises(SaveFileError, match=r"module net.2 is Linear\(.*'out_features': 3.*here"):
        load_state(SparseBNN(mlp([5, 8, 4]), SpikeSlab(prior_inclusion=0.1)), path)
    with pytest.raises(SaveFileError, match=r"different prior for layer net.0: SpikeSlab\(.*prior_inclusion': 0.1"):
        load_state(SparseBNN(mlp([5, 8, 3]), SpikeSlab(prior_inclusion=0.2)), path)
    with pytest.raises(SaveFileError, match="likelihood"):
        load_state(SparseBNN(mlp([5, 8, 3]), SpikeSlab(prior_inclusion=0.1), likelihood="gaussian"), path)
    with pytest.raises(SaveFileError, match="dtype float32 but this network has dtype float64"):
        load_state(SparseBNN(mlp([5, 8, 3]).double(), SpikeSlab(prior_inclusion=0.1)), path)


def interrupt_at(epoch_to_stop):
    def callback(epoch, history, bnn):
        if epoch == epoch_to_stop:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("stop_epoch,every", [(3, 1), (4, 2), (1, 3)])
def test_interrupted_and_resumed_fit_equals_the_uninterrupted_one(classification_data, tmp_path, stop_epoch, every):
    x, y = classification_data
    reference = make()
    expected = fit(reference, x, y, **SCHEDULE)
    path = tmp_path / "run.pt"
    interrupted = make()
    with pytest.raises(KeyboardInterrupt) as info:
        fit(interrupted, x, y, checkpoint=path, checkpoint_every=every, callbacks=[interrupt_at(stop_epoch)],
            **SCHEDULE)
    assert f"resume={str(path)!r}" in info.value.__notes__[0]
    assert not same_parameters(interrupted, reference)
    saved = psb.persistence.load_history(path)
    assert saved is not None and len(saved) == stop_epoch  # the last completed epoch, even between writes
    resumed = make(seed=99)  # a fresh network built the same way (other initial weights)
    history = fit(resumed, x, y, checkpoint=path, resume=path, **SCHEDULE)
    assert same_parameters(resumed, reference)
    assert history.loss == expected.loss and history.temperature == expected.temperature
    assert history.kl_weight == expected.kl_weight and history.num_steps == expected.num_steps


def test_checkpointing_does_not_change_the_fit_and_resume_checks_the_arguments(classification_data, tmp_path):
    x, y = classification_data
    a, b = make(), make()
    fit(a, x, y, **SCHEDULE)
    fit(b, x, y, checkpoint=tmp_path / "b.pt", checkpoint_every=4, **SCHEDULE)
    assert same_parameters(a, b)
    assert same_parameters(psb.load(tmp_path / "b.pt"), b)  # the final state is written
    with pytest.raises(psb.HyperparameterError, match=r"fit\(\.\.\., epochs=6\) but this call has epochs=7"):
        fit(make(), x, y, resume=tmp_path / "b.pt", **{**SCHEDULE, "epochs": 7})
    psb.save(a, tmp_path / "plain.pt")
    with pytest.raises(SaveFileError, match="not a checkpoint"):
        fit(make(), x, y, resume=tmp_path / "plain.pt", **SCHEDULE)
    done = make()  # resuming a finished run returns its history without further steps
    assert fit(done, x, y, resume=tmp_path / "b.pt", **SCHEDULE).loss == fit(make(), x, y, **SCHEDULE).loss
    assert same_parameters(done, a)


def test_non_finite_likelihood_names_the_observed_site_and_keeps_the_last_finite_state(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    y = x.sum(dim=1)
    y[25] = 1e30  # finite, but its squared error overflows float32
    bnn = SparseBNN(mlp([3, 4, 1]), SpikeSlab(prior_inclusion=0.5), likelihood="gaussian")
    path = tmp_path / "ck.pt"
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 2 .*'obs' \(log-likelihood = -inf\).*no checkpoint"):
        fit(bnn, x, y, epochs=2, batch_size=10, shuffle=False, checkpoint=path, progress=False)
    assert all(bool(torch.isfinite(p).all()) for p in bnn.parameters())  # the step was not applied
    assert not path.exists()


def test_interrupt_before_the_first_epoch_ends_says_there_is_no_checkpoint(classification_data, tmp_path):
    x, y = classification_data
    with pytest.raises(KeyboardInterrupt) as info:
        fit(make(), x, y, epochs=3, checkpoint=tmp_path / "ck.pt", callbacks=[interrupt_at(0)], progress=False)
    assert "no checkpoint was written" in info.value.__notes__[0] and not (tmp_path / "ck.pt").exists()
    with pytest.raises(KeyboardInterrupt) as info:
        fit(make(), x, y, epochs=3, callbacks=[interrupt_at(0)], progress=False)
    assert "pass checkpoint=path" in info.value.__notes__[0]


def test_non_finite_kl_names_the_latent_site(classification_data):
    x, y = classification_data
    bnn = make()
    with torch.no_grad():
        bnn.layers[0].block.slab.rho[1, 2] = float("inf")  # an infinite posterior scale: infinite slab KL
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 0 .*'net.0.slab' \(KL = (nan|inf)\).*layers.0.block.slab.rho"
                       r".*pass checkpoint=path"):
        fit(bnn, x, y, epochs=1, progress=False)


def test_non_finite_parameters_name_the_site_and_the_checkpoint(classification_data, tmp_path):
    x, y = classification_data
    bnn = make()

    def poison(epoch, history, model):
        if epoch == 1:
            with torch.no_grad():
                model.layers[1].block.slab.loc[0, 0] = float("inf")

    path = tmp_path / "ck.pt"
    with pytest.raises(NonFiniteLossError) as info:
        fit(bnn, x, y, epochs=4, batch_size=20, callbacks=[poison], checkpoint=path, progress=False)
    message = str(info.value)
    assert "epoch 2, step 0 (step 6 overall)" in message and "'obs' (log-likelihood = nan)" in message
    assert "layers.1.block.slab.loc" in message and "after epoch 0 (1 epochs done)" in message
    saved = psb.load(path)  # the epoch-1 state had an infinite parameter: the file keeps epoch 0's
    assert all(bool(torch.isfinite(p).all()) for p in saved.parameters()) and len(psb.persistence.load_history(path)) == 1


def test_load_rejects_foreign_corrupt_and_newer_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(SaveFileError, match="corrupt or not a file written by torch.save"):
        psb.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(SaveFileError, match="not a pyro_sparse_bnn save file"):
        psb.load(tmp_path / "foreign.pt")
    torch.save(torch.nn.Dropout(), tmp_path / "pickled.pt")  # a class no one allow-listed
    with pytest.raises(SaveFileError, match="pickled Python objects"):
        psb.load(tmp_path / "pickled.pt")
    contents = torch.load(psb.save(make(), tmp_path / "bnn.pt"), weights_only=True)
    torch.save({**contents, "format_version": 99}, tmp_path / "newer.pt")
    with pytest.raises(SaveFileError, match="format version 99"):
        psb.load(tmp_path / "newer.pt")


def test_files_naming_classes_at_their_former_module_paths_still_load(tmp_path):
    """Save files written before the priors and likelihoods moved into ``core`` name them as
    ``pyro_sparse_bnn.priors.<module>.<class>``; they load into the same classes."""
    bnn = make()
    contents = torch.load(psb.save(bnn, tmp_path / "bnn.pt"), weights_only=True)
    assert contents["priors"][0][0] == "pyro_sparse_bnn.core.priors.spike_slab.SpikeSlab"
    contents["priors"] = [(name.replace(".core.", "."), config) for name, config in contents["priors"]]
    contents["likelihood"] = (contents["likelihood"][0].replace(".core.", "."), contents["likelihood"][1])
    assert contents["likelihood"][0] == "pyro_sparse_bnn.likelihoods.CategoricalLikelihood"
    torch.save(contents, tmp_path / "old.pt")
    loaded = psb.load(tmp_path / "old.pt")
    assert type(loaded.priors[0]) is SpikeSlab and same_parameters(loaded, bnn)
    contents["priors"][0] = ("pyro_sparse_bnn.priors.spike_slab.NoSuchPrior", contents["priors"][0][1])
    torch.save(contents, tmp_path / "unknown.pt")
    with pytest.raises(SaveFileError, match="NoSuchPrior"):
        psb.load(tmp_path / "unknown.pt")
