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
4. trains the two baselines on the same split and initial weights: the dense deterministic
   network (:func:`~pyro_sparse_bnn.apps.baselines.train_deterministic`), with the budget of the
   fit plus the fine-tuning, and the dense mean-field Gaussian BNN
   (:class:`~pyro_sparse_bnn.core.priors.SelfCompressingGaussian`, no pruning);
5. chooses the network the entry stores: after the prune-and-refit loop
   (:func:`~pyro_sparse_bnn.analysis.self_compression.self_compress`) when ``[self_compress]``
   is given, the smallest network of the frontier
   (:func:`~pyro_sparse_bnn.analysis.frontier.frontier` on the validation split) within
   ``[choose] tolerance`` of the posterior's validation metric, as compressed or after a
   short fine-tuning (``rule``), fine-tuned with
   :func:`~pyro_sparse_bnn.analysis.finetune.finetune`;
6. writes ``metrics.json``, the diagnostic plots of :mod:`pyro_sparse_bnn.analysis.plots`, the
   frontier plot, the stored network (:mod:`~pyro_sparse_bnn.apps.zoo.stored`) and the card
   ``card.md`` into the output directory; ``--publish`` also stores the metrics and the
   network next to the entry (``models/results/<name>.json`` and ``models/results/<name>/``)
   and rewrites ``models/<name>.md``. :func:`load_model` returns a stored network,
   :func:`load_evaluation` the test examples it is checked on.

The config sections and keys (every key is checked; a bad one raises :class:`ZooConfigError`
naming it):

``[entry]`` ``title``, ``description``, ``notes``

``[data]`` ``name`` (a loader of :data:`~pyro_sparse_bnn.apps.datasets.LOADERS`) and that loader's
    keyword arguments (``seed``, ``val_size`` / ``n_val``, ``num_features``, ...)

``[model]`` ``architecture`` (``"mlp"``, ``"lenet_300_100"``, ``"lenet5_caffe"``),
    ``hidden_widths`` (``mlp`` only), ``activation`` (``"relu"``, ``"silu"``, ``"tanh"``).
    ``hidden_widths = [32, 16]`` lists the hidden layers only: the input width is the data's
    number of features and the output width its number of classes (1 for regression), so an
    entry never repeats what the data decide and cannot contradict them. ``psb.mlp(widths)``
    takes the full list instead, here ``psb.mlp([num_features, 32, 16, num_outputs])``; hence
    the name. The key was once called ``widths``, which now raises :class:`ZooConfigError`
    saying so; :func:`run_fingerprint` hashes ``hidden_widths`` under that old name, so
    results stored before the rename still match their entries.

``[prior]`` ``name`` (a prior class exported by the package) and its keyword arguments

``[likelihood]`` ``name`` (``"categorical"`` or ``"gaussian"``), ``noise_scale``, ``learn_noise``

``[train]`` ``epochs``, ``batch_size``, ``lr``, ``lr_decay``, ``logit_lr``, ``kl_warmup``,
    ``indicator_warmup``, ``temperature``, ``seed``, ``predict_samples``

``[compress]`` ``thresholds``: extra PIP thresholds to evaluate besides each prior's keep rule

``[baselines]`` ``deterministic_lr``, ``gaussian`` (train the Gaussian BNN baseline),
    ``gaussian_prior_scale``

``[choose]`` ``rule`` (``"posterior"``: judge the frontier's networks as compressed, with
    :meth:`~pyro_sparse_bnn.analysis.frontier.Frontier.select`; ``"finetuned"``: after
    ``search_epochs`` of fine-tuning), ``tolerance`` (accuracy points, or relative RMSE, below
    the posterior's validation metric), ``search_epochs``, ``finetune_epochs``, ``finetune_lr``,
    ``finetune_lr_decay``, ``finetune_batch_size``

``[self_compress]`` ``fraction``, ``epochs``, ``rounds``, ``tolerance``: the prune-and-refit loop
    before the frontier (only when the section is given)

``[accept]`` ``accuracy_tolerance``, ``rmse_tolerance``: how far the stored network may be from
    the dense one (2 points, 10 %), and ``why`` a card allows more

``[budget]`` ``full_schedule``: the published schedule, for the card

``[published]`` ``source``, ``dataset`` and published figures (``accuracy``, ``weights_kept``,
    ``architecture``, ``architecture_compression``, ``bit_compression``, ``error``)
"""

from .cards import (
    TABLE_END,
    TABLE_START,
    describe,
    plural,
    render_card,
    render_cards,
    render_table,
    shell_command,
    update_readme_table,
)
from .entries import (
    PRIOR_ABBREVIATIONS,
    SMOKE,
    ZooConfigError,
    ZooEntry,
    find_entries,
    load_data,
    load_entry,
    parse_entry,
    resolve_entry,
)
from .run import run_entry, run_fingerprint
from .stored import load_evaluation, load_model

__all__ = [
    "ZooConfigError",
    "ZooEntry",
    "load_entry",
    "parse_entry",
    "find_entries",
    "resolve_entry",
    "load_data",
    "run_entry",
    "run_fingerprint",
    "load_model",
    "load_evaluation",
    "render_card",
    "render_cards",
    "render_table",
    "update_readme_table",
    "describe",
    "shell_command",
    "plural",
    "PRIOR_ABBREVIATIONS",
    "SMOKE",
    "TABLE_START",
    "TABLE_END",
]
