"""Helpers shared by the benchmark scripts: timing with medians, JSON output."""

import json
import statistics
import time
from pathlib import Path

from pyro_sparse_bnn.zoo import environment

RESULTS = Path(__file__).resolve().parent / "results"


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
