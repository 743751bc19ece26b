"""Command-line interface: ``python -m pyro_sparse_bnn <command>``."""

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(
        epochs=args.epochs,
        seed=args.seed,
        prior_inclusion=None if args.prior_inclusion == "theory" else float(args.prior_inclusion),
        progress=not args.no_progress,
        output=args.output,
    )
    run_demo(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_sparse_bnn",
        description="Sparsity-inducing priors for Bayesian neural networks, built on Pyro.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="fit a spike-and-slab BNN on scikit-learn's digits, inspect PIPs, compress"
    )
    defaults = __import__("pyro_sparse_bnn.demo", fromlist=["DemoConfig"]).DemoConfig()
    demo.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the data")
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument(
        "--prior-inclusion", default="theory",
        help="prior inclusion probability lambda, or 'theory' (default) for Bai et al.'s rule",
    )
    demo.add_argument("--output", default=None, help="directory for a figure and the compressed module")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
