"""Zoo entries: reading and checking a TOML config, and building the data, network, prior and
likelihood it describes (see :mod:`pyro_sparse_bnn.apps.zoo` for the keys)."""

import inspect
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from torch import nn

from ...core import nets
from ...core import priors as prior_module
from ...core.errors import SparseBNNError
from ...core.likelihoods import GaussianLikelihood
from .. import datasets

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
#: how the stored network is chosen: the smallest network of the frontier whose validation
#: metric is within ``tolerance`` of the posterior's, fine-tuned for ``finetune_epochs``
CHOOSE_DEFAULTS = {"tolerance": 0.01, "finetune_epochs": 5, "finetune_lr": 1e-3, "finetune_lr_decay": 0.1,
                   "finetune_batch_size": 128, "rule": "posterior", "search_epochs": 1}
#: ``[choose] rule``: judge the frontier's networks as compressed, or after fine-tuning them
CHOOSE_RULES = ("posterior", "finetuned")
#: the iterative prune-and-refit loop, run before the frontier when the section is present
SELF_COMPRESS_DEFAULTS = {"fraction": 0.25, "epochs": 50, "rounds": 10, "tolerance": 0.05}
#: what the stored network must reach against the dense baseline: at most ``tolerance``
#: accuracy points below it, or RMSE at most ``tolerance`` (relative) above it; ``why``
#: explains a wider tolerance on the card
ACCEPT_DEFAULTS = {"accuracy_tolerance": 0.02, "rmse_tolerance": 0.10, "why": None}
PUBLISHED_FIGURES = ("accuracy", "error", "weights_kept", "architecture", "architecture_compression",
                     "bit_compression")
SECTIONS = {
    "entry": {"title", "description", "notes"},
    "data": None,          # name + the loader's own arguments
    "model": {"architecture", "hidden_widths", "activation"},
    "prior": None,         # name + the prior's own arguments
    "likelihood": {"name", "noise_scale", "learn_noise"},
    "train": set(TRAIN_DEFAULTS),
    "compress": {"thresholds"},
    "baselines": set(BASELINE_DEFAULTS),
    "choose": set(CHOOSE_DEFAULTS),
    "self_compress": set(SELF_COMPRESS_DEFAULTS),
    "accept": set(ACCEPT_DEFAULTS),
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
    def stored_dir(self) -> Path:
        """Where ``run --publish`` stores the chosen module, its inclusion-probability table
        and its frontier plot."""
        return self.path.parent / "results" / self.name

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
    if "widths" in checked["model"]:  # the key's name before hidden_widths: say what it became
        _fail(source, "model.widths", f"renamed hidden_widths: write hidden_widths = {checked['model']['widths']!r}. "
              "It lists the hidden layers only (the input and output widths come from the data), while "
              "psb.mlp(widths) takes the full list [inputs, *hidden, outputs]")
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
        widths = model.get("hidden_widths")
        if not isinstance(widths, list) or not widths or not all(
                isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            _fail(source, "model.hidden_widths", f"must be a non-empty list of positive widths of the hidden "
                  f"layers (the input and output widths come from the data), got {widths!r}")
    elif "hidden_widths" in model:
        _fail(source, "model.hidden_widths", f"only for architecture 'mlp' ({architecture} has fixed widths)")

    prior = checked["prior"]
    if prior.get("name") not in PRIORS:
        _fail(source, "prior.name", f"must be one of {', '.join(PRIORS)}, got {prior.get('name')!r}")
    arguments = _keyword_arguments(PRIORS[prior["name"]].__init__)
    for key in prior:
        if key != "name" and key not in arguments:
            _fail(source, f"prior.{key}", f"not an argument of {prior['name']} (arguments: {', '.join(arguments)})")
    try:
        build_prior(prior)
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
    choose = {**CHOOSE_DEFAULTS, **checked["choose"]}
    if choose["rule"] not in CHOOSE_RULES:
        _fail(source, "choose.rule", f"must be one of {', '.join(map(repr, CHOOSE_RULES))}, got {choose['rule']!r}")
    checked["choose"] = {**_numbers(source, "choose", {k: v for k, v in choose.items() if k != "rule"},
                                    integers=("finetune_epochs", "finetune_batch_size", "search_epochs")),
                         "rule": choose["rule"]}
    if checked["self_compress"]:  # absent: no prune-and-refit loop
        checked["self_compress"] = _numbers(source, "self_compress",
                                            {**SELF_COMPRESS_DEFAULTS, **checked["self_compress"]},
                                            integers=("epochs", "rounds"))
    accept = {**ACCEPT_DEFAULTS, **checked["accept"]}
    if accept["why"] is not None:
        _check_type(source, "accept.why", accept["why"], (str,), "a string")
    checked["accept"] = {**_numbers(source, "accept", {k: v for k, v in accept.items() if k != "why"}),
                         "why": accept["why"]}
    for key, value in checked["published"].items():
        if key in ("source", "dataset", "architecture"):
            _check_type(source, f"published.{key}", value, (str,), "a string")
        else:
            _check_type(source, f"published.{key}", value, (int, float), "a number")
    return checked


def _numbers(source, section: str, values: dict, integers=()) -> dict:
    """``values`` checked: positive integers for the keys in ``integers``, non-negative finite
    numbers for the others (a tolerance may be 0)."""
    for key, value in values.items():
        if key in integers:
            _check_type(source, f"{section}.{key}", value, (int,), "a positive integer")
            if value < 1:
                _fail(source, f"{section}.{key}", f"must be a positive integer, got {value!r}")
        else:
            _check_type(source, f"{section}.{key}", value, (int, float), "a non-negative number")
            if not (value >= 0 and math.isfinite(value)):
                _fail(source, f"{section}.{key}", f"must be a non-negative number, got {value!r}")
    return values


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
def build_prior(section: dict):
    options = {k: v for k, v in section.items() if k != "name"}
    return PRIORS[section["name"]](**options)


def build_net(model: dict, num_inputs: int, num_outputs: int) -> nn.Sequential:
    activation = ACTIVATIONS[model["activation"]]
    if model["architecture"] == "mlp":
        return nets.mlp([num_inputs, *model["hidden_widths"], num_outputs], activation)
    if model["architecture"] == "lenet_300_100":
        return nets.lenet_300_100(num_inputs, num_outputs, activation)
    if num_inputs != 784:
        raise ZooConfigError(f"model.architecture: lenet5_caffe takes 28 x 28 images (784 inputs), "
                             f"the data have {num_inputs}")
    return nets.lenet5_caffe(num_outputs, activation=activation)


def build_likelihood(section: dict):
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
    if smoke and "n_val" in options:  # a smoke run may read a data set smaller than the validation split
        options["n_val"] = min(options["n_val"], SMOKE["n_val"])
    data = datasets.LOADERS[name](**options)
    if data.task == "classification":
        data.info.setdefault("num_classes", int(data.y_train.max()) + 1)
    if smoke:
        data = data.subset(SMOKE["n_train"], SMOKE["n_test"], SMOKE["n_val"])
    return data


def output_width(data: datasets.DataSplit) -> int:
    return data.info["num_classes"] if data.task == "classification" else 1


