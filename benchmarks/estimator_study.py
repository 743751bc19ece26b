"""Local reparameterisation or one weight draw per step: gradient variance and ELBO per epoch.

Both estimators have the same expectation (the ELBO and its gradient), so the choice is about
cost per step against noise per step. For one row of the step-time benchmark this fits the
network on Fashion-MNIST with each estimator (same seed, same minibatches) and records after
every epoch

* the training ELBO per example, evaluated the same way for every run (local
  reparameterisation, fixed seed, 10,000 training examples) so the curves are comparable,
* the test accuracy of the posterior predictive (8 draws, fixed seed),
* the CPU seconds of the epoch (a proxy on a shared machine),

and, at the initial and the final state of the first run, the variance of the gradient over
the estimator's noise (one fixed minibatch, ``--draws`` gradients) and over minibatches and
noise together, summed per parameter group and divided by the squared norm of the mean
gradient (noise-to-signal ratio).

    python benchmarks/estimator_study.py lenet300-ssig --epochs 10
    python benchmarks/estimator_study.py mlp400-ssghs --epochs 10 --estimators lrt,weights

Writes ``results/estimator_study_<row>.json`` and prints a summary.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PRIORS, write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
import pyro_sparse_bnn.apps.datasets  # noqa: E402
from pyro_sparse_bnn.core.fit import fit  # noqa: E402

NETS = {
    "mlp400": (lambda: psb.mlp([784, 400, 400, 10], nn.SiLU), 1024),
    "lenet300": (psb.lenet_300_100, 128),
    "lenet5": (psb.lenet5_caffe, 128),
}
ESTIMATORS = {"lrt": True, "weights": False, "auto": "auto", "default": None}


def parameter_group(name: str) -> str:
    for key in ("logits", "rho", "log_scale", "log_var", "loc"):
        if name.endswith(key):
            return key
    return "other"


def gradient_noise(bnn, x, y, batch_size, draws, seed):
    """``{group: (estimator noise, minibatch + estimator noise)}``: summed gradient variance
    of the group over its squared mean gradient."""
    from pyro.infer import SVI

    from pyro_sparse_bnn.core.optim import JointAdam

    svi = SVI(bnn.model, bnn.guide, JointAdam({"lr": 0.0}), psb.core.MeanFieldELBO())
    names = [n for n, _ in bnn.named_parameters()]
    params = [p for _, p in bnn.named_parameters()]

    def grads(xb, yb):
        with bnn.reparameterization(skip_slab_draws=True, batch_size=len(xb)) if _takes_batch(bnn) \
                else bnn.reparameterization(skip_slab_draws=True):
            loss = svi.loss_and_grads(bnn.model, bnn.guide, xb, yb)
        out = [(p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for p in params]
        for p in params:
            p.grad = None
        del loss
        return out

    gen = torch.Generator().manual_seed(seed)
    fixed = torch.randperm(len(x), generator=gen)[:batch_size]
    result = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        same = [grads(x[fixed], y[fixed]) for _ in range(draws)]
        varied = []
        for _ in range(draws):
            idx = torch.randperm(len(x), generator=gen)[:batch_size]
            varied.append(grads(x[idx], y[idx]))
    for kind, samples in (("estimator", same), ("minibatch+estimator", varied)):
        for i, name in enumerate(names):
            stack = torch.stack([s[i] for s in samples]).double()
            group = parameter_group(name)
            var, signal = result.setdefault(group, {}).setdefault(kind, [0.0, 0.0])
            result[group][kind] = [var + float(stack.var(0).sum()), signal + float(stack.mean(0).square().sum())]
    return {g: {k: v[0] / max(v[1], 1e-300) for k, v in kinds.items()} for g, kinds in result.items()}


def _takes_batch(bnn) -> bool:
    import inspect

    return "batch_size" in inspect.signature(bnn.reparameterization).parameters


@torch.no_grad()
def train_elbo(bnn, x, y, seed):
    """ELBO per training example on ``x, y`` (local reparameterisation, fixed seed)."""
    from pyro_sparse_bnn.core.reparameterization import LocalReparameterization

    elbo = psb.core.MeanFieldELBO()
    total = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(x), 1000):
            xb, yb = x[start:start + 1000], y[start:start + 1000]
            with LocalReparameterization(skip_slab_draws=True):
                total += elbo.loss(bnn.model, bnn.guide, xb, yb) * len(xb)
    return -total / len(x) / bnn.num_data


def run(row, estimator, epochs, seed, data, lr, draws, batch_size=None):
    net_key, prior_key = row.split("-")
    build, batch = NETS[net_key]
    batch = batch_size or batch
    torch.manual_seed(seed)
    kwargs = {} if ESTIMATORS[estimator] is None else {"local_reparameterization": ESTIMATORS[estimator]}
    bnn = psb.SparseBNN(build(), PRIORS[prior_key](), num_data=len(data.x_train), **kwargs)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    x_test, y_test = torch.as_tensor(data.x_test), torch.as_tensor(data.y_test)
    x_eval, y_eval = x[:10000], y[:10000]
    record = {"estimator": estimator, "batch_size": batch,
              "local_reparameterization_layers": list(bnn.local_reparameterization_layers(batch)), "epoch": [], "elbo_per_example": [], "test_accuracy": [],
              "cpu_seconds": [], "wall_seconds": []}
    noise = {"initial": gradient_noise(bnn, x, y, batch, draws, seed)} if draws else {}
    clock = {"cpu": time.process_time(), "wall": time.perf_counter()}

    def evaluate(epoch, history, net):
        record["cpu_seconds"].append(time.process_time() - clock["cpu"])
        record["wall_seconds"].append(time.perf_counter() - clock["wall"])
        record["epoch"].append(epoch + 1)
        record["elbo_per_example"].append(train_elbo(net, x_eval, y_eval, seed))
        probs = net.predict(x_test, num_samples=8, batch_size=2000, seed=seed).mean
        record["test_accuracy"].append(float((probs.argmax(1) == y_test).float().mean()))
        print(f"{row} {estimator} epoch {epoch + 1}: ELBO/example {record['elbo_per_example'][-1]:.4f}, "
              f"test accuracy {record['test_accuracy'][-1]:.4f}, epoch CPU {record['cpu_seconds'][-1]:.1f} s",
              flush=True)
        clock["cpu"], clock["wall"] = time.process_time(), time.perf_counter()

    fit(bnn, x, y, epochs=epochs, batch_size=batch, lr=lr, seed=seed, progress=False, callbacks=[evaluate])
    if draws:
        noise["final"] = gradient_noise(bnn, x, y, batch, draws, seed)
    record["gradient_noise"] = noise
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", help="e.g. lenet300-ssig, mlp400-ssghs, lenet5-bcgnj")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--estimators", default="lrt,weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--draws", type=int, default=32, help="gradients per variance estimate (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--batch-size", type=int, default=None, help="override the row's batch size")
    parser.add_argument("--n-train", type=int, default=None, help="use only the first n training images")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = psb.apps.datasets.fashion_mnist(n_train=args.n_train)
    runs = [run(args.row, e, args.epochs, args.seed, data, args.lr, args.draws, args.batch_size)
            for e in args.estimators.split(",")]
    for r in runs:
        print(f"{args.row} {r['estimator']}: final ELBO/example {r['elbo_per_example'][-1]:.4f}, "
              f"test accuracy {r['test_accuracy'][-1]:.4f}, CPU s/epoch {sum(r['cpu_seconds']) / len(r['cpu_seconds']):.1f}")
        for when, groups in r["gradient_noise"].items():
            print(f"  gradient noise/signal at {when}: " + ", ".join(
                f"{g}: {v['estimator']:.3g} (estimator) / {v['minibatch+estimator']:.3g} (with minibatches)"
                for g, v in sorted(groups.items())))
    batch = "" if args.batch_size is None else f"_b{args.batch_size}"
    path = write(f"estimator_study_{args.row}{batch}{args.tag}",
                 {"row": args.row, "epochs": args.epochs, "seed": args.seed, "lr": args.lr, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
