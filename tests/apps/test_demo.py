"""The demo runs the whole pipeline (a few epochs), and what it prints is what the networks
it saves compute."""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import pyro_sparse_bnn as psb
from pyro_sparse_bnn.apps import demo as demo_module
from pyro_sparse_bnn.apps.cli import main
from pyro_sparse_bnn.apps.datasets import digits
from pyro_sparse_bnn.apps.demo import MAX_DIFFERENCE, DemoConfig, run_demo


def numpy_accuracy(module, x, y) -> float:
    """Accuracy of ``module``'s argmax, counted in numpy."""
    with torch.no_grad():
        logits = module.eval()(x).numpy()
    return float(np.mean(logits.argmax(axis=1) == y.numpy()))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A smoke run of the demo (4 + 3 epochs) with its output files: about 28 s of CPU time, so
    the tests that use it are marked slow; the quick run keeps the tolerance check and the CLI."""
    output = tmp_path_factory.mktemp("demo")
    config = DemoConfig(epochs=4, finetune_epochs=3, num_samples=5, progress=False, output=str(output))
    lines = []
    results = run_demo(config, echo=lines.append)
    return config, results, "\n".join(lines), output


@pytest.mark.slow  # the demo fixture: 28 s of CPU time
def test_demo_prints_every_step_of_the_pipeline(demo):
    config, results, text, output = demo
    architecture = results["report"]["architecture_after"]
    for expected in ["node inclusion probabilities", "feature (pixel) inclusion probabilities",
                     "frontier: validation accuracy", "chosen: ", "compression report", "max |difference|",
                     f"dense network, {config.epochs + config.finetune_epochs} epochs",
                     f"compressed module {architecture}", f"+ fine-tuned {config.finetune_epochs} epochs",
                     f"magnitude-pruned to {architecture}", "points below the dense network"]:
        assert expected in text
    assert results["report"]["architecture_before"] == "64-64-32-10"
    # the chosen network is a row of the frontier, evaluated on the validation split
    chosen = [row for row in results["frontier"] if row["architecture"] == architecture]
    assert chosen and not chosen[0]["degenerate"]
    for name in ("demo.png", "frontier.png"):
        assert (output / name).stat().st_size > 0


@pytest.mark.slow  # the demo fixture: 28 s of CPU time
def test_demo_compressed_module_matches_the_masked_network_it_prints(demo):
    config, results, text, output = demo
    data = digits(seed=config.seed, val_size=config.val_size)
    bnn = psb.load(output / "bnn.pt")
    compressed = torch.load(output / "compressed_module.pt", weights_only=False)
    with torch.no_grad():
        # masked_posterior_mean keeps the full architecture and zeroes what compress removes
        masked = psb.analysis.masked_posterior_mean(bnn, results["threshold"])(data.x_test)
        difference = float((compressed(data.x_test) - masked).abs().max())
    printed = float(re.search(r"max \|difference\| (\S+)", text).group(1))
    assert difference < 1e-5
    assert printed == pytest.approx(difference, rel=0.06, abs=1e-12)
    assert results["max_difference"] == pytest.approx(difference, rel=1e-6, abs=1e-12)
    assert results["max_difference"] <= MAX_DIFFERENCE
    assert results["compressed_accuracy"] == numpy_accuracy(compressed, data.x_test, data.y_test)


@pytest.mark.slow  # the demo fixture: 28 s of CPU time
def test_demo_compressed_accuracy_is_what_an_independent_compression_scores(demo):
    """Compressing the saved network again, at the threshold the demo chose, rebuilds the
    module the demo reports on: same architecture, same test accuracy (counted in numpy),
    and figures.json holds that accuracy to the three decimals it prints."""
    config, results, text, output = demo
    data = digits(seed=config.seed, val_size=config.val_size)
    rebuilt, report = psb.compress(psb.load(output / "bnn.pt"), threshold=results["threshold"])
    assert report.as_dict()["architecture_after"] == results["report"]["architecture_after"]
    assert report.nonzero_params_after == results["compressed_nonzero_params"]
    accuracy = numpy_accuracy(rebuilt, data.x_test, data.y_test)
    assert results["compressed_accuracy"] == accuracy
    figures = json.loads((output / "figures.json").read_text())
    assert figures["compressed_accuracy"] == round(accuracy, 3)
    assert figures["architecture_after"] == results["report"]["architecture_after"]
    assert re.search(rf"compressed module {re.escape(figures['architecture_after'])}\s+{accuracy:.3f}", text)
    # and the smoke run learnt something: ten classes, so chance is about 0.1 (4 epochs gave 0.90)
    assert accuracy > 0.5


def test_demo_stops_when_the_compressed_module_differs_from_the_masked_network(monkeypatch):
    """The demo checks the difference it prints: a masked network off by 1e-3 stops it."""
    masked_posterior_mean = demo_module.masked_posterior_mean

    def off_by_a_little(bnn, threshold):
        network = masked_posterior_mean(bnn, threshold)
        return lambda x: network(x) + 1e-3

    monkeypatch.setattr(demo_module, "masked_posterior_mean", off_by_a_little)
    config = DemoConfig(epochs=1, finetune_epochs=1, num_samples=2, progress=False)
    with pytest.raises(RuntimeError, match="differ from the masked posterior-mean network's by 1.00e-03"):
        run_demo(config, echo=lambda line: None)


@pytest.mark.slow  # the demo fixture: 28 s of CPU time
def test_demo_finetuned_accuracy_is_what_the_saved_module_scores(demo):
    config, results, text, output = demo
    data = digits(seed=config.seed, val_size=config.val_size)
    compressed = torch.load(output / "compressed_module.pt", weights_only=False)
    tuned = torch.load(output / "finetuned_module.pt", weights_only=False)
    accuracy = numpy_accuracy(tuned, data.x_test, data.y_test)
    assert results["finetuned_accuracy"] == accuracy
    assert re.search(rf"\+ fine-tuned {config.finetune_epochs} epochs\s+{accuracy:.3f}", text)
    # fine-tuning kept the structure: same shapes, pruned weights still exactly zero
    before, after = compressed.state_dict(), tuned.state_dict()
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    for old, new in zip([m for m in compressed.modules() if isinstance(m, nn.Linear)],
                        [m for m in tuned.modules() if isinstance(m, nn.Linear)], strict=True):
        assert bool((new.weight[old.weight == 0] == 0).all())
    # the epoch was chosen on validation data, and the weights before fine-tuning were a candidate
    assert numpy_accuracy(tuned, data.x_val, data.y_val) >= numpy_accuracy(compressed, data.x_val, data.y_val)


@pytest.mark.slow  # 16 s of CPU time: the CLI runs the default 100 posterior draws
def test_cli_demo_command(capsys):
    assert main(["demo", "--epochs", "2", "--finetune-epochs", "1", "--no-progress", "--prior-inclusion", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "lambda = 0.05" in out and "+ fine-tuned 1 epochs" in out and "dense network, 3 epochs" in out
