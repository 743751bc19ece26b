"""The fitted result of a zoo entry: the chosen compressed (and fine-tuned) module, its
inclusion-probability table and the evaluation inputs it is checked on, written by a run and
read back by :func:`load_model`.

Files of an entry (``<output>/`` of a run, ``models/results/<entry>/`` once published):

* ``module.pt2`` -- the module as a ``torch.export`` program: plain PyTorch loads it,
  ``torch.export.load("module.pt2").module()``, without this package; for a module that
  ``torch.export`` cannot trace, ``module.pt`` instead, the module pickled by ``torch.save``
  (``torch.load`` reads it after ``import pyro_sparse_bnn``). :func:`load_model` reads
  either;
* ``inclusion.csv`` -- :func:`~pyro_sparse_bnn.analysis.inclusion.inclusion_summary` of the
  fitted BNN (one row per input feature and hidden unit);
* ``frontier.png`` -- the frontier the network was chosen on.

The evaluation inputs (the first :data:`EVALUATION_SIZE` test examples, preprocessed as the
entry's data loader does) are shared by the entries with the same data:
``models/results/evaluation/<data>-<hash>.pt``, images in half precision.
"""

import hashlib
import json
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ...analysis.inclusion import inclusion_summary
from ...core.errors import ExportError
from ...persistence.export import export
from .entries import ZooConfigError, ZooEntry, load_entry, resolve_entry

#: test examples stored to check a stored module against its stored metric
EVALUATION_SIZE = 1000
#: the most bytes an entry's own files may take
MAX_ENTRY_BYTES = 2 * 2 ** 20
MODULE_FILE, EXPORTED_FILE, INCLUSION_FILE, FRONTIER_FILE = "module.pt", "module.pt2", "inclusion.csv", "frontier.png"


def evaluation_name(data_config: dict) -> str:
    """File name of the evaluation inputs of entries whose ``[data]`` section is ``data_config``."""
    digest = hashlib.sha256(json.dumps(data_config, sort_keys=True).encode()).hexdigest()[:8]
    return f"{data_config['name']}-{digest}.pt"


def write_evaluation(path: Path, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """Store the first :data:`EVALUATION_SIZE` examples of ``x`` ``(n, *input_shape)`` and
    ``y`` ``(n,)`` (inputs with more than 100 values per example in half precision) and return
    them as they will be read back: ``(x as float32, y)``."""
    x, y = x[:EVALUATION_SIZE].detach().cpu(), y[:EVALUATION_SIZE].detach().cpu()
    if x[0].numel() > 100:
        x = x.to(torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"x": x.clone(), "y": y.clone()}, path)
    return x.float(), y


def read_evaluation(path) -> tuple:
    """``(x, y)`` of a stored evaluation file, ``x`` as float32."""
    stored = torch.load(path)
    return stored["x"].float(), stored["y"]


def write_result(directory: Path, module: nn.Module, bnn, example: torch.Tensor) -> dict:
    """Write the module (``module.pt2``, or ``module.pt`` when ``torch.export`` cannot trace
    it) and the BNN's inclusion table into ``directory``; return ``{kind: file name}``."""
    directory.mkdir(parents=True, exist_ok=True)
    module = module.cpu().eval()
    try:
        export(module, directory / EXPORTED_FILE, example_input=example[:2].float().cpu())
        written = EXPORTED_FILE
    except ExportError:
        torch.save(module, directory / MODULE_FILE)
        written = MODULE_FILE
    inclusion_summary(bnn).to_csv(directory / INCLUSION_FILE, index=False)
    return {"module": written, "inclusion": INCLUSION_FILE}


def entry_bytes(directory: Path) -> int:
    """Bytes of the files in an entry's result directory."""
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())


def _default_models() -> Path:
    """The repository's ``models/`` when the package runs from a clone, else ``./models``."""
    clone = Path(__file__).resolve().parents[3] / "models"
    return clone if clone.is_dir() else Path("models")


def _entry(entry: Union[str, ZooEntry], models) -> ZooEntry:
    if isinstance(entry, ZooEntry):
        return entry
    return load_entry(resolve_entry(entry, _default_models() if models is None else models))


def load_model(entry: Union[str, ZooEntry], models=None) -> nn.Module:
    """The stored network of a zoo entry, ready to use (eval mode, CPU):
    ``model = load_model("fashion_lenet300_bcgnj")``.

    :param entry: an entry name (e.g. ``"wine_self_compressing"``), the path of its TOML
        file, or a :class:`ZooEntry`.
    :param models: directory of the entries (default: the repository's ``models/``).
    :returns: a module mapping ``(batch, num_features)`` inputs, preprocessed as the entry's
        data loader does, to logits ``(batch, classes)`` or predictions ``(batch, 1)``: the
        ``torch.export`` program's module, or the pickled ``nn.Module`` where the entry
        stores that.
    :raises ~pyro_sparse_bnn.apps.zoo.entries.ZooConfigError: if the entry has no stored network (run it with ``--publish``).
    """
    entry = _entry(entry, models)
    exported, pickled = entry.stored_dir / EXPORTED_FILE, entry.stored_dir / MODULE_FILE
    if exported.exists():
        return torch.export.load(str(exported)).module()
    if pickled.exists():
        return torch.load(pickled).eval()  # the compressed modules' classes are safe globals
    raise ZooConfigError(f"{entry.name}: no stored network in {entry.stored_dir}; run "
                         f"`python -m pyro_sparse_bnn run {entry.path} --publish` to store one")


def load_evaluation(entry: Union[str, ZooEntry], models=None) -> Optional[tuple]:
    """``(x, y)``: the stored evaluation inputs and labels or targets of an entry (``None``
    when it has none), on which its stored module scores ``metrics["chosen"]["evaluation"]``."""
    entry = _entry(entry, models)
    metrics = entry.stored_metrics()
    if metrics is None or "chosen" not in metrics:
        return None
    return read_evaluation(entry.results_path.parent / metrics["chosen"]["evaluation"]["file"])
