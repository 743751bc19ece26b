"""Command-line interface: ``python -m pyro_sparse_bnn <command>``."""

import argparse
import sys
from typing import Optional, Sequence

from ..core.errors import SparseBNNError
from .demo import DemoConfig, run_demo
from .zoo import (
    PRIOR_ABBREVIATIONS,
    describe,
    find_entries,
    load_entry,
    plural,
    render_cards,
    resolve_entry,
    run_entry,
    shell_command,
    update_readme_table,
)

__all__ = ["main"]


def _progress(args) -> Optional[bool]:
    """``--no-progress`` forces the bars off; otherwise ``None``: drawn only in a terminal or a
    notebook, never into a log file or a pipe."""
    return False if args.no_progress else None


def _demo(args) -> int:
    config = DemoConfig(
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        tolerance=args.tolerance,
        seed=args.seed,
        prior_inclusion=None if args.prior_inclusion == "theory" else float(args.prior_inclusion),
        progress=_progress(args),
        output=args.output,
    )
    run_demo(config)
    return 0


def _run(args) -> int:
    run_entry(
        resolve_entry(args.entry, args.models), args.output, epochs=args.epochs, smoke=args.smoke, data_dir=args.data_dir,
        progress=_progress(args), publish=args.publish, baseline_cache=args.baseline_cache,
        command=shell_command(args.argv),
    )
    return 0


LIST_HEADER = ("entry", "prior", "data", "architecture", "budget", "measured (test)")


def list_rows(models="models") -> list:
    """The rows of ``list``: the header, then one row per entry (its prior, data, architecture,
    training budget and the measured test figure of the BNN)."""
    rows = [LIST_HEADER]
    for path in find_entries(models):
        entry = load_entry(path)
        config, metrics = entry.config, entry.stored_metrics()
        status = "not yet measured" if metrics is None else (
            f"{metrics['metric']} {metrics['bnn'][metrics['metric']]:.4f}")
        rows.append((entry.name, PRIOR_ABBREVIATIONS[entry.prior_name], config["data"]["name"],
                     config["model"]["architecture"], plural(config["train"]["epochs"], "epoch"), status))
    return rows


def _list(args) -> int:
    rows = list_rows(args.models)
    if len(rows) == 1:
        print(f"no entries (*.toml) in {args.models}", file=sys.stderr)
        return 1
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_HEADER) - 1)]
    for row in rows:
        print("  ".join(f"{cell:{width}s}" for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _show(args) -> int:
    print(describe(load_entry(resolve_entry(args.entry, args.models))))
    return 0


def _zoo_table(args) -> int:
    if args.cards:
        for path in render_cards(args.models):
            print(f"rewrote {path}")
    print(f"rewrote {update_readme_table(args.models)}")
    return 0


PROG = "python -m pyro_sparse_bnn"

#: the examples each ``--help`` ends with, as ``(arguments, comment)``; every entry they name
#: exists in ``models/`` (tests/apps/test_cli.py runs them)
EXAMPLES = {
    None: [
        ("list", "the model-zoo entries and what they measured"),
        ("show wine_self_compressing", "an entry's config and measured figures"),
        ("run models/wine_self_compressing.toml --smoke", "check that an entry runs (a few steps)"),
        ("demo --epochs 200 --finetune-epochs 50", "the pipeline on digits, shorter than the default"),
    ],
    "demo": [
        ("demo", "the default budget: about two minutes on 2 CPU cores"),
        ("demo --epochs 200 --finetune-epochs 50 --output demo_output", "shorter; figures and modules saved"),
        ("demo --prior-inclusion theory", "Bai et al.'s theory-driven lambda"),
    ],
    "run": [
        ("run models/wine_self_compressing.toml --smoke", "a few steps on a small slice: does it run?"),
        ("run wine_self_compressing --smoke --output runs/wine", "an entry name works too"),
        ("run models/wine_self_compressing.toml --epochs 50 --output runs/wine", "a shorter budget"),
        ("run models/breast_cancer_bc_gnj.toml --publish", "also update the stored metrics and the card"),
    ],
    "list": [
        ("list", "entries of ./models"),
        ("list --models models", "entries of another directory"),
    ],
    "show": [
        ("show wine_self_compressing", "by entry name"),
        ("show models/fashion_lenet5_ssghs.toml", "by path"),
    ],
    "zoo-table": [
        ("zoo-table", "rewrite the table of models/README.md"),
        ("zoo-table --cards", "and every card"),
    ],
}


def _epilog(command: Optional[str]) -> str:
    lines = ["examples:"]
    for arguments, comment in EXAMPLES[command]:
        lines += [f"  # {comment}", f"  {PROG} {arguments}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sparsity-inducing priors for Bayesian neural networks, built on Pyro.",
        epilog=_epilog(None) + f"\n\nEach command has its own --help, e.g. {PROG} run --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_command(name, **kwargs):
        return commands.add_parser(name, epilog=_epilog(name), formatter_class=argparse.RawDescriptionHelpFormatter,
                                   **kwargs)

    demo = add_command(
        "demo", help="fit a spike-and-slab BNN on scikit-learn's digits, inspect PIPs, compress at the threshold "
                     "chosen on validation data, fine-tune, compare with the dense and magnitude-pruned networks"
    )
    defaults = DemoConfig()
    demo.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the data fitting the BNN")
    demo.add_argument("--finetune-epochs", type=int, default=defaults.finetune_epochs,
                      help="passes over the data fine-tuning the compressed module (the dense network trains "
                           "for both together)")
    demo.add_argument("--tolerance", type=float, default=defaults.tolerance,
                      help="how far below the posterior's validation accuracy the chosen network may be")
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument(
        "--prior-inclusion", default=str(defaults.prior_inclusion),
        help=f"prior inclusion probability lambda (default {defaults.prior_inclusion}), or 'theory' for "
             f"Bai et al.'s rule",
    )
    demo.add_argument("--output", default=None,
                      help="directory for the figures, the fitted network and the compressed and fine-tuned modules")
    demo.add_argument("--no-progress", action="store_true",
                      help="hide the progress bar (default: drawn only in a terminal or a notebook)")
    demo.set_defaults(handler=_demo)

    run = add_command(
        "run", help="run a model-zoo entry: fit, evaluate, compress, baselines, plots, card",
        description="Run models/<entry>.toml and write metrics.json, plots, the compressed module\n"
                    "and the model card into --output.",
    )
    run.add_argument("entry", help="entry name (e.g. wine_self_compressing) or path of its TOML file "
                                   "(e.g. models/wine_self_compressing.toml)")
    run.add_argument("--epochs", type=int, default=None, help="override [train] epochs (baselines too)")
    run.add_argument("--smoke", action="store_true", help="a few steps on a small slice, to check it runs")
    run.add_argument("--output", default=None, help="output directory (default zoo_output/<entry>)")
    run.add_argument("--data-dir", default=None,
                     help="directory with the IDX files of fashion_mnist entries (e.g. real MNIST)")
    run.add_argument("--publish", action="store_true",
                     help="also store the metrics in models/results/<entry>.json and rewrite models/<entry>.md")
    run.add_argument("--baseline-cache", default=None,
                     help="directory where baselines are stored and reused by entries with the same "
                          "data, architecture and budget")
    run.add_argument("--models", default="models", help="directory of the entries (for an entry name)")
    run.add_argument("--no-progress", action="store_true",
                     help="hide the progress bars (default: drawn only in a terminal or a notebook)")
    run.set_defaults(handler=_run)

    listing = add_command("list", help="list the model-zoo entries and their measured figure")
    listing.add_argument("--models", default="models", help="directory of the entries")
    listing.set_defaults(handler=_list)

    show = add_command("show", help="print an entry's config and measured figures")
    show.add_argument("entry", help="entry name (e.g. wine_self_compressing) or path of its TOML file")
    show.add_argument("--models", default="models", help="directory of the entries")
    show.set_defaults(handler=_show)

    table = add_command("zoo-table", help="regenerate the table of models/README.md from the "
                                "stored metrics (--cards: the cards too)")
    table.add_argument("--models", default="models", help="directory of the entries")
    table.add_argument("--cards", action="store_true", help="also rewrite every card from its stored metrics")
    table.set_defaults(handler=_zoo_table)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except Exception as error:
        if isinstance(error, SparseBNNError):  # a message for the user, not a stack trace
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
