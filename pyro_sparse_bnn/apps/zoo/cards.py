"""Model cards and the zoo table: what a run measured, beside the published figures."""

import shlex
from pathlib import Path
from typing import List, Optional, Sequence

from .entries import PRIOR_ABBREVIATIONS, PUBLISHED_FIGURES, ZooEntry, find_entries, load_entry


# -- rendering ---------------------------------------------------------------------------------------
def plural(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``: a count and its noun, in the singular for one."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _fmt(value, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "accuracy":
        return f"{value:.4f}"
    if kind == "rmse":
        return f"{value:.3f}"
    if kind == "fraction":
        return f"{100 * value:.1f} %"
    if kind == "rate":
        return f"{value:.1f}x"
    if kind == "seconds":
        return f"{value / 60:.1f} min" if value >= 120 else f"{value:.0f} s"
    return str(value)


def render_card(entry: ZooEntry, metrics: Optional[dict] = None, stored_dir: Optional[str] = None) -> str:
    """The model card of ``entry`` as markdown, with ``metrics`` of a run (``None``: the
    stored ones, or "not yet measured").

    :param stored_dir: where the card finds the stored files (frontier plot, module), relative
        to the card: ``results/<entry>`` for the card next to the entry (default), ``.`` for
        the card in a run's output directory.
    """
    stored_dir = f"results/{entry.name}" if stored_dir is None else stored_dir
    metrics = entry.stored_metrics() if metrics is None else metrics
    config = entry.config
    prior = config["prior"]["name"]
    title = config["entry"].get("title") or f"{PRIOR_ABBREVIATIONS[prior]} on {config['data']['name']}"
    publish_command = f"python -m pyro_sparse_bnn run models/{entry.name}.toml --publish"
    lines = [f"# {title}", ""]
    if config["entry"].get("description"):
        lines += [config["entry"]["description"].strip(), ""]
    lines += [f"Entry `{entry.name}`: prior `{prior}` ({PRIOR_ABBREVIATIONS[prior]}), data "
              f"`{config['data']['name']}`, architecture `{config['model']['architecture']}`. "
              "Reproduce (fit, evaluation, compression, both baselines, plots; `--output DIR` "
              "chooses where the outputs go):", "", "```bash", publish_command, "```", ""]
    lines += ["## Results", ""]
    if metrics is None:
        lines += ["**Not yet measured.** Run the command above to fill in this section.", ""]
    else:
        metric = metrics["metric"]
        kind = "accuracy" if metric == "accuracy" else "rmse"
        label = "test accuracy" if metric == "accuracy" else "test RMSE"
        if metric == "rmse" and metrics["data"].get("target_std"):
            label += " (original units)"
        compressed, baselines = metrics["compressed"], metrics["baselines"]
        schedule = metrics["schedule"]
        if metrics.get("smoke"):
            lines += ["**Smoke run: a few steps on a small slice; the numbers mean nothing.**", ""]
        lines += [
            f"Measured on this machine ({metrics['environment']['machine']}, "
            f"{plural(metrics['environment']['threads'], 'torch thread')}, torch {metrics['environment']['torch']}) with "
            f"`{card_command(metrics['command'])}`: {plural(schedule['epochs'], 'epoch')} of batch {schedule['batch_size']} "
            f"({plural(schedule['num_steps'], 'SVI step')}) on {plural(metrics['data']['n_train'], 'training example')}, "
            f"evaluated on {plural(metrics['data']['n_test'], 'test example')}.", "",
            "| model | " + label + " | kept architecture | weights kept | architecture compression "
            "| bit compression | training time |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {PRIOR_ABBREVIATIONS[prior]} BNN, posterior predictive ({metrics['bnn']['predict_samples']} draws) "
            f"| {_fmt(metrics['bnn'][metric], kind)} | {compressed['architecture_before']} | 100 % | | | "
            f"{_fmt(metrics['timing']['fit_seconds'], 'seconds')} |",
            f"| compressed module (keep rule, PIP > {compressed['threshold']:.3g}) | "
            f"{_fmt(compressed[metric], kind)} | {compressed['architecture_after']} | "
            f"{_fmt(compressed['weights_kept'], 'fraction')} | {_fmt(compressed['architecture_compression'], 'rate')} "
            f"| {_fmt(compressed['bit_compression'], 'rate')} | |",
        ]
        for row in metrics.get("threshold_sweep", []):
            lines.append(
                f"| compressed module, PIP > {row['threshold']:.3g} | {_fmt(row[metric], kind)} | "
                f"{row['architecture_after']} | {_fmt(row['weights_kept'], 'fraction')} | "
                f"{_fmt(row['architecture_compression'], 'rate')} | {_fmt(row['bit_compression'], 'rate')} | |")
        dense = baselines.get("deterministic")
        if dense:
            lines.append(f"| baseline: dense deterministic network (Adam, lr {dense['lr']:g}) | "
                         f"{_fmt(dense[metric], kind)} | {compressed['architecture_before']} | 100 % | | | "
                         f"{_fmt(dense['seconds'], 'seconds')} |")
        gaussian = baselines.get("gaussian_bnn")
        if gaussian:
            itself = " (this entry's own BNN)" if gaussian.get("same_as_entry") else ""
            lines.append(f"| baseline: dense mean-field Gaussian BNN (`SelfCompressingGaussian`, no pruning){itself} | "
                         f"{_fmt(gaussian[metric], kind)} | {compressed['architecture_before']} | 100 % | | | "
                         f"{_fmt(gaussian['seconds'], 'seconds')} |")
        lines.append("")
        if metrics.get("chosen"):
            lines += _chosen_section(entry, metrics, kind, label, stored_dir)
        if "validation_" + metric in metrics["bnn"]:
            lines += [f"Validation {'accuracy' if metric == 'accuracy' else 'RMSE'} of the BNN: "
                      f"{_fmt(metrics['bnn']['validation_' + metric], kind)} "
                      f"({plural(metrics['data']['n_val'], 'example')}).", ""]
        selection = compressed.get("feature_selection")
        if selection:
            names = ", ".join(f"x{i + 1}" for i in selection["selected"]) or "none"
            lines += [f"Feature selection (relevant inputs: "
                      f"{', '.join(f'x{i + 1}' for i in selection['relevant'])}): the compressed module keeps "
                      f"{names}; false negative rate {selection['false_negative_rate']:.2f}, false positive "
                      f"rate {selection['false_positive_rate']:.3f}.", ""]
        if compressed.get("bits_per_weight"):
            lines += [f"Bits per weight of the kept weights, layer by layer: "
                      f"{', '.join(map(str, compressed['bits_per_weight']))}.", ""]
        if baselines.get("shared_from"):
            lines += [f"The baselines were trained once, by entry `{baselines['shared_from']}`, with the same "
                      "data, split, architecture, initial weights and budget, and are shared.", ""]
        lines += [f"Total time of the run (fit, evaluation, baselines, plots): "
                  f"{_fmt(metrics['timing']['total_seconds'], 'seconds')}; "
                  f"{1e3 * metrics['timing']['seconds_per_step']:.1f} ms per SVI step (wall-clock on a 2-core machine "
                  "shared with other jobs: times vary severalfold between runs). Plots in the output directory: "
                  f"{', '.join(metrics.get('plots', [])) or 'none'}.", ""]
    lines += ["## Budget", ""]
    schedule_text = config["budget"].get("full_schedule")
    lines += [f"This entry runs {plural(config['train']['epochs'], 'epoch')} of batch {config['train']['batch_size']}: a "
              "budget for the 2-core CPU machine the zoo was measured on, not the published schedule."
              + (f" The full schedule: {schedule_text.strip()}" if schedule_text else ""),
              "Pass `--epochs N` to train longer; the baselines get the same budget.", ""]
    lines += _published_section(config, metrics)
    if config["entry"].get("notes"):
        lines += ["## Notes", "", config["entry"]["notes"].strip(), ""]
    lines += ["## Configuration", "", f"`models/{entry.name}.toml`:", "", "```toml", entry.text.rstrip(), "```", ""]
    return "\n".join(lines)

def _chosen_section(entry: ZooEntry, metrics: dict, kind: str, label: str, stored_dir: str) -> List[str]:
    """The stored network: how it was chosen, before and after fine-tuning, against the dense
    network and the entry's tolerance, and how to load it."""
    metric, chosen = metrics["metric"], metrics["chosen"]
    dense = metrics["baselines"].get("deterministic", {})
    tuning = chosen["finetune"]
    lines = ["### The stored network", ""]
    if chosen.get("self_compress"):
        kept = [r for r in chosen["self_compress"] if r["accepted"]]
        lines += [f"First the prune-and-refit loop (`self_compress`): {plural(len(chosen['self_compress']) - 1, 'round')}, "
                  f"hidden units {' -> '.join('-'.join(map(str, r['kept_units'])) for r in kept)} "
                  f"(the loop stops at the first round that raises the validation loss by more than its tolerance, and "
                  f"undoes that round).", ""]
    tolerance = chosen.get("tolerance_used", chosen["tolerance"])
    if chosen.get("rule") == "finetuned":
        how = ("Chosen on the frontier of validation data (`psb.frontier(bnn, x_val, y_val)`), judging its networks "
               f"after a short fine-tuning: the {chosen['reason']}.")
    else:
        how = (f"Chosen on the frontier of validation data (`psb.frontier(bnn, x_val, y_val).select({tolerance:.3g})`): "
               f"the {chosen['reason']}.")
    lines += [f"{how} Then fine-tuned for {plural(tuning['epochs'], 'epoch')} (`psb.finetune`, Adam "
              f"at {tuning['lr']:g} decaying {1 / tuning['lr_decay']:g}-fold, batch {tuning['batch_size']}), keeping "
              f"the best validation epoch ({tuning['best_epoch']}).", "",
              f"| network | {label} | architecture | parameters kept | parameter compression |",
              "| --- | --- | --- | --- | --- |",
              f"| chosen, before fine-tuning | {_fmt(chosen[metric], kind)} | {chosen['architecture_after']} | "
              f"{_fmt(chosen['weights_kept'], 'fraction')} | {_fmt(chosen['parameter_compression'], 'rate')} |",
              f"| **chosen, fine-tuned (stored)** | **{_fmt(chosen['finetuned_' + metric], kind)}** | "
              f"{chosen['architecture_after']} | {_fmt(chosen['weights_kept'], 'fraction')} | "
              f"{_fmt(chosen['parameter_compression'], 'rate')} |"]
    if dense:
        lines.append(f"| dense network, {plural(dense.get('epochs', metrics['schedule']['epochs']), 'epoch')} "
                     f"| {_fmt(dense[metric], kind)} | {metrics['compressed']['architecture_before']} | 100 % | 1.0x |")
    lines.append("")
    selection = chosen.get("feature_selection")
    if selection:
        names = ", ".join(f"x{i + 1}" for i in selection["selected"]) or "none"
        lines += [f"The stored network keeps the inputs {names} (relevant: "
                  f"{', '.join(f'x{i + 1}' for i in selection['relevant'])}): false negative rate "
                  f"{selection['false_negative_rate']:.2f}, false positive rate {selection['false_positive_rate']:.3f}.", ""]
    verdict = acceptance(metrics, entry.config["accept"])
    if verdict["gap"] is not None:
        lines += [verdict["text"] + ".", ""]
    lines += [f"![frontier]({stored_dir}/frontier.png)", "",
              "Load it with this package, `from pyro_sparse_bnn.apps.zoo import load_model; "
              f"model = load_model(\"{entry.name}\")`, or with plain PyTorch, "
              f"`torch.export.load(\"models/results/{entry.name}/{chosen['files']['module']}\").module()`"
              if chosen["files"]["module"].endswith(".pt2") else
              "Load it with this package, `from pyro_sparse_bnn.apps.zoo import load_model; "
              f"model = load_model(\"{entry.name}\")`"]
    examples = chosen["evaluation"]["examples"]
    which = f"the {examples}" if examples == metrics["data"]["n_test"] else f"the first {examples}"
    lines[-1] += (f". It takes inputs preprocessed as the entry's data loader does; {which} test examples, "
                  f"ready to use, are in "
                  f"`models/results/{chosen['evaluation']['file']}` (`load_evaluation(\"{entry.name}\")`), "
                  f"on which it scores {_fmt(chosen['evaluation'][metric], kind)}. The inclusion probability "
                  f"of every input and hidden unit is in `models/results/{entry.name}/inclusion.csv`.")
    return lines + [""]


def acceptance(metrics: dict, accept: dict) -> dict:
    """The stored network against the dense one: ``gap`` (accuracy points below it, or
    relative RMSE excess; ``None`` without a dense baseline), the entry's ``tolerance``,
    ``within`` and a sentence ``text``."""
    metric, chosen = metrics["metric"], metrics["chosen"]
    dense = metrics["baselines"].get("deterministic", {}).get(metric)
    accuracy = metric == "accuracy"
    tolerance = accept["accuracy_tolerance"] if accuracy else accept["rmse_tolerance"]
    if dense is None:
        return {"gap": None, "tolerance": tolerance, "within": None, "text": ""}
    tuned = chosen["finetuned_" + metric]
    gap = dense - tuned if accuracy else tuned / dense - 1
    within = gap <= tolerance + 1e-12
    if accuracy:
        where = "level with" if abs(gap) < 5e-5 else f"{100 * abs(gap):.2f} points {'below' if gap > 0 else 'above'}"
        text = f"The stored network is {where} the dense network (this entry's tolerance: {100 * tolerance:g} points"
    else:
        text = (f"The stored network's RMSE is {100 * abs(gap):.1f} % {'above' if gap > 0 else 'below'} the dense "
                f"network's (this entry's tolerance: {100 * tolerance:g} %")
    text += f"; {accept['why']})" if accept.get("why") else ")"
    return {"gap": gap, "tolerance": tolerance, "within": within, "text": text}


_PUBLISHED_LABELS = {"accuracy": "test accuracy", "error": "test error", "weights_kept": "parameters kept",
                     "architecture": "kept architecture", "architecture_compression": "architecture compression",
                     "bit_compression": "bit compression"}


def _ours(key: str, metrics: Optional[dict]) -> str:
    """Our figure for published figure ``key``, from the stored network."""
    chosen = (metrics or {}).get("chosen")
    if not chosen or metrics["metric"] != "accuracy" and key in ("accuracy", "error"):
        return "n/a"
    tuned = chosen.get("finetuned_accuracy")
    values = {"accuracy": _fmt(tuned, "accuracy"), "error": _fmt(None if tuned is None else 1 - tuned, "fraction"),
              "weights_kept": _fmt(chosen["weights_kept"], "fraction"), "architecture": chosen["architecture_after"],
              "architecture_compression": _fmt(chosen["parameter_compression"], "rate") + " (parameters)",
              "bit_compression": _fmt(chosen["bit_compression"], "rate") + " (before fine-tuning)"}
    return values[key]


def _published_section(config: dict, metrics: Optional[dict]) -> List[str]:
    """Published figures beside the stored network's, with the data difference said once."""
    published = config["published"]
    lines = ["## Published numbers", ""]
    if not any(k in published for k in PUBLISHED_FIGURES):
        text = published.get("source") or ("The methods page (docs/methods.md#published-figures) reports no "
                                            "figures for this configuration.")
        return lines + [text.strip(), ""]
    dataset = published.get("dataset", "MNIST")
    ours = "Fashion-MNIST" if config["data"]["name"] == "fashion_mnist" else config["data"]["name"]
    note = (" Theirs are on MNIST with the full schedule, ours on Fashion-MNIST, a harder data set (a dense "
            "LeNet reaches about 99 % on MNIST and 90 % on Fashion-MNIST), with the budget above: compare the "
            "sizes, not the accuracies." if ours == "Fashion-MNIST" and dataset != "Fashion-MNIST" else "")
    lines += [f"{published.get('source', 'docs/methods.md#published-figures')}.{note}", "",
              f"| figure | published ({dataset}) | ours ({ours}, the stored network) |", "| --- | --- | --- |"]
    for key in PUBLISHED_FIGURES:
        if key in published:
            kind = {"accuracy": "accuracy", "error": "fraction", "weights_kept": "fraction", "architecture": "text"
                    }.get(key, "rate")
            lines.append(f"| {_PUBLISHED_LABELS[key]} | {_fmt(published[key], kind)} | {_ours(key, metrics)} |")
    return lines + [""]


TABLE_START = "<!-- zoo-table:start (generated by `python -m pyro_sparse_bnn zoo-table`; do not edit) -->"
TABLE_END = "<!-- zoo-table:end -->"


def render_table(directory="models") -> str:
    """One markdown table of every entry in ``directory`` from its stored metrics."""
    lines = ["| entry | prior | data | posterior predictive | keep rule: architecture (test) "
             "| chosen on the frontier: architecture, parameters kept | fine-tuned (stored) | dense network "
             "| training time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in find_entries(directory):
        entry = load_entry(path)
        metrics = entry.stored_metrics()
        prior = PRIOR_ABBREVIATIONS[entry.prior_name]
        name = f"[{entry.name}]({entry.name}.md)"
        if metrics is None:
            lines.append(f"| {name} | {prior} | {entry.config['data']['name']} | not yet measured | | | | | |")
            continue
        metric = metrics["metric"]
        kind = "accuracy" if metric == "accuracy" else "rmse"
        compressed, chosen = metrics["compressed"], metrics.get("chosen")
        label = "acc" if metric == "accuracy" else "RMSE"
        dense = metrics["baselines"].get("deterministic", {}).get(metric)
        if chosen:
            point = f"{chosen['architecture_after']}, {_fmt(chosen['weights_kept'], 'fraction')}"
            tuned = f"{label} {_fmt(chosen['finetuned_' + metric], kind)}"
        else:
            point, tuned = "not chosen", "n/a"
        lines.append(
            f"| {name} | {prior} | {entry.config['data']['name']} | {label} {_fmt(metrics['bnn'][metric], kind)} "
            f"| {compressed['architecture_after']} ({_fmt(compressed[metric], kind)}) | {point} | **{tuned}** "
            f"| {_fmt(dense, kind)} | {_fmt(metrics['timing']['fit_seconds'], 'seconds')} "
            f"({plural(metrics['schedule']['epochs'], 'epoch')}) |")
    return "\n".join(lines)


def update_readme_table(directory="models") -> Path:
    """Rewrite the generated table of ``<directory>/README.md`` between its markers
    (appending the markers and table if the README has none)."""
    readme = Path(directory) / "README.md"
    text = readme.read_text() if readme.exists() else "# The model zoo\n"
    table = f"{TABLE_START}\n{render_table(directory)}\n{TABLE_END}"
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + table + rest.split(TABLE_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + table + "\n"
    readme.write_text(text)
    return readme


def render_cards(directory="models") -> List[Path]:
    """Rewrite every card of ``directory`` from its entry and stored metrics."""
    written = []
    for path in find_entries(directory):
        entry = load_entry(path)
        entry.card_path.write_text(render_card(entry))
        written.append(entry.card_path)
    return written


def describe(entry: ZooEntry) -> str:
    """What ``python -m pyro_sparse_bnn show`` prints: the config, the measured figures, the
    stored network and its files, and the most and least included units."""
    metrics = entry.stored_metrics()
    lines = [f"{entry.name} ({entry.path})", entry.text.rstrip(), ""]
    if metrics is None:
        lines.append("not yet measured; run: python -m pyro_sparse_bnn run " + str(entry.path) + " --publish")
        lines.append(f"card: {entry.card_path}")
        return "\n".join(lines)
    metric = metrics["metric"]
    kind = "accuracy" if metric == "accuracy" else "rmse"
    lines.append(f"measured: BNN test {metric} {_fmt(metrics['bnn'][metric], kind)}, keep rule "
                 f"{metrics['compressed']['architecture_after']} ({_fmt(metrics['compressed'][metric], kind)}), "
                 f"{plural(metrics['schedule']['epochs'], 'epoch')} in {metrics['timing']['fit_seconds']:.0f} s")
    chosen = metrics.get("chosen")
    if chosen:
        dense = metrics["baselines"].get("deterministic", {}).get(metric)
        lines += [f"stored network: {chosen['architecture_after']}, {chosen['nonzero_params_after']:,} of "
                  f"{chosen['params_before']:,} parameters ({_fmt(chosen['weights_kept'], 'fraction')}); test {metric} "
                  f"{_fmt(chosen[metric], kind)} before fine-tuning, {_fmt(chosen['finetuned_' + metric], kind)} after "
                  f"(dense network: {_fmt(dense, kind)})",
                  f"files: {', '.join(str(entry.stored_dir / name) for name in chosen['files'].values())}; "
                  f"evaluation inputs: {entry.results_path.parent / chosen['evaluation']['file']}",
                  f"load: from pyro_sparse_bnn.apps.zoo import load_model; model = load_model({entry.name!r})"]
        table = entry.stored_dir / chosen["files"]["inclusion"]
        if table.exists():
            import pandas as pd

            pips = pd.read_csv(table)
            lines += ["", f"inclusion probabilities ({len(pips)} units; lowest and highest five):",
                      pips.sort_values("pip").iloc[list(range(min(5, len(pips)))) + list(range(-min(5, len(pips)), 0))]
                      .drop_duplicates().to_string(index=False)]
    lines.append(f"card: {entry.card_path}")
    return "\n".join(lines)


def shell_command(argv: Sequence[str]) -> str:
    """The command line of this process, for the card."""
    return "python -m pyro_sparse_bnn " + " ".join(shlex.quote(a) for a in argv)


#: options of ``run`` that only choose where files go: the card's command leaves them out
PLACE_OPTIONS = ("--output", "--baseline-cache", "--data-dir")


def card_command(command: str) -> str:
    """``command`` without the options that only say where outputs, cached baselines and data
    live on the machine that ran it (:data:`PLACE_OPTIONS`): what a reader reruns."""
    words, kept = shlex.split(command), []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in PLACE_OPTIONS:
            skip = True
        elif not word.startswith(tuple(option + "=" for option in PLACE_OPTIONS)):
            kept.append(word)
    return " ".join(shlex.quote(word) for word in kept)

