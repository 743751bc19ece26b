"""The model zoo: run an entry of ``models/`` and render its model card.

An *entry* is a TOML file ``models/<name>.toml`` (read with the standard library's
``tomllib``) naming the data, the architecture, the prior, the likelihood and the training
schedule, and a model card ``models/<name>.md`` with what running it measured on this
machine. ``python -m pyro_sparse_bnn run models/<name>.toml`` (:func:`run_entry`):

1. loads the data (:data:`~pyro_sparse_bnn.apps.datasets.LOADERS`) and builds the network;
2. fits the sparse BNN with :func:`~pyro_sparse_bnn.core.fit.fit` (progress bar with the ELBO);
3. evaluates the posterior predictive (accuracy, or RMSE in the data's original units),
   compresses the network (:func:`~pyro_sparse_bnn.analysis.compress.compress`) and evaluates the
   compressed module; for simulations with known relevant inputs, the false negative and
   false positive rates of the kept input features;
4. trains the two baselines with the same budget on the same split and initial weights: the
   dense deterministic network (:func:`~pyro_sparse_bnn.apps.baselines.train_deterministic`) and
   the dense mean-field Gaussian BNN
   (:class:`~pyro_sparse_bnn.core.priors.SelfCompressingGaussian`, no pruning);
5. writes ``metrics.json``, the diagnostic plots of :mod:`pyro_sparse_bnn.analysis.plots`, the
   compressed module (``compressed_module.pt``, ``torch.save``) and the updated card
   ``card.md`` into the output directory; ``--publish`` also stores the metrics next to the
   entry (``models/results/<name>.json``) and rewrites ``models/<name>.md``.

The config sections and keys (every key is checked; a bad one raises :class:`ZooConfigError`
naming it):

``[entry]`` ``title``, ``description``, ``notes``

``[data]`` ``name`` (a loader of :data:`~pyro_sparse_bnn.apps.datasets.LOADERS`) and that loader's
    keyword arguments (``seed``, ``val_size`` / ``n_val``, ``num_features``, ...)

``[model]`` ``architecture`` (``"mlp"``, ``"lenet_300_100"``, ``"lenet5_caffe"``), ``widths``
    (``mlp`` only: hidden widths; input and output widths come from the data),
    ``activation`` (``"relu"``, ``"silu"``, ``"tanh"``)

``[prior]`` ``name`` (a prior class exported by the package) and its keyword arguments

``[likelihood]`` ``name`` (``"categorical"`` or ``"gaussian"``), ``noise_scale``, ``learn_noise``

``[train]`` ``epochs``, ``batch_size``, ``lr``, ``lr_decay``, ``logit_lr``, ``kl_warmup``,
    ``indicator_warmup``, ``temperature``, ``seed``, ``predict_samples``

``[compress]`` ``thresholds``: extra PIP thresholds to evaluate besides each prior's keep rule

``[baselines]`` ``deterministic_lr``, ``gaussian`` (train the Gaussian BNN baseline),
    ``gaussian_prior_scale``

``[budget]`` ``full_schedule``: the published schedule, for the card

``[published]`` ``source``, ``dataset`` and published figures (``accuracy``, ``weights_kept``,
    ``architecture``, ``architecture_compression``, ``bit_compression``, ``error``)
"""

import hashlib
import inspect
import json
import math
import platform
import shlex
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..analysis import plots
from ..analysis.calibration import accuracy
from ..analysis.compress import compress
from ..analysis.diagnostics import to_inference_data
from ..core import nets
from ..core import priors as prior_module
from ..core.errors import SparseBNNError
from ..core.fit import fit
from ..core.likelihoods import GaussianLikelihood
from ..core.network import SparseBNN
from . import datasets
from .baselines import train_deterministic

__all__ = [
    "ZooConfigError",
    "ZooEntry",
    "load_entry",
    "parse_entry",
    "find_entries",
    "run_entry",
    "render_card",
    "render_table",
    "update_readme_table",
    "run_fingerprint",
    "SMOKE",
]

#: what ``--smoke`` does: a few steps on a small slice of every split
SMOKE = {"n_train": 96, "n_val": 32, "n_test": 64, "epochs": 1, "batch_size": 32, "predict_samples": 2}

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
ARCHITECTURES = ("mlp", "lenet_300_100", "lenet5_caffe")
PRIORS = {
    name: getattr(prior_module, name)
    for name in ("SpikeSlab", "SpikeSlabNode", "SpikeSlabGroupLasso", "SpikeSlabGroupHorseshoe",
                 "GroupNormalJeffreys", "GroupHorseshoe", "SelfCompressingGaussian")
}
#: short names used in the tables of the papers
PRIOR_ABBREVIATIONS = {
    "SpikeSlab": "SS", "SpikeSlabNode": "SS-IG", "SpikeSlabGroupLasso": "SS-GL",
    "SpikeSlabGroupHorseshoe": "SS-GHS", "GroupNormalJeffreys": "BC-GNJ", "GroupHorseshoe": "BC-GHS",
    "SelfCompressingGaussian": "SC-Gauss",
}
TRAIN_DEFAULTS = {
    "epochs": 100, "batch_size": 128, "lr": 1e-3, "lr_decay": 1.0, "logit_lr": None, "kl_warmup": 0,
    "indicator_warmup": 0, "temperature": None, "seed": 0, "predict_samples": 20,
}
BASELINE_DEFAULTS = {"deterministic_lr": 1e-3, "gaussian": True, "gaussian_prior_scale": 1.0}
PUBLISHED_FIGURES = ("accuracy", "error", "weights_kept", "architecture", "architecture_compression",
                     "bit_compression")
SECTIONS = {
    "entry": {"title", "description", "notes"},
    "data": None,          # name + the loader's own arguments
    "model": {"architecture", "widths", "activation"},
    "prior": None,         # name + the prior's own arguments
    "likelihood": {"name", "noise_scale", "learn_noise"},
    "train": set(TRAIN_DEFAULTS),
    "compress": {"thresholds"},
    "baselines": set(BASELINE_DEFAULTS),
    "budget": {"full_schedule"},
    "published": {"source", "dataset", *PUBLISHED_FIGURES},
}
REQUIRED = ("data", "model", "prior", "train")


class ZooConfigError(SparseBNNError, ValueError):
    """A model-zoo config that cannot be run; the message names the file and the key."""


@dataclass
class ZooEntry:
    """A parsed entry: its name (the file stem), path, raw TOML text and checked sections."""

    name: str
    path: Path
    text: str
    config: Dict[str, Dict[str, Any]]

    @property
    def card_path(self) -> Path:
        return self.path.with_suffix(".md")

    @property
    def results_path(self) -> Path:
        return self.path.parent / "results" / f"{self.name}.json"

    @property
    def prior_name(self) -> str:
        return self.config["prior"]["name"]

    def stored_metrics(self) -> Optional[dict]:
        """The metrics stored next to the entry by ``run --publish`` (``None`` if none)."""
        if not self.results_path.exists():
            return None
        return json.loads(self.results_path.read_text())


# -- parsing ---------------------------------------------------------------------------------
def _fail(source, key, message):
    raise ZooConfigError(f"{source}: {key}: {message}")


def _keyword_arguments(function: Callable) -> Dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(function).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"}


def _check_type(source, key, value, kinds, what):
    if isinstance(value, bool) and bool not in kinds:
        _fail(source, key, f"must be {what}, got {value!r}")
    if not isinstance(value, kinds):
        _fail(source, key, f"must be {what}, got {value!r}")
    return value


def parse_entry(config: dict, source: str = "<config>") -> Dict[str, Dict[str, Any]]:
    """Check a config dict (as ``tomllib`` returns it) and fill in defaults.

    :raises ZooConfigError: naming the offending ``[section] key``.
    """
    if not isinstance(config, dict):
        raise ZooConfigError(f"{source}: expected a TOML table, got {type(config).__name__}")
    for section in config:
        if section not in SECTIONS:
            _fail(source, f"[{section}]", f"unknown section; known: {', '.join(SECTIONS)}")
        if not isinstance(config[section], dict):
            _fail(source, f"[{section}]", "must be a table")
    for section in REQUIRED:
        if section not in config:
            _fail(source, f"[{section}]", "missing section")
    checked = {section: dict(config.get(section, {})) for section in SECTIONS}
    for section, allowed in SECTIONS.items():
        if allowed is None:
            continue
        for key in checked[section]:
            if key not in allowed:
                _fail(source, f"{section}.{key}", f"unknown key; known: {', '.join(sorted(allowed))}")

    data = checked["data"]
    if "name" not in data:
        _fail(source, "data.name", f"missing; one of {', '.join(datasets.LOADERS)}")
    if data["name"] not in datasets.LOADERS:
        _fail(source, "data.name", f"unknown data set {data['name']!r}; one of {', '.join(datasets.LOADERS)}")
    arguments = _keyword_arguments(datasets.LOADERS[data["name"]])
    for key in data:
        if key != "name" and key not in arguments:
            _fail(source, f"data.{key}", f"not an argument of datasets.{data['name']} "
                  f"(arguments: {', '.join(arguments)})")

    model = checked["model"]
    architecture = model.get("architecture")
    if architecture not in ARCHITECTURES:
        _fail(source, "model.architecture", f"must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    model.setdefault("activation", "relu")
    if model["activation"] not in ACTIVATIONS:
        _fail(source, "model.activation", f"must be one of {', '.join(ACTIVATIONS)}, got {model['activation']!r}")
    if architecture == "mlp":
        widths = model.get("widths")
        if not isinstance(widths, list) or not widths or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            _fail(source, "model.widths", f"must be a non-empty list of positive hidden widths, got {widths!r}")
    elif "widths" in model:
        _fail(source, "model.widths", f"only for architecture 'mlp' ({architecture} has fixed widths)")

    prior = checked["prior"]
    if prior.get("name") not in PRIORS:
        _fail(source, "prior.name", f"must be one of {', '.join(PRIORS)}, got {prior.get('name')!r}")
    arguments = _keyword_arguments(PRIORS[prior["name"]].__init__)
    for key in prior:
        if key != "name" and key not in arguments:
            _fail(source, f"prior.{key}", f"not an argument of {prior['name']} (arguments: {', '.join(arguments)})")
    try:
        _build_prior(prior)
    except (SparseBNNError, ValueError, TypeError) as error:
        _fail(source, "[prior]", str(error))

    likelihood = checked["likelihood"]
    likelihood.setdefault("name", "categorical")
    if likelihood["name"] not in ("categorical", "gaussian"):
        _fail(source, "likelihood.name", f"must be 'categorical' or 'gaussian', got {likelihood['name']!r}")
    if likelihood["name"] == "categorical" and len(likelihood) > 1:
        extra = sorted(set(likelihood) - {"name"})
        _fail(source, f"likelihood.{extra[0]}", "only for the gaussian likelihood")
    if "noise_scale" in likelihood:
        value = _check_type(source, "likelihood.noise_scale", likelihood["noise_scale"], (int, float), "a number")
        if not value > 0:
            _fail(source, "likelihood.noise_scale", f"must be positive, got {value!r}")
    if "learn_noise" in likelihood:
        _check_type(source, "likelihood.learn_noise", likelihood["learn_noise"], (bool,), "true or false")

    train = {**TRAIN_DEFAULTS, **checked["train"]}
    for key in ("epochs", "batch_size", "predict_samples"):
        value = _check_type(source, f"train.{key}", train[key], (int,), "a positive integer")
        if value < 1:
            _fail(source, f"train.{key}", f"must be a positive integer, got {value!r}")
    for key in ("kl_warmup", "indicator_warmup", "seed"):
        value = _check_type(source, f"train.{key}", train[key], (int,), "an integer >= 0")
        if value < 0:
            _fail(source, f"train.{key}", f"must be an integer >= 0, got {value!r}")
    for key in ("lr", "lr_decay", "logit_lr", "temperature"):
        if train[key] is None:
            continue
        value = _check_type(source, f"train.{key}", train[key], (int, float), "a positive number")
        if not (value > 0 and math.isfinite(value)):
            _fail(source, f"train.{key}", f"must be a positive number, got {value!r}")
    checked["train"] = train

    thresholds = checked["compress"].get("thresholds", [])
    if not isinstance(thresholds, list) or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1 for t in thresholds):
        _fail(source, "compress.thresholds", f"must be a list of PIP thresholds in (0, 1), got {thresholds!r}")
    checked["compress"]["thresholds"] = thresholds

    baselines = {**BASELINE_DEFAULTS, **checked["baselines"]}
    _check_type(source, "baselines.gaussian", baselines["gaussian"], (bool,), "true or false")
    for key in ("deterministic_lr", "gaussian_prior_scale"):
        value = _check_type(source, f"baselines.{key}", baselines[key], (int, float), "a positive number")
        if not value > 0:
            _fail(source, f"baselines.{key}", f"must be a positive number, got {value!r}")
    checked["baselines"] = baselines
    for key, value in checked["published"].items():
        if key in ("source", "dataset", "architecture"):
            _check_type(source, f"published.{key}", value, (str,), "a string")
        else:
            _check_type(source, f"published.{key}", value, (int, float), "a number")
    return checked


def load_entry(path) -> ZooEntry:
    """Read and check ``models/<name>.toml``.

    :raises ZooConfigError: for a missing file, invalid TOML or a bad key (named).
    """
    path = Path(path)
    if not path.exists():
        raise ZooConfigError(f"{path}: no such entry file")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ZooConfigError(f"{path}: invalid TOML: {error}") from None
    return ZooEntry(name=path.stem, path=path, text=text, config=parse_entry(raw, str(path)))


def find_entries(directory="models") -> List[Path]:
    """The entry configs ``<directory>/*.toml``, sorted by name."""
    return sorted(Path(directory).glob("*.toml"))


def resolve_entry(name_or_path, directory="models") -> Path:
    """``models/<name>.toml`` for a bare entry name, else the path itself."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    return Path(directory) / f"{name_or_path}.toml"


# -- building ----------------------------------------------------------------------------------
def _build_prior(section: dict):
    options = {k: v for k, v in section.items() if k != "name"}
    return PRIORS[section["name"]](**options)


def _build_net(model: dict, num_inputs: int, num_outputs: int) -> nn.Sequential:
    activation = ACTIVATIONS[model["activation"]]
    if model["architecture"] == "mlp":
        return nets.mlp([num_inputs, *model["widths"], num_outputs], activation)
    if model["architecture"] == "lenet_300_100":
        return nets.lenet_300_100(num_inputs, num_outputs, activation)
    if num_inputs != 784:
        raise ZooConfigError(f"model.architecture: lenet5_caffe takes 28 x 28 images (784 inputs), "
                             f"the data have {num_inputs}")
    return nets.lenet5_caffe(num_outputs, activation=activation)


def _build_likelihood(section: dict):
    if section["name"] == "categorical":
        return "categorical"
    return GaussianLikelihood(noise_scale=float(section.get("noise_scale", 1.0)),
                              learn_noise=bool(section.get("learn_noise", False)))


def load_data(entry: ZooEntry, smoke: bool = False, data_dir=None) -> datasets.DataSplit:
    """The entry's data split (a small slice of it with ``smoke``); ``data_dir`` replaces the
    directory of the IDX files of ``fashion_mnist``."""
    options = {k: v for k, v in entry.config["data"].items() if k != "name"}
    name = entry.config["data"]["name"]
    if data_dir is not None:
        if name != "fashion_mnist":
            raise ZooConfigError(f"{entry.path}: --data-dir applies to fashion_mnist entries, not {name}")
        options["directory"] = str(data_dir)
    data = datasets.LOADERS[name](**options)
    if data.task == "classification":
        data.info.setdefault("num_classes", int(data.y_train.max()) + 1)
    if smoke:
        data = data.subset(SMOKE["n_train"], SMOKE["n_test"], SMOKE["n_val"])
    return data


def _num_outputs(data: datasets.DataSplit) -> int:
    return data.info["num_classes"] if data.task == "classification" else 1


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
RUN_SECTIONS = ("data", "model", "prior", "likelihood", "train", "compress", "baselines")


def run_fingerprint(entry: ZooEntry) -> str:
    """SHA-256 of the checked sections that decide what a run measures, stored with the
    metrics so that a card's numbers can be checked to come from the entry's current config
    (the card's prose -- ``[entry]``, ``[budget]``, ``[published]`` -- may change without a
    rerun)."""
    sections = {name: entry.config[name] for name in RUN_SECTIONS}
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def _baseline_key(entry: ZooEntry, schedule: dict, smoke: bool) -> str:
    """Baselines depend on the data, architecture, likelihood and budget, not on the prior:
    entries that share these share their baselines (see ``baseline_cache`` of
    :func:`run_entry`)."""
    train = {k: v for k, v in entry.config["train"].items()
             if k not in ("logit_lr", "indicator_warmup", "temperature")}
    key = {"data": entry.config["data"], "model": entry.config["model"], "likelihood": entry.config["likelihood"],
           "train": {**train, **schedule}, "baselines": entry.config["baselines"], "smoke": smoke}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _run_baselines(entry, data, make_net, schedule, progress, echo) -> dict:
    config = entry.config
    train, baselines = config["train"], config["baselines"]
    task = data.task
    dense = train_deterministic(
        make_net(), data.x_train, data.y_train, task=task, epochs=schedule["epochs"],
        batch_size=schedule["batch_size"], lr=baselines["deterministic_lr"], seed=train["seed"],
    )
    with torch.no_grad():
        dense_score = _score(dense.module(data.x_test), data.y_test, data)
    metric = _metric_name(data)
    results = {"deterministic": {metric: dense_score, "seconds": dense.seconds,
                                 "lr": baselines["deterministic_lr"],
                                 "params": sum(p.numel() for p in dense.module.parameters())}}
    echo(f"dense deterministic baseline: test {metric} {dense_score:.4f} ({dense.seconds:.0f} s)")
    if baselines["gaussian"]:
        prior = prior_module.SelfCompressingGaussian(prior_scale=baselines["gaussian_prior_scale"])
        bnn = SparseBNN(make_net(), prior, likelihood=_build_likelihood(config["likelihood"]),
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(name, make):
        try:
            fig = make()
        except (SparseBNNError, ValueError, NotImplementedError) as error:  # a plot a prior cannot give
            echo(f"skipped {name}: {error}")
            return
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
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
        if "group_scale" in idata.posterior and idata.posterior.group_scale[0, 0].size <= 1000:
            # one box per group: beyond a few hundred boxes matplotlib takes minutes
            save("group_scales.png", lambda: plots.plot_group_scales(idata))
    return written


# -- running -----------------------------------------------------------------------------------------
def environment() -> dict:
    """Python and torch versions, torch threads and machine, stored with every measurement."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine()}


def run_entry(
    entry,
    output=None,
    *,
    epochs: Optional[int] = None,
    smoke: bool = False,
    data_dir=None,
    progress: bool = True,
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
    :param bool progress: tqdm progress bars with the ELBO.
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
    if publish and smoke:
        raise ZooConfigError("--publish stores measured results; a --smoke run measures nothing")
    config = entry.config
    train = config["train"]
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1):
        raise ZooConfigError(f"--epochs must be a positive integer, got {epochs!r}")
    schedule = {
        "epochs": SMOKE["epochs"] if smoke else int(epochs or train["epochs"]),
        "batch_size": min(train["batch_size"], SMOKE["batch_size"]) if smoke else train["batch_size"],
        "predict_samples": SMOKE["predict_samples"] if smoke else train["predict_samples"],
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
    num_outputs = _num_outputs(data)
    metric = _metric_name(data)

    def make_net():
        torch.manual_seed(train["seed"])
        return _build_net(config["model"], data.num_features, num_outputs)

    prior = _build_prior(config["prior"])
    bnn = SparseBNN(make_net(), prior, likelihood=_build_likelihood(config["likelihood"]),
                    num_data=len(data.x_train))
    widths = "-".join(map(str, bnn.architecture.widths))
    echo(f"{entry.name}: {config['data']['name']} ({len(data.x_train)} training, "
         f"{0 if data.x_val is None else len(data.x_val)} validation, {len(data.x_test)} test examples), "
         f"{config['model']['architecture']} {widths}, {prior}, {schedule['epochs']} epochs of batch "
         f"{schedule['batch_size']}" + (" [smoke]" if smoke else ""))

    fit_start = time.perf_counter()
    history = fit(bnn, data.x_train, data.y_train,
                  **_fit_options(train, schedule["epochs"], schedule["batch_size"], progress, True))
    fit_seconds = time.perf_counter() - fit_start
    echo(f"fitted {history.num_steps} steps in {fit_seconds:.1f} s; final ELBO {history.elbo[-1]:.4g}")

    bnn_score, prediction = _predict_score(bnn, data.x_test, data.y_test, data, schedule["predict_samples"])
    results = {"bnn": {metric: bnn_score, "predict_samples": schedule["predict_samples"]}}
    if data.x_val is not None:
        results["bnn"]["validation_" + metric], _ = _predict_score(
            bnn, data.x_val, data.y_val, data, schedule["predict_samples"])
    echo(f"BNN posterior predictive: test {metric} {bnn_score:.4f}")

    module, keep_rule = _compression_row(bnn, data, None)
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

    plots = _save_plots(bnn, history, prediction, data, out, echo)
    torch.save(module, out / "compressed_module.pt")
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
        "baselines": baselines,
        "elbo": {"first": history.elbo[0], "last": history.elbo[-1]},
        "timing": {"fit_seconds": fit_seconds, "seconds_per_step": fit_seconds / max(history.num_steps, 1),
                   "total_seconds": time.perf_counter() - start},
        "plots": plots,
        "environment": environment(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "card.md").write_text(render_card(entry, metrics))
    echo(f"wrote {out / 'metrics.json'}, {out / 'card.md'}, {out / 'compressed_module.pt'} and "
         f"{len(plots)} plots in {out}")
    if publish:
        entry.results_path.parent.mkdir(parents=True, exist_ok=True)
        entry.results_path.write_text(json.dumps(metrics, indent=2))
        entry.card_path.write_text(render_card(entry, metrics))
        echo(f"published {entry.results_path} and {entry.card_path}")
    return metrics


# -- rendering ---------------------------------------------------------------------------------------
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
            f"{metrics['environment']['threads']} torch thread(s), torch {metrics['environment']['torch']}) with "
            f"`{metrics['command']}`: {schedule['epochs']} epochs of batch {schedule['batch_size']} "
            f"({schedule['num_steps']} SVI steps) on {metrics['data']['n_train']} training examples, "
            f"evaluated on {metrics['data']['n_test']} test examples.", "",
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
                      f"({metrics['data']['n_val']} examples).", ""]
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
    lines += [f"This entry runs {config['train']['epochs']} epochs of batch {config['train']['batch_size']}: a "
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
            f"{_fmt(metrics['timing']['fit_seconds'], 'seconds')} ({metrics['schedule']['epochs']} epochs) | "
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
                     f"{metrics['schedule']['epochs']} epochs in {metrics['timing']['fit_seconds']:.0f} s")
    lines.append(f"card: {entry.card_path}")
    return "\n".join(lines)


def shell_command(argv: Sequence[str]) -> str:
    """The command line of this process, for the card."""
    return "python -m pyro_sparse_bnn " + " ".join(shlex.quote(a) for a in argv)
