"""The planted-teacher experiment of tests/core/priors/test_planted_teacher.py, with its figures printed.

    python benchmarks/planted_teacher.py --prior BC-GNJ BC-GHS --seeds 0
    python benchmarks/planted_teacher.py --seeds 0 1 2          # every prior
    OMP_NUM_THREADS=1 python benchmarks/planted_teacher.py --seeds 1 2 3 4 0

Runs go seed by seed (every prior on one seed, then the next); the results file is rewritten
after every run, so a run stopped early keeps what it finished.

For each prior and seed: kept hidden nodes, surplus nodes under the prior's keep threshold,
the node PIPs, and the compressed student's test RMSE relative to the noise level.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import write  # noqa: E402

from tests.core.priors.test_planted_teacher import PRIORS, fit_student, outcome  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args(argv)
    results = []
    for seed in args.seeds:  # seed by seed, every prior, so that a stopped run has whole seeds
        for name in args.prior:
            start = time.perf_counter()
            pips, threshold, report, rmse, noise = outcome(*fit_student(name, seed))
            row = {
                "prior": name, "seed": seed, "kept_hidden": report.architecture_after[1],
                "below_threshold": int((pips < threshold).sum()), "threshold": threshold,
                "rmse_over_noise": rmse / noise, "pips": sorted(pips.tolist(), reverse=True),
                "seconds": time.perf_counter() - start,
            }
            results.append(row)
            print(f"{name} seed {seed}: {row['kept_hidden']} hidden nodes kept, {row['below_threshold']} of 20 "
                  f"with PIP < {threshold:.2f}, RMSE/noise {row['rmse_over_noise']:.3f} "
                  f"({row['seconds']:.0f} s); PIPs {[round(p, 2) for p in row['pips']]}", flush=True)
            path = write("planted_teacher", {"seeds": args.seeds, "runs": results})  # after every run
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
