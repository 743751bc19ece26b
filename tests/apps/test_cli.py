"""The command line: list, show, zoo-table and the progress default."""

import shutil

import pytest

from pyro_sparse_bnn.apps.cli import main
from pyro_sparse_bnn.apps.zoo import (
    load_entry,
    plural,
    render_card,
    render_table,
)
from tests.apps.zoo.conftest import ENTRIES, MODELS


def test_cli_list_show_and_table(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("*.md"))
    (models / "README.md").write_text("# zoo\n")
    assert main(["list", "--models", str(models)]) == 0
    listed = capsys.readouterr().out
    assert all(p.stem in listed for p in ENTRIES)
    name = ENTRIES[0].stem
    assert main(["show", name, "--models", str(models)]) == 0
    assert "[prior]" in capsys.readouterr().out
    assert main(["zoo-table", "--models", str(models), "--cards"]) == 0
    assert {p.stem for p in models.glob("*.md")} - {"README"} == {p.stem for p in ENTRIES}
    assert render_table(models) in (models / "README.md").read_text()


def test_progress_defaults_to_only_where_someone_watches(monkeypatch):
    """``run`` and ``demo`` pass ``progress=None`` (the library's default: bars only in a
    terminal or notebook) unless ``--no-progress`` forces them off."""
    from pyro_sparse_bnn.apps import cli

    seen = {}
    monkeypatch.setattr(cli, "run_entry", lambda *args, **kwargs: seen.setdefault("run", []).append(kwargs))
    monkeypatch.setattr(cli, "run_demo", lambda config: seen.setdefault("demo", []).append(config))
    path = str(ENTRIES[0])
    assert main(["run", path]) == 0 and main(["run", path, "--no-progress"]) == 0
    assert [kwargs["progress"] for kwargs in seen["run"]] == [None, False]
    assert main(["demo"]) == 0 and main(["demo", "--no-progress"]) == 0
    assert [config.progress for config in seen["demo"]] == [None, False]


@pytest.mark.parametrize(("count", "text"), [(0, "0 epochs"), (1, "1 epoch"), (2, "2 epochs"), (15, "15 epochs")])
def test_plural(count, text):
    assert plural(count, "epoch") == text


def test_list_prints_a_header_and_singular_epochs(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(MODELS, models, ignore=shutil.ignore_patterns("*.md"))
    entry = load_entry(ENTRIES[0])
    (models / "one.toml").write_text(entry.text.replace(f"epochs = {entry.config['train']['epochs']}", "epochs = 1"))
    assert main(["list", "--models", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["entry", "prior", "data", "architecture", "budget"]
    assert len(lines) == 1 + len(ENTRIES) + 1
    rows = {line.split()[0]: line for line in lines[1:]}
    assert " 1 epoch " in rows["one"] and "1 epochs" not in rows["one"]
    assert f" {entry.config['train']['epochs']} epochs " in rows[ENTRIES[0].stem]
    # the columns line up under the header
    start = lines[0].index("budget")
    assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines[1:])
    # an empty directory says so instead of printing a bare header
    (tmp_path / "empty").mkdir()
    assert main(["list", "--models", str(tmp_path / "empty")]) == 1
    assert "no entries" in capsys.readouterr().err


def test_cards_table_and_show_say_1_epoch(capsys, tmp_path):
    """An entry of one epoch (the wine entry, its config and stored metrics changed to one
    epoch) is "1 epoch" in its card, the table and ``show``."""
    import json

    name = "wine_self_compressing"
    (tmp_path / f"{name}.toml").write_text((MODELS / f"{name}.toml").read_text().replace("epochs = 300", "epochs = 1"))
    (tmp_path / "results").mkdir()
    metrics = json.loads((MODELS / "results" / f"{name}.json").read_text())
    metrics["schedule"]["epochs"] = 1
    (tmp_path / "results" / f"{name}.json").write_text(json.dumps(metrics))
    entry = load_entry(tmp_path / f"{name}.toml")
    assert entry.config["train"]["epochs"] == 1
    assert "1 epochs" not in render_card(entry) and "runs 1 epoch of batch" in render_card(entry)
    assert "1 epochs" not in render_table(tmp_path) and "(1 epoch)" in render_table(tmp_path)
    assert main(["show", name, "--models", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "1 epochs" not in shown and "1 epoch in" in shown
