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


def _published_rows(published: dict) -> List[str]:
    rows = []
    labels = {"accuracy": ("accuracy", "accuracy"), "error": ("error", "fraction"),
              "weights_kept": ("weights kept", "fraction"), "architecture": ("kept architecture", "text"),
              "architecture_compression": ("architecture compression", "rate"),
              "bit_compression": ("bit compression", "rate")}
    for key in PUBLISHED_FIGURES:
        if key in published:
            label, kind = labels[key]
            rows.append(f"| {label} | {_fmt(published[key], kind)} |")
    return rows


def render_card(entry: ZooEntry, metrics: Optional[dict] = None) -> str:
    """The model card of ``entry`` as markdown, with ``metrics`` of a run (``None``: the
    stored ones, or "not yet measured")."""
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
            f"`{metrics['command']}`: {plural(schedule['epochs'], 'epoch')} of batch {schedule['batch_size']} "
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
    published = config["published"]
    lines += ["## Published numbers", ""]
    if any(k in published for k in PUBLISHED_FIGURES):
        lines += [f"{published.get('source', 'docs/methods.md#published-figures')}, on {published.get('dataset', 'MNIST')}"
                  + (" (ours are Fashion-MNIST, a harder data set: expect lower accuracies)"
                     if config["data"]["name"] == "fashion_mnist" and published.get("dataset", "MNIST") != "Fashion-MNIST"
                     else "") + ", with the full schedule:", "",
                  "| published | value |", "| --- | --- |", *_published_rows(published), ""]
    else:
        lines += [(published.get("source") or "The methods page (docs/methods.md#published-figures) reports no figures for this configuration.").strip(), ""]
    if config["entry"].get("notes"):
        lines += ["## Notes", "", config["entry"]["notes"].strip(), ""]
    lines += ["## Configuration", "", f"`models/{entry.name}.toml`:", "", "```toml", entry.text.rstrip(), "```", ""]
    return "\n".join(lines)


TABLE_START = "<!-- zoo-table:start (generated by `python -m pyro_sparse_bnn zoo-table`; do not edit) -->"
TABLE_END = "<!-- zoo-table:end -->"


def render_table(directory="models") -> str:
    """One markdown table of every entry in ``directory`` from its stored metrics."""
    lines = ["| entry | prior | data | test accuracy / RMSE | kept architecture | weights kept "
             "| bit compression | training time | baselines: dense / Gaussian BNN |",
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
        compressed, baselines = metrics["compressed"], metrics["baselines"]
        label = "acc" if metric == "accuracy" else "RMSE"
        dense = baselines.get("deterministic", {}).get(metric)
        gaussian = baselines.get("gaussian_bnn", {}).get(metric)
        lines.append(
            f"| {name} | {prior} | {entry.config['data']['name']} | {label} {_fmt(metrics['bnn'][metric], kind)} "
            f"(compressed {_fmt(compressed[metric], kind)}) | {compressed['architecture_after']} | "
            f"{_fmt(compressed['weights_kept'], 'fraction')} | {_fmt(compressed['bit_compression'], 'rate')} | "
            f"{_fmt(metrics['timing']['fit_seconds'], 'seconds')} ({plural(metrics['schedule']['epochs'], 'epoch')}) | "
            f"{_fmt(dense, kind)} / {_fmt(gaussian, kind)} |")
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
    """A few lines about an entry for ``python -m pyro_sparse_bnn show``."""
    metrics = entry.stored_metrics()
    lines = [f"{entry.name} ({entry.path})", entry.text.rstrip(), ""]
    if metrics is None:
        lines.append("not yet measured; run: python -m pyro_sparse_bnn run " + str(entry.path))
    else:
        metric = metrics["metric"]
        lines.append(f"measured: BNN test {metric} {metrics['bnn'][metric]:.4f}, compressed "
                     f"{metrics['compressed'][metric]:.4f}, kept {metrics['compressed']['architecture_after']} "
                     f"({100 * metrics['compressed']['weights_kept']:.1f} % of the weights), "
                     f"{plural(metrics['schedule']['epochs'], 'epoch')} in {metrics['timing']['fit_seconds']:.0f} s")
    lines.append(f"card: {entry.card_path}")
    return "\n".join(lines)


def shell_command(argv: Sequence[str]) -> str:
    """The command line of this process, for the card."""
    return "python -m pyro_sparse_bnn " + " ".join(shlex.quote(a) for a in argv)

