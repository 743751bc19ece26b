"""Self-compression on Fashion-MNIST: a mean-field Gaussian BNN pruned by its own posterior
against a deterministic network pruned by weight norm, on the same schedule.

    OMP_NUM_THREADS=1 python benchmarks/self_compression.py                     # LeNet-5-Caffe
    OMP_NUM_THREADS=1 python benchmarks/self_compression.py --net lenet300 --epochs 10 --refit-epochs 3

Both networks start from the same initial weights and are trained for ``--epochs`` epochs
on 55,000 training images (the last 5,000 are the validation set of ``self_compress``).
Then, for ``--rounds`` rounds, every hidden layer loses the same ``--fraction`` of its units
(conv channels, fc nodes) -- the least relevant by the posterior signal-to-noise ratio
``||mu_j|| / ||sigma_j||`` for the BNN (``self_compress``), the smallest ``||[W_j, b_j]||``
for the deterministic net -- and both are refitted for ``--refit-epochs`` epochs. The kept
widths are the same for both in every round. Recorded per round, on the 10,000 test images:
the BNN's Monte Carlo posterior-predictive accuracy and its posterior-mean network's
accuracy, the deterministic net's accuracy, and for both the accuracy right after the
deletion, before the refit. Writes ``results/self_compression_<net>.json`` and a PNG plot.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn.analysis.self_compression import (  # noqa: E402
    network_relevance,
    select_units,
    self_compress,
    shrink_bnn,
    shrink_network,
    unit_relevance,
)
from pyro_sparse_bnn.apps.baselines import train_deterministic  # noqa: E402
from pyro_sparse_bnn.apps.datasets import fashion_mnist  # noqa: E402

NETS = {"lenet5": psb.lenet5_caffe, "lenet300": psb.lenet_300_100}


@torch.no_grad()
def accuracy(module, x, y, batch_size=2000):
    return psb.analysis.accuracy(torch.cat([module(chunk) for chunk in torch.split(x, batch_size)]), y)


def posterior_mean_accuracy(bnn, x, y):
    """Accuracy of the posterior-mean network with every unit kept (threshold 0)."""
    module, _ = psb.compress(bnn, threshold=0.0)
    return accuracy(module, x, y)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in [
        ("bnn_accuracy", "Bayesian (self_compress), posterior predictive", "o-"),
        ("bnn_mean_accuracy", "Bayesian, posterior-mean network", "s:"),
        ("det_accuracy", "deterministic, pruned by weight norm", "^-"),
        ("bnn_before_refit", "Bayesian, right after deletion (no refit)", "o--"),
        ("det_before_refit", "deterministic, right after deletion (no refit)", "^--"),
    ]:
        points = [(r["hidden_units"], r[key]) for r in results["rounds"] if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label, alpha=0.9)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("kept hidden units (conv channels + fc nodes), log scale")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Fashion-MNIST, {results['settings']['net']}: {results['settings']['fraction']:.0%} of every "
                 f"hidden layer deleted per round", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="lenet5", choices=sorted(NETS))
    parser.add_argument("--epochs", type=int, default=4, help="initial training epochs of both networks")
    parser.add_argument("--refit-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--fraction", type=float, default=0.4, help="fraction of every hidden layer deleted per round")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the BNN")
    parser.add_argument("--dense-lr", type=float, default=1e-3, help="Adam learning rate of the deterministic net")
    parser.add_argument("--num-samples", type=int, default=5, help="posterior draws of the test predictive")
    parser.add_argument("--val-size", type=int, default=2000, help="validation images used by self_compress")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    parser.add_argument("--n-train", type=int, default=None, help="use only this many training images (smoke runs)")
    args = parser.parse_args(argv)

    data = fashion_mnist(args.data, n_train=args.n_train)
    x_train, y_train = data.x_train[:-5000], data.y_train[:-5000]
    x_val, y_val = data.x_train[-5000:][: args.val_size], data.y_train[-5000:][: args.val_size]
    x_test, y_test = data.x_test, data.y_test
    torch.manual_seed(args.seed)
    net = NETS[args.net]()
    rounds = [{"round": 0} for _ in range(args.rounds + 1)]

    # -- Bayesian: fit, then self_compress ----------------------------------------------------
    start = time.perf_counter()
    bnn = psb.SparseBNN(net, psb.SelfCompressingGaussian(), likelihood="categorical", num_data=len(x_train))
    fit_kwargs = dict(batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    psb.fit(bnn, x_train, y_train, epochs=args.epochs, progress=False, **fit_kwargs)
    print(f"BNN fitted in {time.perf_counter() - start:.0f} s", flush=True)

    def record(round_index, fitted):
        row = rounds[round_index]
        prediction = fitted.predict(x_test, num_samples=args.num_samples, batch_size=2000)
        row.update(round=round_index, bnn_accuracy=psb.analysis.accuracy(prediction.probs, y_test),
                   bnn_mean_accuracy=posterior_mean_accuracy(fitted, x_test, y_test),
                   bnn_params=sum(layer.spec.num_params for layer in fitted.layers),
                   kept_units=[layer.spec.out_units for layer in fitted.layers[:-1]],
                   bnn_seconds_so_far=time.perf_counter() - start)
        row["hidden_units"] = sum(row["kept_units"])
        if round_index < args.rounds:  # the next round's deletion, before its refit
            keep = select_units(unit_relevance(fitted, "snr"), fraction=args.fraction)
            rounds[round_index + 1]["bnn_before_refit"] = posterior_mean_accuracy(shrink_bnn(fitted, keep), x_test, y_test)
        print(f"round {round_index}: units {row['kept_units']}, BNN predictive {row['bnn_accuracy']:.4f}, "
              f"posterior mean {row['bnn_mean_accuracy']:.4f}, before refit {row.get('bnn_before_refit')} "
              f"({row['bnn_seconds_so_far']:.0f} s)", flush=True)

    result = self_compress(bnn, (x_train, y_train), (x_val, y_val), score="snr", fraction=args.fraction,
                           rounds=args.rounds, epochs=args.refit_epochs, tolerance=None, num_samples=10,
                           eval_batch_size=2000, fit_kwargs=fit_kwargs, progress=False, callback=record)
    bnn_seconds = time.perf_counter() - start
    for row, history in zip(rounds, result.history, strict=False):
        row.update(val_accuracy=history.metric, val_loss=history.val_loss)

    # -- deterministic: same initial weights, same widths per round -------------------------
    start = time.perf_counter()
    module = train_deterministic(net, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.dense_lr, seed=args.seed).module
    for round_index in range(args.rounds + 1):
        if round_index > 0:
            keep = select_units(network_relevance(module), fraction=args.fraction)
            module = shrink_network(module, keep)
            rounds[round_index]["det_before_refit"] = accuracy(module, x_test, y_test)
            module = train_deterministic(module, x_train, y_train, epochs=args.refit_epochs,
                                         batch_size=args.batch_size, lr=args.dense_lr, seed=args.seed).module
        row = rounds[round_index]
        widths = [m.weight.shape[0] for m in module if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][:-1]
        assert widths == row["kept_units"], (widths, row["kept_units"])
        row["det_accuracy"] = accuracy(module, x_test, y_test)
        row["det_params"] = sum(p.numel() for p in module.parameters())
        print(f"round {round_index}: deterministic {widths}: {row['det_accuracy']:.4f} "
              f"(before refit {row.get('det_before_refit')})", flush=True)
    det_seconds = time.perf_counter() - start

    results = {"settings": vars(args), "rounds": rounds, "bnn_seconds": bnn_seconds, "det_seconds": det_seconds}
    name = f"self_compression_{args.net}" + ("" if args.n_train is None else f"_n{args.n_train}")
    path = write(name, results)
    plot(results, RESULTS / f"{name}.png")
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
