"""Compressed networks against what a user would pick instead, with the same epoch budget.

Every row follows one protocol on Fashion-MNIST, with 5,000 validation images carved from the
60,000 training images (thresholds and fine-tuning choices are made on them; the test set is
used only for the final figures):

1. fit the sparse BNN for ``E_bnn`` epochs (``psb.fit``);
2. compute its size / validation-accuracy frontier (``psb.frontier``), evaluate every row on
   the test set too, and draw it (``psb.analysis.plot_frontier``) into ``benchmarks/figures/<row>.png``;
3. fine-tune the compressed network (``psb.finetune``, ``E_ft`` epochs, so that
   ``E_bnn + E_ft`` is the row's budget) at the point ``Frontier.select(tolerance)`` picks and
   at the point chosen on validation for each of the row's compression targets;
4. baselines with the same data, batch size, optimiser (Adam) and total budget: (a) the dense
   network trained for ``E_bnn + E_ft`` epochs; (b) the dense network trained for ``E_bnn``
   epochs, pruned by structured magnitude pruning (``psb.apps.magnitude_prune``) to exactly the
   widths of each fine-tuned BNN point, then fine-tuned like it for ``E_ft`` epochs; (c) the
   same widths trained from scratch (``psb.apps.train_from_scratch``) for ``E_bnn + E_ft`` epochs.

Every deterministic training run (fine-tuning, the dense networks, from scratch) uses the same
Adam settings and returns the weights of its best validation epoch (``restore_best``).

One command per row (one thread each; ``--seed`` picks the split, the initialisation and the
training order):

    OMP_NUM_THREADS=1 python benchmarks/compression_targets.py --row lenet300 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/compression_targets.py --row mlp400 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/compression_targets.py --row mlp400-ssgl --seed 0
    OMP_NUM_THREADS=1 python benchmarks/compression_targets.py --row lenet5 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/compression_targets.py --row reference --seed 0
    OMP_NUM_THREADS=1 python benchmarks/compression_targets.py --row demo --seed 0

``reference`` is the Bayesian Compression authors' setting without fine-tuning: it runs
``benchmarks/reference_setting.py --dense`` and puts its figures in this table's form.
``demo`` runs the package's demo (``python -m pyro_sparse_bnn demo``, scikit-learn digits).

Fitted BNNs and dense networks are cached under ``benchmarks/results/compression_targets/``
(keyed by the settings that shape them), so a second run re-evaluates without refitting;
``--refit`` ignores the cache. The settings can be overridden for experiments
(``--e-bnn``, ``--fit-lr``, ``--ft-lr``, ``--prior-args``, ...; see ``--help``); such a run
needs ``--tag``, which names its results file and puts its figure next to it instead of in
``benchmarks/figures``. ``--kl-weight`` below 1 fits a tempered objective instead of the
ELBO, and every line of its output says so. Results:
``benchmarks/results/compression_targets_<row>_seed<seed>[_<tag>].json``.
"""

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
import pyro_sparse_bnn.apps  # noqa: E402
from pyro_sparse_bnn.apps.datasets import fashion_mnist  # noqa: E402
from pyro_sparse_bnn.core.elbo import MeanFieldELBO  # noqa: E402
from pyro_sparse_bnn.core.errors import DegenerateNetworkWarning  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"
CACHE = RESULTS / "compression_targets"
#: training images moved into the validation split
N_VAL = 5000
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Target:
    """A point the frontier should pass through: a size bound and at most ``max_drop``
    points of test accuracy below the dense network. ``kind`` is ``"weight_compression"``
    (at least ``size``-fold fewer weights) or ``"fraction_kept"`` (at most ``size`` of the
    parameters)."""

    kind: str
    size: float
    max_drop: float

    def admits(self, weight_compression: float, fraction_kept: float) -> bool:
        if self.kind == "weight_compression":
            return weight_compression >= self.size
        return fraction_kept <= self.size

    def __str__(self):
        size = f">= {self.size:g}x weight compression" if self.kind == "weight_compression" else \
            f"<= {100 * self.size:g} % of the parameters"
        return f"{size} at <= {self.max_drop:g} points below dense"


@dataclass
class Row:
    """The settings of one row of the table."""

    description: str
    network: Callable[[], nn.Sequential]
    prior: str
    prior_args: dict
    batch_size: int
    e_bnn: int
    e_ft: int
    fit: dict
    train: dict
    targets: List[Target]
    tolerance: float = 0.01
    num_samples: int = 100
    num_thresholds: int = 30
    kl_weight: float = 1.0
    #: ``local_reparameterization`` of the SparseBNN (``None``: the cached fits' estimator,
    #: local reparameterisation in every layer; ``"auto"``: the library's default)
    estimator: Optional[str] = None
    #: pixel scaling passed to ``fashion_mnist`` (``"symmetric"``: [-1, 1], the Bayesian
    #: Compression authors' setting)
    scaling: str = "standardize"

    @property
    def budget(self) -> int:
        return self.e_bnn + self.e_ft

    def make_prior(self):
        return PRIORS[self.prior](**self.prior_args)


PRIORS = {
    "bcgnj": psb.GroupNormalJeffreys,
    "ssghs": psb.SpikeSlabGroupHorseshoe,
    "ssgl": psb.SpikeSlabGroupLasso,
}


def mlp400() -> nn.Sequential:
    return psb.mlp([784, 400, 400, 10], nn.SiLU)


ROWS: Dict[str, Row] = {
    "lenet300": Row(
        description="LeNet-300-100 (784-300-100-10, ReLU), BC-GNJ, batch 128, Adam, 40 epochs in all",
        network=psb.lenet_300_100, prior="bcgnj", prior_args={}, batch_size=128, e_bnn=30, e_ft=10,
        fit={"lr": 1e-3}, train={"lr": 1e-3, "lr_decay": 0.1},
        targets=[Target("weight_compression", 10, 1.5), Target("weight_compression", 5, 0.8)],
        scaling="symmetric",
    ),
    "mlp400": Row(
        description="MLP 784-400-400-10 (SiLU), SS-GHS, batch 1024, Adam, 120 epochs in all",
        network=mlp400, prior="ssghs", prior_args={}, batch_size=1024, e_bnn=100, e_ft=20,
        fit={"lr": 3e-3, "lr_decay": 0.3, "indicator_warmup": 10}, train={"lr": 1e-3, "lr_decay": 0.1},
        targets=[Target("fraction_kept", 0.10, 2.0)],
    ),
    "mlp400-ssgl": Row(
        description="MLP 784-400-400-10 (SiLU), SS-GL, batch 1024, Adam, 120 epochs in all",
        network=mlp400, prior="ssgl", prior_args={}, batch_size=1024, e_bnn=100, e_ft=20,
        fit={"lr": 3e-3, "lr_decay": 0.3, "indicator_warmup": 10}, train={"lr": 1e-3, "lr_decay": 0.1},
        targets=[Target("fraction_kept", 0.10, 2.0)],
    ),
    "lenet5": Row(
        description="LeNet-5-Caffe (ReLU), BC-GNJ, batch 128, Adam, 20 epochs in all",
        network=psb.lenet5_caffe, prior="bcgnj", prior_args={}, batch_size=128, e_bnn=15, e_ft=5,
        fit={"lr": 3e-3, "lr_decay": 0.1}, train={"lr": 1e-3, "lr_decay": 0.1},
        targets=[Target("weight_compression", 30, 1.0)], num_samples=50,
    ),
}
OTHER_ROWS = ("reference", "demo")


# -- helpers ----------------------------------------------------------------------------------
def key(*parts) -> str:
    """Short stable hash of JSON-serialisable settings (the cache key)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def num_weights(module: nn.Module) -> int:
    """Non-zero weights (biases excluded) of the linear and conv layers of ``module``."""
    return sum(int((m.weight != 0).sum()) for m in module.modules() if isinstance(m, WEIGHT_LAYERS))


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def evaluate(module: nn.Module, x, y, batch: int = 5000) -> float:
    module.eval()
    return psb.analysis.accuracy(torch.cat([module(x[i:i + batch]) for i in range(0, len(x), batch)]), y)


def scores(module: nn.Module, data) -> dict:
    return {"val": evaluate(module, data.x_val, data.y_val), "test": evaluate(module, data.x_test, data.y_test)}


def compress_quietly(bnn, threshold):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateNetworkWarning)
        return psb.compress(bnn, threshold=threshold)


def as_threshold(value):
    """A frontier row's threshold as ``compress`` takes it: NaN (each layer's keep rule) becomes
    ``None``; a per-layer tuple stays."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class Clock:
    """Wall-clock seconds per stage."""

    def __init__(self):
        self.seconds = {}
        self.start = time.perf_counter()

    def stage(self, name, since):
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - since


# -- the stages -------------------------------------------------------------------------------
def fit_bnn(row: Row, data, seed: int, refit: bool, echo):
    """The fitted BNN, from the cache when it holds one fitted with these settings."""
    settings = {"network": repr(row.network()), "prior": repr(row.make_prior()),
                "batch_size": row.batch_size, "epochs": row.e_bnn, "fit": row.fit, "kl_weight": row.kl_weight,
                "n_val": N_VAL, "seed": seed, "scaling": row.scaling}
    if row.estimator is not None:
        settings["estimator"] = row.estimator
    path = CACHE / f"bnn_{key(settings)}.pt"
    if path.exists() and not refit:
        echo(f"loaded the fitted BNN from {path.name}")
        bnn = psb.load(path)
        return bnn, json.loads(path.with_suffix(".json").read_text())["fit_seconds"], True
    torch.manual_seed(seed)
    estimator = {None: True, "lrt": True, "weights": False, "auto": "auto"}[row.estimator]
    bnn = psb.SparseBNN(row.network(), row.make_prior(), likelihood="categorical", num_data=len(data.x_train),
                        local_reparameterization=estimator)
    options = dict(row.fit)
    if row.kl_weight != 1.0:
        options["elbo"] = MeanFieldELBO(kl_weight=row.kl_weight)

    def progress(epoch, history, bnn):
        if (epoch + 1) % 5 == 0 or epoch + 1 == row.e_bnn:
            _, report = compress_quietly(bnn, None)
            echo(f"  epoch {epoch + 1}: loss {history.loss[-1]:.6g}, keep rule keeps "
                 f"{report.as_dict()['architecture_after']}")

    start = time.perf_counter()
    history = psb.fit(bnn, data.x_train, data.y_train, epochs=row.e_bnn, batch_size=row.batch_size, seed=seed,
                      progress=False, callbacks=[progress], **options)
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    psb.save(bnn, path, history)
    path.with_suffix(".json").write_text(json.dumps({"settings": settings, "fit_seconds": seconds}, default=str))
    return bnn, seconds, False


def train_dense(row: Row, data, epochs: int, seed: int, refit: bool, echo):
    """The dense network trained for ``epochs`` (the deterministic settings of the row), cached."""
    settings = {"network": repr(row.network()), "batch_size": row.batch_size, "epochs": epochs,
                "train": row.train, "n_val": N_VAL, "seed": seed, "scaling": row.scaling}
    path = CACHE / f"dense_{key(settings)}.pt"
    torch.manual_seed(seed)
    net = row.network()
    if path.exists() and not refit:
        saved = torch.load(path)
        net.load_state_dict(saved["state"])
        echo(f"loaded the dense network ({epochs} epochs) from {path.name}")
        return net, saved["seconds"]
    start = time.perf_counter()
    net, history = psb.apps.train_from_scratch(net, data.x_train, data.y_train, seed=seed, epochs=epochs,
                                          batch_size=row.batch_size, x_val=data.x_val, y_val=data.y_val,
                                          restore_best=True, progress=False, **row.train)
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "seconds": seconds, "best_epoch": history.best_epoch}, path)
    return net, seconds


def frontier_rows(bnn, front, data) -> List[dict]:
    """The frontier table as records, with each row's test accuracy (for information only)."""
    records = []
    for record in front.table.to_dict("records"):
        module, _ = compress_quietly(bnn, as_threshold(record["threshold"]))
        record["test_accuracy"] = evaluate(module, data.x_test, data.y_test)
        records.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    return records


def choose_points(row: Row, front, records) -> List[dict]:
    """Frontier rows to fine-tune: the one ``select(tolerance)`` picks, and for every target,
    among the rows of its size, the largest (the closest to the target) and the one with the
    best validation accuracy (ties: the smaller)."""
    chosen = {}
    index = front.selected_index(row.tolerance)
    if index is not None:
        chosen[index] = [f"select(tolerance={row.tolerance:g})"]
    for target in row.targets:
        candidates = [i for i, r in enumerate(records) if not r["degenerate"]
                      and target.admits(r["weight_compression"] or 0.0, r["fraction_kept"])]
        if not candidates:
            continue
        closest = max(candidates, key=lambda i: records[i]["nonzero_params"])
        best = max(candidates, key=lambda i: (records[i]["accuracy"], -records[i]["nonzero_params"]))
        for index in sorted({closest, best}):
            chosen.setdefault(index, []).append(f"target {target}")
    return [{"frontier_index": i, "reasons": reasons} for i, reasons in sorted(chosen.items())]


def run_point(row: Row, point: dict, bnn, dense_short, data, seed: int, echo, teachers=None) -> dict:
    """Fine-tune the compressed BNN at one frontier row; magnitude pruning and from scratch
    at its widths. ``teachers``: optional ``(bnn_teacher, dense_teacher, options)`` for
    fine-tuning by distillation, each pruned network from its own uncompressed network."""
    threshold = as_threshold(point["threshold"])
    module, report = compress_quietly(bnn, threshold)
    options = dict(batch_size=row.batch_size, x_val=data.x_val, y_val=data.y_val, restore_best=True,
                   progress=False, seed=seed, **row.train)
    result = {
        "threshold": threshold, "rule": point["rule"], "reasons": point["reasons"],
        "architecture": report.as_dict()["architecture_after"],
        "params": report.params_after, "nonzero_params": report.nonzero_params_after,
        "fraction_kept": report.nonzero_params_after / report.params_before,
        "weights": num_weights(module),
        "weight_compression": report.weight_compression,
        "bit_compression": report.bit_compression,
    }
    start = time.perf_counter()
    bnn_options, dense_options = dict(options), dict(options)
    if teachers is not None:
        bnn_teacher, dense_teacher, distillation = teachers
        bnn_options.update(teacher=bnn_teacher, **distillation)
        dense_options.update(teacher=dense_teacher, **distillation)
        result["distillation"] = distillation
    tuned, history = psb.finetune(module, data.x_train, data.y_train, epochs=row.e_ft, **bnn_options)
    result["bnn"] = {"before": scores(module, data), "after": scores(tuned, data), "best_epoch": history.best_epoch,
                     "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    pruned = psb.apps.magnitude_prune(dense_short, report)
    assert psb.apps.baselines.module_widths(pruned) == report.architecture_after
    pruned_tuned, history = psb.finetune(pruned, data.x_train, data.y_train, epochs=row.e_ft, **dense_options)
    result["magnitude"] = {"before": scores(pruned, data), "after": scores(pruned_tuned, data),
                           "weights": num_weights(pruned), "best_epoch": history.best_epoch,
                           "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    scratch, history = psb.apps.train_from_scratch(module, data.x_train, data.y_train, epochs=row.budget, **options)
    result["scratch"] = {"after": scores(scratch, data), "best_epoch": history.best_epoch,
                         "seconds": time.perf_counter() - start}
    echo(f"  {result['architecture']} ({result['weight_compression']:.1f}x weights): BNN "
         f"{result['bnn']['before']['test']:.4f} -> {result['bnn']['after']['test']:.4f}, magnitude "
         f"{result['magnitude']['before']['test']:.4f} -> {result['magnitude']['after']['test']:.4f}, scratch "
         f"{result['scratch']['after']['test']:.4f} (test)")
    return result


def check_targets(row: Row, points: List[dict], dense_test: float) -> List[dict]:
    """Each target at the fine-tuned point of its size with the best validation accuracy."""
    outcomes = []
    for target in row.targets:
        fits = [p for p in points if target.admits(p["weight_compression"] or 0.0, p["fraction_kept"])]
        if not fits:
            outcomes.append({"target": str(target), "met": False, "point": None,
                             "note": "no frontier point of this size"})
            continue
        best = max(fits, key=lambda p: (p["bnn"]["after"]["val"], -p["nonzero_params"]))
        drop = 100 * (dense_test - best["bnn"]["after"]["test"])
        outcomes.append({"target": str(target), "met": drop <= target.max_drop + 1e-9,
                         "points_below_dense": drop, "margin_points": target.max_drop - drop,
                         "point": best["architecture"], "weight_compression": best["weight_compression"],
                         "fraction_kept": best["fraction_kept"]})
    return outcomes


def draw(front, row: Row, points, dense_val, path: Path):
    """The frontier figure, with the fine-tuned points and the magnitude-pruned ones on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = psb.analysis.plot_frontier(front, tolerance=row.tolerance, figsize=(7.5, 4.8))
    ax = fig.axes[0]
    sizes = [p["nonzero_params"] for p in points]
    ax.plot(sizes, [p["bnn"]["after"]["val"] for p in points], "D", color="C4", label="BNN, fine-tuned")
    ax.plot(sizes, [p["magnitude"]["after"]["val"] for p in points], "v", color="C5",
            label="magnitude-pruned dense, fine-tuned")
    ax.plot(sizes, [p["scratch"]["after"]["val"] for p in points], "^", color="C7", label="same widths from scratch")
    ax.axhline(dense_val, color="C2", linestyle=":", label=f"dense, {row.budget} epochs ({dense_val:.3g})")
    ax.set_title(f"{row.description}\n(validation accuracy; BNN fitted {row.e_bnn} epochs, fine-tuned {row.e_ft})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- a row ------------------------------------------------------------------------------------
def run_row(name: str, row: Row, seed: int, refit: bool, tag: str, command: str, echo=print) -> dict:
    clock = Clock()
    objective = "ELBO" if row.kl_weight == 1.0 else f"TEMPERED objective: KL weighted by {row.kl_weight} (not the ELBO)"
    echo(f"{name}: {row.description}; {row.prior} {row.prior_args}, fit {row.fit}, {objective}; "
         f"E_bnn {row.e_bnn} + E_ft {row.e_ft}, deterministic training {row.train}, seed {seed}")
    flat = True
    data = fashion_mnist(n_val=N_VAL, seed=seed, flatten=flat, scaling=row.scaling)

    start = time.perf_counter()
    bnn, fit_seconds, cached = fit_bnn(row, data, seed, refit, echo)
    clock.seconds["fit"] = fit_seconds
    clock.stage("fit (this run)", start)

    start = time.perf_counter()
    front = psb.frontier(bnn, data.x_val, data.y_val, num_thresholds=row.num_thresholds,
                         num_samples=row.num_samples, seed=seed, batch_size=1000)
    records = frontier_rows(bnn, front, data)
    prediction = bnn.predict(data.x_test, num_samples=row.num_samples, batch_size=1000, seed=seed)
    posterior_test = psb.analysis.accuracy(prediction.mean, data.y_test)
    clock.stage("frontier", start)
    echo(f"posterior predictive: validation {front.posterior_metric:.4f}, test {posterior_test:.4f}")

    start = time.perf_counter()
    dense_full, dense_full_seconds = train_dense(row, data, row.budget, seed, refit, echo)
    dense_short, dense_short_seconds = train_dense(row, data, row.e_bnn, seed, refit, echo)
    dense = {"epochs": row.budget, **scores(dense_full, data), "params": num_params(dense_full),
             "weights": num_weights(dense_full), "seconds": dense_full_seconds,
             "short": {"epochs": row.e_bnn, **scores(dense_short, data), "seconds": dense_short_seconds}}
    clock.stage("dense networks", start)
    echo(f"dense {row.budget} epochs: validation {dense['val']:.4f}, test {dense['test']:.4f}; "
         f"dense {row.e_bnn} epochs (pruned by magnitude): test {dense['short']['test']:.4f}")

    index = front.selected_index(row.tolerance)
    select = {"tolerance": row.tolerance, "architecture": None if index is None else records[index]["architecture"]}
    start = time.perf_counter()
    points = []
    for point in choose_points(row, front, records):
        record = records[point["frontier_index"]]
        points.append(run_point(row, {**record, **point}, bnn, dense_short, data, seed, echo))
    clock.stage("fine-tuning and baselines", start)
    for p in points:
        for alternative in ("bnn", "magnitude", "scratch"):
            p[alternative]["points_below_dense"] = 100 * (dense["test"] - p[alternative]["after"]["test"])
    outcomes = check_targets(row, points, dense["test"])

    figure = (RESULTS / f"compression_targets_{name}_seed{seed}_{tag}.png" if tag
              else FIGURES / (f"{name}.png" if seed == 0 else f"{name}_seed{seed}.png"))
    draw(front, row, points, dense["val"], figure)
    clock.seconds["total (this run)"] = time.perf_counter() - clock.start
    results = {
        "row": name, "description": row.description, "seed": seed, "command": command, "objective": objective,
        "settings": {**asdict(row), "network": repr(row.network()), "prior_repr": repr(bnn.priors[0]),
                     "budget": row.budget, "n_val": N_VAL},
        "bnn": {"cached": cached, "posterior_val": front.posterior_metric, "posterior_test": posterior_test},
        "dense": dense, "frontier": records, "points": points, "targets": outcomes, "select": select,
        "seconds": clock.seconds, "figure": str(figure.relative_to(Path(__file__).resolve().parent.parent)),
    }
    path = write(f"compression_targets_{name}_seed{seed}{'_' + tag if tag else ''}", results)
    echo(table(results))
    echo(f"wrote {path} and {figure}")
    return results


def table(results: dict) -> str:
    """The row's results as Markdown tables: the fine-tuned points, then the frontier."""
    dense = results["dense"]
    lines = [f"\n{results['row']} (seed {results['seed']}, {results['objective']}): dense "
             f"{dense['epochs']} epochs {dense['test']:.4f} test; posterior predictive "
             f"{results['bnn']['posterior_test']:.4f} test",
             "",
             "| point | architecture | weights | weight compr. | bit compr. | params kept | BNN before ft | "
             "BNN after ft | below dense | magnitude before ft | magnitude after ft | from scratch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in results["points"]:
        bits = "" if p["bit_compression"] is None else f"{p['bit_compression']:.0f}x"
        lines.append(
            f"| {'; '.join(p['reasons'])} | {p['architecture']} | {p['weights']:,} | {p['weight_compression']:.1f}x | "
            f"{bits} | {p['nonzero_params']:,} ({100 * p['fraction_kept']:.1f} %) | "
            f"{p['bnn']['before']['test']:.4f} | **{p['bnn']['after']['test']:.4f}** | "
            f"{p['bnn']['points_below_dense']:+.2f} | {p['magnitude']['before']['test']:.4f} | "
            f"{p['magnitude']['after']['test']:.4f} ({p['magnitude']['points_below_dense']:+.2f}) | "
            f"{p['scratch']['after']['test']:.4f} ({p['scratch']['points_below_dense']:+.2f}) |")
    select = results["select"]
    if select["architecture"] is None:
        lines.append(f"\nselect(tolerance={select['tolerance']:g}): no network of the frontier is within the "
                     f"tolerance of the posterior's validation accuracy {results['bnn']['posterior_val']:.4f}")
    lines += ["", "| keep rule | architecture | params kept | weight compr. | val | test |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in results["frontier"]:
        compression = "" if r["weight_compression"] is None else f"{r['weight_compression']:.1f}x"
        lines.append(f"| {r['rule']} | {r['architecture']} | {100 * r['fraction_kept']:.1f} % | "
                     f"{compression} | {r['accuracy']:.4f} | {r['test_accuracy']:.4f} |")
    lines.append("")
    for outcome in results["targets"]:
        if outcome["point"] is None:
            lines.append(f"target {outcome['target']}: NOT MET ({outcome['note']})")
        else:
            lines.append(f"target {outcome['target']}: {'met' if outcome['met'] else 'NOT MET'} at "
                         f"{outcome['point']} ({outcome['points_below_dense']:.2f} points below dense, margin "
                         f"{outcome['margin_points']:+.2f})")
    lines.append("wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in results["seconds"].items()))
    return "\n".join(lines)


# -- the two rows that run other scripts ------------------------------------------------------
def run_reference(seed: int, command: str, echo=print) -> dict:
    """The authors' setting (``reference_setting.py --dense``) in this table's form."""
    import reference_setting

    start = time.perf_counter()
    reference_setting.main(["--seed", str(seed), "--dense"])
    seconds = time.perf_counter() - start
    measured = json.loads((RESULTS / f"reference_setting_bcgnj_seed{seed}.json").read_text())
    ours, dense = measured["ours"], measured["dense"]
    widths = [int(w) for w in ours["architecture"].split("-")]
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    results = {
        "row": "reference", "seed": seed, "command": command, "objective": measured["objective"],
        "description": "LeNet-300-100 (ReLU), BC-GNJ, inputs in [-1, 1], batch 128, Adam 1e-3, 30 epochs, "
                       "keep rule log alpha < (-2.8, -3, -5), no fine-tuning",
        "dense": dense, "ours": ours, "params": params,
        "points_below_dense": 100 * (dense["accuracy"] - ours["compressed"]),
        "seconds": {"total": seconds},
    }
    write(f"compression_targets_reference_seed{seed}", results)
    echo(f"\nreference (seed {seed}): dense {dense['accuracy']:.4f}; compressed {ours['compressed']:.4f} "
         f"({results['points_below_dense']:+.2f} points below dense) at {ours['architecture']}, "
         f"{ours['weight_compression']:.1f}x weights, {ours['bit_compression']:.0f}x bits, {params:,} parameters; "
         f"posterior predictive {ours['posterior_predictive']:.4f}; {seconds / 60:.1f} min")
    return results


def run_demo_row(seed: int, command: str, echo=print) -> dict:
    """The package's demo, with its figures kept."""
    from pyro_sparse_bnn.apps.demo import DemoConfig, run_demo

    start = time.perf_counter()
    measured = run_demo(DemoConfig(seed=seed, progress=False), echo=echo)
    results = {"row": "demo", "seed": seed, "command": command, **measured,
               "seconds": {"total": time.perf_counter() - start}}
    write(f"compression_targets_demo_seed{seed}", results)
    return results


# -- command line -----------------------------------------------------------------------------
def with_overrides(row: Row, args) -> Row:
    fit, train = dict(row.fit), dict(row.train)
    for option, target, name in (("fit_lr", fit, "lr"), ("fit_lr_decay", fit, "lr_decay"), ("logit_lr", fit, "logit_lr"),
                                 ("indicator_warmup", fit, "indicator_warmup"), ("kl_warmup", fit, "kl_warmup"),
                                 ("ft_lr", train, "lr"), ("ft_lr_decay", train, "lr_decay")):
        value = getattr(args, option)
        if value is not None:
            target[name] = value
    changes = {"fit": fit, "train": train}
    for option in ("e_bnn", "e_ft", "tolerance", "kl_weight", "estimator"):
        value = getattr(args, option)
        if value is not None:
            changes[option] = value
    if args.prior_args is not None:
        changes["prior_args"] = {**row.prior_args, **json.loads(args.prior_args)}
    return replace(row, **changes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", required=True, choices=sorted(ROWS) + list(OTHER_ROWS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refit", action="store_true", help="fit again even if the cache holds the networks")
    parser.add_argument("--tag", default="", help="name of an experiment with other settings (needed with them)")
    experiment = parser.add_argument_group("overrides of the row's settings (experiments; need --tag)")
    for option, kind in (("--e-bnn", int), ("--e-ft", int), ("--fit-lr", float), ("--fit-lr-decay", float),
                         ("--logit-lr", float), ("--indicator-warmup", int), ("--kl-warmup", int),
                         ("--ft-lr", float), ("--ft-lr-decay", float), ("--tolerance", float),
                         ("--kl-weight", float)):
        experiment.add_argument(option, type=kind, default=None)
    experiment.add_argument("--estimator", choices=["lrt", "weights", "auto"], default=None,
                            help="the BNN's local_reparameterization (default: local reparameterisation everywhere, "
                                 "the estimator of the cached fits)")
    experiment.add_argument("--prior-args", default=None, help='JSON, e.g. \'{"log_alpha_threshold": -2}\'')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/compression_targets.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.row == "reference":
        return run_reference(args.seed, command)
    if args.row == "demo":
        return run_demo_row(args.seed, command)
    row = ROWS[args.row]
    changed = with_overrides(row, args)
    if changed != row and not args.tag:
        parser.error("settings other than the row's need --tag (the headline figures keep the row's settings)")
    if changed.kl_weight != 1.0 and not 0 < changed.kl_weight < 1:
        parser.error("--kl-weight must lie in (0, 1]")
    return run_row(args.row, changed, args.seed, args.refit, args.tag, command)


if __name__ == "__main__":
    main()
