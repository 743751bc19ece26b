"""Per-layer keep thresholds chosen greedily on validation data (``psb.layerwise_frontier``),
against the single threshold of ``psb.frontier``.

``compression_targets.py`` moves one keep threshold through every layer at once. Here each
layer gets its own threshold: ``psb.layerwise_frontier`` starts from the prior's own keep
rule and at every move tries, in each layer, dropping the next ``--step`` fraction of the
switches it keeps (the lowest inclusion probabilities first), keeping the move that loses
the least validation accuracy (compressed network, not fine-tuned) per parameter removed.
For every size target, the network of the walk with the best validation accuracy is then
fine-tuned exactly like the global frontier's points, with magnitude pruning plus the same
fine-tuning and the same widths trained from scratch beside it.

It reuses the fitted BNN and dense networks that ``compression_targets.py`` cached for the
row (run that first; the fit is not repeated here), and chooses everything on the validation
split; the test split is only reported.

    OMP_NUM_THREADS=1 python benchmarks/per_layer_thresholds.py --row lenet5 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/per_layer_thresholds.py --row lenet300 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/per_layer_thresholds.py --row mlp400-ssgl --seed 0

``--distill W`` fine-tunes by knowledge distillation (``psb.finetune(..., teacher=...)``): the
BNN's compressed network learns from its posterior-mean network at the prior's keep rule, the
magnitude-pruned network from the dense network it was pruned from; the same widths from
scratch train on the labels alone, as before.

Results: ``benchmarks/results/per_layer_thresholds_<row>_seed<seed>[_distill<W>_t<T>].json``.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402
from compression_targets import (  # noqa: E402
    N_VAL,
    ROWS,
    evaluate,
    fit_bnn,
    run_point,
    train_dense,
)

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn.apps.datasets import fashion_mnist  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", required=True, choices=sorted(ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=float, default=0.1, help="fraction of a layer's kept switches dropped per move")
    parser.add_argument("--max-loss", type=float, default=0.5, help="walk until validation accuracy is this far below "
                        "the posterior's")
    parser.add_argument("--distill", type=float, default=None, metavar="WEIGHT",
                        help="fine-tune by distillation with this weight (temperature --temperature): the BNN's "
                             "network from its posterior-mean network at the keep rule, the magnitude-pruned one "
                             "from the dense network it was pruned from")
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/per_layer_thresholds.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    row = ROWS[args.row]
    start = time.perf_counter()
    data = fashion_mnist(n_val=N_VAL, seed=args.seed, flatten=True, scaling=row.scaling)
    bnn, _, cached = fit_bnn(row, data, args.seed, False, print)
    if not cached:
        print("(the BNN was not cached: it was fitted now)")
    dense_full, _ = train_dense(row, data, row.budget, args.seed, False, print)
    dense_short, _ = train_dense(row, data, row.e_bnn, args.seed, False, print)
    dense_test = evaluate(dense_full, data.x_test, data.y_test)
    teachers = None
    if args.distill is not None:
        # the posterior-mean network at the prior's own keep rule (before the walk moves the thresholds)
        teachers = (psb.analysis.masked_posterior_mean(bnn), dense_short,
                    {"distillation_weight": args.distill, "temperature": args.temperature})
    front = psb.layerwise_frontier(bnn, data.x_val, data.y_val, step=args.step, max_loss=args.max_loss,
                                   num_samples=row.num_samples, seed=args.seed, batch_size=1000)
    walk = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()}
            for r in front.table.to_dict("records")]
    for r in walk:
        print(f"  {r['layer'] or 'keep rule'}: {r['architecture']}, {r['weight_compression']:.1f}x, "
              f"validation {r['accuracy']:.4f}")

    points = []
    for target in sorted(row.targets, key=lambda t: t.size):
        fits = [p for p in walk if target.admits(p["weight_compression"], p["fraction_kept"])]
        if not fits:
            continue
        best = max(fits, key=lambda p: (p["accuracy"], -p["nonzero_params"]))
        point = {"threshold": tuple(best["threshold"]), "rule": best["rule"], "reasons": [f"target {target}"]}
        result = run_point(row, point, bnn, dense_short, data, args.seed, print, teachers)
        for alternative in ("bnn", "magnitude", "scratch"):
            result[alternative]["points_below_dense"] = 100 * (dense_test - result[alternative]["after"]["test"])
        result["met"] = result["bnn"]["points_below_dense"] <= target.max_drop + 1e-9
        print(f"  {target}: {result['bnn']['points_below_dense']:.2f} points below dense "
              f"({'met' if result['met'] else 'missed'})")
        points.append(result)
    results = {"row": args.row, "seed": args.seed, "command": command, "dense_test": dense_test,
               "step": args.step, "posterior_val": front.posterior_metric,
               "distillation": None if teachers is None else teachers[2], "walk": walk, "points": points,
               "seconds": time.perf_counter() - start}
    tag = "" if args.distill is None else f"_distill{args.distill:g}_t{args.temperature:g}"
    path = write(f"per_layer_thresholds_{args.row}_seed{args.seed}{tag}", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
