"""Zoo entries: every entry parses and covers every prior; bad configs and files name the bad key."""

import copy

import pytest

from pyro_sparse_bnn.apps.cli import main
from pyro_sparse_bnn.apps.zoo import (
    ZooConfigError,
    load_entry,
    parse_entry,
)
from pyro_sparse_bnn.apps.zoo.entries import PRIORS, build_net
from tests.apps.zoo.conftest import ENTRIES, TOY, toy_config, write_entry


def test_there_are_entries_for_every_prior_and_the_issue_configurations():
    names = {p.stem for p in ENTRIES}
    priors = {load_entry(p).prior_name for p in ENTRIES}
    assert priors == set(PRIORS), f"priors without an entry: {set(PRIORS) - priors}"
    for prior in ("ssgl", "ssghs", "bcgnj", "bcghs"):
        assert {f"fashion_lenet5_{prior}", f"fashion_lenet300_{prior}"} <= names
    assert "fashion_mlp400_ssig" in names
    by_data = {load_entry(p).config["data"]["name"]: load_entry(p) for p in ENTRIES}
    for data in ("bai_simulation", "saha_simulation", "diabetes", "breast_cancer"):
        assert data in by_data
    assert by_data["bai_simulation"].prior_name == by_data["saha_simulation"].prior_name == "SpikeSlab"


def test_toy_config_is_valid():
    config = parse_entry(copy.deepcopy(toy_config()))
    assert config["train"]["batch_size"] == 32 and config["baselines"]["gaussian"] is True


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(extra={"a": 1}), r"\[extra\]: unknown section"),
    (lambda c: c.pop("train"), r"\[train\]: missing section"),
    (lambda c: c["train"].update(epoch=3), "train.epoch: unknown key"),
    (lambda c: c["train"].update(epochs=0), "train.epochs: must be a positive integer"),
    (lambda c: c["train"].update(epochs=2.5), "train.epochs: must be a positive integer"),
    (lambda c: c["train"].update(lr="fast"), "train.lr: must be a positive number"),
    (lambda c: c["train"].update(lr=-1e-3), "train.lr: must be a positive number"),
    (lambda c: c["data"].update(name="mnist"), "data.name: unknown data set 'mnist'"),
    (lambda c: c["data"].update(num_features=3), "data.num_features: not an argument of datasets.wine"),
    (lambda c: c["model"].update(architecture="resnet"), "model.architecture: must be one of"),
    (lambda c: c["model"].update(hidden_widths=[8, -1]), "model.hidden_widths: must be a non-empty list"),
    (lambda c: c["model"].update(hidden_widths=[]), "model.hidden_widths: must be a non-empty list"),
    (lambda c: c["model"].update(activation="gelu"), "model.activation"),
    (lambda c: c["model"].update(architecture="lenet_300_100"), "model.hidden_widths: only for architecture 'mlp'"),
    (lambda c: c["prior"].update(name="Horseshoe"), "prior.name: must be one of"),
    (lambda c: c["prior"].update(sigma=1.0), "prior.sigma: not an argument of SpikeSlabNode"),
    (lambda c: c["prior"].update(prior_scale=-1.0), r"\[prior\]: .*prior_scale"),
    (lambda c: c.update(likelihood={"name": "poisson"}), "likelihood.name"),
    (lambda c: c.update(likelihood={"name": "categorical", "noise_scale": 1.0}), "likelihood.noise_scale"),
    (lambda c: c.update(compress={"thresholds": [1.5]}), "compress.thresholds"),
    (lambda c: c.update(baselines={"gaussian": "yes"}), "baselines.gaussian"),
    (lambda c: c["published"].update(accuracy="high"), "published.accuracy"),
    (lambda c: c.update(choose={"tolerance": -0.01}), "choose.tolerance: must be a non-negative number"),
    (lambda c: c.update(choose={"finetune_epochs": 0}), "choose.finetune_epochs: must be a positive integer"),
    (lambda c: c.update(choose={"patience": 3}), "choose.patience: unknown key"),
    (lambda c: c.update(self_compress={"rounds": 2.5}), "self_compress.rounds: must be a positive integer"),
    (lambda c: c.update(accept={"accuracy_tolerance": float("inf")}), "accept.accuracy_tolerance"),
    (lambda c: c.update(accept={"why": 3}), "accept.why: must be a string"),
])
def test_bad_config_names_the_key(change, key):
    config = toy_config()
    change(config)
    with pytest.raises(ZooConfigError, match=key):
        parse_entry(config, "toy.toml")


def test_bad_files_give_clear_errors(tmp_path, capsys):
    with pytest.raises(ZooConfigError, match="invalid TOML"):
        load_entry(write_entry(tmp_path, "[train\nepochs = 1"))
    with pytest.raises(ZooConfigError, match="no such entry file"):
        load_entry(tmp_path / "missing.toml")
    # the CLI prints the message instead of a stack trace
    bad = write_entry(tmp_path, TOY.replace("epochs = 3", "epochs = -3"), "bad")
    assert main(["run", str(bad), "--smoke"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_hidden_widths_are_the_hidden_layers_and_the_old_widths_key_says_so(tmp_path):
    """``[model] hidden_widths`` lists the hidden layers, the data give the rest: the network is
    ``psb.mlp([num_features, *hidden_widths, num_outputs])``. The key's old name ``widths``
    (which ``psb.mlp`` uses for the full list) is refused with the rename in the message."""
    import pyro_sparse_bnn as psb

    model = parse_entry(toy_config(), "toy.toml")["model"]
    assert model["hidden_widths"] == [8]
    net = build_net(model, num_inputs=13, num_outputs=3)
    assert [tuple(p.shape) for p in net.parameters()] == [
        tuple(p.shape) for p in psb.mlp([13, *model["hidden_widths"], 3]).parameters()]
    old = TOY.replace("hidden_widths = [8]", "widths = [8]")
    with pytest.raises(ZooConfigError, match=r"model.widths: renamed hidden_widths: write hidden_widths = \[8\]"):
        load_entry(write_entry(tmp_path, old, "old"))
    with pytest.raises(ZooConfigError, match="hidden layers only"):
        load_entry(write_entry(tmp_path, old, "old"))
