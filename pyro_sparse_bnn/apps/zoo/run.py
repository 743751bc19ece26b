"""Running a zoo entry end to end: fit, evaluate, compress, train the baselines with the same
budget, write the metrics, plots and card."""

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch

from ...analysis import plots
from ...analysis.calibration import accuracy
from ...analysis.compress import compress
from ...analysis.diagnostics import layer_variables, to_inference_data
from ...analysis.finetune import finetune
from ...analysis.frontier import frontier
from ...analysis.self_compression import self_compress
from ...core import priors as prior_module
from ...core.errors import SparseBNNError
from ...core.fit import fit
from ...core.network import SparseBNN
from ...core.progress import show_progress
from ...core.validation import check_positive_int
from .. import datasets
from ..baselines import train_deterministic
from ..environment import environment
from . import stored
from .cards import plural, render_card
from .entries import (
    SMOKE,
    ZooConfigError,
    ZooEntry,
    build_likelihood,
    build_net,
    build_prior,
    load_data,
    load_entry,
    output_width,
)


# -- evaluation ----------------------------------------------------------------------------------
def _score(outputs: torch.Tensor, y: torch.Tensor, data: datasets.DataSplit) -> float:
    """Accuracy of logits/probabilities ``(n, classes)``, or RMSE of predictions ``(n,)`` /
    ``(n, 1)`` in the data's original units."""
    if data.task == "classification":
        return accuracy(outputs, y)
    rmse = float((outputs.reshape(y.shape) - y).square().mean().sqrt())
    return rmse * data.info.get("target_std", 1.0)


def _metric_name(data: datasets.DataSplit) -> str:
    return "accuracy" if data.task == "classification" else "rmse"


def _predict_score(bnn: SparseBNN, x, y, data, num_samples: int):
    """``(score, prediction)`` of the posterior predictive from ``num_samples`` draws."""
    prediction = bnn.predict(x, num_samples=num_samples, batch_size=2000)
    return _score(prediction.mean, y, data), prediction


def _feature_selection(kept: torch.Tensor, relevant: Sequence[int], num_features: int) -> dict:
    kept = set(int(i) for i in kept.flatten().tolist())
    relevant = set(relevant)
    irrelevant = num_features - len(relevant)
    return {
        "selected": sorted(kept),
        "relevant": sorted(relevant),
        "false_negative_rate": len(relevant - kept) / max(len(relevant), 1),
        "false_positive_rate": len(kept - relevant) / max(irrelevant, 1),
    }


def _compression_row(bnn: SparseBNN, data, threshold: Optional[float]) -> tuple:
    module, report = compress(bnn, threshold=threshold)
    with torch.no_grad():
        score = _score(module(data.x_test), data.y_test, data)
    summary = report.as_dict()
    row = {
        "threshold": threshold if threshold is not None else min(layer.default_threshold for layer in bnn.layers),
        "keep_rule": threshold is None,
        _metric_name(data): score,
        "architecture_before": summary["architecture_before"],
        "architecture_after": summary["architecture_after"],
        "params_before": report.params_before,
        "nonzero_params_after": report.nonzero_params_after,
        "weights_kept": report.nonzero_params_after / report.params_before,
        "flops_kept": report.nonzero_flops_after / report.flops_before,
        "architecture_compression": report.weight_compression or report.architecture_compression,
        "bit_compression": report.bit_compression,
        "bits_per_weight": None if report.precision is None else [p.bits_per_weight for p in report.precision],
    }
    if data.relevant_features is not None:
        row["feature_selection"] = _feature_selection(report.kept_features, data.relevant_features,
                                                      data.num_features)
    return module, row


# -- baselines -------------------------------------------------------------------------------------
def _fit_options(train: dict, epochs: int, batch_size: int, progress: bool, prior_specific: bool) -> dict:
    options = {"epochs": epochs, "batch_size": batch_size, "lr": train["lr"], "lr_decay": train["lr_decay"],
               "kl_warmup": train["kl_warmup"], "seed": train["seed"], "progress": progress}
    if prior_specific:
        options.update(logit_lr=train["logit_lr"], indicator_warmup=min(train["indicator_warmup"], epochs - 1),
                       temperature=train["temperature"])
    return options


#: the sections that decide what a run measures (the others are prose for the card)
RUN_SECTIONS = ("data", "model", "prior", "likelihood", "train", "compress", "baselines", "choose",
                "self_compress")


#: keys renamed since results were first stored, ``{section: {new name: old name}}``: hashed
#: under their old names, so a renamed key that means the same thing keeps the fingerprint
#: (and the stored results of ``models/results/`` stay valid)
HASHED_AS = {"model": {"hidden_widths": "widths"}}


def _hashed_section(config: dict, name: str) -> dict:
    renames = HASHED_AS.get(name, {})
    return {renames.get(key, key): value for key, value in config[name].items()}


def run_fingerprint(entry: ZooEntry) -> str:
    """SHA-256 of the checked sections that decide what a run measures, stored with the
    metrics so that a card's numbers can be checked to come from the entry's current config
    (the card's prose -- ``[entry]``, ``[budget]``, ``[published]`` -- may change without a
    rerun). Keys are hashed under the names of :data:`HASHED_AS`: ``hidden_widths = [32, 16]``
    hashes as the ``widths = [32, 16]`` it was called before, which meant the same network."""
    sections = {name: _hashed_section(entry.config, name) for name in RUN_SECTIONS}
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def _baseline_key(entry: ZooEntry, schedule: dict, smoke: bool) -> str:
    """Baselines depend on the data, architecture, likelihood and budget, not on the prior:
    entries that share these share their baselines (see ``baseline_cache`` of
    :func:`run_entry`)."""
    train = {k: v for k, v in entry.config["train"].items()
             if k not in ("logit_lr", "indicator_warmup", "temperature")}
    key = {"data": entry.config["data"], "model": _hashed_section(entry.config, "model"),
           "likelihood": entry.config["likelihood"],
           "train": {**train, **schedule}, "baselines": entry.config["baselines"], "smoke": smoke}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _run_baselines(entry, data, make_net, schedule, progress, echo) -> dict:
    config = entry.config
    train, baselines = config["train"], config["baselines"]
    task = data.task
    # the dense network gets the whole budget of the chosen network: the fit and its fine-tuning
    dense_epochs = schedule["epochs"] + schedule["finetune_epochs"]
    dense = train_deterministic(
        make_net(), data.x_train, data.y_train, task=task, epochs=dense_epochs,
        batch_size=schedule["batch_size"], lr=baselines["deterministic_lr"], seed=train["seed"],
    )
    with torch.no_grad():
        dense_score = _score(dense.module(data.x_test), data.y_test, data)
    metric = _metric_name(data)
    results = {"deterministic": {metric: dense_score, "seconds": dense.seconds, "epochs": dense_epochs,
                                 "lr": baselines["deterministic_lr"],
                                 "params": sum(p.numel() for p in dense.module.parameters())}}
    echo(f"dense deterministic baseline: test {metric} {dense_score:.4f} ({dense.seconds:.0f} s)")
    if baselines["gaussian"]:
        prior = prior_module.SelfCompressingGaussian(prior_scale=baselines["gaussian_prior_scale"])
        bnn = SparseBNN(make_net(), prior, likelihood=build_likelihood(config["likelihood"]),
                        num_data=len(data.x_train))
        start = time.perf_counter()
        history = fit(bnn, data.x_train, data.y_train,
                      **_fit_options(train, schedule["epochs"], schedule["batch_size"], progress, False))
        seconds = time.perf_counter() - start
        score, _ = _predict_score(bnn, data.x_test, data.y_test, data, schedule["predict_samples"])
        results["gaussian_bnn"] = {metric: score, "seconds": seconds, "num_steps": history.num_steps,
                                   "prior": repr(prior)}
        echo(f"dense Gaussian BNN baseline: test {metric} {score:.4f} ({seconds:.0f} s)")
    return results


# -- plots -------------------------------------------------------------------------------------------
def _save_plots(bnn, history, prediction, data, out: Path, echo) -> List[str]:
    written = []

    def save(name, make):
        try:
            _save_figure(out / name, make)
        except (SparseBNNError, ValueError, NotImplementedError) as error:  # a plot a prior cannot give
            echo(f"skipped {name}: {error}")
            return
        written.append(name)

    save("elbo.png", lambda: plots.plot_elbo(history))
    save("inclusion_heatmap.png", lambda: plots.plot_inclusion_heatmap(bnn))
    if data.task == "classification":
        save("reliability.png", lambda: plots.plot_reliability_diagram(prediction.probs, data.y_test))
    hidden_units = sum(bnn.architecture.widths[1:-1])
    if hidden_units + bnn.num_inputs <= 300 or any(hasattr(layer, "scales") for layer in bnn.layers):
        # draws of the guide for the forest plot and the group scales (no data needed)
        idata = to_inference_data(bnn, num_samples=50, feature_names=None, progress=False)
        if hidden_units + bnn.num_inputs <= 300:  # one row per unit: unreadable beyond that
            save("inclusion_forest.png", lambda: plots.plot_inclusion_forest(idata))
        scales = layer_variables(idata, "group_scale")
        if scales and sum(idata.posterior[v].shape[-1] for v in scales.values()) <= 1000:
            # one box per group: beyond a few hundred boxes matplotlib takes minutes
            save("group_scales.png", lambda: plots.plot_group_scales(idata))
    return written


# -- choosing the stored network -------------------------------------------------------------------
def _self_compress(bnn, data, options: dict, schedule: dict, train: dict, progress, echo):
    """The prune-and-refit loop of :func:`~pyro_sparse_bnn.analysis.self_compression.self_compress`:
    ``(smaller bnn, rounds for the metrics)``."""
    result = self_compress(
        bnn, (data.x_train, data.y_train), (data.x_val, data.y_val), fraction=options["fraction"],
        rounds=options["rounds"], epochs=options["epochs"], tolerance=options["tolerance"],
        num_samples=schedule["predict_samples"],
        fit_kwargs=dict(batch_size=schedule["batch_size"], lr=train["lr"], lr_decay=train["lr_decay"],
                        seed=train["seed"]),
        progress=progress)
    rounds = [{"round": r.round, "kept_units": list(r.kept_units), "num_params": r.num_params,
               "validation_" + r.metric_name: r.metric, "accepted": r.accepted} for r in result.history]
    echo(f"self-compression: {len(rounds) - 1} rounds, hidden units "
         f"{' -> '.join('-'.join(map(str, r['kept_units'])) for r in rounds if r['accepted'])}")
    return result.bnn, rounds


def _choose(entry: ZooEntry, bnn: SparseBNN, data, schedule: dict, smoke: bool, dense_params: int, progress,
            out: Path, echo) -> dict:
    """The network the entry stores: the smallest of the frontier within ``[choose] tolerance``
    of the posterior on validation data, fine-tuned with the best validation epoch kept.
    Writes the frontier plot and the stored files into ``out``; returns the ``chosen`` metrics
    (sizes relative to the ``dense_params`` parameters of the network the entry fitted)."""
    config = entry.config
    choose, train = config["choose"], config["train"]
    if data.x_val is None:
        raise ZooConfigError(f"{entry.path}: the network is chosen on validation data; give [data] a "
                             "validation split (val_size or n_val)")
    metric = _metric_name(data)
    chosen = {"tolerance": choose["tolerance"]}
    if config["self_compress"]:
        options = {**config["self_compress"], "rounds": 2, "epochs": 1} if smoke else config["self_compress"]
        bnn, chosen["self_compress"] = _self_compress(bnn, data, options, schedule, train, progress, echo)
    front = frontier(bnn, data.x_val, data.y_val, num_samples=schedule["predict_samples"], batch_size=2000)
    if not front.table.degenerate.all():  # never store a network whose output ignores its input
        front = dataclasses.replace(front, table=front.table[~front.table.degenerate])
    tolerance = choose["tolerance"]
    if choose["rule"] == "posterior" and front.selected_index(tolerance) is None:
        # compressed networks can beat or trail the posterior predictive on small validation sets
        tolerance = front.tolerance_for_best()
    if tolerance != choose["tolerance"]:
        echo(f"no network of the frontier is within {choose['tolerance']:g} of the posterior on validation "
             f"data; choosing the best one (tolerance {tolerance:.4g})")
    chosen["tolerance_used"] = tolerance
    epochs = schedule["finetune_epochs"]

    compressed_at, tuned_at = {}, {}  # the search's compressions and fine-tunings are reused

    def compressed(threshold):
        if repr(threshold) not in compressed_at:
            compressed_at[repr(threshold)] = compress(bnn, threshold=threshold)
        return compressed_at[repr(threshold)]

    def tune(threshold, epochs):
        key = (repr(threshold), epochs)
        if key not in tuned_at:  # finetune trains a copy: the compressed module stays as it was
            tuned_at[key] = finetune(compressed(threshold)[0], data.x_train, data.y_train, task=data.task, epochs=epochs,
                                     batch_size=choose["finetune_batch_size"], lr=choose["finetune_lr"],
                                     lr_decay=choose["finetune_lr_decay"], seed=train["seed"], x_val=data.x_val,
                                     y_val=data.y_val, restore_best=True, progress=progress)
        return tuned_at[key]

    if choose["rule"] == "finetuned":
        search_epochs = 1 if smoke else choose["search_epochs"]
        threshold, reason, chosen["search"] = _search(front, tolerance, data, tune, search_epochs, echo)
    else:
        choice = front.select(tolerance)
        threshold, reason = choice.threshold, choice.reason
    module, report = compressed(threshold)
    with torch.no_grad():
        before = _score(module(data.x_test), data.y_test, data)
    tuned = tune(threshold, epochs)
    final = tuned.module.eval()
    with torch.no_grad():
        after = _score(final(data.x_test), data.y_test, data)
        val_after = _score(final(data.x_val), data.y_val, data)
    summary = report.as_dict()
    chosen.update({
        "rule": choose["rule"],
        "threshold": list(threshold) if isinstance(threshold, tuple) else threshold,
        "reason": reason,
        "architecture_after": summary["architecture_after"],
        "num_inputs_kept": int(report.kept_features.numel()) if report.kept_features is not None
        else int(bnn.num_inputs),
        "params_before": dense_params,
        "nonzero_params_after": report.nonzero_params_after,
        "weights_kept": report.nonzero_params_after / dense_params,
        "parameter_compression": dense_params / max(report.nonzero_params_after, 1),
        # the report's rates compare with the network compress was given, the self-compressed
        # one after the loop: comparable with the other entries only without the loop
        "bit_compression": None if config["self_compress"] else report.bit_compression,
        metric: before,
        "finetuned_" + metric: after,
        "validation_finetuned_" + metric: val_after,
        "finetune": {"epochs": epochs, "lr": choose["finetune_lr"], "lr_decay": choose["finetune_lr_decay"],
                     "batch_size": choose["finetune_batch_size"], "best_epoch": tuned.history.best_epoch},
    })
    if data.relevant_features is not None:
        chosen["feature_selection"] = _feature_selection(report.kept_features, data.relevant_features,
                                                         data.num_features)
    echo(f"chosen on the frontier: {chosen['architecture_after']} ({100 * chosen['weights_kept']:.1f} % of the "
         f"parameters), test {metric} {before:.4f}, fine-tuned {after:.4f}")
    chosen["files"] = stored.write_result(out, final, bnn, data.x_test)
    if choose["rule"] == "finetuned":
        _save_figure(out / stored.FRONTIER_FILE,
                     lambda: _plot_search(front, chosen["search"], chosen["architecture_after"], search_epochs,
                                          tolerance))
    else:
        _save_figure(out / stored.FRONTIER_FILE, lambda: plots.plot_frontier(front, tolerance))
    chosen["files"]["frontier"] = stored.FRONTIER_FILE
    evaluation = stored.evaluation_name(config["data"])
    x_eval, y_eval = stored.write_evaluation(out / evaluation, data.x_test, data.y_test)
    with torch.no_grad():
        chosen["evaluation"] = {"file": "evaluation/" + evaluation, "examples": len(y_eval),
                                metric: _score(final(x_eval), y_eval, data)}
    return chosen


def _search(front, tolerance: float, data, tune, epochs: int, echo):
    """The smallest network of the frontier whose validation metric *after* ``epochs`` epochs of
    fine-tuning is within ``tolerance`` of the reference: the better of the posterior
    predictive and the frontier's largest network after the same fine-tuning (for priors
    whose posterior predictive trails a fine-tuned network, the posterior alone would be too
    low a bar). A bisection over the frontier's networks ordered by size: fine-tuning recovers
    much of what compression loses, so this finds far smaller networks than judging them as
    compressed. ``tune(threshold, epochs)``
    compresses the fitted network at ``threshold`` and fine-tunes it. ``(threshold, reason,
    probes)``."""
    # the caller has dropped the networks whose output ignores the input (unless all do)
    table = front.table.sort_values(["nonzero_params", "params"], kind="stable")
    table = table.drop_duplicates("nonzero_params", keep="last")
    rows = list(table.itertuples())
    accuracy = front.metric == "accuracy"
    scale = 1.0 if accuracy else data.info.get("target_std", 1.0)  # the frontier's RMSE is in model units
    probes = {}

    def measure(index):
        row = rows[index]
        tuned = tune(front.threshold_at(row.Index), epochs).module.eval()
        with torch.no_grad():
            value = _score(tuned(data.x_val), data.y_val, data) / scale
        probes[index] = {"architecture": row.architecture, "nonzero_params": int(row.nonzero_params),
                         "validation_" + front.metric: value}
        return value

    largest = measure(len(rows) - 1)
    reference = max(front.posterior_metric, largest) if accuracy else min(front.posterior_metric, largest)
    limit = reference - tolerance if accuracy else reference * (1 + tolerance)

    def passes(index):
        value = probes[index]["validation_" + front.metric] if index in probes else measure(index)
        ok = value >= limit - 1e-9 if accuracy else value <= limit + 1e-9
        probes[index]["within"] = bool(ok)
        echo(f"  fine-tuned {rows[index].architecture} ({int(rows[index].nonzero_params):,} parameters) for "
             f"{plural(epochs, 'epoch')}: validation {front.metric} {value:.4f} ({'within' if ok else 'outside'} "
             f"the tolerance of {reference:.4f})")
        return ok

    passes(len(rows) - 1)
    low, high = 0, len(rows) - 1
    while low < high:  # the smallest passing index, if the passing networks are the larger ones
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle + 1
    row = rows[low]
    whose = "posterior predictive's" if reference == front.posterior_metric else "largest network's"
    bound = front.describe_bound(tolerance, reference, whose)
    reason = (f"smallest network {bound}, judged after {plural(epochs, 'epoch')} of fine-tuning ({len(probes)} of the "
              f"frontier's {len(rows)} networks fine-tuned to find it; {int(row.nonzero_params):,} of "
              f"{front.params_before:,} parameters)")
    return front.threshold_at(row.Index), reason, [probes[i] for i in sorted(probes)]


def _plot_search(front, probes: List[dict], architecture: str, epochs: int, tolerance: float):
    """The frontier (as compressed) with the networks the search fine-tuned, after
    fine-tuning, and the chosen one marked."""
    fig = plots.plot_frontier(front, tolerance=None)
    ax = fig.axes[0]
    key = "validation_" + front.metric
    ax.plot([p["nonzero_params"] for p in probes], [p[key] for p in probes], "^", color="C2", markersize=8,
            label=f"after {plural(epochs, 'epoch')} of fine-tuning")
    within = [p[key] for p in probes if p["within"]]
    if within:  # the limit lies between the worst passing and the best failing network
        ax.axhline(min(within) if front.metric == "accuracy" else max(within), color="C2", linestyle=":",
                   label=f"worst network within the tolerance ({tolerance:g}) after fine-tuning")
    for probe in probes:
        if probe["architecture"] == architecture:
            ax.plot([probe["nonzero_params"]], [probe[key]], "*", markersize=16, color="C3",
                    label=f"chosen: {architecture}, {probe['nonzero_params']:,} parameters")
    ax.legend(fontsize="small")
    ax.set_title(f"{ax.get_title()}, and after fine-tuning")
    return fig


def _save_figure(path: Path, make) -> None:
    """Draw the figure ``make()`` returns into ``path`` (PNG, 90 dpi) and close it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = make()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- running -----------------------------------------------------------------------------------------
def run_entry(
    entry,
    output=None,
    *,
    epochs: Optional[int] = None,
    smoke: bool = False,
    data_dir=None,
    progress: Optional[bool] = None,
    publish: bool = False,
    baseline_cache=None,
    command: Optional[str] = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run a zoo entry end to end and write its outputs.

    :param entry: a :class:`ZooEntry` or the path of its TOML file.
    :param output: output directory (default ``zoo_output/<name>``; ``smoke`` runs add
        ``-smoke``).
    :param epochs: override ``[train] epochs`` (the baselines get the same budget).
    :param bool smoke: a few steps on a small slice of every split (:data:`SMOKE`), to check
        that the entry runs; nothing measured is meaningful.
    :param data_dir: directory of the IDX files for ``fashion_mnist`` entries.
    :param progress: tqdm progress bars with the ELBO; ``None`` (the default) draws them only
        where someone watches, a terminal or a notebook
        (:func:`~pyro_sparse_bnn.core.progress.show_progress`), ``True`` / ``False`` always or
        never.
    :param bool publish: also write ``<models>/results/<name>.json`` and rewrite the card
        ``<models>/<name>.md`` (not allowed with ``smoke``).
    :param baseline_cache: directory in which baseline results are stored by
        :func:`_baseline_key`, so entries that share data, architecture and budget train
        their baselines once (``None``: always train them).
    :param command: the command line to print in the card (default: rebuilt from the
        arguments).
    :returns: the metrics dict that is written to ``metrics.json``.
    """
    entry = entry if isinstance(entry, ZooEntry) else load_entry(entry)
    progress = show_progress(progress)  # decided once: the fits and the baselines agree
    if publish and smoke:
        raise ZooConfigError("--publish stores measured results; a --smoke run measures nothing")
    config = entry.config
    train = config["train"]
    if epochs is not None:
        epochs = check_positive_int("--epochs", epochs, ZooConfigError)
    schedule = {
        "epochs": SMOKE["epochs"] if smoke else int(epochs or train["epochs"]),
        "batch_size": min(train["batch_size"], SMOKE["batch_size"]) if smoke else train["batch_size"],
        "predict_samples": SMOKE["predict_samples"] if smoke else train["predict_samples"],
        "finetune_epochs": 1 if smoke else config["choose"]["finetune_epochs"],
    }
    out = Path(output) if output is not None else Path("zoo_output") / (entry.name + ("-smoke" if smoke else ""))
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        parts = ["python -m pyro_sparse_bnn run", str(entry.path)]
        if epochs is not None:
            parts.append(f"--epochs {epochs}")
        if smoke:
            parts.append("--smoke")
        command = " ".join(parts)
    start = time.perf_counter()

    data = load_data(entry, smoke=smoke, data_dir=data_dir)
    num_outputs = output_width(data)
    metric = _metric_name(data)

    def make_net():
        torch.manual_seed(train["seed"])
        return build_net(config["model"], data.num_features, num_outputs)

    prior = build_prior(config["prior"])
    bnn = SparseBNN(make_net(), prior, likelihood=build_likelihood(config["likelihood"]),
                    num_data=len(data.x_train))
    widths = "-".join(map(str, bnn.architecture.widths))
    echo(f"{entry.name}: {config['data']['name']} ({len(data.x_train)} training, "
         f"{0 if data.x_val is None else len(data.x_val)} validation, {len(data.x_test)} test examples), "
         f"{config['model']['architecture']} {widths}, {prior}, {plural(schedule['epochs'], 'epoch')} of batch "
         f"{schedule['batch_size']}" + (" [smoke]" if smoke else ""))

    fit_start = time.perf_counter()
    history = fit(bnn, data.x_train, data.y_train,
                  **_fit_options(train, schedule["epochs"], schedule["batch_size"], progress, True))
    fit_seconds = time.perf_counter() - fit_start
    echo(f"fitted {plural(history.num_steps, 'step')} in {fit_seconds:.1f} s; final ELBO {history.elbo[-1]:.4g}")

    bnn_score, prediction = _predict_score(bnn, data.x_test, data.y_test, data, schedule["predict_samples"])
    results = {"bnn": {metric: bnn_score, "predict_samples": schedule["predict_samples"]}}
    if data.x_val is not None:
        results["bnn"]["validation_" + metric], _ = _predict_score(
            bnn, data.x_val, data.y_val, data, schedule["predict_samples"])
    echo(f"BNN posterior predictive: test {metric} {bnn_score:.4f}")

    _, keep_rule = _compression_row(bnn, data, None)
    sweep = [_compression_row(bnn, data, t)[1] for t in config["compress"]["thresholds"]]
    echo(f"compressed (keep rule): test {metric} {keep_rule[metric]:.4f}, {keep_rule['architecture_before']} -> "
         f"{keep_rule['architecture_after']}, {100 * keep_rule['weights_kept']:.2f} % of the parameters kept")

    if prior_module.SelfCompressingGaussian is type(prior) and config["baselines"]["gaussian"]:
        baseline_config = {**config["baselines"], "gaussian": False}
        entry_for_baselines = ZooEntry(entry.name, entry.path, entry.text, {**config, "baselines": baseline_config})
    else:
        entry_for_baselines = entry
    key = _baseline_key(entry_for_baselines, schedule, smoke)
    cache_file = None if baseline_cache is None else Path(baseline_cache) / f"{key}.json"
    if cache_file is not None and cache_file.exists():
        baselines = json.loads(cache_file.read_text())
        trained_by = baselines.pop("trained_by", None)
        if trained_by != entry.name:  # a rerun of the same entry shares nothing
            baselines["shared_from"] = trained_by
        echo(f"baselines reused from {cache_file} (trained by entry {trained_by})")
    else:
        baselines = _run_baselines(entry_for_baselines, data, make_net, schedule, progress, echo)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps({**baselines, "trained_by": entry.name}, indent=2))
    if entry_for_baselines is not entry:
        baselines["gaussian_bnn"] = {metric: bnn_score, "seconds": fit_seconds, "same_as_entry": True}
    baselines["key"] = key

    chosen = _choose(entry, bnn, data, schedule, smoke, keep_rule["params_before"], progress, out, echo)
    plot_files = _save_plots(bnn, history, prediction, data, out, echo)
    metrics = {
        "entry": entry.name,
        "config": str(entry.path),
        "run_config_sha256": run_fingerprint(entry),
        "command": command,
        "smoke": smoke,
        "task": data.task,
        "metric": metric,
        "data": {"name": config["data"]["name"], "n_train": len(data.x_train),
                 "n_val": 0 if data.x_val is None else len(data.x_val), "n_test": len(data.x_test),
                 "num_features": data.num_features, "noise_scale": data.noise_scale,
                 "target_std": data.info.get("target_std")},
        "schedule": {**schedule, "batch_size": schedule["batch_size"], "num_steps": history.num_steps},
        "prior": repr(prior),
        "architecture": widths,
        **results,
        "compressed": keep_rule,
        "threshold_sweep": sweep,
        "chosen": chosen,
        "baselines": baselines,
        "elbo": {"first": history.elbo[0], "last": history.elbo[-1]},
        "timing": {"fit_seconds": fit_seconds, "seconds_per_step": fit_seconds / max(history.num_steps, 1),
                   "total_seconds": time.perf_counter() - start},
        "plots": plot_files,
        "environment": environment(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "card.md").write_text(render_card(entry, metrics, stored_dir="."))
    echo(f"wrote {out / 'metrics.json'}, {out / 'card.md'}, the chosen module ({chosen['files']['module']}) "
         f"and {len(plot_files)} plots in {out}")
    if publish:
        _publish(entry, metrics, out)
        echo(f"published {entry.results_path}, {entry.stored_dir} and {entry.card_path}")
    return metrics


def _publish(entry: ZooEntry, metrics: dict, out: Path) -> None:
    """Copy the metrics, the chosen module's files and the evaluation inputs next to the entry
    and rewrite its card."""
    import shutil

    directory = entry.stored_dir
    if directory.exists():  # the entry's own directory: files of an earlier run go
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name in metrics["chosen"]["files"].values():
        shutil.copyfile(out / name, directory / name)
    evaluation = metrics["chosen"]["evaluation"]["file"]
    target = entry.results_path.parent / evaluation
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / Path(evaluation).name, target)
    entry.results_path.write_text(json.dumps(metrics, indent=2))
    entry.card_path.write_text(render_card(entry, metrics))
