"""Running zoo entries: every entry runs end to end in smoke mode, arguments are checked, publishing
writes metrics, card and table, and the measured figures are in the right units."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from pyro_sparse_bnn.apps.zoo import (
    SMOKE,
    ZooConfigError,
    load_data,
    load_entry,
    render_card,
    run_entry,
    run_fingerprint,
    update_readme_table,
)
from tests.apps.zoo.conftest import ENTRIES, TOY, write_entry

#: entries whose smoke run only the full suite makes; -m "not slow" keeps one entry of each kind
#: (feature selection, regression, a convolutional network, an MLP, the fine-tuned search on
#: LeNet-300-100, self-compression), so that tier stays under two minutes on two cores
SLOW_ENTRIES = {"fashion_lenet5_ssghs", "fashion_lenet5_bcghs", "fashion_lenet5_bcgnj", "fashion_lenet300_bcghs",
                "fashion_lenet300_ssghs", "fashion_lenet300_ssgl", "breast_cancer_bc_gnj",
                "saha_simulation_spike_slab"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_ENTRIES else p
                                  for p in ENTRIES], ids=lambda p: p.stem)
def test_entry_runs_end_to_end_in_smoke_mode(path, tmp_path, idx_directory):
    entry = load_entry(path)
    fashion = entry.config["data"]["name"] == "fashion_mnist"
    lines = []
    metrics = run_entry(entry, tmp_path, smoke=True, progress=False, echo=lines.append,
                        data_dir=idx_directory if fashion else None)
    assert metrics["smoke"] and metrics["schedule"]["epochs"] == SMOKE["epochs"]
    assert metrics["data"]["n_train"] <= SMOKE["n_train"] and metrics["schedule"]["num_steps"] >= 1
    metric = metrics["metric"]
    assert math.isfinite(metrics["bnn"][metric])
    # the reported score of the chosen (fine-tuned) network is what the exported module scores
    # on the test split, recomputed here in numpy (accuracy exactly, RMSE in original units)
    data = load_data(entry, smoke=True, data_dir=idx_directory if fashion else None)
    assert metrics["data"]["n_test"] == len(data.x_test)
    chosen = metrics["chosen"]
    assert chosen["files"]["module"] == "module.pt2"
    module = torch.export.load(str(tmp_path / "module.pt2")).module()
    with torch.no_grad():
        outputs = module(data.x_test).numpy()
    if metric == "accuracy":
        assert chosen["finetuned_accuracy"] == float(np.mean(outputs.argmax(axis=1) == data.y_test.numpy()))
    else:
        errors = outputs.reshape(-1) - data.y_test.numpy().reshape(-1)
        rmse = float(np.sqrt(np.mean(errors.astype(np.float64) ** 2))) * data.info.get("target_std", 1.0)
        assert chosen["finetuned_rmse"] == pytest.approx(rmse, rel=1e-5)
    assert chosen["nonzero_params_after"] <= chosen["params_before"] == metrics["compressed"]["params_before"]
    assert (tmp_path / "frontier.png").stat().st_size > 0 and (tmp_path / "inclusion.csv").stat().st_size > 0
    assert metric in metrics["baselines"]["deterministic"] and metric in metrics["baselines"]["gaussian_bnn"]
    assert 0 < metrics["compressed"]["weights_kept"] <= 1
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["compressed"] == metrics["compressed"]
    card = (tmp_path / "card.md").read_text()
    assert "Smoke run" in card and metrics["compressed"]["architecture_after"] in card
    assert (tmp_path / "elbo.png").stat().st_size > 0 and "elbo.png" in metrics["plots"]
    # the exported module takes the full input at any batch size
    out = module(torch.zeros(3, metrics["data"]["num_features"]))
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    # the entry's own card was not touched by a smoke run
    assert entry.card_path.read_text() == render_card(entry)


def test_run_validates_its_arguments(tmp_path):
    path = write_entry(tmp_path, TOY)
    with pytest.raises(ZooConfigError, match="--publish"):
        run_entry(path, tmp_path / "out", smoke=True, publish=True, progress=False, echo=lambda s: None)
    with pytest.raises(ZooConfigError, match="--epochs"):
        run_entry(path, tmp_path / "out", epochs=0, progress=False, echo=lambda s: None)
    with pytest.raises(ZooConfigError, match="--data-dir applies to fashion_mnist"):
        run_entry(path, tmp_path / "out", data_dir=tmp_path, progress=False, echo=lambda s: None)


@pytest.mark.slow  # 23 s of CPU time: three full (3-epoch) runs with their baselines
def test_publish_stores_metrics_renders_card_and_table(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    path = write_entry(models, TOY)
    write_entry(models, TOY.replace("SpikeSlabNode", "SpikeSlabGroupHorseshoe"), "unmeasured")
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
    other = write_entry(models, TOY.replace("SpikeSlabNode", "SpikeSlabGroupLasso"), "other")
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


def test_regression_rmse_is_in_original_units(tmp_path):
    text = TOY.replace('name = "wine"', 'name = "diabetes"').replace(
        "[prior]", '[likelihood]\nname = "gaussian"\nlearn_noise = true\n\n[prior]')
    metrics = run_entry(write_entry(tmp_path, text), tmp_path / "out", smoke=True, progress=False,
                        echo=lambda s: None)
    target_std = metrics["data"]["target_std"]
    assert target_std > 10  # disease progression varies by tens of units
    # a network that has barely trained predicts about the mean: RMSE near the target's spread
    assert 0.3 * target_std < metrics["bnn"]["rmse"] < 3 * target_std


def test_run_fingerprint_follows_what_a_run_measures(tmp_path):
    base = load_entry(write_entry(tmp_path, TOY, "a"))
    prose = load_entry(write_entry(tmp_path, TOY.replace('title = "toy"', 'title = "renamed"'), "b"))
    budget = load_entry(write_entry(tmp_path, TOY.replace("epochs = 3", "epochs = 4"), "c"))
    prior = load_entry(write_entry(tmp_path, TOY.replace("SpikeSlabNode", "SpikeSlab"), "d"))
    assert run_fingerprint(base) == run_fingerprint(prose)
    assert len({run_fingerprint(base), run_fingerprint(budget), run_fingerprint(prior)}) == 3


def test_renaming_widths_to_hidden_widths_keeps_the_fingerprint(tmp_path):
    """The stored results of models/results/ record the fingerprint of the config they were
    measured with, when the key was called ``widths``: ``hidden_widths`` means the same network
    and hashes the same; another width does not."""
    from pyro_sparse_bnn.apps.zoo.run import RUN_SECTIONS

    entry = load_entry(write_entry(tmp_path, TOY, "a"))
    # the fingerprint as computed before the rename, on the section as it was then called
    before = {name: dict(entry.config[name]) for name in RUN_SECTIONS}
    before["model"]["widths"] = before["model"].pop("hidden_widths")
    assert run_fingerprint(entry) == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
    wider = load_entry(write_entry(tmp_path, TOY.replace("hidden_widths = [8]", "hidden_widths = [9]"), "b"))
    assert run_fingerprint(wider) != run_fingerprint(entry)


@pytest.mark.parametrize("path", [p for p in ENTRIES if load_entry(p).config["model"]["architecture"] == "mlp"],
                         ids=lambda p: p.stem)
def test_stored_results_of_mlp_entries_match_after_the_rename(path):
    entry = load_entry(path)
    metrics = entry.stored_metrics()
    if metrics is None:
        pytest.skip("not yet measured")
    assert metrics["run_config_sha256"] == run_fingerprint(entry)
    # and the network the entry builds is the one that was measured
    assert metrics["architecture"].split("-")[1:-1] == [str(w) for w in entry.config["model"]["hidden_widths"]]
