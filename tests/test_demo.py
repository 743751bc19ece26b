"""The demo runs end to end (a few epochs) and prints what the README promises."""

from pyro_sparse_bnn.cli import main
from pyro_sparse_bnn.demo import DemoConfig, run_demo


def test_demo_reports_pips_compression_and_accuracies(tmp_path):
    lines = []
    results = run_demo(
        DemoConfig(epochs=4, num_samples=5, progress=False, output=str(tmp_path)), echo=lines.append
    )
    text = "\n".join(lines)
    for expected in ["node inclusion probabilities", "feature (pixel) inclusion probabilities",
                     "compression report", "test accuracy", "max |difference|",
                     "0.5 = median-probability model"]:
        assert expected in text
    assert 0.0 <= results["compressed_accuracy"] <= 1.0 and 0.0 <= results["bnn_accuracy"] <= 1.0
    assert 0.0 <= results["dense_accuracy"] <= 1.0
    sweep = results["threshold_sweep"]
    assert [r["threshold"] for r in sweep] == [0.3, 0.5, 0.7]
    # a higher PIP threshold keeps a subset of the weights
    assert sweep[0]["nonzero_params"] >= sweep[1]["nonzero_params"] >= sweep[2]["nonzero_params"]
    assert results["report"]["architecture_before"] == "64-64-32-10"
    assert (tmp_path / "demo.png").stat().st_size > 0 and (tmp_path / "compressed_module.pt").exists()


def test_cli_demo_command(capsys):
    assert main(["demo", "--epochs", "2", "--no-progress", "--prior-inclusion", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "lambda = 0.05" in out and "test accuracy" in out
