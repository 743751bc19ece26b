"""The demo: a spike-and-slab BNN on scikit-learn's digits, from fit to fine-tuned small network.

Run it with ``python -m pyro_sparse_bnn demo``. It walks through the whole pipeline on a
training / validation / test split:

1. fit the BNN (``fit``) and print the node and feature inclusion probabilities;
2. compute the size / validation-accuracy frontier (``frontier``) and pick the smallest
   network within a tolerance of the posterior's validation accuracy (``Frontier.select``);
3. compress at that threshold (``compress``) and check that the small module computes what
   the masked posterior-mean network computes;
4. fine-tune the compressed module (``finetune``, best validation epoch kept);
5. compare on the test set with what a user would pick instead, with the same number of
   epochs in all: the dense network, and the dense network pruned by structured magnitude
   pruning to the same widths and fine-tuned the same way (``magnitude_prune``).
"""

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..analysis.calibration import accuracy
from ..analysis.compress import compress, masked_posterior_mean
from ..analysis.finetune import finetune
from ..analysis.frontier import frontier
from ..analysis.inclusion import feature_inclusion_probs, inclusion_summary
from ..analysis.plots import plot_frontier
from ..core.errors import HyperparameterError
from ..core.fit import fit
from ..core.network import SparseBNN
from ..core.priors import SpikeSlab
from ..persistence.serialization import save
from .baselines import magnitude_prune, train_from_scratch
from .datasets import digits

__all__ = ["DemoConfig", "run_demo", "digits_network", "headline_figures", "MAX_DIFFERENCE"]

#: the most the compressed module's test logits may differ from the masked posterior-mean
#: network's (the same function up to float32 rounding, about 1e-6 here); above it the demo stops
MAX_DIFFERENCE = 1e-4


@dataclass
class DemoConfig:
    """Settings of the demo (the defaults finish in about two minutes on 2 CPU cores).

    ``epochs`` fit the BNN and ``finetune_epochs`` fine-tune its compressed module; the dense
    network trains for their sum (the same budget), and the magnitude-pruned network is the
    dense network trained for ``epochs``, pruned, then fine-tuned for ``finetune_epochs``.
    ``prior_inclusion`` is the prior probability lambda of keeping a weight; ``None`` is the
    theory-driven lambda of Bai et al. (about 2e-5 here), so strict on 1,077 training images
    that the posterior predictive ends about 8 points below the dense network. ``tolerance``
    is how far (in accuracy, absolute) below the posterior's validation accuracy the chosen
    network may be. ``val_size`` and the test split (20 %) are fractions of the
    1,797 images.
    """

    epochs: int = 1000
    finetune_epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-2
    lr_decay: float = 0.01
    finetune_lr: float = 1e-3
    prior_inclusion: Optional[float] = 0.1
    hidden: tuple = (64, 32)
    num_samples: int = 100
    tolerance: float = 0.005
    val_size: float = 0.2
    seed: int = 0
    progress: Optional[bool] = None
    output: Optional[str] = None

    def settings(self) -> dict:
        """The fields that decide the demo's figures (all but ``progress`` and ``output``),
        as plain JSON values (``hidden`` as a list)."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in vars(self).items() if name not in ("progress", "output")}


def digits_network(hidden=(64, 32), num_inputs=64, num_classes=10) -> nn.Sequential:
    """ReLU MLP ``64 - hidden... - 10``."""
    widths = (num_inputs,) + tuple(hidden)
    layers = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))


def _pip_grid(pips: torch.Tensor, shape=(8, 8)) -> str:
    rows = pips.reshape(shape)
    return "\n".join("   " + " ".join(f"{p:4.2f}" for p in row.tolist()) for row in rows)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _nonzero(module: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in module.parameters())


@torch.no_grad()
def _accuracy(module: nn.Module, x, y) -> float:
    module.eval()
    return accuracy(module(x), y)


def run_demo(config: Optional[DemoConfig] = None, echo=print) -> dict:
    """Run the demo and return its measured figures (accuracies, sizes, seconds).

    :param config: the settings (default ``DemoConfig()``).
    :param echo: called with every line of the output (default ``print``).

    With ``config.output`` it also writes ``demo.png`` (ELBO, pixel and node PIPs),
    ``frontier.png``, the fitted network ``bnn.pt`` (``load`` reads it), the compressed
    and fine-tuned modules ``compressed_module.pt`` / ``finetuned_module.pt`` (``torch.load``
    with ``weights_only=False``) and ``figures.json`` (the test-set table it prints, with the
    settings and library versions that produced it; see ``headline_figures``) into that
    directory.
    """
    config = DemoConfig() if config is None else config
    start = time.perf_counter()
    data = digits(seed=config.seed, val_size=config.val_size)
    echo(f"digits: {len(data.x_train)} training, {len(data.x_val)} validation and {len(data.x_test)} test "
         f"images, {data.num_features} pixels, 10 classes")

    # 1. fit
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

    # 2. the frontier on validation data, and the threshold it picks
    front = frontier(bnn, data.x_val, data.y_val, num_samples=config.num_samples, seed=config.seed)
    echo(f"\nfrontier: validation accuracy of the network compressed at each PIP threshold "
         f"(posterior predictive: {front.posterior_metric:.3f})")
    echo(front.table[["rule", "architecture", "nonzero_params", "accuracy"]].to_string(index=False))
    # fine-tuning needs a network that reads its input: leave out those that do not
    readable = replace(front, table=front.table[~front.table.degenerate])
    try:
        choice = readable.select(config.tolerance)
    except HyperparameterError as error:  # no network within the tolerance: take the most accurate one
        best = float(readable.table.accuracy.max())
        choice = readable.select(max(readable.posterior_metric - best, 0.0))
        echo(f"({error}; taking the most accurate one)")

    # 3. compress at the chosen threshold
    module, report = compress(bnn, threshold=choice)
    echo(f"chosen: {report.threshold_reason}")
    echo("\ncompression report:")
    echo(str(report))
    with torch.no_grad():
        compressed_out = module(data.x_test)
        masked_out = masked_posterior_mean(bnn, choice.threshold)(data.x_test)
    max_difference = float((compressed_out - masked_out).abs().max())
    echo(f"compressed module vs masked posterior-mean network: max |difference| {max_difference:.2e}")
    if not max_difference <= MAX_DIFFERENCE:  # also catches NaN
        raise RuntimeError(
            f"the compressed module's test logits differ from the masked posterior-mean network's by "
            f"{max_difference:.2e} (more than {MAX_DIFFERENCE:g}): compress removed something that mattered")

    # 4. fine-tune, choosing the epoch on validation data
    training = dict(batch_size=config.batch_size, lr=config.finetune_lr, x_val=data.x_val, y_val=data.y_val,
                    restore_best=True, seed=config.seed, progress=False)
    tuned, tuned_history = finetune(module, data.x_train, data.y_train, epochs=config.finetune_epochs,
                                    **training)

    # 5. the alternatives, with the same budget
    budget = config.epochs + config.finetune_epochs
    torch.manual_seed(config.seed)
    dense, _ = train_from_scratch(digits_network(config.hidden), data.x_train, data.y_train, epochs=budget,
                                  **training)
    torch.manual_seed(config.seed)
    dense_short, _ = train_from_scratch(digits_network(config.hidden), data.x_train, data.y_train,
                                        epochs=config.epochs, **training)
    pruned = magnitude_prune(dense_short, report)
    pruned_tuned, _ = finetune(pruned, data.x_train, data.y_train, epochs=config.finetune_epochs, **training)

    prediction = bnn.predict(data.x_test, num_samples=config.num_samples, seed=config.seed)
    results = {
        "dense_accuracy": _accuracy(dense, data.x_test, data.y_test),
        "bnn_accuracy": accuracy(prediction.probs, data.y_test),
        "compressed_accuracy": accuracy(compressed_out, data.y_test),
        "finetuned_accuracy": _accuracy(tuned, data.x_test, data.y_test),
        "magnitude_accuracy_before": _accuracy(pruned, data.x_test, data.y_test),
        "magnitude_accuracy": _accuracy(pruned_tuned, data.x_test, data.y_test),
        "finetune_best_epoch": tuned_history.best_epoch,
        "threshold": choice.threshold,
        "threshold_reason": report.threshold_reason,
        "frontier": front.table.to_dict("records"),
        "posterior_val_accuracy": front.posterior_metric,
        "max_difference": max_difference,
        "dense_params": _params(dense),
        "compressed_nonzero_params": report.nonzero_params_after,
        "magnitude_nonzero_params": _nonzero(pruned),
        "report": report.as_dict(),
        "epochs": config.epochs,
        "finetune_epochs": config.finetune_epochs,
        "fit_seconds": fit_seconds,
        "num_steps": history.num_steps,
    }
    results["finetuned_points_below_dense"] = 100 * (results["dense_accuracy"] - results["finetuned_accuracy"])
    architecture = report.as_dict()["architecture_after"]
    rows = [
        (f"dense network, {budget} epochs", results["dense_accuracy"], f"{results['dense_params']:,}"),
        (f"Bayesian network, posterior predictive ({config.num_samples} draws)", results["bnn_accuracy"], ""),
        (f"compressed module {architecture}", results["compressed_accuracy"],
         f"{results['compressed_nonzero_params']:,}"),
        (f"  + fine-tuned {config.finetune_epochs} epochs", results["finetuned_accuracy"],
         f"{results['compressed_nonzero_params']:,}"),
        (f"dense, {config.epochs} epochs, magnitude-pruned to {architecture}", results["magnitude_accuracy_before"],
         f"{results['magnitude_nonzero_params']:,}"),
        (f"  + fine-tuned {config.finetune_epochs} epochs", results["magnitude_accuracy"],
         f"{results['magnitude_nonzero_params']:,}"),
    ]
    width = max(len(r[0]) for r in rows)
    echo(f"\ntest accuracy ({len(data.x_test)} images), {budget} epochs in all for every network:")
    echo(f"  {'':{width}}  accuracy  non-zero parameters")
    for label, value, size in rows:
        echo(f"  {label:{width}}  {value:8.3f}  {size}")
    echo(f"the fine-tuned compressed module is {results['finetuned_points_below_dense']:.1f} points below the "
         f"dense network with {results['dense_params'] / results['compressed_nonzero_params']:.0f}x fewer "
         f"non-zero parameters")
    echo(f"compressed module:\n{module}")

    if config.output:
        out = Path(config.output)
        out.mkdir(parents=True, exist_ok=True)
        _save_figure(out / "demo.png", history, feature_inclusion_probs(bnn), summary)
        _save_frontier(out / "frontier.png", front, config.tolerance)
        save(bnn, out / "bnn.pt", history)
        torch.save(module, out / "compressed_module.pt")
        torch.save(tuned, out / "finetuned_module.pt")
        figures = headline_figures(config, results, num_test=len(data.x_test))
        (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
        echo(f"\nwrote demo.png, frontier.png, bnn.pt, compressed_module.pt, finetuned_module.pt and "
             f"figures.json in {out}")
    results["total_seconds"] = time.perf_counter() - start
    echo(f"total time {results['total_seconds']:.1f} s")
    return results


def headline_figures(config: DemoConfig, results: dict, num_test: int) -> dict:
    """The figures of the demo's test-set table as plain JSON values.

    Accuracies are rounded to the three decimals the demo prints, and ``points_below_dense``
    to the one decimal it prints; ``settings`` are the ``DemoConfig`` fields that decide the
    figures (:meth:`DemoConfig.settings`), and ``versions`` the torch and Pyro versions that
    ran.
    """
    import pyro

    report = results["report"]
    return {
        "settings": config.settings(),
        "versions": {"torch": torch.__version__, "pyro": pyro.__version__},
        "test_images": num_test,
        "architecture_before": report["architecture_before"],
        "architecture_after": report["architecture_after"],
        "threshold": round(float(results["threshold"]), 6),
        "dense_accuracy": round(results["dense_accuracy"], 3),
        "bnn_accuracy": round(results["bnn_accuracy"], 3),
        "compressed_accuracy": round(results["compressed_accuracy"], 3),
        "finetuned_accuracy": round(results["finetuned_accuracy"], 3),
        "magnitude_accuracy_before": round(results["magnitude_accuracy_before"], 3),
        "magnitude_accuracy": round(results["magnitude_accuracy"], 3),
        "dense_params": int(results["dense_params"]),
        "compressed_nonzero_params": int(results["compressed_nonzero_params"]),
        "magnitude_nonzero_params": int(results["magnitude_nonzero_params"]),
        "points_below_dense": round(results["finetuned_points_below_dense"], 1),
    }


def _save_frontier(path, front, tolerance):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_frontier(front, tolerance=tolerance)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
