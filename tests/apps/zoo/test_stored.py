"""The zoo's stored networks: every entry is measured with its current config, its stored
network shows the method working (the rules below), its files are small, and its module loads,
through this package and through plain PyTorch, and scores its stored figure on its stored
evaluation inputs."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_sparse_bnn.apps.cli import main
from pyro_sparse_bnn.apps.zoo import ZooConfigError, load_entry, run_fingerprint
from pyro_sparse_bnn.apps.zoo.stored import (
    MAX_ENTRY_BYTES,
    entry_bytes,
    load_evaluation,
    load_model,
    read_evaluation,
    write_evaluation,
)
from tests.apps.zoo.conftest import ENTRIES, MODELS

IDS = [p.stem for p in ENTRIES]


def rule_violations(metrics: dict, accept: dict) -> list:
    """What is wrong with a stored network, by the zoo's rules: it keeps at least one input,
    it is smaller than the dense network, and it is within the entry's tolerance of the dense
    network (accuracy points below it, or RMSE relative excess)."""
    chosen, metric = metrics["chosen"], metrics["metric"]
    problems = []
    if chosen["num_inputs_kept"] < 1:
        problems.append("keeps no input")
    if not chosen["nonzero_params_after"] < chosen["params_before"]:
        problems.append(f"not smaller than the dense network ({chosen['nonzero_params_after']} parameters)")
    dense = metrics["baselines"]["deterministic"][metric]
    tuned = chosen["finetuned_" + metric]
    if metric == "accuracy":
        if dense - tuned > accept["accuracy_tolerance"] + 1e-12:
            problems.append(f"accuracy {tuned:.4f} more than {accept['accuracy_tolerance']} below dense {dense:.4f}")
    elif tuned > dense * (1 + accept["rmse_tolerance"]) + 1e-12:
        problems.append(f"RMSE {tuned:.4g} more than {accept['rmse_tolerance']:.0%} above dense {dense:.4g}")
    return problems


@pytest.mark.parametrize("path", ENTRIES, ids=IDS)
def test_every_entry_stores_a_network_measured_with_its_current_config(path):
    entry = load_entry(path)
    metrics = entry.stored_metrics()
    assert metrics is not None and "chosen" in metrics, "run it with --publish"
    assert metrics["run_config_sha256"] == run_fingerprint(entry)
    assert not metrics["smoke"]


@pytest.mark.parametrize("path", ENTRIES, ids=IDS)
def test_stored_network_shows_its_method_working(path):
    entry = load_entry(path)
    metrics = entry.stored_metrics()
    assert rule_violations(metrics, entry.config["accept"]) == []
    if entry.config["self_compress"]:  # the self-compression entry runs its loop
        rounds = metrics["chosen"]["self_compress"]
        assert len(rounds) > 1 and sum(r["accepted"] for r in rounds) > 1


def test_the_rules_reject_degenerate_networks():
    """Failing twins of the rules, on a stored entry's metrics changed into what a degenerate
    zoo entry looked like: no input kept, nothing removed, far below the dense network."""
    entry = load_entry(MODELS / "wine_self_compressing.toml")
    metrics, accept = entry.stored_metrics(), entry.config["accept"]
    assert rule_violations(metrics, accept) == []
    broken = json.loads(json.dumps(metrics))
    broken["chosen"].update(num_inputs_kept=0, finetuned_accuracy=0.3889)
    assert rule_violations(broken, accept) == ["keeps no input", "accuracy 0.3889 more than 0.02 below dense 1.0000"]
    broken = json.loads(json.dumps(metrics))
    broken["chosen"]["nonzero_params_after"] = broken["chosen"]["params_before"]
    assert rule_violations(broken, accept)[0].startswith("not smaller")
    regression = load_entry(MODELS / "diabetes_spike_slab.toml").stored_metrics()
    regression["chosen"]["finetuned_rmse"] = 1.11 * regression["baselines"]["deterministic"]["rmse"]
    assert rule_violations(regression, {"rmse_tolerance": 0.10})[0].startswith("RMSE")


def numpy_score(outputs: np.ndarray, y: np.ndarray, metrics: dict) -> float:
    """Accuracy, or RMSE in the data's original units, recomputed in numpy."""
    if metrics["metric"] == "accuracy":
        return float(np.mean(outputs.argmax(axis=1) == y))
    errors = outputs.reshape(-1).astype(np.float64) - y.reshape(-1)
    return float(np.sqrt(np.mean(errors ** 2))) * (metrics["data"].get("target_std") or 1.0)


@pytest.mark.parametrize("path", ENTRIES, ids=IDS)
def test_stored_module_scores_its_stored_figure_on_the_stored_inputs(path):
    entry = load_entry(path)
    metrics = entry.stored_metrics()
    x, y = load_evaluation(entry)
    assert len(y) == metrics["chosen"]["evaluation"]["examples"] == min(1000, metrics["data"]["n_test"])
    module = load_model(entry.name, MODELS)
    with torch.no_grad():
        score = numpy_score(module(x).numpy(), y.numpy(), metrics)
    assert score == pytest.approx(metrics["chosen"]["evaluation"][metrics["metric"]], rel=1e-6, abs=1e-12)
    # the stored network's size is what its module holds
    weights = sum(int((p != 0).sum()) for p in module.parameters())
    assert weights <= metrics["chosen"]["nonzero_params_after"]
    # and the inputs the card reports are those the module reads
    selection = metrics["chosen"].get("feature_selection")
    if selection:
        indices = [b for name, b in module.named_buffers() if name.endswith("indices")]
        read = indices[0].tolist() if indices else list(range(metrics["data"]["num_features"]))
        assert read == selection["selected"]


@pytest.mark.slow  # 10 s: a fresh interpreter loads torch and every entry's program
def test_exported_modules_load_and_score_without_this_package():
    """Plain PyTorch in a fresh interpreter (the package is never imported) loads every
    entry's ``module.pt2`` and scores the stored evaluation inputs."""
    jobs = []
    for path in ENTRIES:
        entry = load_entry(path)
        metrics = entry.stored_metrics()
        if metrics["chosen"]["files"]["module"] == "module.pt2":
            jobs.append((str(entry.stored_dir / "module.pt2"),
                         str(entry.results_path.parent / metrics["chosen"]["evaluation"]["file"]), entry.name))
    assert len(jobs) == len(ENTRIES)
    script = f"""
import json, sys, torch
out = {{}}
for module_path, evaluation_path, name in {jobs!r}:
    module = torch.export.load(module_path).module()
    stored = torch.load(evaluation_path)
    with torch.no_grad():
        out[name] = module(stored["x"].float()).numpy().tolist()
assert not any(m.startswith("pyro_sparse_bnn") for m in sys.modules)
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    for path in ENTRIES:
        entry = load_entry(path)
        metrics = entry.stored_metrics()
        _, y = load_evaluation(entry)
        score = numpy_score(np.array(outputs[entry.name]), y.numpy(), metrics)
        assert score == pytest.approx(metrics["chosen"]["evaluation"][metrics["metric"]], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("path", ENTRIES, ids=IDS)
def test_entry_files_are_small_and_complete(path):
    entry = load_entry(path)
    metrics = entry.stored_metrics()
    files = metrics["chosen"]["files"]
    assert {"module", "inclusion", "frontier"} <= set(files)
    assert sorted(p.name for p in entry.stored_dir.iterdir()) == sorted(files.values())
    assert entry_bytes(entry.stored_dir) <= MAX_ENTRY_BYTES
    evaluation = entry.results_path.parent / metrics["chosen"]["evaluation"]["file"]
    assert evaluation.stat().st_size <= MAX_ENTRY_BYTES
    table = pd.read_csv(entry.stored_dir / files["inclusion"])
    inputs = int((table.layer == "input").sum())  # features, or the input channels of a conv net
    assert table.pip.between(0, 1).all() and inputs >= 1 and len(table) > inputs
    assert f"results/{entry.name}/frontier.png" in entry.card_path.read_text()


def test_every_stored_file_belongs_to_an_entry():
    results = MODELS / "results"
    names = {p.stem for p in ENTRIES}
    evaluations = {load_entry(p).stored_metrics()["chosen"]["evaluation"]["file"] for p in ENTRIES}
    for item in results.iterdir():
        if item.is_dir() and item.name == "evaluation":
            assert {f"evaluation/{f.name}" for f in item.iterdir()} == evaluations
        else:
            assert item.stem in names, f"{item} belongs to no entry"


def test_show_prints_the_stored_network_and_how_to_load_it(capsys):
    assert main(["show", "wine_self_compressing", "--models", str(MODELS)]) == 0
    text = capsys.readouterr().out
    metrics = load_entry(MODELS / "wine_self_compressing.toml").stored_metrics()
    assert f"stored network: {metrics['chosen']['architecture_after']}" in text
    assert "load_model('wine_self_compressing')" in text and "inclusion probabilities" in text


def test_load_model_says_how_to_store_a_network(tmp_path):
    (tmp_path / "toy.toml").write_text((MODELS / "wine_self_compressing.toml").read_text())
    with pytest.raises(ZooConfigError, match="--publish"):
        load_model("toy", tmp_path)
    assert load_evaluation("toy", tmp_path) is None


def test_evaluation_inputs_are_stored_in_half_precision_for_images_only(tmp_path):
    images, labels = torch.randn(1200, 784), torch.arange(1200) % 10
    x, y = write_evaluation(tmp_path / "images.pt", images, labels)
    assert x.dtype == torch.float32 and torch.equal(x, images[:1000].half().float()) and torch.equal(y, labels[:1000])
    assert torch.equal(read_evaluation(tmp_path / "images.pt")[0], x)
    assert (tmp_path / "images.pt").stat().st_size < 1000 * 784 * 2 * 1.01
    table = torch.randn(50, 13)
    x, _ = write_evaluation(tmp_path / "table.pt", table, torch.zeros(50))
    assert torch.equal(x, table) and torch.equal(read_evaluation(tmp_path / "table.pt")[0], table)
