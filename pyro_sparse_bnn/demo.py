"""The demo: a spike-and-slab BNN on scikit-learn's digits, end to end.

Run it with ``python -m pyro_sparse_bnn demo``. It fits the network, prints the node and
feature inclusion probabilities, compresses the network and compares the accuracy of the
Bayesian network with that of the compressed deterministic module.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .baselines import train_deterministic
from .calibration import accuracy
from .compress import compress, masked_posterior_mean
from .datasets import digits
from .fit import fit
from .inclusion import feature_inclusion_probs, inclusion_summary
from .network import SparseBNN
from .priors import SpikeSlab

__all__ = ["DemoConfig", "run_demo", "digits_network"]


@dataclass
class DemoConfig:
    """Settings of the demo (the defaults finish in about two minutes on 2 CPU cores).

    ``prior_inclusion=None`` is the theory-driven lambda of Bai et al. (about 2e-5 here).
    """

    epochs: int = 1000
    batch_size: int = 128
    lr: float = 1e-2
    lr_decay: float = 0.01
    prior_inclusion: Optional[float] = None
    hidden: tuple = (64, 32)
    num_samples: int = 100
    thresholds: tuple = (0.3, 0.5, 0.7)
    seed: int = 0
    progress: bool = True
    output: Optional[str] = None


def digits_network(hidden=(64, 32), num_inputs=64, num_classes=10) -> nn.Sequential:
    """ReLU MLP ``64 - hidden... - 10``."""
    widths = (num_inputs,) + tuple(hidden)
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


def _pip_grid(pips: torch.Tensor, shape=(8, 8)) -> str:
    rows = pips.reshape(shape)
    return "\n".join("   " + " ".join(f"{p:4.2f}" for p in row.tolist()) for row in rows)


def run_demo(config: DemoConfig = DemoConfig(), echo=print) -> dict:
    """Run the demo and return its measured figures (accuracies, sizes, seconds)."""
    start = time.perf_counter()
    data = digits(seed=config.seed)
    echo(f"digits: {len(data.x_train)} training and {len(data.x_test)} test images, "
         f"{data.num_features} pixels, 10 classes")

    torch.manual_seed(config.seed)
    net = digits_network(config.hidden)
    prior = SpikeSlab(prior_inclusion=config.prior_inclusion)
    bnn = SparseBNN(net, prior, likelihood="categorical", num_data=len(data.x_train))
    echo(f"network {'-'.join(map(str, bnn.architecture.widths))}, {prior}, "
         f"lambda = {bnn.layers[0].prior_inclusion:.3g}, {config.epochs} epochs")

    history = fit(
        bnn, data.x_train, data.y_train, epochs=config.epochs, batch_size=config.batch_size,
        lr=config.lr, lr_decay=config.lr_decay, seed=config.seed, progress=config.progress,
    )
    fit_seconds = sum(history.seconds)
    echo(f"fitted {history.num_steps} SVI steps in {fit_seconds:.1f} s; final ELBO {history.elbo[-1]:.1f}")

    summary = inclusion_summary(bnn, feature_names=data.feature_names)
    echo("\nnode inclusion probabilities (hidden layers):")
    for layer, rows in summary[summary.layer != "input"].groupby("layer", sort=False):
        echo(f"  {layer}: {int(rows.kept.sum())} of {len(rows)} nodes kept; "
             f"PIP > 0.5 for {int((rows.pip > 0.5).sum())}; PIPs "
             + " ".join(f"{p:.2f}" for p in rows.pip.sort_values(ascending=False).head(12)) + " ...")
    features = summary[summary.layer == "input"]
    echo(f"\nfeature (pixel) inclusion probabilities, {int(features.kept.sum())} of "
         f"{len(features)} pixels kept:")
    echo(_pip_grid(feature_inclusion_probs(bnn)))

    prediction = bnn.predict(data.x_test, num_samples=config.num_samples)
    bnn_accuracy = accuracy(prediction.probs, data.y_test)
    module, report = compress(bnn)
    with torch.no_grad():
        compressed_out = module(data.x_test)
        masked_out = masked_posterior_mean(bnn)(data.x_test)
    compressed_accuracy = accuracy(compressed_out, data.y_test)
    echo("\ncompression report:")
    echo(str(report))
    dense = train_deterministic(
        digits_network(config.hidden), data.x_train, data.y_train, epochs=config.epochs,
        batch_size=config.batch_size, seed=config.seed,
    )
    with torch.no_grad():
        dense_accuracy = accuracy(dense.module(data.x_test), data.y_test)
    echo(f"\ntest accuracy: Bayesian network ({config.num_samples} posterior draws) "
         f"{bnn_accuracy:.3f}; compressed module {compressed_accuracy:.3f}; dense deterministic "
         f"network of the original shape, same epochs, {dense_accuracy:.3f}")
    echo(f"compressed module vs masked posterior-mean network: max |difference| "
         f"{float((compressed_out - masked_out).abs().max()):.2e}")
    sweep = []
    for threshold in config.thresholds:
        swept_module, swept_report = compress(bnn, threshold=threshold)
        with torch.no_grad():
            swept_accuracy = accuracy(swept_module(data.x_test), data.y_test)
        sweep.append({"threshold": threshold, "accuracy": swept_accuracy,
                      "nonzero_params": swept_report.nonzero_params_after})
    echo("PIP threshold of the kept weights (0.5 = median-probability model): "
         + "; ".join(f"{r['threshold']:.1f}: accuracy {r['accuracy']:.3f} with "
                     f"{r['nonzero_params']} non-zero parameters" for r in sweep))
    echo(f"compressed module:\n{module}")

    results = {
        "bnn_accuracy": bnn_accuracy,
        "compressed_accuracy": compressed_accuracy,
        "dense_accuracy": dense_accuracy,
        "threshold_sweep": sweep,
        "report": report.as_dict(),
        "fit_seconds": fit_seconds,
        "total_seconds": time.perf_counter() - start,
        "num_steps": history.num_steps,
    }
    if config.output:
        out = Path(config.output)
        out.mkdir(parents=True, exist_ok=True)
        _save_figure(out / "demo.png", history, feature_inclusion_probs(bnn), summary)
        torch.save(module, out / "compressed_module.pt")
        echo(f"\nwrote {out / 'demo.png'} and {out / 'compressed_module.pt'}")
    echo(f"total time {results['total_seconds']:.1f} s")
    return results


def _save_figure(path, history, feature_pips, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(range(1, len(history.elbo) + 1), history.elbo)
    axes[0].set(xlabel="epoch", ylabel="ELBO", title="ELBO per epoch", yscale="symlog")
    image = axes[1].imshow(feature_pips.reshape(8, 8).cpu().numpy(), vmin=0, vmax=1, cmap="viridis")
    axes[1].set(title="pixel inclusion probability", xticks=[], yticks=[])
    fig.colorbar(image, ax=axes[1])
    hidden = summary[summary.layer != "input"]
    for layer, rows in hidden.groupby("layer", sort=False):
        axes[2].plot(sorted(rows.pip, reverse=True), marker=".", label=layer)
    axes[2].axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    axes[2].set(xlabel="node (sorted)", ylabel="PIP", title="node inclusion probabilities")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
