"""Every prior at its default settings on the small scikit-learn data sets.

    OMP_NUM_THREADS=1 python benchmarks/defaults.py                       # all priors, data sets, seeds 0-2
    OMP_NUM_THREADS=1 python benchmarks/defaults.py --priors SS SS-IG --data digits --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/defaults.py --priors SS --prior-args '{"prior_inclusion": 0.1}'

For each prior, data set and seed: an MLP ``p-48-24-out`` (ReLU) is fitted with
``psb.fit(bnn, x, y, epochs=E, seed=seed)`` and otherwise default arguments (``--fit-args``
adds keyword arguments), and a deterministic network with the same initial weights is trained
with Adam for the same epochs and batch size (``train_deterministic``, learning rate 5e-3, the
fit's default). Recorded on the test split: the dense network's accuracy (RMSE for diabetes,
in standard deviations of the target), the BNN's posterior-predictive accuracy (RMSE of the
predictive mean), the accuracy of the compressed network, its architecture and its share of
the dense network's parameters. Writes one JSON line per fit to ``--out`` and prints a table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn.apps import datasets  # noqa: E402
from pyro_sparse_bnn.apps.baselines import train_deterministic  # noqa: E402
from tests.test_defaults import PRIORS  # noqa: E402  (the priors the tests check, by short name)

DATA = ("digits", "breast_cancer", "wine", "diabetes", "fashion_mnist")
#: hidden widths when ``--hidden`` is not given: LeNet-300-100 for Fashion-MNIST
HIDDEN = {"fashion_mnist": (300, 100)}


def score(outputs, y, regression):
    """Accuracy, or the RMSE of ``outputs`` against ``y`` for regression."""
    if regression:
        return float((outputs.reshape(y.shape) - y).square().mean().sqrt())
    return psb.analysis.accuracy(outputs, y)


def run(prior_name, data_name, seed, epochs, hidden, prior_args, fit_args, num_samples, thresholds=()):
    data = getattr(datasets, data_name)(seed=seed)
    hidden = hidden or HIDDEN.get(data_name, (48, 24))
    regression = data.task == "regression"
    outputs = 1 if regression else int(data.y_train.max()) + 1
    torch.manual_seed(seed)
    net = psb.mlp([data.num_features, *hidden, outputs])
    dense = train_deterministic(net, data.x_train, data.y_train, task=data.task, epochs=epochs,
                                lr=fit_args.get("lr", 5e-3), seed=seed).module
    with torch.no_grad():
        dense_score = score(dense(data.x_test), data.y_test, regression)
    bnn = psb.SparseBNN(net, PRIORS[prior_name](**prior_args),
                        likelihood="gaussian" if regression else "categorical", num_data=len(data.x_train))
    start = time.perf_counter()
    psb.fit(bnn, data.x_train, data.y_train, epochs=epochs, seed=seed, progress=False, **fit_args)
    seconds = time.perf_counter() - start
    prediction = bnn.predict(data.x_test, num_samples=num_samples)
    bnn_score = score(prediction.mean, data.y_test, regression)
    module, report = psb.compress(bnn)
    with torch.no_grad():
        compressed_score = score(module(data.x_test), data.y_test, regression)
    others = {}
    for threshold in thresholds:
        other, other_report = psb.compress(bnn, threshold=threshold)
        with torch.no_grad():
            others[str(threshold)] = (score(other(data.x_test), data.y_test, regression),
                                      "-".join(map(str, other_report.architecture_after)))
    return {
        "prior": prior_name, "data": data_name, "seed": seed, "epochs": epochs,
        "metric": "rmse" if regression else "accuracy",
        "dense": dense_score, "bnn": bnn_score, "compressed": compressed_score,
        "architecture": "-".join(map(str, report.architecture_after)),
        "params": report.params_after / report.params_before,
        "prior_args": prior_args, "fit_args": fit_args, "fit_seconds": seconds,
        "other_thresholds": others,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument("--data", nargs="+", default=list(DATA[:4]), choices=list(DATA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--hidden", nargs="+", type=int, default=None,
                        help="hidden widths (default 48 24; 300 100 for fashion_mnist)")
    parser.add_argument("--prior-args", type=json.loads, default={})
    parser.add_argument("--fit-args", type=json.loads, default={})
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--thresholds", nargs="*", type=float, default=[],
                        help="also compress at these keep-rule thresholds (recorded in the JSON lines)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'prior':7s} {'data':13s} seed {'dense':>6s} {'bnn':>6s} {'compr':>6s} {'params':>6s}  architecture")
    for prior_name in args.priors:
        for data_name in args.data:
            for seed in args.seeds:
                row = run(prior_name, data_name, seed, args.epochs, args.hidden, args.prior_args,
                          args.fit_args, args.num_samples, args.thresholds)
                print(f"{prior_name:7s} {data_name:13s} {seed:4d} {row['dense']:6.3f} {row['bnn']:6.3f} "
                      f"{row['compressed']:6.3f} {row['params']:6.3f}  {row['architecture']}"
                      + "".join(f"  t={t}: {a:.3f} {arch}" for t, (a, arch) in row["other_thresholds"].items()),
                      flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
