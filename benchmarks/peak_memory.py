"""Peak memory of a training run: the resident set size of this process before and after
``fit`` on random data of MNIST shape (the data are created first, so the growth is what
training adds: parameters, optimiser state, activations and autograd buffers).

    python benchmarks/peak_memory.py --net lenet300 --prior ssig
    python benchmarks/peak_memory.py --net lenet5 --prior ssghs --batch-size 128

Run one configuration per process: the peak RSS of a process never goes down.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PRIORS, write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402

NETS = {"lenet300": psb.lenet_300_100, "lenet5": psb.lenet5_caffe}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="lenet300", choices=list(NETS))
    parser.add_argument("--prior", default="ssig", choices=list(PRIORS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--no-local-reparameterization", dest="local", action="store_false")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    n = args.batch_size * args.steps
    x, y = torch.randn(n, 784), torch.randint(0, 10, (n,))
    bnn = psb.SparseBNN(NETS[args.net](), PRIORS[args.prior](), num_data=60000,
                        local_reparameterization=args.local)
    bnn.num_data = None  # fit takes the data set's size
    before = peak_rss_mib()
    start = time.perf_counter()
    psb.fit(bnn, x, y, epochs=1, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    after = peak_rss_mib()
    result = {**vars(args), "rss_before_mib": before, "peak_rss_mib": after,
              "training_growth_mib": after - before, "seconds_per_step": seconds / args.steps}
    print(f"{args.net} + {args.prior} (local reparameterisation {args.local}), batch {args.batch_size}: "
          f"peak RSS {after:.0f} MiB, {after - before:.0f} MiB more than before training "
          f"({1e3 * result['seconds_per_step']:.1f} ms/step)")
    print(f"wrote {write(f'peak_memory_{args.net}_{args.prior}', result)}")


if __name__ == "__main__":
    main()
