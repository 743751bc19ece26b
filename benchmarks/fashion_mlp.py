"""Sparsity priors on MLPs for Fashion-MNIST (784-400-400-10 for the node-level priors of issue 3,
LeNet-300-100 = 784-300-100-10 for Bayesian Compression), against a dense deterministic MLP
trained with the same budget (same epochs, batch size and optimiser).

Needs the Debian package ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``)
or ``--data DIR`` with the four IDX files.

    python benchmarks/fashion_mlp.py --prior ssgl ssghs --epochs 150 --batch-size 1024 --lr-decay 0.3
    python benchmarks/fashion_mlp.py --prior bcgnj bcghs --widths 784-300-100-10 --batch-size 128 --epochs 50

Reports test accuracy of the Bayesian posterior predictive and of the compressed module
at each layer's keep rule and at looser PIP thresholds (``--thresholds``; ``--save DIR`` keeps
the fitted networks, ``--load DIR`` re-evaluates them without fitting), the fraction of parameters and FLOPs kept, the kept
architecture and the training time, and for priors with posterior weight variances the bits
per weight and Louizos et al.'s architecture and bit compression rates (with the accuracy of
the bit-rounded module); the dense network's accuracy is the reference.
"""

import argparse
import copy
import sys
import time
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn.analysis.compress import analyse_structure  # noqa: E402
from pyro_sparse_bnn.apps.baselines import train_deterministic  # noqa: E402
from pyro_sparse_bnn.apps.datasets import fashion_mnist  # noqa: E402

PRIORS = {
    "ssig": psb.SpikeSlabNode,
    "ssgl": psb.SpikeSlabGroupLasso,
    "ssghs": psb.SpikeSlabGroupHorseshoe,
    "bcgnj": psb.GroupNormalJeffreys,
    "bcghs": psb.GroupHorseshoe,
}


def mlp(widths, activation=nn.SiLU):
    layers = []
    for a, b in pairwise(widths):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers[:-1])


def evaluate(bnn, data, dense_accuracy, threshold=None):
    """Compress at a PIP threshold (``None``: each layer's own keep rule) and measure the result."""
    module, report = psb.compress(bnn, threshold=threshold)
    rounded, _ = psb.compress(bnn, threshold=threshold, bits=True)
    with torch.no_grad():
        compressed_accuracy = psb.analysis.accuracy(module(data.x_test), data.y_test)
        rounded_accuracy = psb.analysis.accuracy(rounded(data.x_test), data.y_test)
    if threshold is None:
        threshold = min(layer.default_threshold for layer in bnn.layers)
    return {
        "threshold": threshold,
        "compressed_accuracy": compressed_accuracy,
        "accuracy_lost_points": 100 * (dense_accuracy - compressed_accuracy),
        "params_kept_fraction": report.nonzero_params_after / report.params_before,
        "flops_kept_fraction": report.nonzero_flops_after / report.flops_before,
        "weight_compression": report.weight_compression,
        "bit_compression": report.bit_compression,
        "bits_per_weight": [p.bits_per_weight for p in report.precision],
        "rounded_accuracy": rounded_accuracy,
        "architecture_after": report.as_dict()["architecture_after"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", nargs="+", default=["ssgl", "ssghs"], choices=sorted(PRIORS))
    parser.add_argument("--widths", default="784-400-400-10")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--lr-decay", type=float, default=0.1)
    parser.add_argument("--logit-lr", type=float, default=None, help="learning rate of the indicator logits")
    parser.add_argument("--kl-warmup", type=int, default=0, help="epochs of KL annealing")
    parser.add_argument("--indicator-warmup", type=int, default=0,
                        help="epochs during which the indicator logits are held at their initial values")
    parser.add_argument("--no-local-reparameterization", dest="local_reparameterization",
                        action="store_false", help="sample weight tensors instead of pre-activations")
    parser.add_argument("--init-rho", type=float, default=None,
                        help="initial rho of slab and scales (default: the prior's own)")
    parser.add_argument("--log-alpha-threshold", type=float, nargs="+", default=None,
                        help="Bayesian Compression keep rule log alpha < t: one t or one per layer")
    parser.add_argument("--dense-lr", type=float, default=1e-3)
    parser.add_argument("--dense-accuracy", type=float, default=None,
                        help="reuse the dense network's test accuracy from an earlier run instead of training it")
    parser.add_argument("--init-from-dense", action="store_true",
                        help="start every BNN's posterior means at the trained dense network's weights "
                             "(the budget is then the dense epochs plus --bnn-epochs)")
    parser.add_argument("--bnn-epochs", type=int, default=None,
                        help="epochs of SVI (default: --epochs, the dense network's budget)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    parser.add_argument("--n-train", type=int, default=None, help="use only this many training images")
    parser.add_argument("--thresholds", type=float, nargs="+", default=None,
                        help="PIP thresholds at which to compress (default: the keep rule and a looser one)")
    parser.add_argument("--save", default=None, help="directory to save each fitted network's state_dict in")
    parser.add_argument("--load", default=None, help="evaluate networks saved with --save instead of fitting")
    args = parser.parse_args(argv)

    data = fashion_mnist(args.data, n_train=args.n_train)
    widths = [int(w) for w in args.widths.split("-")]
    results = {"settings": vars(args), "runs": {}}

    if args.init_from_dense and args.dense_accuracy is not None:
        parser.error("--init-from-dense needs the dense network trained in this run (drop --dense-accuracy)")
    bnn_epochs = args.epochs if args.bnn_epochs is None else args.bnn_epochs
    if args.dense_accuracy is None:
        torch.manual_seed(args.seed)
        dense = train_deterministic(mlp(widths), data.x_train, data.y_train, epochs=args.epochs,
                                    batch_size=args.batch_size, lr=args.dense_lr, seed=args.seed)
        with torch.no_grad():
            dense_accuracy = psb.analysis.accuracy(dense.module(data.x_test), data.y_test)
        results["dense"] = {"accuracy": dense_accuracy, "seconds": dense.seconds}
        print(f"dense {args.widths}: test accuracy {dense_accuracy:.4f} ({dense.seconds:.0f} s)", flush=True)
    else:
        dense_accuracy = args.dense_accuracy
        results["dense"] = {"accuracy": dense_accuracy, "reused": True}

    for name in args.prior:
        torch.manual_seed(args.seed)
        options = {} if args.init_rho is None else {"init_rho": args.init_rho}
        if args.log_alpha_threshold is not None and name.startswith("bc"):
            t = args.log_alpha_threshold
            options["log_alpha_threshold"] = t[0] if len(t) == 1 else t
        prior = PRIORS[name](**options)
        network = copy.deepcopy(dense.module) if args.init_from_dense else mlp(widths)
        bnn = psb.SparseBNN(network, prior, likelihood="categorical", num_data=len(data.x_train),
                            local_reparameterization=args.local_reparameterization)
        start = time.perf_counter()

        def report_nodes(epoch, history, bnn):
            if (epoch + 1) % 10 == 0:
                kept = [int(k.sum()) for k in analyse_structure(bnn).kept_nodes]
                print(f"  epoch {epoch + 1}: ELBO {history.elbo[-1]:.4g}, hidden nodes kept by compress: {kept}",
                      flush=True)

        if args.load:
            bnn.load_state_dict(torch.load(Path(args.load) / f"{name}.pt"))
            fitted = {"loaded_from": args.load}
        else:
            history = psb.fit(bnn, data.x_train, data.y_train, epochs=bnn_epochs, batch_size=args.batch_size,
                              lr=args.lr, lr_decay=args.lr_decay, logit_lr=args.logit_lr,
                              kl_warmup=args.kl_warmup, indicator_warmup=args.indicator_warmup,
                              seed=args.seed, progress=False, callbacks=[report_nodes])
            seconds = time.perf_counter() - start
            fitted = {"fit_seconds": seconds, "seconds_per_step": seconds / history.num_steps,
                      "final_elbo": history.elbo[-1]}
            print(f"{name}: fitted in {seconds / 60:.1f} min ({1e3 * fitted['seconds_per_step']:.1f} ms/step)",
                  flush=True)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                torch.save(bnn.state_dict(), Path(args.save) / f"{name}.pt")
        prediction = bnn.predict(data.x_test, num_samples=20, batch_size=2000)
        run = {"bnn_accuracy": psb.analysis.accuracy(prediction.probs, data.y_test), **fitted, "thresholds": {}}
        print(f"{name}: BNN posterior predictive {run['bnn_accuracy']:.4f} (dense {dense_accuracy:.4f})", flush=True)
        thresholds = args.thresholds or ([None, 0.8, 0.5] if name.startswith("bc") else [None, 0.3])
        for threshold in thresholds:
            row = evaluate(bnn, data, dense_accuracy, threshold)
            run["thresholds"][str(threshold)] = row
            print(f"  PIP threshold {row['threshold']:.3f}: compressed {row['compressed_accuracy']:.4f} "
                  f"({row['accuracy_lost_points']:.2f} points lost), architecture {row['architecture_after']}, "
                  f"parameters kept {100 * row['params_kept_fraction']:.2f} %, FLOPs kept "
                  f"{100 * row['flops_kept_fraction']:.2f} %; bits per weight {row['bits_per_weight']}: "
                  f"{row['weight_compression']:.1f}x architecture, {row['bit_compression']:.1f}x bit compression, "
                  f"bit-rounded accuracy {row['rounded_accuracy']:.4f}", flush=True)
        results["runs"][name] = run
    path = write(f"fashion_mlp_{args.widths}_{'_'.join(args.prior)}", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
