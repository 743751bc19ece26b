"""Helpers shared by the benchmark scripts: timing with medians, JSON output, the priors by short name."""

import json
import statistics
import time
from pathlib import Path

import pyro_sparse_bnn as psb
from pyro_sparse_bnn.apps.environment import environment

RESULTS = Path(__file__).resolve().parent / "results"

#: short names of the priors on the command lines of the benchmarks, with their settings there
PRIORS = {
    "ss": lambda: psb.SpikeSlab(prior_inclusion=1e-3),
    "ssig": psb.SpikeSlabNode,
    "ssgl": psb.SpikeSlabGroupLasso,
    "ssghs": psb.SpikeSlabGroupHorseshoe,
    "bcgnj": psb.GroupNormalJeffreys,
    "bcghs": psb.GroupHorseshoe,
    "sc": psb.SelfCompressingGaussian,
}


def median_time(fn, repeats: int = 7, number: int = 20, warmup: int = 5) -> float:
    """Median over ``repeats`` of the mean wall-clock seconds of ``number`` calls of ``fn``."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**payload, "environment": environment()}, indent=2))
    return path
