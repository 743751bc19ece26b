"""Every example command that ``python -m pyro_sparse_bnn --help`` and each command's ``--help``
print is one a user can paste: the entries it names exist, and it runs.

``list``, ``show``, ``zoo-table`` and ``run --smoke`` examples run as printed, in a copy of
``models/``; a ``run`` without ``--smoke`` (minutes to hours) and the demo (minutes) are parsed
and their entry resolved or their settings checked instead.
"""

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from pyro_sparse_bnn.apps import cli
from pyro_sparse_bnn.apps.cli import PROG, main
from pyro_sparse_bnn.apps.zoo import load_entry, resolve_entry
from tests.apps.zoo.conftest import MODELS

COMMANDS = ("demo", "run", "list", "show", "zoo-table")


def help_text(*command: str) -> str:
    """What ``python -m pyro_sparse_bnn [command] --help`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def examples(text: str) -> list:
    """The example command lines of a help text: the lines that start with the program."""
    return [line.strip() for line in text.splitlines() if line.strip().startswith(PROG + " ")]


HELP = {None: help_text(), **{command: help_text(command) for command in COMMANDS}}
EXAMPLES = sorted({line for text in HELP.values() for line in examples(text)})


def test_every_help_ends_with_examples():
    for command, text in HELP.items():
        lines = examples(text)
        assert lines, f"{command or 'the top level'}: --help shows no example"
        if command is not None:
            assert all(shlex.split(line)[3] == command for line in lines), lines


def test_python_m_help_prints_the_same_examples():
    result = subprocess.run([sys.executable, "-m", "pyro_sparse_bnn", "--help"], capture_output=True, text=True,
                            check=True, cwd=MODELS.parent)
    assert examples(result.stdout) == examples(HELP[None])


def test_entries_named_in_the_help_exist():
    """``models/<name>.toml`` anywhere in a help text, and the ``e.g.`` of the ``entry``
    arguments, name real entries (they once named a ``digits_spike_slab`` that never existed)."""
    text = "\n".join(HELP.values())
    paths = set(re.findall(r"models/([\w-]+)\.toml", text))
    assert paths and all((MODELS / f"{name}.toml").exists() for name in paths), paths
    for command in ("run", "show"):
        entry_help = re.search(r"^  entry\s+(.*?)\n\n", HELP[command], re.S | re.M).group(1)
        names = re.findall(r"e\.g\. ([\w/.-]+)", " ".join(entry_help.split()))
        assert names and all(resolve_entry(name, MODELS).exists() for name in names), names


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """A working directory holding a copy of ``models/``, where the examples' relative paths
    (``models/...``, ``--output runs/...``, ``zoo_output/``) land."""
    shutil.copytree(MODELS, tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("line", EXAMPLES)
def test_help_example_runs(line, zoo_copy, capsys, monkeypatch):
    argv = shlex.split(line)[3:]  # without "python -m pyro_sparse_bnn"
    args = cli.build_parser().parse_args(argv)
    command = args.command
    if command == "demo":  # minutes even at its smallest: check the settings it would run with
        configs = []
        monkeypatch.setattr(cli, "run_demo", configs.append)
        assert main(argv) == 0
        (config,) = configs
        assert config.epochs == args.epochs and config.finetune_epochs == args.finetune_epochs
        assert config.prior_inclusion is None if args.prior_inclusion == "theory" else 0 < config.prior_inclusion < 1
        return
    if command == "run" and not args.smoke:  # a real run takes minutes: the entry resolves
        assert load_entry(resolve_entry(args.entry, args.models)).name in line
        return
    cards = {path.name: path.read_text() for path in (zoo_copy / "models").glob("*.md")}
    assert main(argv) == 0, line
    out = capsys.readouterr().out
    if command == "run":
        entry = load_entry(resolve_entry(args.entry, args.models))
        output = zoo_copy / (args.output or f"zoo_output/{entry.name}-smoke")
        assert (output / "metrics.json").exists() and (output / "card.md").exists()
        assert f"{entry.name}:" in out
    elif command == "list":
        assert out.splitlines()[0].startswith("entry") and "wine_self_compressing" in out
    elif command == "show":
        name = load_entry(resolve_entry(args.entry, args.models)).name
        assert out.startswith(name) and "[prior]" in out
    else:  # zoo-table: the committed cards and table are already what it renders
        assert "rewrote" in out
        assert {path.name: path.read_text() for path in (zoo_copy / "models").glob("*.md")} == cards
