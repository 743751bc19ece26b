"""Mutation check: does the test suite notice when the math is wrong?

Applies one-line mutations to the modules that hold the library's math (distributions,
priors, inclusion, compress, bits, the ELBO), one at a time, in a scratch copy of the
repository, runs the tests that cover that module, and reports which mutants *survive*
(every test still passes). A surviving mutant is a change to the math that no test catches.

Mutations are single-token swaps that keep the code runnable: ``+``/``-``, ``*``/``/``,
``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``ceil``/``floor``/``round``, ``min``/``max`` and
``sum``/``mean``. A mutant that makes the tests time out counts as caught.

Usage (a few minutes per module on 2 cores)::

    python tools/mutation_check.py                      # a sample of every module
    python tools/mutation_check.py --module bits --all  # every mutant of one module
    python tools/mutation_check.py --per-module 4 --seed 1

Prints one line per mutant and a table of survival rates; ``--json PATH`` also writes them.
"""

import argparse
import ast
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]

#: module (relative to the package) -> the tests that cover it
TARGETS: Dict[str, List[str]] = {
    "core/distributions.py": ["tests/core/test_distributions.py", "tests/core/priors/test_spike_slab.py"],
    "core/elbo.py": ["tests/core/test_elbo.py"],
    "core/priors/base.py": ["tests/core/priors/test_base.py", "tests/core/priors/test_spike_slab.py"],
    "core/priors/spike_slab.py": ["tests/core/priors/test_spike_slab.py"],
    "core/priors/spike_slab_node.py": ["tests/core/priors/test_spike_slab_node.py",  # the node block is
                                       "tests/core/priors/test_group_lasso.py",  # shared by SS-GL
                                       "tests/core/priors/test_group_horseshoe.py"],  # and SS-GHS
    "core/priors/group_lasso.py": ["tests/core/priors/test_group_lasso.py"],
    "core/priors/group_horseshoe.py": ["tests/core/priors/test_group_horseshoe.py"],
    "core/priors/bayesian_compression.py": ["tests/core/priors/test_normal_jeffreys.py",
                                            "tests/core/priors/test_bc_horseshoe.py"],
    "core/priors/normal_jeffreys.py": ["tests/core/priors/test_normal_jeffreys.py"],
    "core/priors/bc_horseshoe.py": ["tests/core/priors/test_bc_horseshoe.py"],
    "analysis/inclusion.py": ["tests/analysis/test_inclusion.py"],
    "analysis/compress.py": ["tests/analysis/test_compress.py", "tests/analysis/test_compress_properties.py"],
    "analysis/bits.py": ["tests/analysis/test_bits.py"],
}

SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "<": "<=", "<=": "<", ">": ">=", ">=": ">",
         "==": "!=", "!=": "=="}
NAME_SWAPS = {"ceil": "floor", "floor": "ceil", "round": "ceil", "min": "max", "max": "min",
              "sum": "mean", "mean": "sum"}


@dataclass
class Mutant:
    module: str
    line: int
    original: str
    mutated: str
    outcome: str = ""
    seconds: float = 0.0


def _docstring_lines(source: str) -> set:
    """Lines inside docstrings (not code)."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def mutants_of(module: str) -> List[Mutant]:
    """Every single-token mutant of ``module`` on a code line (not imports, docstrings,
    comments, decorators, error messages or type annotations' ``|``)."""
    path = ROOT / "pyro_sparse_bnn" / module
    source = path.read_text()
    skip = _docstring_lines(source)
    lines = source.splitlines()
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row, col = token.start
        if row > len(lines):
            continue
        text = lines[row - 1]
        stripped = text.strip()
        if row in skip or stripped.startswith(("import ", "from ", "@", "#", "raise ", "f\"", "\"")):
            continue
        if token.type == tokenize.OP and token.string in SWAPS:
            if token.string == "*" and (text[col - 1:col] in "(, " and text[col + 1:col + 2].isalpha()):
                continue  # *args unpacking, not multiplication
            if token.string in ("-", "+") and text[:col].rstrip().endswith(("(", ",", "=", "[", "return")):
                continue  # unary sign: swapping it is a different (often equivalent) mutation
            new = SWAPS[token.string]
        elif token.type == tokenize.NAME and token.string in NAME_SWAPS and text[token.end[1]:].startswith("("):
            new = NAME_SWAPS[token.string]
            if text[col - 1:col] != "." and new not in ("min", "max"):
                continue  # a bare round(...) or sum(...): its swap would not be defined
        else:
            continue
        mutated = text[:col] + new + text[token.end[1]:]
        found.append(Mutant(module, row, text.strip(), mutated.strip()))
    return found


def apply(copy_root: Path, mutant: Mutant) -> None:
    path = copy_root / "pyro_sparse_bnn" / mutant.module
    lines = (ROOT / "pyro_sparse_bnn" / mutant.module).read_text().splitlines(keepends=True)
    original = lines[mutant.line - 1]
    indent = original[:len(original) - len(original.lstrip())]
    lines[mutant.line - 1] = indent + mutant.mutated + "\n"
    path.write_text("".join(lines))


def restore(copy_root: Path, module: str) -> None:
    shutil.copy2(ROOT / "pyro_sparse_bnn" / module, copy_root / "pyro_sparse_bnn" / module)


def run_tests(copy_root: Path, tests: List[str], timeout: float) -> str:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-m", "not slow", "-p", "no:cacheprovider",
               *tests]
    environment = {**os.environ, "PYTHONPATH": str(copy_root), "OMP_NUM_THREADS": "1"}
    try:
        result = subprocess.run(command, cwd=copy_root, env=environment, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return "caught (timeout)"
    if result.returncode == 0:
        return "SURVIVED"
    if result.returncode in (1,):
        return "caught"
    return f"error (pytest exit {result.returncode})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(m.split("/")[-1][:-3] for m in TARGETS),
                        help="only this module (by file name without .py; repeatable)")
    parser.add_argument("--per-module", type=int, default=3, help="mutants sampled per module (3)")
    parser.add_argument("--all", action="store_true", help="every mutant, not a sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (0)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant before it counts as caught")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rerun", type=Path, help="run again the survivors listed in this --json file")
    args = parser.parse_args(argv)

    modules = [m for m in TARGETS if args.module is None or m.split("/")[-1][:-3] in args.module]
    rng = random.Random(args.seed)
    plan = []
    for module in modules:
        candidates = mutants_of(module)
        plan += candidates if args.all else rng.sample(candidates, min(args.per_module, len(candidates)))
    if args.rerun:
        previous = json.loads(args.rerun.read_text())["mutants"]
        plan = [Mutant(m["module"], m["line"], m["original"], m["mutated"]) for m in previous
                if m["outcome"] == "SURVIVED" and m["module"] in modules]
    with tempfile.TemporaryDirectory(prefix="mutation_check_") as scratch:
        copy_root = Path(scratch) / "repo"
        shutil.copytree(ROOT, copy_root, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "results", "build", "*.egg-info", ".pytest_cache", ".hypothesis"))
        baseline = run_tests(copy_root, sorted({t for m in modules for t in TARGETS[m]}), args.timeout * 3)
        if baseline != "SURVIVED":
            print(f"the unmutated tests do not pass ({baseline}); fix them first", file=sys.stderr)
            return 2
        for mutant in plan:
            apply(copy_root, mutant)
            start = time.perf_counter()
            mutant.outcome = run_tests(copy_root, TARGETS[mutant.module], args.timeout)
            mutant.seconds = time.perf_counter() - start
            restore(copy_root, mutant.module)
            print(f"{mutant.outcome:18s} {mutant.module}:{mutant.line}  {mutant.original!r} -> {mutant.mutated!r}",
                  flush=True)
    print()
    print(f"{'module':40s} {'mutants':>8s} {'survived':>9s}")
    totals = [0, 0]
    for module in modules:
        ran = [m for m in plan if m.module == module]
        survived = sum(m.outcome == "SURVIVED" for m in ran)
        totals[0] += len(ran)
        totals[1] += survived
        print(f"{module:40s} {len(ran):8d} {survived:9d}")
    rate = totals[1] / max(totals[0], 1)
    print(f"{'all':40s} {totals[0]:8d} {totals[1]:9d}   survival rate {rate:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"survival_rate": rate, "mutants": [asdict(m) for m in plan]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
