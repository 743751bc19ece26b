"""Inference time of a compressed module against the dense deterministic network of the same
original shape, at batch 1 and batch 1024 (medians of interleaved repeats, one process).

    python benchmarks/inference_time.py                        # LeNet-300-100 and LeNet-5-Caffe
    python benchmarks/inference_time.py --keep 0.1 0.3

The compressed module's speed depends only on its kept architecture, so the guide is set by
hand instead of fitted: every hidden unit (node or channel) is kept with probability
``--keep`` and input features are all kept (the node-level prior SS-IG, whose keep rule is one
indicator per unit). Prints the kept architecture and the time ratio dense / compressed.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402

NETS = {"lenet300": psb.lenet_300_100, "lenet5": psb.lenet5_caffe}


def pruned_bnn(name: str, keep: float, seed: int = 0) -> psb.SparseBNN:
    """An SS-IG network whose hidden units are kept with probability ``keep`` (output kept)."""
    torch.manual_seed(seed)
    bnn = psb.SparseBNN(NETS[name](), psb.SpikeSlabNode(), num_data=60000)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in bnn.layers[:-1]:
            on = torch.rand(layer.spec.out_units, generator=generator) < keep
            on[0] = True  # keep at least one unit per layer
            layer.block.gates.logits.copy_(torch.where(on, 5.0, -5.0))
    return bnn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--keep", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 1024])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    results = []
    for name in args.net:
        dense = NETS[name]().eval()
        for keep in args.keep:
            module, report = psb.compress(pruned_bnn(name, keep))
            module.eval()
            for batch_size in args.batch_sizes:
                x = torch.randn(batch_size, 784)
                number = max(1, 2000 // batch_size)
                times = {"dense": [], "compressed": []}
                with torch.inference_mode():
                    for _ in range(args.repeats):  # interleaved so that machine noise hits both alike
                        times["dense"].append(median_time(lambda m=dense, x=x: m(x), repeats=1, number=number, warmup=2))
                        times["compressed"].append(median_time(lambda m=module, x=x: m(x), repeats=1, number=number, warmup=2))
                med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
                row = {
                    "net": name, "keep": keep, "batch_size": batch_size,
                    "architecture_after": report.as_dict()["architecture_after"],
                    "params_kept_fraction": report.params_after / report.params_before,
                    "dense_ms": 1e3 * med["dense"], "compressed_ms": 1e3 * med["compressed"],
                    "speedup": med["dense"] / med["compressed"],
                }
                results.append(row)
                print(f"{name} keep {keep:.2f} ({row['architecture_after']}, {100 * row['params_kept_fraction']:.1f} % "
                      f"of parameters), batch {batch_size}: dense {row['dense_ms']:.3f} ms, compressed "
                      f"{row['compressed_ms']:.3f} ms, {row['speedup']:.1f}x faster", flush=True)
    print(f"wrote {write('inference_time', {'threads': torch.get_num_threads(), 'rows': results})}")


if __name__ == "__main__":
    main()
