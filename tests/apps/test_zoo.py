"""The model zoo: every entry parses, has a card and runs end to end in smoke mode; bad
configs name the bad key; the README table and the cards are what the stored metrics give."""

import copy
import json
import math
import shutil
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_sparse_bnn.apps.cli import main
from pyro_sparse_bnn.apps.zoo import (
    SMOKE,
    ZooConfigError,
    find_entries,
    load_entry,
    parse_entry,
    render_card,
    render_table,
    run_entry,
    run_fingerprint,
    update_readme_table,
)
from pyro_sparse_bnn.apps.zoo.entries import PRIORS

MODELS = Path(__file__).resolve().parents[2] / "models"
ENTRIES = find_entries(MODELS)


def _write_idx(path: Path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def idx_directory(tmp_path_factory):
    """A tiny Fashion-MNIST-shaped IDX directory (random pixels, every class present), so the
    Fashion entries run in smoke mode without the 30 MB data set."""
    directory = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", SMOKE["n_train"] + 4), ("t10k", SMOKE["n_test"])):
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return directory


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


def test_every_entry_has_a_card_and_every_card_an_entry():
    entries = {p.stem for p in MODELS.glob("*.toml")}
    cards = {p.stem for p in MODELS.glob("*.md")} - {"README"}
    assert entries, "no entries found"
    assert entries - cards == set(), f"entries without a card: {sorted(entries - cards)}"
    assert cards - entries == set(), f"cards without an entry: {sorted(cards - entries)}"
    results = {p.stem for p in (MODELS / "results").glob("*.json")}
    assert results <= entries, f"stored results without an entry: {sorted(results - entries)}"


@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.stem)
def test_card_is_the_rendering_of_its_config_and_stored_metrics(path):
    """A card is never edited by hand: it is what ``run --publish`` (or ``zoo-table --cards``)
    renders from the config and the stored metrics, so its numbers come from a run."""
    entry = load_entry(path)
    assert entry.card_path.read_text() == render_card(entry)
    metrics = entry.stored_metrics()
    if metrics is not None:
        assert not metrics["smoke"] and metrics["entry"] == entry.name
        assert metrics["command"] in entry.card_path.read_text()
        # the numbers were measured with this very config (data, network, prior, budget)
        assert metrics["run_config_sha256"] == run_fingerprint(entry)
        if "--epochs" not in metrics["command"]:
            assert metrics["schedule"]["epochs"] == entry.config["train"]["epochs"]
            assert metrics["schedule"]["batch_size"] == entry.config["train"]["batch_size"]


def test_readme_table_is_generated_from_the_stored_metrics():
    text = (MODELS / "README.md").read_text()
    assert render_table(MODELS) in text


@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.stem)
def test_entry_runs_end_to_end_in_smoke_mode(path, tmp_path, idx_directory):
    entry = load_entry(path)
    fashion = entry.config["data"]["name"] == "fashion_mnist"
    lines = []
    metrics = run_entry(entry, tmp_path, smoke=True, progress=False, echo=lines.append,
                        data_dir=idx_directory if fashion else None)
    assert metrics["smoke"] and metrics["schedule"]["epochs"] == SMOKE["epochs"]
    assert metrics["data"]["n_train"] <= SMOKE["n_train"] and metrics["schedule"]["num_steps"] >= 1
    metric = metrics["metric"]
    score = metrics["bnn"][metric]
    if metric == "accuracy":
        assert 0 <= score <= 1 and 0 <= metrics["compressed"]["accuracy"] <= 1
    else:
        assert math.isfinite(score) and score > 0
    assert metric in metrics["baselines"]["deterministic"] and metric in metrics["baselines"]["gaussian_bnn"]
    assert 0 < metrics["compressed"]["weights_kept"] <= 1
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["compressed"] == metrics["compressed"]
    card = (tmp_path / "card.md").read_text()
    assert "Smoke run" in card and metrics["compressed"]["architecture_after"] in card
    assert (tmp_path / "elbo.png").stat().st_size > 0 and "elbo.png" in metrics["plots"]
    # the saved compressed module is a plain torch module that takes the full input
    module = torch.load(tmp_path / "compressed_module.pt", weights_only=False)
    x = torch.zeros(3, metrics["data"]["num_features"])
    out = module(x)
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    # the entry's own card was not touched by a smoke run
    assert entry.card_path.read_text() == render_card(entry)


def _entry(tmp_path, text: str, name="toy"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


TOY = """
[entry]
title = "toy"

[data]
name = "wine"
val_size = 0.2

[model]
architecture = "mlp"
widths = [8]

[prior]
name = "SpikeSlabNode"

[train]
epochs = 3
batch_size = 32
lr = 1e-2

[published]
source = "none"
"""


def _toy_config():
    return tomllib.loads(TOY)


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
    (lambda c: c["model"].update(widths=[8, -1]), "model.widths"),
    (lambda c: c["model"].update(activation="gelu"), "model.activation"),
    (lambda c: c["model"].update(architecture="lenet_300_100"), "model.widths: only for architecture 'mlp'"),
    (lambda c: c["prior"].update(name="Horseshoe"), "prior.name: must be one of"),
    (lambda c: c["prior"].update(sigma=1.0), "prior.sigma: not an argument of SpikeSlabNode"),
    (lambda c: c["prior"].update(prior_scale=-1.0), r"\[prior\]: .*prior_scale"),
    (lambda c: c.update(likelihood={"name": "poisson"}), "likelihood.name"),
    (lambda c: c.update(likelihood={"name": "categorical", "noise_scale": 1.0}), "likelihood.noise_scale"),
    (lambda c: c.update(compress={"thresholds": [1.5]}), "compress.thresholds"),
    (lambda c: c.update(baselines={"gaussian": "yes"}), "baselines.gaussian"),
    (lambda c: c["published"].update(accuracy="high"), "published.accuracy"),
])
def test_bad_config_names_the_key(change, key):
    config = _toy_config()
    change(config)
    with pytest.raises(ZooConfigError, match=key):
        parse_entry(config, "toy.toml")


def test_bad_files_give_clear_errors(tmp_path, capsys):
    with pytest.raises(ZooConfigError, match="invalid TOML"):
        load_entry(_entry(tmp_path, "[train\nepochs = 1"))
    with pytest.raises(ZooConfigError, match="no such entry file"):
        load_entry(tmp_path / "missing.toml")
    # the CLI prints the message instead of a stack trace
    bad = _entry(tmp_path, TOY.replace("epochs = 3", "epochs = -3"), "bad")
    assert main(["run", str(bad), "--smoke"]) == 2
    assert "train.epochs" in capsys.readouterr().err


def test_run_validates_its_arguments(tmp_path):
    path = _entry(tmp_path, TOY)
    with pytest.raises(ZooConfigError, match="--publish"):
        run_entry(path, tmp_path / "out", smoke=True, publish=True, progress=False, echo=lambda s: None)
    with pytest.raises(ZooConfigError, match="--epochs"):
        run_entry(path, tmp_path / "out", epochs=0, progress=False, echo=lambda s: None)
    with pytest.raises(ZooConfigError, match="--data-dir applies to fashion_mnist"):
        run_entry(path, tmp_path / "out", data_dir=tmp_path, progress=False, echo=lambda s: None)


def test_publish_stores_metrics_renders_card_and_table(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    path = _entry(models, TOY)
    _entry(models, TOY.replace("SpikeSlabNode", "SpikeSlabGroupHorseshoe"), "unmeasured")
    (models / "README.md").write_text("# zoo\n\nintro text\n")
    metrics = run_entry(path, tmp_path / "out", progress=False, publish=True, echo=lambda s: None,
                        baseline_cache=tmp_path / "cache")
    entry = load_entry(path)
    assert entry.stored_metrics() == metrics and metrics["schedule"]["epochs"] == 3
    card = entry.card_path.read_text()
    assert card == render_card(entry)
    assert f"{metrics['bnn']['accuracy']:.4f}" in card and "## Budget" in card and "[prior]" in card
    assert "Validation accuracy" in card
    update_readme_table(models)
    text = (models / "README.md").read_text()
    assert text.startswith("# zoo\n\nintro text") and "[toy](toy.md)" in text
    row = next(line for line in text.splitlines() if line.startswith("| [unmeasured]"))
    assert "not yet measured" in row
    assert update_readme_table(models).read_text() == text  # idempotent
    # the unmeasured entry's card says so
    assert "Not yet measured" in render_card(load_entry(models / "unmeasured.toml"))

    # a second entry with the same data, architecture and budget reuses the baselines
    other = _entry(models, TOY.replace("SpikeSlabNode", "SpikeSlabGroupLasso"), "other")
    reused = run_entry(other, tmp_path / "out2", progress=False, echo=lambda s: None,
                       baseline_cache=tmp_path / "cache")
    assert reused["baselines"]["shared_from"] == "toy"
    assert reused["baselines"]["deterministic"] == metrics["baselines"]["deterministic"]
    # another budget does not
    longer = run_entry(other, tmp_path / "out3", epochs=4, progress=False, echo=lambda s: None,
                       baseline_cache=tmp_path / "cache")
    assert longer["baselines"]["key"] != metrics["baselines"]["key"] and "shared_from" not in longer["baselines"]


def test_feature_selection_rates():
    from pyro_sparse_bnn.apps.zoo.run import _feature_selection

    rates = _feature_selection(torch.tensor([1, 2, 7]), [0, 1, 2, 3], num_features=10)
    assert rates["false_negative_rate"] == pytest.approx(2 / 4)
    assert rates["false_positive_rate"] == pytest.approx(1 / 6)
    assert rates["selected"] == [1, 2, 7]


def test_cli_list_show_and_table(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("*.md"))
    (models / "README.md").write_text("# zoo\n")
    assert main(["list", "--models", str(models)]) == 0
    listed = capsys.readouterr().out
    assert all(p.stem in listed for p in ENTRIES)
    name = ENTRIES[0].stem
    assert main(["show", name, "--models", str(models)]) == 0
    assert "[prior]" in capsys.readouterr().out
    assert main(["zoo-table", "--models", str(models), "--cards"]) == 0
    assert {p.stem for p in models.glob("*.md")} - {"README"} == {p.stem for p in ENTRIES}
    assert render_table(models) in (models / "README.md").read_text()


def test_regression_rmse_is_in_original_units(tmp_path):
    text = TOY.replace('name = "wine"', 'name = "diabetes"').replace(
        "[prior]", '[likelihood]\nname = "gaussian"\nlearn_noise = true\n\n[prior]')
    metrics = run_entry(_entry(tmp_path, text), tmp_path / "out", smoke=True, progress=False,
                        echo=lambda s: None)
    target_std = metrics["data"]["target_std"]
    assert target_std > 10  # disease progression varies by tens of units
    # a network that has barely trained predicts about the mean: RMSE near the target's spread
    assert 0.3 * target_std < metrics["bnn"]["rmse"] < 3 * target_std


def test_toy_config_is_valid():
    config = parse_entry(copy.deepcopy(_toy_config()))
    assert config["train"]["batch_size"] == 32 and config["baselines"]["gaussian"] is True


def test_run_fingerprint_follows_what_a_run_measures(tmp_path):
    base = load_entry(_entry(tmp_path, TOY, "a"))
    prose = load_entry(_entry(tmp_path, TOY.replace('title = "toy"', 'title = "renamed"'), "b"))
    budget = load_entry(_entry(tmp_path, TOY.replace("epochs = 3", "epochs = 4"), "c"))
    prior = load_entry(_entry(tmp_path, TOY.replace("SpikeSlabNode", "SpikeSlab"), "d"))
    assert run_fingerprint(base) == run_fingerprint(prose)
    assert len({run_fingerprint(base), run_fingerprint(budget), run_fingerprint(prior)}) == 3
