"""BC-GNJ (or BC-GHS) in the setting of Louizos, Ullrich & Welling's Bayesian Compression code:
LeNet-300-100 (784-300-100-10, ReLU) on Fashion-MNIST with inputs scaled to [-1, 1], batch 128,
Adam with learning rate 1e-3, 30 epochs, keep rule ``log alpha < (-2.8, -3, -5)`` per layer.

Needs the Debian package ``dataset-fashion-mnist`` or ``--data DIR`` with the four IDX files.

    OMP_NUM_THREADS=1 python benchmarks/reference_setting.py --seed 0          # the prior's defaults
    OMP_NUM_THREADS=1 python benchmarks/reference_setting.py --seed 0 --weight-parameterization softplus \
        --max-variance none --tag unrestricted                                   # the unrestricted family
    OMP_NUM_THREADS=1 python benchmarks/reference_setting.py --seed 0 --max-variance 0.04 none none \
        --weight-parameterization softplus --tag softplus_bounded               # one difference at a time
    OMP_NUM_THREADS=1 python benchmarks/reference_setting.py --prior bcghs --seed 0
    OMP_NUM_THREADS=1 python benchmarks/reference_setting.py --seed 0 --dense --no-ours --tag dense
    OMP_NUM_THREADS=1 python benchmarks/reference_setting.py --seed 0 --no-ours \
        --reference-dir ~/Tutorial_BayesianCompressionForDL --tag reference     # the authors' layers

Each run reports the test accuracy of

* the **posterior predictive** (Monte Carlo average of ``--samples`` softmax outputs),
* the **posterior-mean network** (every weight at ``E[z] mu``, the bias at its mean, nothing
  pruned: what the authors' code evaluates as its test accuracy),
* the **compressed network** at the keep rule (pruned units removed, posterior means, not
  fine-tuned), and the same rounded to the bits its posterior variances allow,

with the kept architecture, the weight (architecture) and bit compression rates, and the
fitting time. ``--reference-dir`` points at a checkout of the authors' tutorial repository
(``BayesianLayers.py``, ``compression.py``); the script then also trains their layers in the
same setting with their objective (mean cross-entropy plus KL / N, the first layer's weight
variances clipped at 0.04 after every step) and evaluates them the same way. Their code is
imported from that directory at run time, never copied.

``--kl-weight`` below 1 tempers the KL term: the objective is then not the ELBO, and the
output says so. Results go to ``benchmarks/results/reference_setting_<prior>_seed<seed>.json``
(``--tag`` adds to the name).
"""

import argparse
import importlib
import io
import sys
import time
from contextlib import redirect_stdout
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn.apps.baselines import train_deterministic  # noqa: E402
from pyro_sparse_bnn.apps.datasets import fashion_mnist  # noqa: E402
from pyro_sparse_bnn.core.elbo import MeanFieldELBO  # noqa: E402
from pyro_sparse_bnn.core.optim import JointAdam  # noqa: E402

PRIORS = {"bcgnj": psb.GroupNormalJeffreys, "bcghs": psb.GroupHorseshoe}
WIDTHS = (784, 300, 100, 10)


def lenet_300_100() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def weight_compression(architecture: str) -> float:
    """Weights of LeNet-300-100 over the weights of the kept architecture ``"a-b-c-d"``
    (biases not counted, as in the authors' rate)."""
    architecture = [int(w) for w in architecture.split("-")]
    before = sum(a * b for a, b in pairwise(WIDTHS))
    return before / sum(a * b for a, b in pairwise(architecture))


@torch.no_grad()
def posterior_mean_network(bnn: psb.SparseBNN) -> nn.Sequential:
    """LeNet-300-100 with every weight and bias at its posterior mean, nothing pruned."""
    net = lenet_300_100()
    for module, layer in zip([m for m in net if isinstance(m, nn.Linear)], bnn.layers, strict=True):
        weight, bias = layer.posterior_mean()
        module.weight.copy_(weight)
        module.bias.copy_(bias)
    return net


def parse_max_variance(values):
    if values is None:
        return None
    parsed = [None if v.lower() == "none" else float(v) for v in values]
    return parsed[0] if len(parsed) == 1 else tuple(parsed)


def run_ours(args, data):
    options = {"log_alpha_threshold": tuple(args.thresholds)}
    if args.max_variance is not None:
        options["max_variance"] = parse_max_variance(args.max_variance)
    if args.init_rho is not None:
        options["init_rho"] = args.init_rho
    if args.weight_parameterization is not None:
        options["weight_parameterization"] = args.weight_parameterization
    if args.init_weight_log_var is not None:
        options["init_weight_log_var"] = args.init_weight_log_var
    if args.init_log_var is not None and args.prior == "bcgnj":
        options["init_log_var"] = args.init_log_var
    prior = PRIORS[args.prior](**options)
    torch.manual_seed(args.seed)
    network = lenet_300_100()
    bnn = psb.SparseBNN(network, prior, likelihood="categorical", num_data=len(data.x_train))

    def report(epoch, history, bnn):
        if (epoch + 1) % args.report_every == 0:
            accuracy = psb.analysis.accuracy(posterior_mean_network(bnn)(data.x_test), data.y_test)
            arch = psb.compress(bnn)[1].as_dict()["architecture_after"]
            print(f"  epoch {epoch + 1}: loss {history.loss[-1]:.5g}, posterior-mean accuracy {accuracy:.4f}, "
                  f"kept {arch}", flush=True)

    fit_options = {}
    if args.adam_eps is not None:
        fit_options["optim"] = JointAdam({"lr": args.lr, "eps": args.adam_eps})
    if args.kl_weight != 1.0:
        fit_options["elbo"] = MeanFieldELBO(kl_weight=args.kl_weight)
    start = time.perf_counter()
    psb.fit(bnn, data.x_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            seed=args.seed, progress=False, callbacks=[report], **fit_options)
    seconds = time.perf_counter() - start
    if args.save:
        psb.save(bnn, args.save)

    prediction = bnn.predict(data.x_test, num_samples=args.samples, batch_size=2000, seed=args.seed)
    module, report_ = psb.compress(bnn)
    rounded, _ = psb.compress(bnn, bits=True)
    with torch.no_grad():
        row = {
            "prior": repr(prior),
            "posterior_predictive": psb.analysis.accuracy(prediction.probs, data.y_test),
            "posterior_mean": psb.analysis.accuracy(posterior_mean_network(bnn)(data.x_test), data.y_test),
            "compressed": psb.analysis.accuracy(module(data.x_test), data.y_test),
            "compressed_rounded": psb.analysis.accuracy(rounded(data.x_test), data.y_test),
        }
    architecture = report_.as_dict()["architecture_after"]
    row.update(architecture=architecture, weight_compression=report_.weight_compression,
               bit_compression=report_.bit_compression, seconds=seconds)
    return row


def run_reference(args, data, directory):
    """Train the authors' ``LinearGroupNJ`` layers as their example script does and evaluate
    them like ours."""
    sys.path.insert(0, str(Path(directory).expanduser().resolve()))
    layers_module = importlib.import_module("BayesianLayers")
    try:
        compression = importlib.import_module("compression")
    except ImportError:
        compression = None
    torch.manual_seed(args.seed)
    fc = [layers_module.LinearGroupNJ(a, b, clip_var=0.04 if i == 0 else None)
          for i, (a, b) in enumerate(pairwise(WIDTHS))]
    model = nn.Sequential(fc[0], nn.ReLU(), fc[1], nn.ReLU(), fc[2])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    n = float(len(data.x_train))
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(data.x_train))
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            loss = loss + sum(layer.kl_divergence() for layer in fc) / n
            loss.backward()
            optimizer.step()
            for layer in fc:
                layer.clip_variances()
        if (epoch + 1) % args.report_every == 0:
            print(f"  reference epoch {epoch + 1}: loss {float(loss.detach()):.5g}", flush=True)
    seconds = time.perf_counter() - start

    keep = [(layer.get_log_dropout_rates().detach() < t) for layer, t in zip(fc, args.thresholds, strict=True)]
    keep.append(torch.ones(WIDTHS[-1], dtype=torch.bool))
    masks = [torch.outer(keep[i + 1], keep[i]).float() for i in range(len(fc))]
    architecture = "-".join(str(int(k.sum())) for k in keep)
    with torch.no_grad():
        model.eval()  # the authors' layers use E[z] and the weight means outside training
        row = {"posterior_mean": psb.analysis.accuracy(model(data.x_test), data.y_test)}
        model.train()
        probs = sum(F.softmax(model(data.x_test), -1) for _ in range(args.samples)) / args.samples
        row["posterior_predictive"] = psb.analysis.accuracy(probs, data.y_test)
        model.eval()
        for layer, mask in zip(fc, masks, strict=True):
            mean, _ = layer.compute_posterior_params()
            layer.post_weight_mu = (mean * mask).detach()
            layer.deterministic = True
        row["compressed"] = psb.analysis.accuracy(model(data.x_test), data.y_test)
        row.update(architecture=architecture, weight_compression=weight_compression(architecture), seconds=seconds)
        if compression is not None:
            numpy_masks = [m.numpy().astype(np.float64) for m in masks]
            printout = io.StringIO()
            with redirect_stdout(printout):
                compression.compute_compression_rate(fc, numpy_masks)
            rates = [float(line.split("factor of ")[1].rstrip(".")) for line in printout.getvalue().split("\n") if
                     "factor of" in line]
            row["bit_compression"] = rates[1] if len(rates) > 1 else None
            for layer, weight in zip(fc, compression.compute_reduced_weights(fc, numpy_masks), strict=True):
                layer.post_weight_mu = torch.as_tensor(weight, dtype=torch.float32)
            row["compressed_rounded"] = psb.analysis.accuracy(model(data.x_test), data.y_test)
    return row


def describe(name, row):
    parts = [f"{name}: posterior predictive {row['posterior_predictive']:.4f}, posterior mean {row['posterior_mean']:.4f}, "
             f"compressed {row['compressed']:.4f} at {row['architecture']} ({row['weight_compression']:.1f}x weights"]
    if row.get("bit_compression") is not None:
        parts.append(f", {row['bit_compression']:.1f}x bits, bit-rounded {row['compressed_rounded']:.4f}")
    parts.append(f"), fit {row['seconds'] / 60:.1f} min")
    return "".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="bcgnj", choices=sorted(PRIORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--thresholds", type=float, nargs=3, default=[-2.8, -3.0, -5.0],
                        help="keep rule log alpha < t, one t per layer")
    parser.add_argument("--max-variance", nargs="+", default=None,
                        help="bound on the slab variances: one value, or one per layer ('none': unbounded); "
                             "default: the prior's own")
    parser.add_argument("--init-rho", type=float, default=None, help="initial slab rho (default: the prior's)")
    parser.add_argument("--weight-parameterization", choices=["softplus", "log_variance"], default=None,
                        help="parameterisation of the weights' guide standard deviation (default: the prior's)")
    parser.add_argument("--init-weight-log-var", type=float, default=None,
                        help="initial log variance of the weights' guide under log_variance (default: the prior's)")
    parser.add_argument("--init-log-var", type=float, default=None,
                        help="initial log variance of the group scales, BC-GNJ (default: the prior's)")
    parser.add_argument("--adam-eps", type=float, default=None,
                        help="Adam's epsilon (default torch's 1e-8; our loss is N times the authors' per-example "
                             "loss, so 1e-8 * N reproduces their updates exactly)")
    parser.add_argument("--kl-weight", type=float, default=1.0,
                        help="weight of the KL term (1: the ELBO; below 1 a tempered objective, labelled so)")
    parser.add_argument("--samples", type=int, default=20, help="posterior samples of the predictive")
    parser.add_argument("--dense", action="store_true", help="also train the dense ReLU network with the same budget")
    parser.add_argument("--no-ours", dest="ours", action="store_false", help="skip our fit")
    parser.add_argument("--reference-dir", default=None,
                        help="a checkout of the authors' tutorial code: also run their layers in this setting")
    parser.add_argument("--report-every", type=int, default=10, help="epochs between progress lines")
    parser.add_argument("--data", default=None, help="directory with the Fashion-MNIST IDX files")
    parser.add_argument("--save", default=None, help="file to save our fitted network in (psb.load reads it)")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    args = parser.parse_args(argv)
    if not 0 < args.kl_weight <= 1:
        parser.error("--kl-weight must lie in (0, 1]")

    torch.set_num_threads(1)
    data = fashion_mnist(args.data, scaling="symmetric")
    results = {"settings": vars(args), "objective": "ELBO" if args.kl_weight == 1.0 else
               f"tempered: KL weighted by {args.kl_weight} (not the ELBO)"}
    if args.dense:
        dense = train_deterministic(lenet_300_100(), data.x_train, data.y_train, epochs=args.epochs,
                                    batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        with torch.no_grad():
            results["dense"] = {"accuracy": psb.analysis.accuracy(dense.module(data.x_test), data.y_test),
                                "seconds": dense.seconds}
        print(f"dense ReLU 784-300-100-10: {results['dense']['accuracy']:.4f}", flush=True)
    if args.ours:
        results["ours"] = run_ours(args, data)
        label = args.prior + ("" if args.kl_weight == 1.0 else f" (TEMPERED, KL weight {args.kl_weight})")
        print(describe(label, results["ours"]), flush=True)
    if args.reference_dir:
        results["reference"] = run_reference(args, data, args.reference_dir)
        print(describe("reference code", results["reference"]), flush=True)
    path = write(f"reference_setting_{args.prior}_seed{args.seed}{'_' + args.tag if args.tag else ''}", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
