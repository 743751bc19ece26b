"""Full Bai et al. (2020) variable-selection simulation with the edge-level spike-and-slab prior.

200 inputs of which 5 are relevant, n = 3000 training and 10000 test examples, a 200-7-7-7-1
ReLU network (``--hidden`` changes it), theory-driven prior inclusion probability. Reports, per seed and as medians,
the false-negative and false-positive rates of the selected inputs (median-probability
model: an input is selected when one of its first-layer edges has PIP > 0.5) and the test
RMSE of the compressed network and of the Bayesian posterior predictive mean (noise sd 1,
so 1.0 is the best achievable).

    python benchmarks/bai_simulation.py             # 3 seeds, about 3 minutes each on 2 cores
    python benchmarks/bai_simulation.py --seeds 0   # one seed
    python benchmarks/bai_simulation.py --hidden 16-16   # a wider, shallower network
    python benchmarks/bai_simulation.py --scaled-down --seeds 0 1 2 3 4

``--scaled-down`` runs instead the experiment of tests/analysis/test_feature_selection.py
(``select_features``: 50 inputs, n = 2000, a 50-16-16-1 network, ``SpikeSlab.published()``,
2000 epochs of batch 500) on each seed and also says whether the test's assertions hold
(all five relevant inputs selected with PIP > 0.5, at most 2 false positives); the
schedule options are ignored there.
"""

import argparse
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write  # noqa: E402

from pyro_sparse_bnn import SparseBNN, SpikeSlab, compress, fit  # noqa: E402
from pyro_sparse_bnn.apps.datasets import bai_simulation  # noqa: E402
from pyro_sparse_bnn.core import GaussianLikelihood  # noqa: E402


def run(seed: int, epochs: int, batch_size: int, lr: float, lr_decay: float, kl_warmup: int,
        hidden=(7, 7, 7)) -> dict:
    data = bai_simulation(n_train=3000, n_test=10000, num_features=200, seed=seed)
    torch.manual_seed(seed)
    widths = [200, *hidden]
    layers = []
    for a, b in pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
    bnn = SparseBNN(net, SpikeSlab(), likelihood=GaussianLikelihood(noise_scale=1.0), num_data=3000)
    start = time.perf_counter()
    fit(bnn, data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, lr=lr,
        lr_decay=lr_decay, kl_warmup=kl_warmup, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    module, report = compress(bnn)
    selected = set(report.kept_features.tolist())
    relevant = set(data.relevant_features)
    with torch.no_grad():
        rmse_compressed = float(((module(data.x_test)[:, 0] - data.y_test) ** 2).mean().sqrt())
    prediction = bnn.predict(data.x_test, num_samples=100, batch_size=2000)
    rmse_bnn = float(((prediction.mean - data.y_test) ** 2).mean().sqrt())
    return {
        "seed": seed,
        "selected": sorted(selected),
        "fnr": len(relevant - selected) / len(relevant),
        "fpr": len(selected - relevant) / (200 - len(relevant)),
        "rmse_compressed": rmse_compressed,
        "rmse_bnn": rmse_bnn,
        "architecture_after": report.as_dict()["architecture_after"],
        "nonzero_params_after": report.nonzero_params_after,
        "fit_seconds": seconds,
        "lambda": bnn.layers[0].prior_inclusion,
    }


def run_scaled_down(seed: int) -> dict:
    """The test suite's scaled-down simulation on ``seed`` (tests/analysis/test_feature_selection.py)."""
    from pyro_sparse_bnn.analysis import feature_inclusion_probs
    from tests.analysis.test_feature_selection import select_features

    start = time.perf_counter()
    data, bnn, module, report = select_features(seed)
    seconds = time.perf_counter() - start
    selected = set(report.kept_features.tolist())
    relevant = set(data.relevant_features)
    pips = feature_inclusion_probs(bnn)
    with torch.no_grad():
        rmse_compressed = float(((module(data.x_test)[:, 0] - data.y_test) ** 2).mean().sqrt())
    prediction = bnn.predict(data.x_test, num_samples=100, batch_size=2000)
    rmse_bnn = float(((prediction.mean - data.y_test) ** 2).mean().sqrt())
    min_relevant_pip = float(pips[data.relevant_features].min())
    return {
        "seed": seed,
        "selected": sorted(selected),
        "fnr": len(relevant - selected) / len(relevant),
        "fpr": len(selected - relevant) / (data.x_test.shape[1] - len(relevant)),
        "rmse_compressed": rmse_compressed,
        "rmse_bnn": rmse_bnn,
        "min_relevant_pip": min_relevant_pip,
        "test_passes": relevant <= selected and len(selected - relevant) <= 2 and min_relevant_pip > 0.5,
        "architecture_after": report.as_dict()["architecture_after"],
        "nonzero_params_after": report.nonzero_params_after,
        "fit_seconds": seconds,
        "lambda": bnn.layers[0].prior_inclusion,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lr-decay", type=float, default=0.1)
    parser.add_argument("--kl-warmup", type=int, default=0)
    parser.add_argument("--hidden", default="7-7-7", help="hidden widths (the paper's 7-7-7)")
    parser.add_argument("--scaled-down", action="store_true",
                        help="the test suite's 50-input experiment instead (module docstring)")
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        if args.scaled_down:
            result = run_scaled_down(seed)
        else:
            hidden = tuple(int(w) for w in args.hidden.split("-"))
            result = run(seed, args.epochs, args.batch_size, args.lr, args.lr_decay, args.kl_warmup, hidden)
        runs.append(result)
        extra = (f" min relevant PIP {result['min_relevant_pip']:.3f} test passes {result['test_passes']}"
                 if args.scaled_down else "")
        print(f"seed {seed}: FNR {result['fnr']:.2f} FPR {result['fpr']:.3f} "
              f"RMSE compressed {result['rmse_compressed']:.3f} BNN {result['rmse_bnn']:.3f} "
              f"selected {result['selected']} architecture {result['architecture_after']}{extra} "
              f"({result['fit_seconds']:.0f} s)", flush=True)
    summary = {key: statistics.median(r[key] for r in runs)
               for key in ["fnr", "fpr", "rmse_compressed", "rmse_bnn", "fit_seconds"]}
    print("median over seeds: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    name = "bai_simulation_scaled_down" if args.scaled_down else f"bai_simulation_{args.hidden}"
    path = write(name, {"settings": vars(args), "runs": runs, "median": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
